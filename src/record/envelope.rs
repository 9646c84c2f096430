//! The `"format": "json"` record: one JSON object per record with the field names Filebeat and ECS
//! use, so Elasticsearch ingest pipelines and Kibana views written for Filebeat work unchanged:
//!
//! ```json
//! {"@timestamp":"2026-11-26T06:30:00.123Z","message":"GET / 200",
//!  "host":{"name":"web-1","ip":"10.0.0.5"},"log":{"file":{"path":"/var/log/app.log"},"offset":4096},
//!  "event":{"id":"<record id>"},"fields":{"env":"prod"}}
//! ```
//!
//! Everything that is the same for every record of a file is rendered once ([`FileEnvelope::new`]);
//! per record only the time, the message, the offset and the id are written.

use std::collections::BTreeMap;

/// Length of a [`rfc3339_ms`] timestamp.
pub const TIMESTAMP_LEN: usize = "2026-11-26T06:30:00.123Z".len();
/// Length of a record id (32 hex digits).
pub const ID_LEN: usize = 32;

const OPEN: &[u8] = br#"{"@timestamp":""#;
const BEFORE_MESSAGE: &[u8] = br#"","message":"#;
const BEFORE_ID: &[u8] = br#"},"event":{"id":""#;

/// The parts of the envelope shared by every record of one file, pre-rendered.
#[derive(Debug)]
pub struct FileEnvelope {
    /// `,"host":{...},"log":{"file":{"path":...},"offset":`
    after_message: Vec<u8>,
    /// `"},"fields":{...}}`
    closing: Vec<u8>,
}

impl FileEnvelope {
    pub fn new(host: &str, ip: &str, path: &str, fields: &BTreeMap<String, String>) -> Self {
        let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
        let after_message = format!(
            r#","host":{{"name":{},"ip":{}}},"log":{{"file":{{"path":{}}},"offset":"#,
            s(host),
            s(ip),
            s(path)
        )
        .into_bytes();
        let fields = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
        let closing = format!(r#""}},"fields":{fields}}}"#).into_bytes();
        FileEnvelope {
            after_message,
            closing,
        }
    }

    /// The most one record's envelope adds to its message (unescaped): with this reserved per
    /// record, a batch whose messages need no escaping is written without the buffer growing.
    pub fn overhead(&self) -> usize {
        OPEN.len()
            + TIMESTAMP_LEN
            + BEFORE_MESSAGE.len()
            + 2
            + self.after_message.len()
            + 20 // u64::MAX
            + BEFORE_ID.len()
            + ID_LEN
            + self.closing.len()
    }

    /// Appends one record's envelope to `out`. `timestamp` is [`rfc3339_ms`] of the read time.
    pub fn write(&self, out: &mut Vec<u8>, timestamp: &str, message: &str, offset: u64, id: &[u8]) {
        out.extend_from_slice(OPEN);
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(BEFORE_MESSAGE);
        write_json_str(out, message);
        out.extend_from_slice(&self.after_message);
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        out.extend_from_slice(BEFORE_ID);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.closing);
    }
}

/// What a byte becomes inside a JSON string, as serde_json writes it: 0 (itself), `u` (`\u00XX`)
/// or the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// The bytes of `w` (8 bytes of a string, little-endian) that JSON escapes — control characters,
/// `"` and `\` — as their high bits; 0 when there are none. The lowest bit set marks the first
/// such byte exactly (a subtraction's borrow only flags bytes above a true match), so
/// `trailing_zeros() / 8` is its index. Bytes of multi-byte UTF-8 characters are all >= 0x80 and
/// never match.
#[inline]
fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let q = w ^ (ONES * u64::from(b'"'));
    let b = w ^ (ONES * u64::from(b'\\'));
    // "Some byte < n" is `(w - n·ONES) & !w & HIGHS`; "some byte is zero" the same with n = 1.
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = q.wrapping_sub(ONES) & !q;
    let backslash = b.wrapping_sub(ONES) & !b;
    (below_space | quote | backslash) & HIGHS
}

/// Appends the escape of `b` (a byte JSON escapes) to `out`.
#[inline]
fn push_escape(out: &mut Vec<u8>, b: u8) {
    let esc = ESCAPE[usize::from(b)];
    if esc == b'u' {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

/// Appends `s` as a quoted JSON string, byte for byte what `serde_json::to_string(s)` gives. Runs
/// of bytes that need no escape are copied whole; the next byte to escape is found eight bytes at
/// a time (serde_json looks at every byte on its own).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let mask = escape_mask(u64::from_le_bytes(word));
        if mask == 0 {
            i += 8;
            continue;
        }
        let at = i + (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..at]);
        push_escape(out, bytes[at]);
        i = at + 1;
        start = i;
    }
    for (at, &b) in bytes.iter().enumerate().skip(i) {
        if ESCAPE[usize::from(b)] != 0 {
            out.extend_from_slice(&bytes[start..at]);
            push_escape(out, b);
            start = at + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds: `2026-11-26T06:30:00.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`), so no date crate is needed for one format.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(s: &str) -> String {
        let mut out = b"x".to_vec();
        write_json_str(&mut out, s);
        String::from_utf8(out[1..].to_vec()).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain ascii line of more than eight bytes",
            "\"",
            "\\",
            "ab\"cdefgh\\ijklmnop\u{0}q\u{1f}\u{7f}",
            "\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1b}[0m",
            "日志 错误 \u{FFFD} \u{10FFFF} é",
            "1234567\"",
            "12345678\"",
            "123456789\n",
        ] {
            assert_eq!(escaped(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    /// Any char, weighted towards the ones JSON escapes and the bytes around them.
    fn text() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            3 => any::<char>(),
            3 => (0u8..0x80).prop_map(char::from),
            2 => prop::sample::select(vec!['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', '\u{7f}', '\u{FFFD}', '\u{80}']),
        ];
        prop::collection::vec(c, 0..80).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn escaping_matches_serde_json(s in text()) {
            prop_assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn the_mask_finds_the_first_byte_to_escape(
            bytes in prop::array::uniform8(prop_oneof![
                any::<u8>(),
                prop::sample::select(vec![0u8, 0x1f, 0x20, b'"', b'\\', 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff]),
            ])
        ) {
            let first = bytes.iter().position(|&b| ESCAPE[usize::from(b)] != 0);
            let mask = escape_mask(u64::from_le_bytes(bytes));
            prop_assert_eq!((mask != 0).then(|| (mask.trailing_zeros() / 8) as usize), first);
        }
    }

    #[test]
    fn overhead_covers_the_largest_envelope_of_an_unescaped_message() {
        let fields: BTreeMap<String, String> = [("env".to_owned(), "prod".to_owned())].into();
        let env = FileEnvelope::new("web-1", "10.0.0.5", "/var/log/a.log", &fields);
        let mut out = Vec::new();
        env.write(
            &mut out,
            &rfc3339_ms(u64::MAX / 1_000_000),
            "m",
            u64::MAX,
            &[b'0'; ID_LEN],
        );
        assert_eq!(out.len(), env.overhead() + 1);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339_ms(1_795_674_600_123), "2026-11-26T06:30:00.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_envelope_parses_back_with_every_field() {
        let fields: BTreeMap<String, String> =
            [("env".to_owned(), "prod \"eu\"".to_owned())].into();
        let env = FileEnvelope::new("web-1", "10.0.0.5", "/var/log/a \"b\".log", &fields);
        let mut out = Vec::new();
        env.write(
            &mut out,
            "2026-11-26T06:30:00.123Z",
            "say \"hi\"\\\t\u{1}中",
            4096,
            b"00ff",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "@timestamp": "2026-11-26T06:30:00.123Z",
                "message": "say \"hi\"\\\t\u{1}中",
                "host": {"name": "web-1", "ip": "10.0.0.5"},
                "log": {"file": {"path": "/var/log/a \"b\".log"}, "offset": 4096},
                "event": {"id": "00ff"},
                "fields": {"env": "prod \"eu\""}
            })
        );
        let first_key = std::str::from_utf8(&out).unwrap();
        assert!(first_key.starts_with(r#"{"@timestamp":"#), "{first_key}");
        let empty = FileEnvelope::new("h", "i", "/p", &BTreeMap::new());
        let mut out = Vec::new();
        empty.write(&mut out, "t", "m", 0, b"id");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["fields"], serde_json::json!({}));
    }
}
