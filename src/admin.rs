//! The HTTP listener of `--metrics-listen`: `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for orchestrator probes, and `/`, a plain-text
//! index of those (also the body of a 404), for whoever opens the address
//! in a browser or with curl.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::metrics::{self, Metrics};

/// The paths served, one a line.
const INDEX: &str = "kafka-gateway\n\
/metrics  Prometheus metrics (text exposition format)\n\
/healthz  liveness: 200 unless the gateway must be restarted\n\
/readyz   readiness: 200 once the Kafka brokers answer, 503 while starting or draining\n";

#[derive(Clone)]
struct Admin {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .route("/", get(|| async { INDEX }))
        .fallback(|| async { (StatusCode::NOT_FOUND, INDEX) })
        .with_state(Admin { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(admin): State<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        admin.metrics.encode(),
    )
        .into_response()
}

async fn live(State(admin): State<Admin>) -> Response {
    probe(admin.health.live(), "live")
}

async fn ready(State(admin): State<Admin>) -> Response {
    probe(admin.health.ready(), "ready")
}

fn probe(result: Result<(), String>, ok: &'static str) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, format!("{ok}\n")).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}
