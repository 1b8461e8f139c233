//! The bulk file: CSV with a header or JSON lines, one indicator per record,
//! read into batches with idempotency keys derived from the file's content.
//!
//! Owns: the file formats, turning a record into an indicator (or the reason it
//! is not one, with its line number), the content hash, and the batching, so
//! that a rerun of the same file builds the same batches with the same keys.
//! Must never talk to the hub.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Result, anyhow};
use ring::digest::{Context, SHA256};

use crate::cmd::{Usage, io_error, parse_enum};
use dip_hub::indicator::{Category, Kind, Risk, Tlp};
use dip_hub::proto;

/// The columns (CSV header) or keys (JSON lines) a record may have.
pub const FIELDS: &[&str] = &[
    "kind",
    "value",
    "category",
    "risk",
    "tlp",
    "description",
    "valid_until_ms",
];

/// How the file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, with a header line naming the columns.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format a file name says (`.csv`; `.jsonl`, `.ndjson`, `.json`).
    pub fn of(path: &Path) -> Result<Format> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
            _ => Err(Usage(format!(
                "--file {}: cannot tell the format from the name; expected a .csv or .jsonl file, or --format csv|jsonl",
                path.display()
            ))
            .into()),
        }
    }
}

/// What the content hash pass learns about the file.
pub struct Fingerprint {
    /// The first 16 bytes of the SHA-256 of the file, in hex.
    pub hash: String,
    /// Line breaks in the file (for the progress bar).
    pub lines: u64,
}

/// Hashes the file (blocking).
pub fn fingerprint(path: &Path) -> Result<Fingerprint> {
    let file = std::fs::File::open(path)
        .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut context = Context::new(&SHA256);
    let mut lines = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let digest = context.finish();
    let hash = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Fingerprint { hash, lines })
}

/// Lines of the file published together with one key.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The line number of each indicator.
    pub lines: Vec<u64>,
    pub indicators: Vec<proto::Indicator>,
    /// `bulk-HASH-FIRST-LAST`, or `bulk-HASH-LINE` for one line sent alone.
    pub key: String,
    /// How often it was resent after a rate refusal or UNAVAILABLE.
    pub attempts: u32,
}

impl Batch {
    /// The idempotency key of lines `first..=last` of the file `hash`.
    pub fn key(hash: &str, first: u64, last: u64) -> String {
        format!("bulk-{hash}-{first}-{last}")
    }

    /// Each line alone, with its own key (after the batch was refused).
    pub fn singles(self, hash: &str) -> Vec<Batch> {
        self.lines
            .into_iter()
            .zip(self.indicators)
            .map(|(line, indicator)| Batch {
                lines: vec![line],
                indicators: vec![indicator],
                key: format!("bulk-{hash}-{line}"),
                attempts: 0,
            })
            .collect()
    }
}

/// What the reader hands on, in file order.
#[derive(Debug)]
pub enum Item {
    Batch(Batch),
    /// A record that is not an indicator: its line and why.
    Refused(u64, String),
}

/// Reads `path` as `format` and hands batches of `batch` indicators (and the
/// records refused) to `emit`, in file order; stops early when `emit` says so.
/// Blocking.
pub fn read(
    path: &Path,
    format: Format,
    hash: &str,
    batch: usize,
    mut emit: impl FnMut(Item) -> bool,
) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| io_error(format!("opening {}", path.display()), e))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let mut batcher = Batcher {
        hash,
        size: batch,
        lines: Vec::with_capacity(batch),
        indicators: Vec::with_capacity(batch),
    };
    let mut on_record = |line: u64, record: Result<proto::Indicator, String>| match record {
        Ok(indicator) => match batcher.push(line, indicator) {
            Some(full) => emit(Item::Batch(full)),
            None => true,
        },
        Err(reason) => emit(Item::Refused(line, reason)),
    };
    let finished = match format {
        Format::Csv => read_csv(path, reader, &mut on_record)?,
        Format::Jsonl => read_jsonl(path, reader, &mut on_record)?,
    };
    if finished && let Some(last) = batcher.take() {
        emit(Item::Batch(last));
    }
    Ok(())
}

struct Batcher<'a> {
    hash: &'a str,
    size: usize,
    lines: Vec<u64>,
    indicators: Vec<proto::Indicator>,
}

impl Batcher<'_> {
    fn push(&mut self, line: u64, indicator: proto::Indicator) -> Option<Batch> {
        self.lines.push(line);
        self.indicators.push(indicator);
        (self.lines.len() >= self.size)
            .then(|| self.take())
            .flatten()
    }

    fn take(&mut self) -> Option<Batch> {
        let (first, last) = (*self.lines.first()?, *self.lines.last()?);
        Some(Batch {
            lines: std::mem::replace(&mut self.lines, Vec::with_capacity(self.size)),
            indicators: std::mem::replace(&mut self.indicators, Vec::with_capacity(self.size)),
            key: Batch::key(self.hash, first, last),
            attempts: 0,
        })
    }
}

/// CSV with a header; returns false when `on_record` asked to stop.
fn read_csv(
    path: &Path,
    reader: impl Read,
    on_record: &mut impl FnMut(u64, Result<proto::Indicator, String>) -> bool,
) -> Result<bool> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = csv
        .headers()
        .map_err(|e| anyhow!("{}: reading the CSV header: {e}", path.display()))?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect::<Vec<_>>();
    for column in &header {
        if !FIELDS.contains(&column.as_str()) {
            return Err(Usage(format!(
                "{} line 1: unknown column {column:?}; expected a header naming columns from {}",
                path.display(),
                FIELDS.join(", ")
            ))
            .into());
        }
    }
    for required in ["kind", "value", "category"] {
        if !header.iter().any(|h| h == required) {
            return Err(Usage(format!(
                "{} line 1: the header has no {required:?} column; expected kind, value and category at least (then any of {})",
                path.display(),
                FIELDS.join(", ")
            ))
            .into());
        }
    }
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(true),
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                let fields: HashMap<&str, &str> = header
                    .iter()
                    .map(String::as_str)
                    .zip(record.iter())
                    .collect();
                let parsed = if record.len() != header.len() {
                    Err(format!(
                        "{} fields; expected {} as in the header",
                        record.len(),
                        header.len()
                    ))
                } else {
                    indicator(|name| fields.get(name).copied().filter(|v| !v.is_empty()))
                };
                if !on_record(line, parsed) {
                    return Ok(false);
                }
            }
            Err(error) => {
                let line = error.position().map_or(line, |p| p.line());
                if !on_record(line, Err(format!("not a CSV record: {error}"))) {
                    return Ok(false);
                }
            }
        }
    }
}

/// JSON lines; blank lines are skipped. Returns false when asked to stop.
fn read_jsonl(
    path: &Path,
    reader: impl BufRead,
    on_record: &mut impl FnMut(u64, Result<proto::Indicator, String>) -> bool,
) -> Result<bool> {
    for (number, text) in (1u64..).zip(reader.lines()) {
        let text = text.map_err(|e| io_error(format!("reading {}", path.display()), e))?;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
        {
            Err(error) => Err(format!("not a JSON object: {error}")),
            Ok(object) => match object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                Some(unknown) => Err(format!(
                    "unknown key {unknown:?}; expected keys from {}",
                    FIELDS.join(", ")
                )),
                None => {
                    let texts: HashMap<&str, String> = object
                        .iter()
                        .filter_map(|(k, v)| match v {
                            serde_json::Value::String(s) => Some((k.as_str(), s.clone())),
                            serde_json::Value::Number(n) => Some((k.as_str(), n.to_string())),
                            _ => None,
                        })
                        .collect();
                    indicator(|name| {
                        texts
                            .get(name)
                            .map(String::as_str)
                            .filter(|v| !v.is_empty())
                    })
                }
            },
        };
        if !on_record(number, parsed) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One record as an indicator: kind, value and category required; risk HIGH
/// and tlp GREEN unless given (as for `dip-hub publish`). The hub checks the
/// value itself.
fn indicator<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Result<proto::Indicator, String> {
    let required = |name: &str| {
        field(name).ok_or_else(|| format!("{name}: missing; expected a value in every record"))
    };
    let named = |name: &str, error: String| format!("{name}: {error}");
    let kind = parse_enum::<Kind>(required("kind")?).map_err(|e| named("kind", e))?;
    let category =
        parse_enum::<Category>(required("category")?).map_err(|e| named("category", e))?;
    let risk = field("risk")
        .map_or(Ok(Risk::High), parse_enum::<Risk>)
        .map_err(|e| named("risk", e))?;
    let tlp = field("tlp")
        .map_or(Ok(Tlp::Green), parse_enum::<Tlp>)
        .map_err(|e| named("tlp", e))?;
    let valid_until = field("valid_until_ms")
        .map(|ms| {
            ms.parse::<i64>()
                .map(dip_hub::wire::timestamp)
                .map_err(|_| {
                    format!("valid_until_ms: {ms:?} is not a number; expected Unix milliseconds")
                })
        })
        .transpose()?;
    Ok(proto::Indicator {
        kind: kind as i32,
        value: required("value")?.to_string(),
        category: category as i32,
        risk: risk as i32,
        description: field("description").unwrap_or_default().to_string(),
        valid_until,
        tlp: tlp as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(format: Format, text: &str, batch: usize) -> Vec<Item> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("input");
        std::fs::write(&path, text).expect("write");
        let mut items = Vec::new();
        read(&path, format, "h", batch, |item| {
            items.push(item);
            true
        })
        .expect("reads");
        items
    }

    #[test]
    fn csv_records_become_batches_keyed_by_their_lines_and_bad_ones_are_refused_with_their_line() {
        let text = "kind,value,category,risk\n\
                    PHONE_NUMBER,+919800000001,FRAUD_CALL,\n\
                    phone_number,9800000002,spam,VERY_HIGH\n\
                    BOAT,x,SPAM,HIGH\n\
                    UPI_ID,\"a,b@upi\",MULE_ACCOUNT,MEDIUM\n";
        let items = items(Format::Csv, text, 2);
        assert_eq!(items.len(), 3, "{items:?}");
        let Item::Batch(first) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(first.lines, vec![2, 3]);
        assert_eq!(first.key, "bulk-h-2-3");
        assert_eq!(
            first.indicators[0].risk,
            proto::Risk::High as i32,
            "default"
        );
        assert_eq!(first.indicators[1].category, proto::Category::Spam as i32);
        assert!(matches!(&items[1], Item::Refused(4, reason) if reason.starts_with("kind:")));
        let Item::Batch(last) = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(last.key, "bulk-h-5-5");
        assert_eq!(last.indicators[0].value, "a,b@upi");
    }

    #[test]
    fn json_lines_skip_blank_lines_and_refuse_unknown_keys() {
        let text = "{\"kind\":\"EMAIL\",\"value\":\"a@b.example\",\"category\":\"PHISHING\",\"valid_until_ms\":1700000000000}\n\n\
                    {\"kind\":\"EMAIL\",\"value\":\"c@d.example\",\"category\":\"PHISHING\",\"colour\":\"red\"}\n\
                    not json\n";
        let items = items(Format::Jsonl, text, 10);
        assert!(matches!(&items[0], Item::Refused(3, reason) if reason.contains("\"colour\"")));
        assert!(
            matches!(&items[1], Item::Refused(4, reason) if reason.contains("not a JSON object"))
        );
        let Item::Batch(batch) = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(batch.lines, vec![1]);
        assert!(batch.indicators[0].valid_until.is_some());
    }

    #[test]
    fn a_header_without_the_required_columns_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("input.csv");
        std::fs::write(&path, "kind,value\nEMAIL,a@b.example\n").expect("write");
        let error = read(&path, Format::Csv, "h", 10, |_| true).expect_err("no category");
        assert!(error.to_string().contains("\"category\""), "{error}");
        assert!(error.downcast_ref::<Usage>().is_some());
    }

    #[test]
    fn the_same_content_has_the_same_hash() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "x\ny\n").expect("write");
        std::fs::write(&b, "x\ny\n").expect("write");
        let (fa, fb) = (fingerprint(&a).expect("a"), fingerprint(&b).expect("b"));
        assert_eq!(fa.hash, fb.hash);
        assert_eq!(fa.hash.len(), 32);
        assert_eq!(fa.lines, 2);
        std::fs::write(&b, "x\nz\n").expect("write");
        assert_ne!(fingerprint(&b).expect("b").hash, fa.hash);
    }
}
