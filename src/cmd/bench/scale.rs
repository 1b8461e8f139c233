//! Scenario "scale": a national block list on one node.
//!
//! Owns: bulk-loading N distinct indicators (in steps: each step loads up to
//! its N on the database of the step before, measures, and restarts the hub) (phone numbers of about
//! `--scale-indicator-bytes` each, batched Publish from concurrent publishers)
//! into a fresh hub, then measuring what holding them costs and how the hub
//! serves them: load rate, the hub's resident memory after the load (steady,
//! once it has settled) and its peak, bytes on disk (per event and per
//! indicator, and against the encoded events), Lookup p50/p99 with several
//! clients, one full PHONE_NUMBER snapshot (rate and time, count and digest
//! checked), and the time from spawn until the hub answers after a restart on
//! the same database. Must never keep the snapshot in memory (it counts as it
//! reads) and never time the load as part of anything else.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Result, anyhow};

use crate::cmd::remote;
use dip_hub::proto;

use super::Workload;
use super::catchup;
use super::hub::{BenchDir, ChildHub, subscriber_org};
use super::lookup;
use super::report::{self, Latency, Outcome};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Indicators already loaded (by an earlier step on the same database).
    pub loaded: u64,
    /// Indicators loaded once this step's load is done.
    pub indicators: u64,
    pub indicator_bytes: usize,
    pub publishers: usize,
    pub batch: usize,
    pub lookup_clients: usize,
    pub lookup_duration: Duration,
    /// Bound on the snapshot read.
    pub timeout: Duration,
}

/// How long the hub gets to settle after the load before its steady memory is read.
const SETTLE: Duration = Duration::from_secs(5);

/// Stops `hub` (SIGTERM) and starts a new one on its database, noting how long
/// the new process took from spawn until it answered; returns the new hub.
pub async fn restart(
    hub: ChildHub,
    bench: &BenchDir,
    mut outcome: Outcome,
    startup: Duration,
) -> Result<(ChildHub, Result<Outcome>)> {
    // The peak reported is the loaded hub's, not the restarted one's.
    outcome.server_peak_rss_bytes = hub.peak_rss();
    hub.terminate().await?;
    let start = Instant::now();
    let hub = ChildHub::start(bench, "scale", startup).await?;
    let ready = start.elapsed().as_secs_f64();
    outcome.figures.insert("ready_after_restart_secs", ready);
    outcome.notes.push(format!(
        "restart on the loaded database: serving {ready:.2} s after spawn"
    ));
    Ok((hub, Ok(outcome)))
}

/// Loads the indicators, then measures memory, disk, lookups and a snapshot.
pub async fn run(hub: &ChildHub, bench: &BenchDir, plan: Plan) -> Result<Outcome> {
    let workload = &Workload::new(plan.indicator_bytes);
    tracing::info!(?plan, "bulk-loading indicators");
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    catchup::fill(
        hub,
        bench,
        workload,
        catchup::Plan {
            events: plan.indicators,
            batch: plan.batch,
            publishers: plan.publishers,
            timeout: plan.timeout,
            indicator_bytes: plan.indicator_bytes,
        },
        plan.loaded,
    )
    .await?;
    let load_secs = start.elapsed().as_secs_f64();
    let load_cpu = cpu.note();
    let load_rate = (plan.indicators - plan.loaded) as f64 / load_secs;
    let peak_after_load = hub.peak_rss();

    tokio::time::sleep(SETTLE).await;
    let steady = hub.rss();
    let disk = hub.disk_bytes()?;
    let encoded_event = encoded_event_len(workload);
    let encoded_events = encoded_event * plan.indicators;

    tracing::info!(clients = plan.lookup_clients, "looking up");
    let lookup_cpu = hub.cpu_meter();
    let (lookups, latency, errors) = lookup::measure(
        hub,
        bench,
        lookup::Plan {
            indicators: plan.indicators,
            clients: plan.lookup_clients,
            duration: plan.lookup_duration,
        },
    )
    .await?;
    let lookup_rate = lookups as f64 / plan.lookup_duration.as_secs_f64();
    let lookup_cpu = lookup_cpu.note();

    tracing::info!("a full PHONE_NUMBER snapshot");
    let snapshot_cpu = hub.cpu_meter();
    let (count, as_of, snapshot_secs) = snapshot(hub, bench, plan.timeout).await?;
    let snapshot_cpu = snapshot_cpu.note();
    if count != plan.indicators {
        return Err(anyhow!(
            "the snapshot as of {as_of} held {count} indicators, not the {} loaded",
            plan.indicators
        ));
    }
    let snapshot_rate = count as f64 / snapshot_secs;

    let mut outcome = Outcome::new(
        "scale",
        format!(
            "{} distinct phone numbers ({} loaded in this step) of {} B, {} publishers x batch {}",
            report::thousands(plan.indicators as f64),
            report::thousands((plan.indicators - plan.loaded) as f64),
            plan.indicator_bytes,
            plan.publishers,
            plan.batch
        ),
        load_rate,
        "indicators/s loaded",
    );
    outcome.latency_kind = Some("lookup");
    outcome.latency = Latency::of(&latency);
    outcome.errors = errors;
    let figures = &mut outcome.figures;
    figures.insert("indicators", plan.indicators as f64);
    figures.insert("load_secs", load_secs);
    figures.insert("load_rate_per_sec", load_rate);
    if let Some(steady) = steady {
        figures.insert("rss_steady_bytes", steady as f64);
    }
    if let Some(peak) = peak_after_load {
        figures.insert("rss_peak_after_load_bytes", peak as f64);
    }
    figures.insert("disk_bytes", disk as f64);
    figures.insert(
        "disk_bytes_per_indicator",
        disk as f64 / plan.indicators as f64,
    );
    figures.insert("encoded_event_bytes", encoded_event as f64);
    figures.insert(
        "disk_over_encoded_events",
        disk as f64 / encoded_events as f64,
    );
    figures.insert("lookups_per_sec", lookup_rate);
    figures.insert("snapshot_secs", snapshot_secs);
    figures.insert("snapshot_per_sec", snapshot_rate);
    outcome.notes.push(format!(
        "loaded {} in {load_secs:.1} s; {load_cpu}; RSS steady {}, peak {}",
        report::thousands((plan.indicators - plan.loaded) as f64),
        steady.map_or("unknown".into(), report::mebibytes),
        peak_after_load.map_or("unknown".into(), report::mebibytes),
    ));
    outcome.notes.push(format!(
        "disk {} = {:.0} B per indicator (one event each) = {:.2}x the encoded events ({encoded_event} B each)",
        report::mebibytes(disk),
        disk as f64 / plan.indicators as f64,
        disk as f64 / encoded_events as f64,
    ));
    outcome.notes.push(format!(
        "lookup: {} clients, {} lookups/s; {lookup_cpu}",
        plan.lookup_clients,
        report::thousands(lookup_rate)
    ));
    outcome.notes.push(format!(
        "snapshot of {} PHONE_NUMBER indicators as of #{as_of}: {snapshot_secs:.2} s = {} indicators/s; {snapshot_cpu}",
        report::thousands(count as f64),
        report::thousands(snapshot_rate)
    ));
    Ok(outcome)
}

/// Reads a full PHONE_NUMBER snapshot, counting as it goes; checks the count
/// the last message gives. The indicators are counted and skipped, not decoded
/// (the load generator shares the hub's two cores: decoding 30 million
/// `IndicatorState`s took it 0.5-0.6 of a core while the hub had about one).
async fn snapshot(hub: &ChildHub, bench: &BenchDir, timeout: Duration) -> Result<(u64, u64, f64)> {
    use tonic::codegen::http::uri::PathAndQuery;
    let channel = hub.channel(bench, &subscriber_org(1)).await?;
    let start = Instant::now();
    let read = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| anyhow!("the hub's channel is not ready: {e}"))?;
        let request = proto::SnapshotRequest {
            filter: Some(proto::Filter {
                kinds: vec![proto::IndicatorKind::PhoneNumber as i32],
                ..Default::default()
            }),
        };
        let mut stream = grpc
            .server_streaming(
                tonic::Request::new(request),
                PathAndQuery::from_static("/dip.v1.IndicatorHubService/Snapshot"),
                tonic_prost::ProstCodec::<proto::SnapshotRequest, CountedSnapshot>::default(),
            )
            .await
            .map_err(remote)?
            .into_inner();
        let mut count = 0u64;
        while let Some(message) = stream.message().await.map_err(remote)? {
            count += message.indicators;
            if message.last {
                if message.count != count {
                    return Err(anyhow!(
                        "the snapshot says it sent {} indicators; {count} arrived",
                        message.count
                    ));
                }
                return Ok((count, message.as_of_sequence));
            }
        }
        Err(anyhow!(
            "the snapshot stream ended without its last message"
        ))
    };
    let (count, as_of) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("the snapshot did not finish within {timeout:?}"))??;
    Ok((count, as_of, start.elapsed().as_secs_f64()))
}

/// A `SnapshotResponse` as the benchmark reads it: its indicators (field 2)
/// counted and skipped, the fields it checks decoded.
#[derive(Clone, Debug, Default)]
struct CountedSnapshot {
    as_of_sequence: u64,
    indicators: u64,
    last: bool,
    count: u64,
}

impl prost::Message for CountedSnapshot {
    /// Never sent.
    fn encode_raw(&self, _buf: &mut impl prost::bytes::BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> std::result::Result<(), prost::DecodeError> {
        use prost::encoding::{bool as boolean, skip_field, uint64};
        match tag {
            1 => uint64::merge(wire_type, &mut self.as_of_sequence, buf, ctx),
            2 => {
                self.indicators += 1;
                skip_field(wire_type, tag, buf, ctx)
            }
            4 => boolean::merge(wire_type, &mut self.last, buf, ctx),
            5 => uint64::merge(wire_type, &mut self.count, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = CountedSnapshot::default();
    }
}

/// The size of one event as the hub encodes it (a `SubscribeResponse.events`
/// entry): the indicator, a sequence, an event id, the source and a time.
fn encoded_event_len(workload: &Workload) -> u64 {
    let event = proto::Event {
        sequence: 30_000_000,
        event_id: uuid::Uuid::now_v7().to_string(),
        r#type: proto::EventType::Published as i32,
        indicator: Some(workload.plain(123_456_789)),
        source_org: super::hub::publisher_org(1),
        source_cert_serial: "5f3a9c0e1d2b4a6f8e7d9c0b1a2f3e4d5c6b7a89".into(),
        time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 123_456_789,
        }),
        ..Default::default()
    };
    // The entry's own tag and length prefix.
    let len = prost::Message::encoded_len(&event);
    (len + 1 + prost::length_delimiter_len(len)) as u64
}
