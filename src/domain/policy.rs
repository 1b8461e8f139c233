//! Authorization: what each role may do, as one table and pure functions.
//!
//! Owns: the role policy (role × kind × action → allow or deny, with the rule that
//! denied) and TLP visibility. Returns a [`Permit`], which appending to the log
//! requires. Must never do I/O or look at requests beyond what it is given.

use crate::error::{Error, Result};
use crate::indicator::{ActionType, Category, Indicator, Kind, Tlp};
use crate::proto::ValueName;
use crate::registry::{Org, Role};

/// Proof that a submission was authorized; only this module makes one.
#[derive(Debug)]
pub struct Permit {
    _private: (),
}

impl Permit {
    fn granted() -> Permit {
        Permit { _private: () }
    }
}

use Kind::*;

/// Every indicator kind.
const EVERY_KIND: &[Kind] = &[
    PhoneNumber,
    Imei,
    Url,
    Domain,
    IpAddress,
    UpiId,
    BankAccount,
    Email,
    SmsHeader,
];

/// Which kinds each role may publish. Revoking, reporting actions and reading are
/// governed by [`authorize_revoke`], [`authorize_action`] and [`may_see`].
const PUBLISH_KINDS: &[(Role, &[Kind])] = &[
    (Role::Regulator, EVERY_KIND),
    (Role::LawEnforcement, EVERY_KIND),
    (
        Role::Bank,
        &[
            PhoneNumber,
            Url,
            Domain,
            UpiId,
            BankAccount,
            Email,
            SmsHeader,
        ],
    ),
    (
        Role::Tsp,
        &[PhoneNumber, Imei, Url, Domain, IpAddress, SmsHeader],
    ),
    (
        Role::PaymentOperator,
        &[PhoneNumber, Url, Domain, UpiId, BankAccount, Email],
    ),
    (Role::Platform, &[]),
];

/// Categories only some roles may assert.
const RESTRICTED_CATEGORIES: &[(Category, &[Role])] = &[
    (Category::Disconnected, &[Role::Tsp, Role::Regulator]),
    (
        Category::StolenHandset,
        &[Role::LawEnforcement, Role::Tsp, Role::Regulator],
    ),
];

/// Roles that see TLP:RED indicators of other organisations.
const RED_READERS: &[Role] = &[Role::LawEnforcement, Role::Regulator];

/// May `org` publish every one of `indicators`?
pub fn authorize_publish(org: &Org, indicators: &[Indicator]) -> Result<Permit> {
    for (index, indicator) in indicators.iter().enumerate() {
        check_publish(org, indicator).map_err(|rule| {
            Error::PermissionDenied(format!(
                "indicators[{index}]: {} ({}) may not publish {} with category {}: {rule}",
                org.id,
                org.role.as_str(),
                indicator.key.kind.short_name(),
                indicator.category.short_name(),
            ))
        })?;
    }
    Ok(Permit::granted())
}

fn check_publish(org: &Org, indicator: &Indicator) -> std::result::Result<(), String> {
    let kinds = PUBLISH_KINDS
        .iter()
        .find(|(role, _)| *role == org.role)
        .map_or(&[][..], |(_, kinds)| *kinds);
    if !kinds.contains(&indicator.key.kind) {
        return Err(if kinds.is_empty() {
            format!(
                "role {} reports actions only (ReportAction)",
                org.role.as_str()
            )
        } else {
            format!(
                "role {} publishes only {}",
                org.role.as_str(),
                kinds
                    .iter()
                    .map(|k| k.short_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    if let Some((category, roles)) = RESTRICTED_CATEGORIES
        .iter()
        .find(|(category, _)| *category == indicator.category)
        && !roles.contains(&org.role)
    {
        return Err(format!(
            "only {} publish {}",
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            category.short_name()
        ));
    }
    Ok(())
}

/// Only the organisation that published an indicator, or the regulator, revokes it.
pub fn authorize_revoke(org: &Org, source_org: &str) -> Result<Permit> {
    if org.role == Role::Regulator || org.id == source_org {
        Ok(Permit::granted())
    } else {
        Err(Error::PermissionDenied(format!(
            "{} may not revoke this indicator: only its source organisation ({source_org}) or the regulator revokes",
            org.id
        )))
    }
}

/// Which roles may report each action, and about which kinds of indicator: an
/// action is what the reporting organisation itself did, so only those that can
/// do it report it (a bank does not disconnect numbers).
const ACTIONS: &[(ActionType, &[Role], &[Kind])] = &[
    (
        ActionType::NumberDisconnected,
        &[Role::Tsp, Role::Regulator],
        &[PhoneNumber],
    ),
    (
        ActionType::AccountFrozen,
        &[Role::Bank, Role::PaymentOperator, Role::Regulator],
        &[BankAccount, UpiId, PhoneNumber],
    ),
    (
        ActionType::AccountDeregistered,
        &[Role::Platform, Role::Regulator],
        &[PhoneNumber, Email],
    ),
    (
        ActionType::UpiIdDelinked,
        &[Role::PaymentOperator, Role::Bank, Role::Regulator],
        &[UpiId, PhoneNumber],
    ),
    (
        ActionType::UrlBlocked,
        &[
            Role::Tsp,
            Role::Platform,
            Role::LawEnforcement,
            Role::Regulator,
        ],
        &[Url, Domain, IpAddress],
    ),
    (
        ActionType::HandsetBlocked,
        &[Role::Tsp, Role::Regulator],
        &[Imei],
    ),
];

/// May `org` report `action` about `indicator` (published by `source_org`)? It
/// must see the indicator (else it does not exist for it: NOT_FOUND), the action
/// must apply to its kind (INVALID_ARGUMENT), and the role must be one that does
/// such things (PERMISSION_DENIED). OTHER_ACTION is open to every role and kind.
pub fn authorize_action(
    org: &Org,
    action: ActionType,
    indicator: &Indicator,
    source_org: &str,
) -> Result<Permit> {
    if !may_see(org, indicator.tlp, source_org) {
        return Err(Error::NotFound(format!(
            "{} is not known to the hub",
            indicator.key
        )));
    }
    let Some((_, roles, kinds)) = ACTIONS.iter().find(|(a, _, _)| *a == action) else {
        return Ok(Permit::granted());
    };
    let kind = indicator.key.kind;
    if !kinds.contains(&kind) {
        return Err(Error::invalid(
            "action",
            format!(
                "{} does not apply to a {} indicator",
                action.short_name(),
                kind.short_name()
            ),
            format!(
                "{} for {}, or OTHER_ACTION",
                action.short_name(),
                names(kinds.iter().map(|k| k.short_name()))
            ),
        ));
    }
    if !roles.contains(&org.role) {
        return Err(Error::PermissionDenied(format!(
            "{} ({}) may not report {}: only {} report it",
            org.id,
            org.role.as_str(),
            action.short_name(),
            names(roles.iter().map(|r| r.as_str()))
        )));
    }
    Ok(Permit::granted())
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Roles that operate the hub (the `Admin` service: registry, CRLs, audit trail).
const ADMINS: &[Role] = &[Role::Regulator];

/// Only the regulator operates the hub: onboards and suspends organisations,
/// reloads revocation lists and reads the audit trail.
pub fn authorize_admin(org: &Org, rpc: &str) -> Result<Permit> {
    if ADMINS.contains(&org.role) {
        Ok(Permit::granted())
    } else {
        Err(Error::PermissionDenied(format!(
            "{} ({}) may not call Admin.{rpc}: only the REGULATOR role operates the hub",
            org.id,
            org.role.as_str()
        )))
    }
}

/// The hub itself (expiry) needs no caller's permission.
pub(crate) fn hub_permit() -> Permit {
    Permit::granted()
}

/// Who may see an event, as its record's `(tlp, source_org)` pair checked by
/// [`may_see`]. The indicator is its source's: only the source's marking
/// (`marking`, `source`) decides who is shown it. `report` is the marking and
/// organisation of a report (PUBLISHED or SIGHTING); `None` for an event that
/// carries the indicator as its source marked it (REVOKED, EXPIRED, ACTION_TAKEN,
/// WITHDRAWN). A report by another organisation is visible only to who may see
/// both the indicator and the report: its higher marking protects the report,
/// the indicator's protects the indicator. Both RED and by different
/// organisations: only the RED readers, named by the hub's own identity
/// (`hub`), which no subscriber holds.
pub fn event_visibility(
    report: Option<(Tlp, &str)>,
    marking: Tlp,
    source: &str,
    hub: &str,
) -> (Tlp, String) {
    match report {
        None => (marking, source.to_owned()),
        Some((tlp, reporter)) if reporter == source => (tlp, source.to_owned()),
        Some((tlp, reporter)) => match (tlp == Tlp::Red, marking == Tlp::Red) {
            (_, false) => (tlp, reporter.to_owned()),
            (false, true) => (Tlp::Red, source.to_owned()),
            (true, true) => (Tlp::Red, hub.to_owned()),
        },
    }
}

/// Whether a report by `reporter` marked `tlp` may shape the indicator's shared
/// state (details, reporters): only if everyone shown the indicator may see the
/// report. A RED report by another organisation stays its own.
pub fn report_is_shared(tlp: Tlp, reporter: &str, source: &str) -> bool {
    reporter == source || tlp != Tlp::Red
}

/// Whether the source changing its marking from `old` to `new` hides the
/// indicator from some organisation that may see it now (which must then be
/// told, by a WITHDRAWN event under the old marking).
pub fn narrows(old: Tlp, new: Tlp) -> bool {
    old != Tlp::Red && new == Tlp::Red
}

/// TLP: RED reaches only law enforcement, the regulator and the source organisation.
pub fn may_see(viewer: &Org, tlp: Tlp, source_org: &str) -> bool {
    tlp != Tlp::Red || RED_READERS.contains(&viewer.role) || viewer.id == source_org
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{IndicatorKey, Risk};
    use crate::registry::OrgStatus;

    fn org(id: &str, role: Role) -> Org {
        Org {
            id: id.into(),
            name: id.into(),
            role,
            status: OrgStatus::Active,
            limits: Default::default(),
        }
    }

    fn indicator(kind: Kind, category: Category) -> Indicator {
        Indicator {
            key: IndicatorKey {
                kind,
                value: "x".into(),
            },
            category,
            risk: Risk::High,
            description: String::new(),
            valid_until: None,
            tlp: Tlp::Green,
        }
    }

    #[test]
    fn disconnected_numbers_come_only_from_tsps_and_the_regulator() {
        let number = [indicator(PhoneNumber, Category::Disconnected)];
        assert!(authorize_publish(&org("tsp", Role::Tsp), &number).is_ok());
        assert!(authorize_publish(&org("dot", Role::Regulator), &number).is_ok());
        let denied = authorize_publish(&org("bank", Role::Bank), &number).expect_err("denied");
        assert!(
            denied
                .to_string()
                .contains("only TSP, REGULATOR publish DISCONNECTED")
        );
    }

    #[test]
    fn platforms_only_report_actions() {
        let number = [indicator(PhoneNumber, Category::FraudCall)];
        let denied = authorize_publish(&org("chat", Role::Platform), &number).expect_err("denied");
        assert!(denied.to_string().contains("reports actions only"));
    }

    #[test]
    fn banks_do_not_publish_imeis() {
        let imei = [indicator(Imei, Category::StolenHandset)];
        assert!(authorize_publish(&org("bank", Role::Bank), &imei).is_err());
        assert!(authorize_publish(&org("police", Role::LawEnforcement), &imei).is_ok());
    }

    #[test]
    fn only_the_source_or_the_regulator_revokes() {
        assert!(authorize_revoke(&org("police", Role::LawEnforcement), "police").is_ok());
        assert!(authorize_revoke(&org("dot", Role::Regulator), "police").is_ok());
        assert!(authorize_revoke(&org("bank", Role::Bank), "police").is_err());
    }

    #[test]
    fn only_the_regulator_operates_the_hub() {
        assert!(authorize_admin(&org("dot", Role::Regulator), "ListOrgs").is_ok());
        let denied =
            authorize_admin(&org("police", Role::LawEnforcement), "SetOrgStatus").expect_err("no");
        assert!(denied.to_string().contains("only the REGULATOR role"));
        assert!(denied.to_string().contains("Admin.SetOrgStatus"));
    }

    #[test]
    fn actions_come_from_the_roles_that_take_them_on_kinds_they_apply_to() {
        let number = indicator(PhoneNumber, Category::FraudCall);
        let tsp = org("tsp", Role::Tsp);
        let bank = org("bank", Role::Bank);
        assert!(authorize_action(&tsp, ActionType::NumberDisconnected, &number, "p").is_ok());
        let denied = authorize_action(&bank, ActionType::NumberDisconnected, &number, "p")
            .expect_err("a bank does not disconnect numbers");
        assert!(matches!(denied, Error::PermissionDenied(_)));
        assert!(
            denied.to_string().contains("only TSP, REGULATOR report it"),
            "{denied}"
        );
        let url = indicator(Url, Category::Phishing);
        let misapplied = authorize_action(&tsp, ActionType::NumberDisconnected, &url, "p")
            .expect_err("a URL is not a number");
        assert!(
            matches!(misapplied, Error::InvalidArgument { .. }),
            "{misapplied}"
        );
        for role in [Role::Platform, Role::Bank, Role::LawEnforcement] {
            assert!(
                authorize_action(&org("x", role), ActionType::OtherAction, &url, "p").is_ok(),
                "OTHER_ACTION is open to {role:?}"
            );
        }
        let mut red = indicator(PhoneNumber, Category::FraudCall);
        red.tlp = Tlp::Red;
        let hidden =
            authorize_action(&bank, ActionType::AccountFrozen, &red, "police").expect_err("hidden");
        assert!(matches!(hidden, Error::NotFound(_)));
    }

    #[test]
    fn red_reaches_law_enforcement_the_regulator_and_the_source_only() {
        assert!(may_see(
            &org("police", Role::LawEnforcement),
            Tlp::Red,
            "bank-a"
        ));
        assert!(may_see(&org("dot", Role::Regulator), Tlp::Red, "bank-a"));
        assert!(may_see(&org("bank-a", Role::Bank), Tlp::Red, "bank-a"));
        assert!(!may_see(&org("bank-b", Role::Bank), Tlp::Red, "bank-a"));
        assert!(may_see(&org("bank-b", Role::Bank), Tlp::Amber, "bank-a"));
    }

    /// Issue 9 part 2: who may see a report is who may see both the indicator
    /// (its source's marking) and the report (its reporter's marking).
    #[test]
    fn a_report_is_seen_by_who_may_see_both_the_indicator_and_the_report() {
        let police = org("police", Role::LawEnforcement);
        let source = org("bank-a", Role::Bank);
        let other = org("tsp", Role::Tsp);
        let reporter = org("bank-b", Role::Bank);
        let seen = |report, marking| {
            let (tlp, owner) = event_visibility(report, marking, "bank-a", "dip-hub");
            [&police, &source, &other, &reporter].map(|o| may_see(o, tlp, &owner))
        };
        use Tlp::{Green, Red};
        assert_eq!(seen(Some((Green, "bank-b")), Green), [true; 4]);
        assert_eq!(
            seen(Some((Red, "bank-b")), Green),
            [true, false, false, true]
        );
        assert_eq!(
            seen(Some((Green, "bank-b")), Red),
            [true, true, false, false]
        );
        assert_eq!(
            seen(Some((Red, "bank-b")), Red),
            [true, false, false, false]
        );
        assert_eq!(seen(Some((Red, "bank-a")), Red), [true, true, false, false]);
        assert_eq!(
            seen(None, Green),
            [true; 4],
            "lifecycle: the source's marking"
        );
        assert_eq!(seen(None, Red), [true, true, false, false]);
        assert!(narrows(Green, Red) && !narrows(Red, Green) && !narrows(Red, Red));
        assert!(!report_is_shared(Red, "bank-b", "bank-a"));
        assert!(report_is_shared(Red, "bank-a", "bank-a"));
        assert!(report_is_shared(Green, "bank-b", "bank-a"));
    }
}
