//! One child process with its output in a log file, restartable with the same command line.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    /// Byte length of the log when the current run started, so waits can ignore earlier runs.
    run_start: u64,
    child: Option<Child>,
    last_status: Option<ExitStatus>,
}

impl Proc {
    pub fn new(
        name: &str,
        program: &Path,
        args: Vec<OsString>,
        cwd: &Path,
        log_path: &Path,
    ) -> Self {
        Proc {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            cwd: cwd.to_path_buf(),
            env: Vec::new(),
            log_path: log_path.to_path_buf(),
            run_start: 0,
            child: None,
            last_status: None,
        }
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Spawns the command; output is appended to the log after a banner line per run.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| anyhow::anyhow!("open log {}: {e}", self.log_path.display()))?;
        self.run_start = log.metadata()?.len();
        writeln!(
            log,
            "=== harness: starting {} {:?} {:?} ===",
            self.name, self.program, self.args
        )?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // If the test binary dies without unwinding (SIGKILL, abort), the child gets SIGKILL
        // instead of lingering on its port. The signal follows the spawning *thread*, which is a
        // tokio worker or the test thread: both outlive the services they start.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // ETXTBSY: a script written by a test is briefly held open for writing by children that
        // other threads forked meanwhile; it clears once those exec.
        let mut attempts = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                r => {
                    break r.map_err(|e| {
                        anyhow::anyhow!("spawn {} ({}): {e}", self.name, self.program.display())
                    })?
                }
            }
        };
        self.child = Some(child);
        self.last_status = None;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The exit status if the process has exited (reaping it), None while it runs or was never
    /// started.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait()? {
            Some(status) => {
                self.child = None;
                self.last_status = Some(status);
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// How the last run ended, once it has been reaped.
    pub fn last_status(&self) -> Option<ExitStatus> {
        self.last_status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && matches!(self.try_exit(), Ok(None))
    }

    pub fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        // SAFETY: plain syscall; pid belongs to our unreaped child, so it cannot have been reused.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            anyhow::bail!(
                "kill({pid}, {sig}) for {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL and reap; a no-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.last_status = child.wait().ok();
        }
    }

    /// Waits for the process to exit on its own; the error names the process and shows its log.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if self.child.is_none() {
            // Already reaped (by `is_running`, `kill` or an earlier wait).
            return self
                .last_status
                .ok_or_else(|| anyhow::anyhow!("{} was never started", self.name));
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                anyhow::bail!(
                    "{} did not exit within {timeout:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if !self.is_running() {
            return None;
        }
        let _ = self.signal(libc::SIGTERM);
        match self.wait_exit(grace).await {
            Ok(status) => Some(status),
            Err(_) => {
                self.kill();
                None
            }
        }
    }

    /// The whole log, every run, with ANSI escapes removed.
    pub fn log_contents(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &std::fs::read(&self.log_path).unwrap_or_default(),
        ))
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn run_start(&self) -> u64 {
        self.run_start
    }

    /// The log from byte `offset` on, with ANSI escapes removed.
    pub fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let from = (offset as usize).min(bytes.len());
        strip_ansi(&String::from_utf8_lossy(&bytes[from..]))
    }

    /// Whether this run failed to bind a port (the wording of both Go and Rust programs).
    /// Polls `probe` until it answers, every `every`, for at most `timeout`. Fails at once, with the
    /// log tail, when the process exits, and when what answered cannot be ours (our bind failed:
    /// another process holds the port). `what` names the service in errors.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut probe: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let start = Instant::now();
        let mut last_err = String::from("no attempt yet");
        while start.elapsed() < timeout {
            if let Some(status) = self.try_exit()? {
                anyhow::bail!(
                    "{what} exited during startup ({status}); log tail:\n{}",
                    self.log_tail(30)
                );
            }
            match probe().await {
                Ok(()) if self.bind_failed() => {
                    self.kill();
                    anyhow::bail!("{what} could not bind its ports")
                }
                Ok(()) => return Ok(()),
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(every).await;
        }
        anyhow::bail!(
            "{what} not ready within {timeout:?} (last error: {last_err}); log tail:\n{}",
            self.log_tail(30)
        )
    }

    pub fn bind_failed(&self) -> bool {
        self.log_since(self.run_start)
            .to_ascii_lowercase()
            .contains("address already in use")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let all = self.log_contents();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a service on fresh ports, up to `attempts` times: another process may take a port between
/// `free_port` and the service's bind, and new ports fix that. `attempt` spawns one and waits until it
/// is ready; it returns the service, or the error with whether the service's own bind failed (only
/// that is retried).
pub async fn start_on_fresh_ports<T, F, Fut>(attempts: usize, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, anyhow::Error>>>,
{
    let mut last_err = None;
    for _ in 0..attempts {
        match attempt().await? {
            Ok(service) => return Ok(service),
            Err(bind_failed) => last_err = Some(bind_failed),
        }
    }
    Err(last_err.expect("at least one attempt"))
}

/// Removes terminal colour codes, which tracing emits even into files unless told otherwise.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            // CSI sequence: parameters and intermediates, then one final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
