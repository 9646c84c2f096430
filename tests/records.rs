//! Records operators can use downstream (issue 12), end to end against real etcd and tansu:
//! encodings decoded byte-exact into UTF-8, the JSON envelope with every field, metadata headers,
//! record ids stable across a kill -9 and distinct across lines, line filters (counted, and a
//! filtered tail still checkpointed), the read throttle (nothing dropped, rate bounded),
//! ignore_older, and `logagent preview` printing what is produced.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use support::{
    append_lines, bin, checkpoint_records, consume, scrape, wait_for, Agent, Consumed, World,
};

const IP: &str = "10.20.30.46";
const HOST: &str = "records-host-1";
const WAIT: Duration = Duration::from_secs(60);

/// The world's config with this test's host name, checkpoints every `checkpoint_ms` and the HTTP
/// endpoint on [`World::http_port`].
fn config(w: &World, checkpoint_ms: u64) -> String {
    w.http_config()
        .replace("[agent]\n", &format!("[agent]\nhostname = \"{HOST}\"\n"))
        .replace(
            "interval_ms = 200",
            &format!("interval_ms = {checkpoint_ms}"),
        )
}

/// A metric of the agent on `port`, once it has one.
async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    wait_for(&format!("metric {name}"), WAIT, || async move {
        scrape(port).await?.get(name).copied()
    })
    .await
}

fn header<'a>(c: &'a Consumed, name: &str) -> Option<&'a str> {
    c.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).expect("header value is UTF-8"))
}

/// Byte offset of the start of each line of `content` (lines ending in `\n`).
fn line_starts(content: &[u8]) -> Vec<u64> {
    let mut starts = vec![0u64];
    for (i, b) in content.iter().enumerate() {
        if *b == b'\n' && i + 1 < content.len() {
            starts.push(i as u64 + 1);
        }
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_are_decoded_byte_exact_into_utf8() -> anyhow::Result<()> {
    let w = World::start(IP, &["gbk", "utf16le", "utf16be"], 1).await?;
    // GBK: Chinese text, one invalid sequence (a lead byte followed by a space).
    let gbk_lines = [
        "错误: 连接超时 host=db-1",
        "第二行 ok",
        "ascii only",
        "尾行",
    ];
    let mut gbk = Vec::new();
    for l in &gbk_lines {
        gbk.extend_from_slice(&encoding_rs::GBK.encode(l).0);
        gbk.push(b'\n');
    }
    gbk.extend_from_slice(b"bad \x81 byte\n");
    std::fs::write(w.log("gbk.log"), &gbk)?;
    // UTF-16: a byte order mark, CRLF, and characters whose code units hold 0x0A bytes
    // (U+0A0A, U+0A00) that are no newline, and a surrogate pair.
    let utf16_lines = [
        "first ü",
        "ਊ\u{0A00} gurmukhi",
        "emoji 😀 and 中文",
        "",
        "last",
    ];
    let text: String = utf16_lines.iter().map(|l| format!("{l}\r\n")).collect();
    let le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    std::fs::write(w.log("le.log"), &le)?;
    std::fs::write(w.log("be.log"), &be)?;
    w.put_value(
        &serde_json::json!([
            {"path": w.log("gbk.log"), "topic": "gbk", "encoding": "gbk"},
            {"path": w.log("le.log"), "topic": "utf16le", "encoding": "utf-16le"},
            {"path": w.log("be.log"), "topic": "utf16be", "encoding": "UTF-16BE"},
        ])
        .to_string(),
    )
    .await?;
    let mut agent = Agent::start(&bin(), &config(&w, 200))?;

    let got = consume(w.bootstrap(), "gbk", 5, WAIT).await?;
    let values: Vec<Vec<u8>> = got.iter().map(|c| c.value.clone()).collect();
    let mut want: Vec<Vec<u8>> = gbk_lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    want.push("bad \u{FFFD} byte".as_bytes().to_vec());
    assert_eq!(values, want, "GBK records are not the UTF-8 of the lines");
    for topic in ["utf16le", "utf16be"] {
        let got = consume(w.bootstrap(), topic, utf16_lines.len(), WAIT).await?;
        let values: Vec<&[u8]> = got.iter().map(|c| &c.value[..]).collect();
        let want: Vec<&[u8]> = utf16_lines.iter().map(|l| l.as_bytes()).collect();
        assert_eq!(
            values, want,
            "{topic}: records are not the UTF-8 of the lines"
        );
    }
    let errors = metric(w.http_port, "logagent_decode_errors_total{topic=\"gbk\"}").await?;
    assert_eq!(errors, 1.0, "one invalid GBK sequence");
    assert_eq!(
        metric(
            w.http_port,
            "logagent_decode_errors_total{topic=\"utf16le\"}"
        )
        .await?,
        0.0
    );
    agent.stop_cleanly(WAIT).await?;
    // Offsets stay byte offsets of the file: the checkpoint ends at each file's size.
    let ck = checkpoint_records(&w.state_dir())?;
    let offset = |log: &Path| ck.iter().find(|r| r.path == log).map(|r| r.offset);
    assert_eq!(offset(&w.log("le.log")), Some(le.len() as u64), "{ck:?}");
    assert_eq!(offset(&w.log("gbk.log")), Some(gbk.len() as u64), "{ck:?}");
    Ok(())
}

/// The envelope, parsed back with every field checked; the metadata headers; and ids: the same for
/// lines read again after a kill -9 (the checkpoint never got written), also once the file has grown
/// past the fingerprint length, and different for every line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_envelope_headers_and_ids_stable_across_kill_9() -> anyhow::Result<()> {
    let w = World::start(IP, &["json"], 1).await?;
    let log = w.log("app.log");
    let first: Vec<String> = (0..6)
        .map(|i| format!("{i} GET /x?q=\"quoted\" \\ tab\t ü"))
        .collect();
    append_lines(&log, &first)?;
    let entry = serde_json::json!({
        "path": log, "topic": "json", "format": "json",
        "headers": ["id", "host", "ip", "path", "offset"],
        "fields": {"env": "prod", "team": "web"},
    });
    w.put_value(&serde_json::json!([entry]).to_string()).await?;
    // No checkpoint before the kill: everything is read again after it.
    let config = config(&w, 600_000);
    let config_path = w.dir.path().join("logagent.toml");
    std::fs::write(&config_path, &config)?;
    let mut agent = Agent::start(&bin(), &config)?;
    let before_ms = now_ms() - 1;
    let got = consume(w.bootstrap(), "json", first.len(), WAIT).await?;
    let after_ms = now_ms() + 1;
    assert_eq!(got.len(), first.len());
    let content = std::fs::read(&log)?;
    let starts = line_starts(&content);
    let mut first_ids = HashMap::new();
    for (i, c) in got.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&c.value)
            .with_context(|| format!("record {i} is not JSON: {}", c.text()))?;
        let obj = v.as_object().context("an object")?;
        let keys: HashSet<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from(["@timestamp", "message", "host", "log", "event", "fields"]),
            "{v}"
        );
        let ts = v["@timestamp"].as_str().context("@timestamp")?;
        let at = parse_rfc3339_ms(ts).with_context(|| format!("@timestamp {ts:?}"))?;
        assert!(
            (before_ms..=after_ms).contains(&at),
            "{ts} is not the read time"
        );
        assert_eq!(v["message"], first[i]);
        assert_eq!(v["host"], serde_json::json!({"name": HOST, "ip": IP}));
        assert_eq!(v["log"]["file"]["path"], log.to_string_lossy().as_ref());
        assert_eq!(v["log"]["offset"], starts[i], "record {i}");
        assert_eq!(
            v["fields"],
            serde_json::json!({"env": "prod", "team": "web"})
        );
        let id = v["event"]["id"].as_str().context("event.id")?;
        assert!(
            id.len() <= 32 && id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{id}"
        );
        assert_eq!(header(c, "logagent.id"), Some(id));
        assert_eq!(header(c, "logagent.host"), Some(HOST));
        assert_eq!(header(c, "logagent.ip"), Some(IP));
        assert_eq!(
            header(c, "logagent.path"),
            Some(log.to_string_lossy().as_ref())
        );
        assert_eq!(
            header(c, "logagent.offset"),
            Some(starts[i].to_string().as_str())
        );
        assert_eq!(header(c, "env"), Some("prod"), "fields stay headers");
        first_ids.insert(starts[i], id.to_owned());
    }
    assert_eq!(
        first_ids.values().collect::<HashSet<_>>().len(),
        first.len(),
        "ids of distinct lines differ"
    );

    agent.sigkill();
    agent.wait_exit(WAIT).await?;
    // More lines while down: the file grows past the 1 KiB fingerprint.
    let more: Vec<String> = (0..40)
        .map(|i| format!("later {i:03} {}", "y".repeat(40)))
        .collect();
    append_lines(&log, &more)?;
    agent.restart()?;
    let all = consume(w.bootstrap(), "json", 2 * first.len() + more.len(), WAIT).await?;
    let content = std::fs::read(&log)?;
    assert!(content.len() > 1024);
    let starts = line_starts(&content);
    let mut ids: HashMap<u64, String> = HashMap::new();
    let mut reread = 0;
    for c in &all[first.len()..] {
        let v: serde_json::Value = serde_json::from_slice(&c.value)?;
        let offset = v["log"]["offset"].as_u64().context("log.offset")?;
        let id = v["event"]["id"].as_str().context("event.id")?.to_owned();
        if let Some(before) = first_ids.get(&offset) {
            assert_eq!(
                &id, before,
                "the line at {offset} got another id when read again"
            );
            reread += 1;
        }
        assert!(
            ids.insert(offset, id).is_none(),
            "{offset} shipped twice after the restart"
        );
    }
    assert_eq!(reread, first.len(), "every first line was read again");
    assert_eq!(ids.len(), starts.len(), "one record per line");
    assert_eq!(
        ids.values().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids of distinct lines differ"
    );

    // `logagent preview` (with the agent's config: same host) prints what was produced, all but
    // the read time.
    let out = preview(
        &["--entry", &entry.to_string(), "--lines", "3"],
        Some(&config_path),
    )
    .await?;
    let printed = parse_preview(&out);
    assert_eq!(printed.len(), 3, "{out}");
    for (p, c) in printed.iter().zip(&all) {
        let mut pv: serde_json::Value = serde_json::from_str(&p.0)?;
        let mut cv: serde_json::Value = serde_json::from_slice(&c.value)?;
        pv["@timestamp"] = serde_json::Value::Null;
        cv["@timestamp"] = serde_json::Value::Null;
        assert_eq!(pv, cv);
        let consumed: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let shown = &p.1;
        assert_eq!(shown, &consumed);
    }
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}

/// include/exclude: only the matching records ship, the others are counted, and a file whose last
/// lines are all filtered out is still checkpointed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_drop_and_count_records_and_a_filtered_tail_is_checkpointed() -> anyhow::Result<()>
{
    let w = World::start(IP, &["filtered"], 1).await?;
    let log = w.log("f.log");
    let lines: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("{i} ERROR disk"),
            1 => format!("{i} INFO ok"),
            _ => format!("{i} ERROR healthcheck"),
        })
        .chain((0..50).map(|i| format!("tail {i} INFO")))
        .collect();
    append_lines(&log, &lines)?;
    w.put_value(
        &serde_json::json!([{
            "path": log, "topic": "filtered",
            "include_lines": ["ERROR"], "exclude_lines": ["healthcheck$"],
        }])
        .to_string(),
    )
    .await?;
    let mut agent = Agent::start(&bin(), &config(&w, 200))?;
    let want: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("ERROR") && !l.ends_with("healthcheck"))
        .cloned()
        .collect();
    let got = w.texts_within("filtered", want.len(), WAIT).await?;
    assert_eq!(got, want);
    // The checkpoint passes the filtered tail.
    w.wait_all_acknowledged(&log, WAIT).await?;
    let filtered = metric(
        w.http_port,
        "logagent_records_filtered_total{topic=\"filtered\"}",
    )
    .await?;
    assert_eq!(filtered as usize, lines.len() - want.len());
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}

/// `max_bytes_per_s`, shared by two files of one entry: every line arrives, in order, but no faster
/// than the rate allows (plus the one-second burst); the wait is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throttle_slows_reading_and_drops_nothing() -> anyhow::Result<()> {
    let w = World::start(IP, &["slow"], 1).await?;
    const RATE: u64 = 40_000;
    let mut want = HashMap::new();
    let mut total = 0u64;
    for name in ["a.log", "b.log"] {
        let lines: Vec<String> = (0..800)
            .map(|i| format!("{name} {i:05} {}", "z".repeat(90)))
            .collect();
        total += lines.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        append_lines(&w.log(name), &lines)?;
        want.insert(name.to_owned(), lines);
    }
    w.put_value(
        &serde_json::json!([{
            "path": w.log("*.log"), "topic": "slow", "max_bytes_per_s": RATE,
        }])
        .to_string(),
    )
    .await?;
    let start = Instant::now();
    let mut agent = Agent::start(&bin(), &config(&w, 200))?;
    let got = consume(w.bootstrap(), "slow", 1600, WAIT).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut by_file: HashMap<String, Vec<String>> = HashMap::new();
    for c in &got {
        let t = c.text();
        by_file.entry(t[..5].to_owned()).or_default().push(t);
    }
    assert_eq!(by_file, want, "lines lost, doubled or reordered");
    // ~200 KB at 40 KB/s with a 40 KB burst: at least 4 s of reading whatever the machine.
    let floor = (total - RATE) as f64 / RATE as f64;
    assert!(
        elapsed >= floor * 0.9,
        "{total} bytes in {elapsed:.1} s: faster than {RATE} B/s"
    );
    let throttled = metric(
        w.http_port,
        "logagent_throttled_seconds_total{topic=\"slow\"}",
    )
    .await?;
    assert!(throttled >= floor * 0.5, "throttled only {throttled} s");
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}

/// `ignore_older_ms`: an old file is not read (and reported as ignored) while a fresh one is; once
/// the old file changes, what is appended ships and its old content does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_older_leaves_old_files_until_they_change() -> anyhow::Result<()> {
    let w = World::start(IP, &["older"], 1).await?;
    append_lines(&w.log("old.log"), &["ancient 1", "ancient 2"])?;
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(w.log("old.log"))?
        .set_modified(two_hours_ago)?;
    append_lines(&w.log("new.log"), &["fresh 1"])?;
    w.put_value(
        &serde_json::json!([{
            "path": w.log("*.log"), "topic": "older", "ignore_older_ms": 3_600_000,
        }])
        .to_string(),
    )
    .await?;
    let mut agent = Agent::start(&bin(), &config(&w, 200))?;
    let got = w.texts_within("older", 1, WAIT).await?;
    assert_eq!(got, vec!["fresh 1"]);
    assert_eq!(
        metric(w.http_port, "logagent_files_ignored_total").await?,
        1.0
    );
    agent
        .wait_for_log("ignored: not modified for", WAIT)
        .await
        .context("the ignored file is reported")?;
    append_lines(&w.log("old.log"), &["appended later"])?;
    let got = w.texts_within("older", 2, WAIT).await?;
    assert_eq!(got, vec!["fresh 1", "appended later"]);
    agent.stop_cleanly(WAIT).await?;
    Ok(())
}

/// `logagent preview --config`: every entry of this host's etcd value, read once, printed with its
/// headers; no Kafka is configured to be reachable and nothing is written to the state dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_prints_this_hosts_entries_from_etcd() -> anyhow::Result<()> {
    let w = World::with_broker(IP, "127.0.0.1:1".to_owned()).await?;
    let log = w.log("p.log");
    append_lines(&log, &["S one", "  cont", "S two", "noise", "S three"])?;
    let entry = serde_json::json!([{
        "path": log, "topic": "p", "multiline": "^S", "exclude_lines": ["two"],
        "headers": ["offset", "path"], "fields": {"k": "v"},
    }]);
    w.put_value(&entry.to_string()).await?;
    let state = w.state_dir();
    let config_path = w.dir.path().join("logagent.toml");
    std::fs::write(&config_path, w.config())?;
    let out = preview(&[], Some(&config_path)).await?;
    let p = log.to_string_lossy();
    assert_eq!(
        out,
        format!(
            "S one\n  cont\n# k=v\n# logagent.offset=0\n# logagent.path={p}\n\
             S three\n# k=v\n# logagent.offset=25\n# logagent.path={p}\n"
        )
    );
    assert!(
        !state.join("checkpoints.json").exists() && !state.join("checkpoints.journal").exists(),
        "preview wrote a checkpoint"
    );
    Ok(())
}

/// Runs `logagent preview` with `args` (and `--config`), returning its stdout.
async fn preview(args: &[&str], config: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("preview").args(args);
    cmd.arg("--config")
        .arg(config.unwrap_or(Path::new("/nonexistent/logagent.toml")));
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .context("logagent preview did not exit at the end of its input")??;
    anyhow::ensure!(
        out.status.success(),
        "preview failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Records of a preview: each value line with the `# key=value` lines after it.
fn parse_preview(out: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut records: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in out.lines() {
        match line.strip_prefix("# ") {
            Some(h) => {
                let (k, v) = h.split_once('=').expect("key=value");
                records
                    .last_mut()
                    .expect("a header after a value")
                    .1
                    .push((k.to_owned(), v.to_owned()));
            }
            None => records.push((line.to_owned(), Vec::new())),
        }
    }
    records
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` to Unix milliseconds; `None` for any other shape.
fn parse_rfc3339_ms(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from civil (Howard Hinnant), independent of the agent's implementation.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as u64 * 1000 + ms as u64)
}
