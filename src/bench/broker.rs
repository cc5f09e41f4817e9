//! The one broker every run produces to: the embedded one, or a real Kafka.
//! Creates each run's topics and reads a topic back to check the stored
//! order.
//!
//! The embedded broker keeps at most 5 MiB or 100,000 records per
//! partition and drops the oldest beyond that. A read-back therefore starts
//! at each partition's low watermark and reports how many records were
//! dropped before it; the order check covers what is still stored, never
//! more, and says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::EmbeddedBroker;

use super::order::StoredOrder;

/// How long reading one topic back may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the read-back waits, once at the high watermarks, for records
/// past them.
const READ_BACK_SETTLE: Duration = Duration::from_millis(500);

/// Where the runs produce.
pub enum Kafka {
    Embedded(Arc<EmbeddedBroker>),
    External(String),
}

/// What reading a topic back found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    /// Records the topic ever held: its high watermarks, or the offsets read
    /// past them.
    pub records: u64,
    /// Records the broker dropped before they were read (the low
    /// watermarks): the embedded broker's retention.
    pub dropped_by_retention: u64,
    /// Records read back and checked.
    pub checked: u64,
    /// Records stored after a record their stream sent later.
    pub violations: u64,
}

impl Kafka {
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Kafka::Embedded(broker) => broker.bootstrap_servers().to_owned(),
            Kafka::External(servers) => servers.clone(),
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        match self {
            Kafka::Embedded(broker) => broker
                .create_topic(topic, partitions)
                .await
                .map_err(|err| format!("cannot create topic {topic}: {err}")),
            Kafka::External(servers) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", servers)
                    .create()
                    .map_err(|err| format!("cannot create an admin client: {err}"))?;
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                // -1: the broker's default replication factor.
                let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
                let results = admin
                    .create_topics(&[new], &options)
                    .await
                    .map_err(|err| format!("cannot create topic {topic}: {err}"))?;
                for result in results {
                    result.map_err(|(name, code)| format!("cannot create topic {name}: {code}"))?;
                }
                Ok(())
            }
        }
    }

    /// Reads every record still stored in `topic` and checks their order.
    pub async fn read_back(&self, topic: &str) -> Result<Stored, String> {
        let (servers, topic) = (self.bootstrap_servers(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_back(&servers, &topic))
            .await
            .map_err(|err| format!("the read-back failed: {err}"))?
    }
}

fn read_back(servers: &str, topic: &str) -> Result<Stored, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "kafka-gateway-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|err| format!("cannot create a consumer: {err}"))?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|err| format!("no metadata for {topic}: {err}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    let mut stored = Stored::default();
    let mut assignment = TopicPartitionList::new();
    // Next offset to read, and the end, per partition.
    let mut remaining = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|err| format!("no watermarks for {topic}/{partition}: {err}"))?;
        stored.dropped_by_retention += low as u64;
        // Every partition is read, even one whose watermarks say it is
        // empty: they may be short of the end (see below).
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(|err| err.to_string())?;
        remaining.push((partition, low, high));
    }
    if remaining.is_empty() {
        return Ok(stored);
    }
    consumer
        .assign(&assignment)
        .map_err(|err| format!("cannot assign {topic}: {err}"))?;
    let mut order = StoredOrder::default();
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    // The high watermarks are where reading may stop at the earliest: some
    // brokers report them short of the end (tansu 0.6 does), so reading goes
    // on until nothing more arrives for a moment.
    let mut idle_since = Instant::now();
    loop {
        let at_watermarks = remaining.iter().all(|&(_, next, high)| next >= high);
        if at_watermarks && idle_since.elapsed() >= READ_BACK_SETTLE {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "read {} records of {topic} in {READ_BACK_TIMEOUT:?}, not all",
                order.checked
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        idle_since = Instant::now();
        let message = message.map_err(|err| format!("reading {topic}: {err}"))?;
        order.observe(message.partition(), message.key());
        if let Some(entry) = remaining
            .iter_mut()
            .find(|(partition, _, _)| *partition == message.partition())
        {
            entry.1 = entry.1.max(message.offset() + 1);
        }
    }
    // Records stored: up to the high watermark or past it, as read.
    stored.records = remaining
        .iter()
        .map(|&(_, next, high)| next.max(high) as u64)
        .sum();
    stored.checked = order.checked;
    stored.violations = order.violations;
    Ok(stored)
}
