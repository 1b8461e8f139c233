//! `dip-hub publish --file` end to end: the real binary loads a file into the
//! real hub over PublishStream; bad lines land in the reject file with their
//! line and reason, the rest is stored once, and a rerun (also after the load
//! was killed halfway) publishes nothing twice.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::harness::{
    SOON, TestHub, collect_events, phone, phone_indicator, publish, subscribe_request,
};

fn load(hub: &TestHub, org: &str, file: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dip-hub"));
    command
        .args(["publish", "--hub", &hub.url(), "--as", org, "--certs-dir"])
        .arg(hub.pki.pki_dir())
        .arg("--file")
        .arg(file)
        .args(extra)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command) -> serde_json::Value {
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the load finishes within 120 s")
        .expect("dip-hub publish runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the load failed: {stderr}");
    assert!(
        !stderr.contains("lines,"),
        "no progress bar when stderr is not a terminal: {stderr}"
    );
    serde_json::from_slice(&output.stdout).expect("stdout is the summary, one JSON object")
}

#[tokio::test]
async fn a_file_is_loaded_with_bad_lines_rejected_by_line_and_a_rerun_adds_nothing() {
    let hub = TestHub::start().await;
    // Another organisation reported number 7 already: the bank's line is a sighting.
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(7)]).await;

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("list.csv");
    let mut text = String::from("kind,value,category,risk,description\n");
    let valid = 1_000u64;
    for n in 0..valid {
        text.push_str(&format!(
            "PHONE_NUMBER,{},FRAUD_CALL,HIGH,line {n}\n",
            phone(n)
        ));
        match n {
            // Lines 102, 303, 504 (the header is line 1; each follows its number's line).
            100 => text.push_str("PHONE_NUMBER,12ab,FRAUD_CALL,HIGH,\n"),
            300 => text.push_str("BOAT,x,SPAM,HIGH,\n"),
            500 => text.push_str(&format!(
                "PHONE_NUMBER,{},DISCONNECTED,HIGH,\n",
                phone(5_000)
            )),
            _ => {}
        }
    }
    std::fs::write(&file, &text).expect("write the file");

    let first = run(load(&hub, "alpha-bank", &file, &["--batch", "100"])).await;
    assert_eq!(first["records"], valid + 3, "{first}");
    assert_eq!(first["published"], valid - 1, "{first}");
    assert_eq!(first["sightings"], 1, "{first}");
    assert_eq!(first["already_loaded"], 0, "{first}");
    assert_eq!(first["refused"], 3, "{first}");
    let rejects =
        std::fs::read_to_string(dir.path().join("list.csv.rejects.jsonl")).expect("reject file");
    let rejects: HashMap<u64, serde_json::Value> = rejects
        .lines()
        .map(|line| {
            let reject: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (reject["line"].as_u64().expect("line"), reject)
        })
        .collect();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert_eq!(rejects[&103]["code"], "INVALID_ARGUMENT");
    assert!(
        rejects[&103]["reason"]
            .as_str()
            .expect("reason")
            .contains("value")
    );
    assert!(
        rejects[&304]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("kind:")
    );
    assert_eq!(rejects[&505]["code"], "PERMISSION_DENIED");

    let again = run(load(&hub, "alpha-bank", &file, &["--batch", "100"])).await;
    assert_eq!(again["published"], 0, "{again}");
    assert_eq!(again["sightings"], 0, "{again}");
    assert_eq!(again["already_loaded"], valid, "{again}");
    assert_eq!(again["refused"], 3, "{again}");
    let head = tokio::time::timeout(SOON, publish(&mut police, vec![phone_indicator(9_999)]))
        .await
        .expect("answered in time");
    assert_eq!(
        head.events[0].sequence,
        1 + valid + 1,
        "nothing stored twice"
    );
}

#[tokio::test]
async fn a_load_killed_halfway_and_rerun_stores_every_line_once() {
    let hub = TestHub::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("list.jsonl");
    let count = 20_000u64;
    let text: String = (0..count)
        .map(|n| {
            format!(
                "{{\"kind\":\"PHONE_NUMBER\",\"value\":\"{}\",\"category\":\"SPAM\"}}\n",
                phone(n)
            )
        })
        .collect();
    std::fs::write(&file, text).expect("write the file");

    // Kill the first load once the hub has stored some of it.
    let mut police = hub.client("mumbai-police").await;
    let mut events = police
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribes")
        .into_inner();
    // A std child, killed and reaped on a blocking thread: waiting on a child
    // tokio spawned hung here once in the full suite.
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_dip-hub"));
    first
        .args([
            "publish",
            "--hub",
            &hub.url(),
            "--as",
            "mumbai-police",
            "--certs-dir",
        ])
        .arg(hub.pki.pki_dir())
        .arg("--file")
        .arg(&file)
        .args(["--batch", "50", "--in-flight", "4"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    let mut first = first.spawn().expect("the load starts");
    let seen = tokio::time::timeout(Duration::from_secs(60), collect_events(&mut events, 1))
        .await
        .expect("the first load stores something within 60 s");
    assert_eq!(seen[0].sequence, 1);
    first.kill().expect("killed");
    tokio::time::timeout(SOON, tokio::task::spawn_blocking(move || first.wait()))
        .await
        .expect("reaped in time")
        .expect("join")
        .expect("reaped");

    let rerun = run(load(
        &hub,
        "mumbai-police",
        &file,
        &["--batch", "50", "--in-flight", "4"],
    ))
    .await;
    let published = rerun["published"].as_u64().expect("published");
    let already = rerun["already_loaded"].as_u64().expect("already loaded");
    assert_eq!(published + already, count, "{rerun}");
    assert!(already > 0, "the first load had stored some: {rerun}");

    // The log holds every line exactly once: a new subscriber reads it all
    // from the log (the one above sat unread through the loads).
    drop(events);
    let mut events = police
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribes")
        .into_inner();
    let mut values = HashMap::new();
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        collect_events(&mut events, count as usize),
    )
    .await
    .expect("the whole log within 60 s (heartbeats alone do not count)");
    for event in all {
        let value = event.indicator.expect("indicator").value;
        *values.entry(value).or_insert(0) += 1;
    }
    assert_eq!(values.len() as u64, count);
    assert!(values.values().all(|&n| n == 1), "a line stored twice");
    let head = tokio::time::timeout(SOON, publish(&mut police, vec![phone_indicator(count + 1)]))
        .await
        .expect("answered in time");
    assert_eq!(
        head.events[0].sequence,
        count + 1,
        "nothing beyond the file"
    );
}
