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
use std::io::Write;

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

    /// Appends one record's envelope to `out`. `timestamp` is [`rfc3339_ms`] of the read time.
    pub fn write(&self, out: &mut Vec<u8>, timestamp: &str, message: &str, offset: u64, id: &str) {
        out.extend_from_slice(br#"{"@timestamp":""#);
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(br#"","message":"#);
        // Writing a str into a Vec cannot fail; serde_json escapes quotes, controls and `\`.
        let _ = serde_json::to_writer(&mut *out, message);
        out.extend_from_slice(&self.after_message);
        let _ = write!(out, "{offset}");
        out.extend_from_slice(br#"},"event":{"id":""#);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.closing);
    }
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
            "00ff",
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
        empty.write(&mut out, "t", "m", 0, "id");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["fields"], serde_json::json!({}));
    }
}
