//! Writes the seed corpus of both fuzz targets: encoded `ProduceRequest`s
//! built from the proto's own types for `produce_request`, and input lines
//! for `produce_input`. Seeds start the fuzzer at the inputs that matter
//! (every way a record is accepted or refused, every input format) instead
//! of making it discover protobuf and JSON from nothing.
//!
//! The outputs are committed; run this again after changing the seeds or the
//! proto, and commit what changed:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kafka_gateway::proto::{Header, ProduceRequest, Record};
use prost::Message as _;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let requests = corpus.join("produce_request");
    let lines = corpus.join("produce_input");
    for dir in [&requests, &lines] {
        fs::create_dir_all(dir)?;
        // Seeds no longer generated go; inputs the fuzzer found stay.
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                fs::remove_file(path)?;
            }
        }
    }
    for (name, request) in produce_requests() {
        fs::write(
            requests.join(format!("seed-{name}")),
            request.encode_to_vec(),
        )?;
    }
    for (name, line) in input_lines() {
        fs::write(lines.join(format!("seed-{name}")), line)?;
    }
    println!("seeds written under {}", corpus.display());
    Ok(())
}

fn record(topic: &str, key: Option<&str>, value: Option<&str>) -> Record {
    let bytes = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    Record {
        topic: topic.into(),
        key: key.map(bytes),
        value: value.map(bytes),
        ..Record::default()
    }
}

fn header(key: &str, value: &[u8]) -> Header {
    Header {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
    }
}

fn batch(topic: &str, records: Vec<Record>) -> ProduceRequest {
    ProduceRequest {
        batch_id: 7,
        topic: topic.into(),
        records,
    }
}

/// One request per way a record can be accepted or refused.
fn produce_requests() -> Vec<(&'static str, ProduceRequest)> {
    let with = |f: fn(&mut Record)| {
        let mut r = record("orders", Some("k"), Some("v"));
        f(&mut r);
        r
    };
    vec![
        (
            "one-record",
            batch("", vec![record("orders", Some("k"), Some("value"))]),
        ),
        (
            "default-topic-and-headers",
            batch(
                "orders.v1_EU-2",
                vec![Record {
                    headers: vec![header("h", b"1"), header("h", b"\x00\xff"), header("", b"")],
                    ..record("", Some("k"), Some("v"))
                }],
            ),
        ),
        (
            "tombstone-and-empty-key",
            batch(
                "t",
                vec![record("", Some(""), None), record("", None, Some(""))],
            ),
        ),
        (
            "partition-and-timestamp",
            batch(
                "",
                vec![with(|r| {
                    (r.partition, r.timestamp_ms) = (Some(3), Some(1_700_000_000_000))
                })],
            ),
        ),
        (
            "negative-partition",
            batch("", vec![with(|r| r.partition = Some(-1))]),
        ),
        (
            "negative-timestamp",
            batch("", vec![with(|r| r.timestamp_ms = Some(-5))]),
        ),
        (
            "topic-with-space",
            batch("", vec![record("a b", None, Some("v"))]),
        ),
        (
            "topic-reserved",
            batch("", vec![record("..", None, Some("v"))]),
        ),
        (
            "topic-not-ascii",
            batch("", vec![record("émoji", None, Some("v"))]),
        ),
        (
            "topic-longest",
            batch("", vec![record(&"a".repeat(249), None, Some("v"))]),
        ),
        (
            "topic-too-long",
            batch("", vec![record(&"a".repeat(250), None, Some("v"))]),
        ),
        (
            "default-topic-invalid",
            batch("a/b", vec![record("", None, Some("v"))]),
        ),
        (
            "no-topic-at-all",
            batch("", vec![record("", None, Some("v"))]),
        ),
        (
            "over-256-bytes",
            batch("t", vec![record("", Some("k"), Some(&"x".repeat(300)))]),
        ),
        (
            "mixed-batch",
            batch(
                "fallback",
                vec![
                    record("", Some("a"), Some("1")),
                    record("other", Some("b"), Some("2")),
                    record("bad topic", None, Some("3")),
                    with(|r| r.partition = Some(i32::MAX)),
                ],
            ),
        ),
        ("empty-batch", batch("t", vec![])),
    ]
}

/// Text lines (with and without a key delimiter), JSON records valid and
/// not, and a few lines at once for the line reader.
fn input_lines() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("text-value", b"hello world"),
        ("text-key-colon", b"k:v"),
        ("text-two-colons", b"k:v:w"),
        ("text-empty-key", b":v"),
        ("text-double-colon", b"a:b::c::d"),
        ("text-tab", b"key\tvalue"),
        ("text-backslash", b"a\\b\\\\c"),
        ("text-arrow", "k→v→w".as_bytes()),
        ("text-crlf", b"value\r"),
        ("text-binary", b"\xff\xfe\t\x00\x01"),
        ("lines", b"one\ntwo\r\n\nlast"),
        ("lines-long", b"short\n0123456789abcdef0123\nok\r\n0123456789"),
        (
            "json-full",
            br#"{"topic":"t","key":"k","value":"v","partition":2,"timestamp_ms":1700000000000,"headers":[{"key":"a","value":"1"},{"key":"a","value_b64":"AP8="}]}"#,
        ),
        ("json-header-object", br#"{"value":"v","headers":{"z":"1","a":"2","m":""}}"#),
        ("json-base64", br#"{"key_b64":"/w==","value_b64":"aGk="}"#),
        ("json-tombstone", br#"{"key":"k","value":null,"headers":null}"#),
        ("json-escapes", br#"{"topic":"t","value":"\u00e9\n\"\\","key":""}"#),
        ("json-blank", b"  \t"),
        ("json-bad-value", br#"{"value": oops}"#),
        ("json-unknown-field", br#"{"vaule":"v"}"#),
        ("json-both-value", br#"{"value":"v","value_b64":"dg=="}"#),
        ("json-bad-base64", br#"{"value_b64":"not base64!"}"#),
        ("json-header-no-value", br#"{"value":"v","headers":[{"key":"h"}]}"#),
        ("json-partition-text", br#"{"value":"v","partition":"two"}"#),
        ("json-trailing", br#"{"value":"v"} trailing"#),
    ]
}
