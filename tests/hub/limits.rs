//! Per-organisation limits through the real server: beyond a limit the call is
//! RESOURCE_EXHAUSTED naming the limit and its value, everyone else is served,
//! and the regulator's overrides apply at once and survive a restart.

use std::time::Duration;

use dip_hub::client;
use dip_hub::proto;
use dip_hub::proto::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TestHub, phone_indicator, publish, subscribe_request};

/// The HTTP/2 receive windows of a client whose unread streams must stall at
/// once: per call small (16 KiB), so that a stream it does not read does not fill
/// megabytes of client buffers first; per connection 1 MiB, covering every call's,
/// so that unread calls do not hold back the one being read.
const NARROW_CALL_WINDOW: u32 = 16 * 1024;
const NARROW_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How long the hub may take to notice that a client went away.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

async fn admin(hub: &TestHub) -> AdminServiceClient<Channel> {
    let channel = client::channel(&hub.url(), &hub.pki.certs("dot-regulator"))
        .await
        .expect("the regulator connects");
    AdminServiceClient::new(channel)
}

pub async fn set_limits(hub: &TestHub, id: &str, limits: proto::OrgLimits) -> proto::Org {
    admin(hub)
        .await
        .set_org_limits(proto::SetOrgLimitsRequest {
            id: id.into(),
            limits: Some(limits),
        })
        .await
        .expect("the regulator sets limits")
        .into_inner()
        .org
        .expect("the organisation")
}

fn assert_exhausted(status: &tonic::Status, names: &[&str]) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    for name in names {
        assert!(
            status.message().contains(name),
            "{:?} should name {name:?}",
            status.message()
        );
    }
}

/// Retries `attempt` until it succeeds, for at most [`RELEASE_DEADLINE`]: the
/// hub gives a permit back when it sees the client's stream or connection end,
/// which the client cannot observe.
async fn eventually<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + RELEASE_DEADLINE;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(status) if tokio::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("still refused after {RELEASE_DEADLINE:?}: {status:?}"),
        }
    }
}

#[tokio::test]
async fn subscribe_streams_beyond_the_limit_are_refused_naming_it_and_the_override_persists() {
    let hub = TestHub::start().await;
    let org = set_limits(
        &hub,
        "alpha-bank",
        proto::OrgLimits {
            subscribe_streams: Some(3),
            ..Default::default()
        },
    )
    .await;
    let limits = org.limits.expect("limits in force");
    assert_eq!(limits.subscribe_streams, Some(3));
    assert_eq!(
        limits.connections,
        Some(32),
        "unset fields keep the BANK default"
    );

    let mut alpha = hub.client("alpha-bank").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let stream = alpha
            .subscribe(subscribe_request(0))
            .await
            .expect("within the limit");
        open.push(stream.into_inner());
    }
    let refused = alpha
        .subscribe(subscribe_request(0))
        .await
        .expect_err("the fourth stream is beyond the limit");
    assert_exhausted(&refused, &["subscribe_streams", "alpha-bank", "limit is 3"]);

    // Everyone else is unaffected: another bank subscribes and receives.
    let mut beta = hub.client("beta-bank").await;
    let mut beta_stream = beta
        .subscribe(subscribe_request(0))
        .await
        .expect("another organisation subscribes")
        .into_inner();
    let mut police = hub.client("mumbai-police").await;
    publish(&mut police, vec![phone_indicator(1)]).await;
    let events = crate::harness::collect_events(&mut beta_stream, 1).await;
    assert_eq!(events[0].sequence, 1);

    // Closing one stream gives its place back.
    drop(open.pop());
    let again = eventually(|| {
        let mut alpha = alpha.clone();
        async move { alpha.subscribe(subscribe_request(0)).await }
    })
    .await;
    drop(again);

    // The override is stored: after a restart it is still in force.
    drop(open);
    let (pki, data) = hub.stop().await;
    let hub = TestHub::start_with(pki, data, |_| {}).await;
    let orgs = admin(&hub)
        .await
        .list_orgs(proto::ListOrgsRequest {})
        .await
        .expect("list")
        .into_inner()
        .orgs;
    let alpha_org = orgs.iter().find(|o| o.id == "alpha-bank").expect("alpha");
    assert_eq!(alpha_org.limits.expect("limits").subscribe_streams, Some(3));
}

#[tokio::test]
async fn publish_and_lookup_rates_are_token_buckets_that_say_when_to_retry() {
    let hub = TestHub::start().await;
    set_limits(
        &hub,
        "mumbai-police",
        proto::OrgLimits {
            publish_events_per_second: Some(1),
            publish_burst: Some(5),
            lookups_per_second: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut police = hub.client("mumbai-police").await;
    let answer = publish(&mut police, (1..=5).map(phone_indicator).collect()).await;
    assert_eq!(answer.events.len(), 5, "the burst is available at once");

    let refused = police
        .publish(proto::PublishRequest {
            indicators: (6..=8).map(phone_indicator).collect(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("the bucket is empty");
    assert_exhausted(
        &refused,
        &[
            "publish_events_per_second",
            "1 events/s",
            "burst 5",
            "retry after",
        ],
    );
    let too_big = police
        .publish(proto::PublishRequest {
            indicators: (6..=11).map(phone_indicator).collect(),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("a batch larger than the burst never fits");
    assert_exhausted(&too_big, &["publish_burst", "6 events", "burst of 5"]);

    // Another organisation publishes at once, and nothing refused was stored.
    let mut delhi = hub.client("delhi-police").await;
    let answer = publish(&mut delhi, vec![phone_indicator(100)]).await;
    assert_eq!(answer.events[0].sequence, 6);

    let lookup = || proto::LookupRequest {
        kind: proto::IndicatorKind::PhoneNumber as i32,
        value: crate::harness::phone(1),
    };
    for _ in 0..2 {
        let found = police.lookup(lookup()).await.expect("within the rate");
        assert!(found.into_inner().found);
    }
    let refused = police.lookup(lookup()).await.expect_err("third at once");
    assert_exhausted(
        &refused,
        &["lookups_per_second", "2 indicators/s", "retry after"],
    );
    delhi
        .lookup(lookup())
        .await
        .expect("another organisation looks up");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_the_edge() {
    let hub = TestHub::start().await;
    set_limits(
        &hub,
        "beta-bank",
        proto::OrgLimits {
            connections: Some(2),
            ..Default::default()
        },
    )
    .await;
    let lookup = || proto::LookupRequest {
        kind: proto::IndicatorKind::PhoneNumber as i32,
        value: crate::harness::phone(1),
    };
    let mut first = hub.client("beta-bank").await;
    let mut second = hub.client("beta-bank").await;
    first.lookup(lookup()).await.expect("first connection");
    second.lookup(lookup()).await.expect("second connection");
    let third = client::connect(&hub.url(), &hub.pki.certs("beta-bank")).await;
    let refused = match third {
        Err(_) => true,
        Ok(mut third) => third.lookup(lookup()).await.is_err(),
    };
    assert!(refused, "a third connection is closed after the handshake");
    first
        .lookup(lookup())
        .await
        .expect("the open ones still work");
    let mut alpha = hub.client("alpha-bank").await;
    alpha
        .lookup(lookup())
        .await
        .expect("another organisation connects");

    drop(first);
    let deadline = tokio::time::Instant::now() + RELEASE_DEADLINE;
    loop {
        let attempt = match client::connect(&hub.url(), &hub.pki.certs("beta-bank")).await {
            Ok(mut client) => client.lookup(lookup()).await.is_ok(),
            Err(_) => false,
        };
        if attempt {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection gives its place back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn limits_out_of_range_are_invalid_naming_the_field() {
    let hub = TestHub::start().await;
    let refused = admin(&hub)
        .await
        .set_org_limits(proto::SetOrgLimitsRequest {
            id: "alpha-bank".into(),
            limits: Some(proto::OrgLimits {
                subscribe_streams: Some(0),
                ..Default::default()
            }),
        })
        .await
        .expect_err("zero streams");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("limits.subscribe_streams")
            && refused.message().contains("1 to"),
        "{}",
        refused.message()
    );
    let refused = admin(&hub)
        .await
        .set_org_limits(proto::SetOrgLimitsRequest {
            id: "no-such-org".into(),
            limits: None,
        })
        .await
        .expect_err("unknown organisation");
    assert_eq!(refused.code(), Code::NotFound);
    let mut bank = AdminServiceClient::new(
        client::channel(&hub.url(), &hub.pki.certs("alpha-bank"))
            .await
            .expect("connects"),
    );
    let refused = bank
        .set_org_limits(proto::SetOrgLimitsRequest {
            id: "alpha-bank".into(),
            limits: None,
        })
        .await
        .expect_err("only the regulator");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

fn assert_every_event_once_in_order(events: &[proto::Event], count: u64, who: &str) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=count).collect::<Vec<_>>(),
        "{who}: every event once, in order"
    );
}

/// The value of the sample `name` in a Prometheus exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Also the regression test for the first release's lost wake-up: a stream
/// released after it had caught up and gone live, with its client reading at
/// last and nothing more published, waited for the next event or heartbeat
/// before going back to the log. The heartbeat here is an hour, so such a
/// stream would miss the 30 s per message deadline.
#[tokio::test]
async fn stalled_streams_over_the_budget_release_it_and_then_receive_everything_once_in_order() {
    use crate::operations::OpsHub;
    const EVENTS: u64 = 3_000;
    const STALLED: usize = 12;
    let data = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let hub = TestHub::start_ops(crate::harness::TestPki::new(), data, |config| {
        config.subscriber_budget_bytes = 128 * 1024;
    })
    .await;
    let mut police = hub.client("mumbai-police").await;
    for batch in 0..EVENTS / 100 {
        let indicators = (0..100).map(|i| phone_indicator(batch * 100 + i)).collect();
        publish(&mut police, indicators).await;
    }
    let request = || proto::SubscribeRequest {
        heartbeat_seconds: 3600,
        ..subscribe_request(0)
    };
    // alpha-bank's streams catch up from the log and queue frames their client
    // does not read: together far more than the budget of 128 KiB.
    let alpha = hub
        .client_with_windows("alpha-bank", NARROW_CALL_WINDOW, NARROW_CONNECTION_WINDOW)
        .await;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let stream = alpha
            .clone()
            .subscribe(request())
            .await
            .expect("within alpha-bank's limit");
        stalled.push(stream.into_inner());
    }
    // Meanwhile another member reads the whole log.
    let mut beta = hub
        .client("beta-bank")
        .await
        .subscribe(request())
        .await
        .expect("beta subscribes")
        .into_inner();
    let events = crate::harness::collect_events(&mut beta, EVENTS as usize).await;
    assert_every_event_once_in_order(&events, EVENTS, "beta-bank");
    // The stalled clients read at last: each continues from the log where its
    // released frames began, with no gap and no duplicate.
    for (n, stream) in stalled.iter_mut().enumerate() {
        let events = crate::harness::collect_events(stream, EVENTS as usize).await;
        assert_every_event_once_in_order(&events, EVENTS, &format!("stalled stream {n}"));
    }
    let (_, metrics) = hub.http_get("/metrics").await;
    assert!(
        sample(&metrics, "dip_subscribers_released_total") > 0.0,
        "the budget released the streams most behind"
    );
}

/// Reads a Snapshot stream to its last message, `already` indicators having
/// been read from it; returns how many indicators came in all.
async fn read_snapshot(
    stream: &mut tonic::Streaming<proto::SnapshotResponse>,
    already: usize,
) -> usize {
    let mut indicators = already;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("snapshot messages arrive within 30 s")
            .expect("snapshot healthy")
            .expect("the stream ends with a last message");
        indicators += message.indicators.len();
        if message.last {
            assert_eq!(
                message.count, indicators as u64,
                "the last message counts all"
            );
            return indicators;
        }
    }
}

#[tokio::test]
async fn snapshots_beyond_the_limit_are_refused_naming_it_until_one_ends() {
    // More than the hub and the transport can hold for a client that does not
    // read (4 queued messages of up to 1,000 indicators, a 16 KiB window, a
    // 32 KiB send buffer), so the first snapshot stays open while unread.
    const INDICATORS: u64 = 12_000;
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    for batch in 0..INDICATORS / 100 {
        let indicators = (0..100).map(|i| phone_indicator(batch * 100 + i)).collect();
        publish(&mut police, indicators).await;
    }
    set_limits(
        &hub,
        "alpha-bank",
        proto::OrgLimits {
            snapshots: Some(1),
            ..Default::default()
        },
    )
    .await;
    let alpha = hub
        .client_with_windows("alpha-bank", NARROW_CALL_WINDOW, NARROW_CONNECTION_WINDOW)
        .await;
    let request = || proto::SnapshotRequest { filter: None };
    let mut first = alpha
        .clone()
        .snapshot(request())
        .await
        .expect("the first snapshot is within the limit")
        .into_inner();
    let message = first
        .message()
        .await
        .expect("healthy")
        .expect("a first message");
    assert!(!message.last, "the snapshot is still being streamed");

    let refused = alpha
        .clone()
        .snapshot(request())
        .await
        .expect_err("a second concurrent snapshot is beyond the limit");
    assert_exhausted(&refused, &["snapshots", "alpha-bank", "limit is 1"]);

    // Everyone else is unaffected: another bank takes a whole snapshot meanwhile.
    let mut beta = hub
        .client("beta-bank")
        .await
        .snapshot(request())
        .await
        .expect("another organisation takes a snapshot")
        .into_inner();
    assert_eq!(read_snapshot(&mut beta, 0).await, INDICATORS as usize);

    // Once alpha-bank's snapshot has ended, its place is given back.
    let all = read_snapshot(&mut first, message.indicators.len()).await;
    assert_eq!(all, INDICATORS as usize);
    let mut again = eventually(|| {
        let mut alpha = alpha.clone();
        async move { alpha.snapshot(request()).await }
    })
    .await
    .into_inner();
    assert_eq!(read_snapshot(&mut again, 0).await, INDICATORS as usize);
}

#[tokio::test]
async fn the_admin_command_line_shows_sets_and_resets_an_organisations_limits() {
    let hub = TestHub::start().await;
    let admin = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dip-hub"));
        command
            .args(["admin", "--hub", &hub.url(), "--as", "dot-regulator"])
            .arg("--certs-dir")
            .arg(hub.pki.pki_dir())
            .args(["limits", "--id"])
            .args(args);
        async move {
            tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("join")
                .expect("dip-hub admin runs")
        }
    };
    let limits = |output: &std::process::Output| {
        assert!(output.status.success(), "{output:?}");
        let line: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("one JSON line");
        assert_eq!(line["id"], "alpha-bank");
        line["limits"].clone()
    };

    let shown = limits(&admin(&["alpha-bank"]).await);
    assert_eq!(shown["subscribe_streams"], 64, "the BANK default: {shown}");
    let set = limits(&admin(&["alpha-bank", "--subscribe-streams", "3", "--snapshots", "1"]).await);
    assert_eq!(set["subscribe_streams"], 3);
    assert_eq!(set["snapshots"], 1);
    assert_eq!(set["connections"], 32, "a limit not given is the role's");
    // In force for the organisation's next call.
    let mut alpha = hub.client("alpha-bank").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(alpha.subscribe(subscribe_request(0)).await.expect("within"));
    }
    let refused = alpha
        .subscribe(subscribe_request(0))
        .await
        .expect_err("beyond the limit set by the command line");
    assert_exhausted(&refused, &["subscribe_streams", "limit is 3"]);
    assert_eq!(limits(&admin(&["alpha-bank"]).await), set, "shown as set");

    let reset = limits(&admin(&["alpha-bank", "--reset"]).await);
    assert_eq!(reset, shown, "back to the role's");

    let invalid = admin(&["alpha-bank", "--subscribe-streams", "0"]).await;
    assert!(!invalid.status.success());
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("limits.subscribe_streams"), "{stderr}");
    let unknown = admin(&["no-such-org"]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no organisation has the id"),
        "{unknown:?}"
    );
    let both = admin(&["alpha-bank", "--reset", "--snapshots", "2"]).await;
    assert!(!both.status.success(), "{both:?}");
}
