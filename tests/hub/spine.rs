//! The spine: publish → subscribe → lookup, the catch-up/live handoff, restart
//! durability, and identity from the certificate.

use std::collections::HashSet;

use dip_hub::pki::{CertAuthority, Validity};
use dip_hub::proto::{self, Category, EventType, IndicatorKind};
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn publish_then_subscribe_then_lookup() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let response = publish(
        &mut police,
        vec![indicator(
            IndicatorKind::PhoneNumber,
            "098765 43210",
            Category::FraudCall,
        )],
    )
    .await;
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].sequence, 1);
    assert_eq!(response.events[0].r#type, EventType::Published as i32);
    assert!(!response.replayed);

    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    let event = &events[0];
    assert_eq!(event.sequence, 1);
    assert_eq!(event.event_id, response.events[0].event_id);
    assert_eq!(event.source_org, "mumbai-police");
    let indicator = event.indicator.as_ref().expect("indicator");
    assert_eq!(indicator.value, "+919876543210", "normalized to E.164");

    let found = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: "+91 98765-43210".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(found.found);
    let state = found.state.expect("state");
    assert_eq!(state.source_org, "mumbai-police");
    assert_eq!(state.reporters, vec!["mumbai-police".to_string()]);
    assert_eq!(state.last_sequence, 1);

    let missing = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: "9123456789".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(!missing.found);
}

/// Subscribers that join while publishers are busy see every event exactly once,
/// in order, across the hand-over from the log to the live feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catch_up_hands_over_to_live_without_gap_or_duplicate() {
    const PUBLISHERS: u64 = 4;
    const BATCHES: u64 = 40;
    const BATCH: u64 = 25;
    const TOTAL: u64 = PUBLISHERS * BATCHES * BATCH;
    let hub = TestHub::start().await;

    // One subscriber before anything is published, more as publishing goes on.
    let mut early = hub.client("dot-regulator").await;
    let mut early_stream = early
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();

    let (progress_tx, mut progress) = tokio::sync::mpsc::channel::<u64>(1024);
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client = hub.client("mumbai-police").await;
        let progress_tx = progress_tx.clone();
        publishers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let indicators = (0..BATCH)
                    .map(|i| phone_indicator(p * 1_000_000 + b * 1000 + i))
                    .collect();
                let response = publish(&mut client, indicators).await;
                let _ = progress_tx
                    .send(response.events.last().map_or(0, |e| e.sequence))
                    .await;
            }
        }));
    }
    drop(progress_tx);

    // Join mid-way: once some events are acknowledged, and later again.
    let mut late_streams = Vec::new();
    let mut joined_at = vec![TOTAL / 10, TOTAL / 2];
    while let Some(acked) = progress.recv().await {
        if joined_at.first().is_some_and(|at| acked >= *at) {
            joined_at.remove(0);
            let mut client = hub.client("delhi-police").await;
            late_streams.push(
                client
                    .subscribe(subscribe_request(0))
                    .await
                    .expect("subscribe")
                    .into_inner(),
            );
        }
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    assert_eq!(
        late_streams.len(),
        2,
        "both late subscribers joined while publishing"
    );

    for stream in std::iter::once(&mut early_stream).chain(late_streams.iter_mut()) {
        let events = collect_events(stream, TOTAL as usize).await;
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=TOTAL).collect();
        assert_eq!(sequences, expected, "every event exactly once, in order");
        let values: HashSet<_> = events
            .iter()
            .map(|e| e.indicator.as_ref().unwrap().value.clone())
            .collect();
        assert_eq!(values.len() as u64, TOTAL);
    }
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_event_and_continues_the_sequence() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let response = publish(&mut police, vec![phone_indicator(n)]).await;
        acked.push(response.events[0].clone());
    }
    drop(police);
    let (pki, data) = hub.stop().await;

    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 20).await;
    for (event, ack) in events.iter().zip(&acked) {
        assert_eq!(event.sequence, ack.sequence);
        assert_eq!(event.event_id, ack.event_id);
    }
    let mut police = hub.client("mumbai-police").await;
    let next = publish(&mut police, vec![phone_indicator(99)]).await;
    assert_eq!(
        next.events[0].sequence, 21,
        "the sequence continues after a restart"
    );
    let state = bank
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: phone(7),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(state.found, "the state view survives the restart");
}

#[tokio::test]
async fn a_resumed_subscription_continues_exactly_after_its_last_sequence() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, (0..10).map(phone_indicator).collect()).await;
    let mut bank = hub.client("alpha-bank").await;
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let first = collect_events(&mut stream, 10).await;
    drop(stream);
    publish(&mut police, (10..15).map(phone_indicator).collect()).await;
    let last = first.last().expect("events").sequence;
    let mut stream = bank
        .subscribe(subscribe_request(last))
        .await
        .expect("subscribe")
        .into_inner();
    let rest = collect_events(&mut stream, 5).await;
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (11..=15).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn subscribers_get_only_what_their_filter_asks_for() {
    let hub = TestHub::start().await;
    let mut tsp = hub.client("tsp-one").await;
    let mut stream = tsp
        .subscribe(proto::SubscribeRequest {
            filter: Some(proto::Filter {
                kinds: vec![IndicatorKind::Imei as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    publish(
        &mut police,
        vec![
            phone_indicator(1),
            indicator(
                IndicatorKind::Imei,
                "490154203237518",
                Category::StolenHandset,
            ),
            phone_indicator(2),
        ],
    )
    .await;
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sequence, 2);
    assert_eq!(
        events[0].indicator.as_ref().unwrap().kind,
        IndicatorKind::Imei as i32
    );
}

#[tokio::test]
async fn the_source_organisation_comes_from_the_certificate_not_the_request() {
    let hub = TestHub::start().await;
    let mut bank = hub.client("alpha-bank").await;
    let mut request = tonic::Request::new(proto::PublishRequest {
        indicators: vec![indicator(
            IndicatorKind::UpiId,
            "mule@okaxis",
            Category::MuleAccount,
        )],
        idempotency_key: String::new(),
    });
    // Attempts to claim another identity through metadata are ignored.
    request
        .metadata_mut()
        .insert("x-dip-org", "mumbai-police".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-source-org", "dot-regulator".parse().unwrap());
    bank.publish(request).await.expect("publish");
    let mut stream = bank
        .subscribe(subscribe_request(0))
        .await
        .expect("subscribe")
        .into_inner();
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events[0].source_org, "alpha-bank");
    assert!(
        !events[0].source_cert_serial.is_empty(),
        "attributed to the certificate"
    );
}

#[tokio::test]
async fn an_organisation_missing_from_the_registry_is_refused() {
    let hub = TestHub::start().await;
    let paths = hub.pki.paths();
    let ca = CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).unwrap(),
        &std::fs::read_to_string(paths.ca_key()).unwrap(),
    )
    .expect("hub CA");
    let ghost = ca
        .issue_client("ghost-org", Validity::days(1))
        .expect("cert");
    let certs = write_certs(
        &hub,
        "ghost",
        &ghost.cert_pem,
        &ghost.key_pem,
        &paths.ca_cert(),
    );
    let mut client = hub
        .client_with(&certs)
        .await
        .expect("TLS is fine: the CA signed it");
    let status = client
        .publish(proto::PublishRequest {
            indicators: vec![phone_indicator(1)],
            idempotency_key: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("ghost-org is not registered"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn certificates_from_another_ca_expired_or_missing_get_nothing() {
    let hub = TestHub::start().await;
    let paths = hub.pki.paths();

    let foreign = CertAuthority::generate("Some Other CA").expect("foreign CA");
    let impostor = foreign
        .issue_client("alpha-bank", Validity::days(1))
        .expect("cert");
    let certs = write_certs(
        &hub,
        "impostor",
        &impostor.cert_pem,
        &impostor.key_pem,
        &paths.ca_cert(),
    );
    assert_refused(&hub, &certs).await;

    let ca = CertAuthority::load(
        &std::fs::read_to_string(paths.ca_cert()).unwrap(),
        &std::fs::read_to_string(paths.ca_key()).unwrap(),
    )
    .expect("hub CA");
    let expired = ca
        .issue_client("alpha-bank", Validity::expired())
        .expect("cert");
    let certs = write_certs(
        &hub,
        "expired",
        &expired.cert_pem,
        &expired.key_pem,
        &paths.ca_cert(),
    );
    assert_refused(&hub, &certs).await;

    // No client certificate at all: a TLS client that only trusts the hub CA.
    let ca_pem = std::fs::read_to_string(paths.ca_cert()).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let outcome = async {
        let channel = tonic::transport::Endpoint::from_shared(hub.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        proto::indicator_hub_client::IndicatorHubClient::new(channel)
            .publish(proto::PublishRequest {
                indicators: vec![phone_indicator(1)],
                idempotency_key: String::new(),
            })
            .await
            .map_err(|s| s.to_string())
    }
    .await;
    assert!(outcome.is_err(), "no certificate, no service");

    // And the hub still serves a proper client.
    let mut police = hub.client("mumbai-police").await;
    let response = publish(&mut police, vec![phone_indicator(1)]).await;
    assert_eq!(
        response.events[0].sequence, 1,
        "nothing was stored for the refused clients"
    );
}

fn write_certs(
    hub: &TestHub,
    name: &str,
    cert_pem: &str,
    key_pem: &str,
    ca: &std::path::Path,
) -> dip_hub::client::ClientCerts {
    let dir = hub.data_dir().join(format!("client-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    dip_hub::client::ClientCerts {
        ca: ca.to_path_buf(),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// The connection, or failing that the first call, is refused.
async fn assert_refused(hub: &TestHub, certs: &dip_hub::client::ClientCerts) {
    let Ok(mut client) = hub.client_with(certs).await else {
        return;
    };
    let result = client
        .publish(proto::PublishRequest {
            indicators: vec![phone_indicator(1)],
            idempotency_key: String::new(),
        })
        .await;
    let status = result.expect_err("a refused certificate gets no service");
    assert_ne!(status.code(), Code::Ok);
}
