//! End-to-end benchmark of the release agent: lines/s, MB/s, CPU-s per million lines, peak RSS.
//!
//! ```text
//! cargo run --release --example bench -- [--scenario hot|ten|idle1000|floor1000|backlog|glob50k|startup10k|wide|json|gbk|hostmetrics|all] [--files K]
//!     [--lines N] [--line-bytes B] [--broker mock|tansu]
//! ```
//!
//! Each scenario writes nginx-like lines into files in a temp dir, starts the Kafka endpoint (the
//! librdkafka mock cluster in this process, or a tansu broker with memory storage), puts the collect
//! entry into a spawned etcd, runs `target/release/logagent` as a separate process and measures it
//! from /proc until a consumer has read every line back. Figures are printed, never judged: the
//! machines this runs on are noisy. The agent inherits the environment, so `LOGAGENT_*` variables
//! (e.g. `LOGAGENT_KAFKA__LINGER_MS=20`) compare settings without editing anything.

mod floor;
mod gen;
mod hostmetrics;
mod probe;
mod scenario;
mod services;
// The tests' kit: the same etcd and tansu starters as the integration tests.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use scenario::{Ctx, Figures};
use services::{BrokerKind, Etcd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One file, 2M lines.
    Hot,
    /// Ten files, 2M lines in all.
    Ten,
    /// 1,000 files, each written one line per second.
    Idle1000,
    /// 10,000 files, each written one line every 10 s.
    Idle10000,
    /// idle1000's trickle read by a reader that makes only the system calls a tailer cannot avoid.
    Floor1000,
    /// Restart with a backlog after part of the file was shipped.
    Backlog,
    /// 400 files of ~600 KB: RSS once every file is shipped and the agent idles.
    Wide,
    /// Only a host_metrics entry: CPU % of a core at the 10 s interval, and RSS.
    Hostmetrics,
    /// 50,000 files under 100 directories, `**/*.log` matching 5,000: idle CPU, new-file pick-up.
    Glob50k,
    /// Restart with 10,000 files checkpointed: time until all are open again, no re-read.
    Startup10k,
    /// `hot`, then the same file as JSON envelopes with id, host and path headers.
    Json,
    /// `hot`, then one file of GBK lines decoded to UTF-8.
    Gbk,
    All,
}

#[derive(Parser)]
#[command(about = "End-to-end benchmark of the release logagent binary")]
struct Cli {
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Number of files (default per scenario: 1, 10, 1000, 1, 400; glob50k 50,000; startup10k 10,000).
    #[arg(long)]
    files: Option<usize>,
    /// Lines in all for hot and ten (default 2,000,000).
    #[arg(long)]
    lines: Option<u64>,
    /// Every line exactly this many bytes, newline included (default: 100–300, about 150).
    #[arg(long)]
    line_bytes: Option<usize>,
    #[arg(long, value_enum, default_value = "mock")]
    broker: BrokerKind,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Seconds of trickle writes in idle1000.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Megabytes appended while the agent is down in backlog (a sixth of it is shipped first).
    #[arg(long, default_value_t = 300)]
    backlog_mb: u64,
    /// The agent binary; default: build and use target/release/logagent.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Where the JSON figures go; default: target/bench/latest.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep each scenario's temp dir (files, checkpoint, agent logs) for inspection.
    #[arg(long)]
    keep: bool,
    /// Internal: run as floor1000's reader over this directory.
    #[arg(long, hide = true)]
    floor_reader: Option<PathBuf>,
}

/// The cargo target dir this example was built into (`<target>/<profile>/examples/bench`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .ancestors()
        .nth(3)
        .context("benchmark binary is not inside a cargo target dir")?;
    Ok(dir.to_path_buf())
}

/// What `cargo run` sets for the program it runs, as it sets them for a package's build script.
/// Build scripts (ring's, through cc) ask to be run again when these change: passed on to the
/// nested build, they made every `make bench` compile ring, rustls, tonic, etcd-client and the
/// agent again, twice (5–6 minutes a run), against the plain `cargo build` before it.
fn set_by_cargo_run(key: &std::ffi::OsStr) -> bool {
    let key = key.to_string_lossy();
    key.starts_with("CARGO_PKG_")
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "OUT_DIR",
        ]
        .contains(&key.as_ref())
}

fn build_agent(target: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release agent …");
    let mut build = Command::new(cargo);
    for (key, _) in std::env::vars_os().filter(|(k, _)| set_by_cargo_run(k)) {
        build.env_remove(key);
    }
    let status = build
        .args(["build", "--release", "--bin", "logagent", "--target-dir"])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release --bin logagent failed");
    }
    Ok(target.join("release/logagent"))
}

fn print(f: &Figures) {
    let mut line = format!(
        "{:<9} {:<5} files={:<5} lines={:<8} {:>10.0} lines/s {:>7.1} MB/s {:>6.2} CPU-s/M lines {:>6.1} MiB peak RSS",
        f.scenario, f.broker, f.files, f.lines, f.lines_per_s, f.mb_per_s, f.cpu_s_per_m_lines, f.peak_rss_mib
    );
    if let Some(rss) = f.rss_mib {
        line.push_str(&format!("  RSS now {rss:.1} MiB"));
    }
    if let Some(pct) = f.idle_cpu_pct {
        line.push_str(&format!("  idle CPU {pct:.2} % of a core"));
    }
    if let Some(r) = f.requests_per_s {
        line.push_str(&format!("  {r:.1} Kafka requests/s"));
    }
    match (f.discovery_cpu_pct, f.dirs_listed_per_s) {
        (Some(pct), Some(listed)) => line.push_str(&format!(
            " (discovery {pct:.2} %, {listed:.1} dirs listed/s)"
        )),
        (Some(pct), None) => line.push_str(&format!(" (discovery {pct:.2} %)")),
        _ => {}
    }
    if !f.new_file_ms.is_empty() {
        let ms: Vec<String> = f.new_file_ms.iter().map(|m| format!("{m:.0}")).collect();
        line.push_str(&format!(
            "  new file's line in Kafka {} ms after written",
            ms.join("/")
        ));
    }
    if let Some(s) = f.resumed_s {
        line.push_str(&format!("  all files open {s:.2} s after start"));
    }
    if let Some(ms) = f.pickup_ms {
        line.push_str(&format!("  last line in Kafka {ms:.0} ms after written"));
    }
    if let (Some(read), Some(re)) = (f.read_bytes, f.rescanned) {
        line.push_str(&format!(
            "  read {:.0} MB{}",
            read as f64 / 1e6,
            if re { " RE-SCANNED" } else { " (no re-scan)" }
        ));
    }
    if let Some(r) = f.busy_lines_per_s {
        line.push_str(&format!("  {:.2} M lines/s busy (10–90 %)", r / 1e6));
    }
    if let Some(s) = f.read_back_s {
        line.push_str(&format!("  read back by a consumer in {s:.1} s"));
    }
    line.push_str(&format!(
        "  [wall {:.2} s, agent CPU {:.2} s, {} records{}{}]",
        f.wall_s,
        f.cpu_s,
        f.records,
        if f.complete {
            ", complete"
        } else {
            ", INCOMPLETE"
        },
        f.broker_cpu_s
            .map(|b| format!(", broker CPU {b:.2} s"))
            .unwrap_or_default(),
    ));
    println!("{line}");
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let target = target_dir()?;
    let agent_bin = match &cli.agent {
        // The agent runs in each scenario's temp dir.
        Some(p) => {
            std::fs::canonicalize(p).with_context(|| format!("agent binary {}", p.display()))?
        }
        None => build_agent(&target)?,
    };
    let etcd_dir = tempfile::Builder::new()
        .prefix("logagent-bench-etcd-")
        .tempdir()?;
    let ctx = Ctx {
        agent_bin,
        broker: cli.broker,
        partitions: cli.partitions,
        etcd: Etcd::start(etcd_dir.path())?,
        line_bytes: cli.line_bytes,
        files: cli.files,
        lines: cli.lines,
        idle_secs: cli.idle_secs,
        backlog_mb: cli.backlog_mb,
        keep: cli.keep,
    };
    let chosen = match cli.scenario {
        Scenario::All => vec![
            Scenario::Hot,
            Scenario::Ten,
            Scenario::Idle1000,
            Scenario::Floor1000,
            Scenario::Idle10000,
            Scenario::Backlog,
            Scenario::Glob50k,
            Scenario::Startup10k,
            Scenario::Wide,
            Scenario::Hostmetrics,
            Scenario::Json,
            Scenario::Gbk,
        ],
        // Next to the raw scenario they are compared with.
        Scenario::Json => vec![Scenario::Hot, Scenario::Json],
        Scenario::Gbk => vec![Scenario::Hot, Scenario::Gbk],
        s => vec![s],
    };
    let mut results = Vec::new();
    let mut all_ok = true;
    for s in chosen {
        let r = match s {
            Scenario::Hot => scenario::throughput(&ctx, "hot", 1),
            Scenario::Ten => scenario::throughput(&ctx, "ten", 10),
            Scenario::Idle1000 => {
                scenario::idle(&ctx, "idle1000", 1000, std::time::Duration::from_secs(1))
            }
            Scenario::Idle10000 => scenario::idle(
                &ctx,
                "idle10000",
                10_000,
                std::time::Duration::from_secs(10),
            ),
            Scenario::Floor1000 => floor::run(&ctx),
            Scenario::Backlog => scenario::backlog(&ctx),
            Scenario::Glob50k => scenario::glob50k(&ctx),
            Scenario::Startup10k => scenario::startup10k(&ctx),
            Scenario::Wide => scenario::wide(&ctx),
            Scenario::Hostmetrics => hostmetrics::run(&ctx),
            Scenario::Json => scenario::json(&ctx),
            Scenario::Gbk => scenario::gbk(&ctx),
            Scenario::All => unreachable!("expanded above"),
        };
        match r {
            Ok(f) => {
                print(&f);
                all_ok &= f.complete;
                results.push(f);
            }
            Err(e) => {
                println!("{:<9} FAILED: {e:#}", format!("{s:?}").to_lowercase());
                all_ok = false;
            }
        }
    }
    // Record options against the raw path: CPU per line relative to `hot`.
    if let Some(hot) = results.iter().find(|f| f.scenario == "hot") {
        for f in results
            .iter()
            .filter(|f| f.scenario == "json" || f.scenario == "gbk")
        {
            println!(
                "{:<9} {:.2} CPU-s/M lines = {:.2}x raw ({:.2} CPU-s/M lines)",
                f.scenario,
                f.cpu_s_per_m_lines,
                f.cpu_s_per_m_lines / hot.cpu_s_per_m_lines,
                hot.cpu_s_per_m_lines
            );
        }
    }
    let out = cli.out.unwrap_or_else(|| target.join("bench/latest.json"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let doc = serde_json::json!({
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "commit": commit,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "results": results,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc)? + "\n")?;
    eprintln!("figures written to {}", out.display());
    Ok(all_ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.floor_reader {
        return match floor::reader(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor reader: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        // Incomplete deliveries are correctness failures, not slowness: they fail the run.
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
