//! The scenarios: each prepares files, starts an endpoint and the release agent, and measures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::gen::{write_file, write_gbk_file, LineGen};
use crate::probe::{cpu_seconds, read_chars, status_mib, Appended, Counter};
use crate::services::{topic_partitions, BrokerKind, Endpoint, Etcd, Guard};

/// No new record for this long means the agent is stuck: the scenario is reported incomplete.
const STALL: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(15);

/// What every scenario shares.
pub struct Ctx {
    pub agent_bin: PathBuf,
    pub broker: BrokerKind,
    pub partitions: i32,
    pub etcd: Etcd,
    pub line_bytes: Option<usize>,
    pub files: Option<usize>,
    pub lines: Option<u64>,
    pub idle_secs: u64,
    pub backlog_mb: u64,
    pub keep: bool,
}

/// One scenario's figures: the printed line and the JSON record.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub scenario: String,
    pub broker: String,
    pub files: usize,
    /// Lines the measured phase had to ship.
    pub lines: u64,
    pub bytes: u64,
    pub avg_line_bytes: f64,
    pub wall_s: f64,
    pub lines_per_s: f64,
    pub mb_per_s: f64,
    pub cpu_s: f64,
    pub cpu_s_per_m_lines: f64,
    pub peak_rss_mib: f64,
    /// Records of the measured phase in the topic, after a short settle: read back by a consumer
    /// (tansu), or counted by high watermarks (the mock cluster keeps too few records to read back).
    pub records: u64,
    /// Every line arrived exactly once and the checkpoint reached the end of every file.
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_pct: Option<f64>,
    /// Produce (and other) requests the agent sent per second while trickling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_s: Option<f64>,
    /// From the last trickled line written to it being in Kafka.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_ms: Option<f64>,
    /// Each new file's line in Kafka after the file was created and written (glob50k).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_file_ms: Vec<f64>,
    /// Discovery's share of a core while idle (`logagent_discovery_seconds_total`; glob50k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_cpu_pct: Option<f64>,
    /// Directories discovery listed per second while idle (glob50k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs_listed_per_s: Option<f64>,
    /// Lines/s acknowledged between 10 % and 90 % of the lines (throughput scenarios).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_lines_per_s: Option<f64>,
    /// Seconds until a consumer had read every record back (tansu): its fetches, not the agent,
    /// bound that rate, so `wall_s` stops at the broker's acknowledgement of the last line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_back_s: Option<f64>,
    /// From the restarted agent's start to every file open again (startup10k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<f64>,
    /// Bytes the restarted agent read (files and sockets), for the backlog's no-re-scan check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescanned: Option<bool>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A scenario's temp dir, endpoint and topic.
struct Stage {
    dir: tempfile::TempDir,
    logs: PathBuf,
    state: PathBuf,
    topic: String,
    endpoint: Endpoint,
    partitions: Vec<i32>,
    runs: usize,
    /// The agent's /metrics port (for the request count librdkafka reports).
    http_port: u16,
}

impl Stage {
    fn new(ctx: &Ctx, name: &str) -> anyhow::Result<Stage> {
        Stage::with_entry(ctx, name, serde_json::json!({}))
    }

    /// A stage whose collect entry also has the fields of `extra` (record options).
    fn with_entry(ctx: &Ctx, name: &str, extra: serde_json::Value) -> anyhow::Result<Stage> {
        Stage::with_pattern(ctx, name, "*.log", extra)
    }

    /// A stage whose entry's path is `<logs>/<pattern>`.
    fn with_pattern(
        ctx: &Ctx,
        name: &str,
        pattern: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<Stage> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("logagent-bench-{name}-"))
            .disable_cleanup(ctx.keep)
            .tempdir()?;
        if ctx.keep {
            eprintln!("  {name}: keeping {}", dir.path().display());
        }
        let (logs, state) = (dir.path().join("logs"), dir.path().join("state"));
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&state)?;
        let topic = format!("bench_{name}");
        let endpoint = Endpoint::start(ctx.broker, dir.path(), &topic, ctx.partitions)?;
        let partitions = topic_partitions(&endpoint.bootstrap(), &topic)?;
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut entry =
            serde_json::json!({ "path": format!("{}/{pattern}", logs.display()), "topic": topic });
        if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        let value = serde_json::json!([entry]);
        ctx.etcd
            .put("collect_log_conf/127.0.0.1", &value.to_string())?;
        let config = format!(
            r#"[agent]
ip = "127.0.0.1"
state_dir = "{state}"
hostname = "bench"
[log]
level = "info"
format = "compact"
[etcd]
endpoints = ["{etcd}"]
[kafka]
brokers = ["{brokers}"]
[kafka.options]
"statistics.interval.ms" = "1000"
[http]
listen = "127.0.0.1:{http_port}"
"#,
            state = state.display(),
            etcd = ctx.etcd.endpoint,
            brokers = endpoint.bootstrap(),
        );
        std::fs::write(dir.path().join("agent.toml"), config)?;
        Ok(Stage {
            dir,
            logs,
            state,
            topic,
            endpoint,
            partitions,
            runs: 0,
            http_port,
        })
    }

    /// Counts what reaches the topic: appended records always, consumed records against tansu.
    fn tally(&self, ctx: &Ctx) -> anyhow::Result<Tally> {
        let bootstrap = self.endpoint.bootstrap();
        Ok(Tally {
            appended: Appended::new(&bootstrap, &self.topic, &self.partitions)?,
            consumed: match ctx.broker {
                BrokerKind::Tansu => {
                    Some(Counter::start(&bootstrap, &self.topic, &self.partitions)?)
                }
                BrokerKind::Mock => None,
            },
        })
    }

    fn spawn_agent(&mut self, ctx: &Ctx) -> anyhow::Result<Guard> {
        self.spawn_agent_with(ctx, &[])
    }

    fn spawn_agent_with(&mut self, ctx: &Ctx, env: &[(&str, &str)]) -> anyhow::Result<Guard> {
        self.runs += 1;
        let config = self.dir.path().join("agent.toml");
        let args = [
            "run".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        Guard::spawn(
            &ctx.agent_bin,
            &args,
            self.dir.path(),
            &self.dir.path().join(format!("agent-{}.log", self.runs)),
            env,
        )
    }

    /// Requests the agent sent to Kafka so far (its librdkafka statistics, via /metrics).
    fn kafka_requests(&self) -> anyhow::Result<f64> {
        self.metric("logagent_kafka_requests_total")
    }

    /// Lines Kafka acknowledged to the agent, every topic (`logagent_lines_acked_total`).
    fn acked_lines(&self) -> anyhow::Result<u64> {
        let page = self.metrics_page()?;
        Ok(crate::support::samples(&page)
            .iter()
            .filter(|(k, _)| k.starts_with("logagent_lines_acked_total{"))
            .map(|(_, v)| *v as u64)
            .sum())
    }

    /// Waits until Kafka acknowledged `target` lines to the agent; returns that moment, the agent's
    /// CPU seconds then, and the rate between 10 % and 90 % acknowledged (the busy phase: without
    /// the start-up, nor the last small batch, which waits up to `kafka.idle_flush_ms` as trickle).
    /// This is the agent's throughput: a consumer reading the topic back (tansu) is far slower
    /// than the broker takes records in.
    fn wait_acked(
        &self,
        agent: &mut Guard,
        target: u64,
    ) -> anyhow::Result<(Instant, f64, Option<f64>)> {
        let (mut at10, mut at90) = (None, None);
        let (done, cpu) = wait_count(
            agent,
            target,
            "lines acknowledged",
            || Ok(self.acked_lines().unwrap_or(0)),
            |now| {
                if now * 10 >= target && at10.is_none() {
                    at10 = Some((now, Instant::now()));
                }
                if now * 10 >= target * 9 && at90.is_none() {
                    at90 = Some((now, Instant::now()));
                }
            },
        )?;
        let busy = match (at10, at90) {
            (Some((n1, t1)), Some((n2, t2))) if n2 > n1 && t2 > t1 => {
                Some((n2 - n1) as f64 / (t2 - t1).as_secs_f64())
            }
            _ => None,
        };
        Ok((done, cpu, busy))
    }

    fn metrics_page(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.http_port))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        Ok(body)
    }

    /// A metric without labels from the agent's /metrics.
    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let body = self.metrics_page()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in /metrics"))?
            .trim()
            .parse()
            .with_context(|| format!("{name} in /metrics"))
    }

    fn log_file(&self, i: usize) -> PathBuf {
        self.logs.join(format!("access-{i:04}.log"))
    }

    /// Whether the checkpoint holds the end of every file, waiting a few checkpoint intervals.
    fn checkpoint_at_end(&self, wait: Duration) -> bool {
        let start = Instant::now();
        loop {
            if checkpoint_matches_sizes(&self.state).unwrap_or(false) {
                return true;
            }
            if start.elapsed() > wait {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn checkpoint_matches_sizes(state: &Path) -> anyhow::Result<bool> {
    // The snapshot and its journal, replayed as the integration tests read them.
    let files = crate::support::checkpoint_records(state)?;
    let mut all = !files.is_empty();
    for f in files {
        all &= std::fs::metadata(&f.path)
            .map(|m| m.len() == f.offset)
            .unwrap_or(false);
    }
    Ok(all)
}

/// Records acknowledged into the topic, and (tansu only) read back from it.
struct Tally {
    appended: Appended,
    consumed: Option<Counter>,
}

impl Tally {
    /// Records in the topic: read back by the consumer when there is one (tansu's high watermarks
    /// do not count records one for one), else the high watermarks (the mock cluster).
    fn count(&self) -> anyhow::Result<u64> {
        match &self.consumed {
            Some(c) => Ok(c.count()),
            None => self.appended.count(),
        }
    }

    /// Waits until `target` records are in the topic; returns the moment they were and the agent's
    /// CPU seconds then.
    fn wait_for(&self, agent: &mut Guard, target: u64) -> anyhow::Result<(Instant, f64)> {
        wait_count(
            agent,
            target,
            "records in the topic",
            || self.count(),
            |_| {},
        )
    }

    /// The count after a short settle, so duplicates that arrive late are seen; minus `base`.
    fn settled(&self, base: u64) -> anyhow::Result<u64> {
        std::thread::sleep(Duration::from_millis(500));
        Ok(self.count()? - base)
    }
}

/// Polls `count` until it reaches `target` (calling `seen` with each value); returns that moment
/// and the agent's CPU seconds then. Fails if the agent exits or the count stalls for [`STALL`].
fn wait_count(
    agent: &mut Guard,
    target: u64,
    what: &str,
    mut count: impl FnMut() -> anyhow::Result<u64>,
    mut seen: impl FnMut(u64),
) -> anyhow::Result<(Instant, f64)> {
    let mut last = (count()?, Instant::now());
    loop {
        let now = count()?;
        seen(now);
        if now >= target {
            return Ok((Instant::now(), cpu_seconds(agent.pid())?));
        }
        if agent.exited() {
            bail!(
                "agent exited with {now} of {target} {what}; log tail:\n{}",
                agent.log_tail(20)
            );
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "stalled at {now} of {target} {what} for {STALL:?}; agent log tail:\n{}",
                agent.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every record exactly once: as many in the topic as lines written.
fn exact(count: u64, lines: u64) -> bool {
    count == lines
}

pub fn figures(
    ctx: &Ctx,
    name: &str,
    files: usize,
    lines: u64,
    bytes: u64,
    wall: Duration,
    cpu: f64,
) -> Figures {
    let wall_s = wall.as_secs_f64();
    Figures {
        scenario: name.to_string(),
        broker: format!("{:?}", ctx.broker).to_lowercase(),
        files,
        lines,
        bytes,
        avg_line_bytes: bytes as f64 / lines.max(1) as f64,
        wall_s,
        lines_per_s: lines as f64 / wall_s,
        mb_per_s: bytes as f64 / 1e6 / wall_s,
        cpu_s: cpu,
        cpu_s_per_m_lines: cpu / (lines as f64 / 1e6),
        ..Figures::default()
    }
}

/// `hot` and `ten`: every line is in the files before the agent starts; time until all are in Kafka.
pub fn throughput(ctx: &Ctx, name: &str, default_files: usize) -> anyhow::Result<Figures> {
    let files = ctx.files.unwrap_or(default_files).max(1);
    let lines = ctx.lines.unwrap_or(2_000_000);
    throughput_then_idle(ctx, name, files, lines, None)
}

/// `json`: the `hot` file shipped as ECS envelopes with id, host and path headers.
pub fn json(ctx: &Ctx) -> anyhow::Result<Figures> {
    let extra = serde_json::json!({"format": "json", "headers": ["id", "host", "path"]});
    let lines = ctx.lines.unwrap_or(2_000_000);
    let stage = Stage::with_entry(ctx, "json", extra)?;
    throughput_on(ctx, stage, "json", 1, lines, None, Encoding::Utf8)
}

/// `gbk`: one file of GBK lines (Chinese text, then the nginx line), decoded to UTF-8.
pub fn gbk(ctx: &Ctx) -> anyhow::Result<Figures> {
    let stage = Stage::with_entry(ctx, "gbk", serde_json::json!({"encoding": "gbk"}))?;
    let lines = ctx.lines.unwrap_or(2_000_000);
    throughput_on(ctx, stage, "gbk", 1, lines, None, Encoding::Gbk)
}

/// How the benchmark files are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Gbk,
}

/// Ships every line; with `idle`, then waits that long and takes the agent's current RSS.
fn throughput_then_idle(
    ctx: &Ctx,
    name: &str,
    files: usize,
    lines: u64,
    idle: Option<Duration>,
) -> anyhow::Result<Figures> {
    let stage = Stage::new(ctx, name)?;
    throughput_on(ctx, stage, name, files, lines, idle, Encoding::Utf8)
}

fn throughput_on(
    ctx: &Ctx,
    mut stage: Stage,
    name: &str,
    files: usize,
    lines: u64,
    idle: Option<Duration>,
    encoding: Encoding,
) -> anyhow::Result<Figures> {
    let mut gen = LineGen::new(42, ctx.line_bytes);
    let mut bytes = 0;
    for i in 0..files {
        let share = lines / files as u64 + u64::from((i as u64) < lines % files as u64);
        bytes += match encoding {
            Encoding::Utf8 => write_file(&stage.log_file(i), &mut gen, share)?,
            Encoding::Gbk => write_gbk_file(&stage.log_file(i), &mut gen, share)?,
        };
    }
    let tally = stage.tally(ctx)?;
    let broker_cpu0 = stage.endpoint.pid().map(cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut agent = stage.spawn_agent(ctx)?;
    let (done, cpu, busy) = stage.wait_acked(&mut agent, lines)?;
    let (read_back, _) = tally.wait_for(&mut agent, lines)?;
    let mut f = figures(ctx, name, files, lines, bytes, done - started, cpu);
    f.busy_lines_per_s = busy;
    if tally.consumed.is_some() {
        f.read_back_s = Some((read_back - started).as_secs_f64());
    }
    f.broker_cpu_s = stage
        .endpoint
        .pid()
        .map(cpu_seconds)
        .transpose()?
        .zip(broker_cpu0)
        .map(|(a, b)| a - b);
    f.peak_rss_mib = status_mib(agent.pid(), "VmHWM:")?;
    if let Some(idle) = idle {
        std::thread::sleep(idle);
        f.rss_mib = Some(status_mib(agent.pid(), "VmRSS:")?);
    }
    let counts = tally.settled(0)?;
    f.records = counts;
    let at_end = stage.checkpoint_at_end(Duration::from_secs(5));
    f.complete = exact(counts, lines) && at_end;
    if !at_end {
        f.note = "checkpoint did not reach the end of every file".into();
    }
    agent.stop(STOP_GRACE);
    Ok(f)
}

/// `wide`: a backlog across many files (400 × ~600 KB), then RSS while the agent idles: caught-up
/// tailers must not keep their grown read buffers.
pub fn wide(ctx: &Ctx) -> anyhow::Result<Figures> {
    let files = ctx.files.unwrap_or(400).max(1);
    // ~150-byte lines: about 600 KB per file.
    let lines = ctx.lines.unwrap_or(files as u64 * 4_000);
    throughput_then_idle(ctx, "wide", files, lines, Some(Duration::from_secs(5)))
}

/// Appends one line to each of `paths` every `period`, the writes spread evenly over it, for `secs`;
/// calls `at_warm` once the warm-up (2 s, or one period) has passed, where the measured window
/// starts. Returns the lines and bytes written.
pub fn trickle(
    paths: &[PathBuf],
    gen: &mut LineGen,
    period: Duration,
    secs: u64,
    mut at_warm: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(u64, u64)> {
    let files = paths.len().max(1);
    let mut handles: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::OpenOptions::new().append(true).open(p))
        .collect::<Result<_, _>>()?;
    let slot = period / files as u32;
    let warmup = Duration::from_secs(2).max(period);
    let start = Instant::now();
    let mut warm = false;
    let mut buf = Vec::with_capacity(512);
    let (mut lines, mut bytes) = (0u64, 0u64);
    let ticks = (secs as f64 / period.as_secs_f64()) as u64 * files as u64;
    for tick in 0..ticks {
        let due = start + slot * tick as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if !warm && start.elapsed() >= warmup {
            warm = true;
            at_warm()?;
        }
        buf.clear();
        let n = gen.line(&mut buf);
        std::io::Write::write_all(&mut handles[(tick % files as u64) as usize], &buf)?;
        bytes += n as u64;
        lines += 1;
    }
    Ok((lines, bytes))
}

/// `idle1000`/`idle10000`: many files, each written one line every `period`, the writes spread
/// evenly; the agent's CPU share and request rate while trickling.
pub fn idle(
    ctx: &Ctx,
    name: &str,
    default_files: usize,
    period: Duration,
) -> anyhow::Result<Figures> {
    let files = ctx.files.unwrap_or(default_files).max(1);
    let secs = ctx.idle_secs.max(3).max(2 * period.as_secs());
    let mut stage = Stage::new(ctx, name)?;
    let mut gen = LineGen::new(7, ctx.line_bytes);
    let mut bytes = 0;
    let paths: Vec<PathBuf> = (0..files).map(|i| stage.log_file(i)).collect();
    for p in &paths {
        bytes += write_file(p, &mut gen, 1)?;
    }
    let tally = stage.tally(ctx)?;
    // Past the default cap the agent would take turns over the files (closing caught-up ones):
    // that is the budget's behaviour, measured by the cap's own tests, not the idle cost.
    let env: &[(&str, &str)] = if files > 4_096 { &MANY_FILES } else { &[] };
    let mut agent = stage.spawn_agent_with(ctx, env)?;
    tally.wait_for(&mut agent, files as u64)?;

    let start = Instant::now();
    // The request count is missing from agents built before it existed: figures without it.
    let mut window: Option<(Instant, f64, Option<f64>, Option<f64>)> = None;
    // Discovery's own CPU: on a shared machine the agent's whole share moves with the neighbours'.
    let discovery = || stage.metric("logagent_discovery_seconds_total").ok();
    let (trickled, written_bytes) = trickle(&paths, &mut gen, period, secs, || {
        // Read before the agent's CPU: the scrape is not the idle cost.
        let disc = discovery();
        window = Some((
            Instant::now(),
            cpu_seconds(agent.pid())?,
            stage.kafka_requests().ok(),
            disc,
        ));
        Ok(())
    })?;
    bytes += written_bytes;
    let written = Instant::now();
    let (w_start, w_cpu, w_req, w_disc) = window.context("trickle shorter than its warm-up")?;
    let idle_cpu = cpu_seconds(agent.pid())? - w_cpu;
    let idle_wall = w_start.elapsed();
    let disc_cpu = w_disc.and_then(|d| Some(discovery()? - d));
    let total = files as u64 + trickled;
    let (done, cpu) = tally.wait_for(&mut agent, total)?;
    // librdkafka reports every second: the window's requests, read once the last report is in.
    std::thread::sleep(
        (written + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
    );
    let requests = w_req.and_then(|w| Some(stage.kafka_requests().ok()? - w));
    let mut f = figures(ctx, name, files, trickled, bytes, done - start, cpu);
    f.idle_cpu_pct = Some(100.0 * idle_cpu / idle_wall.as_secs_f64());
    f.discovery_cpu_pct = disc_cpu.map(|d| 100.0 * d / idle_wall.as_secs_f64());
    f.requests_per_s = requests.map(|r| r / (idle_wall.as_secs_f64() + 1.1));
    f.pickup_ms = Some(done.saturating_duration_since(written).as_secs_f64() * 1e3);
    f.peak_rss_mib = status_mib(agent.pid(), "VmHWM:")?;
    f.rss_mib = Some(status_mib(agent.pid(), "VmRSS:")?);
    let counts = tally.settled(files as u64)?;
    f.records = counts;
    f.complete = exact(counts, trickled) && stage.checkpoint_at_end(Duration::from_secs(5));
    f.note = format!(
        "{files} files x 1 line per {} s for {secs} s; wall = trickle + drain",
        period.as_secs()
    );
    agent.stop(STOP_GRACE);
    Ok(f)
}

/// `backlog`: the agent ships a first part and stops; a large backlog is appended while it is down;
/// the restarted agent must ship the backlog alone, without reading the shipped part again.
pub fn backlog(ctx: &Ctx) -> anyhow::Result<Figures> {
    let name = "backlog";
    let files = ctx.files.unwrap_or(1).max(1);
    let mut stage = Stage::new(ctx, name)?;
    let mut gen = LineGen::new(9, ctx.line_bytes);
    let backlog_bytes = ctx.backlog_mb * 1_000_000;
    let shipped_bytes = backlog_bytes / 6;
    let per_line = ctx.line_bytes.unwrap_or(150) as u64;

    let (mut first_lines, mut first_bytes) = (0, 0);
    for i in 0..files {
        let lines = (shipped_bytes / per_line / files as u64).max(1);
        first_bytes += write_file(&stage.log_file(i), &mut gen, lines)?;
        first_lines += lines;
    }
    let tally = stage.tally(ctx)?;
    let mut agent = stage.spawn_agent(ctx)?;
    tally.wait_for(&mut agent, first_lines)?;
    if !stage.checkpoint_at_end(Duration::from_secs(10)) {
        bail!("first run: the checkpoint did not reach the end of the files");
    }
    if !agent.stop(STOP_GRACE) {
        bail!(
            "first run: the agent did not stop on SIGTERM; log tail:\n{}",
            agent.log_tail(20)
        );
    }

    let (mut lines, mut bytes) = (0, 0);
    for i in 0..files {
        let n = (backlog_bytes / per_line / files as u64).max(1);
        bytes += write_file(&stage.log_file(i), &mut gen, n)?;
        lines += n;
    }
    let started = Instant::now();
    let mut agent = stage.spawn_agent(ctx)?;
    let (done, cpu) = tally.wait_for(&mut agent, first_lines + lines)?;
    let mut f = figures(ctx, name, files, lines, bytes, done - started, cpu);
    f.peak_rss_mib = status_mib(agent.pid(), "VmHWM:")?;
    let read = read_chars(agent.pid())?;
    f.read_bytes = Some(read);
    // Re-reading the shipped part would add its size on top of the backlog's.
    f.rescanned = Some(read >= bytes + first_bytes / 2);
    let counts = tally.settled(first_lines)?;
    f.records = counts;
    f.complete = exact(counts, lines)
        && stage.checkpoint_at_end(Duration::from_secs(5))
        && f.rescanned == Some(false);
    f.note = format!(
        "restart after {:.0} MB shipped; backlog {:.0} MB",
        first_bytes as f64 / 1e6,
        bytes as f64 / 1e6
    );
    agent.stop(STOP_GRACE);
    Ok(f)
}

/// The agent's open-file cap in the many-file scenarios: the default 4,096 would leave files unopened.
const MANY_FILES: [(&str, &str); 1] = [("LOGAGENT_TAIL__MAX_OPEN_FILES", "12000")];

/// `glob50k`: 50,000 files under 100 directories (`<logs>/aN/bM/`), an entry `<logs>/**/*.log`
/// matching 5,000 of them (the rest are `.txt`). Once every matched file is shipped and the agent
/// has settled: its CPU share while nothing is written (rescans, polling), RSS, then the time from a
/// new matching file created and written in a deep directory to its line in Kafka (a few samples,
/// at different moments of the rescan tick).
pub fn glob50k(ctx: &Ctx) -> anyhow::Result<Figures> {
    let name = "glob50k";
    let files = ctx.files.unwrap_or(50_000).max(100);
    let per_dir = files / 100;
    let logs_per_dir = (per_dir / 10).max(1);
    let mut stage = Stage::with_pattern(ctx, name, "**/*.log", serde_json::json!({}))?;
    let mut gen = LineGen::new(11, ctx.line_bytes);
    let (mut matched, mut bytes) = (0u64, 0u64);
    let made = Instant::now();
    for a in 0..10 {
        for b in 0..10 {
            let dir = stage.logs.join(format!("a{a}/b{b}"));
            std::fs::create_dir_all(&dir)?;
            for i in 0..per_dir {
                if i < logs_per_dir {
                    bytes += write_file(&dir.join(format!("app-{i:03}.log")), &mut gen, 1)?;
                    matched += 1;
                } else {
                    write_file(&dir.join(format!("other-{i:03}.txt")), &mut gen, 1)?;
                }
            }
        }
    }
    eprintln!(
        "  {name}: {} files written in {:.1} s, {matched} match",
        per_dir * 100,
        made.elapsed().as_secs_f64()
    );
    let tally = stage.tally(ctx)?;
    let started = Instant::now();
    let mut agent = stage.spawn_agent_with(ctx, &MANY_FILES)?;
    let (done, cpu) = tally.wait_for(&mut agent, matched)?;
    let mut f = figures(
        ctx,
        name,
        per_dir * 100,
        matched,
        bytes,
        done - started,
        cpu,
    );

    // Start-up done (every tailer caught up): then the idle cost.
    std::thread::sleep(Duration::from_secs(5));
    let secs = ctx.idle_secs.max(3);
    // Agents built before the discovery metrics existed: figures without them.
    let discovery = || {
        Some((
            stage.metric("logagent_discovery_seconds_total").ok()?,
            stage.metric("logagent_discovery_dirs_listed_total").ok()?,
        ))
    };
    let disc0 = discovery();
    let cpu0 = cpu_seconds(agent.pid())?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let idle_cpu = cpu_seconds(agent.pid())? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    f.idle_cpu_pct = Some(100.0 * idle_cpu / wall);
    if let (Some((s0, l0)), Some((s1, l1))) = (disc0, discovery()) {
        f.discovery_cpu_pct = Some(100.0 * (s1 - s0) / wall);
        f.dirs_listed_per_s = Some((l1 - l0) / wall);
    }
    f.rss_mib = Some(status_mib(agent.pid(), "VmRSS:")?);

    // New files in deep directories, created at spread moments of the 1 s rescan tick.
    let mut target = matched;
    let mut buf = Vec::with_capacity(512);
    for k in 0..5u32 {
        std::thread::sleep(Duration::from_millis(1000 + 237 * u64::from(k)));
        let path = stage.logs.join(format!("a7/b{k}/new-{k}.log"));
        buf.clear();
        gen.line(&mut buf);
        let written = {
            let mut file = std::fs::File::create(&path)?;
            std::io::Write::write_all(&mut file, &buf)?;
            Instant::now()
        };
        target += 1;
        let (arrived, _) = tally.wait_for(&mut agent, target)?;
        f.new_file_ms
            .push(arrived.saturating_duration_since(written).as_secs_f64() * 1e3);
    }
    f.peak_rss_mib = status_mib(agent.pid(), "VmHWM:")?;
    let counts = tally.settled(0)?;
    f.records = counts;
    f.complete = exact(counts, target) && stage.checkpoint_at_end(Duration::from_secs(5));
    f.note = format!(
        "{} files in 100 dirs, {matched} matching **/*.log; idle {secs} s after start-up + 5 s",
        per_dir * 100
    );
    agent.stop(STOP_GRACE);
    Ok(f)
}

/// `startup10k`: 10,000 files shipped and checkpointed by a first run; the agent is started again and
/// timed until every file is open (`logagent_files_open`); no line may be shipped twice.
pub fn startup10k(ctx: &Ctx) -> anyhow::Result<Figures> {
    let name = "startup10k";
    let files = ctx.files.unwrap_or(10_000).max(1);
    let mut stage = Stage::new(ctx, name)?;
    let mut gen = LineGen::new(13, ctx.line_bytes);
    let mut bytes = 0;
    for i in 0..files {
        bytes += write_file(&stage.log_file(i), &mut gen, 1)?;
    }
    let lines = files as u64;
    let tally = stage.tally(ctx)?;
    let mut agent = stage.spawn_agent_with(ctx, &MANY_FILES)?;
    tally.wait_for(&mut agent, lines)?;
    if !stage.checkpoint_at_end(Duration::from_secs(15)) {
        bail!("first run: the checkpoint did not reach the end of every file");
    }
    if !agent.stop(STOP_GRACE) {
        bail!(
            "first run: the agent did not stop on SIGTERM; log tail:\n{}",
            agent.log_tail(20)
        );
    }

    let started = Instant::now();
    let mut agent = stage.spawn_agent_with(ctx, &MANY_FILES)?;
    let resumed = loop {
        if stage
            .metric("logagent_files_open")
            .is_ok_and(|n| n >= files as f64)
        {
            break started.elapsed();
        }
        if agent.exited() {
            bail!("restarted agent exited; log tail:\n{}", agent.log_tail(20));
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "not every file open 120 s after the restart ({:?} open)",
                stage.metric("logagent_files_open").ok()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = cpu_seconds(agent.pid())?;
    let mut f = figures(ctx, name, files, lines, bytes, resumed, cpu);
    f.resumed_s = Some(resumed.as_secs_f64());
    // Anything re-read would reach the topic within a few seconds.
    std::thread::sleep(Duration::from_secs(5));
    f.peak_rss_mib = status_mib(agent.pid(), "VmHWM:")?;
    f.rss_mib = Some(status_mib(agent.pid(), "VmRSS:")?);
    f.read_bytes = Some(read_chars(agent.pid())?);
    let counts = tally.settled(0)?;
    f.records = counts;
    f.rescanned = Some(counts != lines);
    f.complete = exact(counts, lines) && stage.checkpoint_at_end(Duration::from_secs(5));
    f.note = format!("restart with {files} files checkpointed at their end; wall = until all open");
    agent.stop(STOP_GRACE);
    Ok(f)
}
