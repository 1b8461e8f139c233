//! `dip-hub publish --file`: bulk load a file of indicators over PublishStream.
//!
//! Owns: the load's loop: batches from the file ([`input`]) sent with many in
//! flight, each answer tallied in order (published, sightings, already loaded
//! by an earlier run, refused), a batch the hub refuses resent line by line so
//! that only the bad lines are refused (with their reasons in the reject file),
//! rate refusals resent after the delay the hub names, a broken stream reopened
//! and its unanswered batches resent with the same keys; the progress bar on a
//! terminal and the summary. Must never resend under a different key (a rerun
//! of the same file publishes nothing twice) nor count a line not answered.

pub mod input;

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::cmd::io_error;
use dip_hub::client::{self, PublishSender, PublishStream, StreamAnswer};
use dip_hub::proto;
use dip_hub::proto::indicator_hub_service_client::IndicatorHubServiceClient;

use input::{Batch, Format, Item};

/// How often one batch is resent after a rate refusal or UNAVAILABLE before
/// its lines are given up as refused.
const MAX_ATTEMPTS: u32 = 100;
/// How often in a row the stream may break without an answer in between.
const MAX_RECONNECTS: u32 = 5;
/// The wait before resending when the hub names no delay.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// Most Publish requests in flight on the stream.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Batches read ahead of the stream.
const READ_AHEAD: usize = 64;

/// How to load.
#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    /// Indicators per Publish (1..1000). A rerun must use the same size to
    /// find the same idempotency keys.
    pub batch: usize,
    /// Publish requests in flight on the stream.
    pub in_flight: usize,
    /// Where refused lines go (JSON lines: line, code, reason).
    pub rejects: PathBuf,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

impl Options {
    /// The defaults for `file`: `format`, or the one its name says; rejects
    /// beside it.
    pub fn for_file(file: &Path, format: Option<Format>) -> Result<Options> {
        Ok(Options {
            format: format.map_or_else(|| Format::of(file), Ok)?,
            batch: 500,
            in_flight: 16,
            rejects: rejects_beside(file),
            progress: std::io::stderr().is_terminal(),
        })
    }
}

/// `FILE.rejects.jsonl`.
pub fn rejects_beside(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".rejects.jsonl");
    PathBuf::from(name)
}

/// What a load did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub file: String,
    /// Records read (lines of indicators, refused ones included).
    pub records: u64,
    /// New PUBLISHED events.
    pub published: u64,
    /// SIGHTING events: another organisation had reported the indicator.
    pub sightings: u64,
    /// Lines an earlier run of the same file had loaded (answered as replays).
    pub already_loaded: u64,
    /// Lines refused, each in the reject file with its line and reason.
    pub refused: u64,
    pub reject_file: String,
    pub seconds: f64,
    /// Records per second.
    pub rate: f64,
}

/// Loads `file` into the hub over PublishStream.
pub async fn load(
    mut client: IndicatorHubServiceClient<Channel>,
    file: &Path,
    options: &Options,
) -> Result<Summary> {
    let started = Instant::now();
    let path = file.to_path_buf();
    let fingerprint = tokio::task::spawn_blocking(move || input::fingerprint(&path))
        .await
        .map_err(|e| anyhow!("hashing the file was interrupted: {e}"))??;
    let hash = fingerprint.hash.clone();
    let progress = progress_bar(options.progress, fingerprint.lines);

    let (items, mut incoming) = mpsc::channel(READ_AHEAD);
    let reader = {
        let (path, format, batch, hash) = (
            file.to_path_buf(),
            options.format,
            options.batch,
            hash.clone(),
        );
        tokio::task::spawn_blocking(move || {
            input::read(&path, format, &hash, batch, |item| {
                items.blocking_send(item).is_ok()
            })
        })
    };
    let rejects = std::fs::File::create(&options.rejects)
        .map_err(|e| io_error(format!("creating {}", options.rejects.display()), e))?;
    let mut load = Load {
        hash,
        summary: Summary {
            file: file.display().to_string(),
            reject_file: options.rejects.display().to_string(),
            ..Summary::default()
        },
        rejects: std::io::BufWriter::new(rejects),
        progress,
        ready: VecDeque::new(),
        delayed: VecDeque::new(),
        in_flight: VecDeque::new(),
        next_id: 0,
    };
    let window = options.in_flight.max(1);
    let mut reconnects = 0;
    let mut input_done = false;
    'streams: loop {
        let stream = PublishStream::open(&mut client, window)
            .await
            .map_err(crate::cmd::remote)?;
        let (sender, mut answers) = stream.split();
        // A stream opened again: what the last one left unanswered goes first.
        while let Some(sent) = load.in_flight.pop_back() {
            load.ready.push_front(sent.batch);
        }
        loop {
            load.release_due();
            while load.in_flight.len() < window
                && let Some(batch) = load.ready.pop_front()
            {
                load.send(&sender, batch).await;
            }
            if input_done && load.idle() {
                break 'streams;
            }
            let due = load.delayed.front().map(|(at, _)| *at);
            tokio::select! {
                answer = client::next_answer(&mut answers), if !load.in_flight.is_empty() => match answer {
                    Ok(Some(answer)) => {
                        reconnects = 0;
                        load.answered(answer)?;
                    }
                    Ok(None) | Err(_) if reconnects < MAX_RECONNECTS => {
                        reconnects += 1;
                        let status = answer.err();
                        tracing::warn!(?status, reconnects, "the PublishStream broke; opening another and resending what it left unanswered");
                        tokio::time::sleep(DEFAULT_RETRY * reconnects).await;
                        continue 'streams;
                    }
                    Ok(None) => return Err(anyhow!("the hub ended the PublishStream with requests unanswered, {MAX_RECONNECTS} times in a row")),
                    Err(status) => return Err(crate::cmd::remote(status)),
                },
                item = incoming.recv(), if !input_done && load.ready.is_empty() && load.in_flight.len() < window => match item {
                    Some(Item::Batch(batch)) => load.send(&sender, batch).await,
                    Some(Item::Refused(line, reason)) => load.refuse(line, "INVALID_ARGUMENT", &reason)?,
                    None => input_done = true,
                },
                () = sleep_until(due), if due.is_some() => {}
            }
        }
    }
    reader
        .await
        .map_err(|e| anyhow!("reading the file was interrupted: {e}"))??;
    load.rejects
        .flush()
        .map_err(|e| io_error(format!("writing {}", options.rejects.display()), e))?;
    load.progress.finish_and_clear();
    let mut summary = load.summary;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rate = summary.records as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn progress_bar(shown: bool, lines: u64) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(lines);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} lines, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A batch on the stream.
struct Sent {
    id: u64,
    batch: Batch,
}

/// The state of one load.
struct Load {
    hash: String,
    summary: Summary,
    rejects: std::io::BufWriter<std::fs::File>,
    progress: indicatif::ProgressBar,
    /// To send before reading on (resends, lines of a refused batch).
    ready: VecDeque<Batch>,
    /// To send again once their time has come (rate refusals), by time.
    delayed: VecDeque<(Instant, Batch)>,
    /// Sent and not answered yet, in the order sent (the order of answers).
    in_flight: VecDeque<Sent>,
    next_id: u64,
}

impl Load {
    fn idle(&self) -> bool {
        self.ready.is_empty() && self.delayed.is_empty() && self.in_flight.is_empty()
    }

    fn release_due(&mut self) {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, batch)) = self.delayed.pop_front() {
                self.ready.push_back(batch);
            }
        }
    }

    /// Sends a batch; if the stream has ended, its answer (the stream's end)
    /// brings the batch back for the next stream.
    async fn send(&mut self, sender: &PublishSender, batch: Batch) {
        let id = self.next_id;
        self.next_id += 1;
        let request = proto::PublishRequest {
            indicators: batch.indicators.clone(),
            idempotency_key: batch.key.clone(),
        };
        let _ = sender.send(id, request).await;
        self.in_flight.push_back(Sent { id, batch });
    }

    /// Tallies the answer to the oldest batch in flight.
    fn answered(&mut self, answer: StreamAnswer) -> Result<()> {
        let sent = self
            .in_flight
            .pop_front()
            .filter(|sent| sent.id == answer.correlation_id)
            .ok_or_else(|| {
                anyhow!(
                    "the hub answered request {} out of order",
                    answer.correlation_id
                )
            })?;
        let lines = sent.batch.lines.len() as u64;
        match answer.outcome {
            Ok(response) => {
                self.summary.records += lines;
                if response.replayed {
                    self.summary.already_loaded += lines;
                } else {
                    for event in &response.events {
                        match proto::EventType::try_from(event.r#type) {
                            Ok(proto::EventType::Sighting) => self.summary.sightings += 1,
                            _ => self.summary.published += 1,
                        }
                    }
                }
                self.progress.inc(lines);
            }
            Err(status) => self.refused(sent.batch, status)?,
        }
        Ok(())
    }

    /// A refused batch: resent later (rate, unavailable), line by line (the
    /// hub refused it whole for some lines), or its one line is refused.
    fn refused(&mut self, mut batch: Batch, status: tonic::Status) -> Result<()> {
        match status.code() {
            Code::ResourceExhausted | Code::Unavailable if batch.attempts < MAX_ATTEMPTS => {
                batch.attempts += 1;
                let at = Instant::now() + retry_after(status.message()).unwrap_or(DEFAULT_RETRY);
                let position = self.delayed.partition_point(|(t, _)| *t <= at);
                self.delayed.insert(position, (at, batch));
            }
            _ if batch.lines.len() > 1 => {
                for single in batch.singles(&self.hash).into_iter().rev() {
                    self.ready.push_front(single);
                }
            }
            code => {
                for line in batch.lines {
                    self.refuse(line, code_name(code), status.message())?;
                }
            }
        }
        Ok(())
    }

    /// Writes a refused line to the reject file.
    fn refuse(&mut self, line: u64, code: &str, reason: &str) -> Result<()> {
        self.summary.records += 1;
        self.summary.refused += 1;
        let record = serde_json::json!({"line": line, "code": code, "reason": reason});
        writeln!(self.rejects, "{record}")
            .map_err(|e| io_error(format!("writing {}", self.summary.reject_file), e))?;
        self.progress.inc(1);
        Ok(())
    }
}

/// The delay in a hub's "retry after N ms".
fn retry_after(message: &str) -> Option<Duration> {
    let (_, after) = message.split_once("retry after ")?;
    let millis: u64 = after.split(' ').next()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::NotFound => "NOT_FOUND",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unauthenticated => "UNAUTHENTICATED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_retry_delay_is_read_from_its_message() {
        assert_eq!(
            retry_after(
                "publish_events_per_second: x may publish 1 events/s (burst 3); retry after 250 ms"
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after("publishes_in_flight: full"), None);
    }
}
