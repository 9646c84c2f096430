//! Hosts with many mostly idle files (issue 13): a file idle for `tail.close_inactive_ms`, every
//! byte acknowledged, is closed, and opened again when its path changes — the same file resuming
//! where it stopped, another file under the path from 0, a file renamed away while closed found by
//! its identity — with nothing lost and nothing sent twice. Against real etcd and tansu.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{append_lines, bin, lines, wait_until, Agent, World};

const IP: &str = "10.20.30.60";
const TOPIC: &str = "fleet_files";
/// Upper bound for every wait; none of them is a speed assertion.
const WAIT: Duration = Duration::from_secs(60);

/// Whether process `pid` has a descriptor open on `path`.
fn holds_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

async fn wait_closed(agent: &Agent, path: &Path) -> anyhow::Result<()> {
    let pid = agent.pid().expect("agent running");
    wait_until(
        &format!("the agent to close idle {}", path.display()),
        WAIT,
        || {
            let open = holds_open(pid, path);
            async move { !open }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_files_are_closed_and_opened_again_when_their_path_changes() -> anyhow::Result<()> {
    let w = World::start(IP, &[TOPIC], 1).await?;
    let log = w.log("app.log");
    append_lines(&log, &lines("a", 0..10))?;
    w.put(&[(&w.logs_dir().join("*.log"), TOPIC)]).await?;
    let env = [
        ("LOGAGENT_TAIL__CLOSE_INACTIVE_MS", "1000"),
        ("LOGAGENT_TAIL__GLOB_RESCAN_MS", "200"),
    ];
    let mut agent = Agent::start_with_env(&bin(), &w.config(), &env)?;
    assert_eq!(w.texts(TOPIC, 10).await?, lines("a", 0..10));
    wait_closed(&agent, &log).await?;

    // Written while closed: opened again, resumed where it stopped.
    append_lines(&log, &lines("a", 10..20))?;
    assert_eq!(
        w.texts(TOPIC, 20).await?,
        lines("a", 0..20),
        "reopened at the acknowledged offset"
    );
    wait_closed(&agent, &log).await?;

    // Replaced while closed: another file under the path is read from 0.
    std::fs::remove_file(&log)?;
    append_lines(&log, &lines("b", 0..5))?;
    let mut want = lines("a", 0..20);
    want.extend(lines("b", 0..5));
    assert_eq!(
        w.texts(TOPIC, 25).await?,
        want,
        "the new file from its start"
    );
    wait_closed(&agent, &log).await?;

    // Written and renamed away while closed (logrotate's create): its last lines still ship, and
    // the new file under the path too.
    append_lines(&log, &lines("b", 5..8))?;
    let rotated = w.log("app.log.1");
    std::fs::rename(&log, &rotated)?;
    append_lines(&log, &lines("c", 0..3))?;
    let got = w.texts(TOPIC, 31).await?;
    want.extend(lines("b", 5..8));
    want.extend(lines("c", 0..3));
    let mut sorted_got = got.clone();
    sorted_got.sort();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    assert_eq!(sorted_got, sorted_want, "every line once: {got:?}");

    let log_text = agent.log_contents();
    assert!(
        log_text.contains("closed idle file"),
        "the close is logged:\n{log_text}"
    );
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_open_files_the_slots_go_round_the_files_with_data() -> anyhow::Result<()> {
    let w = World::start(IP, &[TOPIC], 1).await?;
    let names: Vec<String> = (0..5).map(|i| format!("f{i}.log")).collect();
    for (i, n) in names.iter().enumerate() {
        append_lines(&w.log(n), &lines(&format!("f{i} first"), 0..50))?;
    }
    w.put(&[(&w.logs_dir().join("*.log"), TOPIC)]).await?;
    // Two slots for five files, and no closing for inactivity: only making room can ship them all.
    let env = [
        ("LOGAGENT_TAIL__MAX_OPEN_FILES", "2"),
        ("LOGAGENT_TAIL__GLOB_RESCAN_MS", "200"),
    ];
    let mut agent = Agent::start_with_env(&bin(), &w.config(), &env)?;
    let mut want: Vec<String> = (0..5)
        .flat_map(|i| lines(&format!("f{i} first"), 0..50))
        .collect();
    let mut got = w.texts_within(TOPIC, want.len(), WAIT).await?;
    got.sort();
    want.sort();
    assert_eq!(got, want, "every file shipped once through two slots");

    // Again, with every file written once more: the closed ones are opened again as slots free up.
    for (i, n) in names.iter().enumerate() {
        append_lines(&w.log(n), &lines(&format!("f{i} second"), 0..20))?;
    }
    want.extend((0..5).flat_map(|i| lines(&format!("f{i} second"), 0..20)));
    let mut got = w.texts_within(TOPIC, want.len(), WAIT).await?;
    got.sort();
    want.sort();
    assert_eq!(got, want, "the second round too, nothing twice");
    let pid = agent.pid().expect("agent running");
    let open = names.iter().filter(|n| holds_open(pid, &w.log(n))).count();
    assert!(open <= 2, "{open} files open with max_open_files = 2");
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}
