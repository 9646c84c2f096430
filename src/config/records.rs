//! The optional fields of a collect entry that shape its records rather than choose its files:
//! `encoding`, `format`, `headers`, `include_lines`/`exclude_lines`, `max_bytes_per_s` and
//! `ignore_older_ms`. Every one defaults to today's behaviour (bytes shipped as read), so an entry
//! that sets none of them takes the raw path unchanged (see [`RecordOptions::is_raw`]).

use serde::{Deserialize, Serialize};

/// What a record's value is. JSON: `"raw"` (default) or `"json"` (the ECS envelope).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Raw,
    Json,
}

/// Metadata an entry may attach to each record as a Kafka header named `logagent.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaHeader {
    Id,
    Host,
    Ip,
    Path,
    Offset,
}

impl MetaHeader {
    pub fn header_name(self) -> &'static str {
        match self {
            MetaHeader::Id => "logagent.id",
            MetaHeader::Host => "logagent.host",
            MetaHeader::Ip => "logagent.ip",
            MetaHeader::Path => "logagent.path",
            MetaHeader::Offset => "logagent.offset",
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The record-shaping fields of an entry, checked by [`RecordOptions::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct RecordOptions {
    /// A WHATWG label (`"gbk"`, `"utf-16le"`, ...); `None` or a UTF-8 label: bytes pass untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "is_default")]
    pub format: Format,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<MetaHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_lines: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_lines: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_older_ms: Option<u64>,
}

/// Fewer bytes per second than this would make a single long line take minutes to read.
pub const MIN_BYTES_PER_S: u64 = 1024;

impl RecordOptions {
    /// Whether records are the lines as read: no decoding, filtering, envelope or extra headers. Such
    /// entries take the tailer's raw path (no per-record work at all).
    pub fn is_raw(&self) -> bool {
        self.decoder().is_none()
            && self.format == Format::Raw
            && self.headers.is_empty()
            && self.include_lines.is_empty()
            && self.exclude_lines.is_empty()
    }

    /// The encoding to decode lines from, `None` when lines are already UTF-8 (passed through).
    pub fn decoder(&self) -> Option<&'static encoding_rs::Encoding> {
        let enc = encoding_rs::Encoding::for_label(self.encoding.as_deref()?.as_bytes())?;
        (enc != encoding_rs::UTF_8).then_some(enc)
    }

    /// Every problem with these fields, one line each.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(label) = &self.encoding {
            match encoding_rs::Encoding::for_label(label.as_bytes()) {
                None => problems.push(format!(
                    "encoding {label:?} is not a WHATWG encoding label (e.g. \"gbk\", \"utf-16le\")"
                )),
                // These labels name no text encoding: every input would become one U+FFFD.
                Some(enc) if enc == encoding_rs::REPLACEMENT => problems.push(format!(
                    "encoding {label:?} is a replacement label: it cannot decode anything"
                )),
                Some(_) => {}
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.headers {
            if !seen.insert(*h) {
                problems.push(format!("headers lists {:?} twice", h.header_name()));
            }
        }
        for (name, list) in [
            ("include_lines", &self.include_lines),
            ("exclude_lines", &self.exclude_lines),
        ] {
            for pattern in list {
                if let Err(err) = regex::bytes::Regex::new(pattern) {
                    problems.push(format!(
                        "{name} {pattern:?} is not a valid regex: {}",
                        regex_reason(&err)
                    ));
                }
            }
        }
        if let Some(rate) = self.max_bytes_per_s {
            if rate < MIN_BYTES_PER_S {
                problems.push(format!(
                    "max_bytes_per_s {rate} is below {MIN_BYTES_PER_S}; leave it out for no limit"
                ));
            }
        }
        if self.ignore_older_ms == Some(0) {
            problems.push("ignore_older_ms is 0; leave it out to read every file".to_owned());
        }
        problems
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, reason); keep the reason
/// so each problem stays on one line.
pub(crate) fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_raw_and_utf8_labels_pass_through() {
        assert!(RecordOptions::default().is_raw());
        for label in ["utf-8", "UTF8", "unicode-1-1-utf-8"] {
            let o = RecordOptions {
                encoding: Some(label.into()),
                ..RecordOptions::default()
            };
            assert!(o.is_raw(), "{label}");
            assert!(o.check().is_empty());
        }
        let gbk = RecordOptions {
            encoding: Some("gbk".into()),
            ..RecordOptions::default()
        };
        assert!(!gbk.is_raw());
        assert_eq!(gbk.decoder(), Some(encoding_rs::GBK));
        let json = RecordOptions {
            format: Format::Json,
            ..RecordOptions::default()
        };
        assert!(!json.is_raw());
        let throttled = RecordOptions {
            max_bytes_per_s: Some(4096),
            ignore_older_ms: Some(1000),
            ..RecordOptions::default()
        };
        assert!(throttled.is_raw(), "read-side options keep the raw record");
    }

    #[test]
    fn every_problem_is_named() {
        let o = RecordOptions {
            encoding: Some("klingon".into()),
            headers: vec![MetaHeader::Id, MetaHeader::Id],
            include_lines: vec!["(".into()],
            exclude_lines: vec!["[".into()],
            max_bytes_per_s: Some(10),
            ignore_older_ms: Some(0),
            ..RecordOptions::default()
        };
        let p = o.check();
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].contains("\"klingon\" is not a WHATWG"));
        assert!(p[1].contains("\"logagent.id\" twice"));
        assert!(p[2].starts_with("include_lines \"(\" is not a valid regex: unclosed group"));
        assert!(p[3].starts_with("exclude_lines \"[\" is not a valid regex"));
        assert!(p[4].contains("below 1024"));
        assert!(p[5].contains("ignore_older_ms is 0"));
        let replacement = RecordOptions {
            encoding: Some("iso-2022-kr".into()),
            ..RecordOptions::default()
        };
        assert!(replacement.check()[0].contains("replacement label"));
    }
}
