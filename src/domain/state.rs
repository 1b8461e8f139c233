//! The state view: the current state of each indicator, derived from the log.
//!
//! Owns: how one event changes an indicator's state ([`apply`]) and how a publish is
//! classified against the current state ([`classify_publish`]). Pure: the writer
//! uses it live and on replay after a crash, so both give the same state. Must
//! never read or write storage itself.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::indicator::{Action, Event, EventType, Indicator, IndicatorKey, Millis, Status, Tlp};
use crate::policy;

/// One indicator's state before and after a group of events (before is `None`
/// for an indicator new to the hub). Indexes kept beside the states (expiry,
/// digest) are updated from these pairs.
#[derive(Clone, Copy, Debug)]
pub struct StateChange<'a> {
    pub before: Option<&'a IndicatorState>,
    pub after: &'a IndicatorState,
}

/// An action some organisation reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRecord {
    pub org_id: String,
    pub action: Action,
    pub time: Millis,
    pub sequence: u64,
}

/// Everything the hub knows about one indicator now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndicatorState {
    /// Current: as its source marked it (TLP), with the highest risk and the
    /// latest description of the reports everyone shown it may see.
    pub indicator: Indicator,
    pub status: Status,
    /// The organisation that first published it (in its current life): its
    /// marking alone decides who is shown the indicator.
    pub source_org: String,
    pub reporters: BTreeSet<String>,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub actions: Vec<ActionRecord>,
    pub history_length: u32,
    pub last_sequence: u64,
    pub revoke_reason: String,
}

impl IndicatorState {
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }
}

/// Whether publishing by `org` is a new publication (or an update by a reporter)
/// or a sighting of an indicator another organisation already reported. A report
/// of an active TLP:RED indicator by an organisation that has not reported it is
/// PUBLISHED too: a SIGHTING would tell the publisher (and everyone who may see
/// its report) that a RED indicator it may not see exists. It still joins the
/// state's reporters.
pub fn classify_publish(current: Option<&IndicatorState>, org: &str) -> EventType {
    match current {
        Some(state)
            if state.is_active()
                && !state.reporters.contains(org)
                && state.indicator.tlp != Tlp::Red =>
        {
            EventType::Sighting
        }
        _ => EventType::Published,
    }
}

/// Revoke, action and expire need an indicator the hub knows and that is still
/// active: NOT_FOUND for one never published, FAILED_PRECONDITION for one revoked
/// or expired.
pub fn require_active<'a>(
    key: &IndicatorKey,
    current: Option<&'a IndicatorState>,
) -> Result<&'a IndicatorState> {
    match current {
        Some(state) if state.is_active() => Ok(state),
        Some(_) => Err(Error::FailedPrecondition(format!(
            "{key} is no longer active (revoked or expired)"
        ))),
        None => Err(Error::NotFound(format!("{key} is not known to the hub"))),
    }
}

/// The hub expires only what is due at `now`: valid_until may have been
/// extended by a report committed since the expiry scan.
pub fn require_due(key: &IndicatorKey, state: &IndicatorState, now: Millis) -> Result<()> {
    if state.indicator.valid_until.is_none_or(|at| at > now) {
        return Err(Error::FailedPrecondition(format!(
            "{key} is not due to expire"
        )));
    }
    Ok(())
}

/// The state after `event`. Replaying an event already applied
/// (`event.sequence <= last_sequence`) changes nothing.
pub fn apply(current: Option<IndicatorState>, event: &Event) -> Option<IndicatorState> {
    if let Some(state) = &current
        && event.sequence <= state.last_sequence
    {
        return current;
    }
    let org = &event.source.org_id;
    let history_length = current.as_ref().map_or(0, |s| s.history_length);
    let mut state = match current {
        Some(state) if state.is_active() || event.event_type != EventType::Published => state,
        // A new indicator, or a new life of one revoked or expired.
        _ if event.event_type == EventType::Published => IndicatorState {
            indicator: event.indicator.clone(),
            status: Status::Active,
            source_org: org.clone(),
            reporters: BTreeSet::new(),
            first_seen: event.time,
            last_seen: event.time,
            actions: Vec::new(),
            history_length,
            last_sequence: 0,
            revoke_reason: String::new(),
        },
        // Lifecycle events about an indicator the hub does not hold are not applied.
        _ => return None,
    };
    match event.event_type {
        EventType::Published | EventType::Sighting => {
            // Another organisation's RED report protects itself: it leaves the
            // shared state (details, reporters, history) as it was.
            if !policy::report_is_shared(event.indicator.tlp, org, &state.source_org) {
                return Some(state);
            }
            let from_source = *org == state.source_org;
            merge_report(&mut state.indicator, &event.indicator, from_source);
            state.reporters.insert(org.clone());
            state.last_seen = event.time;
        }
        // The source's new marking hides it from some: nothing changes until
        // the PUBLISHED that follows.
        EventType::Withdrawn => {}
        EventType::Revoked => {
            state.status = Status::Revoked;
            state.revoke_reason = event.reason.clone();
        }
        EventType::Expired => state.status = Status::Expired,
        EventType::ActionTaken => {
            if let Some(action) = &event.action {
                state.actions.push(ActionRecord {
                    org_id: org.clone(),
                    action: action.clone(),
                    time: event.time,
                    sequence: event.sequence,
                });
            }
        }
        EventType::Unspecified => {}
    }
    state.history_length += 1;
    state.last_sequence = event.sequence;
    Some(state)
}

/// A new report keeps the highest risk and the latest non-empty details. Only
/// the source organisation sets the TLP: another organisation's marking governs
/// its own report, never who is shown the indicator (issue 9).
fn merge_report(current: &mut Indicator, report: &Indicator, from_source: bool) {
    current.risk = current.risk.max(report.risk);
    current.category = report.category;
    if !report.description.is_empty() {
        current.description = report.description.clone();
    }
    current.valid_until = match (current.valid_until, report.valid_until) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    if from_source {
        current.tlp = report.tlp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Category, IndicatorKey, Kind, Risk, Source};

    fn event(sequence: u64, event_type: EventType, org: &str, risk: Risk) -> Event {
        Event {
            sequence,
            event_id: uuid::Uuid::now_v7(),
            event_type,
            indicator: Indicator {
                key: IndicatorKey {
                    kind: Kind::PhoneNumber,
                    value: "+919876543210".into(),
                },
                category: Category::FraudCall,
                risk,
                description: String::new(),
                valid_until: None,
                tlp: Tlp::Green,
            },
            source: Source {
                org_id: org.into(),
                cert_serial: "01".into(),
            },
            time: sequence as Millis * 1000,
            reason: String::new(),
            action: None,
        }
    }

    #[test]
    fn a_sighting_adds_a_reporter_and_keeps_the_highest_risk() {
        let s = apply(
            None,
            &event(1, EventType::Published, "police", Risk::VeryHigh),
        );
        assert_eq!(classify_publish(s.as_ref(), "bank"), EventType::Sighting);
        assert_eq!(classify_publish(s.as_ref(), "police"), EventType::Published);
        let s = apply(s, &event(2, EventType::Sighting, "bank", Risk::Medium)).expect("state");
        assert_eq!(s.indicator.risk, Risk::VeryHigh);
        assert_eq!(s.reporters.len(), 2);
        assert_eq!((s.first_seen, s.last_seen), (1000, 2000));
        assert_eq!(s.history_length, 2);
        assert_eq!(s.source_org, "police");
    }

    #[test]
    fn a_reporter_escalates_the_risk_with_a_published_update() {
        let s = apply(
            None,
            &event(1, EventType::Published, "police", Risk::Medium),
        );
        let s = apply(s, &event(2, EventType::Sighting, "bank", Risk::Medium));
        assert_eq!(classify_publish(s.as_ref(), "bank"), EventType::Published);
        let s = apply(s, &event(3, EventType::Published, "bank", Risk::VeryHigh)).expect("state");
        assert_eq!(s.indicator.risk, Risk::VeryHigh);
        assert_eq!(s.reporters.len(), 2);
        assert_eq!(s.last_seen, 3000);
    }

    #[test]
    fn a_red_indicator_reported_by_another_org_is_published_not_a_sighting() {
        let mut red = event(1, EventType::Published, "police", Risk::High);
        red.indicator.tlp = Tlp::Red;
        let s = apply(None, &red);
        assert_eq!(
            classify_publish(s.as_ref(), "bank"),
            EventType::Published,
            "a SIGHTING would reveal the RED indicator"
        );
        let s = apply(s, &event(2, EventType::Published, "bank", Risk::High)).expect("state");
        assert!(s.reporters.contains("bank"));
        assert_eq!(s.source_org, "police");
        assert_eq!(s.history_length, 2);
    }

    #[test]
    fn replaying_an_applied_event_changes_nothing() {
        let s = apply(None, &event(1, EventType::Published, "police", Risk::High));
        let again = apply(
            s.clone(),
            &event(1, EventType::Published, "police", Risk::High),
        );
        assert_eq!(s, again);
    }

    #[test]
    fn a_revoked_indicator_published_again_starts_a_new_life() {
        let s = apply(None, &event(1, EventType::Published, "police", Risk::High));
        let s = apply(s, &event(2, EventType::Revoked, "police", Risk::High));
        assert_eq!(s.as_ref().map(|s| s.status), Some(Status::Revoked));
        assert_eq!(classify_publish(s.as_ref(), "bank"), EventType::Published);
        let s = apply(s, &event(3, EventType::Published, "bank", Risk::Medium)).expect("state");
        assert_eq!(s.status, Status::Active);
        assert_eq!(s.source_org, "bank");
        assert_eq!(s.indicator.risk, Risk::Medium);
        assert_eq!(s.history_length, 3, "history counts every life");
    }

    fn with_tlp(mut e: Event, tlp: Tlp) -> Event {
        e.indicator.tlp = tlp;
        e
    }

    /// Regression: a sighting with a lower TLP replaced the state's TLP, making
    /// another organisation's RED indicator visible to everyone. Issue 9: nor may
    /// another organisation's higher marking take the indicator away from those
    /// its source shared it with; only the source sets the marking.
    #[test]
    fn only_the_source_sets_the_marking() {
        let red = with_tlp(
            event(1, EventType::Published, "police", Risk::High),
            Tlp::Red,
        );
        let s = apply(None, &red);
        let green = with_tlp(
            event(2, EventType::Published, "bank", Risk::High),
            Tlp::Green,
        );
        let s = apply(s, &green).expect("state");
        assert_eq!(s.indicator.tlp, Tlp::Red, "another org cannot lower it");
        let amber = with_tlp(
            event(3, EventType::Published, "police", Risk::High),
            Tlp::Amber,
        );
        let s = apply(Some(s), &amber).expect("state");
        assert_eq!(s.indicator.tlp, Tlp::Amber, "the source may");
        let red = with_tlp(event(4, EventType::Sighting, "tsp", Risk::High), Tlp::Red);
        let s = apply(Some(s), &red).expect("state");
        assert_eq!(s.indicator.tlp, Tlp::Amber, "nor raise it");
    }

    /// Issue 9: a RED report by another organisation must not reach those shown
    /// the indicator through its state (reporters, description, risk, history).
    #[test]
    fn another_organisations_red_report_leaves_the_shared_state_alone() {
        let s = apply(None, &event(1, EventType::Published, "bank", Risk::Medium));
        let mut sighting = with_tlp(
            event(2, EventType::Sighting, "police", Risk::VeryHigh),
            Tlp::Red,
        );
        sighting.indicator.description = "case 42".into();
        let after = apply(s.clone(), &sighting);
        assert_eq!(after, s, "nothing of the RED report shows");
        assert_eq!(
            classify_publish(after.as_ref(), "police"),
            EventType::Sighting,
            "police is not a reporter anyone else can see"
        );
        let withdrawn = with_tlp(
            event(3, EventType::Withdrawn, "bank", Risk::Medium),
            Tlp::Green,
        );
        let after = apply(after, &withdrawn).expect("state");
        assert_eq!(
            after.indicator.tlp,
            Tlp::Green,
            "WITHDRAWN changes no marking"
        );
        assert_eq!((after.history_length, after.last_sequence), (2, 3));
    }

    #[test]
    fn lifecycle_events_for_unknown_indicators_are_not_applied() {
        assert!(apply(None, &event(1, EventType::Revoked, "police", Risk::High)).is_none());
    }
}
