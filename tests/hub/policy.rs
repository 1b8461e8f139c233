//! The role policy and validation through the real server: denials are
//! PERMISSION_DENIED naming the rule, bad values INVALID_ARGUMENT naming the
//! field, the problem and the expected form; refused batches store nothing.

use dip_hub::proto::{self, Category, IndicatorKind};
use tonic::Code;

use crate::harness::*;
use crate::lifecycle::{lookup, next_sequence};

async fn try_publish(
    client: &mut Client,
    indicators: Vec<proto::Indicator>,
) -> Result<proto::PublishResponse, tonic::Status> {
    client
        .publish(proto::PublishRequest {
            indicators,
            idempotency_key: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn disconnected(n: u64) -> proto::Indicator {
    indicator(
        IndicatorKind::PhoneNumber,
        &phone(n),
        Category::Disconnected,
    )
}

#[tokio::test]
async fn publishing_follows_the_role_table() {
    let hub = TestHub::start().await;

    let mut platform = hub.client("chat-platform").await;
    let denied = try_publish(&mut platform, vec![phone_indicator(1)])
        .await
        .expect_err("platforms only report actions");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("role PLATFORM reports actions only (ReportAction)"),
        "{}",
        denied.message()
    );

    let mut bank = hub.client("alpha-bank").await;
    // A valid indicator first: the whole batch is refused, naming the one denied.
    let denied = try_publish(&mut bank, vec![phone_indicator(2), disconnected(3)])
        .await
        .expect_err("banks do not publish DISCONNECTED");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().starts_with("indicators[1]: alpha-bank (BANK) may not publish PHONE_NUMBER with category DISCONNECTED"),
        "{}",
        denied.message()
    );
    assert!(
        denied
            .message()
            .contains("only TSP, REGULATOR publish DISCONNECTED"),
        "{}",
        denied.message()
    );

    let imei = indicator(
        IndicatorKind::Imei,
        "490154203237518",
        Category::StolenHandset,
    );
    let denied = try_publish(&mut bank, vec![imei.clone()])
        .await
        .expect_err("banks do not publish IMEIs");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("role BANK publishes only PHONE_NUMBER"),
        "{}",
        denied.message()
    );

    let mut payments = hub.client("upi-switch").await;
    let denied = try_publish(&mut payments, vec![imei.clone()])
        .await
        .expect_err("no IMEIs");
    assert_eq!(denied.code(), Code::PermissionDenied);

    assert!(
        !lookup(&mut bank, IndicatorKind::PhoneNumber, &phone(2))
            .await
            .found
    );
    assert_eq!(
        next_sequence(&hub, 1).await,
        1,
        "no denied publish stored anything"
    );

    let mut tsp = hub.client("tsp-one").await;
    try_publish(&mut tsp, vec![disconnected(4), imei])
        .await
        .expect("a TSP publishes DISCONNECTED numbers and IMEIs");
    let mut regulator = hub.client("dot-regulator").await;
    try_publish(&mut regulator, vec![disconnected(5)])
        .await
        .expect("the regulator publishes DISCONNECTED");
    let mut police = hub.client("mumbai-police").await;
    let denied = try_publish(&mut police, vec![disconnected(6)])
        .await
        .expect_err("police do not mark numbers DISCONNECTED");
    assert_eq!(denied.code(), Code::PermissionDenied);
    try_publish(
        &mut bank,
        vec![indicator(
            IndicatorKind::UpiId,
            "mule@okaxis",
            Category::MuleAccount,
        )],
    )
    .await
    .expect("a bank publishes UPI IDs");
}

/// One bad value of each kind, second in a batch after a good one.
#[tokio::test]
async fn invalid_values_of_every_kind_are_refused_naming_the_field() {
    let cases = [
        (IndicatorKind::PhoneNumber, "9876543210", "12345"),
        (IndicatorKind::Imei, "490154203237518", "490154203237519"),
        (
            IndicatorKind::Url,
            "https://example.com/login",
            "ftp://example.com/file",
        ),
        (IndicatorKind::Domain, "example.com", "localhost"),
        (IndicatorKind::IpAddress, "203.0.113.7", "999.1.1.1"),
        (IndicatorKind::UpiId, "name@okaxis", "no-at-sign"),
        (
            IndicatorKind::BankAccount,
            "SBIN0001234:12345678901",
            "SBIN0001234",
        ),
        (IndicatorKind::Email, "name@example.com", "not-an-email"),
        (IndicatorKind::SmsHeader, "HDFCBK", "AB"),
    ];
    let hub = TestHub::start().await;
    let mut regulator = hub.client("dot-regulator").await;
    for (kind, good, bad) in cases {
        let status = try_publish(
            &mut regulator,
            vec![
                indicator(kind, good, Category::Phishing),
                indicator(kind, bad, Category::Phishing),
            ],
        )
        .await
        .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{kind:?} {bad}");
        assert!(
            status.message().starts_with("indicators[1].value: "),
            "{kind:?} {bad}: {}",
            status.message()
        );
        assert!(
            status.message().contains("; expected "),
            "{}",
            status.message()
        );
        assert!(
            !lookup(&mut regulator, kind, good).await.found,
            "{kind:?}: the good half of a refused batch is not stored"
        );
    }
    assert_eq!(next_sequence(&hub, 1).await, 1, "nothing was stored");
}

#[tokio::test]
async fn oversized_batches_and_fields_are_refused_with_the_limit() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let status = try_publish(&mut police, (0..1001).map(phone_indicator).collect())
        .await
        .expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "indicators: the batch has 1001 indicators; expected at most 1000 per Publish; split the batch"
    );

    let mut long = phone_indicator(1);
    long.description = "x".repeat(2049);
    let status = try_publish(&mut police, vec![long])
        .await
        .expect_err("too long");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "indicators[0].description: is 2049 bytes long; expected at most 2048 bytes"
    );

    let long_value = indicator(
        IndicatorKind::Url,
        &format!("https://example.com/{}", "a".repeat(3000)),
        Category::Phishing,
    );
    let status = try_publish(&mut police, vec![long_value])
        .await
        .expect_err("value too long");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("indicators[0].value: is 3020 bytes long, over the limit of 2048 bytes"),
        "{}",
        status.message()
    );

    let status = try_publish(&mut police, vec![]).await.expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("1 to 1000 indicators"),
        "{}",
        status.message()
    );

    let status = police
        .publish(proto::PublishRequest {
            indicators: vec![phone_indicator(1)],
            idempotency_key: "k".repeat(129),
        })
        .await
        .expect_err("key too long");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("idempotency_key:"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("at most 128"),
        "{}",
        status.message()
    );

    let full = try_publish(&mut police, (0..1000).map(phone_indicator).collect())
        .await
        .expect("1000 is allowed");
    assert_eq!(
        full.events.first().map(|e| e.sequence),
        Some(1),
        "the refusals stored nothing"
    );
    assert_eq!(full.events.len(), 1000);
}

/// Actions come from the roles that take them, about kinds they apply to.
#[tokio::test]
async fn actions_follow_the_role_table() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    publish(
        &mut police,
        vec![
            phone_indicator(1),
            indicator(
                IndicatorKind::Url,
                "https://phish.example/login",
                Category::Phishing,
            ),
        ],
    )
    .await;
    let report =
        |kind: IndicatorKind, value: &str, action: proto::ActionType| proto::ReportActionRequest {
            kind: kind as i32,
            value: value.into(),
            action: action as i32,
            note: String::new(),
            idempotency_key: String::new(),
        };
    let mut bank = hub.client("alpha-bank").await;
    let denied = bank
        .report_action(report(
            IndicatorKind::PhoneNumber,
            &phone(1),
            proto::ActionType::NumberDisconnected,
        ))
        .await
        .expect_err("a bank does not disconnect numbers");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "alpha-bank (BANK) may not report NUMBER_DISCONNECTED: only TSP, REGULATOR report it"
    );
    let mut tsp = hub.client("tsp-one").await;
    let misapplied = tsp
        .report_action(report(
            IndicatorKind::Url,
            "https://phish.example/login",
            proto::ActionType::NumberDisconnected,
        ))
        .await
        .expect_err("a URL is not a number");
    assert_eq!(misapplied.code(), Code::InvalidArgument);
    assert!(
        misapplied
            .message()
            .starts_with("action: NUMBER_DISCONNECTED does not apply to a URL indicator"),
        "{}",
        misapplied.message()
    );
    assert_eq!(
        next_sequence(&hub, 1).await,
        3,
        "the refusals wrote nothing"
    );

    tsp.report_action(report(
        IndicatorKind::Url,
        "https://phish.example/login",
        proto::ActionType::UrlBlocked,
    ))
    .await
    .expect("a TSP blocks URLs");
    bank.report_action(report(
        IndicatorKind::PhoneNumber,
        &phone(1),
        proto::ActionType::AccountFrozen,
    ))
    .await
    .expect("a bank freezes the accounts of a fraud number");
    bank.report_action(report(
        IndicatorKind::PhoneNumber,
        &phone(1),
        proto::ActionType::OtherAction,
    ))
    .await
    .expect("OTHER_ACTION is open to all");
}
