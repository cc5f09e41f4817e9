//! Prometheus metrics, in the OpenMetrics text format, served on
//! `--metrics-listen` at `/metrics`.
//!
//! The gateway's own: records and bytes sent to Kafka by topic and result,
//! records refused before any send, batches and their ack latency by topic
//! and error, records and bytes in flight, open streams and why streams
//! ended. librdkafka's: its queue, and per broker the round-trip time,
//! retries, errors and connection state, from its statistics
//! (`statistics.interval.ms`).
//!
//! Against OpenTelemetry's messaging conventions (docs/operations.md,
//! "Metrics and probes", has the table): `kafka_gateway_records_total` is
//! `messaging.client.sent.messages` (its `result` label, but for `ok`, is
//! `error.type`) and `kafka_gateway_batch_ack_latency_seconds` is
//! `messaging.client.operation.duration` of the `send` of a batch, with the
//! advised buckets. Every error label uses the one `error.type`
//! vocabulary of the spans: [`code_label`].
//!
//! No label value is the client's to choose. A `topic` label names a topic
//! only once a record of it was acked (so the topic exists and a caller was
//! allowed to write it), and at most [`MAX_TOPIC_LABELS`] topics; every
//! other record (a topic never acked, refused by the policy, invalid or
//! unknown, or past the cap) counts under `topic=""`, which no Kafka topic
//! can be called. Principals are authenticated names, never the client's
//! say; reasons, results and codes are fixed sets.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rdkafka::statistics::Statistics;

use crate::proto::{ErrorCode, RecordResult, record_result};

/// Topics that may be label values: beyond this many, records of further
/// topics count under `topic=""`. Bounds the series of the topic-labelled
/// families whatever the cluster holds.
pub const MAX_TOPIC_LABELS: usize = 1_000;

/// What a `/metrics` response declares.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    /// The record's topic, once a record of it was acked; else empty (see
    /// the module's doc), so clients cannot grow the label set at will.
    pub topic: String,
    /// `ok`, or the error code in lower case (`timed_out`, ...).
    pub result: &'static str,
}

/// The labels of a batch's ack latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// The topic label its records share (see [`RecordLabels`]); empty
    /// when they have several.
    pub topic: String,
    /// Empty when every record was stored, else the `error.type` of its
    /// first failed record (`timed_out`, ...).
    pub error_type: &'static str,
}

/// `messaging.client.operation.duration`'s advised buckets, in seconds.
const OPERATION_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn operation_duration() -> Histogram {
    Histogram::new(OPERATION_DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// `completed`, `client_gone`, `stalled`, `shutdown`, `connection_age`,
    /// `too_many_records`, `batch_too_large` or `malformed`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `connections`, `streams`, `streams_per_connection` or
    /// `total_in_flight_bytes`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrincipalLabels {
    /// The authenticated caller; empty when anonymous. Only authenticated
    /// names appear, so clients cannot grow the label set at will.
    pub principal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why a call was not authenticated: `missing`, `expired`,
    /// `bad_signature`, ...
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    /// The record's own topic; empty unless a record of it was acked, as in
    /// [`RecordLabels`].
    pub topic: String,
    /// Why it failed: the error code in lower case (`invalid_record`, ...).
    pub code: &'static str,
    /// `parked`, or `failed` when the dead-letter write failed too.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `committed` or `aborted`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    /// librdkafka's broker name, `host:port/node_id`.
    pub broker: String,
}

/// Every metric of the process; shared by all streams.
pub struct Metrics {
    registry: Registry,
    records: Family<RecordLabels, Counter>,
    record_bytes: Family<RecordLabels, Counter>,
    refused: Family<RecordLabels, Counter>,
    batches: Counter,
    batch_latency: Family<BatchLabels, Histogram, fn() -> Histogram>,
    in_flight_records: Gauge,
    in_flight_bytes: Gauge,
    open_streams: Gauge,
    stream_ends: Family<EndLabels, Counter>,
    limit_current: Family<LimitLabels, Gauge>,
    limit_max: Family<LimitLabels, Gauge>,
    limit_refused: Family<LimitLabels, Counter>,
    limit_waits: Family<LimitLabels, Counter>,
    producer_replacements: Counter,
    transactional_producers: Gauge,
    denied: Family<PrincipalLabels, Counter>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    transactions: Family<OutcomeLabels, Counter>,
    throttled: Family<PrincipalLabels, Counter<f64, AtomicU64>>,
    auth_failures: Family<ReasonLabels, Counter>,
    /// The topics that may be label values: acked at least once, at most
    /// [`MAX_TOPIC_LABELS`].
    labelled_topics: RwLock<HashSet<Box<str>>>,
    librdkafka: LibrdkafkaMetrics,
}

/// librdkafka's statistics, as last reported.
struct LibrdkafkaMetrics {
    queue_messages: Gauge,
    queue_bytes: Gauge,
    messages_sent: Counter,
    bytes_sent: Counter,
    broker_up: Family<BrokerLabels, Gauge>,
    broker_rtt_avg: Family<BrokerLabels, Gauge<f64, AtomicU64>>,
    broker_rtt_p99: Family<BrokerLabels, Gauge<f64, AtomicU64>>,
    broker_retries: Family<BrokerLabels, Counter>,
    broker_errors: Family<BrokerLabels, Counter>,
    broker_timeouts: Family<BrokerLabels, Counter>,
    broker_waiting: Family<BrokerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kafka_gateway");
        let records = Family::<RecordLabels, Counter>::default();
        registry.register(
            "records",
            "Records sent to Kafka (messaging.client.sent.messages), by topic and result \
             (ok or the error.type)",
            records.clone(),
        );
        let record_bytes = Family::<RecordLabels, Counter>::default();
        registry.register_with_unit(
            "record",
            "Payload bytes (key, value, headers) of records sent to Kafka, by topic and result",
            Unit::Bytes,
            record_bytes.clone(),
        );
        let refused = Family::<RecordLabels, Counter>::default();
        registry.register(
            "refused_records",
            "Records answered with an error before any send to Kafka (validation, policy, \
             unknown topic or partition), by topic and error.type",
            refused.clone(),
        );
        let batches = Counter::default();
        registry.register("batches", "Batches answered", batches.clone());
        let batch_latency =
            Family::<BatchLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                operation_duration,
            );
        registry.register_with_unit(
            "batch_ack_latency",
            "From a batch entering the send window to its last record's result \
             (messaging.client.operation.duration of its send), by topic and error.type",
            Unit::Seconds,
            batch_latency.clone(),
        );
        let in_flight_records = Gauge::default();
        registry.register(
            "in_flight_records",
            "Records handed to librdkafka and not yet answered, over all streams",
            in_flight_records.clone(),
        );
        let in_flight_bytes = Gauge::default();
        registry.register_with_unit(
            "in_flight",
            "Payload bytes handed to librdkafka and not yet answered, over all streams",
            Unit::Bytes,
            in_flight_bytes.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_streams",
            "Produce streams (and ProduceBatch calls) being served",
            open_streams.clone(),
        );
        let stream_ends = Family::<EndLabels, Counter>::default();
        registry.register(
            "stream_ends",
            "Streams ended, by reason",
            stream_ends.clone(),
        );
        let limit_current = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "limit_current",
            "Use of each admission limit now (connections, streams, bytes)",
            limit_current.clone(),
        );
        let limit_max = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "limit_max",
            "The cap of each admission limit",
            limit_max.clone(),
        );
        let limit_refused = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_refused",
            "Connections and calls refused with RESOURCE_EXHAUSTED by a limit",
            limit_refused.clone(),
        );
        let limit_waits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_waits",
            "Times a stream stopped reading until a limit freed room",
            limit_waits.clone(),
        );
        let transactional_producers = Gauge::default();
        registry.register(
            "transactional_producers",
            "Kafka producers of transactional ids alive, held by a stream or idle",
            transactional_producers.clone(),
        );
        let producer_replacements = Counter::default();
        registry.register(
            "producer_replacements",
            "Producers replaced after a fatal librdkafka error",
            producer_replacements.clone(),
        );
        let denied = Family::<PrincipalLabels, Counter>::default();
        registry.register(
            "denied_records",
            "Records refused NOT_AUTHORIZED by --authz-policy, by principal",
            denied.clone(),
        );
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "dead_letter_records",
            "Failed records written to --dead-letter-topic (outcome parked) or whose \
             dead-letter write failed too (outcome failed), by their own topic and error code",
            dead_letters.clone(),
        );
        let transactions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "transactions",
            "Transactions of transactional streams ended, by outcome (committed or aborted)",
            transactions.clone(),
        );
        let throttled = Family::<PrincipalLabels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "throttled",
            "Time streams were paused for their principal's quota",
            Unit::Seconds,
            throttled.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Calls refused UNAUTHENTICATED, by reason",
            auth_failures.clone(),
        );
        let librdkafka =
            LibrdkafkaMetrics::register(registry.sub_registry_with_prefix("librdkafka"));
        Self {
            registry,
            records,
            record_bytes,
            refused,
            batches,
            batch_latency,
            in_flight_records,
            in_flight_bytes,
            open_streams,
            stream_ends,
            limit_current,
            limit_max,
            limit_refused,
            limit_waits,
            producer_replacements,
            transactional_producers,
            denied,
            dead_letters,
            transactions,
            throttled,
            auth_failures,
            labelled_topics: RwLock::default(),
            librdkafka,
        }
    }

    /// A record of `topic` was acked: the topic exists and its caller was
    /// allowed to write it, so it may be a label value (while fewer than
    /// [`MAX_TOPIC_LABELS`] are).
    pub fn topic_acked(&self, topic: &str) {
        if topic.is_empty() || self.is_labelled(topic) {
            return;
        }
        let mut topics = self
            .labelled_topics
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if topics.len() < MAX_TOPIC_LABELS {
            topics.insert(topic.into());
        }
    }

    /// Whether `topic` may be a label value.
    fn is_labelled(&self, topic: &str) -> bool {
        self.labelled_topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic)
    }

    /// The `topic` label of a record of `topic` whose result (or error
    /// code) has the label `result`: the topic, or `""`.
    fn topic_label<'a>(&self, topic: &'a str, result: &'static str) -> &'a str {
        if topic_is_known(result) && self.is_labelled(topic) {
            topic
        } else {
            ""
        }
    }

    /// A record of `principal` was refused by the policy.
    pub fn denied(&self, principal: &str) {
        self.denied
            .get_or_create(&PrincipalLabels {
                principal: principal.to_owned(),
            })
            .inc();
    }

    /// A failed record of `topic` (its error's metric label `code`) was
    /// written to the dead-letter topic, or not (`parked` false).
    pub fn dead_letter(&self, topic: &str, code: &'static str, parked: bool) {
        let topic = self.topic_label(topic, code);
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                topic: topic.to_owned(),
                code,
                outcome: if parked { "parked" } else { "failed" },
            })
            .inc();
    }

    /// A transactional producer was built (1) or closed (-1).
    pub fn transactional_producers(&self, delta: i64) {
        self.transactional_producers.inc_by(delta);
    }

    /// A transaction ended: `committed` or `aborted`.
    pub fn transaction(&self, outcome: &'static str) {
        self.transactions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A stream of `principal` paused `wait` for its quota.
    pub fn throttled(&self, principal: &str, wait: std::time::Duration) {
        self.throttled
            .get_or_create(&PrincipalLabels {
                principal: principal.to_owned(),
            })
            .inc_by(wait.as_secs_f64());
    }

    /// A call was refused UNAUTHENTICATED.
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The counter of authentication failures for `reason`.
    pub fn auth_failures(&self, reason: &'static str) -> Counter {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .clone()
    }

    /// A producer was replaced after a fatal error.
    pub fn producer_replaced(&self) {
        self.producer_replacements.inc();
    }

    /// The gauge of a limit's use.
    pub fn limit_current(&self, limit: &'static str) -> Gauge {
        self.limit_current
            .get_or_create(&LimitLabels { limit })
            .clone()
    }

    /// The gauge of a limit's cap.
    pub fn limit_max(&self, limit: &'static str) -> Gauge {
        self.limit_max.get_or_create(&LimitLabels { limit }).clone()
    }

    /// The counter of refusals by a limit.
    pub fn limit_refused(&self, limit: &'static str) -> Counter {
        self.limit_refused
            .get_or_create(&LimitLabels { limit })
            .clone()
    }

    /// The counter of waits for a limit.
    pub fn limit_waits(&self, limit: &'static str) -> Counter {
        self.limit_waits
            .get_or_create(&LimitLabels { limit })
            .clone()
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Counts `records` results of `bytes` payload bytes, of records `sent`
    /// to Kafka or refused before; `labels.topic` becomes `""` unless it may
    /// be a label value.
    pub fn records(&self, labels: &RecordLabels, sent: bool, records: u64, bytes: u64) {
        if labels.result == "ok" {
            self.topic_acked(&labels.topic);
        }
        let unlabelled;
        let labelled = !self.topic_label(&labels.topic, labels.result).is_empty();
        let labels = if labelled || labels.topic.is_empty() {
            labels
        } else {
            unlabelled = RecordLabels {
                topic: String::new(),
                result: labels.result,
            };
            &unlabelled
        };
        if sent {
            self.records.get_or_create(labels).inc_by(records);
            self.record_bytes.get_or_create(labels).inc_by(bytes);
        } else {
            self.refused.get_or_create(labels).inc_by(records);
        }
    }

    /// A batch was answered `latency` after it entered the window.
    pub fn batch_done(&self, labels: &BatchLabels, latency: std::time::Duration) {
        self.batches.inc();
        // The same rule as the records' topic label.
        let result = match labels.error_type {
            "" => "ok",
            error_type => error_type,
        };
        let unlabelled;
        let labels =
            if labels.topic.is_empty() || !self.topic_label(&labels.topic, result).is_empty() {
                labels
            } else {
                unlabelled = BatchLabels {
                    topic: String::new(),
                    error_type: labels.error_type,
                };
                &unlabelled
            };
        self.batch_latency
            .get_or_create(labels)
            .observe(latency.as_secs_f64());
    }

    /// Adds to the records and bytes in flight (negative: removes).
    pub fn in_flight(&self, records: i64, bytes: i64) {
        if records != 0 {
            self.in_flight_records.inc_by(records);
        }
        if bytes != 0 {
            self.in_flight_bytes.inc_by(bytes);
        }
    }

    /// Counts an open stream until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.open_streams.inc();
        OpenStream(self.clone())
    }

    pub fn stream_ended(&self, reason: &'static str) {
        self.stream_ends.get_or_create(&EndLabels { reason }).inc();
    }

    /// Takes in one report of librdkafka's statistics.
    pub fn librdkafka(&self, stats: &Statistics) {
        self.librdkafka.update(stats);
    }
}

/// Decrements the open streams when dropped.
pub struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.dec();
    }
}

impl LibrdkafkaMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            queue_messages: Gauge::default(),
            queue_bytes: Gauge::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            broker_up: Family::default(),
            broker_rtt_avg: Family::default(),
            broker_rtt_p99: Family::default(),
            broker_retries: Family::default(),
            broker_errors: Family::default(),
            broker_timeouts: Family::default(),
            broker_waiting: Family::default(),
        };
        registry.register(
            "queue_messages",
            "Records in librdkafka's producer queue (msg_cnt); bounded by queue.buffering.max.messages",
            this.queue_messages.clone(),
        );
        registry.register_with_unit(
            "queue",
            "Bytes in librdkafka's producer queue (msg_size)",
            Unit::Bytes,
            this.queue_bytes.clone(),
        );
        registry.register(
            "messages_sent",
            "Records librdkafka sent to brokers (txmsgs)",
            this.messages_sent.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Record bytes librdkafka sent to brokers (txmsg_bytes)",
            Unit::Bytes,
            this.bytes_sent.clone(),
        );
        registry.register(
            "broker_up",
            "1 when librdkafka's connection to the broker is UP",
            this.broker_up.clone(),
        );
        registry.register_with_unit(
            "broker_rtt_avg",
            "Broker round-trip time, average over the last statistics interval",
            Unit::Seconds,
            this.broker_rtt_avg.clone(),
        );
        registry.register_with_unit(
            "broker_rtt_p99",
            "Broker round-trip time, 99th percentile over the last statistics interval",
            Unit::Seconds,
            this.broker_rtt_p99.clone(),
        );
        registry.register(
            "broker_request_retries",
            "Requests librdkafka retried to the broker (txretries)",
            this.broker_retries.clone(),
        );
        registry.register(
            "broker_request_errors",
            "Requests to the broker that failed (txerrs)",
            this.broker_errors.clone(),
        );
        registry.register(
            "broker_request_timeouts",
            "Requests to the broker that timed out (req_timeouts)",
            this.broker_timeouts.clone(),
        );
        registry.register(
            "broker_waiting_messages",
            "Records sent to the broker and awaiting its response (waitresp_msg_cnt)",
            this.broker_waiting.clone(),
        );
        this
    }

    fn update(&self, stats: &Statistics) {
        self.queue_messages.set(saturating_i64(stats.msg_cnt));
        self.queue_bytes.set(saturating_i64(stats.msg_size));
        set_counter(&self.messages_sent, stats.txmsgs.max(0) as u64);
        set_counter(&self.bytes_sent, stats.txmsg_bytes.max(0) as u64);
        // Real brokers only: bootstrap and internal entries have no node id.
        for broker in stats.brokers.values().filter(|b| b.nodeid >= 0) {
            let labels = BrokerLabels {
                broker: broker.name.clone(),
            };
            self.broker_up
                .get_or_create(&labels)
                .set(i64::from(broker.state == "UP"));
            if let Some(rtt) = &broker.rtt {
                self.broker_rtt_avg
                    .get_or_create(&labels)
                    .set(rtt.avg as f64 / 1e6);
                self.broker_rtt_p99
                    .get_or_create(&labels)
                    .set(rtt.p99 as f64 / 1e6);
            }
            set_counter(
                &self.broker_retries.get_or_create(&labels),
                broker.txretries,
            );
            set_counter(&self.broker_errors.get_or_create(&labels), broker.txerrs);
            set_counter(
                &self.broker_timeouts.get_or_create(&labels),
                broker.req_timeouts,
            );
            self.broker_waiting
                .get_or_create(&labels)
                .set(broker.waitresp_msg_cnt);
        }
    }
}

/// librdkafka reports running totals; the counter takes the latest.
fn set_counter(counter: &Counter, total: u64) {
    counter.inner().store(total, Ordering::Relaxed);
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The `result` label of a record's result.
pub fn result_label(result: &RecordResult) -> &'static str {
    match &result.result {
        Some(record_result::Result::Ok(_)) => "ok",
        Some(record_result::Result::Error(error)) => code_label(error.code),
        None => "unspecified",
    }
}

/// The `error.type` of a batch: its first failed record's, or empty when
/// every record was stored.
pub fn batch_error_type(results: &[RecordResult]) -> &'static str {
    results
        .iter()
        .find_map(|result| match &result.result {
            Some(record_result::Result::Error(error)) => Some(code_label(error.code)),
            _ => None,
        })
        .unwrap_or("")
}

/// An error code's label, and its `error.type` everywhere (spans, span
/// events, metrics): its name in lower case.
pub fn code_label(code: i32) -> &'static str {
    match ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified) {
        ErrorCode::Unspecified => "unspecified",
        ErrorCode::InvalidRecord => "invalid_record",
        ErrorCode::RecordTooLarge => "record_too_large",
        ErrorCode::UnknownTopic => "unknown_topic",
        ErrorCode::NotAuthorized => "not_authorized",
        ErrorCode::TimedOut => "timed_out",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
        ErrorCode::UnknownPartition => "unknown_partition",
        ErrorCode::Aborted => "aborted",
    }
}

/// Whether a result leaves the record's topic a possible label value: not
/// when the topic is invalid or unknown, nor when the caller was not allowed
/// to write it (whatever topic it named).
pub fn topic_is_known(result: &'static str) -> bool {
    !matches!(
        result,
        "invalid_record" | "unknown_topic" | "not_authorized"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::record_error;
    use crate::produce::{Delivered, error_result, ok_result};

    #[test]
    fn records_are_counted_by_topic_and_result() {
        let metrics = Arc::new(Metrics::new());
        let ok = ok_result(
            "orders",
            Delivered {
                partition: 0,
                offset: 1,
                timestamp_ms: 2,
            },
        );
        let failed = error_result(record_error(ErrorCode::TimedOut, "slow", true));
        assert_eq!(result_label(&ok), "ok");
        assert_eq!(result_label(&failed), "timed_out");
        assert_eq!(batch_error_type(&[ok.clone(), failed.clone()]), "timed_out");
        assert_eq!(batch_error_type(std::slice::from_ref(&ok)), "");
        let labels = |result| RecordLabels {
            topic: "orders".into(),
            result,
        };
        metrics.topic_acked("orders");
        metrics.records(&labels("ok"), true, 3, 300);
        metrics.records(&labels("timed_out"), true, 1, 10);
        metrics.records(&labels("unknown_partition"), false, 2, 20);
        let batch = |error_type| BatchLabels {
            topic: "orders".into(),
            error_type,
        };
        metrics.batch_done(&batch(""), std::time::Duration::from_millis(3));
        metrics.batch_done(&batch("timed_out"), std::time::Duration::from_secs(3));
        let guard = metrics.stream_opened();
        let text = metrics.encode();
        for line in [
            r#"kafka_gateway_records_total{topic="orders",result="ok"} 3"#,
            r#"kafka_gateway_records_total{topic="orders",result="timed_out"} 1"#,
            r#"kafka_gateway_record_bytes_total{topic="orders",result="ok"} 300"#,
            r#"kafka_gateway_refused_records_total{topic="orders",result="unknown_partition"} 2"#,
            "kafka_gateway_batches_total 2",
            r#"kafka_gateway_batch_ack_latency_seconds_count{topic="orders",error_type=""} 1"#,
            r#"kafka_gateway_batch_ack_latency_seconds_bucket{le="0.005",topic="orders",error_type=""} 1"#,
            r#"kafka_gateway_batch_ack_latency_seconds_bucket{le="2.5",topic="orders",error_type="timed_out"} 0"#,
            r#"kafka_gateway_batch_ack_latency_seconds_bucket{le="5.0",topic="orders",error_type="timed_out"} 1"#,
            "kafka_gateway_open_streams 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        drop(guard);
        assert!(
            metrics
                .encode()
                .lines()
                .any(|l| l == "kafka_gateway_open_streams 0")
        );
    }

    #[test]
    fn topic_labels_are_only_topics_that_were_acked_and_are_bounded() {
        let metrics = Metrics::new();
        let labels = |topic: &str, result| RecordLabels {
            topic: topic.into(),
            result,
        };
        // Denied, failed before any ack, invalid: none names its topic.
        metrics.records(&labels("secret-plans", "not_authorized"), true, 1, 10);
        metrics.records(&labels("random-1", "timed_out"), true, 1, 10);
        metrics.records(&labels("bad name", "invalid_record"), true, 1, 10);
        metrics.dead_letter("random-2", "not_authorized", true);
        metrics.dead_letter("random-3", "unknown_partition", true);
        // Once acked, a topic is a label value, except for records the
        // caller was not allowed to write.
        metrics.topic_acked("orders");
        metrics.records(&labels("orders", "timed_out"), true, 1, 10);
        metrics.records(&labels("orders", "not_authorized"), true, 1, 10);
        metrics.batch_done(
            &BatchLabels {
                topic: "random-4".into(),
                error_type: "timed_out",
            },
            std::time::Duration::from_millis(1),
        );
        metrics.dead_letter("orders", "unknown_partition", true);
        let text = metrics.encode();
        for line in [
            r#"kafka_gateway_records_total{topic="",result="not_authorized"} 2"#,
            r#"kafka_gateway_records_total{topic="",result="timed_out"} 1"#,
            r#"kafka_gateway_records_total{topic="",result="invalid_record"} 1"#,
            r#"kafka_gateway_records_total{topic="orders",result="timed_out"} 1"#,
            r#"kafka_gateway_dead_letter_records_total{topic="",code="not_authorized",outcome="parked"} 1"#,
            r#"kafka_gateway_dead_letter_records_total{topic="",code="unknown_partition",outcome="parked"} 1"#,
            r#"kafka_gateway_dead_letter_records_total{topic="orders",code="unknown_partition",outcome="parked"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for name in [
            "secret-plans",
            "random-1",
            "random-2",
            "random-3",
            "random-4",
            "bad name",
        ] {
            assert!(!text.contains(name), "{name} became a label:\n{text}");
        }

        // At most MAX_TOPIC_LABELS topics, however many are acked.
        for n in 0..MAX_TOPIC_LABELS + 50 {
            let topic = format!("t{n}");
            metrics.topic_acked(&topic);
            metrics.records(&labels(&topic, "ok"), true, 1, 1);
        }
        let series = metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("kafka_gateway_records_total{") && l.contains(r#"result="ok""#)
            })
            .count();
        // "orders" took one of the labels: 999 of these topics got one, the
        // rest share topic="".
        assert_eq!(series, MAX_TOPIC_LABELS - 1 + 1);
    }
}
