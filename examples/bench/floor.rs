//! `floor1000`: what `idle1000`'s trickle costs before any work of the agent's own.
//!
//! A stripped-down reader, run as a child process of this benchmark, does only the system calls a
//! tailer cannot avoid per line: it sleeps until the directory's inotify descriptor is readable,
//! waits the agent's coalescing window, drains the events, and per file named makes the agent's
//! guarded read (one `pread` from 32 bytes before the offset, as the copytruncate guard) and its head
//! read (the file's first 64 bytes). No line splitting, no Kafka, no checkpoint. Its CPU on the
//! same trickle is the floor that any design reading each line with system calls meets on this
//! machine; the agent's `idle1000` figure is to be read against it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use inotify::{Inotify, WatchMask};

use crate::gen::{write_file, LineGen};
use crate::probe::{cpu_seconds, status_mib};
use crate::scenario::{figures, trickle, Ctx, Figures};

/// As the agent: its coalescing window, the guard's bytes, the guarded read's size, the head.
const WINDOW: Duration = logagent::tail::watch::COALESCE;
const GUARD: u64 = logagent::state::identity::TAIL_HASH_LEN;
const READ: usize = logagent::tail::GUARDED_READ_BYTES;
const HEAD: usize = logagent::state::identity::HEAD_GUARD_LEN;

/// The reader (the child): every file in `dir`, from its end, until killed. Prints "ready" once
/// its watch is in place, then after each round the sum of its files' offsets (how the parent knows
/// it read everything).
pub fn reader(dir: &Path) -> anyhow::Result<()> {
    let mut inotify = Inotify::init().context("inotify")?;
    inotify
        .watches()
        .add(dir, WatchMask::MODIFY)
        .with_context(|| format!("watching {}", dir.display()))?;
    let mut files: HashMap<OsString, (std::fs::File, u64)> = HashMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(e.path())?;
        let len = f.metadata()?.len();
        files.insert(e.file_name(), (f, len));
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut events = vec![0u8; 64 * 1024];
    let mut data = vec![0u8; GUARD as usize + READ];
    let mut head = [0u8; HEAD];
    let mut named: Vec<OsString> = Vec::new();
    loop {
        let mut pfd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        std::thread::sleep(WINDOW);
        loop {
            match inotify.read_events(&mut events) {
                Ok(evs) => named.extend(evs.filter_map(|e| e.name.map(|n| n.to_owned()))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        named.sort_unstable();
        named.dedup();
        for name in named.drain(..) {
            let Some((f, offset)) = files.get_mut(&name) else {
                continue;
            };
            let from = offset.saturating_sub(GUARD);
            let n = f.read_at(&mut data, from)?;
            *offset = (from + n as u64).max(*offset);
            f.read_at(&mut head, 0)?;
        }
        let read: u64 = files.values().map(|(_, o)| o).sum();
        println!("{read}");
        std::io::stdout().flush()?;
    }
}

/// The scenario (the parent): 1,000 files trickled as `idle1000` does, the reader's CPU measured over
/// the same window.
pub fn run(ctx: &Ctx) -> anyhow::Result<Figures> {
    let name = "floor1000";
    let files = ctx.files.unwrap_or(1000).max(1);
    let period = Duration::from_secs(1);
    let secs = ctx.idle_secs.max(3);
    let dir = tempfile::Builder::new()
        .prefix("logagent-bench-floor-")
        .tempdir()?;
    let mut gen = LineGen::new(7, ctx.line_bytes);
    let paths: Vec<_> = (0..files)
        .map(|i| dir.path().join(format!("access-{i:04}.log")))
        .collect();
    for p in &paths {
        write_file(p, &mut gen, 1)?;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--floor-reader")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the floor reader")?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().context("reader stdout")?);
    let mut ready = String::new();
    out.read_line(&mut ready)?;
    if ready.trim() != "ready" {
        let _ = child.kill();
        bail!("the floor reader did not start: {:?}", child.wait()?);
    }
    // The sums it prints after each round, the last one kept.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line.trim().parse().unwrap_or(0)).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut window = None;
    let written = trickle(&paths, &mut gen, period, secs, || {
        window = Some((Instant::now(), cpu_seconds(pid)?));
        Ok(())
    });
    // Every byte read: the files' sizes now.
    let size: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut read = 0;
    while read < size {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(n) => read = n,
            Err(_) => break,
        }
    }
    let measured =
        window.map(|(at, cpu)| Ok::<_, anyhow::Error>((at.elapsed(), cpu_seconds(pid)? - cpu)));
    let total_cpu = cpu_seconds(pid);
    let peak_rss = status_mib(pid, "VmHWM:");
    let exited = child.try_wait()?;
    let _ = child.kill();
    let _ = child.wait();
    if let Some(status) = exited {
        bail!("the floor reader exited early: {status}");
    }
    let (lines, bytes) = written?;
    let (wall, cpu) = measured.context("trickle shorter than its warm-up")??;
    let mut f = figures(
        ctx,
        name,
        files,
        lines,
        bytes,
        started.elapsed(),
        total_cpu?,
    );
    f.broker = "none".into();
    f.peak_rss_mib = peak_rss?;
    f.idle_cpu_pct = Some(100.0 * cpu / wall.as_secs_f64());
    // Complete: the reader reached the end of every file.
    f.complete = read == size;
    f.records = lines;
    f.note = format!(
        "system calls alone: inotify round per {} ms, guarded read + head read per line; {files} files x 1 line per s for {secs} s",
        WINDOW.as_millis()
    );
    Ok(f)
}
