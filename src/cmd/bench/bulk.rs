//! Scenario "bulk": `dip-hub publish --file` of a large list, timed.
//!
//! Owns: writing a CSV file of N new indicators (the workload's size), then
//! loading it through the CLI's own bulk path ([`crate::cmd::bulk::load`]) as
//! one publisher, and timing the load from the first read of the file to the
//! summary (hashing included). Must never count a line the hub did not
//! acknowledge: the figures are the load's own summary.

use std::io::Write;

use anyhow::{Result, anyhow};
use tokio::time::Instant;

use crate::cmd::bulk::{self, input::Format};
use crate::cmd::io_error;

use super::Workload;
use super::hub::{BenchDir, ChildHub, publisher_org};
use super::report::{self, Outcome};

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub indicators: u64,
    pub batch: usize,
    pub in_flight: usize,
    pub indicator_bytes: usize,
}

pub async fn run(
    hub: &ChildHub,
    bench: &BenchDir,
    workload: &Workload,
    plan: Plan,
) -> Result<Outcome> {
    let file = bench.path().join("bulk.csv");
    let (path, description) = (file.clone(), "x".repeat(workload.description_len));
    let indicators = plan.indicators;
    tracing::info!(?plan, "writing the bulk file");
    tokio::task::spawn_blocking(move || write_file(&path, indicators, &description))
        .await
        .map_err(|e| anyhow!("writing the bulk file was interrupted: {e}"))??;
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    let client = hub.client(bench, &publisher_org(1)).await?;
    let options = bulk::Options {
        format: Format::Csv,
        batch: plan.batch,
        in_flight: plan.in_flight,
        rejects: bulk::rejects_beside(&file),
        progress: false,
    };
    tracing::info!(?plan, "loading");
    let cpu = hub.cpu_meter();
    let start = Instant::now();
    let summary = bulk::load(client, &file, &options).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu.note();
    let stored = summary.published + summary.sightings;
    let mut outcome = Outcome::new(
        "bulk",
        format!(
            "{} indicators, {} B, batch {}, {} in flight",
            report::thousands(plan.indicators as f64),
            plan.indicator_bytes,
            plan.batch,
            plan.in_flight
        ),
        stored as f64 / elapsed,
        "acked indicators/s",
    );
    outcome.errors = summary.refused + plan.indicators.saturating_sub(summary.records);
    outcome.notes.push(format!(
        "{} indicators stored in {elapsed:.2} s from a {:.0} MB file ({} refused)",
        report::thousands(stored as f64),
        bytes as f64 / 1e6,
        summary.refused
    ));
    outcome.notes.push(cpu);
    Ok(outcome)
}

/// A CSV file of `count` distinct phone numbers, each padded by `description`.
fn write_file(path: &std::path::Path, count: u64, description: &str) -> Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| io_error(format!("creating {}", path.display()), e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = (|| {
        writeln!(out, "kind,value,category,risk,tlp,description")?;
        for n in 0..count {
            writeln!(
                out,
                "PHONE_NUMBER,{},FRAUD_CALL,HIGH,GREEN,{description}",
                super::phone(n)
            )?;
        }
        out.flush()
    })();
    written.map_err(|e| io_error(format!("writing {}", path.display()), e))
}
