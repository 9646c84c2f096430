//! Multiline grouping: a line matching the entry's start pattern begins a record; the lines after it
//! that do not match are appended to it (joined with `\n`), so a stack trace ships as one record.
//!
//! A group is held until the next start line, the partial-line timeout, or rotation; while held, its
//! lines are not part of the shipped offset, so a restart re-reads the whole group, never half of it.

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

use super::reader::Split;

pub struct Multiline {
    start: Regex,
    max_bytes: usize,
    /// The group's lines, each with whether it continues the part before it (a later chunk of an
    /// over-long line: joined without a separator).
    parts: Vec<(Bytes, bool)>,
    size: usize,
    end: u64,
    /// Offset of the group's first byte, when the lines fed carry their starts.
    first_byte: Option<u64>,
}

impl Multiline {
    pub fn new(start: Regex, max_bytes: usize) -> Multiline {
        Multiline {
            start,
            max_bytes,
            parts: Vec::new(),
            size: 0,
            end: 0,
            first_byte: None,
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.parts.is_empty()
    }

    fn emit(&mut self, out: &mut Split) {
        if self.parts.is_empty() {
            return;
        }
        let record = if self.parts.len() == 1 {
            self.parts.pop().expect("one part").0
        } else {
            let mut b = BytesMut::with_capacity(self.size);
            for (i, (p, continues)) in self.parts.drain(..).enumerate() {
                if i > 0 && !continues {
                    b.extend_from_slice(b"\n");
                }
                b.extend_from_slice(&p);
            }
            b.freeze()
        };
        self.size = 0;
        out.lines.push(record);
        out.continues.push(false);
        out.ends.push(self.end);
        out.starts.extend(self.first_byte.take());
        out.end_offset = self.end;
    }

    /// Groups the lines of `split`; returns the completed records. The returned `end_offset` is the end
    /// of the last completed record (0 when none completed).
    pub fn feed(&mut self, split: Split) -> Split {
        let mut out = Split {
            long_lines_split: split.long_lines_split,
            empty_skipped: split.empty_skipped,
            ..Split::default()
        };
        let mut continues = split.continues.into_iter();
        let mut starts = split.starts.into_iter();
        for (line, end) in split.lines.into_iter().zip(split.ends) {
            let line_start = starts.next();
            // A later piece of one line is never the start of a record, and adds no separator.
            let cont = continues.next().unwrap_or(false) && !self.parts.is_empty();
            let sep = usize::from(!cont && !self.parts.is_empty());
            let starts = !cont && self.start.is_match(&line);
            let too_big = self.size + sep + line.len() > self.max_bytes;
            if starts || too_big {
                self.emit(&mut out);
            }
            if self.parts.is_empty() {
                self.first_byte = line_start;
            }
            self.size += line.len() + usize::from(!cont && !self.parts.is_empty());
            self.parts.push((line, cont));
            self.end = end;
        }
        out
    }

    /// Drops the held group: the content it came from was truncated or rewritten.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.size = 0;
        self.first_byte = None;
    }

    /// Ships the held group (idle past the timeout, or the file is rotated away).
    pub fn flush(&mut self) -> Split {
        let mut out = Split::default();
        self.emit(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::reader::LineSplitter;

    fn texts(s: &Split) -> Vec<String> {
        s.lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn split_of(data: &[u8]) -> Split {
        let mut s = LineSplitter::new(0, 1024, 1024, false);
        s.push(data);
        s.take_lines(1000)
    }

    #[test]
    fn stack_traces_become_one_record_and_the_last_group_is_held() {
        let mut m = Multiline::new(Regex::new(r"^\d{4}-").unwrap(), 1 << 20);
        let out = m.feed(split_of(
            b"2024-01-01 boom\n  at a()\n  at b()\n2024-01-01 ok\n2024-01-02 next\n  at c()\n",
        ));
        assert_eq!(
            texts(&out),
            vec!["2024-01-01 boom\n  at a()\n  at b()", "2024-01-01 ok"]
        );
        assert_eq!(out.end_offset, 48, "offset stops before the held group");
        assert!(m.has_pending());
        let rest = m.flush();
        assert_eq!(texts(&rest), vec!["2024-01-02 next\n  at c()"]);
        assert_eq!(rest.end_offset, 73);
    }

    #[test]
    fn leading_continuation_lines_form_their_own_record_and_size_is_capped() {
        let mut m = Multiline::new(Regex::new("^S").unwrap(), 10);
        let out = m.feed(split_of(b"cont\nS1\naaaa\nbbbb\nS2\n"));
        assert_eq!(texts(&out), vec!["cont", "S1\naaaa", "bbbb"]);
        assert_eq!(texts(&m.flush()), vec!["S2"]);
    }

    /// A group's start is its first line's: the record's id and `log.offset` point there.
    #[test]
    fn a_group_starts_at_its_first_line() {
        let mut m = Multiline::new(Regex::new("^S").unwrap(), 100);
        let mut s = LineSplitter::new(100, 1024, 1024, false).tracking_starts();
        s.push(b"S1\n  a\nS2\n  b\nS3\n");
        let out = m.feed(s.take_lines(100));
        assert_eq!(texts(&out), vec!["S1\n  a", "S2\n  b"]);
        assert_eq!(out.starts, vec![100, 107]);
        assert_eq!(m.flush().starts, vec![114]);
    }

    /// The chunks of one over-long line are one line: joined without a separator, and a chunk that
    /// happens to match the start pattern does not start a record.
    #[test]
    fn chunks_of_a_long_line_are_joined_without_a_separator() {
        let mut m = Multiline::new(Regex::new("^S").unwrap(), 100);
        let mut s = LineSplitter::new(0, 1024, 4, false);
        s.push(b"S1\n  abSxyzq\nS2\n");
        let out = m.feed(s.take_lines(100));
        assert_eq!(texts(&out), vec!["S1\n  abSxyzq"]);
    }
}
