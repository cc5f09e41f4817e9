//! The [`Sender`] backed by librdkafka: one shared `FutureProducer` per
//! process.
//!
//! Records are enqueued with `send_result`, which puts the record in
//! librdkafka's queue before it returns or hands it back on `QueueFull`.
//! `FutureProducer::send` is not used: it enqueues only when first polled and
//! sleeps and retries on `QueueFull`, which reorders records.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::embedded::EmbeddedBroker;
use crate::error::{Error, record_error, record_error_from_kafka};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::proto::{self, ErrorCode};
use crate::telemetry::TRACEPARENT;

use super::{Delivered, DeliveryResult, OutboundRecord, Sender, TrySendError};

/// The process's Kafka producer.
pub struct KafkaSender {
    producer: FutureProducer<GatewayContext>,
    /// Set when running on the embedded broker, which must be told to create
    /// a topic (with the configured partition count) before its first record.
    embedded: Option<Arc<EmbeddedBroker>>,
    /// Topics already created on the embedded broker, so that only the first
    /// record to a topic pays for the round trip.
    known_topics: RwLock<HashSet<String>>,
}

impl KafkaSender {
    /// A producer whose statistics feed `metrics` and whose fatal errors
    /// fail `health`.
    pub fn new(
        config: &ClientConfig,
        embedded: Option<Arc<EmbeddedBroker>>,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Result<Self, Error> {
        let producer = config
            .create_with_context(GatewayContext { metrics, health })
            .map_err(Error::Producer)?;
        Ok(Self {
            producer,
            embedded,
            known_topics: RwLock::default(),
        })
    }

    /// Waits until every record in librdkafka's queue is delivered or failed,
    /// for at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or_else(|_| Err(KafkaError::Flush(RDKafkaErrorCode::Fail)))
    }

    /// Waits until the producer reaches a broker (a metadata request
    /// succeeds), trying every `retry`; logs the first failure.
    pub async fn wait_for_brokers(&self, retry: Duration) {
        let mut warned = false;
        loop {
            let producer = self.producer.clone();
            let result = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, Duration::from_secs(5))
                    .map(|_| ())
            })
            .await
            .unwrap_or_else(|_| Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)));
            match result {
                Ok(()) => {
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

    /// Records in librdkafka's queues or in flight to the brokers.
    pub fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

impl Sender for KafkaSender {
    type Delivery = KafkaDelivery;

    fn try_send(&self, record: OutboundRecord) -> Result<KafkaDelivery, TrySendError> {
        // The batch's trace context follows the client's headers, unless the
        // client set its own context on the record.
        let trace = record
            .trace_headers
            .as_deref()
            .filter(|_| !record.headers.iter().any(|h| h.key == TRACEPARENT))
            .map_or(&[][..], Vec::as_slice);
        let count = record.headers.len() + trace.len();
        let headers = (count > 0).then(|| {
            let client = record
                .headers
                .iter()
                .map(|h| (h.key.as_str(), &h.value[..]));
            let trace = trace.iter().map(|(k, v)| (k.as_str(), &v[..]));
            client.chain(trace).fold(
                OwnedHeaders::new_with_capacity(count),
                |headers, (key, value)| {
                    headers.insert(Header {
                        key,
                        value: Some(value),
                    })
                },
            )
        });
        let future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord {
            topic: &record.topic,
            partition: record.partition,
            payload: record.value.as_deref(),
            key: record.key.as_deref(),
            timestamp: record.timestamp_ms,
            headers,
        };
        match self.producer.send_result(future_record) {
            Ok(delivery) => Ok(KafkaDelivery(delivery)),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(TrySendError::QueueFull(Box::new(record)))
            }
            Err((err, _)) => Err(TrySendError::Rejected(kafka_record_error(
                &err,
                &record.topic,
                record.partition.unwrap_or(-1),
            ))),
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

/// Feeds librdkafka's statistics to the metrics and its fatal errors to the
/// health state.
struct GatewayContext {
    metrics: Arc<Metrics>,
    health: Health,
}

impl ClientContext for GatewayContext {
    fn stats(&self, statistics: Statistics) {
        self.metrics.librdkafka(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(%error, reason, "fatal producer error: every record will fail until the gateway restarts");
            self.health.failed(format!("{error}: {reason}"));
        } else {
            tracing::warn!(%error, reason, "librdkafka");
        }
    }
}

/// Resolves when Kafka acknowledged or failed one record.
pub struct KafkaDelivery(DeliveryFuture);

impl Future for KafkaDelivery {
    type Output = DeliveryResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DeliveryResult> {
        Pin::new(&mut self.0).poll(cx).map(|outcome| match outcome {
            Ok(result) => from_delivery(result),
            Err(_canceled) => Err(record_error(
                ErrorCode::Unavailable,
                "the producer was closed before the record was delivered; send it again",
                true,
            )),
        })
    }
}

fn from_delivery(result: OwnedDeliveryResult) -> DeliveryResult {
    match result {
        Ok(delivery) => Ok(Delivered {
            partition: delivery.partition,
            offset: delivery.offset,
            timestamp_ms: delivery.timestamp.to_millis().unwrap_or(-1),
        }),
        Err((err, message)) => Err(kafka_record_error(
            &err,
            message.topic(),
            message.partition(),
        )),
    }
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
