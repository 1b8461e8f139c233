//! Bad input proofs (invariant 7): garbage, malformed protobuf and oversized
//! requests each get a clear status, nothing is stored, and the hub keeps serving.
//!
//! Requests are sent as raw bytes over the real mTLS channel with a codec that
//! writes its bytes as they are, so the hub's own decoding is what is tested.
//! Property-based fuzzing of validation and normalization without a server is
//! in `fuzz`.

use bytes::{Buf, BufMut, Bytes};
use dip_hub::policy;
use dip_hub::proto::{self, Category, IndicatorKind};
use dip_hub::registry::{Org, Registry};
use dip_hub::validate::{self, PublishBatch, SubscribeCommand};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::fuzz::{arb_lookup_request, arb_publish_request, arb_subscribe_request};
use crate::harness::*;

const PUBLISH: &str = "/dip.v1.IndicatorHubService/Publish";
const SUBSCRIBE: &str = "/dip.v1.IndicatorHubService/Subscribe";
const LOOKUP: &str = "/dip.v1.IndicatorHubService/Lookup";

/// A codec that sends and receives message bodies as raw bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A mutual-TLS channel to the hub as `org`, without the generated client (and
/// without its request size limit).
async fn raw_channel(hub: &TestHub, org: &str) -> Channel {
    dip_hub::client::channel(&hub.url(), &hub.pki.certs(org))
        .await
        .expect("connect")
}

/// Sends `body` as the request message of `method`; for Subscribe, the answer
/// is whether the stream was opened.
async fn raw_call(
    channel: Channel,
    method: &'static str,
    body: Bytes,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(method);
    let request = tonic::Request::new(body);
    let call = async {
        if method == SUBSCRIBE {
            grpc.server_streaming(request, path, RawCodec)
                .await
                .map(drop)
        } else {
            grpc.unary(request, path, RawCodec).await.map(drop)
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .expect("the hub answers within 30 s")
}

fn police() -> Org {
    Registry::parse(REGISTRY)
        .expect("registry")
        .active("mumbai-police")
        .expect("active")
}

/// What the hub must answer to `body` sent to `method` by the police: the
/// status it must give (code and message), or `None` for success.
fn expected_answer(method: &str, body: &[u8]) -> Option<(Code, String)> {
    let refusal = |error: dip_hub::Error| {
        let status = tonic::Status::from(error);
        Some((status.code(), status.message().to_string()))
    };
    let undecodable = |error: prost::DecodeError| Some((Code::InvalidArgument, error.to_string()));
    match method {
        PUBLISH => match proto::PublishRequest::decode(body) {
            Err(error) => undecodable(error),
            Ok(request) => match PublishBatch::try_from(request) {
                Err(error) => refusal(error),
                Ok(batch) => policy::authorize_publish(&police(), &batch.indicators)
                    .err()
                    .and_then(refusal),
            },
        },
        SUBSCRIBE => match proto::SubscribeRequest::decode(body) {
            Err(error) => undecodable(error),
            // Subscribe is fuzzed first, on an empty hub: any start past 0 is
            // beyond its head.
            Ok(request) => match SubscribeCommand::try_from(request) {
                Err(error) => refusal(error),
                Ok(command) => {
                    validate::start_beyond_head(command.start, None, after_of(command.start), 0)
                        .and_then(refusal)
                }
            },
        },
        LOOKUP => match proto::LookupRequest::decode(body) {
            Err(error) => undecodable(error),
            Ok(request) => validate::indicator_key("indicator", request.kind, &request.value)
                .err()
                .and_then(refusal),
        },
        _ => unreachable!("only the methods above are fuzzed"),
    }
}

/// Where a validated start puts a subscription on an empty hub.
fn after_of(start: validate::Start) -> u64 {
    match start {
        validate::Start::After(sequence) => sequence,
        validate::Start::Default | validate::Start::Now => 0,
    }
}

/// Bodies worth sending: random bytes, and valid encodings of arbitrary requests
/// with one byte changed or cut short (which reach deeper into the decoder).
fn arb_body(method: &'static str) -> BoxedStrategy<Vec<u8>> {
    let valid: BoxedStrategy<Vec<u8>> = match method {
        PUBLISH => arb_publish_request()
            .prop_map(|r| r.encode_to_vec())
            .boxed(),
        SUBSCRIBE => arb_subscribe_request()
            .prop_map(|r| r.encode_to_vec())
            .boxed(),
        _ => arb_lookup_request().prop_map(|r| r.encode_to_vec()).boxed(),
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        valid.clone(),
        (valid.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(mut bytes, at, byte)| {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes
            }
        ),
        (valid, any::<prop::sample::Index>()).prop_map(|(mut bytes, at)| {
            let len = at.index(bytes.len() + 1);
            bytes.truncate(len);
            bytes
        }),
    ]
    .boxed()
}

/// Arbitrary bytes as the body of Publish, Subscribe and Lookup: the hub answers
/// exactly what decoding and validating them locally says (a status naming the
/// problem, or success when they happen to be a valid request), never crashes or
/// hangs, stores nothing it refused, and keeps serving.
#[test]
fn arbitrary_request_bodies_get_the_status_their_content_deserves() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let hub = runtime.block_on(TestHub::start());
    let channel = runtime.block_on(raw_channel(&hub, "mumbai-police"));
    // The runner takes an `Fn`: counters live in cells.
    let stored = std::cell::Cell::new(0u64);
    let answers = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    for method in [SUBSCRIBE, PUBLISH, LOOKUP] {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&arb_body(method), |body| {
                let expected = expected_answer(method, &body);
                let answer = runtime.block_on(raw_call(channel.clone(), method, body.into()));
                match (&expected, &answer) {
                    (None, Ok(())) => {
                        if method == PUBLISH {
                            stored.set(stored.get() + 1);
                        }
                        *answers
                            .borrow_mut()
                            .entry(format!("{method} OK"))
                            .or_default() += 1;
                    }
                    (Some((code, message)), Err(status)) => {
                        prop_assert_eq!(status.code(), *code, "{}: {:?}", method, status);
                        prop_assert!(
                            status.message().contains(message.as_str()),
                            "{}: expected {:?} in {:?}",
                            method,
                            message,
                            status.message()
                        );
                        *answers
                            .borrow_mut()
                            .entry(format!("{method} {:?}", status.code()))
                            .or_default() += 1;
                    }
                    _ => prop_assert!(
                        false,
                        "{}: expected {:?}, the hub answered {:?}",
                        method,
                        expected,
                        answer
                    ),
                }
                Ok(())
            })
            .unwrap_or_else(|failure| panic!("{failure}"));
    }
    eprintln!("answers to fuzzed bodies: {:?}", answers.borrow());
    let stored = stored.get();
    // Still serving; the log holds only what was valid (in practice nothing).
    runtime.block_on(async {
        let mut police = hub.client("mumbai-police").await;
        let response = publish(&mut police, vec![phone_indicator(1)]).await;
        let head = response.events[0].sequence - 1;
        assert!(head <= stored * 1000, "garbage was stored");
        if stored == 0 {
            assert_eq!(head, 0, "nothing from the fuzzed bodies was stored");
        }
    });
}

/// The hub keeps serving and the log holds `head` events.
async fn still_serving_with_head(hub: &TestHub, head: u64) {
    let mut police = hub.client("mumbai-police").await;
    let response = publish(&mut police, vec![phone_indicator(800_000_000 + head)]).await;
    assert_eq!(
        response.events[0].sequence,
        head + 1,
        "nothing was stored, and the hub still serves"
    );
}

#[tokio::test]
async fn malformed_protobuf_is_refused_naming_what_is_wrong() {
    let hub = TestHub::start().await;
    let channel = raw_channel(&hub, "mumbai-police").await;
    let cases: &[(&str, &'static str, &[u8], &str)] = &[
        (
            "truncated varint",
            LOOKUP,
            &[0x08, 0xFF],
            "failed to decode Protobuf message",
        ),
        (
            "wrong wire type: indicators sent as a varint",
            PUBLISH,
            &[0x08, 0x01],
            "invalid wire type: Varint (expected LengthDelimited)",
        ),
        (
            "invalid UTF-8 in a string",
            LOOKUP,
            &[0x12, 0x02, 0xC3, 0x28],
            "LookupRequest.value: invalid string value: data is not UTF-8 encoded",
        ),
        (
            "invalid UTF-8 in a nested string",
            PUBLISH,
            &[0x0A, 0x04, 0x12, 0x02, 0xFF, 0xFE],
            "Indicator.value: PublishRequest.indicators: invalid string value",
        ),
        (
            "a length past the end of the message",
            PUBLISH,
            &[0x0A, 0x10, 0x08],
            "failed to decode Protobuf message",
        ),
        (
            "garbage as a subscription",
            SUBSCRIBE,
            &[0xFF, 0xFF, 0xFF, 0xFF],
            "failed to decode Protobuf message",
        ),
    ];
    for (what, method, body, message) in cases {
        let status = raw_call(channel.clone(), method, Bytes::from_static(body))
            .await
            .expect_err(what);
        // The hub's codec: a request that does not parse is the client's error.
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: expected {message:?} in {:?}",
            status.message()
        );
    }
    still_serving_with_head(&hub, 0).await;
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused_and_the_hub_keeps_serving() {
    let hub = TestHub::start().await;
    let channel = raw_channel(&hub, "mumbai-police").await;
    let limit = dip_hub::server::MAX_REQUEST_BYTES;
    // A well-formed PublishRequest just over the limit: one huge description.
    let mut big = phone_indicator(1);
    big.description = "x".repeat(limit);
    let body = proto::PublishRequest {
        indicators: vec![big],
        idempotency_key: String::new(),
    }
    .encode_to_vec();
    assert!(body.len() > limit);
    let status = raw_call(channel, PUBLISH, body.into())
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large")
            && status.message().contains(&limit.to_string()),
        "{}",
        status.message()
    );
    still_serving_with_head(&hub, 0).await;
}

#[tokio::test]
async fn a_full_batch_of_the_largest_indicators_fits_the_size_limit() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let indicators: Vec<proto::Indicator> = (0..validate::MAX_BATCH)
        .map(|i| {
            let path = "a".repeat(1900);
            let mut url = indicator(
                IndicatorKind::Url,
                &format!("https://phish.example.com/{path}/{i}"),
                Category::Phishing,
            );
            url.description = "d".repeat(validate::MAX_TEXT_LEN);
            url
        })
        .collect();
    let size = proto::PublishRequest {
        indicators: indicators.clone(),
        idempotency_key: String::new(),
    }
    .encoded_len();
    assert!(size > 3_900_000, "a large batch: {size} bytes");
    let response = publish(&mut police, indicators).await;
    assert_eq!(response.events.len(), validate::MAX_BATCH);
}

#[tokio::test]
async fn oversized_batches_and_fields_are_invalid_argument_stating_the_limit() {
    let hub = TestHub::start().await;
    let mut police = hub.client("mumbai-police").await;
    let refused = |result: Result<tonic::Response<proto::PublishResponse>, tonic::Status>,
                   message: &str| {
        let status = result.expect_err(message);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    };
    refused(
        police
            .publish(proto::PublishRequest {
                indicators: (0..1001).map(phone_indicator).collect(),
                idempotency_key: String::new(),
            })
            .await,
        "indicators: the batch has 1001 indicators; expected at most 1000 per Publish; split the batch",
    );
    let mut long_description = phone_indicator(1);
    long_description.description = "x".repeat(validate::MAX_TEXT_LEN + 1);
    refused(
        police
            .publish(proto::PublishRequest {
                indicators: vec![phone_indicator(0), long_description],
                idempotency_key: String::new(),
            })
            .await,
        "indicators[1].description: is 2049 bytes long; expected at most 2048 bytes",
    );
    refused(
        police
            .publish(proto::PublishRequest {
                indicators: vec![phone_indicator(0)],
                idempotency_key: "k".repeat(129),
            })
            .await,
        "idempotency_key: 129 bytes or non-printable characters; expected at most 128 printable ASCII characters, e.g. a UUID",
    );
    // An oversized value: the normalizer names the field and the limit.
    let long_url = indicator(
        IndicatorKind::Url,
        &format!("https://example.com/{}", "a".repeat(5000)),
        Category::Phishing,
    );
    let status = police
        .publish(proto::PublishRequest {
            indicators: vec![long_url],
            idempotency_key: String::new(),
        })
        .await
        .expect_err("long value");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("indicators[0].value: ") && status.message().contains("2048"),
        "{}",
        status.message()
    );
    // A long lookup value too.
    let status = police
        .lookup(proto::LookupRequest {
            kind: IndicatorKind::PhoneNumber as i32,
            value: "9".repeat(100_000),
        })
        .await
        .expect_err("long lookup");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("indicator.value: "),
        "{}",
        status.message()
    );
    still_serving_with_head(&hub, 0).await;
}

/// Posts `body` (gRPC framing included: flag, length, message) to `path`, and
/// returns the gRPC status code and message the hub ends the call with.
async fn raw_http2(channel: &mut Channel, path: &str, body: Bytes) -> (Code, String) {
    use http_body_util::BodyExt;
    use tonic::codegen::Service;
    use tonic::codegen::http;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(body)))
        .expect("request");
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("channel ready");
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), channel.call(request))
        .await
        .expect("an answer within 30 s")
        .expect("an HTTP/2 response");
    let (parts, mut body) = response.into_parts();
    let mut trailers = parts.headers;
    if path == SUBSCRIBE && !trailers.contains_key("grpc-status") {
        // Not a trailers-only refusal: the stream is open (and stays open).
        return (Code::Ok, "stream open".into());
    }
    while !trailers.contains_key("grpc-status") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("the call ends within 30 s");
        match frame {
            Some(Ok(frame)) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = t;
                }
            }
            _ => panic!("the call ended without a grpc-status"),
        }
    }
    let code = trailers["grpc-status"]
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from_i32)
        .expect("a numeric grpc-status");
    let message = trailers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    (code, message)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Broken gRPC framing under the protobuf (the 5-byte prefix: compression flag
/// and length), sent as raw HTTP/2: each call ends with a status saying what is
/// wrong, and the hub keeps serving.
#[tokio::test]
async fn broken_grpc_framing_is_refused_and_the_hub_keeps_serving() {
    let hub = TestHub::start().await;
    let mut channel = raw_channel(&hub, "mumbai-police").await;
    let cases: &[(&str, &str, &'static [u8], Code, &str)] = &[
        (
            "compressed flag without grpc-encoding",
            LOOKUP,
            &[1, 0, 0, 0, 2, 0x08, 0x01],
            Code::Internal,
            "received message with compressed-flag but no grpc-encoding was specified",
        ),
        (
            "an invalid compression flag",
            PUBLISH,
            &[7, 0, 0, 0, 2, 0x08, 0x01],
            Code::Internal,
            "invalid compression flag: 7 (valid flags are 0 and 1)",
        ),
        (
            "a length past the end of the body",
            PUBLISH,
            &[0, 0, 0, 0, 100, 0x0A, 0x01],
            Code::Internal,
            "Unexpected EOF decoding stream.",
        ),
        (
            "a cut-off prefix",
            SUBSCRIBE,
            &[0, 0, 0],
            Code::Internal,
            "Unexpected EOF decoding stream.",
        ),
        (
            "no message at all",
            PUBLISH,
            &[],
            Code::Internal,
            "Missing request message.",
        ),
        (
            // tonic answers a unary call from its first message.
            "two messages to a unary call",
            LOOKUP,
            &[0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0, 0, 2, 0x08, 0x01],
            Code::InvalidArgument,
            "indicator.value: is empty; expected a phone number",
        ),
        (
            // The control: well-framed, valid (empty) request.
            "an empty SubscribeRequest, properly framed",
            SUBSCRIBE,
            &[0, 0, 0, 0, 0],
            Code::Ok,
            "stream open",
        ),
        (
            "a method the hub does not have",
            "/dip.v1.IndicatorHubService/DropAllTables",
            &[0, 0, 0, 0, 0],
            Code::Unimplemented,
            "",
        ),
    ];
    for (what, path, body, code, message) in cases {
        let (got_code, got_message) = raw_http2(&mut channel, path, Bytes::from_static(body)).await;
        assert_eq!(got_code, *code, "{what}: {got_message}");
        assert!(
            got_message.contains(message),
            "{what}: expected {message:?} in {got_message:?}"
        );
    }
    still_serving_with_head(&hub, 0).await;
}

/// Arbitrary bytes as the whole HTTP/2 request body (gRPC prefix included): the
/// hub always ends the call with a deliberate status (never a reset or a hang),
/// stores nothing and keeps serving.
#[test]
fn arbitrary_http2_bodies_end_with_a_status() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let hub = runtime.block_on(TestHub::start());
    let channel = runtime.block_on(raw_channel(&hub, "mumbai-police"));
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        // A plausible prefix in front of random bytes.
        (0u8..2, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(flag, rest)| {
            let mut body = vec![flag];
            body.extend_from_slice(&(rest.len() as u32).to_be_bytes());
            body.extend(rest);
            body
        }),
    ];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(prop::sample::select(vec![PUBLISH, LOOKUP, SUBSCRIBE]), body),
            |(path, body)| {
                let mut channel = channel.clone();
                let (code, message) =
                    runtime.block_on(async { raw_http2(&mut channel, path, body.into()).await });
                // OUT_OF_RANGE: a prefix declaring more than the 8 MiB limit.
                prop_assert!(
                    matches!(
                        code,
                        Code::Ok | Code::Internal | Code::InvalidArgument | Code::OutOfRange
                    ),
                    "{}: {:?} {}",
                    path,
                    code,
                    message
                );
                prop_assert!(
                    path != PUBLISH || code != Code::Ok,
                    "random bytes were published"
                );
                Ok(())
            },
        )
        .unwrap_or_else(|failure| panic!("{failure}"));
    runtime.block_on(still_serving_with_head(&hub, 0));
}
