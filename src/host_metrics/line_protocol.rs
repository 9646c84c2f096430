//! InfluxDB line protocol: `measurement,tag=v field=1i,other=0.5 1700000000000000000`.
//!
//! Pure: a [`Point`] and its encoding, with the escaping rules of the protocol (measurement: comma and
//! space; tag keys, tag values and field keys: comma, equals sign and space; string field values:
//! double quote and backslash). Integers carry the `i` suffix, so a field keeps one type across
//! points (InfluxDB refuses a write whose field type differs from the stored one).

use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    /// Sorted by key when encoded (InfluxDB's preferred order; it sorts them otherwise).
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(&'static str, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
}

impl Point {
    pub fn new(measurement: &'static str, timestamp_ns: i64) -> Point {
        Point {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp_ns,
        }
    }

    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Point {
        self.tags.push((key, value.into()));
        self
    }

    pub fn int(&mut self, key: &'static str, value: u64) {
        // Counters beyond i64 (never seen from /proc in practice) saturate rather than wrap negative.
        self.fields.push((
            key,
            FieldValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        ));
    }

    pub fn float(&mut self, key: &'static str, value: f64) {
        self.fields.push((key, FieldValue::Float(value)));
    }

    /// One line, without the trailing newline. `None` when no field has a writable value (the
    /// protocol requires at least one field; NaN and infinities cannot be written).
    pub fn encode(&self) -> Option<String> {
        let mut out = String::with_capacity(128);
        escape_into(&mut out, self.measurement, &[',', ' ']);
        let mut tags: Vec<&(&str, String)> =
            self.tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        tags.sort_by_key(|(k, _)| *k);
        for (k, v) in tags {
            out.push(',');
            escape_into(&mut out, k, &[',', '=', ' ']);
            out.push('=');
            escape_into(&mut out, v, &[',', '=', ' ']);
        }
        let mut first = true;
        for (k, v) in &self.fields {
            if let FieldValue::Float(f) = v {
                if !f.is_finite() {
                    continue;
                }
            }
            out.push(if first { ' ' } else { ',' });
            first = false;
            escape_into(&mut out, k, &[',', '=', ' ']);
            out.push('=');
            match v {
                FieldValue::Int(i) => {
                    let _ = write!(out, "{i}i");
                }
                // `{}` prints the shortest text that reads back as the same f64, never an exponent.
                FieldValue::Float(f) => {
                    let _ = write!(out, "{f}");
                }
                FieldValue::Str(s) => {
                    out.push('"');
                    escape_into(&mut out, s, &['"', '\\']);
                    out.push('"');
                }
            }
        }
        if first {
            return None;
        }
        let _ = write!(out, " {}", self.timestamp_ns);
        Some(out)
    }
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        // A newline would end the line: the protocol has no escape for it, so it becomes a space
        // (escaped where a space is special).
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_tags_sorted_ints_with_suffix_and_floats_plain() {
        let mut p = Point::new("cpu", 1_700_000_000_123_456_789)
            .tag("host", "web-1")
            .tag("cpu", "cpu-total")
            .tag("ip", "10.0.0.5");
        p.float("usage_user", 12.5);
        p.float("usage_idle", 80.0);
        p.int("total", 42);
        assert_eq!(
            p.encode().unwrap(),
            "cpu,cpu=cpu-total,host=web-1,ip=10.0.0.5 usage_user=12.5,usage_idle=80,total=42i 1700000000123456789"
        );
    }

    #[test]
    fn escapes_what_the_protocol_says() {
        let mut p = Point::new("disk", 1)
            .tag("path", "/mnt/my disk,a=b")
            .tag("host", "h");
        p.fields
            .push(("note", FieldValue::Str(r#"say "hi" \ bye"#.into())));
        p.int("used", 1);
        assert_eq!(
            p.encode().unwrap(),
            r#"disk,host=h,path=/mnt/my\ disk\,a\=b note="say \"hi\" \\ bye",used=1i 1"#
        );
        let q = {
            let mut q = Point::new("a b,c", 2).tag("k", "line\nbreak");
            q.int("f=x", 1);
            q
        };
        assert_eq!(q.encode().unwrap(), r"a\ b\,c,k=line\ break f\=x=1i 2");
    }

    #[test]
    fn non_finite_floats_and_empty_tags_are_left_out() {
        let mut p = Point::new("mem", 5).tag("ip", "");
        p.float("used_percent", f64::NAN);
        assert_eq!(p.encode(), None, "no writable field: no line");
        p.float("x", f64::INFINITY);
        p.float("y", 0.25);
        assert_eq!(p.encode().unwrap(), "mem y=0.25 5");
    }

    #[test]
    fn huge_counters_saturate_instead_of_going_negative() {
        let mut p = Point::new("net", 1);
        p.int("bytes_recv", u64::MAX);
        assert_eq!(
            p.encode().unwrap(),
            format!("net bytes_recv={}i 1", i64::MAX)
        );
    }
}
