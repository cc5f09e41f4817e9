//! The [`Sender`] backed by librdkafka: one shared producer per process,
//! replaced when it fails fatally.
//!
//! Records are enqueued with `ThreadedProducer::send`, which puts the record
//! in librdkafka's queue before it returns or hands it back on `QueueFull`.
//! (`FutureProducer::send` is not used: it enqueues only when first polled
//! and sleeps and retries on `QueueFull`, which reorders records.) Each
//! record carries a small token (its stream's [`Completions`] and its
//! sequence number) as librdkafka's opaque; the delivery callback, on the
//! producer's polling thread, reads only where the record was stored (or
//! why not) and pushes that to the stream: no future, channel or copy of
//! the record per delivery.
//!
//! Recovery: a fatal error (the idempotent producer lost its sequence, was
//! fenced, ...) ends a librdkafka producer for good. The gateway then builds
//! a new one and keeps serving: new records wait (as on `QueueFull`) until
//! the old producer's queue and in-flight requests are purged and the new
//! one is in place; every record the old producer held gets a retriable
//! `UNAVAILABLE` naming the fatal error, in stream order, before any later
//! ack of its stream. Replacements are logged and counted; only a producer
//! that keeps failing (or cannot be built) fails `/healthz`.

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{
    DeliveryResult as KafkaDeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::Notify;

use crate::embedded::EmbeddedBroker;
use crate::error::{Error, record_error};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::proto::{self, ErrorCode};
use crate::telemetry::TRACEPARENT;

use super::classify::{self, fatal_record_error, record_error_from_kafka};
use super::{Completions, Delivered, OutboundRecord, Sender, TrySendError};

mod transactional;

pub use transactional::TxnSender;

/// A producer that failed fatally this many times within
/// [`FAILING_WINDOW`] is considered broken: `/healthz` fails so that the
/// gateway is restarted.
const FAILING_REPLACEMENTS: usize = 3;
const FAILING_WINDOW: Duration = Duration::from_secs(60);
/// How long a replaced producer may take to report its purged records.
const RETIRE_FLUSH: Duration = Duration::from_secs(5);

/// The process's Kafka producer.
pub struct KafkaSender {
    /// The producer records go to now.
    current: ArcSwap<Generation>,
    /// How to build a replacement.
    config: ClientConfig,
    metrics: Arc<Metrics>,
    health: Health,
    /// Woken when librdkafka reports an error, to check whether the
    /// producer died.
    check: Arc<Notify>,
    /// When the last replacements happened, to tell a producer that keeps
    /// failing.
    replacements: Mutex<VecDeque<Instant>>,
    /// Set when running on the embedded broker, which must be told to create
    /// a topic (with the configured partition count) before its first record.
    embedded: Option<Arc<EmbeddedBroker>>,
    /// Topics already created on the embedded broker, so that only the first
    /// record to a topic pays for the round trip.
    known_topics: RwLock<HashSet<String>>,
}

/// One librdkafka producer instance.
struct Generation {
    /// 1 for the first producer, then one more per replacement.
    id: u64,
    producer: ThreadedProducer<GatewayContext>,
    /// Shared with this producer's delivery callback.
    state: Arc<GenerationState>,
}

#[derive(Default)]
struct GenerationState {
    /// The fatal error that ended this producer, once it did.
    fatal: OnceLock<String>,
    /// A record of this producer failed with an error that leaves it unable
    /// to go on (fenced, out of sequence), although librdkafka did not raise
    /// a fatal error: librdkafka keeps trying, and every record fails the
    /// same way (tansu fences a producer that bumped its epoch). The gateway
    /// replaces such a producer too.
    broken: OnceLock<String>,
}

impl KafkaSender {
    /// A producer whose statistics feed `metrics` and whose failure to
    /// recover fails `health`.
    pub fn new(
        config: &ClientConfig,
        embedded: Option<Arc<EmbeddedBroker>>,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Result<Self, Error> {
        let check = Arc::new(Notify::new());
        let first = build(config, 1, &metrics, &check).map_err(Error::Producer)?;
        Ok(Self {
            current: ArcSwap::from_pointee(first),
            config: config.clone(),
            metrics,
            health,
            check,
            replacements: Mutex::default(),
            embedded,
            known_topics: RwLock::default(),
        })
    }

    /// Watches for fatal producer errors and replaces the producer after
    /// each; runs until dropped.
    pub async fn recover_forever(self: Arc<Self>) {
        loop {
            self.check.notified().await;
            self.recover_if_fatal().await;
        }
    }

    /// Replaces the producer if it failed fatally.
    async fn recover_if_fatal(&self) {
        let old = self.current.load_full();
        let cause = match old.producer.client().fatal_error() {
            Some((code, reason)) => format!("{reason} ({})", classify::error_name(code)),
            None => match old.state.broken.get() {
                Some(cause) => cause.clone(),
                None => return,
            },
        };
        if old.state.fatal.set(cause.clone()).is_err() {
            return;
        }
        tracing::error!(
            producer = old.id,
            %cause,
            "fatal producer error: replacing the producer; its records in flight fail \
             with a retriable error"
        );
        self.metrics.producer_replaced();
        // Every record the old producer holds fails now, before any record
        // goes to the new one.
        old.producer
            .purge(PurgeConfig::default().queue().inflight());
        let keeps_failing = {
            let mut times = self.replacements.lock().expect("not poisoned");
            let now = Instant::now();
            times.push_back(now);
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > FAILING_WINDOW)
            {
                times.pop_front();
            }
            times.len() >= FAILING_REPLACEMENTS
        };
        if keeps_failing {
            self.health.failed(format!(
                "the producer failed fatally {FAILING_REPLACEMENTS} times within \
                 {FAILING_WINDOW:?}; last: {cause}"
            ));
        }
        match build(&self.config, old.id + 1, &self.metrics, &self.check) {
            Ok(next) => {
                tracing::info!(producer = next.id, "replacement producer in place");
                self.current.store(Arc::new(next));
            }
            Err(err) => {
                tracing::error!(%err, "cannot build a replacement producer");
                self.health
                    .failed(format!("cannot replace the failed producer: {err}"));
                return;
            }
        }
        // Off the runtime: a producer's destruction blocks until its thread
        // ends.
        tokio::task::spawn_blocking(move || {
            let _ = old.producer.flush(RETIRE_FLUSH);
            drop(old);
        });
    }

    /// Waits until every record in librdkafka's queue is delivered or failed,
    /// for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let current = self.current.load_full();
        tokio::task::spawn_blocking(move || current.producer.flush(timeout))
            .await
            .unwrap_or_else(|_| Err(KafkaError::Flush(RDKafkaErrorCode::Fail)))
    }

    /// Waits until the producer reaches a broker (a metadata request
    /// succeeds), trying every `retry`; logs the first failure.
    pub async fn wait_for_brokers(&self, retry: Duration) {
        let mut warned = false;
        loop {
            let current = self.current.load_full();
            let result = tokio::task::spawn_blocking(move || {
                current
                    .producer
                    .client()
                    .fetch_metadata(None, Duration::from_secs(5))
                    .map(|_| ())
            })
            .await
            .unwrap_or_else(|_| Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)));
            match result {
                Ok(()) => {
                    crate::rdlog::reachable();
                    tracing::info!("producer reached the Kafka brokers: serving");
                    return;
                }
                Err(err) if !warned => {
                    warned = true;
                    tracing::warn!(%err, "cannot reach the Kafka brokers yet; not ready, retrying");
                }
                Err(_) => {}
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Makes sure the dead-letter topic can be written: the embedded broker
    /// creates it; on a cluster, a topic that does not exist is logged, since
    /// every parking would fail (and each failed record would say so).
    pub async fn check_dead_letter_topic(&self, topic: &str) {
        if self.embedded.is_some() {
            if let Err(err) = self.ensure_topic(topic).await {
                tracing::error!(
                    topic,
                    error = err.message,
                    "cannot create the dead-letter topic"
                );
            }
            return;
        }
        let current = self.current.load_full();
        let name = topic.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let metadata = current
                .producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(5))?;
            Ok::<_, KafkaError>(metadata.topics().first().and_then(|t| t.error()))
        })
        .await;
        match found {
            Ok(Ok(None)) => tracing::info!(topic, "dead-letter topic in place"),
            Ok(Ok(Some(code))) => tracing::warn!(
                topic,
                error = %RDKafkaErrorCode::from(code),
                "the dead-letter topic cannot be written: create it (or fix its ACLs), or \
                 failed records will say that parking them failed"
            ),
            Ok(Err(err)) => tracing::warn!(topic, %err, "cannot check the dead-letter topic"),
            Err(err) => tracing::warn!(topic, %err, "cannot check the dead-letter topic"),
        }
    }

    /// Records in librdkafka's queues or in flight to the brokers.
    pub fn in_flight_count(&self) -> i32 {
        self.current.load().producer.in_flight_count()
    }
}

/// Builds producer number `id`.
fn build(
    config: &ClientConfig,
    id: u64,
    metrics: &Arc<Metrics>,
    check: &Arc<Notify>,
) -> KafkaResult<Generation> {
    let state = Arc::new(GenerationState::default());
    let producer = config.create_with_context(GatewayContext {
        metrics: metrics.clone(),
        check: check.clone(),
        state: state.clone(),
        transactional: false,
    })?;
    Ok(Generation {
        id,
        producer,
        state,
    })
}

impl Sender for KafkaSender {
    fn try_send(
        &self,
        record: &OutboundRecord,
        completions: &Arc<Completions>,
        seq: u64,
    ) -> Result<(), TrySendError> {
        let generation = self.current.load();
        if generation.state.fatal.get().is_some() {
            // Being replaced: wait, as for a full queue.
            return Err(TrySendError::QueueFull);
        }
        match enqueue(&generation.producer, record, completions, seq) {
            Ok(()) => Ok(()),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                Err(TrySendError::QueueFull)
            }
            Err(err) if err.rdkafka_error_code().is_some_and(classify::is_fatal) => {
                // The producer died: wait for its replacement.
                self.check.notify_one();
                Err(TrySendError::QueueFull)
            }
            Err(err) => Err(rejected(&err, record)),
        }
    }

    async fn ensure_topic(&self, topic: &str) -> Result<(), proto::RecordError> {
        let Some(embedded) = &self.embedded else {
            return Ok(());
        };
        if self
            .known_topics
            .read()
            .expect("not poisoned")
            .contains(topic)
        {
            return Ok(());
        }
        embedded.ensure_topic(topic).await.map_err(|err| {
            record_error(
                ErrorCode::Unavailable,
                format!("the embedded broker could not create topic {topic:?}: {err}"),
                true,
            )
        })?;
        self.known_topics
            .write()
            .expect("not poisoned")
            .insert(topic.to_owned());
        Ok(())
    }
}

/// Puts `record` in `producer`'s queue (librdkafka copies it), with where
/// its outcome goes.
///
/// This is `BaseProducer::send` written out, for two of its costs per
/// record: the topic's name made a C string afresh (here it is kept per
/// thread while records go to the same topic), and an `OwnedHeaders` built
/// through rust-rdkafka's checks (here the header list is filled directly).
/// Together about 300 instructions a record in the profile.
#[allow(unsafe_code)]
fn enqueue(
    producer: &ThreadedProducer<GatewayContext>,
    record: &OutboundRecord,
    completions: &Arc<Completions>,
    seq: u64,
) -> Result<(), KafkaError> {
    use rdkafka::bindings as rd;
    use rdkafka::bindings::rd_kafka_vtype_t::*;
    use std::os::raw::{c_char, c_void};

    // The client's headers (but one named as the principal header in any
    // case, which it may not forge), then the principal's, then the batch's trace context,
    // unless the client set its own on the record.
    let stamp = record.stamp.as_deref();
    let trace = record
        .trace_headers
        .as_deref()
        .filter(|_| !record.headers.iter().any(|h| h.key == TRACEPARENT))
        .map_or(&[][..], Vec::as_slice);
    let count = record.headers.len() + usize::from(stamp.is_some()) + trace.len();
    let bytes = |value: Option<&Bytes>| match value {
        Some(value) => (value.as_ptr() as *mut c_void, value.len()),
        None => (std::ptr::null_mut(), 0),
    };
    let (payload, payload_len) = bytes(record.value.as_ref());
    let (key, key_len) = bytes(record.key.as_ref());
    TOPIC_NAME.with_borrow_mut(|cached| {
        let topic = match cached {
            Some((topic, name))
                if Arc::ptr_eq(topic, &record.topic) || **topic == *record.topic =>
            {
                name.as_ptr()
            }
            _ => {
                // Topic names are checked before a record gets here (Kafka's
                // characters only): one with a NUL byte cannot arrive.
                let name = CString::new(record.topic.as_bytes()).map_err(|_| {
                    KafkaError::MessageProduction(RDKafkaErrorCode::InvalidArgument)
                })?;
                cached.insert((record.topic.clone(), name)).1.as_ptr()
            }
        };
        // SAFETY: the header list is new and ours until librdkafka takes it
        // (below, on success); rd_kafka_header_add copies each name and
        // value, read from slices valid for this call.
        let headers = if count == 0 {
            std::ptr::null_mut()
        } else {
            unsafe {
                let headers = rd::rd_kafka_headers_new(count);
                let client = record
                    .headers
                    .iter()
                    .filter(|h| stamp.is_none_or(|(name, _)| !h.key.eq_ignore_ascii_case(name)))
                    .map(|h| (h.key.as_str(), &h.value[..]));
                let stamp = stamp.map(|(name, value)| (name.as_str(), &value[..]));
                let trace = trace.iter().map(|(k, v)| (k.as_str(), &v[..]));
                for (name, value) in client.chain(stamp).chain(trace) {
                    rd::rd_kafka_header_add(
                        headers,
                        name.as_ptr().cast::<c_char>(),
                        name.len() as isize,
                        value.as_ptr().cast::<c_void>(),
                        value.len() as isize,
                    );
                }
                headers
            }
        };
        let token = Box::into_raw(Box::new(Token {
            completions: completions.clone(),
            seq,
        }));
        // SAFETY: the same call as BaseProducer::send makes, with the same
        // types for each vararg. librdkafka copies the topic name, key and
        // value (RD_KAFKA_MSG_F_COPY) before it returns; on success it owns
        // the headers and hands the token back to the delivery callback,
        // which rust-rdkafka turns into a Box<Token> (IntoOpaque for Box is
        // Box::into_raw / Box::from_raw); on failure both are still ours.
        let error = unsafe {
            rd::rd_kafka_producev(
                producer.client().native_ptr(),
                RD_KAFKA_VTYPE_TOPIC,
                topic,
                RD_KAFKA_VTYPE_PARTITION,
                record.partition.unwrap_or(-1),
                RD_KAFKA_VTYPE_MSGFLAGS,
                rd::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                payload,
                payload_len,
                RD_KAFKA_VTYPE_KEY,
                key,
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                token.cast::<c_void>(),
                RD_KAFKA_VTYPE_TIMESTAMP,
                record.timestamp_ms.unwrap_or(0),
                RD_KAFKA_VTYPE_HEADERS,
                headers,
                RD_KAFKA_VTYPE_END,
            )
        };
        if error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        // SAFETY: librdkafka refused the record and took neither.
        unsafe {
            drop(Box::from_raw(token));
            if !headers.is_null() {
                rd::rd_kafka_headers_destroy(headers);
            }
        }
        Err(KafkaError::MessageProduction(error.into()))
    })
}

thread_local! {
    /// The topic the last record enqueued on this thread went to, and its
    /// name as a C string.
    static TOPIC_NAME: std::cell::RefCell<Option<(Arc<str>, CString)>> =
        const { std::cell::RefCell::new(None) };
}

/// What librdkafka carries with each record and hands back to the delivery
/// callback: where to report the outcome.
struct Token {
    completions: Arc<Completions>,
    seq: u64,
}

/// Feeds librdkafka's statistics to the metrics, reports every delivery to
/// its stream, and has the sender check for a fatal error whenever
/// librdkafka reports one. (A fatal error is reported with the code that
/// caused it, not `_FATAL`, so every error prompts the check.)
struct GatewayContext {
    metrics: Arc<Metrics>,
    check: Arc<Notify>,
    /// This producer's fate: once it failed fatally, every failure of its
    /// records says so.
    state: Arc<GenerationState>,
    /// A transactional producer: only librdkafka's own fatal error ends it.
    /// The errors an idempotent producer cannot survive (UNKNOWN_PRODUCER_ID,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH) only doom its
    /// transaction (librdkafka's `txn_requires_abort`): it is aborted and
    /// the producer goes on.
    transactional: bool,
}

impl ClientContext for GatewayContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.librdkafka(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::rdlog::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::rdlog::error(&error, reason);
        // On the polling thread, before the delivery reports of the records
        // librdkafka purges because of it: mark the producer now, so that
        // each of those reports names the fatal error.
        if let Some(code) = error.rdkafka_error_code()
            && classify::is_fatal(code)
            && !self.transactional
        {
            let _ = self.state.broken.set(classify::named(code));
        }
        self.check.notify_one();
    }
}

impl ProducerContext for GatewayContext {
    type DeliveryOpaque = Box<Token>;

    /// On the producer's polling thread: reads where the record went, or
    /// why not, and reports it. Never blocks.
    fn delivery(&self, result: &KafkaDeliveryResult<'_>, token: Box<Token>) {
        if result.is_ok() {
            crate::rdlog::reachable();
        }
        let outcome = match result {
            Ok(message) => Ok(Delivered {
                partition: message.partition(),
                // librdkafka reports no offset (-1, or -1001 when the request
                // carried none) when a broker confirmed a retried write as a
                // duplicate without its position: stored, position unknown.
                offset: message.offset().max(-1),
                timestamp_ms: message.timestamp().to_millis().unwrap_or(-1),
            }),
            Err((err, message)) => Err(self.failure(err, message)),
        };
        token.completions.push(token.seq, outcome);
    }
}

impl GatewayContext {
    /// The error of a record librdkafka failed.
    fn failure(&self, err: &KafkaError, message: &BorrowedMessage<'_>) -> proto::RecordError {
        let may_be_stored = may_be_stored(message);
        let fatal_cause = match self.state.fatal.get().or(self.state.broken.get()) {
            Some(cause) => Some(cause.clone()),
            None => match err.rdkafka_error_code() {
                // The producer cannot go on, whether or not librdkafka calls
                // it fatal: have it replaced.
                Some(code) if classify::is_fatal(code) && !self.transactional => {
                    let cause = classify::named(code);
                    let _ = self.state.broken.set(cause.clone());
                    self.check.notify_one();
                    Some(cause)
                }
                _ => None,
            },
        };
        let mut error = match fatal_cause {
            Some(cause) => fatal_record_error(&cause, may_be_stored),
            None => kafka_record_error(err, message.topic(), message.partition()),
        };
        error.may_be_stored = may_be_stored;
        error
    }
}

/// Whether a record librdkafka failed may be stored anyway: it was sent and
/// the broker's answer never came (librdkafka's `POSSIBLY_PERSISTED`), as
/// opposed to never sent, or refused by the broker.
#[allow(unsafe_code)]
fn may_be_stored(message: &BorrowedMessage<'_>) -> bool {
    use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t};
    // SAFETY: `message` wraps the `rd_kafka_message_t` of the delivery report
    // being handled, valid for this call; rd_kafka_message_status only reads
    // its status field.
    let status = unsafe { rd_kafka_message_status(message.ptr()) };
    !matches!(
        status,
        rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED
    )
}

/// librdkafka refused `record` at once.
fn rejected(err: &KafkaError, record: &OutboundRecord) -> TrySendError {
    TrySendError::Rejected(kafka_record_error(
        err,
        &record.topic,
        record.partition.unwrap_or(-1),
    ))
}

/// A record's error from librdkafka's, naming the partition when the
/// record asked for one that does not exist.
fn kafka_record_error(err: &KafkaError, topic: &str, partition: i32) -> proto::RecordError {
    let mut error = record_error_from_kafka(err);
    if partition >= 0 && err.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) {
        error.message = format!(
            "topic {topic:?} has no partition {partition}: {}",
            error.message
        );
    }
    error
}
