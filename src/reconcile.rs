//! The reconciler: a pure `diff(desired, running)` and the supervisor that applies its plan.
//!
//! Entries are identified by their `path` (file or glob). Same path, same everything: keep (the running
//! tailers are not touched: no gap, no re-read). Same path, anything else changed (topic, key, options):
//! restart, which drains the entry's in-flight records before the new entry claims the files again, so
//! it continues from the acknowledged offset: no loss, no duplicate. Applying is serialized; the
//! desired state arrives on a watch channel, so a burst of changes collapses into its last value.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::collect::{CollectEntry, PathMatcher};
use crate::config::source::Desired;
use crate::state::registry::{self, Registry};
use crate::tail::discover::{run_entry, Shared};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: Vec<CollectEntry>,
    pub keep: Vec<String>,
    pub restart: Vec<CollectEntry>,
    pub stop: Vec<String>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.start.is_empty() && self.restart.is_empty() && self.stop.is_empty()
    }
}

/// What to do to go from `running` to `desired`. Pure; the order of each list follows the paths.
pub fn diff(desired: &[CollectEntry], running: &BTreeMap<String, CollectEntry>) -> Plan {
    let mut plan = Plan::default();
    let wanted: BTreeMap<&str, &CollectEntry> =
        desired.iter().map(|e| (e.path.as_str(), e)).collect();
    for (path, entry) in &wanted {
        match running.get(*path) {
            None => plan.start.push((*entry).clone()),
            Some(current) if current == *entry => plan.keep.push((*path).to_owned()),
            Some(_) => plan.restart.push((*entry).clone()),
        }
    }
    plan.stop = running
        .keys()
        .filter(|p| !wanted.contains_key(p.as_str()))
        .cloned()
        .collect();
    plan
}

struct Running {
    entry: CollectEntry,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Supervisor {
    shared: Arc<Shared>,
    running: BTreeMap<String, Running>,
    /// Longest wait for a restarted entry's in-flight records before it starts again anyway.
    drain_timeout: Duration,
    /// Runs the `host_metrics` entries (none when not given).
    host_metrics: Option<crate::host_metrics::Runner>,
}

impl Supervisor {
    pub fn new(shared: Arc<Shared>, drain_timeout: Duration) -> Supervisor {
        Supervisor {
            shared,
            running: BTreeMap::new(),
            drain_timeout,
            host_metrics: None,
        }
    }

    /// Also applies the `host_metrics` entries of each configuration, with `runner`.
    pub fn with_host_metrics(mut self, runner: crate::host_metrics::Runner) -> Supervisor {
        self.host_metrics = Some(runner);
        self
    }

    fn running_entries(&self) -> BTreeMap<String, CollectEntry> {
        self.running
            .iter()
            .map(|(k, r)| (k.clone(), r.entry.clone()))
            .collect()
    }

    pub async fn apply(&mut self, desired: &[CollectEntry]) -> Plan {
        let plan = diff(desired, &self.running_entries());
        if plan.is_noop() {
            return plan;
        }
        info!(
            start = plan.start.len(),
            keep = plan.keep.len(),
            restart = plan.restart.len(),
            stop = plan.stop.len(),
            "applying collect configuration"
        );
        for path in &plan.stop {
            info!(path, "stopping entry (removed from the configuration)");
            self.stop_entry(path).await;
        }
        for entry in &plan.restart {
            info!(path = %entry.path, topic = %entry.topic, "restarting entry (changed); draining its in-flight records first");
            let old = self.stop_entry(&entry.path).await;
            if let Some(old) = old {
                self.wait_drained(&entry.path, &PathMatcher::new(&old))
                    .await;
            }
            self.start_entry(entry.clone());
        }
        for entry in &plan.start {
            info!(path = %entry.path, topic = %entry.topic, "starting entry");
            self.start_entry(entry.clone());
        }
        plan
    }

    fn start_entry(&mut self, entry: CollectEntry) {
        let cancel = CancellationToken::new();
        // On the file runtime: the entry's discovery and its tailers do blocking file I/O.
        let task = self.shared.files.spawn(run_entry(
            Arc::new(entry.clone()),
            self.shared.clone(),
            cancel.clone(),
        ));
        self.running.insert(
            entry.path.clone(),
            Running {
                entry,
                cancel,
                task,
            },
        );
    }

    /// Stops the entry at `path` and waits for its tailers to let go; returns what was running.
    async fn stop_entry(&mut self, path: &str) -> Option<CollectEntry> {
        let r = self.running.remove(path)?;
        r.cancel.cancel();
        if let Err(e) = r.task.await {
            warn!(path, "entry task ended abnormally: {e}");
        }
        Some(r.entry)
    }

    async fn wait_drained(&self, path: &str, paths: &PathMatcher) {
        let files = self.shared.registry.in_flight_where(|p| paths.owns(p));
        let drained = async {
            for p in &files {
                p.drained().await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            let pending: usize = files.iter().map(|p| p.in_flight()).sum();
            warn!(path, pending, "in-flight records not acknowledged in time; restarting anyway (they may be sent twice)");
        }
    }

    /// Stops every entry and waits for their tailers to let go.
    pub async fn stop_all(&mut self) {
        if let Some(h) = self.host_metrics.as_mut() {
            h.stop_all().await;
        }
        let paths: Vec<String> = self.running.keys().cloned().collect();
        for r in self.running.values() {
            r.cancel.cancel();
        }
        for p in paths {
            self.stop_entry(&p).await;
        }
    }
}

/// Applies every new desired state, one at a time, until `cancel`; then stops all entries.
pub async fn run(
    mut sup: Supervisor,
    mut rx: watch::Receiver<Option<Desired>>,
    cancel: CancellationToken,
) {
    loop {
        let desired = rx.borrow_and_update().clone();
        if let Some(d) = desired {
            if d.entries.is_empty() && !sup.running.is_empty() {
                warn!(
                    revision = d.revision,
                    "collect configuration is empty or deleted: stopping all collection"
                );
            }
            let files_changed = !sup.apply(&d.entries).await.is_noop();
            let hosts_changed = match sup.host_metrics.as_mut() {
                Some(h) => {
                    let p = h.apply(&d.host_metrics).await;
                    !(p.start.is_empty() && p.restart.is_empty() && p.stop.is_empty())
                }
                None => false,
            };
            if files_changed || hosts_changed {
                info!(revision = d.revision, "collect configuration in effect");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { cancel.cancelled().await; break; },
        }
    }
    sup.stop_all().await;
}

/// Sweeps (see [`registry::sweep`]) the registry of files no entry owns any more, every `interval` and whenever the collect configuration changes, on a
/// blocking thread, until `stop`. A sweep stuck on a hung mount delays the next one, nothing else.
pub async fn run_sweeper(
    registry: Arc<Registry>,
    mut desired: watch::Receiver<Option<Desired>>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = desired.changed() => if changed.is_err() { stop.cancelled().await; return; },
        }
        let matchers: Option<Vec<PathMatcher>> = desired
            .borrow_and_update()
            .as_ref()
            .map(|d| d.entries.iter().map(PathMatcher::new).collect());
        let r = registry.clone();
        let job = tokio::task::spawn_blocking(move || {
            let owns = |p: &Path| matchers.iter().flatten().any(|m| m.owns(p));
            let owned: Option<&dyn Fn(&Path) -> bool> = matchers.is_some().then_some(&owns);
            registry::sweep(&r, owned)
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = job => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::collect::KeyMode;

    fn entry(path: &str, topic: &str) -> CollectEntry {
        CollectEntry::new(path, topic)
    }

    fn running(entries: &[CollectEntry]) -> BTreeMap<String, CollectEntry> {
        entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn empty_to_empty_is_a_noop() {
        assert!(diff(&[], &BTreeMap::new()).is_noop());
    }

    #[test]
    fn new_entries_start() {
        let p = diff(&[entry("/a", "t")], &BTreeMap::new());
        assert_eq!(p.start, vec![entry("/a", "t")]);
        assert!(p.keep.is_empty() && p.restart.is_empty() && p.stop.is_empty());
    }

    #[test]
    fn unchanged_entries_are_kept() {
        let e = [entry("/a", "t"), entry("/b/*.log", "u")];
        let p = diff(&e, &running(&e));
        assert_eq!(p.keep, vec!["/a".to_owned(), "/b/*.log".to_owned()]);
        assert!(p.is_noop());
    }

    #[test]
    fn topic_change_restarts() {
        let p = diff(&[entry("/a", "new")], &running(&[entry("/a", "old")]));
        assert_eq!(p.restart, vec![entry("/a", "new")]);
        assert!(p.start.is_empty() && p.stop.is_empty() && p.keep.is_empty());
    }

    #[test]
    fn option_change_restarts() {
        let mut changed = entry("/a", "t");
        changed.key = KeyMode::Host;
        assert_eq!(
            diff(&[changed.clone()], &running(&[entry("/a", "t")])).restart,
            vec![changed]
        );
        let mut changed = entry("/a", "t");
        changed.exclude = vec!["/a.gz".into()];
        assert_eq!(
            diff(&[changed.clone()], &running(&[entry("/a", "t")])).restart,
            vec![changed]
        );
    }

    #[test]
    fn removed_entries_stop() {
        let p = diff(&[], &running(&[entry("/a", "t"), entry("/b", "t")]));
        assert_eq!(p.stop, vec!["/a".to_owned(), "/b".to_owned()]);
    }

    #[test]
    fn mixed_plan_covers_every_case_at_once() {
        let run = running(&[
            entry("/keep", "t"),
            entry("/change", "t"),
            entry("/gone", "t"),
        ]);
        let want = [
            entry("/keep", "t"),
            entry("/change", "t2"),
            entry("/new", "t"),
        ];
        let p = diff(&want, &run);
        assert_eq!(p.keep, vec!["/keep".to_owned()]);
        assert_eq!(p.restart, vec![entry("/change", "t2")]);
        assert_eq!(p.start, vec![entry("/new", "t")]);
        assert_eq!(p.stop, vec!["/gone".to_owned()]);
    }

    #[test]
    fn applying_the_plan_reaches_the_desired_state() {
        // Exhaustive over small universes: every subset/topic assignment of 3 paths to and from another.
        let paths = ["/a", "/b", "/c"];
        let states: Vec<Vec<CollectEntry>> = (0..27u32)
            .map(|mut n| {
                let mut v = Vec::new();
                for p in paths {
                    match n % 3 {
                        1 => v.push(entry(p, "x")),
                        2 => v.push(entry(p, "y")),
                        _ => {}
                    }
                    n /= 3;
                }
                v
            })
            .collect();
        for from in &states {
            for to in &states {
                let mut state = running(from);
                let p = diff(to, &state);
                for s in &p.stop {
                    state.remove(s);
                }
                for e in p.restart.iter().chain(&p.start) {
                    state.insert(e.path.clone(), e.clone());
                }
                assert_eq!(state, running(to), "from {from:?} to {to:?}");
                for k in &p.keep {
                    assert_eq!(
                        from.iter().find(|e| &e.path == k),
                        to.iter().find(|e| &e.path == k)
                    );
                }
            }
        }
    }
}
