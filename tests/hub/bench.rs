//! `dip-hub bench` end to end: the real binary starts its own hub child process
//! and runs every scenario briefly; the figures must show work done and no loss.

use std::time::Duration;

use tokio::process::Command;

/// Every scenario, as small as the flags allow to stay well under ten seconds.
#[tokio::test]
async fn a_short_bench_reports_work_and_no_loss() {
    let (report, stderr) = run_bench(&[
        "--publishers",
        "2",
        "--batch",
        "1,10",
        "--publish-secs",
        "1",
        "--fanout",
        "3x200",
        "--fanout-secs",
        "1",
        "--drain-secs",
        "20",
        "--catchup-events",
        "3000",
        "--catchup-publishers",
        "2",
        "--lookup-indicators",
        "300",
        "--lookup-clients",
        "2",
        "--lookup-secs",
        "1",
        "--abuse-streams",
        "20",
        "--abuse-connections",
        "2",
        "--abuse-events",
        "200",
        "--abuse-rate",
        "200",
        "--bulk-indicators",
        "2000",
    ])
    .await;
    let outcomes = report["outcomes"].as_array().expect("outcomes");
    let scenarios: Vec<&str> = outcomes
        .iter()
        .map(|o| o["scenario"].as_str().expect("scenario"))
        .collect();
    assert_eq!(
        scenarios,
        [
            "publish", "publish", "fanout", "catchup", "lookup", "abuse", "bulk"
        ]
    );
    for outcome in outcomes {
        let name = &outcome["setup"];
        assert!(
            outcome["throughput"].as_f64().expect("throughput") > 0.0,
            "{name}: no work done"
        );
        assert_eq!(outcome["errors"], 0, "{name}: errors; stderr: {stderr}");
        assert!(
            outcome["server_peak_rss_bytes"].as_u64().expect("rss") > 1024 * 1024,
            "{name}: the hub's peak memory is read from its own process"
        );
    }
    let fanout = &outcomes[2];
    assert_eq!(fanout["missed"], 0, "fan-out lost events: {fanout}");
    assert_eq!(
        fanout["duplicated"], 0,
        "fan-out duplicated events: {fanout}"
    );
    assert_eq!(
        fanout["latency"]["count"], 600,
        "3 subscribers x 200 events, each with its latency: {fanout}"
    );
    let catchup = &outcomes[3];
    assert_eq!(catchup["missed"], 0, "catch-up lost events: {catchup}");
    assert_eq!(catchup["duplicated"], 0, "catch-up duplicated: {catchup}");
    assert!(
        catchup["notes"].as_array().expect("notes").iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.starts_with("restart on the filled database: serving"))),
        "catch-up reports the restart: {catchup}"
    );
    assert!(outcomes[4]["latency"]["p99_us"].as_u64().expect("p99") > 0);
    let abuse = &outcomes[5];
    assert_eq!(
        abuse["missed"], 0,
        "abuse: the honest subscriber lost events: {abuse}"
    );
    assert_eq!(
        abuse["latency"]["count"], 200,
        "abuse: every event delivered: {abuse}"
    );
    let bulk = &outcomes[6];
    assert!(
        bulk["notes"][0]
            .as_str()
            .is_some_and(|n| n.starts_with("2,000 indicators stored")),
        "bulk: every line of the file stored: {bulk}"
    );
}

/// `--publish-in-flight` above 1 publishes over PublishStream, every request acked.
#[tokio::test]
async fn the_publish_scenario_streams_with_many_in_flight() {
    let (report, stderr) = run_bench(&[
        "--scenario",
        "publish",
        "--publishers",
        "2",
        "--publish-in-flight",
        "8",
        "--batch",
        "1",
        "--publish-secs",
        "1",
    ])
    .await;
    let publish = &report["outcomes"][0];
    assert_eq!(publish["scenario"], "publish");
    assert!(
        publish["setup"]
            .as_str()
            .is_some_and(|s| s.contains("PublishStream, 8 in flight")),
        "{publish}"
    );
    assert_eq!(publish["errors"], 0, "{publish}; stderr: {stderr}");
    assert!(publish["throughput"].as_f64().expect("throughput") > 0.0);
    assert!(publish["latency"]["count"].as_u64().expect("count") > 0);
}

/// Bad numbers are refused before anything starts, naming the flag.
#[tokio::test]
async fn bad_flags_are_refused_with_the_flag_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_dip-hub"))
        .args(["bench", "--batch", "0"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("refused at once")
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--batch: 0 is out of range; expected 1 to 1000"),
        "{stderr}"
    );
}

/// Issue 16: one member leaks 1,000 Subscribe streams (within raised limits)
/// while another publishes 20,000 events of 300 bytes. The hub (a child process,
/// so that the memory is its own) stays bounded, a third member's subscriber
/// receives every event once and in order, and every publish is acknowledged.
/// Before the fix the hub held about 4.3 MiB per stalled stream (about 1.7 GiB
/// here); the bound below is for a debug build on a shared 2-core machine. The
/// release figures (60,000 events, RSS and latency) are in README, "abuse".
#[tokio::test]
async fn a_member_leaking_streams_does_not_take_the_hub_down() {
    let (report, _) = run_bench(&[
        "--scenario",
        "abuse",
        "--abuse-streams",
        "1000",
        "--abuse-connections",
        "10",
        "--abuse-events",
        "20000",
        "--abuse-rate",
        "5000",
        "--fanout-in-flight",
        "16",
        "--drain-secs",
        "40",
    ])
    .await;
    let abuse = &report["outcomes"][0];
    eprintln!("abuse: {abuse}");
    assert_eq!(abuse["scenario"], "abuse");
    assert_eq!(abuse["errors"], 0, "refused streams or publishes: {abuse}");
    assert_eq!(
        abuse["missed"], 0,
        "the honest subscriber lost events: {abuse}"
    );
    assert_eq!(abuse["duplicated"], 0, "duplicates: {abuse}");
    assert_eq!(
        abuse["latency"]["count"], 20_000,
        "every event acknowledged and delivered once: {abuse}"
    );
    let rss = abuse["server_peak_rss_bytes"].as_u64().expect("rss");
    assert!(
        rss <= 1024 * 1024 * 1024,
        "hub peak RSS {} MiB is over 1 GiB: {abuse}",
        rss / (1024 * 1024)
    );
}

/// Issue 13, small: `--scenario scale` bulk-loads distinct indicators into a
/// fresh hub, then reports memory, disk, lookups, a full snapshot (its count
/// checked against the load) and the restart, all as numbers in `figures`.
#[tokio::test]
async fn the_scale_scenario_reports_every_figure() {
    let (report, _) = run_bench(&[
        "--scenario",
        "scale",
        "--scale-indicators",
        "5000",
        "--scale-publishers",
        "2",
        "--lookup-clients",
        "2",
        "--scale-lookup-secs",
        "1",
    ])
    .await;
    let scale = &report["outcomes"][0];
    eprintln!("scale: {scale}");
    assert_eq!(scale["scenario"], "scale");
    assert_eq!(scale["errors"], 0, "{scale}");
    assert!(scale["throughput"].as_f64().expect("load rate") > 0.0);
    assert!(scale["latency"]["p99_us"].as_u64().expect("lookup p99") > 0);
    let figures = &scale["figures"];
    assert_eq!(figures["indicators"], 5000.0);
    for figure in [
        "rss_steady_bytes",
        "rss_peak_after_load_bytes",
        "disk_bytes",
        "disk_bytes_per_indicator",
        "disk_over_encoded_events",
        "encoded_event_bytes",
        "lookups_per_sec",
        "snapshot_per_sec",
        "snapshot_secs",
        "ready_after_restart_secs",
    ] {
        assert!(
            figures[figure].as_f64().is_some_and(|v| v > 0.0),
            "{figure} missing or zero: {scale}"
        );
    }
}

/// Runs `dip-hub bench --json ARGS` (bounded: 120 s) and returns its JSON report
/// and its stderr, once it succeeded.
async fn run_bench(args: &[&str]) -> (serde_json::Value, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_dip-hub"))
        .args(["bench", "--json"])
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the bench finishes within 120 s")
        .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "bench failed: {stderr}");
    let report = serde_json::from_slice(&output.stdout).expect("stdout is the JSON report");
    (report, stderr)
}
