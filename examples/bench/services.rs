//! The processes a run needs besides the agent: etcd, and the Kafka endpoint (librdkafka's mock
//! cluster in this process, or a tansu broker with memory storage). etcd and tansu are started by
//! the tests' own kit (`tests/support`), so the bench and the tests run the same services the same
//! way; each on free loopback ports, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::support;

/// A child process killed (and reaped) on drop, its output in a log file.
pub struct Guard {
    pub child: Child,
    pub log: PathBuf,
}

impl Guard {
    pub fn spawn(
        program: &Path,
        args: &[String],
        cwd: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Guard> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        Ok(Guard {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`. True when it exited on its own.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if self.exited() {
            return true;
        }
        // SAFETY: a plain syscall on our own unreaped child, so the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A runtime for the test kit's async starters; the benchmark itself is synchronous.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the service starters")
    })
}

/// A single-member etcd, started by the tests' kit (its data in its own temp dir).
pub struct Etcd {
    inner: support::Etcd,
    pub endpoint: String,
}

impl Etcd {
    pub fn start(_dir: &Path) -> anyhow::Result<Etcd> {
        let inner = runtime().block_on(support::Etcd::start())?;
        let endpoint = inner.endpoint();
        Ok(Etcd { inner, endpoint })
    }

    /// Puts `key` = `value`.
    pub fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        runtime().block_on(self.inner.put(key, value))?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// librdkafka's mock cluster, in the benchmark process.
    Mock,
    /// `~/.cargo/bin/tansu broker` with memory storage, as a separate process.
    Tansu,
}

/// Where the agent produces to. The mock cluster keeps every record in this process's memory.
pub enum Endpoint {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu(Box<support::Tansu>),
}

impl Endpoint {
    pub fn start(
        kind: BrokerKind,
        dir: &Path,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Endpoint> {
        match kind {
            BrokerKind::Mock => {
                let mock = MockCluster::new(1).context("create the mock cluster")?;
                mock.create_topic(topic, partitions, 1)
                    .context("create the topic on the mock cluster")?;
                Ok(Endpoint::Mock(mock))
            }
            BrokerKind::Tansu => runtime().block_on(async {
                let _ = dir;
                let tansu = support::Tansu::start(support::Storage::Memory).await?;
                tansu.create_topic(topic, partitions).await?;
                Ok(Endpoint::Tansu(Box::new(tansu)))
            }),
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Endpoint::Mock(m) => m.bootstrap_servers(),
            Endpoint::Tansu(t) => t.bootstrap(),
        }
    }

    /// The broker's own process, whose CPU is reported next to the agent's (tansu only).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Endpoint::Mock(_) => None,
            Endpoint::Tansu(t) => t.pid(),
        }
    }
}

/// Partition ids of `topic` per the broker's metadata.
pub fn topic_partitions(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    support::topic_partitions(bootstrap, topic)
}
