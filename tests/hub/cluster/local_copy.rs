//! The local copy is a cache of the stream: a cluster hub does not sync its
//! local sled per group (durability is the NATS quorum's), so a kill -9 under
//! load may lose its local tail. Restarted, it resumes from its local head,
//! reads the rest from the stream, and ends with the same log and the same
//! Snapshot digest as the others. Then, on the same NATS cluster, a local
//! copy whose checkpoint is ahead of its events is repaired from the stream.
//! Bounded: a few seconds of load, every wait capped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dip_hub::backend::LogBackend;
use dip_hub::cluster::Node;
use dip_hub::frame;
use dip_hub::log::Log;
use dip_hub::proto;
use tokio::time::Instant;

use super::{NatsCluster, WITHIN, events_through, snapshot, two_hubs};
use crate::harness::phone_indicator;

const ORG: &str = "dot-regulator";
/// Indicators per Publish: many events per group, as under real load.
const BATCH: u64 = 100;
/// Most Publish requests the load sends (it stops earlier when told).
const MAX_REQUESTS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_killed_under_load_catches_up_from_the_stream_and_agrees_with_the_others() {
    let (nats, _pki, mut hubs, leader) = two_hubs().await;
    let follower = 1 - leader;

    // Load on the leader: batches of 100 new indicators, each with its key.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (mut client, acked, stop) =
            (hubs[leader].client(ORG).await, acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut head = 0;
            for request in 0..MAX_REQUESTS {
                if stop.is_cancelled() {
                    break;
                }
                let indicators = (0..BATCH)
                    .map(|i| phone_indicator(request * BATCH + i))
                    .collect();
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.publish(proto::PublishRequest {
                        indicators,
                        idempotency_key: format!("local-copy-{request}"),
                    }),
                )
                .await
                .expect("the leader answers within 10 s")
                .expect("the leader takes the batch")
                .into_inner();
                assert_eq!(answer.events.len() as u64, BATCH);
                head = answer.events.last().map_or(head, |e| e.sequence);
                acked.fetch_add(BATCH, Ordering::Release);
            }
            head
        })
    };

    // kill -9 the follower while it applies the load, then restart it.
    let until = Instant::now() + WITHIN;
    while acked.load(Ordering::Acquire) < 3_000 {
        assert!(
            Instant::now() < until,
            "3,000 events acknowledged within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "kill -9 the follower hub {} after {} acknowledged events",
        hubs[follower].addr(),
        acked.load(Ordering::Acquire)
    );
    hubs[follower].kill();
    let killed_at = acked.load(Ordering::Acquire);
    while acked.load(Ordering::Acquire) < killed_at + 2_000 {
        assert!(
            Instant::now() < until,
            "the leader goes on while the follower is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hubs[follower].restart().await;
    let restarted_at = acked.load(Ordering::Acquire);
    while acked.load(Ordering::Acquire) < restarted_at + 2_000 {
        assert!(
            Instant::now() < until + WITHIN,
            "load goes on after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let head = load.await.expect("the load finished");
    let lasts = nats.wait_replicated(head).await;
    eprintln!("NATS nodes' last sequences: {lasts:?}; acknowledged head {head}");

    // Both hubs serve 1..head without a gap and give the same Snapshot at head.
    let mut snapshots = Vec::new();
    for hub in &hubs {
        let events = events_through(hub, ORG, head).await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=head).collect::<Vec<_>>(),
            "hub {} serves 1..{head} without a gap",
            hub.addr()
        );
        snapshots.push(snapshot(hub, ORG).await);
    }
    assert_eq!(snapshots[0].0, head, "the Snapshot is as of the head");
    assert_eq!(
        snapshots[0], snapshots[1],
        "the restarted hub gives the same Snapshot (as_of, digest, count) as the leader"
    );
    assert_eq!(snapshots[0].2, head, "one active indicator per event");

    // Killed again right after catching up, it restarts from its local head
    // and still agrees: a tail lost twice is read twice.
    hubs[follower].kill();
    hubs[follower].restart().await;
    let events = events_through(&hubs[follower], ORG, head).await;
    assert_eq!(events.len() as u64, head);
    assert_eq!(snapshot(&hubs[follower], ORG).await, snapshots[0]);

    // (On the same NATS cluster, to start no other.)
    a_checkpoint_ahead_of_the_local_log_is_repaired_from_the_stream(&nats, &events[..5]).await;
}

/// A local copy whose state checkpoint is ahead of its events (a disk that
/// lost synced writes: 2 events kept, checkpoint at 5) is repaired from the
/// stream when the node opens it: the missing events are fetched into the
/// local log before any replay, the same the hubs serve (`served`, 1..5).
async fn a_checkpoint_ahead_of_the_local_log_is_repaired_from_the_stream(
    nats: &NatsCluster,
    served: &[proto::Event],
) {
    let servers: Vec<String> = nats.urls().split(',').map(str::to_owned).collect();
    let node = Node::join(&servers, "127.0.0.1:9100".into())
        .await
        .expect("joins the cluster");
    let dir = tempfile::tempdir().expect("dir");
    let damaged = Log::open(dir.path()).expect("log");
    let kept = tokio::task::spawn_blocking({
        let factory = node.backend_factory();
        move || {
            // The first two events as the stream holds them (read through a
            // repair of an empty copy), then the checkpoint at 5 without 3..5.
            let scratch = tempfile::tempdir().expect("dir");
            let source = Log::open(scratch.path()).expect("log");
            source
                .states()
                .checkpoint(&[], 2, Default::default())
                .expect("checkpoint");
            let _ = factory(source.clone()).expect("repairs the scratch copy");
            source.read(1, 2, 2, usize::MAX).expect("read")
        }
    })
    .await
    .expect("reads");
    damaged.append(&kept).expect("append");
    damaged
        .states()
        .checkpoint(&[], 5, Default::default())
        .expect("checkpoint");
    damaged.flush().expect("flush");
    let factory = node.backend_factory();
    let (head, records) = tokio::task::spawn_blocking(move || {
        let backend = factory(damaged.clone()).expect("the backend opens, repairing");
        (
            backend.head().expect("head"),
            damaged.read(1, 5, 10, usize::MAX).expect("read"),
        )
    })
    .await
    .expect("opens");
    assert_eq!(head, 5, "the local head is the checkpoint's again");
    let repaired: Vec<proto::Event> = records
        .iter()
        .map(|r| frame::decode_event_entry(&r.entry).expect("an event"))
        .collect();
    assert_eq!(
        repaired, served,
        "the events are the stream's, at their sequences"
    );
}
