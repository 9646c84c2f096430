//! The processes a run needs besides the agent: etcd, and the Kafka endpoint (librdkafka's mock
//! cluster in this process, or a tansu broker with memory storage). Each on free loopback ports,
//! killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

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

/// A single-member etcd with its data in `dir`.
pub struct Etcd {
    _proc: Guard,
    pub endpoint: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> anyhow::Result<Etcd> {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data = dir.join("etcd-data");
        let args: Vec<String> = [
            "--name",
            "default",
            "--data-dir",
            &data.to_string_lossy(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("default={peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut proc = Guard::spawn(
            Path::new("/usr/bin/etcd"),
            &args,
            dir,
            &dir.join("etcd.log"),
            &[],
        )?;
        let endpoint = format!("127.0.0.1:{client_port}");
        let start = Instant::now();
        while TcpStream::connect(&endpoint).is_err() {
            if proc.exited() || start.elapsed() > READY_TIMEOUT {
                bail!("etcd did not start; log tail:\n{}", proc.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Etcd {
            _proc: proc,
            endpoint,
        })
    }

    /// Puts `key` = `value`, retrying while the lone member elects itself.
    pub fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let start = Instant::now();
            loop {
                let attempt = async {
                    let mut c =
                        etcd_client::Client::connect([self.endpoint.as_str()], None).await?;
                    c.put(key, value, None).await?;
                    Ok::<_, etcd_client::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) if start.elapsed() > READY_TIMEOUT => bail!("etcd put {key}: {e}"),
                    Err(_) if start.elapsed() > READY_TIMEOUT => bail!("etcd put {key}: timed out"),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
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
    Tansu { proc: Guard, bootstrap: String },
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
            BrokerKind::Tansu => start_tansu(dir, topic, partitions),
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Endpoint::Mock(m) => m.bootstrap_servers(),
            Endpoint::Tansu { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// The broker's own process, whose CPU is reported next to the agent's (tansu only).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Endpoint::Mock(_) => None,
            Endpoint::Tansu { proc, .. } => Some(proc.pid()),
        }
    }
}

fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TANSU") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    let p = PathBuf::from(home).join(".cargo/bin/tansu");
    if !p.exists() {
        bail!(
            "{} not found: install it with `cargo install tansu` or set TANSU=/path/to/tansu",
            p.display()
        );
    }
    Ok(p)
}

fn start_tansu(dir: &Path, topic: &str, partitions: i32) -> anyhow::Result<Endpoint> {
    let bin = tansu_bin()?;
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let args: Vec<String> = [
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Per-request info logs would cost the broker CPU and fill the disk.
    let mut proc = Guard::spawn(
        &bin,
        &args,
        dir,
        &dir.join("tansu.log"),
        &[("RUST_LOG", "warn")],
    )?;
    let bootstrap = format!("127.0.0.1:{port}");
    let start = Instant::now();
    while TcpStream::connect(&bootstrap).is_err() {
        if proc.exited() || start.elapsed() > READY_TIMEOUT {
            bail!("tansu did not start; log tail:\n{}", proc.log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(&bin)
        .args([
            "topic",
            "create",
            topic,
            "--broker",
            &url,
            "--partitions",
            &partitions.to_string(),
        ])
        .output()
        .context("run `tansu topic create`")?;
    if !out.status.success() {
        bail!(
            "`tansu topic create {topic}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let start = Instant::now();
    while topic_partitions(&bootstrap, topic).map_or(0, |p| p.len()) != partitions as usize {
        if start.elapsed() > READY_TIMEOUT {
            bail!("topic {topic} did not show {partitions} partitions on tansu");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Endpoint::Tansu { proc, bootstrap })
}

/// Partition ids of `topic` per the broker's metadata.
pub fn topic_partitions(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(3))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic missing from metadata")?;
    if let Some(err) = t.error() {
        bail!("topic {topic}: {err:?}");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}
