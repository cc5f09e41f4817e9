//! Checks a record before anything is sent, so that a bad record gets a
//! precise error of its own and never reaches Kafka.

use std::sync::Arc;

use crate::error::record_error;
use crate::proto::{self, ErrorCode};

use super::OutboundRecord;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks a topic name against Kafka's rules: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn check_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic name is {} characters long; Kafka allows at most {MAX_TOPIC_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is reserved by Kafka"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {bad:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A batch's default topic, checked once per batch.
#[derive(Debug, Clone)]
pub enum DefaultTopic {
    Valid(Arc<str>),
    Missing,
    /// The name, and why Kafka would refuse it.
    Invalid {
        name: Arc<str>,
        why: String,
    },
}

impl DefaultTopic {
    pub fn new(name: String) -> Self {
        if name.is_empty() {
            return DefaultTopic::Missing;
        }
        match check_topic(&name) {
            Ok(()) => DefaultTopic::Valid(Arc::from(name)),
            Err(why) => DefaultTopic::Invalid {
                name: Arc::from(name),
                why,
            },
        }
    }
}

/// A record [`prepare`] refused, as it is, for the dead-letter topic: its
/// own topic or its batch's default, whether valid or not (empty when it
/// names none).
pub fn refused(
    mut record: proto::Record,
    size: usize,
    default_topic: &DefaultTopic,
) -> OutboundRecord {
    let topic = if record.topic.is_empty() {
        match default_topic {
            DefaultTopic::Valid(topic) | DefaultTopic::Invalid { name: topic, .. } => topic.clone(),
            DefaultTopic::Missing => Arc::from(""),
        }
    } else {
        Arc::from(std::mem::take(&mut record.topic))
    };
    outbound(record, topic, size)
}

/// `record` as it goes to `topic`.
fn outbound(record: proto::Record, topic: Arc<str>, size: usize) -> OutboundRecord {
    OutboundRecord {
        topic,
        key: record.key,
        value: record.value,
        headers: record.headers,
        partition: record.partition,
        timestamp_ms: record.timestamp_ms,
        size,
        trace_headers: None,
        stamp: None,
    }
}

/// Payload bytes of a record: key, value and header keys and values.
pub fn record_size(record: &proto::Record) -> usize {
    let key = record.key.as_ref().map_or(0, |k| k.len());
    let value = record.value.as_ref().map_or(0, |v| v.len());
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.len())
        .sum();
    key + value + headers
}

/// Validates one record of `size` payload bytes ([`record_size`], which the
/// caller needs for a refused record too) and resolves its topic. A refused
/// record is handed back with its error, for the dead-letter topic.
pub fn prepare(
    record: proto::Record,
    size: usize,
    default_topic: &DefaultTopic,
    max_record_bytes: usize,
) -> Result<OutboundRecord, Box<(proto::RecordError, proto::Record)>> {
    let topic = match check(&record, size, default_topic, max_record_bytes) {
        Ok(topic) => topic,
        Err(error) => return Err(Box::new((error, record))),
    };
    Ok(outbound(record, topic, size))
}

/// The checks of [`prepare`]: the record's topic, or why it is refused.
fn check(
    record: &proto::Record,
    size: usize,
    default_topic: &DefaultTopic,
    max_record_bytes: usize,
) -> Result<Arc<str>, proto::RecordError> {
    let invalid = |message: String| record_error(ErrorCode::InvalidRecord, message, false);

    let topic = if record.topic.is_empty() {
        match default_topic {
            DefaultTopic::Valid(topic) => topic.clone(),
            DefaultTopic::Missing => {
                return Err(invalid(
                    "record has no topic and its batch names no default; set Record.topic or ProduceRequest.topic".into(),
                ));
            }
            DefaultTopic::Invalid { why, .. } => {
                return Err(invalid(format!(
                    "the batch's default topic is invalid: {why}"
                )));
            }
        }
    } else {
        check_topic(&record.topic).map_err(invalid)?;
        Arc::from(record.topic.as_str())
    };

    if size > max_record_bytes {
        return Err(record_error(
            ErrorCode::RecordTooLarge,
            format!(
                "record is {size} bytes (key + value + headers), over the gateway's limit of \
                 {max_record_bytes} (--max-record-bytes); split the payload or raise the limit"
            ),
            false,
        ));
    }
    if let Some(partition) = record.partition
        && partition < 0
    {
        return Err(invalid(format!(
            "partition {partition} is negative; leave it unset to let the partitioner choose"
        )));
    }
    if let Some(timestamp) = record.timestamp_ms
        && timestamp < 0
    {
        return Err(invalid(format!(
            "timestamp_ms {timestamp} is negative; use milliseconds since the Unix epoch, or leave it unset"
        )));
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(topic: &str) -> proto::Record {
        proto::Record {
            topic: topic.into(),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"value")),
            headers: vec![proto::Header {
                key: "h".into(),
                value: Bytes::from_static(b"vv"),
            }],
            partition: None,
            timestamp_ms: None,
        }
    }

    /// `prepare` with the record's own size.
    fn prepare(
        record: proto::Record,
        default_topic: &DefaultTopic,
        max_record_bytes: usize,
    ) -> Result<OutboundRecord, proto::RecordError> {
        let size = record_size(&record);
        let original = record.clone();
        super::prepare(record, size, default_topic, max_record_bytes).map_err(|refused| {
            let (error, back) = *refused;
            assert_eq!(back, original, "a refused record comes back whole");
            error
        })
    }

    fn message_of(result: Result<OutboundRecord, proto::RecordError>) -> (i32, String) {
        let err = result.expect_err("the record must be refused");
        (err.code, err.message)
    }

    #[test]
    fn topic_rules_follow_kafka() {
        assert!(check_topic("orders.v1_EU-2").is_ok());
        assert!(check_topic(&"a".repeat(249)).is_ok());
        assert!(
            check_topic(&"a".repeat(250))
                .unwrap_err()
                .contains("at most 249")
        );
        assert!(check_topic("").is_err());
        assert!(check_topic("..").unwrap_err().contains("reserved"));
        assert!(check_topic("with space").unwrap_err().contains("' '"));
        assert!(check_topic("émoji").is_err());
    }

    #[test]
    fn resolves_the_default_topic() {
        let default = DefaultTopic::new("fallback".into());
        let out = prepare(record(""), &default, 100).unwrap();
        assert_eq!(&*out.topic, "fallback");
        let out = prepare(record("own"), &default, 100).unwrap();
        assert_eq!(&*out.topic, "own");
        assert_eq!(out.size, 1 + 5 + 1 + 2);
    }

    #[test]
    fn refuses_missing_and_invalid_topics() {
        let (code, message) =
            message_of(prepare(record(""), &DefaultTopic::new(String::new()), 100));
        assert_eq!(code, ErrorCode::InvalidRecord as i32);
        assert!(message.contains("no topic"), "{message}");

        let (_, message) = message_of(prepare(record(""), &DefaultTopic::new("a/b".into()), 100));
        assert!(message.contains("default topic is invalid"), "{message}");

        let (_, message) = message_of(prepare(record("a b"), &DefaultTopic::Missing, 100));
        assert!(message.contains("' '"), "{message}");
    }

    #[test]
    fn refuses_oversized_records() {
        let (code, message) = message_of(prepare(record("t"), &DefaultTopic::Missing, 8));
        assert_eq!(code, ErrorCode::RecordTooLarge as i32);
        assert!(
            message.contains("9 bytes") && message.contains("--max-record-bytes"),
            "{message}"
        );
        assert!(prepare(record("t"), &DefaultTopic::Missing, 9).is_ok());
    }

    #[test]
    fn refuses_negative_partition_and_timestamp() {
        let mut bad = record("t");
        bad.partition = Some(-1);
        assert!(
            message_of(prepare(bad, &DefaultTopic::Missing, 100))
                .1
                .contains("partition -1")
        );
        let mut bad = record("t");
        bad.timestamp_ms = Some(-5);
        assert!(
            message_of(prepare(bad, &DefaultTopic::Missing, 100))
                .1
                .contains("timestamp_ms -5")
        );
    }

    #[test]
    fn keeps_tombstones_and_header_order() {
        let mut tombstone = record("t");
        tombstone.value = None;
        tombstone.headers.push(proto::Header {
            key: "h".into(),
            value: Bytes::from_static(b"second"),
        });
        let out = prepare(tombstone, &DefaultTopic::Missing, 100).unwrap();
        assert!(out.value.is_none());
        let values: Vec<&[u8]> = out.headers.iter().map(|h| &h.value[..]).collect();
        assert_eq!(values, vec![&b"vv"[..], &b"second"[..]]);
    }
}
