//! Connecting to a hub as an organisation, for the CLI, the demo and the benchmark.
//!
//! Owns: turning certificate files and a hub address into a connected client over
//! mutual TLS, and rendering events as JSON lines. Must never present another
//! organisation's certificate than the one it is given.

use crate::proto::ValueName;
use std::path::{Path, PathBuf};

use tonic::transport::{Channel, Endpoint};

use crate::config::read_text;
use crate::error::{Error, Result};
use crate::indicator::{
    ActionType, Category, EventType, Kind, Risk, Status as IndicatorStatus, Tlp,
};
use crate::pki::DevPkiPaths;
use crate::proto;
use crate::proto::indicator_hub_service_client::IndicatorHubServiceClient;
use crate::server::MAX_REQUEST_BYTES;
use crate::tls;

/// Largest response a client decodes (frames are far smaller).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The files a client presents: its certificate and key, and the hub CA it trusts.
#[derive(Clone, Debug)]
pub struct ClientCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCerts {
    /// An organisation's certificate from a development PKI directory.
    pub fn dev(dir: &Path, org_id: &str) -> ClientCerts {
        let paths = DevPkiPaths::new(dir);
        ClientCerts {
            ca: paths.ca_cert(),
            cert: paths.org_cert(org_id),
            key: paths.org_key(org_id),
        }
    }
}

/// Connects to the hub at `url` (e.g. `https://localhost:7443`).
pub async fn connect(url: &str, certs: &ClientCerts) -> Result<IndicatorHubServiceClient<Channel>> {
    Ok(hub_client(channel(url, certs).await?))
}

/// The hub's client over `channel`, with the hub's message size limits.
pub fn hub_client(channel: Channel) -> IndicatorHubServiceClient<Channel> {
    IndicatorHubServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES)
}

/// A mutual-TLS channel to the hub at `url`, for any of its services (the
/// hub, `Admin`, health, reflection).
pub async fn channel(url: &str, certs: &ClientCerts) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::Config(format!("hub address {url:?}: {e}")))?;
    let domain = endpoint
        .uri()
        .host()
        .ok_or_else(|| Error::Config(format!("hub address {url:?} has no host")))?
        .to_string();
    let tls = tls::client_tls(
        &read_text(&certs.ca)?,
        &read_text(&certs.cert)?,
        &read_text(&certs.key)?,
        &domain,
    );
    let channel = endpoint
        .tls_config(tls)
        .map_err(|e| Error::Tls(format!("client TLS for {url}: {e}")))?
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach the hub at {url}: {e}")))?;
    Ok(channel)
}

/// A PublishStream: Publish requests sent with a correlation id, answered in
/// the order sent, each once durable (or refused in its own slot).
pub struct PublishStream {
    sender: PublishSender,
    answers: tonic::Streaming<proto::PublishStreamResponse>,
}

/// One answer of a PublishStream.
#[derive(Debug)]
pub struct StreamAnswer {
    /// The correlation id of the request answered.
    pub correlation_id: u64,
    /// The events, durable; or what the unary Publish would have answered.
    pub outcome: Result<proto::PublishResponse, tonic::Status>,
}

impl PublishStream {
    /// Opens a PublishStream; `buffer` requests may wait in the client before
    /// [`PublishStream::send`] waits for the transport.
    pub async fn open(
        client: &mut IndicatorHubServiceClient<Channel>,
        buffer: usize,
    ) -> Result<PublishStream, tonic::Status> {
        let (requests, outgoing) = tokio::sync::mpsc::channel(buffer.max(1));
        let answers = client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        Ok(PublishStream {
            sender: PublishSender { requests },
            answers,
        })
    }

    /// Sends one request; waits while the hub holds the stream back (flow
    /// control). An error means the stream has ended: read its status with
    /// [`PublishStream::answer`].
    pub async fn send(
        &self,
        correlation_id: u64,
        publish: proto::PublishRequest,
    ) -> Result<(), tonic::Status> {
        self.sender.send(correlation_id, publish).await
    }

    /// Splits the stream so that one task sends while another reads answers.
    pub fn split(
        self,
    ) -> (
        PublishSender,
        tonic::Streaming<proto::PublishStreamResponse>,
    ) {
        (self.sender, self.answers)
    }

    /// The next answer, in request order; `None` once the hub has answered
    /// everything sent and the stream has ended well (after [`PublishStream::finish`]).
    pub async fn answer(&mut self) -> Result<Option<StreamAnswer>, tonic::Status> {
        next_answer(&mut self.answers).await
    }

    /// Says that no more requests follow; the hub still answers those sent.
    pub fn finish(&mut self) {
        let (closed, _) = tokio::sync::mpsc::channel(1);
        self.sender = PublishSender { requests: closed };
    }
}

/// The sending half of a [`PublishStream`]; dropping it ends the requests.
#[derive(Clone)]
pub struct PublishSender {
    requests: tokio::sync::mpsc::Sender<proto::PublishStreamRequest>,
}

impl PublishSender {
    /// Sends one request (see [`PublishStream::send`]).
    pub async fn send(
        &self,
        correlation_id: u64,
        publish: proto::PublishRequest,
    ) -> Result<(), tonic::Status> {
        self.requests
            .send(proto::PublishStreamRequest {
                correlation_id,
                publish: Some(publish),
            })
            .await
            .map_err(|_| tonic::Status::unavailable("the PublishStream has ended"))
    }
}

/// The next answer of a PublishStream's answers, as a [`StreamAnswer`].
pub async fn next_answer(
    answers: &mut tonic::Streaming<proto::PublishStreamResponse>,
) -> Result<Option<StreamAnswer>, tonic::Status> {
    let Some(answer) = answers.message().await? else {
        return Ok(None);
    };
    let outcome = match answer.outcome {
        Some(proto::publish_stream_response::Outcome::Published(response)) => Ok(response),
        Some(proto::publish_stream_response::Outcome::Error(error)) => Err(tonic::Status::new(
            tonic::Code::from(error.code),
            error.message,
        )),
        None => Err(tonic::Status::data_loss(format!(
            "the answer to request {} has no outcome",
            answer.correlation_id
        ))),
    };
    Ok(Some(StreamAnswer {
        correlation_id: answer.correlation_id,
        outcome,
    }))
}

/// An enumeration value by its short name, or its number when the hub sent a
/// value this client does not know yet.
fn name<E: TryFrom<i32> + ValueName>(value: i32) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |e| e.short_name().to_string())
}

fn time(t: &Option<prost_types::Timestamp>) -> serde_json::Value {
    match t {
        Some(t) => serde_json::json!(crate::wire::millis(t)),
        None => serde_json::Value::Null,
    }
}

pub fn indicator_json(indicator: &proto::Indicator) -> serde_json::Value {
    serde_json::json!({
        "kind": name::<Kind>(indicator.kind),
        "value": indicator.value,
        "category": name::<Category>(indicator.category),
        "risk": name::<Risk>(indicator.risk),
        "tlp": name::<Tlp>(indicator.tlp),
        "description": indicator.description,
        "valid_until_ms": time(&indicator.valid_until),
    })
}

/// One event as a JSON object (times in Unix milliseconds).
pub fn event_json(event: &proto::Event) -> serde_json::Value {
    serde_json::json!({
        "sequence": event.sequence,
        "event_id": event.event_id,
        "type": name::<EventType>(event.r#type),
        "indicator": event.indicator.as_ref().map(indicator_json),
        "source_org": event.source_org,
        "source_cert_serial": event.source_cert_serial,
        "time_ms": time(&event.time),
        "reason": event.reason,
        "action": event.action.as_ref().map(|a| serde_json::json!({
            "type": name::<ActionType>(a.r#type),
            "note": a.note,
        })),
    })
}

/// An indicator's state as a JSON object.
pub fn state_json(state: &proto::IndicatorState) -> serde_json::Value {
    serde_json::json!({
        "indicator": state.indicator.as_ref().map(indicator_json),
        "status": name::<IndicatorStatus>(state.status),
        "source_org": state.source_org,
        "reporters": state.reporters,
        "first_seen_ms": time(&state.first_seen),
        "last_seen_ms": time(&state.last_seen),
        "actions": state.actions.iter().map(|a| serde_json::json!({
            "org": a.org,
            "type": a.action.as_ref().map(|x| name::<ActionType>(x.r#type)),
            "note": a.action.as_ref().map(|x| x.note.clone()),
            "time_ms": time(&a.time),
            "sequence": a.sequence,
        })).collect::<Vec<_>>(),
        "history_length": state.history_length,
        "last_sequence": state.last_sequence,
        "revoke_reason": state.revoke_reason,
    })
}

/// A whole snapshot, received and checked against its digest.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Subscribe with `after_sequence` = this to stay exact.
    pub as_of_sequence: u64,
    /// Sorted by kind, then value.
    pub indicators: Vec<proto::IndicatorState>,
    /// The hub's digest, equal to the one computed over `indicators`.
    pub digest: String,
}

/// A snapshot's order in this client: kind, then value.
fn sort_key(state: &proto::IndicatorState) -> Option<(i32, &str)> {
    state.indicator.as_ref().map(|i| (i.kind, i.value.as_str()))
}

/// The digest (see [`crate::digest`]) of a set of indicators a client holds.
pub fn digest_of<'a>(indicators: impl IntoIterator<Item = &'a proto::Indicator>) -> String {
    let mut digest = crate::digest::Digest::EMPTY;
    for indicator in indicators {
        let kind = Kind::try_from(indicator.kind).unwrap_or(Kind::Unspecified);
        digest.add(&crate::indicator::IndicatorKey {
            kind,
            value: indicator.value.clone(),
        });
    }
    digest.to_hex()
}

/// Receives a whole Snapshot and checks it: one `as_of_sequence`, a last message,
/// the count and the digest of what arrived.
pub async fn snapshot(
    client: &mut IndicatorHubServiceClient<Channel>,
    filter: proto::Filter,
) -> Result<Snapshot, tonic::Status> {
    let broken = tonic::Status::data_loss;
    let mut stream = client
        .snapshot(proto::SnapshotRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner();
    let mut snapshot = Snapshot::default();
    let mut first = true;
    while let Some(message) = stream.message().await? {
        if first {
            snapshot.as_of_sequence = message.as_of_sequence;
            first = false;
        } else if message.as_of_sequence != snapshot.as_of_sequence {
            return Err(broken(format!(
                "the snapshot mixes sequences {} and {}",
                snapshot.as_of_sequence, message.as_of_sequence
            )));
        }
        snapshot.indicators.extend(message.indicators);
        if message.last {
            let computed = digest_of(
                snapshot
                    .indicators
                    .iter()
                    .filter_map(|s| s.indicator.as_ref()),
            );
            if message.count != snapshot.indicators.len() as u64 || computed != message.digest {
                return Err(broken(format!(
                    "the snapshot announced {} indicators with digest {} but {} arrived with digest {computed}",
                    message.count,
                    message.digest,
                    snapshot.indicators.len()
                )));
            }
            snapshot.digest = message.digest;
            // The hub sends a snapshot in no particular order; this client
            // gives it sorted by kind, then value.
            snapshot
                .indicators
                .sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            return Ok(snapshot);
        }
    }
    Err(broken("the snapshot ended without its last message".into()))
}

/// One indicator as a CSV line: kind,value,category,risk,tlp,source_org,first_seen,last_seen
/// (times in Unix milliseconds; fields quoted when they hold a comma, a quote or a line break).
pub fn csv_line(state: &proto::IndicatorState) -> String {
    let indicator = state.indicator.clone().unwrap_or_default();
    let millis = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or_else(String::new, |t| crate::wire::millis(t).to_string())
    };
    [
        name::<Kind>(indicator.kind),
        indicator.value,
        name::<Category>(indicator.category),
        name::<Risk>(indicator.risk),
        name::<Tlp>(indicator.tlp),
        state.source_org.clone(),
        millis(&state.first_seen),
        millis(&state.last_seen),
    ]
    .iter()
    .map(|field| csv_field(field))
    .collect::<Vec<_>>()
    .join(",")
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("+919876543210"), "+919876543210");
        assert_eq!(
            csv_field("https://x.example/a,b\"c"),
            "\"https://x.example/a,b\"\"c\""
        );
    }
}
