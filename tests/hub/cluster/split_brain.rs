//! Split brain: the leader hub is paused (SIGSTOP) until its lease lapses and
//! another hub leads and writes; resumed (SIGCONT), the old leader's writes are
//! refused and the log does not fork: every hub serves the same 1..head.

use std::time::Duration;

use dip_hub::proto;
use tonic::Code;

use super::{WITHIN, events_through, publish_request, two_hubs, wait_for_leader};

const ORG: &str = "dot-regulator";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_that_wakes_after_losing_its_lease_cannot_fork_the_log() {
    let (nats, _pki, mut hubs, old) = two_hubs().await;
    let new = 1 - old;
    let mut old_client = hubs[old].client(ORG).await;
    let first = old_client
        .publish(publish_request(1, "before"))
        .await
        .expect("the leader writes")
        .into_inner();
    assert_eq!(first.events[0].sequence, 1);

    hubs[old].signal(libc::SIGSTOP);
    let (leader, took) = wait_for_leader(&[&hubs[new]], WITHIN).await;
    assert_eq!(leader, 0);
    eprintln!("the other hub leads {took:?} after the leader was paused");
    let mut new_client = hubs[new].client(ORG).await;
    let second = new_client
        .publish(publish_request(2, "during"))
        .await
        .expect("the new leader writes")
        .into_inner();
    assert_eq!(
        second.events[0].sequence, 2,
        "the new leader continues the log"
    );

    hubs[old].signal(libc::SIGCONT);
    // Woken, the old leader may still be inside its own lease view for a
    // moment; whatever it tries is refused (lease or expected last sequence).
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        old_client.publish(publish_request(3, "after")),
    )
    .await
    .expect("the old leader answers")
    .expect_err("the old leader's write is refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    eprintln!("the woken old leader refused: {}", refused.message());

    let third = new_client
        .publish(publish_request(4, "later"))
        .await
        .expect("the new leader still writes")
        .into_inner();
    assert_eq!(
        third.events[0].sequence, 3,
        "nothing forked: the next sequence is 3"
    );
    nats.wait_replicated(3).await;
    let on_new = events_through(&hubs[new], ORG, 3).await;
    let on_old = events_through(&hubs[old], ORG, 3).await;
    assert_eq!(on_new.len(), 3);
    assert_eq!(on_new, on_old, "both hubs serve the same log");
    assert_eq!(
        on_new
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>(),
        [&first, &second, &third]
            .iter()
            .map(|r| r.events[0].event_id.clone())
            .collect::<Vec<_>>(),
        "each acknowledged event at its sequence"
    );

    // Durable consumer cursors are shared: acknowledged on one hub, a consumer
    // resumes after it on the other.
    let acked = new_client
        .ack(proto::AckRequest {
            consumer: "block-list".into(),
            sequence: 2,
        })
        .await
        .expect("ack on the new leader")
        .into_inner();
    assert_eq!(acked.acknowledged_sequence, 2);
    let lower = old_client
        .ack(proto::AckRequest {
            consumer: "block-list".into(),
            sequence: 1,
        })
        .await
        .expect("a lower ack on the other hub")
        .into_inner();
    assert_eq!(
        lower.acknowledged_sequence, 2,
        "a cursor never moves back, across hubs"
    );
    let mut resumed = old_client
        .subscribe(proto::SubscribeRequest {
            consumer: "block-list".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe by consumer name on the other hub")
        .into_inner();
    // The first event it gets (a heartbeat may come first).
    let first_event = tokio::time::timeout(WITHIN, async {
        loop {
            let message = resumed
                .message()
                .await
                .expect("stream healthy")
                .expect("stream open");
            if let Some(event) = message.events.first() {
                return event.sequence;
            }
        }
    })
    .await
    .expect("an event within 30 s");
    assert_eq!(
        first_event, 3,
        "the consumer resumes after its shared cursor"
    );
}
