//! The digest of a set of active indicators: order-independent, kept incrementally.
//!
//! Owns: the formula a TSP reproduces over its local block list to check that it
//! holds exactly what the hub holds. For each indicator, `h = SHA-256(KIND ":"
//! value)` over the kind's protobuf name (`PHONE_NUMBER`) and the normalized value
//! as UTF-8, read as a 256-bit big-endian unsigned integer; the digest is the sum
//! of every `h` modulo 2^256, written as 64 lowercase hex digits (64 zeros for
//! the empty set). A sum does not depend on order, and adding or removing one
//! indicator is one addition or subtraction, so the writer keeps the digest of
//! the whole active set up to date from each group's state changes. Must never
//! depend on anything but (kind, value): not on risk, time or the hub's version.

use crate::proto::ValueName;
use ring::digest::{Context, SHA256};

use crate::indicator::{IndicatorKey, Kind};
use crate::state::StateChange;

/// A sum of indicator hashes modulo 2^256, as four 64-bit limbs, most significant first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest([u64; 4]);

impl Digest {
    /// The digest of the empty set.
    pub const EMPTY: Digest = Digest([0; 4]);

    /// The hash of one indicator, as a digest of the set holding only it.
    pub fn of(key: &IndicatorKey) -> Digest {
        Digest::of_parts(key.kind, &key.value)
    }

    /// [`Digest::of`] the indicator of `kind` with (normalized) `value`.
    pub fn of_parts(kind: Kind, value: &str) -> Digest {
        let mut input = Context::new(&SHA256);
        input.update(kind.short_name().as_bytes());
        input.update(b":");
        input.update(value.as_bytes());
        Digest::from_bytes(input.finish().as_ref())
    }

    fn from_bytes(bytes: &[u8]) -> Digest {
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *limb = u64::from_be_bytes(word);
        }
        Digest(limbs)
    }

    /// Adds an indicator to the set.
    pub fn add(&mut self, key: &IndicatorKey) {
        *self = self.plus(Digest::of(key));
    }

    /// [`Digest::add`] the indicator of `kind` with (normalized) `value`.
    pub fn add_parts(&mut self, kind: Kind, value: &str) {
        *self = self.plus(Digest::of_parts(kind, value));
    }

    /// Removes an indicator from the set.
    pub fn remove(&mut self, key: &IndicatorKey) {
        *self = self.plus(Digest::of(key).negated());
    }

    /// Applies one state change: an indicator leaves the active set, joins it, or neither.
    pub fn apply(&mut self, change: &StateChange<'_>) {
        self.move_indicator(
            &change.after.indicator.key,
            change.before.is_some_and(|s| s.is_active()),
            change.after.is_active(),
        );
    }

    /// Moves `key` out of the active set, into it, or neither, by whether it
    /// `was` active and now `is`.
    pub fn move_indicator(&mut self, key: &IndicatorKey, was: bool, is: bool) {
        match (was, is) {
            (true, false) => self.remove(key),
            (false, true) => self.add(key),
            _ => {}
        }
    }

    /// The digest of the union of two disjoint sets.
    pub fn combine(self, other: Digest) -> Digest {
        self.plus(other)
    }

    /// `self + other` modulo 2^256.
    fn plus(self, other: Digest) -> Digest {
        let mut sum = [0u64; 4];
        let mut carry = false;
        for i in (0..4).rev() {
            let (partial, c1) = self.0[i].overflowing_add(other.0[i]);
            let (total, c2) = partial.overflowing_add(u64::from(carry));
            sum[i] = total;
            carry = c1 || c2;
        }
        Digest(sum)
    }

    /// `-self` modulo 2^256 (two's complement).
    fn negated(self) -> Digest {
        Digest(self.0.map(|limb| !limb)).plus(Digest([0, 0, 0, 1]))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|limb| format!("{limb:016x}")).collect()
    }

    /// Stored form: 32 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, limb) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        bytes
    }

    /// Reads the stored form; `None` unless it is exactly 32 bytes.
    pub fn from_stored(bytes: &[u8]) -> Option<Digest> {
        (bytes.len() == 32).then(|| Digest::from_bytes(bytes))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Kind;

    fn key(n: u32) -> IndicatorKey {
        IndicatorKey {
            kind: Kind::PhoneNumber,
            value: format!("+9198{n:08}"),
        }
    }

    #[test]
    fn the_hash_is_sha256_of_kind_colon_value() {
        // echo -n 'PHONE_NUMBER:+919876543210' | sha256sum
        let got = Digest::of(&IndicatorKey {
            kind: Kind::PhoneNumber,
            value: "+919876543210".into(),
        });
        assert_eq!(
            got.to_hex(),
            "2efba2e86d312186f9a41a8b17d6473569c2bfae52067fffd0e45accb7f55325"
        );
    }

    #[test]
    fn the_digest_does_not_depend_on_order_and_removal_undoes_addition() {
        let mut forward = Digest::EMPTY;
        let mut backward = Digest::EMPTY;
        for n in 0..100 {
            forward.add(&key(n));
            backward.add(&key(99 - n));
        }
        assert_eq!(forward, backward);
        assert_ne!(forward, Digest::EMPTY);
        for n in 0..100 {
            forward.remove(&key(n));
        }
        assert_eq!(forward, Digest::EMPTY);
        assert_eq!(Digest::EMPTY.to_hex(), "0".repeat(64));
    }

    #[test]
    fn carries_cross_limbs_and_the_sum_wraps_modulo_2_pow_256() {
        let max = Digest([u64::MAX; 4]);
        assert_eq!(max.plus(Digest([0, 0, 0, 1])), Digest::EMPTY);
        assert_eq!(
            Digest([0, 0, 0, u64::MAX]).plus(Digest([0, 0, 0, 1])),
            Digest([0, 0, 1, 0])
        );
        let d = Digest::of(&key(7));
        assert_eq!(d.plus(d.negated()), Digest::EMPTY);
        assert_eq!(Digest::from_stored(&d.to_bytes()), Some(d));
    }
}
