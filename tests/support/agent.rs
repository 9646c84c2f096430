//! The agent binary under test, run as `<bin> run --config <file>` with its output in a log file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::process::Proc;

pub struct Agent {
    // Declared before `dir` so the process dies before its config file is removed.
    proc: Proc,
    config_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Agent {
    /// Writes `config_toml` to a temp file and spawns the agent on it. Does not wait for anything:
    /// follow with `wait_for_log` or a consume.
    pub fn start(bin: &Path, config_toml: &str) -> anyhow::Result<Agent> {
        Self::start_with_env(bin, config_toml, &[])
    }

    /// Like `start`, with extra environment variables (e.g. `RUST_LOG` or config overrides).
    pub fn start_with_env(
        bin: &Path,
        config_toml: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Agent> {
        let dir = tempfile::Builder::new().prefix("agent-").tempdir()?;
        let config_path = dir.path().join("logagent.toml");
        std::fs::write(&config_path, config_toml)?;
        let args = vec![
            OsString::from("run"),
            OsString::from("--config"),
            config_path.clone().into_os_string(),
        ];
        let mut proc = Proc::new(
            "logagent",
            bin,
            args,
            dir.path(),
            &dir.path().join("agent.log"),
        )
        // Colour codes would split `key=value` pairs that tests search for.
        .env("NO_COLOR", "1");
        for (k, v) in env {
            proc = proc.env(*k, *v);
        }
        proc.spawn()?;
        Ok(Agent {
            proc,
            config_path,
            dir,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// Everything the agent printed, across restarts, without colour codes.
    pub fn log_contents(&self) -> String {
        self.proc.log_contents()
    }

    /// Current log length: pass it to `wait_for_log_after` to wait for a line written later.
    pub fn log_len(&self) -> u64 {
        self.proc.log_len()
    }

    /// Waits until the output of the current run contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let from = self.proc.run_start();
        self.wait_for_log_after(from, needle, timeout).await
    }

    /// Waits until the output after byte `offset` (from `log_len`) contains `needle`; fails
    /// early if the agent exits.
    pub async fn wait_for_log_after(
        &mut self,
        offset: u64,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.proc.log_since(offset).contains(needle) {
                return Ok(());
            }
            if !self.proc.is_running() {
                // It may have printed the line just before exiting.
                if self.proc.log_since(offset).contains(needle) {
                    return Ok(());
                }
                let status = self
                    .proc
                    .last_status()
                    .map_or_else(|| "never started".to_string(), |s| s.to_string());
                anyhow::bail!(
                    "agent exited ({status}) before logging {needle:?}; log tail:\n{}",
                    self.proc.log_tail(40)
                );
            }
            if start.elapsed() >= timeout {
                anyhow::bail!(
                    "agent did not log {needle:?} within {timeout:?}; log tail:\n{}",
                    self.proc.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.proc.signal(libc::SIGTERM)
    }

    pub fn sigint(&self) -> anyhow::Result<()> {
        self.proc.signal(libc::SIGINT)
    }

    /// Sends `sig` (e.g. SIGSTOP / SIGCONT to freeze the agent while the test inspects its state).
    pub fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        self.proc.signal(sig)
    }

    /// SIGKILL and reap: the crash case, nothing flushed.
    pub fn sigkill(&mut self) {
        self.proc.kill();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    /// SIGTERM, then requires a clean exit (status 0) within `timeout`; the error carries the log tail.
    pub async fn stop_cleanly(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.sigterm()?;
        let status = self.wait_exit(timeout).await?;
        anyhow::ensure!(
            status.success(),
            "agent exited with {status} after SIGTERM; log tail:\n{}",
            self.proc.log_tail(30)
        );
        Ok(())
    }

    /// Runs the same binary on the same config file again (after it exited or was killed); the
    /// log continues in the same file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.proc.is_running(), "agent is still running");
        self.proc.spawn()
    }

    /// Replaces the config file; takes effect at the next `restart`.
    pub fn rewrite_config(&self, config_toml: &str) -> anyhow::Result<()> {
        std::fs::write(&self.config_path, config_toml)?;
        Ok(())
    }
}

/// A complete agent config for tests: fast polling and checkpoints, no HTTP listener. Tests
/// append their own sections or keys as needed.
pub fn agent_config(state_dir: &Path, etcd_endpoint: &str, bootstrap: &str, ip: &str) -> String {
    format!(
        r#"[agent]
ip = {ip}
state_dir = {state_dir}

[etcd]
endpoints = [{etcd}]
key_template = "collect_log_conf/{{ip}}"

[kafka]
brokers = [{kafka}]

[tail]
poll_interval_ms = 100

[checkpoint]
interval_ms = 200

[http]
listen = ""
"#,
        ip = toml_str(ip),
        state_dir = toml_str(&state_dir.to_string_lossy()),
        etcd = toml_str(etcd_endpoint),
        kafka = toml_str(bootstrap),
    )
}

/// A TOML basic string: JSON string escapes are a subset of TOML's.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
