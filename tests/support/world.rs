//! The fixture most agent tests start from: etcd, a Kafka-protocol broker (tansu, or any bootstrap
//! address such as librdkafka's mock cluster), a temp dir with `logs/` and `state/`, and this
//! host's IP and collect key.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    agent_config, checkpointed, consume, consume_for, free_port, wait_until, with_http_listener,
    Agent, Etcd, Storage, Tansu,
};

/// The agent binary built for these tests (cargo names it); the bench, an example, runs the
/// release build it built first.
pub fn bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_logagent") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/logagent"),
    }
}

/// Numbered lines, `"{prefix} line 000042"`: distinct, and sorted as text in the order written.
pub fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i:06}")).collect()
}

/// The seed fleets' value format: a JSON list of `{"path", "topic"}`.
pub fn seed_value(entries: &[(&Path, &str)]) -> String {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|(p, t)| serde_json::json!({"path": p, "topic": t}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

pub struct World {
    pub etcd: Etcd,
    /// The broker this fixture started, if it started one.
    pub kafka: Option<Tansu>,
    bootstrap: String,
    pub dir: tempfile::TempDir,
    pub ip: String,
    /// A free port for the agent's HTTP listener ([`World::http_config`]).
    pub http_port: u16,
}

impl World {
    /// etcd, tansu (in memory) and `topics`, each with `partitions`.
    pub async fn start(ip: &str, topics: &[&str], partitions: i32) -> anyhow::Result<World> {
        World::start_with_storage(ip, Storage::Memory, topics, partitions).await
    }

    /// The same with tansu on `storage`: [`Storage::Sqlite`] keeps what the broker acknowledged
    /// across a kill and `restart` of [`World::kafka`] (on the same port).
    pub async fn start_with_storage(
        ip: &str,
        storage: Storage,
        topics: &[&str],
        partitions: i32,
    ) -> anyhow::Result<World> {
        let (etcd, kafka) = tokio::try_join!(Etcd::start(), Tansu::start(storage))?;
        for t in topics {
            kafka.create_topic(t, partitions).await?;
        }
        let bootstrap = kafka.bootstrap();
        World::assemble(ip, etcd, Some(kafka), bootstrap)
    }

    /// etcd and a broker started elsewhere (a tansu the test restarts, a mock cluster).
    pub async fn with_broker(ip: &str, bootstrap: String) -> anyhow::Result<World> {
        World::assemble(ip, Etcd::start().await?, None, bootstrap)
    }

    fn assemble(
        ip: &str,
        etcd: Etcd,
        kafka: Option<Tansu>,
        bootstrap: String,
    ) -> anyhow::Result<World> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        Ok(World {
            etcd,
            kafka,
            bootstrap,
            dir,
            ip: ip.to_owned(),
            http_port: free_port(),
        })
    }

    /// The broker's bootstrap address (a list for a cluster).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// This host's collect key.
    pub fn key(&self) -> String {
        format!("collect_log_conf/{}", self.ip)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's config: this world's etcd, state dir and broker (the first of a cluster is
    /// enough to bootstrap from).
    pub fn config(&self) -> String {
        self.config_via(&self.etcd.endpoint())
    }

    /// The config with the HTTP listener (`/metrics`, `/readyz`) on [`World::http_port`].
    pub fn http_config(&self) -> String {
        with_http_listener(&self.config(), self.http_port)
    }

    /// The same, reaching etcd at `etcd_endpoint` (a relay in front of it, several endpoints).
    pub fn config_via(&self, etcd_endpoint: &str) -> String {
        let first = self.bootstrap.split(',').next().unwrap_or_default();
        agent_config(&self.state_dir(), etcd_endpoint, first, &self.ip)
    }

    pub fn agent(&self) -> anyhow::Result<Agent> {
        Agent::start(&bin(), &self.config())
    }

    /// The config of [`World::json_agent`].
    pub fn json_config(&self, etcd_endpoint: &str) -> String {
        let mut c = self.config_via(etcd_endpoint);
        c.push_str("\n[log]\nformat = \"json\"\n");
        c
    }

    /// The agent logging JSON (see `support::events`), reaching etcd at `etcd_endpoint`.
    pub fn json_agent(&self, etcd_endpoint: &str, env: &[(&str, &str)]) -> anyhow::Result<Agent> {
        Agent::start_with_env(&bin(), &self.json_config(etcd_endpoint), env)
    }

    /// Puts `entries` in the seed format under this host's key; returns the write's revision.
    pub async fn put(&self, entries: &[(&Path, &str)]) -> anyhow::Result<i64> {
        self.etcd.put(&self.key(), &seed_value(entries)).await
    }

    /// Puts `value` as it is under this host's key (entries with more than a path and a topic, a
    /// value the agent must reject); returns the write's revision.
    pub async fn put_value(&self, value: &str) -> anyhow::Result<i64> {
        self.etcd.put(&self.key(), value).await
    }

    /// Every record of `topic`, as text, once at least `n` arrived and then none for a second
    /// (so extra copies are seen too).
    pub async fn texts(&self, topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
        self.texts_within(topic, n, Duration::from_secs(60)).await
    }

    pub async fn texts_within(
        &self,
        topic: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        Ok(consume(&self.bootstrap, topic, n, timeout)
            .await?
            .iter()
            .map(|c| c.text())
            .collect())
    }

    /// What `topic` holds now (possibly nothing), plus what arrives within a second.
    pub async fn read_all(&self, topic: &str) -> anyhow::Result<Vec<String>> {
        Ok(consume_for(&self.bootstrap, topic, Duration::from_secs(1))
            .await?
            .iter()
            .map(|c| c.text())
            .collect())
    }

    /// Reads `topics` again and again until `done` holds for what they contain (or `timeout`),
    /// then once more after a pause so late extras (duplicates, stray lines) are seen too.
    pub async fn settle(
        &self,
        topics: &[&str],
        timeout: Duration,
        done: impl Fn(&[Vec<String>]) -> bool,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let start = Instant::now();
        loop {
            let got = self.read_topics(topics).await?;
            if done(&got) {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return self.read_topics(topics).await;
            }
            if start.elapsed() >= timeout {
                let counts: Vec<usize> = got.iter().map(Vec::len).collect();
                anyhow::bail!(
                    "topics {topics:?} not complete within {timeout:?} (records per topic: {counts:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn read_topics(&self, topics: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for t in topics {
            out.push(self.read_all(t).await?);
        }
        Ok(out)
    }

    /// Waits until the checkpoint says every byte of `log` is acknowledged; returns its size.
    pub async fn wait_all_acknowledged(
        &self,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let size = std::fs::metadata(log)?.len();
        let state = self.state_dir();
        wait_until(
            &format!(
                "checkpoint offset {size} of {} (every line acknowledged)",
                log.display()
            ),
            timeout,
            || {
                let ok = checkpointed(&state, log).is_ok_and(|o| o == Some(size));
                async move { ok }
            },
        )
        .await?;
        Ok(size)
    }
}
