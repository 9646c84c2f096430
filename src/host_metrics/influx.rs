//! The `"output": "influxdb"` writer: one per agent, fed by every such entry through a bounded
//! buffer ([`PointBuffer`]), POSTing batches of lines to the InfluxDB write API.
//!
//! While InfluxDB is away the writer retries the same batch with exponential backoff; points keep
//! arriving and, once the buffer is full, the oldest are dropped and counted. Metrics are not kept
//! forever like log lines (which wait in their files): a dashboard wants the recent ones, and memory
//! stays bounded however long the outage.
//!
//! HTTP: hyper-util's client over hyper 1, both already in the build through axum and tonic, so no
//! new crate is compiled; http:// only (TLS to InfluxDB is left out, see the README).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::settings::{InfluxApi, InfluxSettings};
use crate::telemetry::Metrics;

/// Lines waiting for InfluxDB, at most `max`; the oldest leave first when it is full. With the one
/// batch the writer has out, at most `max` + `batch_max_points` lines are held.
#[derive(Debug)]
pub struct PointBuffer {
    lines: VecDeque<String>,
    max: usize,
}

impl PointBuffer {
    pub fn new(max: usize) -> PointBuffer {
        PointBuffer {
            lines: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Appends `lines`; returns how many of the oldest were dropped to make room.
    pub fn push(&mut self, lines: impl IntoIterator<Item = String>) -> usize {
        let mut dropped = 0;
        for l in lines {
            if self.lines.len() == self.max {
                self.lines.pop_front();
                dropped += 1;
            }
            self.lines.push_back(l);
        }
        dropped
    }

    /// Takes the oldest `n` lines out, to send.
    pub fn take(&mut self, n: usize) -> Vec<String> {
        let n = n.min(self.lines.len());
        self.lines.drain(..n).collect()
    }

    /// Puts a batch that could not be sent back in front (it is older than what arrived meanwhile);
    /// returns how many of its oldest lines did not fit.
    pub fn requeue(&mut self, batch: Vec<String>) -> usize {
        let room = self.max - self.lines.len();
        let skip = batch.len().saturating_sub(room);
        for l in batch.into_iter().skip(skip).rev() {
            self.lines.push_front(l);
        }
        skip
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// What entries hold to hand points to the writer.
pub struct InfluxHandle {
    buffer: Mutex<PointBuffer>,
    arrived: Notify,
    metrics: Arc<Metrics>,
}

impl InfluxHandle {
    pub fn new(max_points: usize, metrics: Arc<Metrics>) -> Arc<InfluxHandle> {
        Arc::new(InfluxHandle {
            buffer: Mutex::new(PointBuffer::new(max_points)),
            arrived: Notify::new(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PointBuffer> {
        // The buffer is consistent after every call: a panic elsewhere does not invalidate it.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, lines: Vec<String>) {
        let (dropped, len) = {
            let mut b = self.lock();
            (b.push(lines), b.len())
        };
        self.metrics.influxdb_buffered(len);
        if dropped > 0 {
            self.metrics
                .host_metrics_dropped("influxdb_buffer_full", dropped);
        }
        self.arrived.notify_one();
    }

    pub fn buffered(&self) -> usize {
        self.lock().len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot reach InfluxDB: {0}")]
    Connect(String),
    #[error("InfluxDB did not answer within {0:?}")]
    Timeout(Duration),
    /// The points themselves are refused (400: bad line, 413: too large): sending them again would
    /// be refused again.
    #[error("InfluxDB refused the points ({status}): {body}")]
    Rejected { status: u16, body: String },
    #[error("InfluxDB answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// POSTs line-protocol batches to one InfluxDB.
pub struct InfluxClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    authorization: Option<String>,
    timeout: Duration,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The write URL and the Authorization header for `settings` (pure, tested).
pub fn write_target(settings: &InfluxSettings) -> (String, Option<String>) {
    use base64::Engine as _;
    match &settings.api {
        InfluxApi::V1 { database, auth } => (
            format!(
                "{}/write?db={}&precision=ns",
                settings.url,
                encode_query(database)
            ),
            auth.as_ref().map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
        ),
        InfluxApi::V2 { org, bucket, token } => (
            format!(
                "{}/api/v2/write?org={}&bucket={}&precision=ns",
                settings.url,
                encode_query(org),
                encode_query(bucket)
            ),
            Some(format!("Token {token}")),
        ),
    }
}

impl InfluxClient {
    pub fn new(settings: &InfluxSettings) -> InfluxClient {
        let (url, authorization) = write_target(settings);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.request_timeout));
        InfluxClient {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
            // Validated in the settings.
            uri: url.parse().expect("validated influxdb.url"),
            authorization,
            timeout: settings.request_timeout,
        }
    }

    pub async fn write(&self, lines: &[String]) -> Result<(), WriteError> {
        let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
        let mut req = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| WriteError::Connect(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| WriteError::Connect(error_chain(&e)))?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            Err(match status {
                400 | 413 => WriteError::Rejected { status, body },
                _ => WriteError::Status { status, body },
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| WriteError::Timeout(self.timeout))?
    }
}

/// hyper's errors say "client error (Connect)" and keep the cause (connection refused) in sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Sends what `handle` buffers until `cancel`; then one last attempt to send what is left, bounded
/// by `final_flush`. Failed batches go back to the buffer and are tried again after a backoff.
pub async fn run_writer(
    settings: InfluxSettings,
    handle: Arc<InfluxHandle>,
    cancel: CancellationToken,
    final_flush: Duration,
) {
    let client = InfluxClient::new(&settings);
    let metrics = handle.metrics.clone();
    let mut backoff = settings.backoff_initial;
    let mut failing = false;
    'run: loop {
        // Gather for a flush interval (or until a batch is full), so that the points of one sample,
        // and of entries sampling at the same moment, go in one POST.
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        while handle.buffered() < settings.batch_max_points {
            tokio::select! {
                _ = cancel.cancelled() => break 'run,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = handle.arrived.notified() => {}
            }
        }
        while !cancel.is_cancelled() {
            let batch = handle.lock().take(settings.batch_max_points);
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            match client.write(&batch).await {
                Ok(()) => {
                    metrics.influxdb_written(n, std::mem::take(&mut failing));
                    backoff = settings.backoff_initial;
                }
                Err(WriteError::Rejected { status, body }) => {
                    metrics.influxdb_write_failed(
                        &format!("refused ({status}): {body}; the batch is dropped"),
                        None,
                    );
                    metrics.host_metrics_dropped("influxdb_rejected", n);
                }
                Err(e) => {
                    let lost = handle.lock().requeue(batch);
                    if lost > 0 {
                        metrics.host_metrics_dropped("influxdb_buffer_full", lost);
                    }
                    metrics.influxdb_write_failed(&e.to_string(), Some((backoff, !failing)));
                    failing = true;
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(settings.backoff_max);
                    break;
                }
            }
            metrics.influxdb_buffered(handle.buffered());
        }
    }
    // Shutdown: what the entries handed over gets one chance, within the deadline.
    let _ = tokio::time::timeout(final_flush, async {
        loop {
            let batch = handle.lock().take(settings.batch_max_points);
            if batch.is_empty() || client.write(&batch).await.is_err() {
                return;
            }
            metrics.influxdb_written(batch.len(), false);
        }
    })
    .await;
    let left = handle.buffered();
    if left > 0 {
        metrics.host_metrics_dropped("shutdown", left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: std::ops::Range<u32>) -> Vec<String> {
        r.map(|i| i.to_string()).collect()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_says_how_many() {
        let mut b = PointBuffer::new(5);
        assert_eq!(b.push(lines(0..3)), 0);
        assert_eq!(b.push(lines(3..8)), 3);
        assert_eq!(b.len(), 5);
        assert_eq!(b.take(10), lines(3..8));
        assert!(b.is_empty());
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_losing_its_oldest_when_there_is_no_room() {
        let mut b = PointBuffer::new(5);
        b.push(lines(0..4));
        let batch = b.take(3);
        assert_eq!(batch, lines(0..3));
        // Points arrived while the batch was out: 3, 4, 5, 6 fill 4 of 5 places.
        b.push(lines(4..7));
        assert_eq!(b.requeue(batch), 2, "only the newest of the batch fits");
        assert_eq!(b.take(10), lines(2..7));
        b.push(lines(0..2));
        assert_eq!(b.requeue(lines(7..9)), 0);
        assert_eq!(b.take(10), vec!["7", "8", "0", "1"]);
    }

    #[test]
    fn memory_stays_bounded_whatever_is_pushed() {
        let mut b = PointBuffer::new(100);
        let mut dropped = 0;
        for round in 0..1000u32 {
            dropped += b.push(lines(round * 10..round * 10 + 10));
            assert!(b.len() <= 100);
        }
        assert_eq!(dropped, 10_000 - 100);
        assert_eq!(b.take(1), vec!["9900"], "the newest 100 are kept");
    }

    #[test]
    fn write_urls_and_auth_for_1x_and_2x() {
        let base = InfluxSettings {
            url: "http://127.0.0.1:8086".into(),
            api: InfluxApi::V1 {
                database: "tele graf".into(),
                auth: Some(("admin".into(), "s3cret".into())),
            },
            batch_max_points: 1,
            buffer_max_points: 1,
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
        };
        let (url, auth) = write_target(&base);
        assert_eq!(
            url,
            "http://127.0.0.1:8086/write?db=tele%20graf&precision=ns"
        );
        assert_eq!(auth.as_deref(), Some("Basic YWRtaW46czNjcmV0"));
        let v2 = InfluxSettings {
            api: InfluxApi::V2 {
                org: "my&org".into(),
                bucket: "b".into(),
                token: "tok".into(),
            },
            ..base
        };
        let (url, auth) = write_target(&v2);
        assert_eq!(
            url,
            "http://127.0.0.1:8086/api/v2/write?org=my%26org&bucket=b&precision=ns"
        );
        assert_eq!(auth.as_deref(), Some("Token tok"));
    }
}
