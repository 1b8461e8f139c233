//! `dip-hub admin`: operate a running hub as the regulator (organisations, CRL
//! reload, audit trail), printing JSON lines.
//!
//! Owns: the subcommands' arguments and output. Must never decide who may do
//! this (the hub's `policy` does).

use anyhow::Result;
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
