//! The `[influxdb]` section: where `"output": "influxdb"` host-metrics entries write. Off (None)
//! while `url` is empty. 1.x: `database` (+ optional `user`/`password`), written to `/write`;
//! 2.x: `org`, `bucket` and `token`, written to `/api/v2/write`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInfluxDb {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub org: String,
    pub bucket: String,
    pub token: String,
    /// Most points in one POST.
    pub batch_max_points: u64,
    /// Points kept while InfluxDB is away; the oldest go first when it is full.
    pub buffer_max_points: u64,
    /// How long buffered points wait for more before a POST.
    pub flush_interval_ms: u64,
    pub request_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for RawInfluxDb {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: String::new(),
            user: String::new(),
            password: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: String::new(),
            batch_max_points: 5_000,
            // About 1.5 hours of every collector on a 4-core host at 10 s, a few MB.
            buffer_max_points: 50_000,
            flush_interval_ms: 1_000,
            request_timeout_ms: 5_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

/// Which write API, with its credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    V1 {
        database: String,
        /// User and password, when InfluxDB has authentication on.
        auth: Option<(String, String)>,
    },
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

// Hand-written so that logging the settings never prints the password or the token.
impl std::fmt::Debug for InfluxApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InfluxApi::V1 { database, auth } => f
                .debug_struct("V1")
                .field("database", database)
                .field("user", &auth.as_ref().map(|(u, _)| u))
                .field("password", &auth.as_ref().map(|_| "<redacted>"))
                .finish(),
            InfluxApi::V2 { org, bucket, .. } => f
                .debug_struct("V2")
                .field("org", org)
                .field("bucket", bucket)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfluxSettings {
    /// `http://host:port`, without a trailing slash (a path prefix is kept, for a proxy).
    pub url: String,
    pub api: InfluxApi,
    pub batch_max_points: usize,
    pub buffer_max_points: usize,
    pub flush_interval: Duration,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl RawInfluxDb {
    /// `None` when `url` is empty (no InfluxDB output); every problem goes to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<InfluxSettings> {
        let others_set = [
            &self.database,
            &self.user,
            &self.password,
            &self.org,
            &self.bucket,
            &self.token,
        ]
        .iter()
        .any(|s| !s.is_empty());
        if self.url.is_empty() {
            if others_set {
                problems
                    .push("influxdb: credentials or a database are set but url is empty".into());
            }
            return None;
        }
        let before = problems.len();
        match self.url.parse::<hyper::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {
                if u.query().is_some() {
                    problems.push(format!("influxdb.url: {:?} has a query; give database/org/bucket as keys", self.url));
                }
            }
            Ok(u) if u.scheme_str() == Some("https") => problems.push(format!(
                "influxdb.url: {:?}: https is not supported (no TLS client is built in); use http:// on a trusted network or a local TLS proxy",
                self.url
            )),
            _ => problems.push(format!(
                "influxdb.url: {:?} is not http://host:port",
                self.url
            )),
        }
        let v2 = [&self.org, &self.bucket, &self.token];
        let api = if !self.database.is_empty() {
            if v2.iter().any(|s| !s.is_empty()) {
                problems.push(
                    "influxdb: database (1.x) and org/bucket/token (2.x) are both set; give one"
                        .into(),
                );
            }
            if self.user.is_empty() != self.password.is_empty() {
                problems.push("influxdb: user and password go together".into());
            }
            InfluxApi::V1 {
                database: self.database.clone(),
                auth: (!self.user.is_empty()).then(|| (self.user.clone(), self.password.clone())),
            }
        } else if v2.iter().all(|s| !s.is_empty()) {
            if !self.user.is_empty() || !self.password.is_empty() {
                problems.push("influxdb: user/password are for 1.x; 2.x uses token".into());
            }
            InfluxApi::V2 {
                org: self.org.clone(),
                bucket: self.bucket.clone(),
                token: self.token.clone(),
            }
        } else {
            problems.push(
                "influxdb: give database (1.x), or all of org, bucket and token (2.x)".into(),
            );
            return None;
        };
        let mut range = |key: &str, v: u64, min: u64, max: u64| {
            if v < min || v > max {
                problems.push(format!("influxdb.{key}: {v} is outside {min}..={max}"));
            }
            v
        };
        let batch = range("batch_max_points", self.batch_max_points, 1, 100_000);
        let buffer = range("buffer_max_points", self.buffer_max_points, 1, 10_000_000);
        let flush = range("flush_interval_ms", self.flush_interval_ms, 1, 3_600_000);
        let timeout = range("request_timeout_ms", self.request_timeout_ms, 1, 600_000);
        let initial = range("backoff_initial_ms", self.backoff_initial_ms, 1, 3_600_000);
        let max = range("backoff_max_ms", self.backoff_max_ms, 1, 3_600_000);
        if max < initial {
            problems.push("influxdb.backoff_max_ms is below backoff_initial_ms".into());
        }
        if problems.len() > before {
            return None;
        }
        Some(InfluxSettings {
            url: self.url.trim_end_matches('/').to_owned(),
            api,
            batch_max_points: batch as usize,
            buffer_max_points: buffer as usize,
            flush_interval: Duration::from_millis(flush),
            request_timeout: Duration::from_millis(timeout),
            backoff_initial: Duration::from_millis(initial),
            backoff_max: Duration::from_millis(max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawInfluxDb) -> (Option<InfluxSettings>, Vec<String>) {
        let mut p = Vec::new();
        (raw.validate(&mut p), p)
    }

    #[test]
    fn off_by_default() {
        assert_eq!(check(RawInfluxDb::default()), (None, vec![]));
    }

    #[test]
    fn v1_and_v2() {
        let (s, p) = check(RawInfluxDb {
            url: "http://127.0.0.1:8086/".into(),
            database: "telegraf".into(),
            user: "u".into(),
            password: "p".into(),
            ..RawInfluxDb::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert_eq!(s.url, "http://127.0.0.1:8086");
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "password printed: {s:?}"
        );
        assert_eq!(
            s.api,
            InfluxApi::V1 {
                database: "telegraf".into(),
                auth: Some(("u".into(), "p".into()))
            }
        );
        let (s, p) = check(RawInfluxDb {
            url: "http://influx:8086".into(),
            org: "o".into(),
            bucket: "b".into(),
            token: "t".into(),
            ..RawInfluxDb::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        assert!(matches!(s.api, InfluxApi::V2 { .. }));
        assert!(!format!("{s:?}").contains("\"t\""), "token printed: {s:?}");
    }

    #[test]
    fn problems_all_at_once() {
        let (s, p) = check(RawInfluxDb {
            url: "https://influx:8086".into(),
            database: "d".into(),
            token: "t".into(),
            user: "u".into(),
            batch_max_points: 0,
            backoff_initial_ms: 10,
            backoff_max_ms: 5,
            ..RawInfluxDb::default()
        });
        assert!(s.is_none());
        for needle in [
            "https is not supported",
            "both set",
            "user and password go together",
            "batch_max_points: 0 is outside",
            "backoff_max_ms is below",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle:?} in {p:#?}");
        }
        let (_, p) = check(RawInfluxDb {
            url: "influx:8086".into(),
            database: "d".into(),
            ..RawInfluxDb::default()
        });
        assert!(p[0].contains("is not http://host:port"), "{p:?}");
        let (_, p) = check(RawInfluxDb {
            url: "http://influx:8086".into(),
            org: "o".into(),
            ..RawInfluxDb::default()
        });
        assert!(p[0].contains("give database (1.x), or all of org"), "{p:?}");
        let (_, p) = check(RawInfluxDb {
            database: "d".into(),
            ..RawInfluxDb::default()
        });
        assert!(p[0].contains("url is empty"), "{p:?}");
    }
}
