//! The HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the process answers) and `/readyz`
//! (a configuration is applied and Kafka is reachable, with a JSON body naming each failing check).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::source::SourceStatus;
use crate::handles::Handles;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(thiserror::Error, Debug)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr} (http.listen; leave it empty to disable the endpoint): {source}"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct AppState {
    handles: Handles,
    /// Cancelled when the agent starts shutting down: from then on it is no longer ready.
    shutting_down: CancellationToken,
}

/// One readiness check that failed, and why.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Failing {
    pub check: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub status: &'static str,
    pub failing: Vec<Failing>,
}

/// Ready when a configuration is applied (from etcd or the saved copy), Kafka is reachable and the
/// producer has not hit a fatal error.
pub fn readiness(
    source: &SourceStatus,
    kafka_reachable: bool,
    producer_fatal: Option<&str>,
    shutting_down: bool,
) -> Readiness {
    let mut failing = Vec::new();
    if shutting_down {
        failing.push(Failing {
            check: "agent",
            reason: "shutting down".into(),
        });
    }
    if source.applied_revision.is_none() {
        let reason = match (&source.last_error, source.connected) {
            (Some(e), _) => format!("no collect configuration applied: the latest value was rejected: {e}"),
            (None, false) => "no collect configuration applied: etcd is unreachable and there is no saved configuration".into(),
            (None, true) => "no collect configuration applied yet".into(),
        };
        failing.push(Failing {
            check: "config",
            reason,
        });
    }
    if let Some(reason) = producer_fatal {
        failing.push(Failing {
            check: "kafka",
            reason: format!(
                "the Kafka producer hit a fatal error ({reason}); the agent is restarting"
            ),
        });
    } else if !kafka_reachable {
        failing.push(Failing {
            check: "kafka",
            reason: "no Kafka broker is reachable".into(),
        });
    }
    Readiness {
        status: if failing.is_empty() {
            "ready"
        } else {
            "not ready"
        },
        failing,
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until `stop`; `shutting_down` turns `/readyz` to 503 while the rest of the shutdown runs.
pub async fn serve(
    listener: TcpListener,
    handles: Handles,
    shutting_down: CancellationToken,
    stop: CancellationToken,
) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let state = Arc::new(AppState {
        handles,
        shutting_down,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    info!(%addr, "HTTP endpoint listening: /metrics /healthz /readyz");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(%addr, "HTTP endpoint stopped: {e}");
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    // Read at scrape time so the gauge and /readyz never disagree.
    let reachable = s.handles.kafka.is_reachable();
    s.handles.metrics.kafka_reachable.set(i64::from(reachable));
    // The registry owns the open-file count (it enforces the cap with it); the gauge shows it.
    s.handles
        .metrics
        .files_open
        .set(s.handles.registry.open_count() as i64);
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        s.handles.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let source = s.handles.source_status.borrow().clone();
    let kafka = &s.handles.kafka;
    let r = readiness(
        &source,
        kafka.is_reachable(),
        kafka.fatal(),
        s.shutting_down.is_cancelled(),
    );
    let code = if r.failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(rev: i64) -> SourceStatus {
        SourceStatus {
            applied_revision: Some(rev),
            connected: true,
            ..SourceStatus::default()
        }
    }

    #[test]
    fn ready_when_applied_and_kafka_up() {
        let r = readiness(&applied(7), true, None, false);
        assert_eq!(r.status, "ready");
        assert!(r.failing.is_empty());
        // A saved configuration counts as applied even while etcd is down.
        let saved = SourceStatus {
            connected: false,
            from_saved: true,
            ..applied(3)
        };
        assert!(readiness(&saved, true, None, false).failing.is_empty());
    }

    #[test]
    fn every_failing_check_is_named_with_its_reason() {
        let rejected = SourceStatus {
            last_error: Some("entry 0: topic is empty".into()),
            connected: true,
            ..SourceStatus::default()
        };
        let r = readiness(&rejected, false, None, false);
        assert_eq!(r.status, "not ready");
        let checks: Vec<_> = r.failing.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["config", "kafka"]);
        assert!(
            r.failing[0].reason.contains("topic is empty"),
            "{:?}",
            r.failing[0]
        );

        let r = readiness(&SourceStatus::default(), true, None, false);
        assert!(
            r.failing[0].reason.contains("etcd is unreachable"),
            "{:?}",
            r.failing
        );
    }

    #[test]
    fn a_rejected_update_keeps_the_agent_ready_on_its_last_good_config() {
        let s = SourceStatus {
            last_error: Some("bad".into()),
            ..applied(9)
        };
        assert!(readiness(&s, true, None, false).failing.is_empty());
    }

    #[test]
    fn shutting_down_is_not_ready() {
        let r = readiness(&applied(1), true, None, true);
        assert_eq!(r.failing[0].check, "agent");
    }

    #[test]
    fn a_fatal_producer_error_is_not_ready_and_says_why() {
        let r = readiness(&applied(1), true, Some("OutOfOrderSequenceNumber"), false);
        assert_eq!(r.status, "not ready");
        assert_eq!(r.failing[0].check, "kafka");
        assert!(
            r.failing[0]
                .reason
                .contains("fatal error (OutOfOrderSequenceNumber)"),
            "{:?}",
            r.failing
        );
    }
}
