//! Record ids: the key downstream stores use to drop the duplicates at-least-once delivery creates
//! (e.g. Elasticsearch `_id`, a ClickHouse ReplacingMergeTree key).
//!
//! An id must be the same when a line is read again after a crash, and differ between lines. So it is
//! made of what a re-read cannot change: the host, the hash of the file's first bytes (its identity
//! fingerprint) and the byte offset where the record starts. Not the device/inode (they change across
//! reboots and mounts) and not the time (a re-read happens later). The host is in it because two
//! hosts can hold files that start alike (the same banner, the same config dump): without it their
//! records would overwrite each other downstream.
//!
//! The fingerprint covers the first `min(FINGERPRINT_MAX, end of the record)` bytes: everything it
//! hashes was already written when the record was, so the same record always sees the same bytes,
//! even in a file that was 100 bytes long at the first read and 1 GiB at the second.

use std::fs::File;
use std::io;

use crate::state::identity::{Fingerprint, FINGERPRINT_MAX};

/// The id of the record starting at byte `start` of the file whose fingerprint (over
/// `min(FINGERPRINT_MAX, end of the record)` bytes) is `fingerprint_hex`, on `host`: 32 lowercase
/// hex digits (a 128-bit xxh3).
pub fn record_id(host: &str, fingerprint_hex: &str, start: u64) -> String {
    let hex = IdHasher::default().id(host, fingerprint_hex, start);
    hex.iter().map(|&b| char::from(b)).collect()
}

/// Computes [`record_id`]s as 32 ASCII hex digits, reusing one input buffer: no allocation per
/// record once it has grown to fit.
#[derive(Default)]
pub struct IdHasher {
    input: Vec<u8>,
}

impl IdHasher {
    /// [`record_id`]'s digits.
    pub fn id(&mut self, host: &str, fingerprint_hex: &str, start: u64) -> [u8; 32] {
        let input = &mut self.input;
        input.clear();
        input.extend_from_slice(host.as_bytes());
        // Separators keep ("ab", "c") and ("a", "bc") apart.
        input.push(0);
        input.extend_from_slice(fingerprint_hex.as_bytes());
        input.push(0);
        input.extend_from_slice(&start.to_le_bytes());
        hex32(xxhash_rust::xxh3::xxh3_128(input))
    }
}

/// `{:032x}` of `v`, without the formatter.
fn hex32(v: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The fingerprints a batch's ids are computed from, read at most once per batch.
pub struct IdFingerprints<'a> {
    file: &'a File,
    /// The fingerprint over [`FINGERPRINT_MAX`] bytes, once known.
    full: Option<String>,
    /// The last fingerprint read for a record in the file's first KiB.
    partial: String,
}

impl<'a> IdFingerprints<'a> {
    /// `current` is the tailer's fingerprint: complete once it covers [`FINGERPRINT_MAX`] bytes.
    pub fn new(file: &'a File, current: &Fingerprint) -> Self {
        IdFingerprints {
            file,
            full: (u64::from(current.len) == FINGERPRINT_MAX).then(|| current.hex.clone()),
            partial: String::new(),
        }
    }

    /// The fingerprint hex for a record ending at `end`. Records in a file's first KiB read it back
    /// (≤ 1 KiB each, only there); every other record reuses the full fingerprint.
    pub fn for_end(&mut self, end: u64) -> io::Result<&str> {
        if end < FINGERPRINT_MAX {
            self.partial = Fingerprint::of_file(self.file, end)?.hex;
            return Ok(&self.partial);
        }
        if self.full.is_none() {
            self.full = Some(Fingerprint::of_file(self.file, FINGERPRINT_MAX)?.hex);
        }
        Ok(self.full.as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    #[test]
    fn ids_are_32_lowercase_hex_digits_and_deterministic() {
        let id = record_id("web-1", "0123456789abcdef", 4096);
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(id, record_id("web-1", "0123456789abcdef", 4096));
        assert_ne!(id, record_id("web-1", "0123456789abcdef", 4097));
        assert_ne!(id, record_id("web-2", "0123456789abcdef", 4096));
        assert_ne!(id, record_id("web-1", "0123456789abcdee", 4096));
    }

    #[test]
    fn ids_are_the_xxh3_of_host_fingerprint_and_offset_in_hex() {
        let mut input = b"web-1\0abc\0".to_vec();
        input.extend_from_slice(&7u64.to_le_bytes());
        let want = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&input));
        assert_eq!(record_id("web-1", "abc", 7), want);
        assert_eq!(hex32(0xf), *b"0000000000000000000000000000000f");
        assert_eq!(hex32(u128::MAX), [b'f'; 32]);
    }

    proptest! {
        #[test]
        fn distinct_offsets_give_distinct_ids(a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(a != b);
            prop_assert_ne!(record_id("h", "fp", a), record_id("h", "fp", b));
        }
    }

    /// A record's id does not change when the file grows past the fingerprint length between two
    /// reads (the crash-and-re-read case): it only hashes bytes written before the record ended.
    #[test]
    fn ids_survive_the_file_growing() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"first line\nsecond\n").unwrap();
        let file = f.as_file();
        let small = Fingerprint::of_file(file, 18).unwrap();
        let id_before = {
            let mut fps = IdFingerprints::new(file, &small);
            record_id("h", fps.for_end(18).unwrap(), 11)
        };
        f.write_all(&vec![b'x'; 4000]).unwrap();
        let big = Fingerprint::of_file(f.as_file(), 4018).unwrap();
        let mut fps = IdFingerprints::new(f.as_file(), &big);
        assert_eq!(record_id("h", fps.for_end(18).unwrap(), 11), id_before);
        assert_eq!(fps.for_end(2000).unwrap(), big.hex);
    }
}
