//! Events in blocks (issues 12 and 13): the log keeps a group's events under a
//! few keys, and a data directory written before blocks (one key per event) is
//! opened by this version and served as it was, with new events after it.

use std::path::Path;

use dip_hub::log::{Log, encode_record};
use dip_hub::proto::{self, IndicatorKind};

use crate::harness::*;

/// Every event from the start, by subscribing after sequence 0.
async fn all_events(client: &mut Client, count: usize) -> Vec<proto::Event> {
    let mut stream = client
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe accepted")
        .into_inner();
    collect_events(&mut stream, count).await
}

/// Events after `after`, at least `count` of them.
async fn events_after(client: &mut Client, after: u64, count: usize) -> Vec<proto::Event> {
    let mut stream = client
        .subscribe(subscribe_request(after))
        .await
        .expect("subscribe accepted")
        .into_inner();
    collect_events(&mut stream, count).await
}

/// Rewrites the `events` tree of the stopped hub's database in the format of
/// versions before blocks: one key per event (its sequence), the record as its
/// value. Returns how many events it holds.
fn rewrite_one_key_per_event(db: &Path) -> u64 {
    let records = {
        let log = Log::open(db).expect("open the log");
        let head = log.head().expect("head");
        log.read(1, head, usize::MAX, usize::MAX).expect("read")
    };
    let sled = sled::Config::new().path(db).open().expect("open sled");
    let events = sled.open_tree("events").expect("events tree");
    assert!(
        (events.len() as u64) < records.len() as u64 / 4,
        "this version stored {} events under {} keys: in blocks",
        records.len(),
        events.len()
    );
    events.clear().expect("clear");
    for record in &records {
        events
            .insert(record.sequence.to_be_bytes(), encode_record(record))
            .expect("insert");
    }
    sled.flush().expect("flush");
    assert_eq!(events.len(), records.len());
    records.len() as u64
}

#[tokio::test]
async fn a_data_directory_with_one_key_per_event_is_served_whole_and_continued() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    for batch in [(0, 300), (300, 301), (301, 1000)] {
        publish(
            &mut police,
            (batch.0..batch.1).map(phone_indicator).collect(),
        )
        .await;
    }
    for n in (0..1000).step_by(50) {
        revoke_indicator(&mut police, IndicatorKind::PhoneNumber, &phone(n)).await;
    }
    let before = all_events(&mut police, 1020).await;
    let (pki, data) = hub.stop().await;
    assert_eq!(rewrite_one_key_per_event(&data.path().join("db")), 1020);

    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    assert_eq!(all_events(&mut bank, 1020).await, before);
    assert_eq!(events_after(&mut bank, 299, 721).await, before[299..]);
    let revoked = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(50),
        })
        .await
        .expect("lookup answered")
        .into_inner();
    assert_eq!(
        revoked.state.map(|s| s.status),
        Some(proto::IndicatorStatus::Revoked as i32),
        "the state replayed from per-event records"
    );

    // New events go in blocks after the old keys, and both read as one log.
    let mut police = hub.client("mumbai-police").await;
    let added = publish(&mut police, (1000..1500).map(phone_indicator).collect()).await;
    assert_eq!(added.events.first().map(|e| e.sequence), Some(1021));
    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    let all = all_events(&mut bank, 1520).await;
    assert_eq!(all[..1020], before[..]);
    let sequences: Vec<u64> = all.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=1520).collect::<Vec<u64>>());
    let middle = events_after(&mut bank, 1015, 10).await;
    assert_eq!(
        middle[..10],
        all[1015..1025],
        "from inside an old key's range"
    );
    let next = publish(&mut bank, vec![phone_indicator(5000)]).await;
    assert_eq!(next.events.first().map(|e| e.sequence), Some(1521));
}
