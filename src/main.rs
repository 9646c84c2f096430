//! The `logagent` command: run the agent, validate a config, show fleet status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use logagent::fleet;
use logagent::settings::{self, LogFormat, Settings};

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
}

fn init_logging(s: &Settings, cli: Option<CliLogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&s.log.level));
    let json = match cli {
        Some(CliLogFormat::Json) => true,
        Some(CliLogFormat::Compact) => false,
        None => matches!(s.log.format, LogFormat::Json),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.compact()
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
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
            print!(
                "{}",
                fleet::render_table(&rows, logagent::registry::now_ms())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let s = settings::load(&cli.config)
                .with_context(|| format!("configuration {}", cli.config.display()))?;
            init_logging(&s, cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone()));
                logagent::app::run(s, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The only place that touches OS signals: the first SIGTERM/SIGINT starts the ordered shutdown, a
/// second one exits at once (offsets on disk only ever hold acknowledged positions, so that is safe).
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
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
