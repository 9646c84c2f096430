//! The agent stays responsive whatever the collected paths do: a file whose open or read blocks (here
//! FIFOs without a writer, more of them than the runtime has worker threads) must not stop `/healthz`
//! or the status lease in etcd, nor the other files, nor the clean shutdown.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{agent_config, append_lines, bin, free_port, wait_for, Agent, Etcd, Storage, Tansu};

const TOPIC: &str = "safety_log";
const WAIT: Duration = Duration::from_secs(60);

/// `GET path` from the agent's endpoint; `None` when it does not answer within 2 s.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    support::http_get(port, path, Duration::from_secs(2)).await
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_in_the_collected_paths_do_not_stop_healthz_the_status_lease_or_other_files(
) -> anyhow::Result<()> {
    const IP: &str = "10.20.30.71";
    let status_key = format!("logagent/status/{IP}");
    let (etcd, kafka) = tokio::try_join!(Etcd::start(), Tansu::start(Storage::Memory))?;
    kafka.create_topic(TOPIC, 1).await?;
    let dir = tempfile::tempdir()?;
    // One entry per FIFO, so that each has its own discoverer task: more of them than the agent's
    // main runtime has worker threads (one per core).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let fifos: Vec<PathBuf> = (0..cores * 2 + 2)
        .map(|i| dir.path().join(format!("pipe-{i}.log")))
        .collect();
    for f in &fifos {
        mkfifo(f);
    }
    let log = dir.path().join("app.log");
    append_lines(&log, &["a regular line"; 20])?;
    let size = std::fs::metadata(&log)?.len();
    let fifo_count = fifos.len();
    let mut entries: Vec<serde_json::Value> = fifos
        .iter()
        .map(|f| serde_json::json!({"path": f, "topic": TOPIC}))
        .collect();
    entries.push(serde_json::json!({"path": log, "topic": TOPIC}));
    etcd.put(
        &format!("collect_log_conf/{IP}"),
        &serde_json::Value::Array(entries).to_string(),
    )
    .await?;

    let port = free_port();
    let config = agent_config(
        &dir.path().join("state"),
        &etcd.endpoint(),
        &kafka.bootstrap(),
        IP,
    )
    .replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""));
    let env = [
        ("LOGAGENT_ETCD__STATUS_INTERVAL_MS", "500"),
        ("LOGAGENT_ETCD__STATUS_LEASE_TTL_MS", "2000"),
    ];
    let mut agent = Agent::start_with_env(&bin(), &config, &env)?;

    // The regular file is read and acknowledged, and the FIFOs are reported, in the status in etcd.
    let status = wait_for(
        "the status key to show app.log acknowledged and every FIFO reported (agent stuck?)",
        WAIT,
        || {
            let (etcd, key, log) = (&etcd, &status_key, &log);
            async move {
                let v: serde_json::Value =
                    serde_json::from_str(&etcd.get(key).await.ok()??).ok()?;
                let entries = v["entries"].as_array()?;
                let app = entries
                    .iter()
                    .find(|e| e["path"] == log.to_string_lossy().as_ref())?;
                let fifo_errors = entries
                    .iter()
                    .filter(|e| {
                        e["last_error"]
                            .as_str()
                            .is_some_and(|s| s.contains("not a regular file"))
                    })
                    .count();
                (app["files"][0]["acked_offset"] == size && fifo_errors == fifo_count).then_some(v)
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log tail:\n{}", tail(&agent.log_contents())))?;
    assert_eq!(status["ip"], IP);

    // For three lease TTLs: /healthz answers every time, and the status key (bound to a 2 s lease)
    // stays, so the keep-alives kept flowing.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let health = get(port, "/healthz").await;
        assert!(
            health.as_ref().is_some_and(|(c, _)| *c == 200),
            "/healthz did not answer 200 within 2 s at {:?}: {health:?}",
            start.elapsed()
        );
        let key = tokio::time::timeout(Duration::from_secs(5), etcd.get(&status_key))
            .await
            .map_err(|_| anyhow::anyhow!("etcd get of the status key hung for 5 s"))??;
        assert!(
            key.is_some(),
            "status key gone at {:?}: its lease was not kept alive",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Nothing is stuck on the FIFOs at shutdown either.
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
