//! Fuzzes what the gateway does with the bytes of one `ProduceRequest` before
//! anything reaches Kafka: its codec's decoding (checked against prost's),
//! then the per-record validation exactly as the stream driver runs it
//! (`src/produce/stream/accept.rs`): the batch's default topic checked once,
//! then `record_size` and `prepare` for each record, here against several
//! record limits. Each assert is a promise the validation makes; an input
//! that breaks one is a crash the fuzzer keeps.

#![no_main]

use kafka_gateway::produce::validate::{self, DefaultTopic, MAX_TOPIC_LEN};
use kafka_gateway::proto::{ErrorCode, ProduceRequest, Record, RecordError};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// `--max-record-bytes` values to validate each record against: none at all
/// (every record with a byte of payload is too large), limits small enough
/// for the fuzzer's records to cross, the gateway's default, and no limit.
const MAX_RECORD_BYTES: &[usize] = &[0, 1, 16, 256, 1 << 20, usize::MAX];

/// What an error message may say besides the names it quotes.
const MESSAGE_BUDGET: usize = 1024;

/// The most bytes one quoted name can take: `{:?}` turns a byte into at most
/// six characters (`\u{1f}`), plus the quotes. A name longer than Kafka
/// allows must not be quoted at all, so that a client cannot make the gateway
/// echo a megabyte back in every ack.
const MAX_QUOTED_TOPIC: usize = 6 * MAX_TOPIC_LEN + 2;

fuzz_target!(|data: &[u8]| {
    // The gateway's codec reads what prost reads, and refuses what it
    // refuses.
    let ours = kafka_gateway::codec::read_request(data);
    let Ok(request) = ProduceRequest::decode(data) else {
        assert!(ours.is_err(), "the codec read a request prost refuses");
        return;
    };
    assert_eq!(
        ours.as_ref().ok(),
        Some(&request),
        "the codec reads another request than prost"
    );
    // As the driver does: the default topic once per batch, then each record.
    let default_name = request.topic.clone();
    let default_topic = DefaultTopic::new(request.topic);
    check_default_topic(&default_name, &default_topic);
    for record in request.records {
        let size = validate::record_size(&record);
        assert_eq!(size, payload_bytes(&record), "record_size miscounts");
        for &max in MAX_RECORD_BYTES {
            check_prepare(&record, size, &default_name, &default_topic, max);
        }
    }
});

/// The default topic is `Missing` exactly when empty, and otherwise `Valid`
/// (with the same name) or `Invalid` (with `check_topic`'s reason) as
/// `check_topic` says.
fn check_default_topic(name: &str, default_topic: &DefaultTopic) {
    match (default_topic, validate::check_topic(name)) {
        (DefaultTopic::Missing, _) => assert!(name.is_empty(), "{name:?} taken as missing"),
        (DefaultTopic::Valid(topic), Ok(())) => assert_eq!(&**topic, name),
        (DefaultTopic::Invalid { name: kept, why }, Err(reason)) => {
            assert!(
                !name.is_empty(),
                "an empty default topic is missing, not invalid"
            );
            assert_eq!(&**kept, name, "the invalid name is kept, for dead letters");
            assert_eq!(why, &reason);
        }
        (other, verdict) => {
            panic!("default topic {name:?} became {other:?}; check_topic: {verdict:?}")
        }
    }
}

/// Key, value and header bytes, counted here without the gateway's code.
fn payload_bytes(record: &Record) -> usize {
    let len = |bytes: &Option<bytes::Bytes>| bytes.as_ref().map_or(0, |b| b.len());
    record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.len())
        .fold(len(&record.key) + len(&record.value), |sum, n| {
            sum.checked_add(n).expect("payload bytes overflow usize")
        })
}

fn check_prepare(
    record: &Record,
    size: usize,
    default_name: &str,
    default_topic: &DefaultTopic,
    max: usize,
) {
    // The topic the record goes to: its own, or its batch's.
    let topic = if record.topic.is_empty() {
        default_name
    } else {
        &record.topic
    };
    let topic_ok = validate::check_topic(topic).is_ok();
    let fits = size <= max;
    let partition_ok = record.partition.is_none_or(|p| p >= 0);
    let timestamp_ok = record.timestamp_ms.is_none_or(|t| t >= 0);

    let result = validate::prepare(record.clone(), size, default_topic, max);
    // Accepted exactly when nothing is wrong: a record over the limit, with a
    // negative partition or timestamp, or without a valid topic never passes.
    assert_eq!(
        result.is_ok(),
        topic_ok && fits && partition_ok && timestamp_ok,
        "max {max}, size {size}, topic {topic:?}: {result:?}"
    );
    match result {
        Ok(out) => {
            assert!(validate::check_topic(&out.topic).is_ok(), "{:?}", out.topic);
            assert_eq!(&*out.topic, topic, "the record's topic, else the batch's");
            assert_eq!(out.size, size, "size is the caller's record_size");
            // The payload goes to Kafka byte for byte, headers in order.
            assert_eq!(out.key, record.key);
            assert_eq!(out.value, record.value);
            assert_eq!(out.headers, record.headers);
            assert_eq!(out.partition, record.partition);
            assert_eq!(out.timestamp_ms, record.timestamp_ms);
            assert!(out.trace_headers.is_none(), "validation adds no headers");
        }
        Err(refused) => {
            let (error, back) = *refused;
            assert_eq!(&back, record, "a refused record comes back whole");
            check_message(&error, record, default_name);
            assert!(
                !error.retriable,
                "the same record would fail again: {error:?}"
            );
            let code = ErrorCode::try_from(error.code).expect("a known error code");
            // The topic is checked first, then the size: a record with a
            // valid topic over the limit is RECORD_TOO_LARGE, whatever else
            // is wrong with it; everything else is INVALID_RECORD.
            let expected = if topic_ok && !fits {
                ErrorCode::RecordTooLarge
            } else {
                ErrorCode::InvalidRecord
            };
            assert_eq!(code, expected, "max {max}, size {size}: {error:?}");
            if code == ErrorCode::RecordTooLarge {
                assert!(
                    error.message.contains(&size.to_string())
                        && error.message.contains("--max-record-bytes"),
                    "a too-large record's error names its size and the flag: {error:?}"
                );
            }
        }
    }
}

/// Error messages say something, and their length does not grow with the
/// input beyond the one name they may quote.
fn check_message(error: &RecordError, record: &Record, default_name: &str) {
    let message = &error.message;
    assert!(!message.is_empty(), "an empty error message: {error:?}");
    // Names are quoted escaped, so a client's bytes never reach a log line
    // or a terminal as control characters.
    assert!(!message.chars().any(char::is_control), "{message:?}");
    let quoted = |name: &str| format!("{name:?}").len();
    assert!(
        message.len() <= MESSAGE_BUDGET + quoted(&record.topic) + quoted(default_name),
        "a {} byte message for topic {:?} (batch topic {default_name:?}): {message}",
        message.len(),
        record.topic
    );
    assert!(
        message.len() <= MESSAGE_BUDGET + MAX_QUOTED_TOPIC,
        "a {} byte message quotes more than a topic name Kafka allows: {message}",
        message.len()
    );
}
