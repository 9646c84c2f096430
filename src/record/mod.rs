//! The record stage: what an entry's records are made of when it sets `encoding`, `format`,
//! `headers` or line filters. It sits between the line splitter and the sink, in this order:
//!
//! ```text
//! tail::reader (lines, cut at the encoded newline) ─▶ decode ─▶ tail::multiline ─▶ filter ─▶ format + headers ─▶ sink
//! ```
//!
//! An entry that sets none of these has no [`RecordSpec`]: its tailers skip this stage entirely and
//! ship the read buffer's slices as they are (the raw hot path). `logagent preview` runs the same
//! stage on the same tailers, so what it prints is what is produced.

pub mod decode;
pub mod envelope;
pub mod filter;
pub mod id;

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};

use crate::config::collect::{CollectEntry, Format, MetaHeader};
use crate::state::identity::Fingerprint;
use crate::tail::reader::{Newline, Split};
use crate::telemetry::{Metrics, RecordCounters};
use envelope::FileEnvelope;
use filter::LineFilter;

/// An entry's record options, compiled once per entry and shared by its files.
#[derive(Debug)]
pub struct RecordSpec {
    encoding: Option<&'static encoding_rs::Encoding>,
    filter: Option<LineFilter>,
    format: Format,
    headers: Vec<MetaHeader>,
}

impl RecordSpec {
    /// `None` for an entry whose records are its raw lines. The entry was validated, so its regexes
    /// compile; should one not, the filter is left out rather than the entry stopped.
    pub fn for_entry(entry: &CollectEntry) -> Option<Arc<RecordSpec>> {
        let o = &entry.records;
        if o.is_raw() {
            return None;
        }
        Some(Arc::new(RecordSpec {
            encoding: o.decoder(),
            filter: LineFilter::new(&o.include_lines, &o.exclude_lines)
                .ok()
                .flatten(),
            format: o.format,
            headers: o.headers.clone(),
        }))
    }

    /// Where lines end in this entry's files.
    pub fn newline(&self) -> Newline {
        decode::newline_of(self.encoding)
    }
}

/// The record stage of one file.
pub struct Pipeline {
    spec: Arc<RecordSpec>,
    host: String,
    ip: String,
    path: String,
    /// The entry's `fields`, sent as headers before the metadata ones (as the sink sends them).
    fields: Vec<(String, String)>,
    envelope: Option<FileEnvelope>,
    counters: RecordCounters,
}

/// Records ready for the sink: the batch's lines become record values; `headers` is empty or holds
/// every header of each record.
pub struct Records {
    pub split: Split,
    pub headers: Vec<OwnedHeaders>,
}

impl Pipeline {
    pub fn new(
        spec: Arc<RecordSpec>,
        entry: &CollectEntry,
        path: &str,
        host: &str,
        ip: &str,
        metrics: &Metrics,
    ) -> Pipeline {
        Pipeline {
            envelope: (spec.format == Format::Json)
                .then(|| FileEnvelope::new(host, ip, path, &entry.fields)),
            spec,
            host: host.to_owned(),
            ip: ip.to_owned(),
            path: path.to_owned(),
            fields: entry
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            counters: metrics.records(&entry.topic),
        }
    }

    /// Decodes the lines of `split` to UTF-8 (before multiline grouping, whose patterns are UTF-8);
    /// a no-op for UTF-8 entries. One allocation per batch: every line is decoded into one buffer
    /// and sliced out of it.
    pub fn decode(&self, mut split: Split) -> Split {
        let Some(enc) = self.spec.encoding else {
            return split;
        };
        if split.lines.is_empty() {
            return split;
        }
        let total: usize = split.lines.iter().map(Bytes::len).sum();
        let mut text = String::with_capacity(total + total / 2);
        let mut ranges = Vec::with_capacity(split.lines.len());
        let mut errors = 0;
        for (i, line) in split.lines.iter().enumerate() {
            let start = text.len();
            let at_file_start = split.starts.get(i) == Some(&0);
            errors += decode::decode_into(enc, line, at_file_start, &mut text);
            ranges.push(start..text.len());
        }
        if errors > 0 {
            self.counters.decode_errors.inc_by(errors);
        }
        let all = Bytes::from(text);
        split.lines = ranges.into_iter().map(|r| all.slice(r)).collect();
        split
    }

    /// Filters the (grouped) records of `split`, then formats them and builds their headers. Records
    /// filtered out leave the split, but its end offset still covers them: their bytes are consumed.
    /// `file` and `fingerprint` give the records' ids.
    pub fn finish(&self, mut split: Split, file: &File, fingerprint: &Fingerprint) -> Records {
        if let Some(f) = &self.spec.filter {
            let before = split.lines.len();
            retain(&mut split, |line| f.keeps(line));
            let dropped = before - split.lines.len();
            if dropped > 0 {
                self.counters.records_filtered.inc_by(dropped as u64);
            }
        }
        let wants_id = self.envelope.is_some() || self.spec.headers.contains(&MetaHeader::Id);
        let ids: Vec<[u8; envelope::ID_LEN]> = if wants_id {
            let mut fps = id::IdFingerprints::new(file, fingerprint);
            let mut hasher = id::IdHasher::default();
            split
                .starts
                .iter()
                .zip(&split.ends)
                .map(|(&start, &end)| {
                    // Unreadable head (the file vanished under us): the offset alone still tells
                    // this file's records apart.
                    let fp = fps.for_end(end).unwrap_or_default();
                    hasher.id(&self.host, fp, start)
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(env) = &self.envelope {
            let timestamp = envelope::rfc3339_ms(crate::clock::now_ms());
            // Room for every envelope of messages that need no escaping: no regrowth (and copy)
            // of the batch's buffer.
            let size: usize = split.lines.iter().map(Bytes::len).sum::<usize>()
                + env.overhead() * split.lines.len();
            let mut out = Vec::with_capacity(size);
            let mut ranges = Vec::with_capacity(split.lines.len());
            let mut errors = 0;
            for (i, line) in split.lines.iter().enumerate() {
                let (message, bad) = if self.spec.encoding.is_some() {
                    // Already decoded: valid UTF-8.
                    (String::from_utf8_lossy(line), 0)
                } else {
                    decode::lossy_utf8(line)
                };
                errors += bad;
                let start = out.len();
                let offset = split.starts.get(i).copied().unwrap_or(0);
                let id = ids.get(i).map_or(&[][..], |id| &id[..]);
                env.write(&mut out, &timestamp, &message, offset, id);
                ranges.push(start..out.len());
            }
            if errors > 0 {
                self.counters.decode_errors.inc_by(errors);
            }
            let all = Bytes::from(out);
            split.lines = ranges.into_iter().map(|r| all.slice(r)).collect();
        }
        let headers = if self.spec.headers.is_empty() {
            Vec::new()
        } else {
            (0..split.lines.len())
                .map(|i| self.headers_of(split.starts.get(i).copied().unwrap_or(0), ids.get(i)))
                .collect()
        };
        Records { split, headers }
    }

    /// Every header of one record: the entry's fields, then the metadata it asks for.
    fn headers_of(&self, offset: u64, id: Option<&[u8; envelope::ID_LEN]>) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(self.fields.len() + self.spec.headers.len());
        for (k, v) in &self.fields {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut number = itoa::Buffer::new();
        for m in &self.spec.headers {
            let value: &[u8] = match m {
                MetaHeader::Id => id.map_or(&[][..], |id| &id[..]),
                MetaHeader::Host => self.host.as_bytes(),
                MetaHeader::Ip => self.ip.as_bytes(),
                MetaHeader::Path => self.path.as_bytes(),
                MetaHeader::Offset => number.format(offset).as_bytes(),
            };
            h = h.insert(Header {
                key: m.header_name(),
                value: Some(value),
            });
        }
        h
    }
}

/// Keeps the records of `split` for which `keep` holds, with their ends, starts and flags.
fn retain(split: &mut Split, keep: impl Fn(&[u8]) -> bool) {
    let n = split.lines.len();
    let mut w = 0;
    for r in 0..n {
        if keep(&split.lines[r]) {
            split.lines.swap(w, r);
            split.ends.swap(w, r);
            if r < split.starts.len() {
                split.starts.swap(w, r);
            }
            if r < split.continues.len() {
                split.continues.swap(w, r);
            }
            w += 1;
        }
    }
    split.lines.truncate(w);
    split.ends.truncate(w);
    split.starts.truncate(w);
    split.continues.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::collect::RecordOptions;
    use std::io::Write;

    fn entry(records: RecordOptions) -> CollectEntry {
        let mut e = CollectEntry::new("/var/log/a.log", "t");
        e.fields = [("env".to_owned(), "prod".to_owned())].into();
        e.records = records;
        e
    }

    fn split_of(lines: &[(&[u8], u64)]) -> Split {
        let mut s = Split::default();
        let mut at = 0;
        for (line, start) in lines {
            s.lines.push(Bytes::copy_from_slice(line));
            s.starts.push(*start);
            at = start + line.len() as u64 + 1;
            s.ends.push(at);
            s.continues.push(false);
        }
        s.end_offset = at + 5;
        s
    }

    #[test]
    fn raw_entries_have_no_record_stage() {
        assert!(RecordSpec::for_entry(&entry(RecordOptions::default())).is_none());
    }

    #[test]
    fn filtered_records_leave_but_the_offset_still_covers_them() {
        let metrics = Metrics::new(false);
        let e = entry(RecordOptions {
            exclude_lines: vec!["^DEBUG".into()],
            headers: vec![MetaHeader::Offset, MetaHeader::Path],
            ..RecordOptions::default()
        });
        let spec = RecordSpec::for_entry(&e).unwrap();
        let p = Pipeline::new(spec, &e, "/var/log/a.log", "h", "10.0.0.1", &metrics);
        let f = tempfile::NamedTempFile::new().unwrap();
        let split = split_of(&[(b"DEBUG a", 0), (b"INFO b", 8), (b"DEBUG c", 15)]);
        let out = p.finish(split, f.as_file(), &Fingerprint::default());
        assert_eq!(out.split.lines, vec![Bytes::from_static(b"INFO b")]);
        assert_eq!(out.split.ends, vec![15]);
        assert_eq!(out.split.starts, vec![8]);
        assert_eq!(
            out.split.end_offset, 28,
            "the filtered tail is still consumed"
        );
        use rdkafka::message::Headers;
        let h: Vec<(String, String)> = out.headers[0]
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            h,
            vec![
                ("env".into(), "prod".into()),
                ("logagent.offset".into(), "8".into()),
                ("logagent.path".into(), "/var/log/a.log".into()),
            ]
        );
        assert!(metrics
            .encode()
            .contains("logagent_records_filtered_total{topic=\"t\"} 2"));
    }

    #[test]
    fn json_records_carry_the_decoded_line_its_offset_and_id() {
        let metrics = Metrics::new(false);
        let e = entry(RecordOptions {
            encoding: Some("gbk".into()),
            format: Format::Json,
            headers: vec![MetaHeader::Id],
            ..RecordOptions::default()
        });
        let spec = RecordSpec::for_entry(&e).unwrap();
        let p = Pipeline::new(spec, &e, "/var/log/a.log", "h", "10.0.0.1", &metrics);
        let (gbk, _, _) = encoding_rs::GBK.encode("错误 x");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&gbk).unwrap();
        f.write_all(b"\nbad \x81\x20\n").unwrap();
        let size = f.as_file().metadata().unwrap().len();
        let fp = Fingerprint::of_file(f.as_file(), size).unwrap();
        let second = gbk.len() as u64 + 1;
        let split = p.decode(split_of(&[(&gbk, 0), (b"bad \x81\x20", second)]));
        let out = p.finish(split, f.as_file(), &fp);
        let v: Vec<serde_json::Value> = out
            .split
            .lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(v[0]["message"], "错误 x");
        assert_eq!(v[0]["log"]["offset"], 0);
        assert_eq!(v[1]["message"], "bad \u{FFFD} ");
        assert_eq!(v[1]["log"]["offset"], second);
        assert_eq!(v[1]["host"]["ip"], "10.0.0.1");
        assert_eq!(v[0]["fields"]["env"], "prod");
        let id0 = v[0]["event"]["id"].as_str().unwrap();
        assert_ne!(id0, v[1]["event"]["id"].as_str().unwrap());
        use rdkafka::message::Headers;
        let header = out.headers[0].iter().last().unwrap();
        assert_eq!(header.key, "logagent.id");
        assert_eq!(header.value.unwrap(), id0.as_bytes());
        assert!(metrics
            .encode()
            .contains("logagent_decode_errors_total{topic=\"t\"} 1"));
    }
}
