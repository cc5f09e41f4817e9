//! kafka-gateway: a gRPC front door to Apache Kafka.
//!
//! A client opens a `kafka_gateway.v1.Producer/Produce` stream and sends
//! batches of records; it gets back one response per batch, in order, with
//! one result per record: where Kafka stored it, or why it did not.
//!
//! One record's path, one module per step:
//! - [`grpc`]: the tonic service; one task per stream;
//! - [`produce::validate`]: a bad record gets its own error and is never sent;
//! - [`produce::window`] and [`produce::stream`]: the ordered send window.
//!   Records are handed to librdkafka strictly in stream order, at most N
//!   records and B bytes per stream in flight, and acks are released in
//!   order. A full window or a full librdkafka queue stops the reading of
//!   the stream, so HTTP/2 flow control pushes back on the client;
//! - [`produce::kafka`]: the one shared librdkafka producer;
//! - [`embedded`]: an in-memory broker for running without Kafka;
//! - [`shutdown`]: stop reading, answer what was read, flush.
//!
//! Seeing through it: [`telemetry`] (a span per batch), [`metrics`],
//! [`health`], and [`admin`], the HTTP listener serving the last two.
//!
//! The other side of the wire: [`client`], the `produce` command, which
//! streams lines of stdin through a running gateway.
//!
//! Measuring it: [`bench`], the `kafka-gateway bench` subcommand.

#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod bench;
pub mod client;
pub mod config;
pub mod embedded;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod produce;
pub mod shutdown;
pub mod telemetry;

/// The generated protobuf and gRPC types of `kafka_gateway.v1`.
pub mod proto {
    tonic::include_proto!("kafka_gateway.v1");

    /// The encoded descriptor set of the proto files, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/kafka_gateway_descriptor.bin"));
}

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

pub use config::Config;
pub use embedded::EmbeddedBroker;
pub use error::Error;
pub use telemetry::Tracing;

use health::Health;
use metrics::Metrics;
use produce::kafka::KafkaSender;

/// TCP keepalive on client connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often to retry reaching the brokers before the gateway is ready.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// The sockets the gateway serves on.
pub struct Listeners {
    /// The gRPC server.
    pub grpc: TcpListener,
    /// Metrics and HTTP probes, when wanted.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let bind = |addr, option| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|err| Error::Config(format!("cannot listen on {addr} ({option}): {err}")))
        };
        Ok(Self {
            grpc: bind(config.listen, "--listen / KAFKA_GATEWAY_LISTEN").await?,
            metrics: match config.metrics_listen {
                Some(addr) => {
                    Some(bind(addr, "--metrics-listen / KAFKA_GATEWAY_METRICS_LISTEN").await?)
                }
                None => None,
            },
        })
    }
}

/// Serves the gateway until `shutdown` resolves, then drains.
///
/// Kafka is `embedded` when given (its topics are created on first use with
/// the configured partition count), else `config.bootstrap_servers`.
///
/// Shutdown: health goes NOT_SERVING, new streams are refused, open streams
/// stop reading, answer every batch they read and end with UNAVAILABLE; then
/// the producer is flushed and the spans are exported. All of it within
/// `config.shutdown_timeout`.
pub async fn run(
    listeners: Listeners,
    config: Config,
    embedded: Option<Arc<EmbeddedBroker>>,
    tracing: Tracing,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate()?;
    let bootstrap_servers = match (&embedded, &config.bootstrap_servers) {
        (Some(broker), _) => broker.bootstrap_servers().to_owned(),
        (None, Some(servers)) => servers.clone(),
        (None, None) => {
            return Err(Error::Config(
                "no Kafka to produce to: set --bootstrap-servers (KAFKA_GATEWAY_BOOTSTRAP_SERVERS)"
                    .into(),
            ));
        }
    };
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let tracing = Arc::new(tracing);
    let sender = Arc::new(KafkaSender::new(
        &config.client_config(&bootstrap_servers),
        embedded,
        metrics.clone(),
        health.clone(),
    )?);

    let (trigger, signal) = shutdown::channel();
    let tasks = TaskTracker::new();
    let service = grpc::ProducerService::new(
        sender.clone(),
        config.stream_limits(),
        signal.clone(),
        tasks.clone(),
        metrics.clone(),
        tracing.clone(),
    );
    // Reflection describes the gateway's API and health checking, in both
    // protocol versions tools still use.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let invalid = |err| Error::Config(format!("invalid descriptor set: {err}"));
    let reflection_v1 = reflection().build_v1().map_err(invalid)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(invalid)?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let background = TaskTracker::new();
    let report = background.spawn({
        let (health, signal) = (health.clone(), signal.clone());
        async move { health.report(reporter, signal).await }
    });
    let connect = background.spawn({
        let (sender, health) = (sender.clone(), health.clone());
        async move {
            sender.wait_for_brokers(CONNECT_RETRY).await;
            health.serving();
        }
    });
    // The HTTP listener outlives the gRPC server, so probes see the drain.
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = listeners.metrics {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics and probes listening on /metrics, /healthz, /readyz");
        let (metrics, health) = (metrics.clone(), health.clone());
        background.spawn(async move {
            let stopped = async move {
                let _ = admin_stopped.await;
            };
            if let Err(err) = admin::serve(listener, metrics, health, stopped).await {
                tracing::error!(%err, "metrics listener failed");
            }
        });
    }

    let addr = listeners.grpc.local_addr()?;
    tracing::info!(
        %addr,
        %bootstrap_servers,
        tracing = %if tracing.is_enabled() { "otlp" } else { "off" },
        "gRPC server listening"
    );
    // No Nagle: acks are small and latency-sensitive. Keepalive finds dead
    // clients whose streams would otherwise hold their windows.
    let incoming = TcpIncoming::from(listeners.grpc)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let mut server_signal = signal.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service.into_server(config.max_batch_bytes))
        .serve_with_incoming_shutdown(incoming, async move { server_signal.requested().await });
    let mut server = tokio::spawn(server);

    let served = tokio::select! {
        result = &mut server => {
            // The server stopped on its own: nothing to drain.
            result.map_err(|err| Error::Io(std::io::Error::other(err)))?.map_err(Error::from)
        }
        () = shutdown => Ok(()),
    };

    let deadline = Instant::now() + config.shutdown_timeout;
    if served.is_ok() {
        tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: draining streams");
        health.draining();
        connect.abort();
        trigger.trigger();
        tasks.close();
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = (&mut server).await;
            tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("streams did not drain within --shutdown-timeout; closing them");
            server.abort();
        }
    }
    let in_flight = sender.in_flight_count();
    match sender.flush(remaining(deadline)).await {
        Ok(()) => tracing::info!(in_flight, "producer flushed"),
        Err(err) => tracing::warn!(
            in_flight = sender.in_flight_count(),
            %err,
            "producer flush did not finish; unacknowledged records may be lost"
        ),
    }
    tracing.shutdown(remaining(deadline)).await;
    let _ = admin_stop.send(());
    connect.abort();
    report.abort();
    background.close();
    if tokio::time::timeout_at(deadline, background.wait())
        .await
        .is_err()
    {
        tracing::warn!("the metrics listener did not stop within --shutdown-timeout");
    }
    tracing::info!("bye");
    served
}

/// Time left until `deadline`, at least a moment so a last flush is tried.
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100))
}
