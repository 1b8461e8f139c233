//! What a benchmark run found: one [`Outcome`] per scenario run, rendered as a
//! table for people or as JSON for machines.
//!
//! Owns: latency summaries (percentiles from an HDR histogram, in microseconds)
//! and the formatting of figures. Must never measure anything itself.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records, in microseconds (10 minutes); larger
/// values are clamped to it.
pub const MAX_LATENCY_US: u64 = 600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants that hdrhistogram accepts (low 1 ≤ high/2, sigfig ≤ 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Merges one task's latencies into the scenario's, and logs and counts in
/// `errors` the error the task stopped on (`who`: "a publisher", ...).
pub fn absorb(
    latency: &mut Histogram<u64>,
    part: &Histogram<u64>,
    error: Option<anyhow::Error>,
    who: &str,
    errors: &mut u64,
) -> anyhow::Result<()> {
    latency
        .add(part)
        .map_err(|e| anyhow::anyhow!("merging histograms: {e}"))?;
    if let Some(error) = error {
        tracing::warn!(%error, "{who} stopped on an error");
        *errors += 1;
    }
    Ok(())
}

/// Records a latency, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// The summary of `histogram`, or `None` when it recorded nothing.
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        Some(Latency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        })
    }
}

/// One scenario run and its figures.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// publish, fanout, catchup or lookup.
    pub scenario: &'static str,
    /// The configuration, in words (e.g. "8 publishers x batch 1, 300 B, 10 s").
    pub setup: String,
    /// The headline throughput.
    pub throughput: f64,
    /// What `throughput` counts per second (e.g. "acked events/s").
    pub unit: &'static str,
    /// Which latency is measured (ack, end-to-end, lookup), if any.
    pub latency_kind: Option<&'static str>,
    pub latency: Option<Latency>,
    /// Events a subscriber never received (fan-out, catch-up).
    pub missed: Option<u64>,
    /// Events a subscriber received twice or out of order.
    pub duplicated: Option<u64>,
    /// Failed requests (each is also reported on stderr).
    pub errors: u64,
    /// The hub process's peak resident memory (VmHWM), in bytes.
    pub server_peak_rss_bytes: Option<u64>,
    /// Further figures, in words (e.g. "fill: 120,000 events/s").
    pub notes: Vec<String>,
    /// Further figures as numbers, by name (e.g. `rss_steady_bytes`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub figures: std::collections::BTreeMap<&'static str, f64>,
}

impl Outcome {
    pub fn new(scenario: &'static str, setup: String, throughput: f64, unit: &'static str) -> Self {
        Outcome {
            scenario,
            setup,
            throughput,
            unit,
            latency_kind: None,
            latency: None,
            missed: None,
            duplicated: None,
            errors: 0,
            server_peak_rss_bytes: None,
            notes: Vec::new(),
            figures: Default::default(),
        }
    }
}

/// The whole run: the machine's load around it and every outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `/proc/loadavg` when the run started and when it ended.
    pub load_before: String,
    pub load_after: String,
    pub cpus: usize,
    pub outcomes: Vec<Outcome>,
}

/// A count with thousands separators: 1234567.8 → "1,234,568".
pub fn thousands(value: f64) -> String {
    let rounded = value.round().max(0.0) as u64;
    let digits = rounded.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration in microseconds, in the unit that reads best: "850 µs", "12.3 ms", "2.05 s".
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        let ms = us as f64 / 1_000.0;
        if ms < 100.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

/// Bytes as mebibytes: "142.3 MiB".
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The report as an aligned plain-text table, then one line of notes per outcome.
pub fn table(report: &Report) -> String {
    let header = [
        "scenario",
        "setup",
        "throughput",
        "latency",
        "p50",
        "p99",
        "p99.9",
        "missed/dup",
        "errors",
        "hub peak RSS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_string()).collect()];
    for outcome in &report.outcomes {
        let (p50, p99, p999) = match &outcome.latency {
            Some(l) => (micros(l.p50_us), micros(l.p99_us), micros(l.p999_us)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let loss = match (outcome.missed, outcome.duplicated) {
            (None, None) => "-".to_string(),
            (missed, duplicated) => format!(
                "{}/{}",
                missed.map_or("-".into(), |m| m.to_string()),
                duplicated.map_or("-".into(), |d| d.to_string())
            ),
        };
        rows.push(vec![
            outcome.scenario.to_string(),
            outcome.setup.clone(),
            format!("{} {}", thousands(outcome.throughput), outcome.unit),
            outcome.latency_kind.unwrap_or("-").to_string(),
            p50,
            p99,
            p999,
            loss,
            outcome.errors.to_string(),
            outcome.server_peak_rss_bytes.map_or("-".into(), mebibytes),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "load average before: {}; after: {}; {} CPUs\n",
        report.load_before, report.load_after, report.cpus
    );
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if index == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    for outcome in report.outcomes.iter().filter(|o| !o.notes.is_empty()) {
        out.push_str(&format!(
            "{} ({}): {}\n",
            outcome.scenario,
            outcome.setup,
            outcome.notes.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000 {
            record(&mut h, us);
        }
        let latency = Latency::of(&h).expect("recorded");
        assert_eq!(latency.count, 1000);
        assert!((499..=501).contains(&latency.p50_us), "{latency:?}");
        assert!((989..=991).contains(&latency.p99_us), "{latency:?}");
        assert!((998..=1000).contains(&latency.p999_us), "{latency:?}");
        assert_eq!(latency.max_us, 1000);
        assert_eq!(Latency::of(&histogram()), None);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.6), "1,234,568");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(micros(250_000), "250 ms");
        assert_eq!(micros(2_050_000), "2.05 s");
        assert_eq!(mebibytes(150 * 1024 * 1024), "150.0 MiB");
    }

    #[test]
    fn the_table_aligns_columns_and_lists_notes() {
        let mut outcome = Outcome::new("publish", "8 x batch 1".into(), 51_234.0, "acked events/s");
        outcome.latency_kind = Some("ack");
        outcome.latency = Some(Latency {
            count: 10,
            p50_us: 800,
            p99_us: 2_500,
            p999_us: 9_000,
            max_us: 9_100,
        });
        outcome.server_peak_rss_bytes = Some(64 * 1024 * 1024);
        outcome.notes.push("requests: 51,234/s".into());
        let mut fanout = Outcome::new("fanout", "100 x 2000/s".into(), 200_000.0, "deliveries/s");
        fanout.missed = Some(0);
        fanout.duplicated = Some(0);
        let report = Report {
            load_before: "0.10 0.20 0.30 1/100 1".into(),
            load_after: "1.00 0.50 0.40 1/100 2".into(),
            cpus: 2,
            outcomes: vec![outcome, fanout],
        };
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("0.10 0.20 0.30"), "{text}");
        let header = lines[1];
        let first = lines[3];
        let second = lines[4];
        // Every column starts at the same place in every row.
        let column = header.find("throughput").expect("header");
        assert_eq!(&first[column..column + 6], "51,234");
        assert_eq!(&second[column..column + 7], "200,000");
        assert!(first.contains("800 µs") && first.contains("2.5 ms") && first.contains("64.0 MiB"));
        assert!(second.contains("0/0"), "{text}");
        assert!(
            text.contains("publish (8 x batch 1): requests: 51,234/s"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["outcomes"][0]["latency"]["p99_us"], 2_500);
        assert_eq!(json["outcomes"][1]["missed"], 0);
    }
}
