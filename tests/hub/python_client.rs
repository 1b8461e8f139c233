//! The Python example client (`examples/python/blocklist.py`) against a real hub:
//! it keeps a block list exact through publishes, sightings, actions, revokes and
//! a restart of the hub (a reconnect by consumer name), and its list and digest
//! equal a fresh Snapshot's.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dip_hub::client;
use dip_hub::proto::{self, ValueName};

use crate::harness::{TestHub, indicator, phone_indicator, publish, revoke_indicator};
use crate::provision;

/// The organisation the block list belongs to, and its filter.
const ORG: &str = "tsp-one";
const KINDS: [proto::IndicatorKind; 2] = [
    proto::IndicatorKind::PhoneNumber,
    proto::IndicatorKind::Imei,
];

/// The program, killed when the test ends however it ends.
struct Program {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    /// How many snapshots it has reported taking.
    snapshots: usize,
}

impl Program {
    fn start(hub: &TestHub, work: &Path) -> Program {
        let deps = provision::python_packages(&["grpcio", "grpcio-tools"]);
        let certs = hub.pki.certs(ORG);
        let mut command = Command::new(provision::python());
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/blocklist.py"))
            .arg("--hub")
            .arg(format!("localhost:{}", hub.port))
            .arg("--ca")
            .arg(&certs.ca)
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .args(["--consumer", "block-list", "--heartbeat-seconds", "1"])
            .args(["--kind", "PHONE_NUMBER", "--kind", "IMEI"])
            .arg("--state")
            .arg(work.join("state.json"))
            .arg("--stubs")
            .arg(work.join("stubs"))
            .env("PYTHONPATH", &deps)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON: {e}"));
                if send.send(value).is_err() {
                    return;
                }
            }
        });
        Program {
            child,
            lines,
            snapshots: 0,
        }
    }

    /// The first "synced" line at `head` (earlier lines are skipped), within 60 s.
    fn synced_at(&mut self, head: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line["event"] == "synced" && line["head"] == head => return line,
                Ok(line) => {
                    if line["event"] == "snapshot" {
                        self.snapshots += 1;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait();
                    panic!(
                        "the block list did not report synced at {head} within 60 s (exit: {status:?})"
                    )
                }
            }
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn filter() -> proto::Filter {
    proto::Filter {
        kinds: KINDS.iter().map(|k| *k as i32).collect(),
        ..Default::default()
    }
}

fn imei(n: u64) -> String {
    // 14 digits and the Luhn check digit.
    let body = format!("35{n:012}");
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap_or(0);
            if i % 2 == 0 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Checks the program's report and state file against a fresh Snapshot as of the same sequence.
async fn assert_exact(hub: &TestHub, line: &serde_json::Value, work: &Path) {
    let mut tsp = hub.client(ORG).await;
    let snapshot = client::snapshot(&mut tsp, filter())
        .await
        .expect("snapshot");
    assert_eq!(line["applied_through"], snapshot.as_of_sequence, "{line}");
    assert_eq!(
        line["digest"], snapshot.digest,
        "the program's digest is the hub's: {line}"
    );
    let expected: BTreeSet<(String, String)> = snapshot
        .indicators
        .iter()
        .filter_map(|s| s.indicator.as_ref())
        .map(|i| {
            let kind = proto::IndicatorKind::try_from(i.kind).expect("kind");
            (kind.short_name().to_string(), i.value.clone())
        })
        .collect();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("state.json")).expect("the state file"))
            .expect("the state file is JSON");
    let held: BTreeSet<(String, String)> = state["indicators"]
        .as_array()
        .expect("indicators")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("kind").to_string(),
                pair[1].as_str().expect("value").to_string(),
            )
        })
        .collect();
    assert_eq!(held, expected, "the local list is the hub's");
    assert_eq!(state["digest"], snapshot.digest);
    assert_eq!(line["count"], expected.len());
}

/// Publishes round `round`: phones and IMEIs in the filter, a URL outside it, a
/// TLP:RED number tsp-one may not see, a sighting and an action; then revokes
/// some. Returns the hub's head.
async fn round(hub: &TestHub, round: u64) -> u64 {
    let mut police = hub.client("mumbai-police").await;
    let mut tsp = hub.client(ORG).await;
    let base = round * 100;
    let mut batch: Vec<_> = (base..base + 20).map(phone_indicator).collect();
    batch.push(indicator(
        proto::IndicatorKind::Url,
        &format!("https://phish{round}.example/login"),
        proto::Category::Phishing,
    ));
    let mut red = phone_indicator(base + 50);
    red.tlp = proto::Tlp::Red as i32;
    batch.push(red);
    publish(&mut police, batch).await;
    let imeis: Vec<_> = (base..base + 10)
        .map(|n| {
            indicator(
                proto::IndicatorKind::Imei,
                &imei(n),
                proto::Category::StolenHandset,
            )
        })
        .collect();
    publish(&mut tsp, imeis).await;
    // A sighting of one of the police's numbers, and an action on another.
    publish(&mut tsp, vec![phone_indicator(base + 1)]).await;
    tsp.report_action(proto::ReportActionRequest {
        kind: proto::IndicatorKind::PhoneNumber as i32,
        value: crate::harness::phone(base + 2),
        action: proto::ActionType::NumberDisconnected as i32,
        note: String::new(),
        idempotency_key: String::new(),
    })
    .await
    .expect("action");
    for n in [base + 3, base + 4, base + 50] {
        revoke_indicator(
            &mut police,
            proto::IndicatorKind::PhoneNumber,
            &crate::harness::phone(n),
        )
        .await;
    }
    revoke_indicator(&mut tsp, proto::IndicatorKind::Imei, &imei(base + 5))
        .await
        .events[0]
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_block_list_stays_exact_through_revokes_and_a_hub_restart() {
    let work = tempfile::tempdir().expect("temp dir");
    let hub = TestHub::start().await;
    // Before the program starts: what its snapshot holds.
    round(&hub, 1).await;
    let mut program = Program::start(&hub, work.path());
    let head = round(&hub, 2).await;
    let line = program.synced_at(head);
    assert_eq!(program.snapshots, 1, "the first run starts from a snapshot");
    assert_exact(&hub, &line, work.path()).await;

    // The hub goes away and comes back on the same address: the program reconnects
    // with its consumer name and resumes after its last ack.
    let port = hub.port;
    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_at(pki, data, port, |_| {}).await;
    let head = round(&hub, 3).await;
    let line = program.synced_at(head);
    assert_exact(&hub, &line, work.path()).await;

    // A second run on the same state file continues without a new snapshot.
    drop(program);
    let head = round(&hub, 4).await;
    let mut program = Program::start(&hub, work.path());
    let line = program.synced_at(head);
    assert_exact(&hub, &line, work.path()).await;
    assert_eq!(
        program.snapshots, 0,
        "a restart with a state file resumes by consumer name"
    );
}
