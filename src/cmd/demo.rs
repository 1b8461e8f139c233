//! `dip-hub demo`: a hub on a fresh embedded database, and simulated stakeholders
//! using it, printed as a readable story.
//!
//! Owns: the demo script only. It goes through the same public paths as any user
//! (the real server, real mTLS, the generated client). Must never reach into the
//! hub's internals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;

use anyhow::{Result, anyhow};
use dip_hub::client::{self, ClientCerts};
use dip_hub::config::{Config, TlsFiles};
use dip_hub::server::{Controls, Listeners};

use crate::cmd::{io_error, remote};
use dip_hub::indicator::{ActionType, Category, EventType, Kind, Risk, Tlp};
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;
use dip_hub::proto::{self, ValueName};

type Client = IndicatorHubServiceClient<Channel>;

/// Removes the demo's temporary database when the demo ends.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The database directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Development PKI directory (made if missing).
    #[arg(long, default_value = "certs/dev")]
    pub certs_dir: PathBuf,
    /// The organisation registry.
    #[arg(long, default_value = "certs/orgs.toml")]
    pub registry: PathBuf,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    dip_hub::pki::init_dev_pki_for_registry(&args.certs_dir, &args.registry)?;
    let (data_dir, _cleanup) = match args.data_dir {
        Some(dir) => (dir, None),
        None => {
            let dir = std::env::temp_dir().join(format!("dip-demo-{}", uuid::Uuid::now_v7()));
            (dir.clone(), Some(TempDir(dir)))
        }
    };
    let config = Config::new(
        data_dir.clone(),
        TlsFiles::dev(&args.certs_dir),
        args.registry,
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| io_error("binding a loopback port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_error("listener address", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, serving) = tokio::sync::oneshot::channel::<()>();
    let mut controls = Controls::new(async {
        let _ = stopped.await;
    });
    controls.ready = Some(Box::new(move || {
        let _ = ready.send(());
    }));
    let listeners = Listeners {
        grpc: listener,
        metrics: None,
        taxii: None,
    };
    let server = tokio::spawn(dip_hub::server::serve(config, listeners, controls));
    // The hub answers once its database is open and its state view replayed.
    if serving.await.is_err() {
        return match server.await {
            Ok(Err(error)) => Err(error.into()),
            _ => Err(anyhow!("the hub stopped before it could serve")),
        };
    }

    println!("== DIP Hub demo ==");
    println!(
        "hub on 127.0.0.1:{} (mutual TLS), database {}",
        addr.port(),
        data_dir.display()
    );
    println!();
    let url = format!("https://localhost:{}", addr.port());
    let connect = |org: &'static str| {
        let url = url.clone();
        let certs = ClientCerts::dev(&args.certs_dir, org);
        async move { client::connect(&url, &certs).await }
    };

    let (progress, watchers) = watch::channel(0u64);
    let mut listeners = Vec::new();
    for (org, kinds, role) in [
        (
            "alpha-bank",
            vec![Kind::PhoneNumber, Kind::UpiId, Kind::BankAccount, Kind::Url],
            "freezes, delinks and warns customers",
        ),
        (
            "tsp-one",
            vec![Kind::PhoneNumber, Kind::Imei, Kind::SmsHeader],
            "syncs its block list",
        ),
        (
            "chat-platform",
            vec![Kind::PhoneNumber],
            "deregisters fraud numbers",
        ),
        ("dot-regulator", vec![], "sees everything"),
    ] {
        let client = connect(org).await?;
        println!("{org:<14} subscribes to {} ({role})", kinds_label(&kinds));
        listeners.push(tokio::spawn(listen(org, client, kinds, watchers.clone())));
    }
    println!();

    let mut police = connect("mumbai-police").await?;
    let mut bank = connect("alpha-bank").await?;
    let mut tsp = connect("tsp-one").await?;
    let mut platform = connect("chat-platform").await?;
    let mut head = 0;

    step("mumbai-police reports fraud numbers from complaints (any format; the hub normalizes)");
    head = head.max(
        publish(
            &mut police,
            "mumbai-police",
            vec![
                indicator(
                    Kind::PhoneNumber,
                    "098765 43210",
                    Category::FraudCall,
                    Risk::VeryHigh,
                    Tlp::Green,
                    "digital-arrest scam calls",
                ),
                indicator(
                    Kind::PhoneNumber,
                    "+91-70123-45678",
                    Category::FraudCall,
                    Risk::High,
                    Tlp::Green,
                    "fake courier calls",
                ),
                indicator(
                    Kind::PhoneNumber,
                    "+880 1712 345678",
                    Category::VoipAbuse,
                    Risk::High,
                    Tlp::Amber,
                    "spoofed international calls",
                ),
            ],
        )
        .await?,
    );
    step("alpha-bank reports mule accounts seen in fraud complaints");
    head = head.max(
        publish(
            &mut bank,
            "alpha-bank",
            vec![
                indicator(
                    Kind::UpiId,
                    "Quick.Refund99@okaxis",
                    Category::MuleAccount,
                    Risk::VeryHigh,
                    Tlp::Amber,
                    "collects 'refunds'",
                ),
                indicator(
                    Kind::BankAccount,
                    "SBIN0001234 / 000123456789",
                    Category::MuleAccount,
                    Risk::High,
                    Tlp::Amber,
                    "layering account",
                ),
            ],
        )
        .await?,
    );
    step("alpha-bank hears from a customer about a number the police already reported: a sighting");
    head = head.max(
        publish(
            &mut bank,
            "alpha-bank",
            vec![indicator(
                Kind::PhoneNumber,
                "9876543210",
                Category::FraudCall,
                Risk::High,
                Tlp::Green,
                "customer complaint",
            )],
        )
        .await?,
    );
    step("tsp-one reports a stolen handset, a spam header and a disconnected number");
    head = head.max(
        publish(
            &mut tsp,
            "tsp-one",
            vec![
                indicator(
                    Kind::Imei,
                    "49-015420-323751-8",
                    Category::StolenHandset,
                    Risk::High,
                    Tlp::Green,
                    "reported stolen",
                ),
                indicator(
                    Kind::SmsHeader,
                    "VM-KYCUPD-S",
                    Category::Spam,
                    Risk::Medium,
                    Tlp::Clear,
                    "fake KYC update SMS",
                ),
                indicator(
                    Kind::PhoneNumber,
                    "6200012345",
                    Category::Disconnected,
                    Risk::VeryHigh,
                    Tlp::Green,
                    "re-verification failed",
                ),
            ],
        )
        .await?,
    );
    step(
        "mumbai-police shares a lead marked TLP:RED: only law enforcement and the regulator see it",
    );
    head = head.max(
        publish(
            &mut police,
            "mumbai-police",
            vec![indicator(
                Kind::PhoneNumber,
                "8123456789",
                Category::FraudCall,
                Risk::VeryHigh,
                Tlp::Red,
                "under investigation",
            )],
        )
        .await?,
    );
    step("chat-platform deregisters the fraud number and says so");
    head = head.max(
        report(
            &mut platform,
            "chat-platform",
            Kind::PhoneNumber,
            "+919876543210",
            ActionType::AccountDeregistered,
        )
        .await?,
    );
    step("a bank may not declare numbers disconnected; a wrong IMEI check digit is refused");
    refused(
        &mut bank,
        "alpha-bank",
        indicator(
            Kind::PhoneNumber,
            "9123456780",
            Category::Disconnected,
            Risk::High,
            Tlp::Green,
            "",
        ),
    )
    .await;
    refused(
        &mut tsp,
        "tsp-one",
        indicator(
            Kind::Imei,
            "490154203237519",
            Category::StolenHandset,
            Risk::High,
            Tlp::Green,
            "",
        ),
    )
    .await;
    step("mumbai-police withdraws one of its numbers: a false positive");
    let revoked = police
        .revoke(proto::RevokeRequest {
            kind: Kind::PhoneNumber as i32,
            value: "7012345678".into(),
            reason: "false positive: the number belongs to a courier company".into(),
            idempotency_key: String::new(),
        })
        .await;
    match revoked {
        Ok(response) => {
            let events = response.into_inner().events;
            head = head.max(events.iter().map(|e| e.sequence).max().unwrap_or(0));
            println!("  mumbai-police  ▶ revoke PHONE_NUMBER +917012345678 → #{head}");
        }
        Err(status) => println!("  mumbai-police  ✗ revoke refused: {}", status.message()),
    }

    step("alpha-bank looks the number up before a transfer");
    let state = bank
        .lookup(proto::LookupRequest {
            kind: Kind::PhoneNumber as i32,
            value: "+91 98765 43210".into(),
        })
        .await
        .map_err(remote)?
        .into_inner();
    if let Some(state) = state.state {
        println!("  {}", client::state_json(&state));
    }

    step(
        "tsp-two joins late: a snapshot of its block list as of one sequence, to follow from there",
    );
    let mut late = connect("tsp-two").await?;
    let filter = proto::Filter {
        kinds: [Kind::PhoneNumber, Kind::Imei, Kind::SmsHeader]
            .map(|k| k as i32)
            .to_vec(),
        ..Default::default()
    };
    let snapshot = client::snapshot(&mut late, filter).await.map_err(remote)?;
    println!(
        "  tsp-two        ◀ as of #{}: {} active indicators, digest {} (checked)",
        snapshot.as_of_sequence,
        snapshot.indicators.len(),
        snapshot.digest
    );
    for state in &snapshot.indicators {
        println!("    {}", client::csv_line(state));
    }

    // Wait until every subscriber has seen the hub's head (heartbeats carry it).
    println!();
    progress.send_replace(head);
    for listener in listeners {
        match tokio::time::timeout(Duration::from_secs(10), listener).await {
            Ok(Ok(Ok(seen))) => println!("{seen}"),
            Ok(Ok(Err(error))) => println!("a subscriber failed: {error}"),
            _ => println!("a subscriber did not catch up in time"),
        }
    }
    let _ = stop.send(());
    server
        .await
        .map_err(|e| anyhow!("the demo hub stopped abnormally: {e}"))??;
    println!("\nthe hub stopped cleanly; every acknowledged event was on disk before its answer.");
    Ok(())
}

fn step(text: &str) {
    println!("-- {text}");
}

fn kinds_label(kinds: &[Kind]) -> String {
    if kinds.is_empty() {
        return "every kind".into();
    }
    kinds
        .iter()
        .map(|k| k.short_name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn indicator(
    kind: Kind,
    value: &str,
    category: Category,
    risk: Risk,
    tlp: Tlp,
    description: &str,
) -> proto::Indicator {
    proto::Indicator {
        kind: kind as i32,
        value: value.into(),
        category: category as i32,
        risk: risk as i32,
        description: description.into(),
        valid_until: None,
        tlp: tlp as i32,
    }
}

async fn publish(client: &mut Client, org: &str, indicators: Vec<proto::Indicator>) -> Result<u64> {
    let raw: Vec<String> = indicators.iter().map(|i| i.value.clone()).collect();
    let response = client
        .publish(proto::PublishRequest {
            indicators,
            idempotency_key: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .map_err(remote)?
        .into_inner();
    for (value, event) in raw.iter().zip(&response.events) {
        let kind = EventType::try_from(event.r#type).map_or("?", |t| t.short_name());
        println!(
            "  {org:<14} ▶ publish {value:?} → #{} {kind}",
            event.sequence
        );
    }
    Ok(response
        .events
        .iter()
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0))
}

async fn report(
    client: &mut Client,
    org: &str,
    kind: Kind,
    value: &str,
    action: ActionType,
) -> Result<u64> {
    let response = client
        .report_action(proto::ReportActionRequest {
            kind: kind as i32,
            value: value.into(),
            action: action as i32,
            note: String::new(),
            idempotency_key: String::new(),
        })
        .await
        .map_err(remote)?
        .into_inner();
    let sequence = response
        .events
        .iter()
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0);
    println!(
        "  {org:<14} ▶ {} {value} → #{sequence}",
        action.short_name()
    );
    Ok(sequence)
}

async fn refused(client: &mut Client, org: &str, indicator: proto::Indicator) {
    let value = indicator.value.clone();
    let result = client
        .publish(proto::PublishRequest {
            indicators: vec![indicator],
            idempotency_key: String::new(),
        })
        .await;
    match result {
        Ok(_) => println!("  {org:<14} ▶ publish {value:?} was accepted (unexpected)"),
        Err(status) => println!("  {org:<14} ✗ {:?}: {}", status.code(), status.message()),
    }
}

/// Follows the hub as `org`, printing what arrives, until it has seen the head the
/// script announces; returns a one-line summary.
async fn listen(
    org: &'static str,
    mut client: Client,
    kinds: Vec<Kind>,
    mut target: watch::Receiver<u64>,
) -> Result<String> {
    let request = proto::SubscribeRequest {
        filter: Some(proto::Filter {
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            ..Default::default()
        }),
        heartbeat_seconds: 1,
        ..Default::default()
    };
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(remote)?
        .into_inner();
    let mut seen = 0u64;
    let mut by_type = BTreeMap::new();
    let mut count = 0;
    loop {
        let goal = *target.borrow_and_update();
        if goal > 0 && seen >= goal {
            break;
        }
        let message = tokio::select! {
            message = stream.message() => message.map_err(remote)?,
            _ = target.changed() => continue,
        };
        let Some(message) = message else { break };
        if let Some(heartbeat) = message.heartbeat {
            seen = seen.max(heartbeat.head_sequence);
        }
        for event in message.events {
            seen = seen.max(event.sequence);
            count += 1;
            let event_type = EventType::try_from(event.r#type).map_or("?", |t| t.short_name());
            *by_type.entry(event_type).or_insert(0) += 1;
            let indicator = event.indicator.unwrap_or_default();
            println!(
                "  {org:<14} ◀ #{} {event_type} {} {} ({}, {}) from {}",
                event.sequence,
                Kind::try_from(indicator.kind).map_or("?", |k| k.short_name()),
                indicator.value,
                Category::try_from(indicator.category).map_or("?", |c| c.short_name()),
                Risk::try_from(indicator.risk).map_or("?", |r| r.short_name()),
                event.source_org,
            );
        }
    }
    Ok(format!("{org:<14} received {count} events: {by_type:?}"))
}
