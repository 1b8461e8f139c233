//! The gRPC service: each RPC runs the pipeline, one line per step.
//!
//! Owns: the edge between the wire and the hub. Every handler reads the caller
//! from the verified certificate (identity), converts the request (validate),
//! asks `policy` (authorize), and hands a permit plus the change to the sequencer
//! (append, apply, fan out). Must never take identity from a request, nor touch
//! storage except through `log` calls run off the async workers.

use std::pin::Pin;
use std::time::Instant;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{Audit, AuditEntry};
use crate::budget::Budget;
use crate::credentials::Credentials;
use crate::cursor::Cursors;
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::frame::Frame;
use crate::indicator::{IndicatorKey, Source};
use crate::limits::{Concurrent, Limiter, Permit};
use crate::log::Log;
use crate::metrics::Metrics;
use crate::policy;
use crate::proto;
use crate::proto::server::indicator_hub_service_server::IndicatorHubService;
use crate::publish_stream;
use crate::registry::{Org, Registry};
use crate::sequencer::{Change, Committed, Sequencer, Submission};
use crate::snapshot;
use crate::state::IndicatorState;
use crate::streams::Streams;
use crate::subscription::{self, Subscription};
use crate::tls;
use crate::validate::{
    AckCommand, ActionCommand, PublishBatch, RevokeCommand, SnapshotCommand, Start,
    SubscribeCommand,
};
use crate::view::View;

/// Everything a request may need, shared by all of them.
#[derive(Clone)]
pub struct Hub {
    pub log: Log,
    pub feed: Feed,
    pub sequencer: Sequencer,
    /// The state view in memory (Lookup, Snapshot).
    pub view: View,
    /// Durable consumers' acknowledged sequences.
    pub cursors: Cursors,
    pub registry: Registry,
    /// Cancelled when the hub shuts down: every stream ends.
    pub stop: CancellationToken,
    /// Per-organisation and per-certificate stop tokens of live streams.
    pub streams: Streams,
    /// The TLS configuration and the revoked certificate serials.
    pub credentials: Credentials,
    pub metrics: Metrics,
    pub audit: Audit,
    /// Per-organisation limits and usage.
    pub limits: Limiter,
    /// What Subscribe streams may hold queued, all together.
    pub budget: Budget,
}

impl Hub {
    /// The calling organisation, from its verified certificate (invariant 5).
    pub(crate) fn caller<T>(&self, request: &Request<T>) -> Result<(Org, Source)> {
        let peer = tls::peer_of(request).ok_or_else(|| {
            Error::Unauthenticated("no verified client certificate on this connection".into())
        })?;
        self.admitted(&peer.identity.org_id, &peer.identity.cert_serial)
    }

    /// The organisation, if it is active and the certificate is not revoked
    /// (a connection opened before a CRL reload keeps its TLS session).
    pub(crate) fn admitted(&self, org_id: &str, cert_serial: &str) -> Result<(Org, Source)> {
        if self.credentials.is_revoked(cert_serial) {
            return Err(Error::Unauthenticated(format!(
                "certificate {cert_serial} of organisation {org_id} is revoked"
            )));
        }
        let org = self.registry.active(org_id)?;
        let source = Source {
            org_id: org.id.clone(),
            cert_serial: cert_serial.to_string(),
        };
        Ok((org, source))
    }

    /// The stop token of a new stream of `source`, taken before a last check
    /// that it is still admitted (see `streams` on why this order is race-free).
    fn stream_token(&self, source: &Source) -> Result<CancellationToken> {
        let token = self.streams.token(&source.org_id, &source.cert_serial);
        self.admitted(&source.org_id, &source.cert_serial)?;
        Ok(token)
    }

    /// A writing call's permits: one publish in flight, and `events` from the
    /// organisation's publish rate.
    fn write_permit(&self, org: &Org, events: usize) -> Result<Permit> {
        let in_flight = self.limits.acquire(org, Concurrent::PublishesInFlight)?;
        self.limits.publish_rate(org, events)?;
        Ok(in_flight)
    }

    /// The current state of one indicator, from the state view (its delta in
    /// memory, else the latest checkpoint on disk, read off the async workers).
    async fn state_of(&self, key: &IndicatorKey) -> Result<Option<IndicatorState>> {
        let (view, key) = (self.view.clone(), key.clone());
        tokio::task::spawn_blocking(move || view.get(&key))
            .await
            .map_err(|e| Error::Unavailable(format!("the lookup was interrupted: {e}")))?
    }

    /// The state of an indicator the caller may see; otherwise NOT_FOUND, so that
    /// TLP:RED indicators do not even reveal that they exist.
    async fn visible_state(&self, org: &Org, key: IndicatorKey) -> Result<IndicatorState> {
        let shown = key.to_string();
        match self.state_of(&key).await? {
            Some(state) if policy::may_see(org, state.indicator.tlp, &state.source_org) => {
                Ok(state)
            }
            _ => Err(Error::NotFound(format!("{shown} is not known to the hub"))),
        }
    }
}

/// The `dip.v1.IndicatorHubService` service.
pub struct HubService {
    hub: Hub,
}

impl HubService {
    pub fn new(hub: Hub) -> Self {
        HubService { hub }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send + 'static>>;
type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<snapshot::SnapshotChunk, Status>> + Send + 'static>>;
type PublishStreamAnswers =
    Pin<Box<dyn Stream<Item = Result<proto::PublishStreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl IndicatorHubService for HubService {
    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.hub.metrics.publish_started();
        let (org, source) = self.hub.caller(&request)?;
        let batch = PublishBatch::try_from(request.into_inner())?;
        let permit = policy::authorize_publish(&org, &batch.indicators)?;
        let _in_flight = self.hub.write_permit(&org, batch.indicators.len())?;
        let submission = Submission {
            source,
            changes: batch.indicators.into_iter().map(Change::Publish).collect(),
            idempotency_key: batch.idempotency_key,
        };
        let serial = submission.source.cert_serial.clone();
        let committed = self.hub.sequencer.submit(permit, submission).await?;
        self.hub.metrics.publish_latency(started.elapsed());
        tracing::debug!(
            org = %org.id,
            cert_serial = %serial,
            events = committed.events.len(),
            first_sequence = committed.events.first().map_or(0, |e| e.sequence),
            replayed = committed.replayed,
            "published"
        );
        let (events, replayed) = event_refs(committed);
        Ok(Response::new(proto::PublishResponse { events, replayed }))
    }

    type PublishStreamStream = PublishStreamAnswers;

    async fn publish_stream(
        &self,
        request: Request<Streaming<proto::PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let (_, source) = self.hub.caller(&request)?;
        let stop = self.hub.stream_token(&source)?;
        let answers = publish_stream::spawn(self.hub.clone(), source, request.into_inner(), stop);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn revoke(
        &self,
        request: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let (org, source) = self.hub.caller(&request)?;
        let command = RevokeCommand::try_from(request.into_inner())?;
        let state = self.hub.visible_state(&org, command.key.clone()).await?;
        let permit = policy::authorize_revoke(&org, &state.source_org)?;
        let _in_flight = self.hub.write_permit(&org, 1)?;
        let submission = Submission {
            source,
            changes: vec![Change::Revoke {
                key: command.key,
                reason: command.reason,
            }],
            idempotency_key: command.idempotency_key,
        };
        let serial = submission.source.cert_serial.clone();
        let committed = self.hub.sequencer.submit(permit, submission).await?;
        tracing::info!(
            org = %org.id,
            cert_serial = %serial,
            sequence = committed.events.first().map_or(0, |e| e.sequence),
            replayed = committed.replayed,
            "revoked"
        );
        let (events, replayed) = event_refs(committed);
        Ok(Response::new(proto::RevokeResponse { events, replayed }))
    }

    async fn report_action(
        &self,
        request: Request<proto::ReportActionRequest>,
    ) -> Result<Response<proto::ReportActionResponse>, Status> {
        let (org, source) = self.hub.caller(&request)?;
        let command = ActionCommand::try_from(request.into_inner())?;
        let state = self.hub.visible_state(&org, command.key.clone()).await?;
        let permit = policy::authorize_action(
            &org,
            command.action.action_type,
            &state.indicator,
            &state.source_org,
        )?;
        let _in_flight = self.hub.write_permit(&org, 1)?;
        let submission = Submission {
            source,
            changes: vec![Change::Action {
                key: command.key,
                action: command.action,
            }],
            idempotency_key: command.idempotency_key,
        };
        let committed = self.hub.sequencer.submit(permit, submission).await?;
        let (events, replayed) = event_refs(committed);
        Ok(Response::new(proto::ReportActionResponse {
            events,
            replayed,
        }))
    }

    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (org, source) = self.hub.caller(&request)?;
        let command = SubscribeCommand::try_from(request.into_inner())?;
        let permit = self
            .hub
            .limits
            .acquire(&org, Concurrent::SubscribeStreams)?;
        let stop = self.hub.stream_token(&source)?;
        let after = match (command.start, &command.consumer) {
            (Start::After(sequence), _) => sequence,
            (Start::Now, _) => self.hub.feed.committed(),
            (Start::Default, Some(consumer)) => {
                (self.hub.cursors.position(&org.id, consumer).await?).unwrap_or(0)
            }
            (Start::Default, None) => 0,
        };
        let head = self.hub.feed.committed();
        if let Some(refusal) = crate::validate::start_beyond_head(
            command.start,
            command.consumer.as_deref(),
            after,
            head,
        ) {
            return Err(refusal.into());
        }
        let subscription = Subscription {
            filter: command.filter,
            viewer: org,
            after,
            heartbeat: command.heartbeat,
        };
        let shared = subscription::Shared {
            log: self.hub.log.clone(),
            feed: self.hub.feed.clone(),
            metrics: self.hub.metrics.clone(),
            budget: self.hub.budget.clone(),
        };
        let frames = subscription::spawn(subscription, shared, stop, Some(permit));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn ack(
        &self,
        request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        let (org, _) = self.hub.caller(&request)?;
        let command = AckCommand::try_from(request.into_inner())?;
        let head = self.hub.feed.committed();
        if command.sequence > head {
            return Err(Error::invalid(
                "sequence",
                format!(
                    "{} is beyond the hub's newest durable sequence {head}",
                    command.sequence
                ),
                "the sequence of an event this consumer received (or a heartbeat's delivered_through)",
            )
            .into());
        }
        let acknowledged_sequence = self
            .hub
            .cursors
            .ack(&org.id, &command.consumer, command.sequence)
            .await?;
        Ok(Response::new(proto::AckResponse {
            acknowledged_sequence,
        }))
    }

    async fn lookup(
        &self,
        request: Request<proto::LookupRequest>,
    ) -> Result<Response<proto::LookupResponse>, Status> {
        let (org, source) = self.hub.caller(&request)?;
        let proto::LookupRequest { kind, value } = request.into_inner();
        self.hub.limits.lookup_rate(&org)?;
        let key = crate::validate::indicator_key("indicator", kind, &value)?;
        let subject = key.to_string();
        let looked_up = self.hub.visible_state(&org, key).await;
        let outcome = match &looked_up {
            Ok(_) => "found",
            Err(Error::NotFound(_)) => "not_found",
            Err(_) => "error",
        };
        self.hub.audit.record(AuditEntry::now(
            &source.org_id,
            &source.cert_serial,
            "LOOKUP",
            subject,
            outcome,
        ));
        let response = match looked_up {
            Ok(state) => proto::LookupResponse {
                found: true,
                state: Some(crate::wire::state_to_proto(&state)),
            },
            Err(Error::NotFound(_)) => proto::LookupResponse {
                found: false,
                state: None,
            },
            Err(error) => return Err(error.into()),
        };
        Ok(Response::new(response))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<proto::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (org, source) = self.hub.caller(&request)?;
        let command = SnapshotCommand::try_from(request.into_inner())?;
        let permit = self.hub.limits.acquire(&org, Concurrent::Snapshots)?;
        let stop = self.hub.stream_token(&source)?;
        let at_least = self.hub.view.current().applied;
        let messages = snapshot::spawn(self.hub.view.clone(), at_least, command.filter, org, stop);
        // The permit is given back when the stream ends or its client goes away.
        let messages = tokio_stream::StreamExt::map(messages, move |message| {
            let _held = &permit;
            message
        });
        Ok(Response::new(Box::pin(messages)))
    }
}

pub(crate) fn event_refs(committed: Committed) -> (Vec<proto::EventRef>, bool) {
    let events = committed
        .events
        .into_iter()
        .map(|e| proto::EventRef {
            sequence: e.sequence,
            event_id: e.event_id.to_string(),
            r#type: e.event_type as i32,
        })
        .collect();
    (events, committed.replayed)
}
