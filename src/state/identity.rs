//! File identity: device + inode, plus a fingerprint of the file's first bytes.
//!
//! An inode alone is not an identity: after a rotation the filesystem readily hands the freed inode to
//! the next new file (beats#1341, fluent-bit#11455). The fingerprint of the first
//! [`FINGERPRINT_MAX`] bytes tells a reused inode from the file we knew. Empty files all look alike
//! (vector#643), so a file shorter than that is fingerprinted over what it has and re-fingerprinted as it
//! grows; only the length we hashed is ever compared.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// How many leading bytes the fingerprint covers at most.
pub const FINGERPRINT_MAX: u64 = 1024;
/// How many bytes before an offset the tail hash covers (it says whether the bytes we already shipped are
/// still the bytes in the file).
pub const TAIL_HASH_LEN: u64 = 32;

/// Device and inode of an open file or a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// A fingerprint: the hash of the file's first `len` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub hex: String,
    pub len: u32,
}

impl Fingerprint {
    /// Fingerprints the first `min(size, FINGERPRINT_MAX)` bytes of `file`.
    pub fn of_file(file: &File, size: u64) -> io::Result<Fingerprint> {
        Ok(start_of(file, size)?.0)
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File, size: u64) -> io::Result<bool> {
        if u64::from(self.len) > size {
            return Ok(false);
        }
        // The fingerprint's hex is the same xxh3 form as the tail hash's.
        bytes_at(file, 0, self.len as usize, |bytes| {
            TailHash::of(bytes).is_hex(&self.hex)
        })
    }

    /// Whether to take a longer fingerprint now: the file was shorter than the maximum and has
    /// since doubled (or reached the maximum). Not at every line: a trickling file under 1 KiB
    /// would be read from its start and hashed at each wake-up (4 % of idle10000's samples), while a
    /// prefix half the length identifies the file nearly as well, and only the length hashed is
    /// ever compared.
    pub fn can_grow(&self, size: u64) -> bool {
        let len = u64::from(self.len);
        len < FINGERPRINT_MAX && size >= len.saturating_mul(2).clamp(1, FINGERPRINT_MAX)
    }
}

/// The xxh3 of the (up to) [`TAIL_HASH_LEN`] bytes just before an offset ([`tail_hash`]); none at
/// offset 0. Kept as a number: the tailer takes one per batch and the checkpointer compares them
/// every interval, and a hex `String` each time was an allocation and a format on the hot path. Hex
/// ([`TailHash::to_hex`], the [`hash_hex`] of the same bytes) only in the checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TailHash(Option<u64>);

impl TailHash {
    /// The hash of `bytes`; none for no bytes.
    pub fn of(bytes: &[u8]) -> TailHash {
        TailHash((!bytes.is_empty()).then(|| xxhash_rust::xxh3::xxh3_64(bytes)))
    }

    /// As the checkpoint stores it: [`hash_hex`] of the same bytes.
    pub fn to_hex(self) -> String {
        self.0.map(|h| format!("{h:016x}")).unwrap_or_default()
    }

    /// From [`TailHash::to_hex`]'s form; `None` when `hex` is not 16 lowercase hex digits or "".
    pub fn from_hex(hex: &str) -> Option<TailHash> {
        if hex.is_empty() {
            return Some(TailHash(None));
        }
        let well_formed = hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(|h| TailHash(Some(h)))
    }

    /// The hash of no bytes (offset 0, an empty file).
    pub fn is_empty(self) -> bool {
        self.0.is_none()
    }

    /// Whether `hex` is this hash as the checkpoint stores it, without allocating.
    pub fn is_hex(self, hex: &str) -> bool {
        TailHash::from_hex(hex) == Some(self)
    }
}

/// The hash of the (up to) [`TAIL_HASH_LEN`] bytes just before `offset`; none at offset 0.
pub fn tail_hash(file: &File, offset: u64) -> io::Result<TailHash> {
    let len = offset.min(TAIL_HASH_LEN);
    bytes_at(file, offset - len, len as usize, TailHash::of)
}

/// xxh3_64 as 16 lowercase hex digits; "" for no bytes, so that an empty prefix has no hash that
/// could be mistaken for content. The checkpoint stores these strings: changing this changes the
/// on-disk format (the checkpoint's golden test guards it).
pub fn hash_hex(bytes: &[u8]) -> String {
    TailHash::of(bytes).to_hex()
}

/// Whether the (up to) [`TAIL_HASH_LEN`] bytes before `offset` still hash to `hash` ([`tail_hash`]):
/// the tailer checks this at every wake-up of a trickling file.
pub fn tail_hash_matches(file: &File, offset: u64, hash: TailHash) -> io::Result<bool> {
    let len = offset.min(TAIL_HASH_LEN) as usize;
    let mut buf = [0u8; TAIL_HASH_LEN as usize];
    let n = fill_at(file, offset - len as u64, &mut buf[..len])?;
    if n < len {
        return Ok(false);
    }
    Ok(TailHash::of(&buf[..len]) == hash)
}

/// How many of a file's first bytes its tailer keeps, as they are, to tell a rewrite at each
/// wake-up (the fingerprint's 1 KiB hash cost a tenth of idle1000's samples there).
pub const HEAD_GUARD_LEN: usize = 64;

/// The first (up to) [`HEAD_GUARD_LEN`] bytes of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    bytes: [u8; HEAD_GUARD_LEN],
    len: u8,
}

impl Default for Head {
    /// No bytes: the start of any file.
    fn default() -> Head {
        Head {
            bytes: [0; HEAD_GUARD_LEN],
            len: 0,
        }
    }
}

impl Head {
    /// Whether the file still starts with these bytes.
    pub fn still_starts(&self, file: &File) -> io::Result<bool> {
        let len = usize::from(self.len);
        let mut now = [0u8; HEAD_GUARD_LEN];
        let n = fill_at(file, 0, &mut now[..len])?;
        Ok(n == len && now[..len] == self.bytes[..len])
    }
}

/// The fingerprint of the first `min(size, FINGERPRINT_MAX)` bytes and the head of the same read:
/// a tailer needs both, and they are taken at one read of the file's start.
pub fn start_of(file: &File, size: u64) -> io::Result<(Fingerprint, Head)> {
    let len = size.min(FINGERPRINT_MAX);
    bytes_at(file, 0, len as usize, |bytes| {
        let mut head = Head::default();
        let n = bytes.len().min(HEAD_GUARD_LEN);
        head.bytes[..n].copy_from_slice(&bytes[..n]);
        head.len = n as u8;
        let fp = Fingerprint {
            hex: hash_hex(bytes),
            len: bytes.len() as u32,
        };
        (fp, head)
    })
}

/// Reads into `buf` from `offset` until it is full or the file ends; the bytes read.
fn fill_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hands `f` the (up to) `len` bytes at `offset`, read into a stack buffer: a trickling file under
/// 1 KiB is fingerprinted again at each line, and a heap buffer per read was half that cost.
fn bytes_at<R>(file: &File, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    let mut buf = [0u8; FINGERPRINT_MAX as usize];
    let filled = fill_at(file, offset, &mut buf[..len])?;
    Ok(f(&buf[..filled]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hash_hex_is_16_lowercase_hex_or_empty() {
        assert_eq!(hash_hex(b""), "");
        let h = hash_hex(b"hello\n");
        assert_eq!(h.len(), 16);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(h, hash_hex(b"hello"));
    }
    #[test]
    fn a_tail_hash_is_written_and_read_back_as_the_checkpoint_stores_it() {
        for bytes in [&b""[..], b"x", b"a line of a log\n"] {
            let h = TailHash::of(bytes);
            assert_eq!(h.to_hex(), hash_hex(bytes));
            assert_eq!(TailHash::from_hex(&h.to_hex()), Some(h));
            assert!(h.is_hex(&hash_hex(bytes)));
        }
        let h = TailHash::of(b"x");
        assert!(!h.is_hex(&h.to_hex().to_uppercase()));
        assert_eq!(TailHash::from_hex("+123456789abcdef"), None);
        assert_eq!(TailHash::from_hex("0123"), None);
        assert!(!TailHash::default().is_hex("0000000000000000"));
    }

    #[test]
    fn a_fingerprint_grows_when_the_file_doubles_not_at_every_line() {
        let fp = |len| Fingerprint {
            hex: "0".repeat(16),
            len,
        };
        assert!(
            Fingerprint::default().can_grow(1),
            "an empty file's first byte"
        );
        assert!(!Fingerprint::default().can_grow(0));
        assert!(!fp(100).can_grow(101));
        assert!(!fp(100).can_grow(199));
        assert!(fp(100).can_grow(200));
        assert!(!fp(600).can_grow(1023));
        assert!(fp(600).can_grow(FINGERPRINT_MAX), "capped at the maximum");
        assert!(!fp(FINGERPRINT_MAX as u32).can_grow(1 << 20));
    }

    #[test]
    fn fingerprint_grows_and_still_matches_its_prefix() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello\n").unwrap();
        let fp = Fingerprint::of_file(&f, 6).unwrap();
        assert_eq!(fp.len, 6);
        f.write_all(&vec![b'x'; 2000]).unwrap();
        assert!(fp.matches(&f, 2006).unwrap());
        assert!(fp.can_grow(2006));
        let grown = Fingerprint::of_file(&f, 2006).unwrap();
        assert_eq!(grown.len, 1024);
        assert!(!grown.can_grow(5000));
    }

    #[test]
    fn a_different_head_does_not_match() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"first file\n").unwrap();
        let fp = Fingerprint::of_file(&f, 11).unwrap();
        let mut g = tempfile::tempfile().unwrap();
        g.write_all(b"other file\n").unwrap();
        assert!(!fp.matches(&g, 11).unwrap());
        assert!(!fp.matches(&g, 3).unwrap(), "shorter than the fingerprint");
    }

    #[test]
    fn empty_fingerprint_matches_anything_and_tail_hash_at_zero_is_empty() {
        let f = tempfile::tempfile().unwrap();
        let fp = Fingerprint::of_file(&f, 0).unwrap();
        assert_eq!(fp, Fingerprint::default());
        assert!(fp.matches(&f, 0).unwrap());
        assert_eq!(tail_hash(&f, 0).unwrap().to_hex(), "");
    }

    #[test]
    fn tail_hash_matches_agrees_with_tail_hash() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789abcdefghijklmnopqrstuvwxyz\nmore\n")
            .unwrap();
        for off in [0u64, 5, 32, 37, 42] {
            let h = tail_hash(&f, off).unwrap();
            assert!(tail_hash_matches(&f, off, h).unwrap(), "offset {off}");
            let other = TailHash::from_hex("0123456789abcdef").unwrap();
            assert!(!tail_hash_matches(&f, off, other).unwrap() || off == 0);
        }
        assert!(!tail_hash_matches(&f, 37, tail_hash(&f, 36).unwrap()).unwrap());
        // Past the end: fewer bytes than the offset implies, so not the same content.
        assert!(!tail_hash_matches(&f, 100, tail_hash(&f, 42).unwrap()).unwrap());
    }

    #[test]
    fn a_head_tells_a_rewritten_start_and_a_shorter_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"2026-11-26T10:00:00 first line\n").unwrap();
        let f = File::open(&p).unwrap();
        let (_, head) = start_of(&f, 31).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"second\n")
            .unwrap();
        assert!(head.still_starts(&f).unwrap(), "appending keeps the start");
        std::fs::write(&p, b"2026-11-26T10:00:01 first line\n").unwrap();
        assert!(!head.still_starts(&f).unwrap(), "a rewritten start");
        std::fs::write(&p, b"2026").unwrap();
        assert!(!head.still_starts(&f).unwrap(), "shorter than the head");
    }

    #[test]
    fn tail_hash_covers_the_bytes_before_the_offset() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789abcdefghijklmnopqrstuvwxyz\n")
            .unwrap();
        assert_eq!(
            tail_hash(&f, 37).unwrap().to_hex(),
            hash_hex(&b"0123456789abcdefghijklmnopqrstuvwxyz\n"[5..])
        );
        assert_eq!(tail_hash(&f, 3).unwrap().to_hex(), hash_hex(b"012"));
    }
}
