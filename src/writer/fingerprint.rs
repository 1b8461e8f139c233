//! The fingerprint of a submission: what an idempotency key is bound to.
//!
//! Owns: the canonical encoding of a validated submission's changes (which RPC,
//! and every field that decides what it does, after normalization) and its hash,
//! stored with the idempotency key so that the key reused for a different request
//! is refused instead of replaying another request's answer. Must never depend on
//! what differs between two sendings of one request (event ids, times, the
//! certificate serial) nor on `Debug` output or anything else that may change
//! between versions of the hub: stored fingerprints outlive a restart.

use ring::digest::{SHA256, digest};

use crate::indicator::Indicator;
use crate::sequencer::Change;

/// The first 16 bytes of SHA-256 over the canonical encoding.
pub type Fingerprint = [u8; 16];

/// The fingerprint of a submission's changes, in order.
pub fn of(changes: &[Change]) -> Fingerprint {
    let mut bytes = Vec::with_capacity(64 * changes.len());
    for change in changes {
        match change {
            Change::Publish(indicator) => {
                bytes.push(b'P');
                indicator_fields(&mut bytes, indicator);
            }
            Change::Revoke { key, reason } => {
                bytes.push(b'R');
                field(&mut bytes, &(key.kind as i32).to_be_bytes());
                field(&mut bytes, key.value.as_bytes());
                field(&mut bytes, reason.as_bytes());
            }
            Change::Action { key, action } => {
                bytes.push(b'A');
                field(&mut bytes, &(key.kind as i32).to_be_bytes());
                field(&mut bytes, key.value.as_bytes());
                field(&mut bytes, &(action.action_type as i32).to_be_bytes());
                field(&mut bytes, action.note.as_bytes());
            }
            Change::Expire { key } => {
                bytes.push(b'E');
                field(&mut bytes, &(key.kind as i32).to_be_bytes());
                field(&mut bytes, key.value.as_bytes());
            }
        }
    }
    let hash = digest(&SHA256, &bytes);
    let mut fingerprint = [0; 16];
    fingerprint.copy_from_slice(&hash.as_ref()[..16]);
    fingerprint
}

fn indicator_fields(bytes: &mut Vec<u8>, indicator: &Indicator) {
    let Indicator {
        key,
        category,
        risk,
        description,
        valid_until,
        tlp,
    } = indicator;
    field(bytes, &(key.kind as i32).to_be_bytes());
    field(bytes, key.value.as_bytes());
    field(bytes, &(*category as i32).to_be_bytes());
    field(bytes, &(*risk as i32).to_be_bytes());
    field(bytes, description.as_bytes());
    match valid_until {
        Some(at) => field(bytes, &at.to_be_bytes()),
        None => field(bytes, &[]),
    }
    field(bytes, &(*tlp as i32).to_be_bytes());
}

/// A length-prefixed field, so that no two encodings run into each other.
fn field(bytes: &mut Vec<u8>, value: &[u8]) {
    bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
    bytes.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::{Category, IndicatorKey, Kind, Risk, Tlp};

    fn publish(value: &str, risk: Risk) -> Change {
        Change::Publish(Indicator {
            key: IndicatorKey {
                kind: Kind::PhoneNumber,
                value: value.into(),
            },
            category: Category::FraudCall,
            risk,
            description: String::new(),
            valid_until: None,
            tlp: Tlp::Green,
        })
    }

    #[test]
    fn equal_requests_share_a_fingerprint_and_any_difference_changes_it() {
        let a = [publish("+919800000001", Risk::High)];
        assert_eq!(of(&a), of(&[publish("+919800000001", Risk::High)]));
        assert_ne!(of(&a), of(&[publish("+919800000002", Risk::High)]));
        assert_ne!(of(&a), of(&[publish("+919800000001", Risk::Medium)]));
        let revoke = Change::Revoke {
            key: IndicatorKey {
                kind: Kind::PhoneNumber,
                value: "+919800000001".into(),
            },
            reason: String::new(),
        };
        assert_ne!(of(&a), of(&[revoke]));
        assert_ne!(of(&a), of(&[]));
    }
}
