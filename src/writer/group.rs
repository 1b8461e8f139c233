//! The writer's pure step: a group of submissions and the current state become
//! events, records and state changes.
//!
//! Owns: what a group commit decides before anything is stored. For each
//! submission in order: an idempotency key seen before (in storage or earlier in
//! the group) replays the first answer; otherwise its changes become events with
//! the next sequences, all or nothing, each checked against the state as the
//! group's earlier events left it (`state` rules), and each event is encoded once
//! into its record (invariant 6). Must never do I/O, read a clock or touch
//! storage: the current state and the idempotency index come in as functions,
//! the time as a value, so the step is the same live, in tests, and on another
//! log backend.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::expiry::HUB_ORG;
use crate::fingerprint::{self, Fingerprint};
use crate::frame;
use crate::indicator::{Action, Event, EventType, Indicator, IndicatorKey, Millis, Source, Tlp};
use crate::log::{IdempotencyEntry, IdempotencyMark, IdempotentHit, Record, RecordMeta};
use crate::policy;
use crate::state::{self, IndicatorState, StateChange};
use crate::wire;

/// One change a submission asks for.
#[derive(Clone, Debug)]
pub enum Change {
    Publish(Indicator),
    Revoke { key: IndicatorKey, reason: String },
    Action { key: IndicatorKey, action: Action },
    Expire { key: IndicatorKey },
}

/// Changes from one organisation, committed all-or-nothing.
#[derive(Clone, Debug)]
pub struct Submission {
    pub source: Source,
    pub changes: Vec<Change>,
    pub idempotency_key: Option<String>,
}

/// Where an event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef {
    pub sequence: u64,
    pub event_id: Uuid,
    pub event_type: EventType,
}

/// The answer to a submission: its events, durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub events: Vec<EventRef>,
    /// The answer replays an earlier submission with the same idempotency key.
    pub replayed: bool,
}

/// What becomes of one submission of a group.
#[derive(Debug)]
pub enum Outcome {
    /// Its events, appended with the group.
    Appended(Vec<EventRef>),
    /// The same idempotency key was committed before: answer as then.
    Replay(IdempotentHit),
    /// Refused; nothing of it is appended.
    Refused(Error),
}

/// A planned group: what to make durable, and what to announce once it is.
pub struct Group {
    /// The head the group was planned against; its records follow it.
    pub after: u64,
    /// The records to append, in sequence order, each event encoded once.
    pub records: Vec<Record>,
    /// Idempotency keys to index with the group's state.
    pub idempotency: Vec<IdempotencyEntry>,
    /// The indicator states the group changes.
    pub overlay: StateOverlay,
    /// One per submission, in the order given.
    pub outcomes: Vec<Outcome>,
}

impl Group {
    /// The head once the group is appended.
    pub fn head(&self) -> u64 {
        self.after + self.records.len() as u64
    }
}

/// Plans a group against the log's head `after` and the states `current` gives
/// (`earlier` looks an idempotency key up in what is already stored).
pub fn plan<'a>(
    submissions: impl IntoIterator<Item = &'a Submission>,
    after: u64,
    now: Millis,
    current: impl Fn(&IndicatorKey) -> Option<IndicatorState>,
    mut earlier: impl FnMut(&str, &str) -> Result<Option<IdempotentHit>>,
) -> Group {
    let mut group = Group {
        after,
        records: Vec::new(),
        idempotency: Vec::new(),
        overlay: StateOverlay::default(),
        outcomes: Vec::new(),
    };
    let mut group_keys: HashMap<(String, String), IdempotentHit> = HashMap::new();
    for submission in submissions {
        let key = submission
            .idempotency_key
            .clone()
            .map(|k| (submission.source.org_id.clone(), k));
        let fingerprint = key.as_ref().map(|_| fingerprint::of(&submission.changes));
        let seen = match &key {
            Some(key) => match group_keys.get(key) {
                Some(hit) => Ok(Some(*hit)),
                None => earlier(&key.0, &key.1),
            },
            None => Ok(None),
        }
        .and_then(|hit| match (hit, &key) {
            (Some(hit), Some((_, key))) => same_request(key, hit, fingerprint).map(Some),
            (hit, _) => Ok(hit),
        });
        let outcome = match seen {
            Err(error) => Outcome::Refused(error),
            Ok(Some(hit)) => Outcome::Replay(hit),
            Ok(None) => {
                let head = group.head();
                match sequence(&mut group.overlay, submission, head, now, &current) {
                    Err(error) => Outcome::Refused(error),
                    Ok(sequenced) => {
                        let count = sequenced.len() as u32;
                        let first_sequence = sequenced.first().map_or(0, |(e, _)| e.sequence);
                        if let Some((org_id, key)) = key {
                            let hit = IdempotentHit {
                                first_sequence,
                                count,
                                fingerprint,
                            };
                            group_keys.insert((org_id.clone(), key.clone()), hit);
                            group
                                .idempotency
                                .push(IdempotencyEntry { org_id, key, hit });
                        }
                        // The answer is one event per change: a WITHDRAWN
                        // told others, not the caller, and is left out of it.
                        let refs = sequenced
                            .iter()
                            .filter(|(e, _)| e.event_type != EventType::Withdrawn)
                            .map(|(e, _)| EventRef {
                                sequence: e.sequence,
                                event_id: e.event_id,
                                event_type: e.event_type,
                            })
                            .collect();
                        for (index, (event, visibility)) in sequenced.into_iter().enumerate() {
                            let mark = match (&submission.idempotency_key, index) {
                                (Some(key), 0) => Some(IdempotencyMark {
                                    key: key.clone(),
                                    count,
                                    fingerprint,
                                }),
                                _ => None,
                            };
                            group.records.push(record_of(&event, visibility, mark));
                        }
                        Outcome::Appended(refs)
                    }
                }
            }
        };
        group.outcomes.push(outcome);
    }
    group
}

/// Turns a submission's changes into events with the sequences after `head`,
/// applying them to the group's overlay; all or nothing. Each event comes with
/// who may see it: its record's `(tlp, source_org)` (`policy::event_visibility`).
/// A publish by the source that narrows its marking (`policy::narrows`) is
/// preceded by a WITHDRAWN under the old marking, so that exactly those that
/// were shown the indicator learn it is no longer shared with them.
fn sequence(
    overlay: &mut StateOverlay,
    submission: &Submission,
    head: u64,
    now: Millis,
    current: &impl Fn(&IndicatorKey) -> Option<IndicatorState>,
) -> Result<Vec<(Event, Visibility)>> {
    // Current states of the indicators touched, to restore if a change is refused.
    let mut undo: HashMap<IndicatorKey, Option<IndicatorState>> = HashMap::new();
    let mut events = Vec::with_capacity(submission.changes.len());
    for change in &submission.changes {
        let key = change_key(change);
        let next = head + 1 + events.len() as u64;
        let outcome = overlay
            .get(key, |key| Ok(current(key)))
            .and_then(|mut state| {
                undo.entry(key.clone()).or_insert_with(|| state.clone());
                let mut sequence = next;
                let source = &submission.source;
                if let Some((event, visibility)) =
                    withdrawal(change, state.as_ref(), source, next, now)
                {
                    state = state::apply(state, &event);
                    events.push((event, visibility));
                    sequence += 1;
                }
                let event = event_for(change, state.as_ref(), &submission.source, sequence, now)?;
                let after = state::apply(state, &event);
                let visibility = visibility(change, &event, after.as_ref());
                events.push((event, visibility));
                overlay.set(key, after);
                Ok(())
            });
        if let Err(error) = outcome {
            for (key, state) in undo {
                overlay.set(&key, state);
            }
            return Err(error);
        }
    }
    Ok(events)
}

/// Who may see an event: its record's TLP and governing organisation.
type Visibility = (Tlp, String);

/// The WITHDRAWN a publish by the indicator's source makes when it narrows the
/// marking: the indicator as it was shown, under the old marking, so that it
/// reaches exactly those that were shown it.
fn withdrawal(
    change: &Change,
    current: Option<&IndicatorState>,
    source: &Source,
    sequence: u64,
    time: Millis,
) -> Option<(Event, Visibility)> {
    let (Change::Publish(new), Some(state)) = (change, current) else {
        return None;
    };
    let narrows = state.is_active()
        && state.source_org == source.org_id
        && policy::narrows(state.indicator.tlp, new.tlp);
    narrows.then(|| {
        let event = Event {
            sequence,
            event_id: Uuid::now_v7(),
            event_type: EventType::Withdrawn,
            indicator: state.indicator.clone(),
            source: source.clone(),
            time,
            reason: String::new(),
            action: None,
        };
        let visibility = (state.indicator.tlp, state.source_org.clone());
        (event, visibility)
    })
}

/// Who may see `event`, made by `change`, given the indicator's state after it.
fn visibility(change: &Change, event: &Event, after: Option<&IndicatorState>) -> Visibility {
    let actor = event.source.org_id.as_str();
    let Some(state) = after else {
        return (event.indicator.tlp, actor.to_owned());
    };
    let report = matches!(change, Change::Publish(_)).then_some((event.indicator.tlp, actor));
    policy::event_visibility(report, state.indicator.tlp, &state.source_org, HUB_ORG)
}

/// An earlier submission with the same key is replayed only for the same
/// request; the key reused for another request is refused, naming where it was
/// first used (a key stored before fingerprints replays whatever comes).
fn same_request(
    key: &str,
    hit: IdempotentHit,
    fingerprint: Option<Fingerprint>,
) -> Result<IdempotentHit> {
    match hit.fingerprint {
        Some(first) if Some(first) != fingerprint => Err(Error::FailedPrecondition(format!(
            "idempotency_key: {key:?} was first used at sequence {} for a different request; \
             a key replays only the request it was first used for (same RPC, indicators \
             and fields): use a new key for a new request",
            hit.first_sequence
        ))),
        _ => Ok(hit),
    }
}

fn change_key(change: &Change) -> &IndicatorKey {
    match change {
        Change::Publish(indicator) => &indicator.key,
        Change::Revoke { key, .. } | Change::Action { key, .. } | Change::Expire { key } => key,
    }
}

/// The event a change makes, given the indicator's current state (the rules
/// are `state`'s).
fn event_for(
    change: &Change,
    current: Option<&IndicatorState>,
    source: &Source,
    sequence: u64,
    time: Millis,
) -> Result<Event> {
    let key = change_key(change);
    let (event_type, indicator, reason, action) = match change {
        Change::Publish(indicator) => (
            state::classify_publish(current, &source.org_id),
            indicator.clone(),
            String::new(),
            None,
        ),
        Change::Revoke { reason, .. } => (
            EventType::Revoked,
            state::require_active(key, current)?.indicator.clone(),
            reason.clone(),
            None,
        ),
        Change::Action { action, .. } => (
            EventType::ActionTaken,
            state::require_active(key, current)?.indicator.clone(),
            String::new(),
            Some(action.clone()),
        ),
        Change::Expire { .. } => {
            let state = state::require_active(key, current)?;
            state::require_due(key, state, time)?;
            (
                EventType::Expired,
                state.indicator.clone(),
                String::new(),
                None,
            )
        }
    };
    Ok(Event {
        sequence,
        event_id: Uuid::now_v7(),
        event_type,
        indicator,
        source: source.clone(),
        time,
        reason,
        action,
    })
}

/// The stored record of an event, its wire entry encoded here, once. Its
/// metadata's `(tlp, source_org)` is `visibility`, who may see it
/// (`policy::may_see`); the event itself names who acted.
fn record_of(
    event: &Event,
    (tlp, owner): Visibility,
    idempotency: Option<IdempotencyMark>,
) -> Record {
    Record {
        sequence: event.sequence,
        meta: RecordMeta {
            kind: event.indicator.key.kind,
            category: event.indicator.category,
            risk: event.indicator.risk,
            tlp,
            event_type: event.event_type,
            source_org: owner,
        },
        idempotency,
        entry: frame::encode_event_entry(&wire::event_to_proto(event)),
    }
}

/// Indicator states changed by the events of one group, over the current view:
/// for each indicator touched, its state before the group and its new one. The
/// states before come from the writer's in-memory view (from the stored view
/// during replay, before the in-memory one exists).
#[derive(Default)]
pub struct StateOverlay {
    states: HashMap<IndicatorKey, (Option<IndicatorState>, Option<IndicatorState>)>,
}

impl StateOverlay {
    fn get(
        &mut self,
        key: &IndicatorKey,
        before: impl FnOnce(&IndicatorKey) -> Result<Option<IndicatorState>>,
    ) -> Result<Option<IndicatorState>> {
        if let Some((_, current)) = self.states.get(key) {
            return Ok(current.clone());
        }
        let stored = before(key)?;
        self.states
            .insert(key.clone(), (stored.clone(), stored.clone()));
        Ok(stored)
    }

    fn set(&mut self, key: &IndicatorKey, state: Option<IndicatorState>) {
        if let Some((_, current)) = self.states.get_mut(key) {
            *current = state;
        }
    }

    /// Applies an event already in the log (replay), the state before it read
    /// by `before`.
    pub fn apply(
        &mut self,
        event: &Event,
        before: impl FnOnce(&IndicatorKey) -> Result<Option<IndicatorState>>,
    ) -> Result<()> {
        let current = self.get(&event.indicator.key, before)?;
        self.set(&event.indicator.key, state::apply(current, event));
        Ok(())
    }

    /// The state the group leaves an indicator in, if the group touched it
    /// (`Some(None)`: it has none).
    pub fn after(&self, key: &IndicatorKey) -> Option<Option<&IndicatorState>> {
        self.states.get(key).map(|(_, after)| after.as_ref())
    }

    /// What changed, for the log to store (with any index kept beside the states).
    pub fn changed(&self) -> Vec<StateChange<'_>> {
        self.states
            .values()
            .filter_map(|(before, after)| {
                let after = after.as_ref()?;
                (before.as_ref() != Some(after)).then_some(StateChange {
                    before: before.as_ref(),
                    after,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{ActionType, Category, Kind, Risk, Tlp};

    fn key(value: &str) -> IndicatorKey {
        IndicatorKey {
            kind: Kind::PhoneNumber,
            value: value.into(),
        }
    }

    fn publish(org: &str, value: &str, tlp: Tlp, idempotency_key: Option<&str>) -> Submission {
        Submission {
            source: Source {
                org_id: org.into(),
                cert_serial: "01".into(),
            },
            changes: vec![Change::Publish(Indicator {
                key: key(value),
                category: Category::FraudCall,
                risk: Risk::High,
                description: String::new(),
                valid_until: None,
                tlp,
            })],
            idempotency_key: idempotency_key.map(Into::into),
        }
    }

    fn by(org: &str, changes: Vec<Change>) -> Submission {
        Submission {
            source: Source {
                org_id: org.into(),
                cert_serial: "02".into(),
            },
            changes,
            idempotency_key: None,
        }
    }

    fn sequences(outcome: &Outcome) -> Vec<(u64, EventType)> {
        match outcome {
            Outcome::Appended(events) => {
                events.iter().map(|e| (e.sequence, e.event_type)).collect()
            }
            other => panic!("expected appended events, got {other:?}"),
        }
    }

    fn nothing_stored(_: &str, _: &str) -> Result<Option<IdempotentHit>> {
        Ok(None)
    }

    /// The states a group leaves, as the next group's current state.
    fn states_after(group: &Group) -> HashMap<IndicatorKey, IndicatorState> {
        group
            .overlay
            .changed()
            .into_iter()
            .map(|c| (c.after.indicator.key.clone(), c.after.clone()))
            .collect()
    }

    #[test]
    fn a_group_numbers_its_events_after_the_head_and_sees_its_own_earlier_events() {
        let submissions = [
            publish("bank-a", "+919876543210", Tlp::Green, None),
            publish("tsp-b", "+919876543210", Tlp::Green, None),
        ];
        let group = plan(&submissions, 41, 1_000, |_| None, nothing_stored);
        assert_eq!(group.after, 41);
        assert_eq!(group.head(), 43);
        assert_eq!(sequences(&group.outcomes[0]), [(42, EventType::Published)]);
        assert_eq!(sequences(&group.outcomes[1]), [(43, EventType::Sighting)]);
        let stored: Vec<u64> = group.records.iter().map(|r| r.sequence).collect();
        assert_eq!(stored, [42, 43]);
        let event = frame::decode_event_entry(&group.records[1].entry).expect("decodes");
        assert_eq!(event.sequence, 43, "the record holds the encoded event");
        assert_eq!(group.overlay.changed().len(), 1, "one indicator changed");
    }

    #[test]
    fn a_refused_submission_takes_no_sequence_and_changes_no_state() {
        let submissions = [
            by(
                "bank-a",
                vec![
                    publish("bank-a", "+919876543210", Tlp::Green, None).changes[0].clone(),
                    Change::Revoke {
                        key: key("+919800000000"),
                        reason: "wrong".into(),
                    },
                ],
            ),
            publish("bank-a", "+919811111111", Tlp::Green, None),
        ];
        let group = plan(&submissions, 0, 1_000, |_| None, nothing_stored);
        match &group.outcomes[0] {
            Outcome::Refused(Error::NotFound(message)) => {
                assert!(message.contains("+919800000000"), "{message}")
            }
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
        assert_eq!(sequences(&group.outcomes[1]), [(1, EventType::Published)]);
        assert_eq!(group.records.len(), 1);
        let changed = states_after(&group);
        assert!(changed.contains_key(&key("+919811111111")));
        assert!(
            !changed.contains_key(&key("+919876543210")),
            "all or nothing: the refused submission's publish is undone"
        );
    }

    #[test]
    fn an_idempotency_key_replays_within_the_group_and_from_storage() {
        let submissions = [
            publish("bank-a", "+919876543210", Tlp::Green, Some("k1")),
            publish("bank-a", "+919876543210", Tlp::Green, Some("k1")),
            publish("bank-a", "+919822222222", Tlp::Green, Some("stored")),
        ];
        let stored = IdempotentHit {
            first_sequence: 7,
            count: 1,
            fingerprint: Some(fingerprint::of(&submissions[2].changes)),
        };
        let group = plan(
            &submissions,
            10,
            1_000,
            |_| None,
            |org, key| Ok((org == "bank-a" && key == "stored").then_some(stored)),
        );
        assert_eq!(sequences(&group.outcomes[0]), [(11, EventType::Published)]);
        match (&group.outcomes[1], &group.outcomes[2]) {
            (Outcome::Replay(first), Outcome::Replay(earlier)) => {
                assert_eq!((first.first_sequence, first.count), (11, 1));
                assert_eq!(*earlier, stored);
            }
            other => panic!("expected two replays, got {other:?}"),
        }
        assert_eq!(group.records.len(), 1);
        assert_eq!(group.idempotency.len(), 1, "only the new key is indexed");
        assert_eq!(
            group.records[0]
                .idempotency
                .as_ref()
                .map(|m| m.key.as_str()),
            Some("k1")
        );
    }

    #[test]
    fn an_idempotency_key_reused_for_another_request_is_refused_naming_its_first_use() {
        let submissions = [
            publish("bank-a", "+919876543210", Tlp::Green, Some("k1")),
            publish("bank-a", "+919811111111", Tlp::Green, Some("k1")),
            publish("bank-a", "+919822222222", Tlp::Green, Some("stored")),
            publish("bank-a", "+919833333333", Tlp::Green, Some("legacy")),
        ];
        let stored = IdempotentHit {
            first_sequence: 7,
            count: 1,
            fingerprint: Some(fingerprint::of(&submissions[0].changes)),
        };
        // A key stored before fingerprints (log record v1) replays whatever comes.
        let legacy = IdempotentHit {
            fingerprint: None,
            ..stored
        };
        let group = plan(
            &submissions,
            10,
            1_000,
            |_| None,
            |_, key| match key {
                "stored" => Ok(Some(stored)),
                "legacy" => Ok(Some(legacy)),
                _ => Ok(None),
            },
        );
        assert_eq!(sequences(&group.outcomes[0]), [(11, EventType::Published)]);
        for (index, first) in [(1, 11), (2, 7)] {
            match &group.outcomes[index] {
                Outcome::Refused(Error::FailedPrecondition(message)) => assert!(
                    message.contains(&format!("first used at sequence {first}")),
                    "{message}"
                ),
                other => panic!("submission {index}: expected FAILED_PRECONDITION, got {other:?}"),
            }
        }
        assert!(matches!(group.outcomes[3], Outcome::Replay(hit) if hit == legacy));
        assert_eq!(
            group.records.len(),
            1,
            "refused and replayed submissions append nothing"
        );
    }

    #[test]
    fn lifecycle_events_follow_the_state_and_the_sources_tlp_marking() {
        let first = plan(
            &[publish("bank-a", "+919876543210", Tlp::Red, None)],
            0,
            1_000,
            |_| None,
            nothing_stored,
        );
        let states = states_after(&first);
        let action = Change::Action {
            key: key("+919876543210"),
            action: Action {
                action_type: ActionType::NumberDisconnected,
                note: String::new(),
            },
        };
        let second = plan(
            &[
                by("tsp-b", vec![action]),
                by(
                    "regulator",
                    vec![Change::Revoke {
                        key: key("+919876543210"),
                        reason: "court order".into(),
                    }],
                ),
                by(
                    "dip-hub",
                    vec![Change::Expire {
                        key: key("+919876543210"),
                    }],
                ),
            ],
            first.head(),
            2_000,
            |k| states.get(k).cloned(),
            nothing_stored,
        );
        assert_eq!(
            sequences(&second.outcomes[0]),
            [(2, EventType::ActionTaken)]
        );
        assert_eq!(sequences(&second.outcomes[1]), [(3, EventType::Revoked)]);
        assert!(
            matches!(
                &second.outcomes[2],
                Outcome::Refused(Error::FailedPrecondition(_))
            ),
            "a revoked indicator cannot expire: {:?}",
            second.outcomes[2]
        );
        let owners: Vec<&str> = second
            .records
            .iter()
            .map(|r| r.meta.source_org.as_str())
            .collect();
        assert_eq!(
            owners,
            ["bank-a", "bank-a"],
            "lifecycle events are governed by the source's TLP marking"
        );
    }

    /// Issue 9: the source raising its marking to RED first withdraws the
    /// indicator, under the old marking, from those that were shown it; another
    /// organisation's RED report changes no marking and reaches only who may
    /// see both; lowering the marking withdraws nothing.
    #[test]
    fn a_narrowing_republish_by_the_source_is_preceded_by_a_withdrawn_under_the_old_marking() {
        let first = plan(
            &[publish("bank-a", "+919876543210", Tlp::Green, None)],
            0,
            1_000,
            |_| None,
            nothing_stored,
        );
        let states = states_after(&first);
        let second = plan(
            &[
                publish("police", "+919876543210", Tlp::Red, None),
                publish("bank-a", "+919876543210", Tlp::Green, None),
                publish("bank-a", "+919876543210", Tlp::Red, Some("raise")),
                publish("bank-a", "+919876543210", Tlp::Amber, None),
            ],
            first.head(),
            2_000,
            |k| states.get(k).cloned(),
            nothing_stored,
        );
        assert_eq!(sequences(&second.outcomes[0]), [(2, EventType::Sighting)]);
        assert_eq!(
            sequences(&second.outcomes[1]),
            [(3, EventType::Published)],
            "the police's RED report did not raise the marking: nothing to withdraw"
        );
        assert_eq!(
            sequences(&second.outcomes[2]),
            [(5, EventType::Published)],
            "the answer is one event per change"
        );
        assert_eq!(sequences(&second.outcomes[3]), [(6, EventType::Published)]);
        let records: Vec<(u64, EventType, Tlp, &str)> = second
            .records
            .iter()
            .map(|r| {
                let m = &r.meta;
                (r.sequence, m.event_type, m.tlp, m.source_org.as_str())
            })
            .collect();
        assert_eq!(
            records,
            [
                (2, EventType::Sighting, Tlp::Red, "police"),
                (3, EventType::Published, Tlp::Green, "bank-a"),
                (4, EventType::Withdrawn, Tlp::Green, "bank-a"),
                (5, EventType::Published, Tlp::Red, "bank-a"),
                (6, EventType::Published, Tlp::Amber, "bank-a"),
            ]
        );
        let raise = second.idempotency.first().expect("the key is indexed");
        assert_eq!(
            (raise.hit.first_sequence, raise.hit.count),
            (4, 2),
            "a replay reads the WITHDRAWN too"
        );
        let withdrawn = frame::decode_event_entry(&second.records[2].entry).expect("decodes");
        let indicator = withdrawn.indicator.expect("indicator");
        assert_eq!(indicator.tlp, Tlp::Green as i32, "as it was shown");
        let after = states_after(&second);
        assert_eq!(after[&key("+919876543210")].indicator.tlp, Tlp::Amber);
    }
}
