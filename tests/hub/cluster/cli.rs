//! `dip-hub subscribe` with several `--hub` addresses: when its hub dies it
//! moves to the next with `after_sequence`, without a gap or a duplicate.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{WITHIN, publish_request, two_hubs};

const ORG: &str = "dot-regulator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_moves_to_the_next_hub_when_its_hub_dies() {
    let (_nats, pki, mut hubs, leader) = two_hubs().await;
    let follower = 1 - leader;
    let mut publisher = hubs[leader].client(ORG).await;
    for n in 1..=3 {
        publisher
            .publish(publish_request(n, &format!("cli-{n}")))
            .await
            .expect("publish");
    }
    // The follower first: it is the one that dies.
    let mut subscribe = tokio::process::Command::new(env!("CARGO_BIN_EXE_dip-hub"))
        .args(["subscribe", "--as", ORG, "--limit", "6", "--hub"])
        .arg(format!("{},{}", hubs[follower].url(), hubs[leader].url()))
        .arg("--certs-dir")
        .arg(pki.pki_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("dip-hub subscribe starts");
    let mut lines = BufReader::new(subscribe.stdout.take().expect("stdout")).lines();
    let mut sequences = Vec::new();
    let mut next = async || {
        let line = tokio::time::timeout(WITHIN, lines.next_line())
            .await
            .expect("a line within 30 s")
            .expect("stdout readable")
            .expect("an event line before the end");
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        event["sequence"].as_u64().expect("a sequence")
    };
    for _ in 0..3 {
        sequences.push(next().await);
    }
    hubs[follower].kill();
    for n in 4..=6 {
        publisher
            .publish(publish_request(n, &format!("cli-{n}")))
            .await
            .expect("publish");
    }
    for _ in 0..3 {
        sequences.push(next().await);
    }
    assert_eq!(
        sequences,
        [1, 2, 3, 4, 5, 6],
        "no gap, no duplicate across the move"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), subscribe.wait())
        .await
        .expect("subscribe exits after --limit")
        .expect("exit status");
    assert!(status.success(), "{status}");
}
