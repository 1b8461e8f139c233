//! The `dip.v1.AdminService` service: operating the hub without a restart.
//!
//! Owns: onboarding and suspending organisations (changes take effect at once,
//! are stored in the log's `orgs` tree and override the registry file at the
//! next start; in a cluster they are stored in the shared registry first, made
//! against its latest change, and every node applies them through
//! `org_changes`), reloading TLS credentials and revocation lists, and reading the
//! audit trail. Every call is authorized by `policy::authorize_admin` (the
//! regulator only) and attributed: the caller's organisation and certificate
//! serial go to the tracing log, into the stored change and into the audit trail.
//! Must never take the caller's identity from a request, nor touch sled except
//! through `log` calls run off the async workers.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::api::Hub;
use crate::audit::{self, AuditEntry};
use crate::credentials::Loaded;
use crate::error::{Error, Result};
use crate::identity;
use crate::indicator::{Millis, Source, now_millis};
use crate::limits::{LimitOverrides, Limiter, Limits};
use crate::log::Log;
use crate::org_changes::{self, OrgApplier, SharedRegistry};
use crate::policy;
use crate::proto::server::admin_service_server::AdminService as AdminRpcs;
use crate::proto::{self, ValueName};
use crate::registry::{Org, OrgStatus, Registry, Role};

/// Longest organisation name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Longest suspension reason, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Audit entries returned when the request does not say.
const DEFAULT_AUDIT_LIMIT: u32 = 1000;
/// Most audit entries one call returns.
const MAX_AUDIT_LIMIT: u32 = 10_000;
/// Largest value of any per-organisation limit.
const MAX_LIMIT: u32 = 10_000_000;
/// Attempts of one cluster change that lose a race with another node's.
const SHARED_ATTEMPTS: usize = 8;

/// A run-time change of one organisation, as stored (the latest per org).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgChange {
    /// The organisation as it is after the change.
    pub org: Org,
    /// ONBOARD or SET_STATUS.
    pub action: String,
    pub reason: String,
    /// Who made the change.
    pub by_org: String,
    pub by_cert_serial: String,
    pub time: Millis,
}

/// Applies the stored changes over the registry loaded from its file. Blocks on disk.
pub fn apply_stored(log: &Log, registry: &Registry) -> Result<usize> {
    let stored = log.stored_orgs()?;
    for (id, bytes) in &stored {
        registry.upsert(org_changes::decode(id, bytes)?.org)?;
    }
    Ok(stored.len())
}

/// Reloads the TLS credentials and CRLs, then ends the live streams of every
/// revoked certificate. Used by `Admin.ReloadCrls` and by the server's reload
/// trigger (SIGHUP).
pub async fn reload_tls(hub: &Hub) -> Result<Loaded> {
    let credentials = hub.credentials.clone();
    let loaded = tokio::task::spawn_blocking(move || credentials.reload())
        .await
        .map_err(|e| Error::Unavailable(format!("reloading was interrupted: {e}")))??;
    let ended = hub.streams.end_certs(&loaded.revoked);
    if ended > 0 {
        tracing::info!(
            streams = ended,
            "ended the live streams of revoked certificates"
        );
    }
    hub.metrics.admin_action();
    Ok(loaded)
}

/// The `dip.v1.AdminService` service.
pub struct AdminService {
    hub: Hub,
    /// One registry change at a time, so the stored change and the registry agree.
    changes: Arc<Mutex<()>>,
    /// Cluster mode: the registry changes every node applies, and this node's applier.
    shared: Option<(Arc<dyn SharedRegistry>, OrgApplier)>,
}

impl AdminService {
    pub fn new(hub: Hub) -> Self {
        AdminService {
            hub,
            changes: Arc::default(),
            shared: None,
        }
    }

    /// This service in a cluster: changes go to `shared` and are applied by `applier`.
    pub fn shared(self, shared: Arc<dyn SharedRegistry>, applier: OrgApplier) -> Self {
        AdminService {
            shared: Some((shared, applier)),
            ..self
        }
    }

    /// The calling regulator, or PERMISSION_DENIED naming the rule.
    fn admin<T>(&self, request: &Request<T>, rpc: &str) -> Result<Source> {
        let (org, source) = self.hub.caller(request)?;
        policy::authorize_admin(&org, rpc)?;
        Ok(source)
    }

    /// Makes the change of organisation `id` by `by` (`make` turns the
    /// organisation as it is, if registered, into what it becomes), stores it
    /// durably, then applies it to the registry, counts it and records it in
    /// the audit trail (`ADMIN_<action>`, with `outcome` of the stored
    /// organisation). In a cluster it is stored in the shared registry first
    /// and applied here once a quorum stored it; every other node applies it
    /// from there.
    async fn change(
        &self,
        by: &Source,
        id: &str,
        make: impl Fn(Option<Org>) -> Result<Org>,
        action: &str,
        reason: String,
        outcome: impl FnOnce(&Org) -> String,
    ) -> Result<Org> {
        if id == by.org_id {
            return Err(Error::FailedPrecondition(format!(
                "{id} may not change its own organisation (ask another regulator)"
            )));
        }
        let change = |org| OrgChange {
            org,
            action: action.into(),
            reason: reason.clone(),
            by_org: by.org_id.clone(),
            by_cert_serial: by.cert_serial.clone(),
            time: now_millis(),
        };
        let org = match &self.shared {
            Some((shared, applier)) => {
                self.change_shared(shared.as_ref(), applier, id, &make, change)
                    .await?
            }
            None => {
                let change = change(make(self.hub.registry.get(id))?);
                let (log, registry, lock) = (
                    self.hub.log.clone(),
                    self.hub.registry.clone(),
                    Arc::clone(&self.changes),
                );
                tokio::task::spawn_blocking(move || {
                    let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
                    log.store_org(&change.org.id, &org_changes::encode(&change)?)?;
                    registry.upsert(change.org.clone())?;
                    Ok::<_, Error>(change.org)
                })
                .await
                .map_err(|e| Error::Unavailable(format!("the change was interrupted: {e}")))??
            }
        };
        self.hub.metrics.admin_action();
        let outcome = outcome(&org);
        tracing::info!(
            by_org = %by.org_id,
            by_cert_serial = %by.cert_serial,
            org = %org.id,
            action,
            %outcome,
            "admin: organisation changed"
        );
        self.audit(by, &format!("ADMIN_{action}"), org.id.clone(), outcome);
        Ok(org)
    }

    /// Cluster mode: makes the change against the latest shared one (or the
    /// registry file's entry), stores it if no other change came first
    /// (else makes it again), and applies it on this node.
    async fn change_shared(
        &self,
        shared: &dyn SharedRegistry,
        applier: &OrgApplier,
        id: &str,
        make: &impl Fn(Option<Org>) -> Result<Org>,
        change: impl Fn(Org) -> OrgChange,
    ) -> Result<Org> {
        for _ in 0..SHARED_ATTEMPTS {
            let latest = shared.latest(id).await?;
            let current = match &latest {
                Some((bytes, _)) => Some(org_changes::decode(id, bytes)?.org),
                None => self.hub.registry.get(id),
            };
            let bytes = org_changes::encode(&change(make(current)?))?;
            if let Some(revision) = shared
                .store(id, bytes.clone(), latest.map(|(_, revision)| revision))
                .await?
            {
                return applier.apply(id, bytes, revision).await;
            }
            // Another node changed the organisation meanwhile: make it again.
        }
        Err(Error::Unavailable(format!(
            "organisation {id} was changed on other hub nodes at the same time, {SHARED_ATTEMPTS} times; nothing was changed by this call: retry"
        )))
    }

    fn audit(&self, by: &Source, action: &str, subject: String, outcome: impl Into<String>) {
        self.hub.audit.record(AuditEntry::now(
            &by.org_id,
            &by.cert_serial,
            action,
            subject,
            outcome,
        ));
    }
}

#[tonic::async_trait]
impl AdminRpcs for AdminService {
    async fn onboard_org(
        &self,
        request: Request<proto::OnboardOrgRequest>,
    ) -> Result<Response<proto::OnboardOrgResponse>, Status> {
        let by = self.admin(&request, "OnboardOrg")?;
        let proto::OnboardOrgRequest { id, name, role } = request.into_inner();
        let id = org_id(&id)?;
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(Error::invalid(
                "name",
                format!("has {} characters", name.chars().count()),
                format!("the organisation's name, 1 to {MAX_NAME_CHARS} characters"),
            )
            .into());
        }
        let role = role_from_proto(role)?;
        // A known organisation keeps its status and limits.
        let onboarded = |current: Option<Org>| {
            Ok(Org {
                id: id.clone(),
                name: name.clone(),
                role,
                status: current.as_ref().map_or(OrgStatus::Active, |o| o.status),
                limits: current.map(|o| o.limits).unwrap_or_default(),
            })
        };
        let org = self
            .change(&by, &id, onboarded, "ONBOARD", String::new(), |org| {
                org.role.as_str().into()
            })
            .await?;
        Ok(Response::new(proto::OnboardOrgResponse {
            org: Some(org_to_proto(&org, &self.hub.limits)),
        }))
    }

    async fn set_org_status(
        &self,
        request: Request<proto::SetOrgStatusRequest>,
    ) -> Result<Response<proto::SetOrgStatusResponse>, Status> {
        let by = self.admin(&request, "SetOrgStatus")?;
        let proto::SetOrgStatusRequest { id, status, reason } = request.into_inner();
        let id = org_id(&id)?;
        let status = match proto::OrgStatus::try_from(status) {
            Ok(proto::OrgStatus::Active) => OrgStatus::Active,
            Ok(proto::OrgStatus::Suspended) => OrgStatus::Suspended,
            _ => {
                return Err(Error::invalid(
                    "status",
                    format!("{status} is not a status to set"),
                    "ACTIVE or SUSPENDED",
                )
                .into());
            }
        };
        let reason = reason.trim().to_string();
        if reason.chars().count() > MAX_REASON_CHARS
            || (status == OrgStatus::Suspended && reason.is_empty())
        {
            return Err(Error::invalid(
                "reason",
                format!("has {} characters", reason.chars().count()),
                format!("why, 1 to {MAX_REASON_CHARS} characters (required to suspend)"),
            )
            .into());
        }
        let org = self
            .change(
                &by,
                &id,
                |current| {
                    Ok(Org {
                        status,
                        ..registered(&id, current)?
                    })
                },
                "SET_STATUS",
                reason.clone(),
                |org| status_to_proto(org.status).short_name().into(),
            )
            .await?;
        // After the registry changed: a stream opened from now on is refused.
        if status == OrgStatus::Suspended && self.hub.streams.end_org(&org.id) {
            tracing::info!(org = %org.id, %reason, "admin: the suspended organisation's streams ended");
        }
        Ok(Response::new(proto::SetOrgStatusResponse {
            org: Some(org_to_proto(&org, &self.hub.limits)),
        }))
    }

    async fn set_org_limits(
        &self,
        request: Request<proto::SetOrgLimitsRequest>,
    ) -> Result<Response<proto::SetOrgLimitsResponse>, Status> {
        let by = self.admin(&request, "SetOrgLimits")?;
        let proto::SetOrgLimitsRequest { id, limits } = request.into_inner();
        let id = org_id(&id)?;
        let limits = overrides_from_proto(limits)?;
        let org = self
            .change(
                &by,
                &id,
                |current| {
                    Ok(Org {
                        limits,
                        ..registered(&id, current)?
                    })
                },
                "SET_LIMITS",
                String::new(),
                |org| format!("{:?}", org.limits),
            )
            .await?;
        Ok(Response::new(proto::SetOrgLimitsResponse {
            org: Some(org_to_proto(&org, &self.hub.limits)),
        }))
    }

    async fn list_orgs(
        &self,
        request: Request<proto::ListOrgsRequest>,
    ) -> Result<Response<proto::ListOrgsResponse>, Status> {
        self.admin(&request, "ListOrgs")?;
        let proto::ListOrgsRequest {} = request.into_inner();
        let orgs = (self.hub.registry.all().iter())
            .map(|org| org_to_proto(org, &self.hub.limits))
            .collect();
        Ok(Response::new(proto::ListOrgsResponse { orgs }))
    }

    async fn reload_crls(
        &self,
        request: Request<proto::ReloadCrlsRequest>,
    ) -> Result<Response<proto::ReloadCrlsResponse>, Status> {
        let by = self.admin(&request, "ReloadCrls")?;
        let proto::ReloadCrlsRequest {} = request.into_inner();
        let loaded = reload_tls(&self.hub).await.map_err(|error| {
            tracing::warn!(%error, "reloading TLS credentials failed; the previous ones stay");
            Status::failed_precondition(format!(
                "reloading failed, the previous credentials stay in force: {error}"
            ))
        })?;
        tracing::info!(
            by_org = %by.org_id,
            by_cert_serial = %by.cert_serial,
            crl_files = loaded.crl_files,
            revoked_serials = loaded.revoked.len(),
            "admin: TLS credentials reloaded"
        );
        self.audit(
            &by,
            "ADMIN_RELOAD_CRLS",
            format!("{} CRL files", loaded.crl_files),
            "reloaded",
        );
        Ok(Response::new(proto::ReloadCrlsResponse {
            revoked_serials: loaded.revoked.len() as u64,
            crls: loaded.crl_files as u32,
        }))
    }

    async fn read_audit(
        &self,
        request: Request<proto::ReadAuditRequest>,
    ) -> Result<Response<proto::ReadAuditResponse>, Status> {
        let by = self.admin(&request, "ReadAudit")?;
        let proto::ReadAuditRequest { since, limit } = request.into_inner();
        let limit = match limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n if n <= MAX_AUDIT_LIMIT => n,
            n => {
                return Err(Error::invalid(
                    "limit",
                    format!("{n} is too many"),
                    format!("0 (for {DEFAULT_AUDIT_LIMIT}) to {MAX_AUDIT_LIMIT}"),
                )
                .into());
            }
        };
        let since = since.as_ref().map_or(0, crate::wire::millis);
        // Entries recorded before this call are stored before it reads.
        self.hub.audit.sync().await;
        let log = self.hub.log.clone();
        let entries = tokio::task::spawn_blocking(move || audit::read(&log, since, limit as usize))
            .await
            .map_err(|e| Error::Unavailable(format!("reading was interrupted: {e}")))??;
        self.audit(
            &by,
            "AUDIT_READ",
            format!("since {since}"),
            format!("{} entries", entries.len()),
        );
        Ok(Response::new(proto::ReadAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| proto::AuditEntry {
                    time: Some(crate::wire::timestamp(e.time)),
                    org: e.org,
                    cert_serial: e.cert_serial,
                    action: e.action,
                    subject: e.subject,
                    outcome: e.outcome,
                })
                .collect(),
        }))
    }
}

/// The registered organisation `id` (`current`), or NOT_FOUND.
fn registered(id: &str, current: Option<Org>) -> Result<Org> {
    current.ok_or_else(|| {
        Error::NotFound(format!(
            "organisation {id} is not registered; onboard it first"
        ))
    })
}

fn org_id(id: &str) -> Result<String> {
    if identity::is_valid_org_id(id) {
        Ok(id.to_string())
    } else {
        Err(Error::invalid(
            "id",
            format!("{id:?} is not a valid organisation id"),
            "1-63 characters of a-z, 0-9 and '-', not starting with '-'",
        ))
    }
}

fn role_from_proto(role: i32) -> Result<Role> {
    Ok(match proto::OrgRole::try_from(role) {
        Ok(proto::OrgRole::Regulator) => Role::Regulator,
        Ok(proto::OrgRole::LawEnforcement) => Role::LawEnforcement,
        Ok(proto::OrgRole::Bank) => Role::Bank,
        Ok(proto::OrgRole::Tsp) => Role::Tsp,
        Ok(proto::OrgRole::PaymentOperator) => Role::PaymentOperator,
        Ok(proto::OrgRole::Platform) => Role::Platform,
        Ok(proto::OrgRole::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                "role",
                format!("{role} is not a role"),
                "REGULATOR, LAW_ENFORCEMENT, BANK, TSP, PAYMENT_OPERATOR or PLATFORM",
            ));
        }
    })
}

fn role_to_proto(role: Role) -> proto::OrgRole {
    match role {
        Role::Regulator => proto::OrgRole::Regulator,
        Role::LawEnforcement => proto::OrgRole::LawEnforcement,
        Role::Bank => proto::OrgRole::Bank,
        Role::Tsp => proto::OrgRole::Tsp,
        Role::PaymentOperator => proto::OrgRole::PaymentOperator,
        Role::Platform => proto::OrgRole::Platform,
    }
}

fn status_to_proto(status: OrgStatus) -> proto::OrgStatus {
    match status {
        OrgStatus::Active => proto::OrgStatus::Active,
        OrgStatus::Suspended => proto::OrgStatus::Suspended,
    }
}

fn org_to_proto(org: &Org, limiter: &Limiter) -> proto::Org {
    let Limits {
        connections,
        subscribe_streams,
        snapshots,
        publishes_in_flight,
        publish_events_per_second,
        publish_burst,
        lookups_per_second,
    } = limiter.limits(org);
    proto::Org {
        id: org.id.clone(),
        name: org.name.clone(),
        role: role_to_proto(org.role) as i32,
        status: status_to_proto(org.status) as i32,
        limits: Some(proto::OrgLimits {
            connections: Some(connections),
            subscribe_streams: Some(subscribe_streams),
            snapshots: Some(snapshots),
            publishes_in_flight: Some(publishes_in_flight),
            publish_events_per_second: Some(publish_events_per_second),
            publish_burst: Some(publish_burst),
            lookups_per_second: Some(lookups_per_second),
        }),
    }
}

/// The limits an Admin request sets; each at least 1 and at most [`MAX_LIMIT`].
fn overrides_from_proto(limits: Option<proto::OrgLimits>) -> Result<LimitOverrides> {
    let proto::OrgLimits {
        connections,
        subscribe_streams,
        snapshots,
        publishes_in_flight,
        publish_events_per_second,
        publish_burst,
        lookups_per_second,
    } = limits.unwrap_or_default();
    let check = |name: &str, value: Option<u32>| match value {
        Some(v) if !(1..=MAX_LIMIT).contains(&v) => Err(Error::invalid(
            format!("limits.{name}"),
            format!("is {v}"),
            format!("1 to {MAX_LIMIT}, or unset for the role's default"),
        )),
        _ => Ok(value),
    };
    Ok(LimitOverrides {
        connections: check("connections", connections)?,
        subscribe_streams: check("subscribe_streams", subscribe_streams)?,
        snapshots: check("snapshots", snapshots)?,
        publishes_in_flight: check("publishes_in_flight", publishes_in_flight)?,
        publish_events_per_second: check("publish_events_per_second", publish_events_per_second)?,
        publish_burst: check("publish_burst", publish_burst)?,
        lookups_per_second: check("lookups_per_second", lookups_per_second)?,
    })
}
