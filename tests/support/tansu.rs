//! The tansu Kafka-protocol broker on a loopback port, with memory or sqlite storage.

use std::ffi::OsString;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::consume::topic_partitions;
use super::free_port;
use super::process::{start_on_fresh_ports, Proc};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Fast; everything is lost when the broker stops.
    Memory,
    /// A sqlite file in the broker's temp dir; survives `restart`.
    Sqlite,
}

pub struct Tansu {
    // Declared before `dir` so the process dies before its storage is removed.
    proc: Proc,
    port: u16,
    bin: PathBuf,
    storage: Storage,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts the broker and waits until it answers a metadata request.
    pub async fn start(storage: Storage) -> anyhow::Result<Tansu> {
        let bin = tansu_bin()?;
        start_on_fresh_ports(START_ATTEMPTS, || async {
            let dir = tempfile::Builder::new().prefix("tansu-").tempdir()?;
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let engine = match storage {
                Storage::Memory => "memory://tansu/".to_string(),
                // The path is relative to the working directory, which is `dir`.
                Storage::Sqlite => "sqlite://tansu.db".to_string(),
            };
            let args: Vec<OsString> = [
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &engine,
            ]
            .iter()
            .map(OsString::from)
            .collect();
            let proc = Proc::new(
                "tansu",
                &bin,
                args,
                dir.path(),
                &dir.path().join("tansu.log"),
            );
            let mut tansu = Tansu {
                proc,
                port,
                bin: bin.clone(),
                storage,
                dir,
            };
            tansu.proc.spawn()?;
            match tansu.wait_ready().await {
                Ok(()) => Ok(Ok(tansu)),
                Err(e) if tansu.proc.bind_failed() => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `127.0.0.1:PORT`, the form `kafka.brokers` and `bootstrap.servers` take.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id while it runs (the bench reports its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Creates a topic (tansu never auto-creates) and waits until metadata shows all partitions.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let args = [
            "topic".to_string(),
            "create".to_string(),
            name.to_string(),
            "--broker".to_string(),
            broker,
            "--partitions".to_string(),
            partitions.to_string(),
        ];
        let out = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::process::Command::new(&bin)
                .args(&args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("`tansu topic create {name}` hung for 15 s"))??;
        anyhow::ensure!(
            out.status.success(),
            "`tansu {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = self.bootstrap();
        let topic = name.to_string();
        super::wait_until(
            &format!("topic {name} with {partitions} partitions in metadata"),
            Duration::from_secs(10),
            || {
                let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
                async move {
                    tokio::task::spawn_blocking(move || topic_partitions(&bootstrap, &topic))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .is_some_and(|p| p.len() == partitions as usize)
                }
            },
        )
        .await
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(&mut self) {
        self.proc.stop(STOP_GRACE).await;
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts again on the same port and storage (sqlite data survives; memory starts empty),
    /// stopping the running broker first.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.proc.spawn()?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let (what, port) = (format!("tansu on {}", self.bootstrap()), self.port);
        self.proc
            .wait_ready(
                &what,
                READY_TIMEOUT,
                Duration::from_millis(50),
                || async move {
                    // A cheap TCP probe first: an rdkafka client against a closed port logs and retries.
                    let addr = ([127, 0, 0, 1], port).into();
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        .map_err(|_| anyhow::anyhow!("TCP connect refused"))?;
                    let bootstrap = format!("127.0.0.1:{port}");
                    // Whoever answers may be another process on our port: tansu 0.6 only logs the
                    // failed bind, panics a worker thread and, a moment later, exits 0.
                    tokio::task::spawn_blocking(move || answers_metadata(&bootstrap)).await?
                },
            )
            .await
    }
}

fn answers_metadata(bootstrap: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    consumer.fetch_metadata(None, Duration::from_secs(3))?;
    Ok(())
}

/// $TANSU_BIN, then ~/.cargo/bin/tansu, then `tansu` on PATH.
fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin/tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    let on_path = Command::new("tansu")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    anyhow::ensure!(
        on_path,
        "tansu not found ($TANSU_BIN, ~/.cargo/bin/tansu, PATH); run scripts/install-deps.sh"
    );
    Ok(PathBuf::from("tansu"))
}
