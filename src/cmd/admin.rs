//! `dip-hub admin`: operate a running hub as the regulator (organisations, their
//! limits, CRL reload, audit trail), printing JSON lines.
//!
//! Owns: the subcommands' arguments and output. Must never decide who may do
//! this (the hub's `policy` does).

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};

use dip_hub::proto::{self, ValueName};

use super::{ClientArgs, parse_enum, print_json, remote};

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Every organisation, as JSON lines.
    Orgs,
    /// Onboard an organisation (ACTIVE), or change its name and role.
    Onboard {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// REGULATOR, LAW_ENFORCEMENT, BANK, TSP, PAYMENT_OPERATOR or PLATFORM.
        #[arg(long, value_parser = parse_enum::<proto::OrgRole>)]
        role: proto::OrgRole,
    },
    /// Suspend an organisation: its live streams end, its calls are refused.
    Suspend {
        #[arg(long)]
        id: String,
        /// Why (stored with the change).
        #[arg(long)]
        reason: String,
    },
    /// Reactivate a suspended organisation.
    Activate {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// An organisation's limits in force, as one JSON line. With limit flags,
    /// first sets its own limits to exactly those (a limit not given goes back
    /// to its role's, as configured); with --reset, drops its own limits.
    Limits {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        set: LimitFlags,
        /// Drop the organisation's own limits: its role's apply again.
        #[arg(long)]
        reset: bool,
    },
    /// Re-read the CA, the server certificate and the CRLs (as SIGHUP does).
    ReloadCrls,
    /// The audit trail (who looked what up), oldest first, as JSON lines.
    Audit {
        /// Only entries from the last this many hours.
        #[arg(long)]
        hours: Option<u32>,
        /// At most this many entries (up to 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

/// An organisation's own limits (each 1 to 10,000,000; the hub checks).
#[derive(Debug, Default, Args)]
pub struct LimitFlags {
    /// Concurrent connections.
    #[arg(long)]
    connections: Option<u32>,
    /// Concurrent Subscribe streams.
    #[arg(long)]
    subscribe_streams: Option<u32>,
    /// Concurrent Snapshot streams.
    #[arg(long)]
    snapshots: Option<u32>,
    /// Publish, Revoke and ReportAction calls awaiting their answer.
    #[arg(long)]
    publishes_in_flight: Option<u32>,
    /// Sustained publish rate, in events per second.
    #[arg(long)]
    publish_events_per_second: Option<u32>,
    /// Events that may be published at once above the sustained rate.
    #[arg(long)]
    publish_burst: Option<u32>,
    /// Lookups per second.
    #[arg(long)]
    lookups_per_second: Option<u32>,
}

impl LimitFlags {
    /// The limits to set; none when no flag was given.
    fn to_proto(&self) -> Option<proto::OrgLimits> {
        let LimitFlags {
            connections,
            subscribe_streams,
            snapshots,
            publishes_in_flight,
            publish_events_per_second,
            publish_burst,
            lookups_per_second,
        } = *self;
        let limits = proto::OrgLimits {
            connections,
            subscribe_streams,
            snapshots,
            publishes_in_flight,
            publish_events_per_second,
            publish_burst,
            lookups_per_second,
        };
        (limits != proto::OrgLimits::default()).then_some(limits)
    }
}

/// An organisation's limits in force, as printed.
fn limits_json(org: &proto::Org) -> serde_json::Value {
    let limits = org.limits.unwrap_or_default();
    let proto::OrgLimits {
        connections,
        subscribe_streams,
        snapshots,
        publishes_in_flight,
        publish_events_per_second,
        publish_burst,
        lookups_per_second,
    } = limits;
    serde_json::json!({
        "id": org.id,
        "limits": {
            "connections": connections,
            "subscribe_streams": subscribe_streams,
            "snapshots": snapshots,
            "publishes_in_flight": publishes_in_flight,
            "publish_events_per_second": publish_events_per_second,
            "publish_burst": publish_burst,
            "lookups_per_second": lookups_per_second,
        },
    })
}

/// Runs the subcommand.
pub async fn run(args: AdminArgs) -> Result<()> {
    use proto::admin_service_client::AdminServiceClient;
    let channel = args.client.channel().await?;
    let mut admin = AdminServiceClient::new(channel);
    let org_json = |org: &proto::Org| {
        serde_json::json!({
            "id": org.id,
            "name": org.name,
            "role": proto::OrgRole::try_from(org.role).map_or("?", |r| r.short_name()),
            "status": proto::OrgStatus::try_from(org.status).map_or("?", |s| s.short_name()),
        })
    };
    let set_status =
        |id: String, status: proto::OrgStatus, reason: String| proto::SetOrgStatusRequest {
            id,
            status: status as i32,
            reason,
        };
    let changed = match args.command {
        AdminCommand::Orgs => {
            let orgs = admin
                .list_orgs(proto::ListOrgsRequest {})
                .await
                .map_err(remote)?
                .into_inner()
                .orgs;
            for org in &orgs {
                print_json(&org_json(org));
            }
            return Ok(());
        }
        AdminCommand::Onboard { id, name, role } => admin
            .onboard_org(proto::OnboardOrgRequest {
                id,
                name,
                role: role as i32,
            })
            .await
            .map(|answer| answer.into_inner().org),
        AdminCommand::Suspend { id, reason } => admin
            .set_org_status(set_status(id, proto::OrgStatus::Suspended, reason))
            .await
            .map(|answer| answer.into_inner().org),
        AdminCommand::Activate { id, reason } => admin
            .set_org_status(set_status(id, proto::OrgStatus::Active, reason))
            .await
            .map(|answer| answer.into_inner().org),
        AdminCommand::Limits { id, set, reset } => {
            let org = match (set.to_proto(), reset) {
                (Some(_), true) => bail!(
                    "--reset drops the organisation's own limits: give it alone, without limit flags"
                ),
                (None, false) => admin
                    .list_orgs(proto::ListOrgsRequest {})
                    .await
                    .map_err(remote)?
                    .into_inner()
                    .orgs
                    .into_iter()
                    .find(|org| org.id == id)
                    .ok_or_else(|| {
                        anyhow!("no organisation has the id {id:?} (see `dip-hub admin orgs`)")
                    })?,
                (limits, _) => admin
                    .set_org_limits(proto::SetOrgLimitsRequest { id, limits })
                    .await
                    .map_err(remote)?
                    .into_inner()
                    .org
                    .ok_or_else(|| {
                        anyhow!("the hub answered SetOrgLimits without the organisation")
                    })?,
            };
            print_json(&limits_json(&org));
            return Ok(());
        }
        AdminCommand::ReloadCrls => {
            let loaded = admin
                .reload_crls(proto::ReloadCrlsRequest {})
                .await
                .map_err(remote)?
                .into_inner();
            print_json(&serde_json::json!({
                "crl_files": loaded.crls,
                "revoked_serials": loaded.revoked_serials,
            }));
            return Ok(());
        }
        AdminCommand::Audit { hours, limit } => {
            let since = hours.map(|hours| {
                dip_hub::wire::timestamp(
                    dip_hub::indicator::now_millis() - i64::from(hours) * 3_600_000,
                )
            });
            let entries = admin
                .read_audit(proto::ReadAuditRequest { since, limit })
                .await
                .map_err(remote)?
                .into_inner()
                .entries;
            for entry in &entries {
                print_json(&serde_json::json!({
                    "time": entry.time.as_ref().map(dip_hub::wire::millis),
                    "org": entry.org,
                    "cert_serial": entry.cert_serial,
                    "action": entry.action,
                    "subject": entry.subject,
                    "outcome": entry.outcome,
                }));
            }
            return Ok(());
        }
    };
    if let Some(org) = &changed.map_err(remote)? {
        print_json(&org_json(org));
    }
    Ok(())
}
