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

#![deny(unsafe_code)]

pub mod config;
pub mod embedded;
pub mod error;
pub mod grpc;
pub mod produce;
pub mod shutdown;

/// The generated protobuf and gRPC types of `kafka_gateway.v1`.
pub mod proto {
    tonic::include_proto!("kafka_gateway.v1");

    /// The encoded descriptor set of the proto files, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/kafka_gateway_descriptor.bin"));
}

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

pub use config::Config;
pub use embedded::EmbeddedBroker;
pub use error::Error;

use produce::kafka::KafkaSender;

/// TCP keepalive on client connections.
const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the gateway on `listener` until `shutdown` resolves, then drains.
///
/// Kafka is `embedded` when given (its topics are created on first use with
/// the configured partition count), else `config.bootstrap_servers`.
///
/// Shutdown: new streams are refused, open streams stop reading, answer every
/// batch they read and end with UNAVAILABLE; then the producer is flushed.
/// All of it within `config.shutdown_timeout`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    embedded: Option<Arc<EmbeddedBroker>>,
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
    let sender = Arc::new(KafkaSender::new(
        &config.client_config(&bootstrap_servers),
        embedded,
    )?);

    let (trigger, signal) = shutdown::channel();
    let tasks = TaskTracker::new();
    let service = grpc::ProducerService::new(
        sender.clone(),
        config.stream_limits(),
        signal.clone(),
        tasks.clone(),
    );
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| Error::Config(format!("invalid descriptor set: {err}")))?;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, %bootstrap_servers, "gRPC server listening");
    // No Nagle: acks are small and latency-sensitive. Keepalive finds dead
    // clients whose streams would otherwise hold their windows.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let mut server_signal = signal.clone();
    let server = tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(service.into_server(config.max_batch_bytes))
        .serve_with_incoming_shutdown(incoming, async move { server_signal.requested().await });
    let mut server = tokio::spawn(server);

    tokio::select! {
        result = &mut server => {
            // The server stopped on its own: nothing to drain.
            return result.map_err(|err| Error::Io(std::io::Error::other(err)))?.map_err(Error::from);
        }
        () = shutdown => {}
    }

    let deadline = Instant::now() + config.shutdown_timeout;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: draining streams");
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
    let in_flight = sender.in_flight_count();
    match sender
        .flush(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        Ok(()) => tracing::info!(in_flight, "producer flushed; bye"),
        Err(err) => tracing::warn!(
            in_flight = sender.in_flight_count(),
            %err,
            "producer flush did not finish; unacknowledged records may be lost"
        ),
    }
    Ok(())
}
