//! State checkpoints (issue 13): the state view lives on disk as of its latest
//! checkpoint plus, in memory, what changed since. A restart (clean or kill -9)
//! reads the checkpoint and replays only the log's tail, and answers exactly as
//! before; a snapshot is as of one checkpoint, stays exact while later
//! checkpoints overwrite what it has not sent yet, and a subscription after its
//! `as_of_sequence` makes it the current set.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dip_hub::client;
use dip_hub::proto::{self, IndicatorKind, IndicatorStatus};

use crate::child::ChildHub;
use crate::harness::*;

/// The answer to a lookup of each of `numbers`, by phone number.
async fn lookups(
    client: &mut Client,
    numbers: impl Iterator<Item = u64>,
) -> BTreeMap<String, proto::LookupResponse> {
    let mut answers = BTreeMap::new();
    for n in numbers {
        let answer = client
            .lookup(proto::LookupRequest {
                kind: IndicatorKind::PhoneNumber as i32,
                value: phone(n),
            })
            .await
            .expect("lookup answered")
            .into_inner();
        answers.insert(phone(n), answer);
    }
    answers
}

/// The digest of the active indicators among lookup answers, and how many.
fn active_digest(answers: &BTreeMap<String, proto::LookupResponse>) -> (String, usize) {
    let active: Vec<&proto::Indicator> = answers
        .values()
        .filter_map(|a| a.state.as_ref())
        .filter(|s| s.status == IndicatorStatus::Active as i32)
        .filter_map(|s| s.indicator.as_ref())
        .collect();
    (client::digest_of(active.iter().copied()), active.len())
}

async fn full_snapshot(client: &mut Client) -> client::Snapshot {
    tokio::time::timeout(
        Duration::from_secs(30),
        client::snapshot(client, proto::Filter::default()),
    )
    .await
    .expect("the snapshot ends within 30 s")
    .expect("the snapshot is whole (count and digest checked)")
}

/// Publishes numbers `from..to` in batches of 1000; the last sequence.
async fn publish_range(client: &mut Client, from: u64, to: u64) -> u64 {
    let mut last = 0;
    let mut n = from;
    while n < to {
        let end = (n + 1000).min(to);
        let published = publish(client, (n..end).map(phone_indicator).collect()).await;
        last = published.events.last().expect("events").sequence;
        n = end;
    }
    last
}

/// A restart after a clean stop reads the latest checkpoint and replays the
/// tail after it (revocations, sightings and new numbers published after the
/// checkpoint a snapshot asked for): every lookup answers exactly as before,
/// and a snapshot holds the same active set with the same digest.
#[tokio::test]
async fn a_restart_from_a_checkpoint_and_the_tail_answers_exactly_as_before() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let checkpointed = publish_range(&mut police, 0, 500).await;
    // A snapshot asks for a checkpoint covering everything applied when it came.
    let first = full_snapshot(&mut police).await;
    assert_eq!(first.as_of_sequence, checkpointed);
    assert_eq!(first.indicators.len(), 500);
    // The tail.
    for n in (0..500).step_by(10) {
        revoke_indicator(&mut police, IndicatorKind::PhoneNumber, &phone(n)).await;
    }
    let mut bank = hub.client("alpha-bank").await;
    let head = publish_range(&mut bank, 450, 600).await;
    let before = lookups(&mut police, 0..600).await;
    let (digest, active) = active_digest(&before);
    assert_eq!(
        active,
        600 - 45,
        "0..450 step 10 revoked; 450..500 published again"
    );

    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut police = hub.client("mumbai-police").await;
    assert_eq!(lookups(&mut police, 0..600).await, before);
    let after = full_snapshot(&mut police).await;
    assert_eq!(after.as_of_sequence, head, "nothing published since");
    assert_eq!((after.digest, after.indicators.len()), (digest, active));
}

fn child_args(pki: &TestPki, data_dir: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--certs-dir".into(),
        pki.pki_dir().into(),
        "--registry".into(),
        pki.registry().into(),
    ]
}

/// kill -9 after a checkpoint and an acknowledged tail: the restarted hub opens
/// on that checkpoint (or a later one), replays the rest, and has every
/// acknowledged event: the same lookups, the same active set and digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_a_checkpoint_and_the_tail_loses_nothing_acknowledged() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let db = data.path().join("db");
    let mut hub = ChildHub::start(&child_args(&pki, &db), &[]).await;
    hub.logged("hub serving").await;
    let url = hub.url();
    let mut police = client::connect(&url, &pki.certs("mumbai-police"))
        .await
        .expect("connects");
    publish_range(&mut police, 0, 2000).await;
    let checkpoint = full_snapshot(&mut police).await.as_of_sequence;
    for n in (0..2000).step_by(7) {
        revoke_indicator(&mut police, IndicatorKind::PhoneNumber, &phone(n)).await;
    }
    let head = publish_range(&mut police, 2000, 2600).await;
    let before = lookups(&mut police, 0..2600).await;
    hub.kill();

    let mut hub = ChildHub::start(&child_args(&pki, &db), &[]).await;
    let opened = hub
        .logged("state view opened on its latest checkpoint")
        .await;
    let opened_at = opened["checkpoint"].as_u64().expect("checkpoint field");
    assert!(
        (checkpoint..=head).contains(&opened_at),
        "opened on checkpoint {opened_at}; the snapshot's was {checkpoint}, the head {head}"
    );
    let serving = hub.logged("hub serving").await;
    assert_eq!(
        serving["head"].as_u64(),
        Some(head),
        "every acknowledged event"
    );
    let mut police = client::connect(&hub.url(), &pki.certs("mumbai-police"))
        .await
        .expect("connects");
    assert_eq!(lookups(&mut police, 0..2600).await, before);
    let (digest, active) = active_digest(&before);
    let after = full_snapshot(&mut police).await;
    assert_eq!((after.digest, after.indicators.len()), (digest, active));
    hub.kill();
}

/// A snapshot pins its checkpoint: while its client reads slowly, indicators it
/// has not sent yet are revoked and new ones published, and a second snapshot
/// makes a later checkpoint overwrite them on disk. The first still sends
/// exactly the set as of its own `as_of_sequence` (the revoked ones active, the
/// new ones absent); the second has the current set; and subscribing after the
/// first one's sequence turns it into the second.
#[tokio::test]
async fn a_snapshot_stays_exact_while_later_checkpoints_overwrite_it() {
    // More than the client's HTTP/2 window (2 MiB), the queue and a page hold:
    // most of the first snapshot is still to be read when the changes come.
    const LOADED: u64 = 50_000;
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let loaded_head = publish_range(&mut police, 0, LOADED).await;

    let mut reader = hub.client("tsp-one").await;
    let mut stream = reader
        .snapshot(proto::SnapshotRequest {
            filter: Some(proto::Filter::default()),
        })
        .await
        .expect("snapshot starts")
        .into_inner();
    let first_message = stream
        .message()
        .await
        .expect("snapshot healthy")
        .expect("a first message");
    let as_of = first_message.as_of_sequence;
    assert_eq!(as_of, loaded_head);
    let mut first: Vec<proto::IndicatorState> = first_message.indicators;
    assert!(
        !first_message.last,
        "{LOADED} indicators take many messages"
    );

    // The snapshot has sent its first message only (a few more are queued):
    // most states are still to be read when later checkpoints overwrite them.
    for n in LOADED - 50..LOADED {
        revoke_indicator(&mut police, IndicatorKind::PhoneNumber, &phone(n)).await;
    }
    publish_range(&mut police, LOADED, LOADED + 100).await;
    let second = full_snapshot(&mut police).await;
    assert!(second.as_of_sequence > as_of);
    assert_eq!(second.indicators.len() as u64, LOADED - 50 + 100);

    let digest = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the rest arrives within 30 s")
            .expect("snapshot healthy")
            .expect("open until its last message");
        assert_eq!(message.as_of_sequence, as_of, "one checkpoint throughout");
        first.extend(message.indicators);
        if message.last {
            assert_eq!(message.count, first.len() as u64);
            break message.digest;
        }
    };
    assert_eq!(
        first.len() as u64,
        LOADED,
        "as of {as_of}: all loaded, all active"
    );
    assert!(
        first
            .iter()
            .all(|s| s.status == IndicatorStatus::Active as i32 && s.last_sequence <= as_of),
        "every state as it was at {as_of}"
    );
    let values = |states: &[proto::IndicatorState]| -> Vec<String> {
        states
            .iter()
            .map(|s| s.indicator.as_ref().expect("indicator").value.clone())
            .collect()
    };
    // A snapshot is a set: its messages come in no promised order.
    let mut sent = values(&first);
    sent.sort();
    assert_eq!(sent, (0..LOADED).map(phone).collect::<Vec<_>>());
    assert_eq!(
        digest,
        client::digest_of(first.iter().filter_map(|s| s.indicator.as_ref()))
    );

    // The block-list recipe: the first snapshot plus the events after it.
    let mut set: BTreeMap<String, ()> = values(&first).into_iter().map(|v| (v, ())).collect();
    let mut events = reader
        .subscribe(subscribe_request(as_of))
        .await
        .expect("subscribes")
        .into_inner();
    let after = collect_events(&mut events, (second.as_of_sequence - as_of) as usize).await;
    for event in after {
        let value = event.indicator.expect("indicator").value;
        match proto::EventType::try_from(event.r#type) {
            Ok(proto::EventType::Revoked) => set.remove(&value),
            _ => set.insert(value, ()),
        };
    }
    let mut current = values(&second.indicators);
    current.sort();
    assert_eq!(set.into_keys().collect::<Vec<_>>(), current);
}
