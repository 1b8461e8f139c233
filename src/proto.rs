//! The generated wire contract (`proto/dip/v1/hub.proto`, package `dip.v1`).
//!
//! Owns: nothing but generated code. Message types and the client live here; the
//! server trait lives in [`server`], where `SubscribeResponse` is the hub's
//! pre-encoded [`crate::frame::Frame`]. Proto types stop at the API edge
//! (`api`, `wire`): the rest of the hub works on its own domain types.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/dip.v1.rs"));

/// The server side of the contract, streaming pre-encoded frames.
pub mod server {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/server/dip.v1.rs"));
}

/// The encoded `FileDescriptorSet`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dip_descriptor.bin"));

/// How the hub names enumeration values in its own words: error messages, the
/// CLI's input and output, metric labels, audit subjects and the digest. The
/// short name is the proto value name without its enumeration's prefix
/// (`PHONE_NUMBER` for `INDICATOR_KIND_PHONE_NUMBER`, `RED` for `TLP_RED`);
/// the wire and the proto's JSON mapping use the full names.
pub trait ValueName: Sized + Copy + 'static {
    /// The prefix every value of the enumeration carries in the proto.
    const PREFIX: &'static str;
    /// Every value but `UNSPECIFIED`, in proto order.
    const ALL: &'static [Self];
    /// The full proto name.
    fn proto_name(self) -> &'static str;

    /// The proto name without the enumeration's prefix.
    fn short_name(self) -> &'static str {
        let full = self.proto_name();
        full.strip_prefix(Self::PREFIX).unwrap_or(full)
    }

    /// A value by its short or full name, e.g. `PHONE_NUMBER` or
    /// `INDICATOR_KIND_PHONE_NUMBER`; never `UNSPECIFIED`.
    fn from_name(name: &str) -> Option<Self> {
        let short = name.strip_prefix(Self::PREFIX).unwrap_or(name);
        Self::ALL.iter().copied().find(|v| v.short_name() == short)
    }

    /// Every short name, for "expected one of" messages.
    fn short_names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.short_name()).collect()
    }
}

macro_rules! value_names {
    ($($ty:ident $prefix:literal [$($variant:ident),* $(,)?]),* $(,)?) => {
        $(impl ValueName for $ty {
            const PREFIX: &'static str = $prefix;
            const ALL: &'static [Self] = &[$($ty::$variant),*];
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
        })*
    };
}

value_names! {
    IndicatorKind "INDICATOR_KIND_" [PhoneNumber, Imei, Url, Domain, IpAddress, UpiId, BankAccount, Email, SmsHeader],
    Category "CATEGORY_" [FraudCall, Spam, Phishing, MuleAccount, StolenHandset, FakeKyc, Disconnected, VoipAbuse],
    Risk "RISK_" [Medium, High, VeryHigh],
    Tlp "TLP_" [Clear, Green, Amber, Red],
    EventType "EVENT_TYPE_" [Published, Revoked, Expired, Sighting, ActionTaken, Withdrawn],
    ActionType "ACTION_TYPE_" [NumberDisconnected, AccountFrozen, AccountDeregistered, UpiIdDelinked, UrlBlocked, HandsetBlocked, OtherAction],
    IndicatorStatus "INDICATOR_STATUS_" [Active, Revoked, Expired],
    OrgRole "ORG_ROLE_" [Regulator, LawEnforcement, Bank, Tsp, PaymentOperator, Platform],
    OrgStatus "ORG_STATUS_" [Active, Suspended],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_the_prefix_and_parse_both_ways() {
        assert_eq!(IndicatorKind::PhoneNumber.short_name(), "PHONE_NUMBER");
        assert_eq!(Tlp::Red.short_name(), "RED");
        assert_eq!(IndicatorStatus::Revoked.short_name(), "REVOKED");
        assert_eq!(
            IndicatorKind::from_name("INDICATOR_KIND_UPI_ID"),
            Some(IndicatorKind::UpiId)
        );
        assert_eq!(
            IndicatorKind::from_name("UPI_ID"),
            Some(IndicatorKind::UpiId)
        );
        assert_eq!(IndicatorKind::from_name("UNSPECIFIED"), None);
        assert_eq!(IndicatorKind::from_name("INDICATOR_KIND_UNSPECIFIED"), None);
        assert_eq!(Risk::short_names(), ["MEDIUM", "HIGH", "VERY_HIGH"]);
    }

    #[test]
    fn every_value_but_unspecified_is_listed() {
        fn check<E: ValueName + TryFrom<i32>>(count: i32) {
            assert_eq!(E::ALL.len() as i32, count);
            assert!((1..=count).all(|n| E::try_from(n).is_ok()));
            assert!(E::try_from(count + 1).is_err());
        }
        check::<IndicatorKind>(9);
        check::<Category>(8);
        check::<Risk>(3);
        check::<Tlp>(4);
        check::<EventType>(6);
        check::<ActionType>(7);
        check::<IndicatorStatus>(3);
        check::<OrgRole>(6);
        check::<OrgStatus>(2);
    }
}
