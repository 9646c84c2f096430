//! The version-1 checkpoint document: one entry per physical file, written as pretty JSON byte for
//! byte as serde would, and read back with every entry checked. Pure: no file system.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::state::identity::{TailHash, FINGERPRINT_MAX};

/// The on-disk format version this agent reads and writes.
pub const VERSION: u32 = 1;

/// What is known about one physical file the agent has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    pub dev: u64,
    pub ino: u64,
    /// `hash_hex` of the file's first `fingerprint_len` bytes ("" when the file was empty).
    pub fingerprint: String,
    /// At most `identity::FINGERPRINT_MAX`.
    pub fingerprint_len: u32,
    /// The last path the file was seen at.
    pub path: PathBuf,
    pub topic: String,
    /// Acknowledged offset: every byte before it has been delivered.
    pub offset: u64,
    /// `hash_hex` of the (up to) `identity::TAIL_HASH_LEN` bytes just before `offset`
    /// ("" when `offset` is 0).
    pub tail_hash: String,
    /// Unix milliseconds of the last change.
    pub updated_ms: u64,
    /// Unix milliseconds at which the file was found gone (and fully shipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since_ms: Option<u64>,
}

/// Why bytes are not a valid version-1 checkpoint document (or entries cannot be written as one).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("empty file")]
    Empty,
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("top level is not a JSON object")]
    NotAnObject,
    #[error("missing or non-integer \"version\"")]
    MissingVersion,
    #[error("unsupported checkpoint format version {found} (this agent reads version {VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("wrong shape for a version {VERSION} checkpoint: {0}")]
    Shape(serde_json::Error),
    #[error("entry {index} ({path}): {problem}")]
    InvalidEntry {
        index: usize,
        path: String,
        problem: String,
    },
    #[error("cannot encode checkpoints: {0}")]
    Encode(serde_json::Error),
}

#[derive(Deserialize)]
struct DocumentIn {
    #[allow(dead_code)] // checked from the untyped value before this shape is parsed
    version: u32,
    files: Vec<FileCheckpoint>,
}

/// Serializes entries as the version-1 document: pretty JSON (2-space indent) with a trailing
/// newline, entries sorted by identity so that unchanged state gives unchanged bytes.
pub fn encode(files: &[FileCheckpoint]) -> Result<Vec<u8>, FormatError> {
    let mut sorted: Vec<&FileCheckpoint> = files.iter().collect();
    // An inode reused by a new file can briefly coexist with the old file's entry, so (dev, ino)
    // alone is not unique; the rest of the key keeps the order total.
    sorted.sort_by(|a, b| {
        (a.dev, a.ino, &a.fingerprint, &a.path, a.offset).cmp(&(
            b.dev,
            b.ino,
            &b.fingerprint,
            &b.path,
            b.offset,
        ))
    });
    let texts = sorted
        .iter()
        .enumerate()
        .map(|(index, file)| entry_text(index, file))
        .collect::<Result<Vec<String>, FormatError>>()?;
    Ok(document(texts.iter().map(String::as_str)))
}

/// One entry as [`encode`] lays it out inside the document, after the same checks. The registry
/// keeps this text per record, so a record that did not change is not encoded again: with
/// thousands of idle files, encoding every record at every interval was most of the checkpoint's
/// cost.
pub fn entry_text(index: usize, file: &FileCheckpoint) -> Result<String, FormatError> {
    check_entry(index, file)?;
    let mut out = Vec::with_capacity(300 + file.path.as_os_str().len() + file.topic.len());
    write_entry(&mut out, file, Layout::Pretty)?;
    // Only UTF-8 went in: the path was checked, the rest is JSON and ASCII.
    Ok(String::from_utf8(out).expect("JSON is UTF-8"))
}

/// How [`write_entry`] lays an entry out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// As `serde_json::to_writer_pretty` does, indented to the `files` array's depth: the document.
    Pretty,
    /// As `serde_json::to_writer` does: a journal line.
    Compact,
}

/// Writes a checked entry (see [`check_entry`]) field by field, exactly as serde lays the struct
/// out in `layout` (checked against it by property tests): with 1,000 trickling files every
/// record changes every second, and serde's pretty printer was a third of the checkpoint's cost,
/// its compact one a sixth.
pub(super) fn write_entry(
    out: &mut Vec<u8>,
    file: &FileCheckpoint,
    layout: Layout,
) -> Result<(), FormatError> {
    let path = file.path.to_str().expect("checked: UTF-8");
    let pretty = layout == Layout::Pretty;
    out.extend_from_slice(if pretty { b"    {\n" } else { b"{" });
    let mut num = itoa::Buffer::new();
    let mut field = |out: &mut Vec<u8>, name: &str, value: Value<'_>, last: bool| {
        out.extend_from_slice(if pretty { b"      \"" } else { b"\"" });
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(if pretty { b"\": " } else { b"\":" });
        match value {
            Value::Int(n) => out.extend_from_slice(num.format(n).as_bytes()),
            Value::Str(s) => {
                serde_json::to_writer(&mut *out, s).map_err(FormatError::Encode)?;
            }
        }
        out.extend_from_slice(match (pretty, last) {
            (true, true) => b"\n",
            (true, false) => b",\n",
            (false, true) => b"",
            (false, false) => b",",
        });
        Ok::<(), FormatError>(())
    };
    let gone = file.gone_since_ms;
    field(out, "dev", Value::Int(file.dev), false)?;
    field(out, "ino", Value::Int(file.ino), false)?;
    field(out, "fingerprint", Value::Str(&file.fingerprint), false)?;
    field(
        out,
        "fingerprint_len",
        Value::Int(u64::from(file.fingerprint_len)),
        false,
    )?;
    field(out, "path", Value::Str(path), false)?;
    field(out, "topic", Value::Str(&file.topic), false)?;
    field(out, "offset", Value::Int(file.offset), false)?;
    field(out, "tail_hash", Value::Str(&file.tail_hash), false)?;
    field(
        out,
        "updated_ms",
        Value::Int(file.updated_ms),
        gone.is_none(),
    )?;
    if let Some(g) = gone {
        field(out, "gone_since_ms", Value::Int(g), true)?;
    }
    out.extend_from_slice(if pretty { b"    }" } else { b"}" });
    Ok(())
}

/// A field's value in [`write_entry`].
enum Value<'a> {
    Int(u64),
    Str(&'a str),
}

/// The version-1 document around entry texts (from [`entry_text`]) already in identity order:
/// byte for byte what `serde_json::to_vec_pretty` gives for the whole document.
pub fn document<'a>(entries: impl Iterator<Item = &'a str> + Clone) -> Vec<u8> {
    // Sized up front: grown by doubling, idle10000's 2.5 MB snapshot was copied again and again.
    let size = entries.clone().map(|e| e.len() + 2).sum::<usize>() + 64;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(format!("{{\n  \"version\": {VERSION},\n  \"files\": [").as_bytes());
    let mut any = false;
    for text in entries {
        out.extend_from_slice(if any { b",\n" } else { b"\n" });
        out.extend_from_slice(text.as_bytes());
        any = true;
    }
    out.extend_from_slice(if any { b"\n  ]\n}\n" } else { b"]\n}\n" });
    out
}

/// Parses a version-1 document. Does not touch the file system, so `status`-style readers can
/// use it without moving anything.
pub fn decode(bytes: &[u8]) -> Result<Vec<FileCheckpoint>, FormatError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FormatError::Empty);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(FormatError::Json)?;
    let object = value.as_object().ok_or(FormatError::NotAnObject)?;
    // The version is checked before the shape so that a newer format is reported as such
    // rather than as a confusing shape error.
    let version = object
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or(FormatError::MissingVersion)?;
    if version != u64::from(VERSION) {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    let doc: DocumentIn = serde_json::from_value(value).map_err(FormatError::Shape)?;
    for (index, file) in doc.files.iter().enumerate() {
        check_entry(index, file)?;
    }
    Ok(doc.files)
}

pub(super) fn check_entry(index: usize, file: &FileCheckpoint) -> Result<(), FormatError> {
    let problem = if u64::from(file.fingerprint_len) > FINGERPRINT_MAX {
        Some(format!(
            "fingerprint_len {} exceeds {FINGERPRINT_MAX}",
            file.fingerprint_len
        ))
    } else if !hash_matches_len(&file.fingerprint, u64::from(file.fingerprint_len)) {
        Some(format!(
            "fingerprint {:?} does not fit fingerprint_len {} (16 lowercase hex digits, \"\" only for 0)",
            file.fingerprint, file.fingerprint_len
        ))
    } else if !hash_matches_len(&file.tail_hash, file.offset) {
        Some(format!(
            "tail_hash {:?} does not fit offset {} (16 lowercase hex digits, \"\" only for 0)",
            file.tail_hash, file.offset
        ))
    } else if file.path.to_str().is_none() {
        Some("path is not valid UTF-8".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(FormatError::InvalidEntry {
            index,
            path: file.path.display().to_string(),
            problem,
        }),
    }
}

fn hash_matches_len(hash: &str, covered: u64) -> bool {
    // The stored form is `TailHash`'s (fingerprints share it): 16 lowercase hex digits, "" for none.
    TailHash::from_hex(hash).is_some_and(|h| h.is_empty() == (covered == 0))
}
