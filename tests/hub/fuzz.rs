//! Property-based fuzzing (proptest) of request decoding, validation and
//! normalization, without a server: arbitrary requests and arbitrary bytes never
//! panic, every refusal is INVALID_ARGUMENT naming a field of the request and the
//! expected form, and what is accepted is canonical (validating it again gives
//! the same indicator).

use dip_hub::error::Error;
use dip_hub::proto;
use dip_hub::validate::{self, ActionCommand, PublishBatch, RevokeCommand, SubscribeCommand};
use proptest::prelude::*;
use prost::Message;

/// Enumeration values: mostly known ones, some unknown or negative.
fn arb_enum(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![8 => 0..=known, 1 => any::<i32>()]
}

/// Values that look like indicators of every kind, and arbitrary text.
fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[+0-9 ()-]{0,20}",
        "[0-9]{15}",
        "(https?|ftp)://[a-zA-Z0-9.-]{0,30}(/[a-z%0-9]{0,10})?",
        "[a-zA-Z0-9.-]{1,20}\\.[a-z]{2,6}",
        "[0-9a-f:.]{0,40}",
        "[a-zA-Z0-9._-]{0,20}@[a-zA-Z]{0,12}",
        "[A-Z]{4}0[A-Z0-9]{6}[: ]?[0-9]{9,18}",
        "[A-Za-z0-9-]{0,10}",
        "\\PC{0,40}",
    ]
}

fn arb_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

pub fn arb_indicator() -> impl Strategy<Value = proto::Indicator> {
    (
        arb_enum(9),
        arb_value(),
        arb_enum(8),
        arb_enum(3),
        prop_oneof![".{0,40}", any::<String>()],
        arb_timestamp(),
        arb_enum(4),
    )
        .prop_map(
            |(kind, value, category, risk, description, valid_until, tlp)| proto::Indicator {
                kind,
                value,
                category,
                risk,
                description,
                valid_until,
                tlp,
            },
        )
}

pub fn arb_publish_request() -> impl Strategy<Value = proto::PublishRequest> {
    (
        prop::collection::vec(arb_indicator(), 0..6),
        prop_oneof!["", "[ -~]{0,140}", any::<String>()],
    )
        .prop_map(|(indicators, idempotency_key)| proto::PublishRequest {
            indicators,
            idempotency_key,
        })
}

pub fn arb_subscribe_request() -> impl Strategy<Value = proto::SubscribeRequest> {
    let filter = (
        prop::collection::vec(arb_enum(9), 0..4),
        prop::collection::vec(arb_enum(8), 0..4),
        arb_enum(3),
        prop::collection::vec(arb_enum(5), 0..4),
    )
        .prop_map(|(kinds, categories, min_risk, types)| proto::Filter {
            kinds,
            categories,
            min_risk,
            types,
        });
    (
        proptest::option::of(filter),
        prop_oneof![Just(0u64), any::<u64>()],
        any::<bool>(),
        prop_oneof!["", "[a-zA-Z0-9._-]{0,70}", any::<String>()],
        prop_oneof![Just(0u32), 0u32..4000, any::<u32>()],
    )
        .prop_map(
            |(filter, after_sequence, from_now, consumer, heartbeat_seconds)| {
                proto::SubscribeRequest {
                    filter,
                    after_sequence,
                    from_now,
                    consumer,
                    heartbeat_seconds,
                }
            },
        )
}

pub fn arb_lookup_request() -> impl Strategy<Value = proto::LookupRequest> {
    (arb_enum(9), arb_value()).prop_map(|(kind, value)| proto::LookupRequest { kind, value })
}

/// A refusal is INVALID_ARGUMENT whose field is one of `fields` (a prefix, so
/// that `indicators` covers `indicators[3].value`) and which says what is expected.
fn assert_explained(error: &Error, fields: &[&str]) -> Result<(), TestCaseError> {
    let Error::InvalidArgument {
        field,
        problem,
        expected,
    } = error
    else {
        return Err(TestCaseError::fail(format!(
            "refused with {error:?}, not InvalidArgument"
        )));
    };
    prop_assert!(
        fields.iter().any(|f| field.starts_with(f)),
        "field {:?} is not one of {:?}",
        field,
        fields
    );
    prop_assert!(!problem.is_empty() && !expected.is_empty(), "{:?}", error);
    let status = tonic::Status::from(Error::invalid(
        field.clone(),
        problem.clone(),
        expected.clone(),
    ));
    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
    prop_assert!(status.message().starts_with(field.as_str()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Validation of an arbitrary Publish never panics; a refusal names the
    /// field (with the indicator's index); what is accepted is canonical.
    #[test]
    fn publish_validation_refuses_with_a_field_or_accepts_canonical_values(
        request in arb_publish_request()
    ) {
        let count = request.indicators.len();
        match PublishBatch::try_from(request.clone()) {
            Err(error) => {
                assert_explained(&error, &["indicators", "idempotency_key"])?;
                if let Error::InvalidArgument { field, .. } = &error
                    && let Some(index) = field.strip_prefix("indicators[")
                {
                    let index: usize = index
                        .split(']')
                        .next()
                        .and_then(|i| i.parse().ok())
                        .expect("an index");
                    prop_assert!(index < count, "{} names a missing indicator", field);
                }
            }
            Ok(batch) => {
                prop_assert_eq!(batch.indicators.len(), count);
                for indicator in &batch.indicators {
                    // The canonical value validates to itself.
                    let again = validate::indicator_key(
                        "indicator",
                        indicator.key.kind as i32,
                        &indicator.key.value,
                    );
                    prop_assert_eq!(again.ok(), Some(indicator.key.clone()), "not canonical");
                }
            }
        }
    }

    /// Arbitrary bytes decoded as any request, then validated: never a panic,
    /// and a refusal always names a field of that request.
    #[test]
    fn arbitrary_bytes_decode_and_validate_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..400)
    ) {
        if let Ok(request) = proto::PublishRequest::decode(bytes.as_slice())
            && let Err(error) = PublishBatch::try_from(request)
        {
            assert_explained(&error, &["indicators", "idempotency_key"])?;
        }
        if let Ok(request) = proto::SubscribeRequest::decode(bytes.as_slice())
            && let Err(error) = SubscribeCommand::try_from(request)
        {
            assert_explained(
                &error,
                &["filter", "after_sequence", "heartbeat_seconds", "consumer"],
            )?;
        }
        if let Ok(request) = proto::RevokeRequest::decode(bytes.as_slice())
            && let Err(error) = RevokeCommand::try_from(request)
        {
            assert_explained(&error, &["indicator", "reason", "idempotency_key"])?;
        }
        if let Ok(request) = proto::ReportActionRequest::decode(bytes.as_slice())
            && let Err(error) = ActionCommand::try_from(request)
        {
            assert_explained(&error, &["indicator", "action", "note", "idempotency_key"])?;
        }
        if let Ok(request) = proto::LookupRequest::decode(bytes.as_slice())
            && let Err(error) = validate::indicator_key("indicator", request.kind, &request.value)
        {
            assert_explained(&error, &["indicator"])?;
        }
    }

    /// Subscribe and Lookup requests built field by field: the same guarantees.
    #[test]
    fn subscribe_and_lookup_validation_refuse_with_a_field(
        subscribe in arb_subscribe_request(),
        lookup in arb_lookup_request(),
    ) {
        if let Err(error) = SubscribeCommand::try_from(subscribe) {
            assert_explained(
                &error,
                &["filter", "after_sequence", "heartbeat_seconds", "consumer"],
            )?;
        }
        match validate::indicator_key("indicator", lookup.kind, &lookup.value) {
            Err(error) => assert_explained(&error, &["indicator.kind", "indicator.value"])?,
            Ok(key) => {
                let again = validate::indicator_key("indicator", key.kind as i32, &key.value);
                prop_assert_eq!(again.ok(), Some(key), "not canonical");
            }
        }
    }
}
