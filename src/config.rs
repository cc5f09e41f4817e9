//! The gateway's configuration: every option is a flag and a `KAFKA_GATEWAY_*`
//! environment variable, and `--help` is the manual.
//!
//! Producer settings map onto librdkafka properties in
//! [`Config::client_config`]; `-X key=value` passes any other librdkafka
//! property through, applied last, and is refused when it would override one
//! of the first-class options below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rdkafka::ClientConfig;

use crate::auth::SecurityArgs;
use crate::error::Error;
use crate::limits::{AdmissionArgs, BATCH_OVERHEAD, Caps};
use crate::produce::stream::TxnTimeouts;
use crate::produce::transactions::TxnLimits;
use crate::produce::{DeadLetter, Limits, StreamLimits};
use crate::units::{parse_duration, parse_size};

/// Loopback by default: a gateway on the embedded broker is a development
/// tool. Set `0.0.0.0:50051` (the container image does) to serve others.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where the embedded broker is reached: Kafka's usual port, so that the
/// read-back commands a user keeps (`kcat -b 127.0.0.1:9092 ...`) work
/// after every restart. When it is taken, a free port is used and logged.
pub const DEFAULT_EMBEDDED_LISTEN: &str = "127.0.0.1:9092";
/// Partitions of topics the embedded broker creates on first use: enough to
/// see keyed records spread out.
pub const DEFAULT_EMBEDDED_PARTITIONS: i32 = 6;
/// Records one stream may have in flight. With 100-byte records this keeps
/// a fast broker busy while bounding memory per stream.
pub const DEFAULT_MAX_IN_FLIGHT_RECORDS: usize = 10_000;
/// Payload bytes one stream may have in flight.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: &str = "16MiB";
/// Payload bytes (key + value + headers) of one record. Kafka brokers accept
/// about 1 MB per batch by default (`message.max.bytes`).
pub const DEFAULT_MAX_RECORD_BYTES: &str = "1MiB";
/// Records one batch may hold.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 10_000;
/// Size of one encoded `ProduceRequest`: the gRPC message size limit. A
/// batch is decoded whole before its records enter the window, so this also
/// bounds what one stream holds beyond the window; as large as the window.
pub const DEFAULT_MAX_BATCH_BYTES: &str = "16MiB";
/// librdkafka's default is 5 ms since 1.9; said here so it is explicit.
pub const DEFAULT_LINGER_MS: u64 = 5;
/// Places keyed records where the Java client would (librdkafka's own default,
/// `consistent_random`, hashes differently).
pub const DEFAULT_PARTITIONER: &str = "murmur2_random";
/// How long a topic missing from the brokers' metadata is waited for before
/// its records fail with UNKNOWN_TOPIC (librdkafka's
/// `topic.metadata.propagation.max.ms`, 30 s by default). Acks are released
/// in order, so every later record of the stream waits that long too; a
/// topic just created elsewhere reaches every broker well within this.
/// `-X topic.metadata.propagation.max.ms=...` overrides.
pub const TOPIC_PROPAGATION_MS: u32 = 5_000;
/// How often librdkafka reports the statistics the metrics show, when the
/// metrics listener is on (`-X statistics.interval.ms=...` overrides).
pub const STATISTICS_INTERVAL_MS: u32 = 5_000;
/// How long a graceful shutdown may take before the process exits anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";
/// Open connections. Each may buffer up to 1 MiB of HTTP/2 receive window
/// beyond the memory budget, so this bounds that share too.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// Concurrent calls over all connections: enough for 10,000 mostly idle
/// streams, each of which costs a few KiB when idle.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// HTTP/2 `max_concurrent_streams` of each connection (tonic leaves it
/// unlimited): one client cannot take every stream slot on one connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 1_000;
/// Bytes of batches read and not yet answered, over all streams: 16
/// streams each holding a full default window.
pub const DEFAULT_MAX_TOTAL_IN_FLIGHT_BYTES: &str = "256MiB";
/// HTTP/2 PING interval on idle connections: a vanished peer is found in
/// under a minute instead of TCP's hours.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: &str = "30s";
/// How long a PING may go unanswered before the connection is closed.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT: &str = "20s";
/// After `--max-connection-age`, how long the connection may stay open while
/// its streams answer what they read.
pub const DEFAULT_MAX_CONNECTION_AGE_GRACE: &str = "30s";
/// How long a response may wait for its client to read it: longer than any
/// pause a live client makes, short enough to free a stuck stream.
pub const DEFAULT_STALL_TIMEOUT: &str = "60s";
pub const DEFAULT_MAX_TRANSACTIONAL_STREAMS: usize = 100;
pub const DEFAULT_TRANSACTIONAL_IDLE_TIMEOUT: &str = "5m";
pub const DEFAULT_TRANSACTION_CALL_TIMEOUT: &str = "60s";

/// librdkafka's partitioners.
const PARTITIONERS: &[&str] = &[
    "random",
    "consistent",
    "consistent_random",
    "murmur2",
    "murmur2_random",
    "fnv1a",
    "fnv1a_random",
];

/// librdkafka properties owned by a first-class option (or by the gateway
/// itself), with the option to use instead.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "--bootstrap-servers"),
    ("metadata.broker.list", "--bootstrap-servers"),
    ("enable.idempotence", "--enable-idempotence"),
    ("linger.ms", "--linger-ms"),
    ("queue.buffering.max.ms", "--linger-ms"),
    ("compression.type", "--compression"),
    ("compression.codec", "--compression"),
    ("partitioner", "--partitioner"),
    (
        "delivery.report.only.error",
        "nothing: the gateway needs every delivery report to ack records",
    ),
];

/// Serve the `kafka_gateway.v1.Producer` gRPC service.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kafka-gateway serve",
    after_long_help = "Sizes take a plain byte count or a KiB/MiB/GiB (or KB/MB/GB) suffix. \
Durations take ms, s or m. Every option can also be set by the environment variable shown; \
a flag wins over its variable. RUST_LOG sets the log filter (default: info).

Tracing: each call is an OpenTelemetry span (kind SERVER, `kafka_gateway.v1.Producer/Produce`) \
under the caller's W3C trace context, and each batch a span under it (kind PRODUCER, `send`, \
the topic in messaging.destination.name); each record carries a `traceparent` header pointing \
at its batch's span, unless it carries its own, which the span links to. \
Spans go over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4317) or \
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, \
OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_HEADERS and \
OTEL_EXPORTER_OTLP_TIMEOUT apply; https:// endpoints are verified against the system's CAs, \
or OTEL_EXPORTER_OTLP_CERTIFICATE, with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
OTEL_EXPORTER_OTLP_CLIENT_KEY for mutual TLS; OTEL_SDK_DISABLED=true or \
OTEL_TRACES_EXPORTER=none turn it off.

Health: gRPC health checking (grpc.health.v1) reports SERVING once the producer has reached \
a broker and NOT_SERVING while draining; --metrics-listen serves the same on /readyz, and \
/healthz fails only when the producer keeps failing fatally. SIGTERM or Ctrl-C drains: no \
new streams, every batch already read is answered, streams end with UNAVAILABLE, the \
producer is flushed and spans are exported, within --shutdown-timeout.

Security: with --tls-cert/--tls-key the gateway serves TLS only; --tls-client-ca requires \
client certificates. --jwt-jwks and --api-keys accept `authorization: Bearer ...`. A call \
without valid credentials gets UNAUTHENTICATED saying what was wrong (health and reflection \
stay open unless --auth-protect-health). With --authz-policy, a record to a topic the \
caller was not granted gets NOT_AUTHORIZED and is never sent. Quotas slow a caller down \
instead of failing it. Certificates, keys, the JWKS file and the policy are re-read when \
they change and on SIGHUP, without dropping streams; a reload that fails keeps the \
previous state and logs why."
)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "KAFKA_GATEWAY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of the HTTP listener for Prometheus metrics (/metrics) and
    /// the liveness and readiness probes (/healthz, /readyz). Off when
    /// unset.
    #[arg(long, env = "KAFKA_GATEWAY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Kafka brokers to produce to (librdkafka's bootstrap.servers). When
    /// unset, the gateway starts an embedded in-memory broker and logs its
    /// address: for trying things out, never for data you want to keep.
    #[arg(
        long,
        env = "KAFKA_GATEWAY_BOOTSTRAP_SERVERS",
        value_name = "HOST:PORT,..."
    )]
    pub bootstrap_servers: Option<String>,

    /// Partitions of each topic the embedded broker creates on first use.
    #[arg(long, env = "KAFKA_GATEWAY_EMBEDDED_PARTITIONS", default_value_t = DEFAULT_EMBEDDED_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub embedded_partitions: i32,

    /// The embedded broker's address (clients bootstrap there): when that
    /// port is taken, a free one is used and the log says so. Port 0: a
    /// free port.
    #[arg(long, env = "KAFKA_GATEWAY_EMBEDDED_LISTEN", default_value = DEFAULT_EMBEDDED_LISTEN,
          value_name = "ADDR")]
    pub embedded_listen: SocketAddr,

    /// Brokers in the embedded cluster.
    #[arg(long, env = "KAFKA_GATEWAY_EMBEDDED_BROKERS", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=16))]
    pub embedded_brokers: i32,

    /// Records one stream may have in flight (handed to Kafka, ack not yet
    /// sent). When reached, the gateway stops reading that stream.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_IN_FLIGHT_RECORDS", default_value_t = DEFAULT_MAX_IN_FLIGHT_RECORDS,
          value_parser = parse_positive)]
    pub max_in_flight_records: usize,

    /// Payload bytes one stream may have in flight.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_IN_FLIGHT_BYTES", default_value = DEFAULT_MAX_IN_FLIGHT_BYTES,
          value_parser = parse_size, value_name = "SIZE")]
    pub max_in_flight_bytes: usize,

    /// Largest record (key + value + header bytes) accepted; a larger record
    /// gets a RECORD_TOO_LARGE error and is not sent.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_RECORD_BYTES", default_value = DEFAULT_MAX_RECORD_BYTES,
          value_parser = parse_size, value_name = "SIZE")]
    pub max_record_bytes: usize,

    /// Most records in one batch; a larger batch ends the stream with
    /// RESOURCE_EXHAUSTED after the batches before it are answered.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_BATCH_RECORDS", default_value_t = DEFAULT_MAX_BATCH_RECORDS,
          value_parser = parse_positive)]
    pub max_batch_records: usize,

    /// Largest encoded batch (gRPC message) accepted; a larger one ends the
    /// stream with RESOURCE_EXHAUSTED.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_BATCH_BYTES", default_value = DEFAULT_MAX_BATCH_BYTES,
          value_parser = parse_size, value_name = "SIZE")]
    pub max_batch_bytes: usize,

    /// How long librdkafka waits to fill a batch (linger.ms).
    #[arg(long, env = "KAFKA_GATEWAY_LINGER_MS", default_value_t = DEFAULT_LINGER_MS)]
    pub linger_ms: u64,

    /// Compression of produced batches (compression.type).
    #[arg(long, env = "KAFKA_GATEWAY_COMPRESSION", value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Idempotent producer (enable.idempotence): acks=all, no duplicates and
    /// per-partition order kept under retries. Turn off only for brokers
    /// that lack idempotence support.
    #[arg(long, env = "KAFKA_GATEWAY_ENABLE_IDEMPOTENCE", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub enable_idempotence: bool,

    /// How records without a partition are placed (partitioner).
    #[arg(long, env = "KAFKA_GATEWAY_PARTITIONER", default_value = DEFAULT_PARTITIONER,
          value_parser = clap::builder::PossibleValuesParser::new(PARTITIONERS))]
    pub partitioner: String,

    /// Any other librdkafka producer property, e.g. `-X acks=1` or
    /// `-X security.protocol=SASL_SSL`; repeatable. Applied last. In the
    /// environment variable, separate pairs with ';'.
    #[arg(short = 'X', long = "librdkafka-option", env = "KAFKA_GATEWAY_LIBRDKAFKA_OPTIONS",
          value_name = "KEY=VALUE", value_parser = parse_property, value_delimiter = ';')]
    pub librdkafka_options: Vec<(String, String)>,

    /// How long a graceful shutdown (SIGTERM, Ctrl-C) may take: streams stop
    /// reading, answer what they read, and the producer is flushed.
    #[arg(long, env = "KAFKA_GATEWAY_SHUTDOWN_TIMEOUT", default_value = DEFAULT_SHUTDOWN_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// Bytes of batches read and not yet answered, over all streams (each
    /// batch counts its encoded size plus 256 bytes). When reached, streams
    /// stop reading until answers free room, first come first served, and
    /// HTTP/2 flow control holds their clients back. Must hold one
    /// --max-batch-bytes batch.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_TOTAL_IN_FLIGHT_BYTES", default_value = DEFAULT_MAX_TOTAL_IN_FLIGHT_BYTES,
          value_parser = parse_size, value_name = "SIZE")]
    pub max_total_in_flight_bytes: usize,

    /// Open client connections. Calls on a connection over the limit get
    /// RESOURCE_EXHAUSTED naming this option.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_positive)]
    pub max_connections: usize,

    /// Concurrent calls (streams and unary calls) over all connections; one
    /// more gets RESOURCE_EXHAUSTED naming this option. gRPC health checks
    /// are never refused.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS,
          value_parser = parse_positive)]
    pub max_streams: usize,

    /// Concurrent streams on one connection (HTTP/2 max_concurrent_streams):
    /// a client opening more waits for one to end, or gets REFUSED_STREAM.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_STREAMS_PER_CONNECTION", default_value_t = DEFAULT_MAX_STREAMS_PER_CONNECTION,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// Interval of HTTP/2 PINGs to each client; a peer that vanished is
    /// found without waiting for TCP.
    #[arg(long, env = "KAFKA_GATEWAY_HTTP2_KEEPALIVE_INTERVAL", default_value = DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
          value_parser = parse_duration, value_name = "DURATION")]
    pub http2_keepalive_interval: Duration,

    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "KAFKA_GATEWAY_HTTP2_KEEPALIVE_TIMEOUT", default_value = DEFAULT_HTTP2_KEEPALIVE_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub http2_keepalive_timeout: Duration,

    /// Age at which a connection is retired, so that long-lived streams
    /// spread over replicas: the gateway sends HTTP/2 GOAWAY, stops reading
    /// the connection's streams, answers what it read and ends each with
    /// UNAVAILABLE "connection age reached, reconnect". Off when unset.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_CONNECTION_AGE", value_parser = parse_duration,
          value_name = "DURATION")]
    pub max_connection_age: Option<Duration>,

    /// After --max-connection-age, how long before the connection is closed
    /// whatever is left on it.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_CONNECTION_AGE_GRACE", default_value = DEFAULT_MAX_CONNECTION_AGE_GRACE,
          value_parser = parse_duration, value_name = "DURATION")]
    pub max_connection_age_grace: Duration,

    /// How long a response may wait for its client to read it before the
    /// stream is ended with RESOURCE_EXHAUSTED (its records already handed
    /// to Kafka still complete). At shutdown or connection age, 2 s.
    #[arg(long, env = "KAFKA_GATEWAY_STALL_TIMEOUT", default_value = DEFAULT_STALL_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub stall_timeout: Duration,

    /// Topic where the gateway parks records that failed for good (invalid,
    /// too large, unknown topic or partition; refused by the policy only
    /// with --dead-letter-not-authorized): each failed
    /// record is written there, key, value and headers unchanged plus
    /// headers naming the cause, in stream order, and its error result says
    /// where it was parked. The client still gets the error. A batch can opt
    /// out (ProduceRequest.skip_dead_letter). Off when unset.
    #[arg(long, env = "KAFKA_GATEWAY_DEAD_LETTER_TOPIC", value_name = "TOPIC",
          value_parser = parse_topic)]
    pub dead_letter_topic: Option<String>,

    /// Also park records that timed out (ran out of librdkafka's retries,
    /// message.timeout.ms). Such a record may nevertheless be stored in its
    /// own topic (see RecordError.may_be_stored).
    #[arg(
        long,
        env = "KAFKA_GATEWAY_DEAD_LETTER_RETRIABLE",
        requires = "dead_letter_topic"
    )]
    pub dead_letter_retriable: bool,

    /// Also park records the --authz-policy refused (NOT_AUTHORIZED). Off
    /// by default: the caller may not write their topic, and parking them
    /// writes them, with the gateway's own Kafka credentials, to the
    /// dead-letter topic. Parked records count against the caller's quota.
    #[arg(
        long,
        env = "KAFKA_GATEWAY_DEAD_LETTER_NOT_AUTHORIZED",
        requires = "dead_letter_topic"
    )]
    pub dead_letter_not_authorized: bool,

    /// Record every stored record in its batch's span, as an event with its
    /// topic, partition and offset (up to 1,000 a batch), so that the trace
    /// of any offset can be found. Without it a batch span lists each
    /// partition's first and last offset only.
    #[arg(long, env = "KAFKA_GATEWAY_TRACE_RECORDS")]
    pub trace_records: bool,

    /// Transactional streams open at once. Each holds a Kafka producer of
    /// its own (librdkafka runs one transaction per producer); one more
    /// gets RESOURCE_EXHAUSTED naming this option.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_TRANSACTIONAL_STREAMS", default_value_t = DEFAULT_MAX_TRANSACTIONAL_STREAMS,
          value_parser = parse_positive)]
    pub max_transactional_streams: usize,

    /// How long the producer of a transactional id is kept after its
    /// stream ended, for the next stream with that id.
    #[arg(long, env = "KAFKA_GATEWAY_TRANSACTIONAL_IDLE_TIMEOUT", default_value = DEFAULT_TRANSACTIONAL_IDLE_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub transactional_idle_timeout: Duration,

    /// How long starting a transactional producer, or one commit or abort
    /// call, may block. A commit that times out is resumed, up to 3 calls
    /// in all; one still unfinished then has an unknown outcome (its
    /// records get UNAVAILABLE with may_be_stored, see docs/transactions.md). At
    /// shutdown, no call is waited for past half of --shutdown-timeout.
    #[arg(long, env = "KAFKA_GATEWAY_TRANSACTION_TIMEOUT", default_value = DEFAULT_TRANSACTION_CALL_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub transaction_timeout: Duration,

    /// What unauthenticated callers, and each principal, may hold.
    #[command(flatten)]
    pub admission: AdmissionArgs,

    /// TLS, client certificates, tokens, authorization and quotas.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Batch compression codecs librdkafka supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl Config {
    /// The default configuration, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Config::parse_from(["kafka-gateway"])
    }

    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_record_bytes > self.max_in_flight_bytes {
            return Err(Error::Config(format!(
                "--max-record-bytes ({}) is larger than --max-in-flight-bytes ({}); \
                 raise --max-in-flight-bytes or lower --max-record-bytes",
                self.max_record_bytes, self.max_in_flight_bytes
            )));
        }
        if self.max_record_bytes >= self.max_batch_bytes {
            return Err(Error::Config(format!(
                "--max-record-bytes ({}) must be smaller than --max-batch-bytes ({}), \
                 or no batch could carry the largest record",
                self.max_record_bytes, self.max_batch_bytes
            )));
        }
        if self.max_total_in_flight_bytes < self.max_batch_bytes + BATCH_OVERHEAD {
            return Err(Error::Config(format!(
                "--max-total-in-flight-bytes ({}) cannot hold one batch of --max-batch-bytes \
                 ({}) plus {BATCH_OVERHEAD} bytes of bookkeeping; raise it or lower \
                 --max-batch-bytes",
                self.max_total_in_flight_bytes, self.max_batch_bytes
            )));
        }
        self.security.validate().map_err(Error::Config)?;
        for (key, value) in &self.librdkafka_options {
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(owned, _)| owned == key) {
                return Err(Error::Config(format!(
                    "-X {key} conflicts with a first-class option; use {instead}"
                )));
            }
            check_promise(key, value, self.enable_idempotence)?;
        }
        Ok(())
    }

    /// The per-stream bounds.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            window: Limits {
                max_records: self.max_in_flight_records,
                max_bytes: self.max_in_flight_bytes,
            },
            max_batch_records: self.max_batch_records,
            max_record_bytes: self.max_record_bytes,
            stall_timeout: self.stall_timeout,
            dead_letter: self.dead_letter_topic.as_deref().map(|topic| DeadLetter {
                topic: Arc::from(topic),
                retriable: self.dead_letter_retriable,
                not_authorized: self.dead_letter_not_authorized,
            }),
            transactions: TxnTimeouts::new(self.transaction_timeout, self.shutdown_timeout),
        }
    }

    /// The settings of transactional streams.
    pub fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_streams: self.max_transactional_streams,
            idle_timeout: self.transactional_idle_timeout,
            timeout: self.transaction_timeout,
        }
    }

    /// The gateway-wide admission caps.
    pub fn caps(&self) -> Caps {
        Caps {
            max_connections: self.max_connections,
            max_streams: self.max_streams,
            max_streams_per_connection: self.max_streams_per_connection,
            max_total_in_flight_bytes: self.max_total_in_flight_bytes,
            max_batch_bytes: self.max_batch_bytes,
            admission: self.admission,
        }
    }

    /// The librdkafka producer configuration for `bootstrap_servers`.
    pub fn client_config(&self, bootstrap_servers: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("enable.idempotence", self.enable_idempotence.to_string())
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", self.compression.as_str())
            .set("partitioner", &self.partitioner)
            // Let librdkafka take any record the gateway accepts; the broker
            // still applies its own limit. Overridable with -X.
            .set(
                "message.max.bytes",
                (self.max_record_bytes + 64 * 1024)
                    .max(1_000_000)
                    .to_string(),
            )
            .set(
                "topic.metadata.propagation.max.ms",
                TOPIC_PROPAGATION_MS.to_string(),
            );
        if self.metrics_listen.is_some() {
            config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
        }
        for (key, value) in &self.librdkafka_options {
            config.set(key, value);
        }
        config
    }
}

/// Refuses a passthrough property that would let an ok ack mean anything
/// but "stored at this offset", or break the order of a stream.
fn check_promise(key: &str, value: &str, idempotence: bool) -> Result<(), Error> {
    let refuse = |why: &str| Err(Error::Config(format!("-X {key}={value} is refused: {why}")));
    let value = value.trim();
    match key {
        "acks" | "request.required.acks" => {
            let all = value.eq_ignore_ascii_case("all") || value == "-1";
            if value == "0" {
                return refuse(
                    "with acks=0 the broker answers nothing, so every record would be acked ok \
                     with no offset although nothing confirms it was stored; use acks=all (the default)",
                );
            }
            if idempotence && !all {
                return refuse(
                    "the idempotent producer (--enable-idempotence, on by default) needs acks=all; \
                     drop the option, or turn idempotence off and accept that retries may \
                     reorder or duplicate records",
                );
            }
            Ok(())
        }
        "transactional.id" => refuse(
            "one transactional id for the whole process would fence itself; a stream names \
             its own in ProduceRequest.transactional_id, and gets a producer of its own",
        ),
        "queuing.strategy" if !value.eq_ignore_ascii_case("fifo") => {
            refuse("any strategy but fifo sends records out of the order they were received")
        }
        _ => Ok(()),
    }
}

/// A topic name Kafka accepts.
fn parse_topic(s: &str) -> Result<String, String> {
    crate::produce::validate::check_topic(s)?;
    Ok(s.to_owned())
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("{err}")),
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE, e.g. -X acks=all")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("kafka-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_constants() {
        let config = Config::defaults();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.max_in_flight_records, 10_000);
        assert_eq!(config.max_in_flight_bytes, 16 << 20);
        assert_eq!(config.max_record_bytes, 1 << 20);
        assert_eq!(config.max_batch_bytes, 16 << 20);
        assert!(config.enable_idempotence);
        assert_eq!(config.partitioner, "murmur2_random");
        assert_eq!(config.embedded_partitions, 6);
        assert_eq!(config.embedded_listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        config.validate().unwrap();
    }

    #[test]
    fn producer_properties_follow_the_options() {
        let config = parse(&[
            "--linger-ms",
            "20",
            "--compression",
            "zstd",
            "--enable-idempotence",
            "false",
            "-X",
            "acks=1",
            "-X",
            "debug=broker,msg",
        ])
        .unwrap();
        config.validate().unwrap();
        let client = config.client_config("k1:9092,k2:9092");
        assert_eq!(client.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
        assert_eq!(client.get("linger.ms"), Some("20"));
        assert_eq!(client.get("compression.type"), Some("zstd"));
        assert_eq!(client.get("enable.idempotence"), Some("false"));
        assert_eq!(client.get("partitioner"), Some("murmur2_random"));
        assert_eq!(client.get("acks"), Some("1"));
        assert_eq!(
            client.get("debug"),
            Some("broker,msg"),
            "commas stay inside one value"
        );
    }

    #[test]
    fn passthrough_may_not_override_first_class_options() {
        let err = parse(&["-X", "linger.ms=100"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("use --linger-ms"), "{err}");
        let err = parse(&["-X", "bootstrap.servers=x:1"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--bootstrap-servers"), "{err}");
        assert!(parse(&["-X", "novalue"]).is_err());
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        let err = parse(&[
            "--max-record-bytes",
            "2MiB",
            "--max-in-flight-bytes",
            "1MiB",
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("--max-in-flight-bytes"), "{err}");
        assert!(parse(&["--max-in-flight-records", "0"]).is_err());
        assert!(parse(&["--partitioner", "round-robin"]).is_err());
    }
}
