//! Publishes the status under a lease: grant, put, keep alive, put again when it changed.

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::config::etcd::EtcdError;
use crate::config::settings::EtcdSettings;
use crate::config::source::Desired;
use crate::handles::Handles;

use super::build::{build, Identity, Inputs, Owners};
use super::schema::HostStatus;

/// The least time between two status writes prompted by configuration changes.
const MIN_WRITE_GAP: Duration = Duration::from_secs(1);

/// Time allowed for revoking the lease at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(thiserror::Error, Debug)]
enum PublishError {
    #[error(transparent)]
    Connect(#[from] EtcdError),
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the lease expired (etcd answered TTL 0)")]
    LeaseExpired,
    #[error("no keep-alive answer from etcd within the lease TTL")]
    KeepAliveSilent,
    #[error("the keep-alive stream ended")]
    Ended,
}

/// Publishes the host status until `stop`; then revokes the lease.
pub struct Publisher {
    settings: EtcdSettings,
    key: String,
    identity: Identity,
    handles: Handles,
    desired: watch::Receiver<Option<Desired>>,
    last: Option<HostStatus>,
    owners: Owners,
    /// `Some(true)` while publishing works, `Some(false)` while it fails: logs only on changes.
    healthy: Option<bool>,
}

impl Publisher {
    pub fn new(
        settings: EtcdSettings,
        handles: Handles,
        desired: watch::Receiver<Option<Desired>>,
    ) -> Publisher {
        let key = EtcdSettings::render_key(
            &settings.status_key_template,
            &handles.ip,
            &handles.hostname,
        );
        let identity = Identity {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: handles.hostname.clone(),
            ip: handles.ip.clone(),
            started_unix_ms: handles.started_unix_ms,
            config_key: handles.key.clone(),
        };
        Publisher {
            settings,
            key,
            identity,
            handles,
            desired,
            last: None,
            owners: Owners::default(),
            healthy: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn current(&mut self) -> HostStatus {
        let source = self.handles.source_status.borrow().clone();
        let problems = self.handles.metrics.file_problems();
        let kafka_ok = self.handles.kafka.is_reachable() && self.handles.kafka.fatal().is_none();
        // Borrowed for the build, not copied: nothing that writes the configuration takes the
        // registry's lock.
        let desired = self.desired.borrow();
        let owners = &mut self.owners;
        self.handles.registry.with_open_files(|open| {
            let inputs = Inputs {
                source: &source,
                desired: desired.as_ref(),
                open,
                problems: &problems,
                kafka_reachable: kafka_ok,
                now_unix_ms: now_ms(),
            };
            build(&self.identity, &inputs, owners)
        })
    }

    pub async fn run(mut self, stop: CancellationToken) {
        info!(key = %self.key, ttl_s = self.settings.status_lease_ttl_secs(), "publishing host status to etcd");
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        loop {
            match self.session(&stop, &mut backoff).await {
                Ok(()) => return,
                Err(e) => {
                    self.handles.metrics.status_publish_failures.inc();
                    if self.healthy != Some(false) {
                        warn!(key = %self.key, "cannot publish host status to etcd ({e}); retrying in the background");
                        self.healthy = Some(false);
                    } else {
                        debug!(key = %self.key, "status publish still failing: {e}");
                    }
                    // The next session writes under a new lease whatever the last value was.
                    self.last = None;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    /// One lease: grant, put, keep alive and update until something breaks (`Err`) or `stop` (`Ok`).
    async fn session(
        &mut self,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), PublishError> {
        let ttl_secs = self.settings.status_lease_ttl_secs();
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        let mut client = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = crate::config::etcd::connect(&self.settings) => c?,
        };
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let result = self
            .keep_publishing(&mut client, lease, ttl, stop, backoff)
            .await;
        if result.is_ok() {
            match tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(lease)).await {
                Ok(Ok(_)) => info!(key = %self.key, "status lease revoked; key removed"),
                Ok(Err(e)) => {
                    warn!(key = %self.key, "cannot revoke the status lease ({e}); the key goes when it expires")
                }
                Err(_) => {
                    warn!(key = %self.key, "revoking the status lease timed out; the key goes when it expires")
                }
            }
        }
        result
    }

    async fn keep_publishing(
        &mut self,
        client: &mut Client,
        lease: i64,
        ttl: Duration,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), PublishError> {
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
        self.put_if_changed(client, lease).await?;
        backoff.reset();
        if self.healthy != Some(true) {
            info!(key = %self.key, lease, "host status published to etcd");
            self.healthy = Some(true);
        }
        let mut keep = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
        keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut update = tokio::time::interval(self.settings.status_interval);
        update.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answered = Instant::now();
        // A new or rejected configuration is written at once (a rollout shows in `logagent status`
        // within a second, not a status interval), yet never more than once per MIN_WRITE_GAP.
        let mut desired = self.desired.clone();
        let mut source = self.handles.source_status.clone();
        desired.mark_unchanged();
        source.mark_unchanged();
        let mut last_write = Instant::now();
        let mut soon: Option<Instant> = None;
        loop {
            tokio::select! {
                Ok(()) = desired.changed() => {
                    soon.get_or_insert(last_write + MIN_WRITE_GAP);
                }
                Ok(()) = source.changed() => {
                    soon.get_or_insert(last_write + MIN_WRITE_GAP);
                }
                _ = tokio::time::sleep_until(soon.unwrap_or_else(Instant::now)), if soon.is_some() => {
                    soon = None;
                    last_write = Instant::now();
                    self.put_if_changed(client, lease).await?;
                }
                _ = stop.cancelled() => return Ok(()),
                _ = keep.tick() => {
                    if answered.elapsed() > ttl {
                        return Err(PublishError::KeepAliveSilent);
                    }
                    keeper.keep_alive().await?;
                }
                msg = answers.message() => match msg? {
                    None => return Err(PublishError::Ended),
                    Some(r) if r.ttl() <= 0 => return Err(PublishError::LeaseExpired),
                    Some(_) => answered = Instant::now(),
                },
                _ = update.tick() => {
                    last_write = Instant::now();
                    self.put_if_changed(client, lease).await?;
                }
            }
        }
    }

    async fn put_if_changed(
        &mut self,
        client: &mut Client,
        lease: i64,
    ) -> Result<(), PublishError> {
        let status = self.current();
        if self.last.as_ref().is_some_and(|l| l.same_as(&status)) {
            return Ok(());
        }
        let value = serde_json::to_string(&status).unwrap_or_default();
        client
            .put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        self.handles.metrics.status_publishes.inc();
        self.last = Some(status);
        Ok(())
    }
}
