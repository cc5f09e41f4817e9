//! Shared helpers for the integration tests: a gateway on 127.0.0.1:0 over an
//! embedded broker, unique topics, a gRPC client, and a consumer that reads
//! back what the gateway wrote.
//!
//! With `KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS` set, the gateways produce to
//! that Kafka instead (CI runs the suite a second time against a separate
//! broker implementation), and topics are created through the Kafka admin
//! API before use. Tests that need the embedded broker's fault injection
//! (error injection, broker down, round-trip time) start their gateway with
//! [`start_gateway_embedded`], on an embedded broker of their own in every
//! suite; [`TestGateway::embedded`] fails loudly on an external broker.

#![allow(dead_code)]

pub mod binary;
pub mod invariants;
pub mod kafka;
pub mod pki;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{
    self, Header, ProduceRequest, ProduceResponse, Record, RecordMetadata, record_result,
};
use kafka_gateway::{Config, EmbeddedBroker, Error, Listeners, Tracing};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// Partitions of topics the embedded broker creates on first use.
pub const PARTITIONS: i32 = 6;

/// The variable naming an external Kafka for the integration tests.
pub const EXTERNAL_KAFKA: &str = "KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS";

/// The Kafka the tests produce to.
#[derive(Clone)]
pub enum TestKafka {
    /// An embedded broker of this test process.
    Embedded(Arc<EmbeddedBroker>),
    /// The broker named by [`EXTERNAL_KAFKA`].
    External(String),
}

impl TestKafka {
    /// The external broker when one is configured, else a new embedded one.
    pub fn start() -> Self {
        match std::env::var(EXTERNAL_KAFKA) {
            Ok(servers) if !servers.is_empty() => TestKafka::External(servers),
            _ => TestKafka::Embedded(Arc::new(
                EmbeddedBroker::start(1, PARTITIONS).expect("embedded broker starts"),
            )),
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        match self {
            TestKafka::Embedded(broker) => broker.bootstrap_servers(),
            TestKafka::External(servers) => servers,
        }
    }

    /// The embedded broker, for tests that inject faults into it.
    pub fn embedded(&self) -> &Arc<EmbeddedBroker> {
        match self {
            TestKafka::Embedded(broker) => broker,
            TestKafka::External(servers) => panic!(
                "this test injects faults into the embedded broker and cannot run against \
                 {servers} ({EXTERNAL_KAFKA}); skip it there"
            ),
        }
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            TestKafka::Embedded(broker) => broker
                .create_topic(topic, partitions)
                .await
                .expect("the embedded broker creates the topic"),
            TestKafka::External(servers) => create_external_topic(servers, topic, partitions).await,
        }
    }

    /// A new topic name with [`PARTITIONS`] partitions, created first
    /// unless a gateway that creates topics on first use will.
    pub async fn topic(&self, prefix: &str) -> String {
        let topic = rand_topic(prefix);
        self.create_topic(&topic, PARTITIONS).await;
        topic
    }
}

/// Creates a topic through the Kafka admin API and waits until its metadata
/// shows every partition.
async fn create_external_topic(servers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics request");
    for result in results {
        if let Err((name, code)) = result {
            panic!("creating topic {name} on {servers}: {code}");
        }
    }
    let servers = servers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()
            .expect("metadata client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
            if let Ok(metadata) = metadata
                && metadata.topics()[0].error().is_none()
                && metadata.topics()[0].partitions().len() == partitions as usize
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not appear on {servers}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The HTTP listener of metrics and probes.
    pub metrics_addr: SocketAddr,
    pub kafka: TestKafka,
    /// Whether the gateway creates topics on first use.
    provisions: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

/// Starts a gateway with extra command-line `args`, over a new embedded
/// broker (creating topics on first use, as `serve` does), or over the
/// external Kafka when one is configured.
pub async fn start_gateway(args: &[&str]) -> TestGateway {
    start_gateway_on(TestKafka::start(), true, args).await
}

/// Starts a gateway over an embedded broker of its own, whatever
/// [`EXTERNAL_KAFKA`] says: for tests that inject faults into the broker,
/// which only the embedded one can do. They run the same in every suite.
pub async fn start_gateway_embedded(args: &[&str]) -> TestGateway {
    let broker = EmbeddedBroker::start(1, PARTITIONS).expect("embedded broker starts");
    start_gateway_on(TestKafka::Embedded(Arc::new(broker)), true, args).await
}

/// Starts a gateway that sees its Kafka as an external cluster: it never
/// creates topics.
pub async fn start_gateway_plain(args: &[&str]) -> TestGateway {
    start_gateway_on(TestKafka::start(), false, args).await
}

/// Starts a gateway over `kafka`. With `provision`, a gateway on an embedded
/// broker creates topics on first use; an external Kafka is left to its own
/// rules.
pub async fn start_gateway_on(kafka: TestKafka, provision: bool, args: &[&str]) -> TestGateway {
    let embedded = match &kafka {
        TestKafka::Embedded(broker) if provision => Some(broker.clone()),
        _ => None,
    };
    let mut argv = vec!["kafka-gateway"];
    if embedded.is_none() {
        argv.extend(["--bootstrap-servers", kafka.bootstrap_servers()]);
    }
    argv.extend(["--metrics-listen", "127.0.0.1:0"]);
    argv.extend(args);
    let config = Config::try_parse_from(argv).expect("valid test configuration");
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        metrics: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let addr = listeners.grpc.local_addr().unwrap();
    let metrics_addr = listeners.metrics.as_ref().unwrap().local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let provisions = embedded.is_some();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let task = tokio::spawn(kafka_gateway::run(
        listeners,
        config,
        embedded,
        Tracing::disabled(),
        stopped,
    ));
    TestGateway {
        addr,
        metrics_addr,
        kafka,
        provisions,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

impl TestGateway {
    pub async fn client(&self) -> ProducerClient<Channel> {
        ProducerClient::connect(format!("http://{}", self.addr))
            .await
            .expect("the gateway accepts connections")
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.kafka.bootstrap_servers()
    }

    /// The embedded broker, for tests that inject faults into it; panics on
    /// an external Kafka.
    pub fn embedded(&self) -> &Arc<EmbeddedBroker> {
        self.kafka.embedded()
    }

    /// A new topic for this gateway, with [`PARTITIONS`] partitions.
    pub async fn topic(&self, prefix: &str) -> String {
        if self.provisions {
            rand_topic(prefix)
        } else {
            self.kafka.topic(prefix).await
        }
    }

    /// Asks the gateway to shut down without waiting for it.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the gateway down and waits for it to finish draining. Returns
    /// the broker, which outlives the gateway, so what was written can still
    /// be read.
    pub async fn stop(mut self) -> Result<TestKafka, Error> {
        self.request_stop();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the gateway stops within a minute")
            .expect("the gateway task does not panic")?;
        Ok(self.kafka.clone())
    }
}

/// A topic name no other test uses.
pub fn rand_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record with a key and a value.
pub fn record(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Record {
    Record {
        key: Some(Bytes::from(key.into())),
        value: Some(Bytes::from(value.into())),
        ..Record::default()
    }
}

pub fn header(key: &str, value: &[u8]) -> Header {
    Header {
        key: key.into(),
        value: Bytes::copy_from_slice(value),
    }
}

pub fn batch(batch_id: u64, topic: &str, records: Vec<Record>) -> ProduceRequest {
    ProduceRequest {
        batch_id,
        topic: topic.into(),
        records,
        compact_acks: false,
        skip_dead_letter: false,
        transactional_id: String::new(),
        commit: false,
    }
}

/// Sends `requests` on one `Produce` stream and returns everything received
/// until the server ended the stream: responses and, last, a status if the
/// stream ended with one.
pub async fn produce_stream(
    client: &mut ProducerClient<Channel>,
    requests: Vec<ProduceRequest>,
) -> Vec<Result<ProduceResponse, Status>> {
    let (tx, rx) = mpsc::channel(8);
    let sender = tokio::spawn(async move {
        for request in requests {
            if tx.send(request).await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    match client.produce(ReceiverStream::new(rx)).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => out.push(Ok(response)),
                    Ok(None) => break,
                    Err(status) => {
                        out.push(Err(status));
                        break;
                    }
                }
            }
        }
        Err(status) => out.push(Err(status)),
    }
    sender.abort();
    out
}

/// The metadata of an ok result; panics with the error otherwise.
pub fn ok(result: &proto::RecordResult) -> &RecordMetadata {
    match &result.result {
        Some(record_result::Result::Ok(meta)) => meta,
        other => panic!("expected an ok result, got {other:?}"),
    }
}

/// Every record's ack across `responses`, in order; panics on a stream
/// status or a record error.
pub fn all_acks(responses: &[Result<ProduceResponse, Status>]) -> Vec<RecordMetadata> {
    responses
        .iter()
        .flat_map(|r| {
            r.as_ref()
                .expect("no stream error")
                .results
                .iter()
                .map(ok)
                .cloned()
        })
        .collect()
}

/// The error of a failed result; panics otherwise.
pub fn err(result: &proto::RecordResult) -> &proto::RecordError {
    match &result.result {
        Some(record_result::Result::Error(error)) => error,
        other => panic!("expected an error result, got {other:?}"),
    }
}

/// Checks that a result is an error of `code` whose message contains
/// `needle`, and returns the error.
pub fn assert_error<'a>(
    result: &'a proto::RecordResult,
    code: proto::ErrorCode,
    needle: &str,
) -> &'a proto::RecordError {
    let error = err(result);
    assert_eq!(error.code, code as i32, "{}", error.message);
    assert!(
        error.message.contains(needle),
        "{:?} lacks {needle:?}",
        error.message
    );
    error
}

/// Opens a `Produce` stream fed with `requests`, whose request side stays
/// open after the last one, as a client that has not finished. Abort the
/// returned task to cancel like a client that goes away.
pub async fn open_stream(
    client: &mut ProducerClient<Channel>,
    requests: Vec<ProduceRequest>,
) -> (tonic::Streaming<ProduceResponse>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(2);
    let feeder = tokio::spawn(async move {
        for request in requests {
            if tx.send(request).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let responses = client
        .produce(ReceiverStream::new(rx))
        .await
        .expect("the gateway accepts the stream")
        .into_inner();
    (responses, feeder)
}

/// A record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

impl<M: Message> From<&M> for Consumed {
    fn from(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Consumed {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        }
    }
}

/// How long reading goes on past the high watermarks, with nothing new
/// arriving, before the end is taken as reached: some brokers (tansu 0.6)
/// report watermarks short of the end.
const READ_SETTLE: Duration = Duration::from_millis(700);

/// Reads every partition of `topic` from the beginning to its end: past the
/// high watermarks taken once the caller is done writing, and past
/// `expected` records, until nothing more arrives for a moment (keep tests
/// under the embedded broker's retention: 5 MiB or 100,000 records per
/// partition). Panics after 30 s. Sorted by partition, then offset.
pub async fn consume(bootstrap_servers: &str, topic: &str, expected: usize) -> Vec<Consumed> {
    let bootstrap_servers = bootstrap_servers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || consume_blocking(&bootstrap_servers, &topic, expected))
        .await
        .unwrap()
}

fn consume_blocking(bootstrap_servers: &str, topic: &str, expected: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", "kafka-gateway-tests")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = metadata.topics()[0].partitions().len();
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to read and the high watermark.
    let mut ends = Vec::new();
    for partition in 0..partitions as i32 {
        let high = kafka::watermark(&consumer, topic, partition);
        ends.push((0i64, high));
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        let at_end = ends.iter().all(|&(next, high)| next >= high);
        if at_end && out.len() >= expected && idle_since.elapsed() >= READ_SETTLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read {} of {expected} records from {topic} in 30 s",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        idle_since = Instant::now();
        let message = message.expect("consume");
        let entry = &mut ends[message.partition() as usize];
        entry.0 = entry.0.max(message.offset() + 1);
        out.push(Consumed::from(&message));
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// Finds the consumed record stored where an ack says.
pub fn at<'a>(consumed: &'a [Consumed], meta: &RecordMetadata) -> &'a Consumed {
    consumed
        .iter()
        .find(|c| c.partition == meta.partition && c.offset == meta.offset)
        .unwrap_or_else(|| {
            panic!(
                "nothing stored at partition {} offset {}",
                meta.partition, meta.offset
            )
        })
}

/// Checks that `consumed` holds exactly what `record` asked for.
pub fn assert_stored(consumed: &Consumed, record: &Record) {
    assert_eq!(consumed.key.as_deref(), record.key.as_deref(), "key");
    assert_eq!(consumed.value.as_deref(), record.value.as_deref(), "value");
    let headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.to_vec()))
        .collect();
    assert_eq!(consumed.headers, headers, "headers, in order");
    if let Some(timestamp) = record.timestamp_ms {
        assert_eq!(consumed.timestamp_ms, Some(timestamp), "timestamp");
    }
}

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the HTTP listener accepts connections");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after 30 s
/// naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the metric sample `series` (name and labels, exactly as
/// exposed) in an OpenMetrics text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}
