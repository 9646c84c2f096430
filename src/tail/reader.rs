//! Block reads and line splitting: the tailer's hot path.
//!
//! Reads land in one `BytesMut`; complete lines are cut out of it as `Bytes` slices of a single frozen
//! chunk, so a batch of thousands of lines costs one allocation (the `Vec` of slices), not one per line.
//! Memory is bounded by `read_size + max_line_bytes`: a line with no newline is cut into chunks of at
//! most `max_line_bytes` as soon as that much of it is buffered.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

use crate::state::identity::TAIL_HASH_LEN;

/// Lines cut from the buffer, and the file offset just past the last byte they cover.
#[derive(Debug, Default)]
pub struct Split {
    pub lines: Vec<Bytes>,
    /// File offset of the end of each line, including its line terminator.
    pub ends: Vec<u64>,
    /// File offset just past the consumed bytes (the end of the last line and its terminator).
    pub end_offset: u64,
    /// Lines that were longer than `max_line_bytes` and were cut into chunks.
    pub long_lines_split: u64,
    /// Empty lines consumed without a record (only when empty lines are skipped).
    pub empty_skipped: u64,
    /// The batch hit its line limit: more complete lines may be buffered.
    pub limited: bool,
    /// Per line: it continues the line before it (a later chunk of an over-long line). Empty when
    /// no line does: most batches, which then allocate nothing for it.
    pub continues: Vec<bool>,
    /// The last (up to) `TAIL_HASH_LEN` consumed bytes, when the consumed chunk holds that many: the
    /// tail hash is then taken from memory instead of being read back from the file.
    pub tail: Bytes,
    /// File offset of each line's first byte, only when the splitter tracks them (entries whose
    /// records carry an offset or an id); empty otherwise, so the raw path pays nothing.
    pub starts: Vec<u64>,
}

/// What ends a line in the file's encoding. The byte `\n` serves every ASCII-compatible encoding
/// (in GBK, Big5, Shift_JIS, EUC-KR... no trail byte is 0x0A); UTF-16 encodes it in two bytes, at an
/// even file offset (a 0x0A at an odd offset is half of another character).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Newline {
    #[default]
    Byte,
    /// `0A 00`.
    Utf16Le,
    /// `00 0A`.
    Utf16Be,
}

impl Newline {
    pub fn width(self) -> usize {
        match self {
            Newline::Byte => 1,
            Newline::Utf16Le | Newline::Utf16Be => 2,
        }
    }

    /// The encoded `\n` and `\r`.
    fn units(self) -> ([u8; 2], [u8; 2]) {
        match self {
            Newline::Utf16Be => ([0, b'\n'], [0, b'\r']),
            _ => ([b'\n', 0], [b'\r', 0]),
        }
    }

    /// Where the first newline at or after `pos` starts in `buf` (whose first byte is at file offset
    /// `base`), and where the next search must start when there is none (a UTF-16 newline may be
    /// cut in half at the end of `buf`).
    #[inline]
    fn find(self, buf: &[u8], pos: usize, base: u64) -> Result<usize, usize> {
        if self == Newline::Byte {
            return memchr::memchr(b'\n', &buf[pos..])
                .map(|i| pos + i)
                .ok_or(buf.len());
        }
        let (nl, _) = self.units();
        // The 0x0A byte of the pair: first (LE) or second (BE).
        let lf_at = usize::from(self == Newline::Utf16Be);
        let mut from = pos + lf_at;
        while from < buf.len() {
            let Some(i) = memchr::memchr(b'\n', &buf[from..]).map(|i| from + i) else {
                break;
            };
            let unit = i - lf_at;
            if (base + unit as u64) % 2 == 0 {
                match buf.get(unit..unit + 2) {
                    Some(pair) if pair == nl => return Ok(unit),
                    Some(_) => {}
                    None => return Err(unit),
                }
            }
            from = i + 1;
        }
        Err(buf.len().saturating_sub(1).max(pos))
    }

    /// The end of a line's content: before its `\r` when the line (from `start` to `end`) ends in one.
    #[inline]
    fn strip_cr(self, buf: &[u8], start: usize, end: usize) -> usize {
        let w = self.width();
        let cr = match self {
            Newline::Byte => end > start && buf[end - 1] == b'\r',
            _ => end >= start + w && buf[end - w..end] == self.units().1,
        };
        if cr {
            end - w
        } else {
            end
        }
    }
}

impl Split {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds the lines of `later`, which starts where this one ends.
    pub fn append(&mut self, later: Split) {
        if later.end_offset == 0 {
            return;
        }
        let before = self.lines.len();
        self.lines.extend(later.lines);
        self.ends.extend(later.ends);
        if !later.continues.is_empty() {
            self.continues.resize(before, false);
            self.continues.extend(later.continues);
        } else if !self.continues.is_empty() {
            self.continues.resize(self.lines.len(), false);
        }
        self.end_offset = later.end_offset;
        self.long_lines_split += later.long_lines_split;
        self.empty_skipped += later.empty_skipped;
        self.tail = later.tail;
        self.starts.extend(later.starts);
    }
}

#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    /// File offset of `buf[0]`: everything before it has been handed out as lines.
    base: u64,
    /// How much of `buf` was already searched for a newline (avoids rescanning a long partial line).
    scanned: usize,
    /// Set while the rest of a line whose start is already handed out (an over-long line's earlier
    /// chunks, a flushed partial line, or the piece before a mid-line resume point) is being read.
    in_long_line: bool,
    /// Whether `buf` may hold more memory than its content: set by reads, cleared by
    /// [`LineSplitter::release_if_caught_up`].
    grown: bool,
    max_line: usize,
    read_size: usize,
    skip_empty: bool,
    newline: Newline,
    track_starts: bool,
}

/// A line found by [`LineSplitter::take_lines`]: (start, end of content or `usize::MAX` for a
/// line consumed without a record, end with its terminator, continues the line before).
type Range = (usize, usize, usize, bool);

thread_local! {
    /// [`LineSplitter::take_lines`]'s scratch list of the lines it found.
    static RANGES: std::cell::Cell<Vec<Range>> = const { std::cell::Cell::new(Vec::new()) };
}

impl LineSplitter {
    pub fn new(start_offset: u64, read_size: usize, max_line: usize, skip_empty: bool) -> Self {
        LineSplitter {
            // Allocated by the first read, sized to it: an idle file holds no read buffer.
            buf: BytesMut::new(),
            base: start_offset,
            scanned: 0,
            in_long_line: false,
            grown: false,
            max_line: max_line.max(1),
            read_size: read_size.max(1),
            skip_empty,
            newline: Newline::Byte,
            track_starts: false,
        }
    }

    /// Cuts lines at `newline` instead of the byte `\n` (a UTF-16 file); over-long lines are then cut
    /// at even lengths, so a chunk never splits a code unit.
    pub fn with_newline(mut self, newline: Newline) -> Self {
        self.newline = newline;
        if newline.width() == 2 {
            self.max_line = (self.max_line & !1).max(2);
        }
        self
    }

    /// Records each line's start offset in [`Split::starts`].
    pub fn tracking_starts(mut self) -> Self {
        self.track_starts = true;
        self
    }

    pub fn newline(&self) -> Newline {
        self.newline
    }

    /// Offset of the next byte to read from the file.
    pub fn read_offset(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Bytes buffered after the last complete line: a partial line waiting for its newline.
    pub fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Starts over at `offset` (after a truncation), dropping whatever was buffered.
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.base = offset;
        self.scanned = 0;
        self.in_long_line = false;
    }

    /// How much may be read now without the buffer passing its bound of `read_size + max_line`.
    fn room(&self) -> usize {
        self.max_line
            .saturating_add(self.read_size)
            .saturating_sub(self.buf.len())
            .min(self.read_size)
    }

    /// Reads up to `read_size` bytes at the read offset, and at most `available` (what the file holds
    /// past the read offset, when known), so only bytes about to be read are ever allocated and zeroed.
    /// Returns 0 at end of file.
    pub fn fill_from(&mut self, file: &File, available: u64) -> io::Result<usize> {
        let want = (self.room() as u64).min(available) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.fill(file, &mut [], want).map(|(_, n)| n)
    }

    /// Reads the `guard.len()` bytes before the read offset into `guard` and up to `max` bytes at
    /// the read offset into the buffer, in one `preadv`. Returns the guard bytes read, the data
    /// bytes read, and whether the data ended before `max` (the end of the file, for a regular file).
    pub fn fill_after_guard(
        &mut self,
        file: &File,
        guard: &mut [u8],
        max: usize,
    ) -> io::Result<(usize, usize, bool)> {
        let want = self.room().min(max);
        let (got, n) = self.fill(file, guard, want)?;
        Ok((got, n, n < want))
    }

    /// One `preadv` of the guard bytes (the `guard.len()` before the read offset) and `want` bytes
    /// at the read offset, appended to the buffer; returns how many of each were read.
    fn fill(&mut self, file: &File, guard: &mut [u8], want: usize) -> io::Result<(usize, usize)> {
        use std::os::fd::AsRawFd;
        let old = self.buf.len();
        self.grown = true;
        self.buf.resize(old + want, 0);
        let at = self.base + old as u64 - guard.len() as u64;
        let iov = [
            libc::iovec {
                iov_base: guard.as_mut_ptr().cast(),
                iov_len: guard.len(),
            },
            libc::iovec {
                iov_base: self.buf[old..].as_mut_ptr().cast(),
                iov_len: want,
            },
        ];
        let result = loop {
            // SAFETY: both iovecs point into buffers borrowed mutably for this call, with their
            // lengths; the kernel writes at most that many bytes into each.
            let r = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), 2, at as libc::off_t) };
            if r >= 0 {
                break Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                break Err(e);
            }
        };
        let total = *result.as_ref().unwrap_or(&0);
        let got = total.min(guard.len());
        let n = total - got;
        self.buf.truncate(old + n);
        result.map(|_| (got, n))
    }

    /// Reading resumes inside a line whose start was handed out before (see [`resumes_mid_line`]): the
    /// newline that ends it must not become an empty record.
    pub fn resume_mid_line(&mut self, mid: bool) {
        self.in_long_line = mid;
    }

    /// Bytes allocated for the read buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Called when caught up with the file. The buffer shares its allocation with the lines last cut
    /// from it (up to `read_size + max_line` bytes after a backlog); kept, it would pin that memory
    /// for as long as the file stays idle — GiBs across thousands of files. An empty buffer is
    /// dropped (the next read allocates only what it reads); a short partial line moves to a buffer
    /// of its own size. Returns whether an allocation was let go.
    pub fn release_if_caught_up(&mut self) -> bool {
        if !std::mem::take(&mut self.grown) {
            return false;
        }
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        } else if self.buf.len() <= SMALL_PARTIAL {
            self.buf = BytesMut::from(&self.buf[..]);
        } else {
            // A long partial line: copying it would cost as much as it saves.
            return false;
        }
        true
    }

    /// Appends bytes as if read from the file (tests and tools that do not read from a file).
    pub fn push(&mut self, bytes: &[u8]) {
        self.grown = true;
        self.buf.extend_from_slice(bytes);
    }

    /// Cuts up to `max_lines` complete lines (and chunks of over-long lines) out of the buffer.
    pub fn take_lines(&mut self, max_lines: usize) -> Split {
        let mut split = Split::default();
        // A scratch list per thread, not per call: growing a new one was a tenth of a trickling
        // line's cost, and one kept per splitter would hold memory for every idle file.
        let mut ranges = RANGES.take();
        ranges.clear();
        let mut start = 0usize;
        let mut pos = self.scanned;
        loop {
            if ranges.len() >= max_lines {
                split.limited = true;
                break;
            }
            let found = self.newline.find(&self.buf, pos, self.base);
            match found {
                Ok(nl) if nl - start <= self.max_line => {
                    let content_end = self.newline.strip_cr(&self.buf, start, nl);
                    let next = nl + self.newline.width();
                    let was_long = std::mem::replace(&mut self.in_long_line, false);
                    if content_end == start && (self.skip_empty || was_long) {
                        // An empty remainder of a long line that was already chunked is no record.
                        if !was_long {
                            split.empty_skipped += 1;
                        }
                        self.consume_without_record(&mut ranges, start, next);
                    } else {
                        ranges.push((start, content_end, next, was_long));
                    }
                    start = next;
                    pos = start;
                }
                found => {
                    // No newline within max_line bytes of the line start: cut a chunk if that much is here.
                    if self.buf.len() - start >= self.max_line {
                        let end = start + self.max_line;
                        ranges.push((start, end, end, self.in_long_line));
                        if !self.in_long_line {
                            split.long_lines_split += 1;
                        }
                        self.in_long_line = true;
                        start = end;
                        pos = start;
                    } else {
                        pos = found.err().unwrap_or(self.buf.len());
                        break;
                    }
                }
            }
        }
        let consumed = ranges.last().map_or(0, |r| r.2).max(start);
        self.scanned = pos.max(consumed) - consumed;
        if consumed == 0 {
            RANGES.set(ranges);
            return split;
        }
        let chunk = self.buf.split_to(consumed).freeze();
        if consumed as u64 >= TAIL_HASH_LEN {
            split.tail = chunk.slice(consumed - TAIL_HASH_LEN as usize..);
        }
        split.lines.reserve_exact(ranges.len());
        split.ends.reserve_exact(ranges.len());
        let any_continues = ranges.iter().any(|r| r.3 && r.1 != usize::MAX);
        if any_continues {
            split.continues.reserve_exact(ranges.len());
        }
        for &(s, e, end, continues) in &ranges {
            if e != usize::MAX {
                split.lines.push(chunk.slice(s..e));
                split.ends.push(self.base + end as u64);
                if any_continues {
                    split.continues.push(continues);
                }
                if self.track_starts {
                    split.starts.push(self.base + s as u64);
                }
            }
        }
        RANGES.set(ranges);
        self.base += consumed as u64;
        split.end_offset = self.base;
        split
    }

    /// Marks a skipped line so the consumed range still advances past it.
    fn consume_without_record(&self, ranges: &mut Vec<Range>, start: usize, end: usize) {
        ranges.push((start, usize::MAX, end, false));
    }

    /// Hands out the buffered partial line as a line of its own (the file was rotated away, or the writer
    /// has been idle past the partial-line timeout).
    pub fn flush_partial(&mut self) -> Split {
        let mut split = Split::default();
        if self.buf.is_empty() {
            return split;
        }
        let chunk = self.buf.split().freeze();
        if chunk.len() as u64 >= TAIL_HASH_LEN {
            split.tail = chunk.slice(chunk.len() - TAIL_HASH_LEN as usize..);
        }
        if self.track_starts {
            split.starts.push(self.base);
        }
        self.base += chunk.len() as u64;
        self.scanned = 0;
        // The line's end is still to come: its newline (or its `\n` after a flushed `\r`) then ends a
        // line already shipped, and is no empty record.
        let continues = std::mem::replace(&mut self.in_long_line, true);
        // A flushed CRLF line may end in its `\r`: not content. The offset still covers it.
        let content = chunk.slice(..self.newline.strip_cr(&chunk, 0, chunk.len()));
        split.lines.push(content);
        split.continues.push(continues);
        split.ends.push(self.base);
        split.end_offset = self.base;
        split
    }
}

/// A partial line at most this long is copied out of a grown read buffer when caught up.
const SMALL_PARTIAL: usize = 16 * 1024;

/// Whether reading at `offset` starts inside a line: the byte before it is not a newline (the stored
/// offset ends a chunk of an over-long line or a flushed partial line). Nothing else needs storing.
pub fn resumes_mid_line(file: &File, offset: u64) -> io::Result<bool> {
    resumes_mid_line_at(file, offset, Newline::Byte)
}

/// [`resumes_mid_line`] for a file whose newline is `newline`.
pub fn resumes_mid_line_at(file: &File, offset: u64, newline: Newline) -> io::Result<bool> {
    let w = newline.width() as u64;
    if offset < w {
        return Ok(offset > 0);
    }
    let mut bytes = [0u8; 2];
    let before = &mut bytes[..w as usize];
    let n = file.read_at(before, offset - w)?;
    let ends_line = match newline {
        Newline::Byte => before[0] == b'\n',
        _ => *before == newline.units().0,
    };
    Ok(n == w as usize && !ends_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(split: &Split) -> Vec<&[u8]> {
        split.lines.iter().map(|b| &b[..]).collect()
    }

    /// One call gives the guard bytes before the offset and the data after it, and says when the
    /// data ended short of the maximum (so the tailer needs no fstat for the size).
    #[test]
    fn a_guarded_fill_reads_the_guard_and_the_data_in_one_call() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"first line\nsecond line\n").unwrap();
        let mut s = LineSplitter::new(11, 64, 1024, false);
        let mut guard = [0u8; 4];
        let (got, n, at_end) = s.fill_after_guard(&f, &mut guard, 4096).unwrap();
        assert_eq!((got, n, at_end), (4, 12, true));
        assert_eq!(&guard, b"ine\n");
        assert_eq!(lines(&s.take_lines(10)), vec![&b"second line"[..]]);

        let mut s = LineSplitter::new(11, 64, 1024, false);
        let (_, n, at_end) = s.fill_after_guard(&f, &mut guard, 5).unwrap();
        assert_eq!(
            (n, at_end),
            (5, false),
            "a full read may have more behind it"
        );
        assert_eq!(s.read_offset(), 16);

        // Truncated under the offset: fewer guard bytes than asked, no data.
        f.set_len(8).unwrap();
        let mut s = LineSplitter::new(11, 64, 1024, false);
        assert_eq!(
            s.fill_after_guard(&f, &mut guard, 4096).unwrap(),
            (1, 0, true)
        );
    }

    #[test]
    fn splits_lf_and_crlf_and_keeps_partial() {
        let mut s = LineSplitter::new(0, 64, 1024, false);
        s.push(b"one\ntwo\r\nthree");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"one"[..], b"two"]);
        assert_eq!(split.end_offset, 9);
        assert_eq!(split.ends, vec![4, 9]);
        assert_eq!(s.pending_len(), 5);
        s.push(b"\n");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"three"[..]]);
        assert_eq!(split.end_offset, 15);
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn lone_cr_is_content_and_empty_lines_are_kept_by_default() {
        let mut s = LineSplitter::new(10, 64, 1024, false);
        s.push(b"a\rb\n\n\r\n");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"a\rb"[..], b"", b""]);
        assert_eq!(split.end_offset, 17);
    }

    #[test]
    fn empty_lines_can_be_skipped_and_still_advance_the_offset() {
        let mut s = LineSplitter::new(0, 64, 1024, true);
        s.push(b"\n\nx\n\r\n");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"x"[..]]);
        assert_eq!(split.empty_skipped, 3);
        assert_eq!(split.end_offset, 6);
        assert_eq!(split.ends, vec![4]);
    }

    #[test]
    fn max_lines_limits_a_batch() {
        let mut s = LineSplitter::new(0, 64, 1024, false);
        s.push(b"1\n2\n3\n");
        assert_eq!(lines(&s.take_lines(2)), vec![&b"1"[..], b"2"]);
        let rest = s.take_lines(2);
        assert_eq!(lines(&rest), vec![&b"3"[..]]);
        assert_eq!(rest.end_offset, 6);
    }

    #[test]
    fn long_line_is_cut_into_chunks_and_bounded() {
        let mut s = LineSplitter::new(0, 4, 4, false);
        s.push(b"abcdefghij\nxy\n");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"abcd"[..], b"efgh", b"ij", b"xy"]);
        assert_eq!(split.long_lines_split, 1);
        assert_eq!(split.end_offset, 14);
    }

    #[test]
    fn long_line_exactly_a_multiple_of_max_gives_no_empty_record() {
        let mut s = LineSplitter::new(0, 4, 4, false);
        s.push(b"abcdefgh");
        let first = s.take_lines(100);
        assert_eq!(lines(&first), vec![&b"abcd"[..], b"efgh"]);
        s.push(b"\nz\n");
        let second = s.take_lines(100);
        assert_eq!(lines(&second), vec![&b"z"[..]]);
        assert_eq!(second.end_offset, 11);
    }

    #[test]
    fn partial_flush_emits_the_tail_once() {
        let mut s = LineSplitter::new(5, 64, 1024, false);
        s.push(b"x\nhalf");
        s.take_lines(10);
        let flushed = s.flush_partial();
        assert_eq!(lines(&flushed), vec![&b"half"[..]]);
        assert_eq!(flushed.end_offset, 11);
        assert!(s.flush_partial().is_empty());
    }

    #[test]
    fn binary_and_invalid_utf8_pass_unchanged() {
        let mut s = LineSplitter::new(0, 64, 1024, false);
        let data: &[u8] = b"\x00\xff\xfe\x80bin\n";
        s.push(data);
        assert_eq!(lines(&s.take_lines(10)), vec![&data[..data.len() - 1]]);
    }

    #[test]
    fn reads_from_file_and_stops_at_the_memory_bound() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[b'a'; 100]).unwrap();
        let mut s = LineSplitter::new(0, 16, 8, false);
        let mut total = 0;
        loop {
            let n = s.fill_from(&f, u64::MAX).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(
            s.pending_len() <= 16 + 8,
            "buffer grew to {}",
            s.pending_len()
        );
        assert_eq!(total, s.pending_len());
        let split = s.take_lines(100);
        assert!(split.lines.iter().all(|l| l.len() == 8));
    }

    #[test]
    fn reports_the_line_limit_and_the_consumed_tail() {
        let mut s = LineSplitter::new(0, 1024, 1024, false);
        let long = [b'a'; 40];
        s.push(&long);
        s.push(b"\nb\npart");
        let first = s.take_lines(1);
        assert!(first.limited);
        assert_eq!(&first.tail[..], &[&long[..], b"\n"].concat()[41 - 32..]);
        let second = s.take_lines(10);
        assert!(!second.limited);
        assert!(
            second.tail.is_empty(),
            "2 bytes consumed: the tail hash needs bytes before the chunk"
        );
        assert_eq!(s.flush_partial().tail.len(), 0);
    }

    #[test]
    fn reads_no_more_than_the_file_is_known_to_hold() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[b'x'; 100]).unwrap();
        let mut s = LineSplitter::new(0, 64, 1024, false);
        assert_eq!(s.fill_from(&f, 10).unwrap(), 10);
        assert_eq!(s.fill_from(&f, 0).unwrap(), 0);
        assert_eq!(s.fill_from(&f, u64::MAX).unwrap(), 64);
        assert_eq!(s.read_offset(), 74);
    }

    /// A CRLF line flushed before its `\n` arrived: the record has no `\r`, and the late `\n` is the end
    /// of that line, not an empty record.
    #[test]
    fn crlf_partial_flush_strips_the_cr_and_its_late_lf_is_no_record() {
        let mut s = LineSplitter::new(0, 64, 1024, false);
        s.push(b"half\r");
        assert!(s.take_lines(10).is_empty());
        let flushed = s.flush_partial();
        assert_eq!(lines(&flushed), vec![&b"half"[..]]);
        assert_eq!(flushed.end_offset, 5, "the offset still covers the \\r");
        s.push(b"\nnext\n");
        let split = s.take_lines(10);
        assert_eq!(lines(&split), vec![&b"next"[..]]);
        assert_eq!(split.end_offset, 11);
    }

    /// Resuming mid-line (the last shipped piece was a chunk of a long line or a flushed partial): the
    /// lone newline that ends it is not an empty record; a non-empty rest still is a record.
    #[test]
    fn resuming_mid_line_gives_no_empty_record_for_the_rest() {
        let mut s = LineSplitter::new(4, 64, 4, false);
        s.resume_mid_line(true);
        s.push(b"\nz\n");
        assert_eq!(lines(&s.take_lines(10)), vec![&b"z"[..]]);
        let mut s = LineSplitter::new(4, 64, 4, false);
        s.resume_mid_line(true);
        s.push(b"ef\n\n");
        assert_eq!(lines(&s.take_lines(10)), vec![&b"ef"[..], b""]);
    }

    #[test]
    fn a_resume_point_is_mid_line_when_the_byte_before_it_is_not_a_newline() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdefgh\nxy\n").unwrap();
        assert!(!resumes_mid_line(&f, 0).unwrap());
        assert!(resumes_mid_line(&f, 4).unwrap());
        assert!(!resumes_mid_line(&f, 9).unwrap());
    }

    /// A batch where no line continues another carries no flags (most batches: nothing to
    /// allocate); appended to one that has them, or they to it, every line keeps its own.
    #[test]
    fn continuation_flags_are_kept_line_by_line_across_appends() {
        let mut s = LineSplitter::new(0, 4, 4, false);
        s.push(b"ab\ncd\n");
        let plain = s.take_lines(100);
        assert!(plain.continues.is_empty(), "no line continues: no flags");
        s.push(b"efghij\n");
        let chunked = s.take_lines(100);
        assert_eq!(chunked.continues, vec![false, true]);
        s.push(b"kl\n");
        let after = s.take_lines(100);

        let mut got = Split::default();
        got.append(plain);
        got.append(chunked);
        got.append(after);
        assert_eq!(lines(&got), vec![&b"ab"[..], b"cd", b"efgh", b"ij", b"kl"]);
        assert_eq!(got.continues, vec![false, false, false, true, false]);
        assert_eq!(got.ends, vec![3, 6, 10, 13, 16]);
    }

    /// Each continued piece of a line is flagged, so multiline can join the pieces without a separator.
    #[test]
    fn chunks_after_the_first_are_marked_as_continuations() {
        let mut s = LineSplitter::new(0, 4, 4, false);
        s.push(b"abcdefghij\nxy\n");
        let split = s.take_lines(100);
        assert_eq!(lines(&split), vec![&b"abcd"[..], b"efgh", b"ij", b"xy"]);
        assert_eq!(split.continues, vec![false, true, true, false]);
    }

    /// Caught up after a backlog: the grown read buffer is let go (a partial line moves to a buffer of
    /// its own size), so an idle file pins none of it.
    #[test]
    fn the_read_buffer_is_let_go_when_caught_up() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        for _ in 0..2000 {
            f.write_all(b"0123456789012345678901234567890123456789\n")
                .unwrap();
        }
        f.write_all(b"partial").unwrap();
        let mut s = LineSplitter::new(0, 64 * 1024, 1024, false);
        let mut last = Split::default();
        let size = f.metadata().unwrap().len();
        // As the tailer reads: never past the size it saw.
        while s.fill_from(&f, size - s.read_offset()).unwrap() > 0 {
            let split = s.take_lines(usize::MAX);
            if !split.is_empty() {
                last = split;
            }
        }
        let line = last.lines.last().unwrap().clone();
        drop(last);
        assert!(
            !line.is_unique(),
            "the buffer shares the last read's allocation"
        );
        s.release_if_caught_up();
        assert!(
            line.is_unique(),
            "caught up, the splitter still pins the last read's allocation"
        );
        assert!(
            s.capacity() < 64,
            "a 7-byte partial line kept {} bytes",
            s.capacity()
        );
        s.push(b"\n");
        assert_eq!(lines(&s.take_lines(10)), vec![&b"partial"[..]]);
        s.release_if_caught_up();
        assert_eq!(s.capacity(), 0, "an empty buffer keeps its allocation");
    }

    fn utf16(text: &str, newline: Newline) -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| match newline {
                Newline::Utf16Be => u.to_be_bytes(),
                _ => u.to_le_bytes(),
            })
            .collect()
    }

    fn decode16(bytes: &[u8], newline: Newline) -> String {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| match newline {
                Newline::Utf16Be => u16::from_be_bytes([c[0], c[1]]),
                _ => u16::from_le_bytes([c[0], c[1]]),
            })
            .collect();
        String::from_utf16_lossy(&units)
    }

    /// U+0A0A is `0A 0A` in UTF-16LE and U+0A00 `00 0A` in LE / `0A 00` in BE: 0x0A bytes that are no
    /// newline. Only the code unit U+000A at an even offset ends a line; `\r\n` loses its `\r`.
    #[test]
    fn utf16_lines_end_at_the_encoded_newline_only() {
        for newline in [Newline::Utf16Le, Newline::Utf16Be] {
            let text = "a\u{0A0A}\u{0A00}b\r\n\u{0A00}\ntail";
            let bytes = utf16(text, newline);
            let mut s = LineSplitter::new(0, 1024, 1024, false)
                .with_newline(newline)
                .tracking_starts();
            s.push(&bytes);
            let split = s.take_lines(100);
            let got: Vec<String> = split.lines.iter().map(|l| decode16(l, newline)).collect();
            assert_eq!(got, vec!["a\u{0A0A}\u{0A00}b", "\u{0A00}"], "{newline:?}");
            assert_eq!(split.starts, vec![0, 12]);
            assert_eq!(split.ends, vec![12, 16]);
            assert_eq!(s.pending_len(), 8);
            let flushed = s.flush_partial();
            assert_eq!(decode16(&flushed.lines[0], newline), "tail");
            assert_eq!(flushed.starts, vec![16]);
        }
    }

    /// A UTF-16 newline cut in half by the end of a read is found once its second byte comes.
    #[test]
    fn a_utf16_newline_split_across_reads_is_found() {
        let mut s = LineSplitter::new(0, 1024, 1024, false).with_newline(Newline::Utf16Le);
        s.push(&[b'x', 0, b'\n']);
        assert!(s.take_lines(10).is_empty());
        s.push(&[0]);
        let split = s.take_lines(10);
        assert_eq!(lines(&split), vec![&[b'x', 0][..]]);
        assert_eq!(split.end_offset, 4);
        // Over-long lines are cut at even lengths.
        let mut s = LineSplitter::new(0, 1024, 5, false).with_newline(Newline::Utf16Le);
        s.push(&utf16("abcdef", Newline::Utf16Le));
        let split = s.take_lines(10);
        assert!(split.lines.iter().all(|l| l.len() == 4), "{split:?}");
    }

    #[test]
    fn a_utf16_resume_point_is_mid_line_unless_after_an_encoded_newline() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &utf16("ab\ncd", Newline::Utf16Le)).unwrap();
        let at = |o| resumes_mid_line_at(f.as_file(), o, Newline::Utf16Le).unwrap();
        assert!(!at(0));
        assert!(at(2));
        assert!(at(5), "inside the newline");
        assert!(!at(6));
    }

    proptest::proptest! {
        /// Whatever the text and however the reads cut it, UTF-16 lines decode to the text's lines,
        /// and each line's start and end are its byte offsets in the file.
        #[test]
        fn utf16_splitting_matches_the_text(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("\n".to_owned()),
                    proptest::strategy::Just("\r\n".to_owned()),
                    proptest::strategy::Just("\u{0A0A}".to_owned()),
                    proptest::strategy::Just("\u{0A00}".to_owned()),
                    proptest::strategy::Just("\u{1F600}".to_owned()),
                    "[a-z错误ü]{0,5}",
                ],
                0..40,
            ),
            cuts in proptest::collection::vec(1usize..9, 1..50),
            big_endian in proptest::bool::ANY,
        ) {
            let newline = if big_endian { Newline::Utf16Be } else { Newline::Utf16Le };
            let text: String = pieces.concat();
            let bytes = utf16(&text, newline);
            let mut s = LineSplitter::new(0, 4096, 1 << 20, false)
                .with_newline(newline)
                .tracking_starts();
            let mut got = Split::default();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + cut).min(bytes.len());
                s.push(&bytes[at..end]);
                at = end;
                got.append(s.take_lines(1000));
            }
            let mut expected: Vec<String> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned()).collect();
            // The last piece has no newline: it stays pending.
            let pending = expected.pop().unwrap_or_default();
            let lines: Vec<String> = got.lines.iter().map(|l| decode16(l, newline)).collect();
            proptest::prop_assert_eq!(lines, expected);
            proptest::prop_assert_eq!(decode16(&bytes[bytes.len() - s.pending_len()..], newline), pending);
            for (i, (start, end)) in got.starts.iter().zip(&got.ends).enumerate() {
                let line = &bytes[*start as usize..*end as usize];
                proptest::prop_assert!(line.starts_with(&got.lines[i]));
                proptest::prop_assert_eq!(start % 2, 0);
            }
        }
    }
}
