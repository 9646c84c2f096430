//! Delivery across crashes, stops and rotations, against a real etcd and a real broker (tansu),
//! with the agent binary as a separate process (issue 3, "Done when"):
//!
//! - kill -9 while ~200k lines are written to three files rotated by rename (logrotate `create`),
//!   one rotation happening while the agent is down;
//! - the same with copytruncate rotations;
//! - SIGTERM, a rename rotation while the agent is stopped (plus lines the application still writes
//!   into the renamed file), and a restart: the remainder is shipped and its record then forgotten.
//!
//! Every line is exactly `LINE_LEN` bytes, so a byte offset in a file is a line number, and ends with
//! its file's letter and its sequence number, so every record names the line it carries.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use support::{
    bin, checkpoint_records, consume, consume_for, lines_read_and_acked, wait_for, wait_until,
    Agent, CheckpointRecord as Record, Consumed, World,
};

const IP: &str = "10.20.30.41";
const TOPIC: &str = "delivery";
/// Length of every line, its newline included.
const LINE_LEN: u64 = 64;
const NAMES: [char; 3] = ['a', 'b', 'c'];
/// Lines appended to each file per writer step, and the pause between steps: ~50k lines/s in all.
const CHUNK: u64 = 250;
const PACE: Duration = Duration::from_millis(15);
/// Lines appended to each file before a kill, so that it can land with lines Kafka acknowledged
/// but the checkpoint does not cover yet (appended again until it does).
const BURST: u64 = 1000;
/// Upper bound for every wait on the agent; none of them is a speed assertion.
const WAIT: Duration = Duration::from_secs(60);

/// Line `seq` of file `name`, newline included. The unique part is at the end, so the 32 bytes
/// before any line boundary (what the agent's tail hash covers) differ from one line to the next.
fn line(name: char, seq: u64) -> String {
    let l = format!("{name} {:-<49} {name}{seq:010}\n", "payload");
    debug_assert_eq!(l.len() as u64, LINE_LEN);
    l
}

/// The file letter and sequence number a record carries.
fn parse(value: &[u8]) -> Option<(char, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    if text.len() as u64 != LINE_LEN - 1 {
        return None;
    }
    let tail = &text[text.len() - 11..];
    let name = tail.chars().next()?;
    Some((name, tail[1..].parse().ok()?))
}

type Key = (u64, u64);

fn key_of(path: &Path) -> anyhow::Result<Key> {
    let m = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((m.dev(), m.ino()))
}

/// The agent's checkpoint as it is on disk now, by identity.
fn checkpoint(state_dir: &Path) -> anyhow::Result<HashMap<Key, Record>> {
    Ok(checkpoint_records(state_dir)?
        .into_iter()
        .map(|r| ((r.dev, r.ino), r))
        .collect())
}

/// The checkpoint's tail hash of `path` at `offset`: xxh3 of the (up to) 32 bytes before it, in hex.
fn tail_hash_at(path: &Path, offset: u64) -> anyhow::Result<String> {
    if offset == 0 {
        return Ok(String::new());
    }
    let len = offset.min(32);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset - len))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    Ok(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&buf)))
}

/// The test's log files, and for every inode what its content is: lines of one file, consecutive
/// from a first sequence number, one per `LINE_LEN` bytes.
struct Logs {
    dir: PathBuf,
    next: [u64; 3],
    /// Rotated copies per file so far; `x.log.1` is the newest.
    copies: [u32; 3],
    content: HashMap<Key, (char, u64)>,
}

impl Logs {
    fn create(dir: &Path) -> anyhow::Result<Logs> {
        std::fs::create_dir_all(dir)?;
        let mut logs = Logs {
            dir: dir.to_path_buf(),
            next: [0; 3],
            copies: [0; 3],
            content: HashMap::new(),
        };
        for i in 0..NAMES.len() {
            logs.create_live(i)?;
        }
        Ok(logs)
    }

    fn live(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", NAMES[i]))
    }

    fn copy(&self, i: usize, n: u32) -> PathBuf {
        self.dir.join(format!("{}.log.{n}", NAMES[i]))
    }

    fn live_paths(&self) -> Vec<PathBuf> {
        (0..NAMES.len()).map(|i| self.live(i)).collect()
    }

    /// Lines written per file so far (the same for every file).
    fn per_file(&self) -> u64 {
        self.next[0]
    }

    fn total(&self) -> u64 {
        self.next.iter().sum()
    }

    fn create_live(&mut self, i: usize) -> anyhow::Result<()> {
        let path = self.live(i);
        File::create_new(&path).with_context(|| format!("create {}", path.display()))?;
        self.content
            .insert(key_of(&path)?, (NAMES[i], self.next[i]));
        Ok(())
    }

    /// Appends file `i`'s next `n` lines to `path`, in one write.
    fn append_to(&mut self, i: usize, path: &Path, n: u64) -> anyhow::Result<()> {
        let mut buf = String::with_capacity((n * LINE_LEN) as usize);
        for seq in self.next[i]..self.next[i] + n {
            buf.push_str(&line(NAMES[i], seq));
        }
        OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(buf.as_bytes()))
            .with_context(|| format!("append to {}", path.display()))?;
        self.next[i] += n;
        Ok(())
    }

    fn append_all(&mut self, n: u64) -> anyhow::Result<()> {
        for i in 0..NAMES.len() {
            self.append_to(i, &self.live(i), n)?;
        }
        Ok(())
    }

    /// `x.log.k` → `x.log.k+1` for every copy, oldest first, as logrotate does.
    fn shift_copies(&mut self, i: usize) -> anyhow::Result<()> {
        for n in (1..=self.copies[i]).rev() {
            std::fs::rename(self.copy(i, n), self.copy(i, n + 1))?;
        }
        self.copies[i] += 1;
        Ok(())
    }

    /// logrotate `create`: `x.log` → `x.log.1`, then a new empty `x.log`.
    fn rotate_rename(&mut self, i: usize) -> anyhow::Result<()> {
        self.shift_copies(i)?;
        std::fs::rename(self.live(i), self.copy(i, 1))?;
        self.create_live(i)
    }

    /// logrotate `copytruncate`: copy `x.log` to `x.log.1`, then truncate `x.log` in place.
    fn rotate_copytruncate(&mut self, i: usize) -> anyhow::Result<()> {
        self.shift_copies(i)?;
        let live = self.live(i);
        let content = self.content[&key_of(&live)?];
        std::fs::copy(&live, self.copy(i, 1))?;
        self.content.insert(key_of(&self.copy(i, 1))?, content);
        OpenOptions::new().write(true).open(&live)?.set_len(0)?;
        self.content
            .insert(key_of(&live)?, (NAMES[i], self.next[i]));
        Ok(())
    }

    /// Whether every file the agent reads is checkpointed to its end: every live file has a
    /// record at its size, and so has every other file with a record (a rotated copy being read).
    fn all_checkpointed(&self, state_dir: &Path) -> anyhow::Result<bool> {
        let ck = checkpoint(state_dir)?;
        let live = self.live_paths();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let size = std::fs::metadata(&path)?.len();
            match ck.get(&key_of(&path)?) {
                Some(r) if r.offset != size => return Ok(false),
                None if live.contains(&path) => return Ok(false),
                _ => {}
            }
        }
        Ok(true)
    }

    /// The lines that may be sent twice after a kill -9 now, given the checkpoint on disk.
    ///
    /// A line is sent twice only if it was sent before the kill and is read again after the
    /// restart. Before the kill the agent could only send lines that existed, so below each file's
    /// size now; after the restart it reads each file again from its checkpointed offset — if the
    /// bytes before that offset are still the ones it stored (otherwise, or without a record, from
    /// 0). So the lines of every file between that offset and its size bound the duplicates: they
    /// are the lines read but not acknowledged-and-checkpointed at the kill, at most. (A bound from
    /// the agent's own counters is not possible: a kill -9 leaves none behind.)
    fn at_risk(&self, ck: &HashMap<Key, Record>) -> anyhow::Result<HashSet<(char, u64)>> {
        let mut risk = HashSet::new();
        let live = self.live_paths();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let key = key_of(&path)?;
            let &(name, first) = self
                .content
                .get(&key)
                .with_context(|| format!("{} was not written by the test", path.display()))?;
            let size = std::fs::metadata(&path)?.len();
            let from = match ck.get(&key) {
                Some(r) if r.offset <= size && tail_hash_at(&path, r.offset)? == r.tail_hash => {
                    r.offset
                }
                Some(_) => 0,
                // Without a record, a file is read only at a path an entry names (copytruncate's
                // copies are never read).
                None if live.contains(&path) => 0,
                None => continue,
            };
            risk.extend((from / LINE_LEN..size / LINE_LEN).map(|l| (name, first + l)));
        }
        Ok(risk)
    }
}

/// etcd, tansu, the three files collected by their exact paths, and the agent (with `/metrics`).
async fn start_shipping() -> anyhow::Result<(World, Logs, Agent)> {
    let w = World::start(IP, &[TOPIC], 3).await?;
    let logs = Logs::create(&w.logs_dir())?;
    put_logs(&w, &logs).await?;
    let agent = Agent::start(&bin(), &w.http_config())?;
    Ok((w, logs, agent))
}

/// The seed format: one `{"path","topic"}` per live file (exact paths, no glob).
async fn put_logs(w: &World, logs: &Logs) -> anyhow::Result<()> {
    let live = logs.live_paths();
    let entries: Vec<(&Path, &str)> = live.iter().map(|p| (p.as_path(), TOPIC)).collect();
    w.put(&entries).await?;
    Ok(())
}

/// Waits until the checkpoint holds a record of the file now at each path. Before that, a file
/// renamed away while the agent is down cannot be found again: nothing names it. logrotate's
/// periods are hours, so in practice a file is always recorded before its rotation.
async fn wait_recorded(w: &World, paths: &[PathBuf]) -> anyhow::Result<()> {
    let keys = paths
        .iter()
        .map(|p| key_of(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let state = w.state_dir();
    wait_until(&format!("checkpoint records of {paths:?}"), WAIT, || {
        let ok = checkpoint(&state).is_ok_and(|ck| keys.iter().all(|k| ck.contains_key(k)));
        async move { ok }
    })
    .await
}

/// Waits until the checkpointed offset of the file at `path` satisfies `pred(offset, size)`.
async fn wait_offset(
    w: &World,
    path: &Path,
    what: &str,
    pred: impl Fn(u64, u64) -> bool,
) -> anyhow::Result<()> {
    let key = key_of(path)?;
    let state = w.state_dir();
    wait_until(&format!("{what} ({})", path.display()), WAIT, || {
        let ok = std::fs::metadata(path).is_ok_and(|m| {
            checkpoint(&state)
                .ok()
                .and_then(|ck| ck.get(&key).map(|r| pred(r.offset, m.len())))
                .unwrap_or(false)
        });
        async move { ok }
    })
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rotation {
    Rename,
    CopyTruncate,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Rotate every file (while the agent runs, or while it is down).
    Rotate,
    /// A burst of lines, then SIGKILL: the crash.
    Kill,
    /// SIGTERM and a clean exit.
    Stop,
    /// While stopped: the application writes this many more lines into the file just renamed away
    /// (it keeps its handle until it reopens).
    WriteIntoRenamed(u64),
    Restart,
}

#[derive(Default)]
struct Outcome {
    /// Lines that may arrive twice (none unless the plan kills the agent).
    at_risk: HashSet<(char, u64)>,
    /// Identities of the live files when the agent went down.
    live_when_down: Vec<Key>,
}

/// Writes `per_file` lines to each of the three files, in steps of `CHUNK`, carrying out each
/// step of `plan` once the per-file count reaches its mark.
async fn run_plan(
    w: &World,
    logs: &mut Logs,
    agent: &mut Agent,
    rotation: Rotation,
    per_file: u64,
    plan: &[(u64, Step)],
) -> anyhow::Result<Outcome> {
    let mut plan: VecDeque<(u64, Step)> = plan.iter().copied().collect();
    let mut out = Outcome::default();
    let mut running = true;
    while logs.per_file() < per_file {
        logs.append_all(CHUNK.min(per_file - logs.per_file()))?;
        while let Some(&(_, step)) = plan.front().filter(|(at, _)| logs.per_file() >= *at) {
            plan.pop_front();
            match step {
                Step::Rotate => rotate(w, logs, rotation, running).await?,
                Step::Kill => {
                    let unchecked = kill_with_acked_lines_unchecked(w, logs, agent).await?;
                    running = false;
                    let ck = checkpoint(&w.state_dir())?;
                    out.at_risk = logs.at_risk(&ck)?;
                    out.live_when_down = live_keys(logs)?;
                    eprintln!(
                        "killed at {} lines per file with {unchecked} lines acknowledged by Kafka \
                         but not checkpointed; {} lines unacknowledged or unread",
                        logs.per_file(),
                        out.at_risk.len()
                    );
                    // Otherwise the restart re-sends nothing and the duplicate bound is not tested.
                    assert!(
                        unchecked > 0,
                        "the kill landed with no line acknowledged beyond the checkpoint"
                    );
                    assert!(
                        out.at_risk.len() as u64 >= unchecked,
                        "{unchecked} lines were acknowledged but not checkpointed at the kill, yet \
                         only {} lines are beyond the checkpoint on disk",
                        out.at_risk.len()
                    );
                }
                Step::Stop => {
                    agent.sigterm()?;
                    let status = agent.wait_exit(WAIT).await?;
                    assert!(status.success(), "exit status after SIGTERM: {status}");
                    running = false;
                    out.live_when_down = live_keys(logs)?;
                    // Everything handed to Kafka was acknowledged and checkpointed: a restart must
                    // then send nothing twice.
                    assert!(
                        agent
                            .log_contents()
                            .contains("all records handed to Kafka were acknowledged"),
                        "clean stop did not flush every record"
                    );
                }
                Step::WriteIntoRenamed(n) => {
                    for i in 0..NAMES.len() {
                        logs.append_to(i, &logs.copy(i, 1), n)?;
                    }
                }
                Step::Restart => {
                    agent.restart()?;
                    running = true;
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
    assert!(plan.is_empty(), "plan steps never reached: {plan:?}");
    Ok(out)
}

/// SIGKILLs the agent at a moment when Kafka has acknowledged lines its checkpoint on disk does
/// not cover: the lines a restart sends again, which the duplicate bound is about. Returns how
/// many such lines there were at least.
///
/// From a quiet start (every line acknowledged and checkpointed) the test appends a burst and
/// watches the agent's acknowledged-lines counter; when it has counted more of the burst than the
/// checkpoint covers, the agent is frozen (SIGSTOP), so that its checkpoint can no longer move,
/// the checkpoint is read to confirm it, and the frozen agent is killed. If the checkpoint caught
/// up meanwhile, the agent resumes and the test tries again, with another burst once the last one
/// is all checkpointed.
async fn kill_with_acked_lines_unchecked(
    w: &World,
    logs: &mut Logs,
    agent: &mut Agent,
) -> anyhow::Result<u64> {
    let port = w.http_port;
    wait_recorded(w, &logs.live_paths()).await?;
    // Quiet: nothing left to read or acknowledge, so the counter moves with the bursts only.
    let acked0 = wait_for(
        "every line acknowledged and checkpointed before the kill's burst",
        WAIT,
        || {
            let quiet = logs.all_checkpointed(&w.state_dir()).unwrap_or(false);
            async move {
                let (read, acked) = lines_read_and_acked(port, TOPIC).await?;
                (quiet && read == acked).then_some(acked)
            }
        },
    )
    .await?;
    let live: Vec<(Key, u64)> = logs
        .live_paths()
        .iter()
        .map(|p| Ok((key_of(p)?, std::fs::metadata(p)?.len())))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let (mut bursts, mut tries) = (0u64, 0u64);
    loop {
        // Burst lines the checkpoint on disk covers (the live files keep their identity here).
        let checkpointed = |ck: &HashMap<Key, Record>| -> u64 {
            live.iter()
                .map(|(k, size0)| ck.get(k).map_or(0, |r| r.offset.saturating_sub(*size0)))
                .sum::<u64>()
                / LINE_LEN
        };
        if bursts == 0
            || checkpointed(&checkpoint(&w.state_dir())?) == bursts * BURST * NAMES.len() as u64
        {
            logs.append_all(BURST)?;
            bursts += 1;
        }
        if let Some((_, acked)) = lines_read_and_acked(port, TOPIC).await {
            agent.signal(libc::SIGSTOP)?;
            tries += 1;
            // Frozen: the checkpoint read now is the one the kill leaves.
            let ck = checkpoint(&w.state_dir())?;
            let unchecked = acked
                .saturating_sub(acked0)
                .saturating_sub(checkpointed(&ck));
            if unchecked > 0 {
                agent.sigkill();
                eprintln!(
                    "kill landed after {:?}, {bursts} burst(s) of {BURST} lines per file, {tries} \
                     look(s)",
                    started.elapsed()
                );
                return Ok(unchecked);
            }
            agent.signal(libc::SIGCONT)?;
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "in {WAIT:?} ({bursts} bursts of {BURST} lines per file, {tries} looks) the agent \
             never held lines acknowledged by Kafka beyond its checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn live_keys(logs: &Logs) -> anyhow::Result<Vec<Key>> {
    logs.live_paths().iter().map(|p| key_of(p)).collect()
}

async fn rotate(
    w: &World,
    logs: &mut Logs,
    rotation: Rotation,
    running: bool,
) -> anyhow::Result<()> {
    match rotation {
        Rotation::Rename => {
            if running {
                wait_recorded(w, &logs.live_paths()).await?;
            }
            for i in 0..NAMES.len() {
                logs.rotate_rename(i)?;
            }
        }
        Rotation::CopyTruncate => {
            // Lines the agent has not read when the file is truncated (those written between the
            // copy and the truncate, and any backlog) exist only in the copy, which it does not
            // tail: copytruncate's inherent race (README). So the writer pauses until everything is
            // acknowledged, copies and truncates, and resumes once the agent has seen the
            // truncation: the race is never lost here, and the rest of the behaviour is checked.
            assert!(
                running,
                "copytruncate while the agent is down loses its unread lines"
            );
            let sizes: Vec<u64> = logs
                .live_paths()
                .iter()
                .map(|p| std::fs::metadata(p).map(|m| m.len()))
                .collect::<Result<_, _>>()?;
            for p in logs.live_paths() {
                wait_offset(
                    w,
                    &p,
                    "every line acknowledged before copytruncate",
                    |o, s| o == s,
                )
                .await?;
            }
            for i in 0..NAMES.len() {
                logs.rotate_copytruncate(i)?;
            }
            for (p, size) in logs.live_paths().iter().zip(sizes) {
                wait_offset(w, p, "truncation seen by the agent", |o, _| o < size).await?;
            }
        }
    }
    Ok(())
}

/// Reads the topic back and checks: every line written arrived, nothing else did, and every line
/// that arrived twice is one of `at_risk`, at most twice. Failures show where the copies are and
/// what the agent warned about.
async fn check_delivery(
    w: &World,
    agent: &Agent,
    logs: &Logs,
    at_risk: &HashSet<(char, u64)>,
) -> anyhow::Result<()> {
    let bootstrap = w.bootstrap().to_owned();
    let total = logs.total() as usize;
    let mut got = consume(&bootstrap, TOPIC, total, Duration::from_secs(120)).await?;
    if !missing(logs, &got).is_empty() {
        // Duplicates may have made the count before the last lines arrived: read once more.
        got = consume_for(&bootstrap, TOPIC, Duration::from_secs(10)).await?;
    }
    let lost = missing(logs, &got);
    assert!(
        lost.is_empty(),
        "{} of {total} lines never arrived, e.g. {:?}{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        warnings(agent)
    );
    // Where each line landed: (partition, offset) of every copy.
    let mut copies: HashMap<(char, u64), Vec<(i32, i64)>> = HashMap::new();
    let mut foreign = Vec::new();
    for c in &got {
        match parse(&c.value) {
            Some(id)
                if NAMES
                    .iter()
                    .position(|n| *n == id.0)
                    .is_some_and(|i| id.1 < logs.next[i]) =>
            {
                copies.entry(id).or_default().push((c.partition, c.offset))
            }
            _ => foreign.push(c.text()),
        }
    }
    assert!(
        foreign.is_empty(),
        "{} records that no line written matches, e.g. {:?}",
        foreign.len(),
        &foreign[..foreign.len().min(5)]
    );
    copies.retain(|_, at| at.len() > 1);
    let dups = copies;
    let mut unexplained: Vec<_> = dups
        .iter()
        .filter(|(id, at)| at.len() > 2 || !at_risk.contains(*id))
        .collect();
    unexplained.sort();
    eprintln!(
        "{total} lines written, {} records read, {} lines duplicated, bound {}",
        got.len(),
        dups.len(),
        at_risk.len()
    );
    assert!(
        unexplained.is_empty(),
        "{} duplicated lines were acknowledged before the kill or stop (or arrived 3+ times), \
         e.g. (line, [(partition, offset)]) {:?}{}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(10)],
        warnings(agent)
    );
    Ok(())
}

/// The agent's warnings and errors, for failure messages.
fn warnings(agent: &Agent) -> String {
    let log = agent.log_contents();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("=== harness"))
        .collect();
    format!(
        "\nagent warnings and errors (last 30):\n{}",
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

fn missing(logs: &Logs, got: &[Consumed]) -> Vec<(char, u64)> {
    let seen: HashSet<(char, u64)> = got.iter().filter_map(|c| parse(&c.value)).collect();
    NAMES
        .iter()
        .zip(logs.next)
        .flat_map(|(&name, n)| (0..n).map(move |seq| (name, seq)))
        .filter(|id| !seen.contains(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writing_with_rename_rotations() -> anyhow::Result<()> {
    let started = Instant::now();
    let (w, mut logs, mut agent) = start_shipping().await?;
    let plan = [
        (12_000, Step::Rotate),
        (24_000, Step::Rotate),
        (33_000, Step::Kill),
        // While the agent is down: the file it was reading becomes x.log.1.
        (36_000, Step::Rotate),
        (39_000, Step::Restart),
        (50_000, Step::Rotate),
        (60_000, Step::Rotate),
    ];
    let out = run_plan(&w, &mut logs, &mut agent, Rotation::Rename, 67_000, &plan).await?;
    agent
        .wait_for_log("file was rotated while the agent was down", WAIT)
        .await?;
    check_delivery(&w, &agent, &logs, &out.at_risk).await?;
    agent.stop_cleanly(WAIT).await?;
    eprintln!("rename rotations with kill -9: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writing_with_copytruncate_rotations() -> anyhow::Result<()> {
    let started = Instant::now();
    let (w, mut logs, mut agent) = start_shipping().await?;
    let plan = [
        (15_000, Step::Rotate),
        (30_000, Step::Rotate),
        (38_000, Step::Kill),
        (43_000, Step::Restart),
        (52_000, Step::Rotate),
        (62_000, Step::Rotate),
    ];
    let out = run_plan(
        &w,
        &mut logs,
        &mut agent,
        Rotation::CopyTruncate,
        67_000,
        &plan,
    )
    .await?;
    check_delivery(&w, &agent, &logs, &out.at_risk).await?;
    agent.stop_cleanly(WAIT).await?;
    eprintln!(
        "copytruncate rotations with kill -9: {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_across_a_rename_rotation_ships_the_remainder_then_forgets_it() -> anyhow::Result<()>
{
    let started = Instant::now();
    let w = World::start(IP, &[TOPIC], 3).await?;
    let mut logs = Logs::create(&w.logs_dir())?;
    put_logs(&w, &logs).await?;
    // A renamed file is let go after 1 s idle instead of 5 s: only to keep the test short.
    let mut agent = Agent::start_with_env(
        &bin(),
        &w.http_config(),
        &[("LOGAGENT_TAIL__ROTATED_IDLE_TIMEOUT_MS", "1000")],
    )?;
    let plan = [
        (4_000, Step::Rotate),
        (8_000, Step::Stop),
        (9_000, Step::Rotate),
        (9_000, Step::WriteIntoRenamed(500)),
        (11_000, Step::Restart),
        (15_000, Step::Rotate),
    ];
    let out = run_plan(&w, &mut logs, &mut agent, Rotation::Rename, 20_000, &plan).await?;
    // The files live at the stop are the ones renamed while the agent was down.
    let renamed_while_down = out.live_when_down;
    agent
        .wait_for_log("file was rotated while the agent was down", WAIT)
        .await?;
    // A clean stop leaves nothing unacknowledged: no line may arrive twice.
    check_delivery(&w, &agent, &logs, &HashSet::new()).await?;
    let state = w.state_dir();
    wait_until(
        "records of the files renamed while the agent was down to be forgotten",
        WAIT,
        || {
            let ok = checkpoint(&state)
                .is_ok_and(|ck| renamed_while_down.iter().all(|k| !ck.contains_key(k)));
            async move { ok }
        },
    )
    .await?;
    agent.stop_cleanly(WAIT).await?;
    eprintln!("stopped across a rotation: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_rotated_files_removed_by_logrotate_expire() -> anyhow::Result<()> {
    let w = World::start(IP, &[TOPIC], 3).await?;
    let mut logs = Logs::create(&w.logs_dir())?;
    put_logs(&w, &logs).await?;
    let mut agent = Agent::start_with_env(
        &bin(),
        &w.http_config(),
        &[
            ("LOGAGENT_TAIL__ROTATED_IDLE_TIMEOUT_MS", "500"),
            ("LOGAGENT_CHECKPOINT__GONE_RETENTION_MS", "1000"),
        ],
    )?;
    for _ in 0..3 {
        logs.append_all(1_000)?;
        rotate(&w, &mut logs, Rotation::Rename, true).await?;
    }
    logs.append_all(1_000)?;
    check_delivery(&w, &agent, &logs, &HashSet::new()).await?;
    // Every rotated file is shipped; logrotate now removes them (its `rotate N` limit). Their
    // records must go too, or the checkpoint grows with every rotation.
    for i in 0..NAMES.len() {
        for n in 1..=logs.copies[i] {
            std::fs::remove_file(logs.copy(i, n))?;
        }
    }
    let live = live_keys(&logs)?;
    let state = w.state_dir();
    wait_until("the checkpoint to hold the live files only", WAIT, || {
        let ok = checkpoint(&state)
            .is_ok_and(|ck| ck.len() == live.len() && live.iter().all(|k| ck.contains_key(k)));
        async move { ok }
    })
    .await?;
    agent.stop_cleanly(WAIT).await
}
