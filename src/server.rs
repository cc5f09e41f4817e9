//! The server: binds, starts the producer, serves gRPC and the HTTP probes,
//! and drains at shutdown.
//!
//! The layers a call passes through, outermost first:
//! 1. [`grpc::listener`]: accepts the connection (TCP options, the
//!    connection cap, its age), and runs the TLS handshake when
//!    `--tls-cert` is set;
//! 2. HTTP/2 (tonic and hyper): keepalive PINGs, `max_concurrent_streams`,
//!    GOAWAY at the connection's maximum age;
//! 3. [`grpc::trace::TraceLayer`]: the call's SERVER span, under the
//!    caller's trace, ended with the call's status, refused or not;
//! 4. [`grpc::auth::AuthLayer`]: who is calling (a client certificate
//!    verified in the TLS handshake, a JWT, an API key), or
//!    UNAUTHENTICATED;
//! 5. [`limits::AdmissionLayer`]: refuses calls over the caps and charges the
//!    memory budget for each message before it is buffered;
//! 6. the services: `kafka_gateway.v1.Producer` ([`grpc`]), health and
//!    reflection; the send path holds each caller to the authorization
//!    policy, its quota and the principal header ([`produce::caller`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::auth::Security;
use crate::grpc::auth::AuthLayer;
use crate::grpc::listener::{self, ConnOptions};
use crate::grpc::trace::TraceLayer;
use crate::health::Health;
use tower_layer::Layer as _;

use crate::limits::{Admission, AdmissionLayer};
use crate::metrics::Metrics;
use crate::produce::Callers;
use crate::produce::kafka::KafkaSender;
use crate::produce::transactions::Transactions;
use crate::{Config, EmbeddedBroker, Error, Tracing, admin, grpc, proto, shutdown};

/// TCP keepalive on client connections: a backstop below HTTP/2's PINGs.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// At shutdown, how long connections may take to deliver the responses
/// their streams left once every stream has finished.
const CONNECTION_CLOSE_GRACE: Duration = Duration::from_secs(5);
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
    // Certificates, keys, the JWKS and the policy: a bad one stops the start.
    let security = Security::load(&config.security)
        .await
        .map_err(Error::Config)?;
    crate::frontdoor::log(&config);
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();
    let tracing = Arc::new(tracing.with_record_events(config.trace_records));
    let sender = Arc::new(KafkaSender::new(
        &config.client_config(&bootstrap_servers),
        embedded,
        metrics.clone(),
        health.clone(),
    )?);

    let (trigger, signal) = shutdown::channel();
    let tasks = TaskTracker::new();
    let admission = Arc::new(Admission::new(config.caps(), &metrics));
    let service = grpc::ProducerService::new(
        sender.clone(),
        config.stream_limits(),
        signal.clone(),
        tasks.clone(),
        metrics.clone(),
        tracing.clone(),
        Callers::new(
            security.policy.clone(),
            security.quotas.clone(),
            security.principal_header.clone(),
        ),
        Transactions::new(sender.clone(), config.txn_limits()),
    )
    .with_revocation(grpc::revocation::Revocation::new(
        security.authenticator.clone(),
        Callers::new(
            security.policy.clone(),
            security.quotas.clone(),
            security.principal_header.clone(),
        ),
        security.reloader.subscribe(),
    ));
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
    let recovery = background.spawn(sender.clone().recover_forever());
    // Re-reads certificates, keys and the policy on change and on SIGHUP.
    let reloader = (!security.reloader.is_empty()).then(|| {
        let mut signal = signal.clone();
        security
            .reloader
            .clone()
            .spawn(async move { signal.requested().await })
    });
    let connect = background.spawn({
        let (sender, health) = (sender.clone(), health.clone());
        let dead_letter_topic = config.dead_letter_topic.clone();
        async move {
            sender.wait_for_brokers(CONNECT_RETRY).await;
            if let Some(topic) = dead_letter_topic {
                sender.check_dead_letter_topic(&topic).await;
            }
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
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service.into_server(config.max_batch_bytes))
        .prepare();
    let stopping = listener::Stopping::default();
    // The layers, outermost first: the call's span, who is calling, then
    // whether there is room for the call, then the services.
    let layered = TraceLayer::new(tracing.clone()).layer(
        AuthLayer::new(security.authenticator.clone(), metrics.clone())
            .layer(AdmissionLayer::new(admission.clone()).layer(routes)),
    );
    let mut server = tokio::spawn(listener::serve(
        listeners.grpc,
        security.tls.clone(),
        layered,
        admission,
        ConnOptions {
            tcp_keepalive: TCP_KEEPALIVE,
            http2_keepalive_interval: config.http2_keepalive_interval,
            http2_keepalive_timeout: config.http2_keepalive_timeout,
            max_streams_per_connection: config.max_streams_per_connection,
            max_age: config.max_connection_age,
            max_age_grace: config.max_connection_age_grace,
        },
        stopping.clone(),
    ));

    let served = tokio::select! {
        result = &mut server => {
            // The server stopped on its own: nothing to drain.
            result.map_err(|err| Error::Io(std::io::Error::other(err)))
        }
        () = shutdown => Ok(()),
    };

    let deadline = Instant::now() + config.shutdown_timeout;
    if served.is_ok() {
        tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: draining streams");
        health.draining();
        connect.abort();
        // Streams stop reading and answer what they read; connections get
        // GOAWAY and close once their streams are done.
        trigger.trigger();
        stopping.drain.cancel();
        tasks.close();
        let drained = tokio::time::timeout_at(deadline, tasks.wait()).await;
        if drained.is_err() {
            tracing::warn!("streams did not drain within --shutdown-timeout; closing them");
        }
        // Every stream has answered (or given up on a client that does not
        // read): connections get a moment to deliver the last responses,
        // then are closed whatever is left unread on them.
        let closing = deadline.min(Instant::now() + CONNECTION_CLOSE_GRACE);
        if tokio::time::timeout_at(closing, &mut server).await.is_err() {
            tracing::debug!("closing connections with responses left unread");
            stopping.force.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut server).await;
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
    recovery.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    report.abort();
    background.close();
    if tokio::time::timeout_at(deadline, background.wait())
        .await
        .is_err()
    {
        tracing::warn!("the metrics listener did not stop within --shutdown-timeout");
    }
    tracing::info!("bye");
    crate::rdlog::silence();
    served
}

/// Time left until `deadline`, at least a moment so a last flush is tried.
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100))
}
