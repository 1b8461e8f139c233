//! Every node agrees on the registry: an Admin change made through one hub
//! (suspend, reinstate, onboard, limits) applies on every hub, also on one
//! restarted after the change; and on the shared durable consumers' limit.
//! No sleeps: each wait polls for the change to show, bounded by `WITHIN`.

use std::future::Future;
use std::time::Duration;

use dip_hub::client;
use dip_hub::cursor::MAX_CONSUMERS_PER_ORG;
use dip_hub::proto::admin_service_client::AdminServiceClient;
use dip_hub::proto::{self, OrgRole, OrgStatus};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::{ClusterHub, WITHIN, publish_request, two_hubs};
use crate::harness::{Client, collect_events, phone, subscribe_request};

const REGULATOR: &str = "dot-regulator";

async fn admin(hub: &ClusterHub) -> AdminServiceClient<Channel> {
    let channel = client::channel(&hub.url(), &hub.certs(REGULATOR))
        .await
        .expect("the regulator connects");
    AdminServiceClient::new(channel)
}

/// A Lookup by `client` (of a number nobody published): its outcome's code.
async fn lookup_code(client: &Client) -> Code {
    let answer = client
        .clone()
        .lookup(proto::LookupRequest {
            kind: proto::IndicatorKind::PhoneNumber as i32,
            value: phone(999),
        })
        .await;
    match answer {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Polls `check` until it holds, at most [`WITHIN`]; panics naming `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WITHIN;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {WITHIN:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every organisation as `hub` has it (ListOrgs).
async fn orgs(hub: &ClusterHub) -> Vec<proto::Org> {
    admin(hub)
        .await
        .list_orgs(proto::ListOrgsRequest {})
        .await
        .expect("ListOrgs")
        .into_inner()
        .orgs
}

async fn set_status(hub: &ClusterHub, id: &str, status: OrgStatus) {
    admin(hub)
        .await
        .set_org_status(proto::SetOrgStatusRequest {
            id: id.into(),
            status: status as i32,
            reason: "compliance review".into(),
        })
        .await
        .expect("SetOrgStatus");
}

/// Reads `stream` until it ends (cleanly or with an error), at most [`WITHIN`].
async fn ends(stream: &mut tonic::Streaming<proto::SubscribeResponse>, what: &str) {
    let end = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::time::timeout(WITHIN, end)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {WITHIN:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_change_on_one_hub_applies_on_every_hub_and_after_a_restart() {
    let (_nats, pki, mut hubs, leader) = two_hubs().await;
    let follower = 1 - leader;

    // alpha-bank follows the log on both hubs (each stream has an event, so it is open).
    let mut police = hubs[leader].client("mumbai-police").await;
    police
        .publish(publish_request(1, "first"))
        .await
        .expect("the leader writes");
    let mut alpha = Vec::new();
    for hub in &hubs {
        let mut client = hub.client("alpha-bank").await;
        let mut stream = client
            .subscribe(subscribe_request(0))
            .await
            .expect("alpha-bank subscribes")
            .into_inner();
        collect_events(&mut stream, 1).await;
        alpha.push((client, stream));
    }

    // Suspended through the follower: its streams end and its calls are
    // refused on both hubs.
    set_status(&hubs[follower], "alpha-bank", OrgStatus::Suspended).await;
    let answered = Instant::now();
    for (i, (client, stream)) in alpha.iter_mut().enumerate() {
        ends(stream, &format!("alpha-bank's stream on hub {i}")).await;
        let client = &*client;
        eventually(&format!("alpha-bank refused on hub {i}"), || async move {
            lookup_code(client).await == Code::PermissionDenied
        })
        .await;
        let role = if i == leader { "leader" } else { "follower" };
        eprintln!(
            "the suspension in force on the {role} within {:?} of the answer",
            answered.elapsed()
        );
    }
    let refused = alpha[leader]
        .0
        .subscribe(subscribe_request(0))
        .await
        .expect_err("a suspended organisation cannot subscribe on the leader");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("suspended"), "{refused:?}");

    // Reinstated through the leader: served again on both.
    set_status(&hubs[leader], "alpha-bank", OrgStatus::Active).await;
    for (i, (client, _)) in alpha.iter().enumerate() {
        eventually(
            &format!("alpha-bank served again on hub {i}"),
            || async move { lookup_code(client).await == Code::Ok },
        )
        .await;
    }

    // Onboarded through the follower: gamma-bank subscribes there and
    // publishes through the leader.
    admin(&hubs[follower])
        .await
        .onboard_org(proto::OnboardOrgRequest {
            id: "gamma-bank".into(),
            name: "Gamma Bank".into(),
            role: OrgRole::Bank as i32,
        })
        .await
        .expect("OnboardOrg on the follower");
    let gamma_certs = pki.issue("gamma-bank", hubs[follower].data_dir());
    let connect = |hub: &ClusterHub| {
        let (url, certs) = (hub.url(), gamma_certs.clone());
        async move { client::connect(&url, &certs).await.expect("gamma connects") }
    };
    let mut gamma_follower = connect(&hubs[follower]).await;
    let mut gamma_stream = gamma_follower
        .subscribe(subscribe_request(1))
        .await
        .expect("gamma-bank subscribes on the follower")
        .into_inner();
    let mut gamma_leader = connect(&hubs[leader]).await;
    let gamma = &gamma_leader;
    eventually("gamma-bank admitted on the leader", || async move {
        lookup_code(gamma).await == Code::Ok
    })
    .await;
    let published = gamma_leader
        .publish(publish_request(2, "gamma"))
        .await
        .expect("gamma-bank publishes through the leader")
        .into_inner();
    let seen = collect_events(&mut gamma_stream, 1).await;
    assert_eq!(seen[0].sequence, published.events[0].sequence);
    assert_eq!(seen[0].source_org, "gamma-bank");

    // Limits set through the follower apply on the leader.
    admin(&hubs[follower])
        .await
        .set_org_limits(proto::SetOrgLimitsRequest {
            id: "beta-bank".into(),
            limits: Some(proto::OrgLimits {
                subscribe_streams: Some(1),
                ..Default::default()
            }),
        })
        .await
        .expect("SetOrgLimits on the follower");
    let leader_hub = &hubs[leader];
    eventually("beta-bank's limit shown on the leader", || async {
        orgs(leader_hub).await.iter().any(|o| {
            o.id == "beta-bank" && o.limits.as_ref().and_then(|l| l.subscribe_streams) == Some(1)
        })
    })
    .await;
    let mut beta = hubs[leader].client("beta-bank").await;
    let _one = beta
        .subscribe(subscribe_request(0))
        .await
        .expect("beta-bank's first stream");
    let beyond = match beta.subscribe(subscribe_request(0)).await {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("a second stream is beyond the limit"),
    };
    assert_eq!(beyond.code(), Code::ResourceExhausted, "{beyond:?}");
    assert!(beyond.message().contains("subscribe_streams"), "{beyond:?}");

    // A hub down while the registry changes agrees once restarted, before
    // it answers anything.
    hubs[follower].kill();
    set_status(&hubs[leader], "tsp-one", OrgStatus::Suspended).await;
    hubs[follower].restart().await;
    let tsp = hubs[follower].client("tsp-one").await;
    assert_eq!(
        lookup_code(&tsp).await,
        Code::PermissionDenied,
        "the restarted hub applied the suspension before serving"
    );
    let gamma_restarted = connect(&hubs[follower]).await;
    assert_eq!(lookup_code(&gamma_restarted).await, Code::Ok);
    assert_eq!(
        orgs(&hubs[follower]).await,
        orgs(&hubs[leader]).await,
        "both hubs have the same registry"
    );
}

/// The limit of durable consumers per organisation counts the cursors every
/// node shares (the bucket), not a node's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_durable_consumer_limit_counts_the_shared_cursors() {
    let (_nats, _pki, hubs, leader) = two_hubs().await;
    // One event on both hubs, to acknowledge.
    hubs[leader]
        .client("mumbai-police")
        .await
        .publish(publish_request(1, "first"))
        .await
        .expect("the leader writes");
    for hub in &hubs {
        let mut stream = hub
            .client("alpha-bank")
            .await
            .subscribe(subscribe_request(0))
            .await
            .expect("subscribe")
            .into_inner();
        collect_events(&mut stream, 1).await;
    }
    let ack = |client: &mut Client, consumer: String| {
        let mut client = client.clone();
        async move {
            client
                .ack(proto::AckRequest {
                    consumer,
                    sequence: 1,
                })
                .await
        }
    };
    // All but one of alpha-bank's consumers through the first hub, the last
    // through the second (64 at a time).
    let mut first = hubs[0].client("alpha-bank").await;
    let names: Vec<String> = (0..MAX_CONSUMERS_PER_ORG)
        .map(|n| format!("desk-{n}"))
        .collect();
    for chunk in names[..MAX_CONSUMERS_PER_ORG - 1].chunks(64) {
        let acks = chunk.iter().map(|name| ack(&mut first, name.clone()));
        for answer in futures_util::future::join_all(acks).await {
            answer.expect("an ack within the limit");
        }
    }
    let mut second = hubs[1].client("alpha-bank").await;
    ack(&mut second, names[MAX_CONSUMERS_PER_ORG - 1].clone())
        .await
        .expect("the last consumer within the limit");
    // One more is refused on either hub; an existing one still acks, and
    // another organisation is not affected.
    for (i, client) in [&mut first, &mut second].into_iter().enumerate() {
        let refused = ack(client, format!("one-too-many-{i}"))
            .await
            .expect_err("beyond the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused
                .message()
                .contains(&format!("{MAX_CONSUMERS_PER_ORG} durable consumers")),
            "{refused:?}"
        );
        ack(client, names[0].clone())
            .await
            .expect("an existing consumer acks");
    }
    let mut beta = hubs[1].client("beta-bank").await;
    ack(&mut beta, "desk-0".into())
        .await
        .expect("another organisation's consumer");
}
