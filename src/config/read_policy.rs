//! What the agent may read: a local policy that etcd cannot change.
//!
//! A collected path is resolved first (every symlink followed, `canonicalize`), and the resolved
//! target is what is checked:
//! - the built-in deny list always holds: the agent's own config file, its `state_dir` (and all under
//!   it), every TLS / key file named in the config, and everything under `/proc`, `/sys` and `/dev`;
//! - otherwise the target must match one of `agent.allowed_paths` (globs; default `/**`).
//!
//! The file is then opened at the resolved path, so what was checked is what is read.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::settings::Settings;

/// Directories no log file lives in: kernel interfaces and devices.
const BUILTIN_DENIED_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

#[derive(Debug)]
struct Denied {
    path: PathBuf,
    why: String,
}

#[derive(Debug)]
pub struct ReadPolicy {
    allowed: Vec<glob::Pattern>,
    denied: Vec<Denied>,
}

/// Why a path is not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("refused by the local read policy: resolves to {}, which is {why} (built-in deny list)", target.display())]
    Denied { target: PathBuf, why: String },
    #[error("refused by the local read policy: resolves to {}, which agent.allowed_paths does not allow", target.display())]
    NotAllowed { target: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot resolve: {0}")]
    Resolve(#[from] io::Error),
}

impl ReadPolicy {
    /// `allowed`: globs (already validated); `denied`: (path, what it is) on top of the built-in dirs.
    pub fn new(allowed: &[String], denied: Vec<(PathBuf, String)>) -> ReadPolicy {
        let mut list: Vec<Denied> = BUILTIN_DENIED_DIRS
            .iter()
            .map(|d| Denied {
                path: PathBuf::from(d),
                why: format!("under {d}"),
            })
            .collect();
        for (path, why) in denied {
            // Both the path as configured and its target: either may be what a symlink resolves to
            // (the target when it exists; the configured path is kept for one created later).
            if let Ok(canonical) = std::fs::canonicalize(&path) {
                if canonical != path {
                    list.push(Denied {
                        path: canonical,
                        why: why.clone(),
                    });
                }
            }
            list.push(Denied { path, why });
        }
        ReadPolicy {
            allowed: allowed
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect(),
            denied: list,
        }
    }

    /// Every path but the built-in deny list (tests, tools).
    pub fn allow_all() -> ReadPolicy {
        ReadPolicy::new(&["/**".to_owned()], Vec::new())
    }

    /// The policy of these settings: `agent.allowed_paths`, and the deny list of the config file, the
    /// state directory and every TLS / key file they name.
    pub fn from_settings(s: &Settings) -> ReadPolicy {
        let mut denied: Vec<(PathBuf, String)> = Vec::new();
        if let Some(f) = &s.agent.config_file {
            denied.push((f.clone(), "the agent's config file".into()));
        }
        denied.push((
            s.agent.state_dir.clone(),
            "the agent's state directory (agent.state_dir)".into(),
        ));
        let k = &s.kafka;
        let mut tls_files = vec![
            (&k.ssl_ca_location, "kafka.ssl_ca_location"),
            (
                &k.ssl_certificate_location,
                "kafka.ssl_certificate_location",
            ),
            (&k.ssl_key_location, "kafka.ssl_key_location"),
        ];
        if let Some(tls) = &s.etcd.tls {
            tls_files.push((&tls.ca_file, "etcd.ca_file"));
            tls_files.push((&tls.cert_file, "etcd.cert_file"));
            tls_files.push((&tls.key_file, "etcd.key_file"));
        }
        for (file, key) in tls_files {
            if let Some(p) = file {
                denied.push((p.clone(), format!("a TLS file of the config ({key})")));
            }
        }
        // librdkafka file properties passed through verbatim (ssl.keystore.location, keytabs, ...).
        for (key, value) in &k.options {
            if (key.ends_with(".location") || key.ends_with("keytab")) && value.starts_with('/') {
                denied.push((
                    PathBuf::from(value),
                    format!("a key file of the config (kafka.options.\"{key}\")"),
                ));
            }
        }
        ReadPolicy::new(&s.agent.allowed_paths, denied)
    }

    /// Resolves `path` (following every symlink) and checks the target: the path to open, or why not.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, PolicyError> {
        let target = std::fs::canonicalize(path)?;
        self.check_resolved(&target)?;
        Ok(target)
    }

    /// Pure: whether an already resolved path may be read.
    pub fn check_resolved(&self, target: &Path) -> Result<(), Refusal> {
        if let Some(d) = self.denied.iter().find(|d| target.starts_with(&d.path)) {
            return Err(Refusal::Denied {
                target: target.to_path_buf(),
                why: d.why.clone(),
            });
        }
        if !self
            .allowed
            .iter()
            .any(|p| p.matches_path_with(target, crate::config::collect::GLOB_OPTIONS))
        {
            return Err(Refusal::NotAllowed {
                target: target.to_path_buf(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn everything() -> Vec<String> {
        vec!["/**".into()]
    }

    #[test]
    fn builtin_dirs_are_denied_whatever_is_allowed() {
        let p = ReadPolicy::new(&everything(), Vec::new());
        for target in ["/proc/self/environ", "/sys/kernel/x", "/dev/sda", "/proc"] {
            assert!(
                matches!(
                    p.check_resolved(Path::new(target)),
                    Err(Refusal::Denied { .. })
                ),
                "{target}"
            );
        }
        assert_eq!(p.check_resolved(Path::new("/var/log/syslog")), Ok(()));
        // Component-wise: /devices is not under /dev.
        assert_eq!(p.check_resolved(Path::new("/devices/x.log")), Ok(()));
    }

    #[test]
    fn allowed_paths_limit_what_is_read() {
        let p = ReadPolicy::new(
            &["/var/log/**".into(), "/srv/*/logs/*.log".into()],
            Vec::new(),
        );
        assert_eq!(p.check_resolved(Path::new("/var/log/app/x.log")), Ok(()));
        assert_eq!(p.check_resolved(Path::new("/srv/a/logs/x.log")), Ok(()));
        assert!(matches!(
            p.check_resolved(Path::new("/etc/shadow")),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn the_deny_list_holds_the_config_file_state_dir_and_every_tls_file_of_the_settings() {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("agent.toml");
        let state = root.path().join("state");
        let toml = format!(
            r#"
            [agent]
            state_dir = "{state}"
            allowed_paths = ["/**"]
            [etcd]
            endpoints = ["https://e:2379"]
            ca_file = "/etc/etcd/ca.pem"
            cert_file = "/etc/etcd/client.pem"
            key_file = "/etc/etcd/client-key.pem"
            [kafka]
            security_protocol = "ssl"
            ssl_ca_location = "/etc/kafka/ca.pem"
            ssl_certificate_location = "/etc/kafka/client.pem"
            ssl_key_location = "/etc/kafka/client.key"
            [kafka.options]
            "ssl.keystore.location" = "/etc/kafka/keystore.p12"
            "#,
            state = state.display()
        );
        std::fs::write(&config, toml).unwrap();
        let settings = crate::config::settings::load(&config).unwrap();
        let p = ReadPolicy::from_settings(&settings);
        let denied = [
            config.clone(),
            state.join("checkpoints.json"),
            state.join("last_config.json"),
            "/etc/etcd/ca.pem".into(),
            "/etc/etcd/client.pem".into(),
            "/etc/etcd/client-key.pem".into(),
            "/etc/kafka/ca.pem".into(),
            "/etc/kafka/client.pem".into(),
            "/etc/kafka/client.key".into(),
            "/etc/kafka/keystore.p12".into(),
        ];
        for target in denied {
            assert!(
                matches!(p.check_resolved(&target), Err(Refusal::Denied { .. })),
                "{} not denied",
                target.display()
            );
        }
        assert_eq!(p.check_resolved(&root.path().join("app.log")), Ok(()));
    }

    #[test]
    fn symlinks_to_the_config_and_the_checkpoint_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let checkpoint = state.join("checkpoints.json");
        std::fs::write(&checkpoint, b"{}\n").unwrap();
        let config = root.path().join("logagent.toml");
        std::fs::write(&config, b"[agent]\n").unwrap();
        let key = root.path().join("client.key");
        std::fs::write(&key, b"secret\n").unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("app.log"), b"line\n").unwrap();
        symlink(&config, logs.join("config.log")).unwrap();
        symlink(&checkpoint, logs.join("ck.log")).unwrap();
        symlink("../client.key", logs.join("key.log")).unwrap();
        // A chain of links ends at the config too.
        symlink(logs.join("config.log"), logs.join("chain.log")).unwrap();

        let p = ReadPolicy::new(
            &everything(),
            vec![
                (config.clone(), "the agent's config file".into()),
                (state.clone(), "the agent's state directory".into()),
                (key.clone(), "a TLS file".into()),
            ],
        );
        for link in ["config.log", "ck.log", "key.log", "chain.log"] {
            match p.resolve(&logs.join(link)) {
                Err(PolicyError::Refused(Refusal::Denied { .. })) => {}
                other => panic!("{link}: expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(
            p.resolve(&logs.join("app.log")).unwrap(),
            std::fs::canonicalize(logs.join("app.log")).unwrap()
        );
        assert!(matches!(
            p.resolve(&logs.join("missing.log")),
            Err(PolicyError::Resolve(_))
        ));
    }
}
