//! What the collect key may hold and how the agent reaches it, against a real etcd and tansu: bad
//! values rejected whole while the last good one ships, the saved config when etcd is down at start,
//! etcd auth, the seed fleets' key template, several endpoints, delete and empty lists.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::bin;
use support::events::*;
use support::{agent_config, append_lines, lines, seed_value, Agent, World};

const IP: &str = "10.44.0.7";
const KEY: &str = "collect_log_conf/10.44.0.7";
/// The seed fleets' key layout, for the same IP.
const SEED_KEY: &str = "collect_log_10.44.0.7_conf";
/// Upper bound for an event the agent must log or a record that must arrive: generous, as none of
/// these waits is a speed assertion (delays are printed instead; a 2-core machine under load is slow).
const EVENT: Duration = Duration::from_secs(30);
const START: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_rejected_and_the_last_good_config_keeps_shipping() -> anyhow::Result<()> {
    let w = World::start(IP, &["good_log"], 1).await?;
    let f = w.log("good.log");
    append_lines(&f, &lines("good", 0..10))?;
    let r1 = w.put(&[(&f, "good_log")]).await?;
    let mut agent = w.json_agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("good_log", 10).await?, lines("good", 0..10));

    let fp = f.display().to_string();
    let bad: Vec<(String, Vec<String>)> = vec![
        ("[{\"path\": oops".into(), vec!["not JSON".into()]),
        (
            json!([{"path": f, "topic": "good_log", "colour": "red"}]).to_string(),
            vec![format!("entry 1 ({fp}): unknown field `colour`")],
        ),
        (
            json!([{"path": f, "topic": "bad topic!"}]).to_string(),
            vec![format!(
                "entry 1 ({fp}): topic \"bad topic!\" may only contain"
            )],
        ),
        (
            json!([{"path": f, "topic": 7}]).to_string(),
            vec![format!("entry 1 ({fp}): invalid type")],
        ),
        // Several problems: each is named.
        (
            json!([
                {"path": "relative.log", "topic": "good_log"},
                {"path": f, "topic": "good_log"},
                {"path": f, "topic": "other_log"},
            ])
            .to_string(),
            vec![
                "entry 1 (relative.log): path \"relative.log\" is not absolute".into(),
                format!("entry 3 ({fp}): entry 2 already sends this path to topic \"good_log\""),
            ],
        ),
    ];
    for (value, problems) in &bad {
        let mark = events(&agent).len();
        let rev = w.etcd.put(KEY, value).await?;
        let needle = format!("etcd key {KEY} at revision {rev} rejected");
        let ev = wait_event(
            &mut agent,
            mark,
            &format!("the rejection of revision {rev}"),
            EVENT,
            |e| message(e).contains(&needle),
        )
        .await?;
        assert_eq!(level(&ev), "ERROR", "rejection logged as {ev}");
        for p in problems {
            assert!(
                message(&ev).contains(p.as_str()),
                "rejection of {value} does not say {p:?}:\n{}",
                message(&ev)
            );
        }
        assert!(
            !events(&agent).iter().any(|e| applied(e, rev)),
            "bad revision {rev} was applied"
        );
    }
    eprintln!(
        "example rejection:\n{}",
        events(&agent)
            .iter()
            .rev()
            .find(|e| level(e) == "ERROR")
            .map(message)
            .unwrap_or_default()
    );

    // The last good configuration keeps shipping, and is still the one saved for a restart.
    append_lines(&f, &lines("good", 10..20))?;
    assert_eq!(w.texts("good_log", 20).await?, lines("good", 0..20));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("last_config.json"))?)?;
    assert_eq!(
        saved["revision"].as_i64(),
        Some(r1),
        "saved config is not the last good one: {saved}"
    );

    // Not wedged: the next good value is applied.
    let g = w.log("next.log");
    append_lines(&g, &lines("next", 0..5))?;
    let r2 = w.put(&[(&f, "good_log"), (&g, "good_log")]).await?;
    wait_applied(&mut agent, r2, EVENT).await?;
    let got = w.texts("good_log", 25).await?;
    assert_eq!(got.len(), 25, "expected 20 + 5 records: {got:?}");
    agent.stop_cleanly(START).await?;

    // Started while etcd holds a bad value: the last good configuration is the saved one.
    let bad_rev = w.etcd.put(KEY, "{\"path\": broken").await?;
    append_lines(&f, &lines("good", 20..30))?;
    let mark = events(&agent).len();
    agent.restart()?;
    let needle = format!("etcd key {KEY} at revision {bad_rev} rejected");
    wait_event(
        &mut agent,
        mark,
        &format!("the rejection of revision {bad_rev}"),
        START,
        |e| message(e).contains(&needle),
    )
    .await?;
    let ev = wait_event(
        &mut agent,
        mark,
        "that it runs from the saved configuration",
        EVENT,
        |e| message(e).contains("running from the saved configuration"),
    )
    .await?;
    assert_eq!(ev["revision"].as_i64(), Some(r2), "{ev}");
    let got = w.texts("good_log", 35).await?;
    assert_eq!(got.len(), 35, "expected 25 + 10 records: {got:?}");
    assert_eq!(got[25..], lines("good", 20..30));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_etcd_down_it_runs_from_the_saved_config() -> anyhow::Result<()> {
    let mut w = World::start(IP, &["saved_a", "saved_b"], 1).await?;
    let f = w.log("s.log");
    append_lines(&f, &lines("s", 0..10))?;
    let r1 = w.put(&[(&f, "saved_a")]).await?;
    let mut agent = w.json_agent(
        &w.etcd.endpoint(),
        &[("LOGAGENT_ETCD__BACKOFF_MAX_MS", "1000")],
    )?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("saved_a", 10).await?, lines("s", 0..10));
    agent.stop_cleanly(START).await?;
    let saved: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("last_config.json"))?)?;
    assert_eq!(saved["key"], KEY, "saved config: {saved}");
    assert_eq!(
        saved["revision"].as_i64(),
        Some(r1),
        "saved config: {saved}"
    );

    w.etcd.kill();
    append_lines(&f, &lines("s", 10..20))?;
    let mark = events(&agent).len();
    let t0 = Instant::now();
    agent.restart()?;
    let ev = wait_event(
        &mut agent,
        mark,
        "that it runs from the saved configuration",
        START,
        |e| message(e).contains("running from the saved configuration"),
    )
    .await?;
    eprintln!(
        "started with etcd down → running from saved config after {:?}",
        t0.elapsed()
    );
    assert_eq!(level(&ev), "WARN", "{ev}");
    assert_eq!(ev["revision"].as_i64(), Some(r1), "{ev}");
    // Resumed from the checkpoint: the lines written while stopped, and nothing twice.
    assert_eq!(w.texts("saved_a", 20).await?, lines("s", 0..20));

    // etcd back: the live configuration takes over.
    let mark = events(&agent).len();
    w.etcd.restart().await?;
    let r2 = w.put(&[(&f, "saved_b")]).await?;
    let t0 = Instant::now();
    wait_applied(&mut agent, r2, EVENT).await?;
    eprintln!("etcd back → live config applied after {:?}", t0.elapsed());
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("s", 20..30))?;
    assert_eq!(w.texts("saved_b", 10).await?, lines("s", 20..30));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_etcd_works() -> anyhow::Result<()> {
    const USER: &str = "logagent";
    const PASSWORD: &str = "Sw0rdf1sh-for-etcd";
    let mut w = World::start(IP, &["auth_a", "auth_b"], 1).await?;
    w.etcd.enable_auth(USER, PASSWORD).await?;
    let f = w.log("auth.log");
    append_lines(&f, &lines("auth", 0..10))?;
    let r1 = w.put(&[(&f, "auth_a")]).await?;

    let with_credentials = |config: String, password: &str| {
        config.replacen(
            "[etcd]\n",
            &format!("[etcd]\nusername = \"{USER}\"\npassword = \"{password}\"\n"),
            1,
        )
    };
    let config = with_credentials(w.json_config(&w.etcd.endpoint()), PASSWORD);
    assert!(config.contains("username = "), "{config}");
    let mut agent = Agent::start(&bin(), &config)?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("auth_a", 10).await?, lines("auth", 0..10));
    // The watch works under auth too.
    let mark = events(&agent).len();
    let r2 = w.put(&[(&f, "auth_b")]).await?;
    wait_applied(&mut agent, r2, EVENT).await?;
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("auth", 10..20))?;
    assert_eq!(w.texts("auth_b", 10).await?, lines("auth", 10..20));

    // A wrong password is a clear error, and the agent keeps running without a configuration.
    let other_state = w.dir.path().join("state-wrong-password");
    let mut wrong_config = agent_config(&other_state, &w.etcd.endpoint(), w.bootstrap(), IP);
    wrong_config.push_str("\n[log]\nformat = \"json\"\n");
    let mut wrong = Agent::start(&bin(), &with_credentials(wrong_config, "not-the-password"))?;
    let ev = wait_event(&mut wrong, 0, "an authentication error", START, |e| {
        message(e).starts_with("cannot read the collect configuration")
            && message(e).contains("authentication failed")
    })
    .await?;
    eprintln!("wrong password: {}", message(&ev));
    assert!(
        wrong.is_running(),
        "a wrong etcd password stopped the agent"
    );
    assert!(
        !events(&wrong)
            .iter()
            .any(|e| message(e) == "collect configuration applied"),
        "applied a configuration without valid credentials"
    );
    for a in [&agent, &wrong] {
        assert!(
            !a.log_contents().contains(PASSWORD),
            "the etcd password is in the log"
        );
    }
    wrong.stop_cleanly(START).await?;
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_key_template_several_endpoints_and_delete_or_empty_list_stop_collection(
) -> anyhow::Result<()> {
    let w = World::start(IP, &["tpl_a"], 1).await?;
    let f = w.log("t.log");
    append_lines(&f, &lines("t", 0..10))?;
    let r1 = w.etcd.put(SEED_KEY, &seed_value(&[(&f, "tpl_a")])).await?;
    // The seed fleets' layout, by configuration alone (here the environment override); and several
    // endpoints, the first of which has nothing listening.
    let endpoints = format!("127.0.0.1:{},{}", support::free_port(), w.etcd.endpoint());
    let mut agent = w.json_agent(
        &w.etcd.endpoint(),
        &[
            ("LOGAGENT_ETCD__KEY_TEMPLATE", "collect_log_{ip}_conf"),
            ("LOGAGENT_ETCD__ENDPOINTS", &endpoints),
        ],
    )?;
    let ev = wait_event(&mut agent, 0, "applying the seed-layout key", START, |e| {
        applied(e, r1)
    })
    .await?;
    assert_eq!(ev["key"], SEED_KEY, "{ev}");
    let dead = endpoints.split(',').next().unwrap_or_default();
    assert!(
        events(&agent).iter().any(|e| {
            message(e) == "reading collect configuration from etcd"
                && e["endpoints"].as_str().is_some_and(|l| l.contains(dead))
        }),
        "the agent does not list {dead} among its endpoints"
    );
    let lost: Vec<String> = events(&agent)
        .iter()
        .filter(|e| message(e).contains("etcd watch lost"))
        .map(|e| message(e).to_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "with a live endpoint the watch was lost: {lost:#?}"
    );
    assert_eq!(w.texts("tpl_a", 10).await?, lines("t", 0..10));

    // DELETE: everything stops, at warn.
    let mark = events(&agent).len();
    assert_eq!(w.etcd.delete(SEED_KEY).await?, 1);
    let ev = wait_event(&mut agent, mark, "the deleted key", EVENT, |e| {
        message(e).contains("deleted")
    })
    .await?;
    assert_eq!(level(&ev), "WARN", "{ev}");
    assert_eq!(ev["key"], SEED_KEY, "{ev}");
    let ev = wait_event(&mut agent, mark, "that all collection stops", EVENT, |e| {
        message(e).contains("stopping all collection")
    })
    .await?;
    assert_eq!(level(&ev), "WARN", "{ev}");
    wait_event(&mut agent, mark, "the entry stopping", EVENT, |e| {
        message(e).starts_with("stopping entry")
    })
    .await?;
    wait_reconciler_quiet(&mut agent, Duration::from_millis(300), EVENT).await?;
    append_lines(&f, &lines("t", 10..20))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shipped = w.read_all("tpl_a").await?;
    assert_eq!(shipped.len(), 10, "lines shipped after the key was deleted");

    // Re-added: resumes from the stored offset, nothing read twice.
    let r3 = w.etcd.put(SEED_KEY, &seed_value(&[(&f, "tpl_a")])).await?;
    wait_applied(&mut agent, r3, EVENT).await?;
    assert_eq!(w.texts("tpl_a", 20).await?, lines("t", 0..20));

    // An empty list is the same as a DELETE.
    let mark = events(&agent).len();
    let r4 = w.etcd.put(SEED_KEY, "[]").await?;
    let ev = wait_event(&mut agent, mark, "the empty list", EVENT, |e| {
        message(e).contains("empty list")
    })
    .await?;
    assert_eq!(
        (level(&ev), ev["revision"].as_i64()),
        ("WARN", Some(r4)),
        "{ev}"
    );
    wait_event(&mut agent, mark, "that all collection stops", EVENT, |e| {
        message(e).contains("stopping all collection")
    })
    .await?;
    agent.stop_cleanly(START).await?;
    Ok(())
}
