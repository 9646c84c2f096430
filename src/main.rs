//! The `logagent` command: run the agent, validate a config, show fleet status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use logagent::config::settings::{self, Settings};
use logagent::ops::fleet;

use logagent::config::reload;

const DEFAULT_CONFIG: &str = "/etc/logagent/logagent.toml";

#[derive(Parser)]
#[command(
    name = "logagent",
    version,
    about = "Tails the log files etcd assigns to this host into Kafka"
)]
struct Cli {
    /// Local configuration file (TOML); LOGAGENT_SECTION__KEY environment variables override it.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG, env = "LOGAGENT_CONFIG")]
    config: PathBuf,
    /// Log format: overrides `log.format` from the config.
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Compact,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Check the configuration file and print every problem at once.
    Validate,
    /// Print the status every live agent publishes to etcd, as a table.
    Status {
        /// Only the host with this IP (or hostname).
        #[arg(long)]
        host: Option<String>,
    },
    /// Print what an entry would produce (values, then headers as `# key=value` lines), without
    /// Kafka or a checkpoint: `--entry '<JSON>'`, or every entry of this host's etcd value.
    Preview {
        /// One collect entry as JSON; without it, this host's entries are read from etcd once.
        #[arg(long)]
        entry: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        lines: Option<usize>,
        /// Keep printing what is appended, until interrupted.
        #[arg(long)]
        follow: bool,
    },
}

/// Installs the subscriber; the returned handle lets SIGHUP swap the filter, and the flag says a
/// valid `RUST_LOG` chose it (it then keeps winning over `log.level`).
fn init_logging(s: &Settings, cli: Option<CliLogFormat>) -> (reload::FilterHandle, bool) {
    use tracing_subscriber::{fmt, prelude::*, EnvFilter};
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        from_env.unwrap_or_else(|| EnvFilter::new(&s.log.level)),
    );
    let json = match cli {
        Some(CliLogFormat::Json) => true,
        Some(CliLogFormat::Compact) => false,
        None => s
            .log
            .format
            .is_json(std::env::var_os("JOURNAL_STREAM").is_some()),
    };
    let layer = fmt::layer().with_writer(std::io::stderr);
    let layer = if json {
        layer.json().flatten_event(true).boxed()
    } else {
        layer
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
    (handle, pinned)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logagent: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate => match settings::load(&cli.config) {
            Ok(_) => {
                println!("{}: ok", cli.config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: invalid\n{e}", cli.config.display());
                Ok(ExitCode::from(2))
            }
        },
        Command::Status { host } => {
            let s = settings::load(&cli.config)
                .with_context(|| format!("configuration {}", cli.config.display()))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rows = rt.block_on(fleet::fetch(&s.etcd, host.as_deref()))?;
            let prefix = fleet::status_prefix(&s.etcd.status_key_template);
            if rows.is_empty() {
                match host {
                    Some(h) => eprintln!("no live agent {h} under {prefix:?}"),
                    None => eprintln!("no live agent under {prefix:?}"),
                }
                return Ok(ExitCode::from(1));
            }
            print!("{}", fleet::render_table(&rows, logagent::clock::now_ms()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Preview {
            entry,
            lines,
            follow,
        } => preview(&cli.config, entry, lines, follow),
        Command::Run => {
            let s = settings::load(&cli.config)
                .with_context(|| format!("configuration {}", cli.config.display()))?;
            let (filter, pinned) = init_logging(&s, cli.log_format);
            let reloader = reload::Reloader::new(cli.config.clone(), filter, pinned);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone(), reloader));
                logagent::app::run(s, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `logagent preview`: the entry given, or this host's entries from etcd (read once); the local
/// config (when there is one) gives the tail settings, host name, IP and read policy.
fn preview(
    config: &std::path::Path,
    entry: Option<String>,
    lines: Option<usize>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    use logagent::config::collect::{parse_entries, EntryLimits};
    let s = if entry.is_none() || config.exists() {
        settings::load(config).with_context(|| format!("configuration {}", config.display()))?
    } else {
        settings::load_from_str("", &[]).context("default configuration")?
    };
    let limits = EntryLimits {
        max_line_bytes: s.tail.max_line_bytes_limit,
        influxdb: s.influxdb.is_some(),
    };
    let (ip, _) = logagent::config::host::agent_ip(s.agent.ip)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let entries = match entry {
        Some(json) => parse_entries("--entry", 0, format!("[{json}]").as_bytes(), &limits)?,
        None => {
            let key = settings::EtcdSettings::render_key(
                &s.etcd.key_template,
                &ip.to_string(),
                &s.agent.hostname,
            );
            let value = rt.block_on(async {
                let mut client = logagent::config::etcd::connect(&s.etcd).await?;
                let got = client.get(key.as_str(), None).await?;
                anyhow::Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
            })?;
            let Some(value) = value else {
                eprintln!("etcd has no key {key}: nothing to preview");
                return Ok(ExitCode::from(1));
            };
            parse_entries(&key, 0, &value, &limits)?
        }
    };
    let t = &s.tail;
    let preview = logagent::ops::preview::Preview {
        entries,
        hostname: s.agent.hostname.clone(),
        ip: ip.to_string(),
        tail: logagent::tail::TailOptions::from_settings(t),
        policy: logagent::config::read_policy::ReadPolicy::from_settings(&s),
        max_records: lines,
        follow,
    };
    let printed = rt.block_on(async move {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        preview.run(&mut out, stop).await
    })?;
    eprintln!("{printed} records");
    Ok(ExitCode::SUCCESS)
}

/// The only place that touches OS signals: the first SIGTERM/SIGINT starts the ordered shutdown, a
/// second one exits at once (offsets on disk only ever hold acknowledged positions, so that is safe).
/// SIGHUP reloads the config file (see `reload`).
async fn signals(shutdown: CancellationToken, mut reloader: reload::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                reloader.reload_and_log();
                continue;
            }
        }
        seen += 1;
        if seen == 1 {
            info!("signal received: shutting down (send it again to exit at once)");
            shutdown.cancel();
        } else {
            warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
}
