//! SIGHUP: read the local config file again and apply what can change without a restart.
//!
//! Only the log filter is swapped in place. Every other key is wired into long-lived parts at
//! startup (etcd client, Kafka producer, tailers, HTTP listener, state directory), so a change to one
//! of them is logged as waiting for a restart instead of being half-applied.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tracing::{error, info, warn};
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::settings::{self, RawConfig, SettingsError};

/// File keys applied by a reload; all others need a restart.
const RUNTIME_KEYS: &[&str] = &["log.level"];

pub type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// What one reload did, for the log and for tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<String>,
    pub need_restart: Vec<String>,
}

pub struct Reloader {
    path: PathBuf,
    filter: FilterHandle,
    /// A valid `RUST_LOG` chose the filter at startup and keeps winning over `log.level`.
    filter_pinned: bool,
    /// Key → value as in effect: startup values, plus runtime keys as last applied. Keeping the
    /// startup values means a key waiting for a restart is reported again at every reload.
    in_effect: BTreeMap<String, Value>,
}

impl Reloader {
    pub fn new(path: PathBuf, filter: FilterHandle, filter_pinned: bool) -> Self {
        let in_effect = match file_keys(&path) {
            Ok(keys) => keys,
            Err(e) => {
                warn!("cannot snapshot {} for reloads ({e}); the first reload reports every key as changed", path.display());
                BTreeMap::new()
            }
        };
        Self {
            path,
            filter,
            filter_pinned,
            in_effect,
        }
    }

    /// Logs what happened; a config with problems changes nothing.
    pub fn reload_and_log(&mut self) {
        info!(path = %self.path.display(), "SIGHUP: reloading the configuration file");
        match self.reload() {
            Ok(o) if o.applied.is_empty() && o.need_restart.is_empty() => {
                info!("configuration reloaded: nothing changed")
            }
            Ok(o) => {
                if !o.applied.is_empty() {
                    info!(keys = %o.applied.join(", "), "configuration reloaded: applied");
                }
                if !o.need_restart.is_empty() {
                    warn!(keys = %o.need_restart.join(", "), "changed keys take effect only after a restart");
                }
            }
            Err(problems) => {
                for problem in &problems {
                    error!(problem = %problem, "reload rejected");
                }
                error!(
                    problems = problems.len(),
                    "configuration not reloaded; still running with the previous one"
                );
            }
        }
    }

    pub fn reload(&mut self) -> Result<Outcome, Vec<String>> {
        let new = settings::load(&self.path).map_err(|e| match e {
            SettingsError::Invalid(problems) => problems,
            other => vec![other.to_string()],
        })?;
        // Same file, same parser as `load`: only fails if the file changed in between.
        let keys = file_keys(&self.path).map_err(|e| vec![e])?;
        let mut outcome = Outcome::default();
        for key in changed_keys(&self.in_effect, &keys) {
            if !RUNTIME_KEYS.contains(&key.as_str()) {
                outcome.need_restart.push(key);
                continue;
            }
            // The only runtime key so far is log.level.
            if self.filter_pinned {
                warn!("log.level changed but RUST_LOG is set and keeps deciding the log filter");
            } else if let Err(e) = self.filter.reload(EnvFilter::new(&new.log.level)) {
                return Err(vec![format!("log.level: cannot swap the log filter: {e}")]);
            }
            match keys.get(&key) {
                Some(v) => self.in_effect.insert(key.clone(), v.clone()),
                None => self.in_effect.remove(&key),
            };
            outcome.applied.push(key);
        }
        Ok(outcome)
    }
}

/// The file's keys flattened to `section.key` (nested tables such as `kafka.options` go deeper),
/// with defaults filled in, so a key removed from the file compares as its default.
fn file_keys(path: &std::path::Path) -> Result<BTreeMap<String, Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    keys_from_str(&text)
}

fn keys_from_str(toml: &str) -> Result<BTreeMap<String, Value>, String> {
    let raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())?;
    let mut keys = BTreeMap::new();
    flatten(
        "",
        serde_json::to_value(raw).map_err(|e| e.to_string())?,
        &mut keys,
    );
    Ok(keys)
}

fn flatten(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf);
        }
    }
}

/// Keys whose value differs, or that exist on one side only, in key order. Values are never logged:
/// some are passwords.
fn changed_keys(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<String> {
    let mut changed: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    changed.sort();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(toml: &str) -> BTreeMap<String, Value> {
        keys_from_str(toml).expect("parses")
    }

    #[test]
    fn reports_changed_added_and_removed_keys_including_nested_options() {
        let old =
            keys("[log]\nlevel = \"info\"\n[kafka.options]\n\"socket.timeout.ms\" = \"60000\"\n");
        let new = keys("[log]\nlevel = \"debug\"\n[kafka]\nlinger_ms = 50\n[kafka.options]\n\"fetch.wait.max.ms\" = \"5\"\n");
        assert_eq!(
            changed_keys(&old, &new),
            [
                "kafka.linger_ms",
                "kafka.options.fetch.wait.max.ms",
                "kafka.options.socket.timeout.ms",
                "log.level"
            ]
        );
    }

    #[test]
    fn a_key_set_to_its_default_is_no_change() {
        assert!(changed_keys(&keys(""), &keys("[shutdown]\ngrace_ms = 10000\n")).is_empty());
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
        // Keeps the layer alive: the handle only holds a weak reference to it.
        _layer: reload::Layer<EnvFilter, Registry>,
        handle: FilterHandle,
    }

    fn fixture(toml: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logagent.toml");
        std::fs::write(&path, toml).unwrap();
        let (layer, handle) = reload::Layer::new(EnvFilter::new("info"));
        Fixture {
            _dir: dir,
            path,
            _layer: layer,
            handle,
        }
    }

    fn current_filter(h: &FilterHandle) -> String {
        h.with_current(|f| f.to_string()).unwrap()
    }

    #[test]
    fn applies_the_log_level_and_keeps_reporting_keys_that_need_a_restart() {
        let f = fixture("[log]\nlevel = \"info\"\n");
        let mut r = Reloader::new(f.path.clone(), f.handle.clone(), false);
        std::fs::write(
            &f.path,
            "[log]\nlevel = \"debug\"\n[kafka]\nlinger_ms = 50\n",
        )
        .unwrap();
        let first = r.reload().unwrap();
        assert_eq!(first.applied, ["log.level"]);
        assert_eq!(first.need_restart, ["kafka.linger_ms"]);
        assert_eq!(current_filter(&f.handle), "debug");

        let second = r.reload().unwrap();
        assert_eq!(
            second,
            Outcome {
                applied: vec![],
                need_restart: vec!["kafka.linger_ms".into()]
            }
        );
    }

    #[test]
    fn an_invalid_file_changes_nothing_and_lists_every_problem() {
        let f = fixture("[log]\nlevel = \"info\"\n");
        let mut r = Reloader::new(f.path.clone(), f.handle.clone(), false);
        std::fs::write(&f.path, "[log]\nlevel = \"debug\"\n[agent]\nstate_dir = \"relative\"\n[shutdown]\ngrace_ms = 0\n").unwrap();
        let problems = r.reload().unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("agent.state_dir")),
            "{problems:?}"
        );
        assert!(problems.len() >= 2, "{problems:?}");
        assert_eq!(current_filter(&f.handle), "info");
    }

    #[test]
    fn rust_log_keeps_the_filter_but_the_change_counts_as_seen() {
        let f = fixture("[log]\nlevel = \"info\"\n");
        let mut r = Reloader::new(f.path.clone(), f.handle.clone(), true);
        std::fs::write(&f.path, "[log]\nlevel = \"trace\"\n").unwrap();
        assert_eq!(r.reload().unwrap().applied, ["log.level"]);
        assert_eq!(current_filter(&f.handle), "info");
    }
}
