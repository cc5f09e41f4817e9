//! Health: one state, shown on gRPC health checking (`grpc.health.v1`) and on
//! the HTTP probes `/healthz` (live) and `/readyz` (ready).
//!
//! - `starting`: the producer has not reached a broker yet. Live, not ready.
//! - `serving`: ready.
//! - `draining`: shutdown began. Live, not ready.
//! - `failed`: librdkafka reported a fatal error (the idempotent producer
//!   cannot go on); every record fails until the process restarts. Neither
//!   live nor ready, so an orchestrator restarts it.

use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::producer_server::SERVICE_NAME;
use crate::shutdown;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Serving,
    Draining,
    Failed(String),
}

/// The process's health; cheap to clone.
#[derive(Clone)]
pub struct Health {
    state: Arc<watch::Sender<State>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::Starting)),
        }
    }

    /// The producer reached a broker. Ignored once draining or failed.
    pub fn serving(&self) {
        self.state.send_if_modified(|state| {
            let change = *state == State::Starting;
            if change {
                *state = State::Serving;
            }
            change
        });
    }

    /// Shutdown began. Ignored once failed.
    pub fn draining(&self) {
        self.state.send_if_modified(|state| {
            let change = matches!(state, State::Starting | State::Serving);
            if change {
                *state = State::Draining;
            }
            change
        });
    }

    /// The producer cannot go on.
    pub fn failed(&self, reason: String) {
        self.state.send_replace(State::Failed(reason));
    }

    /// `Ok` when the process should keep running, else why not.
    pub fn live(&self) -> Result<(), String> {
        match &*self.state.borrow() {
            State::Failed(reason) => Err(format!(
                "fatal producer error, restart the gateway: {reason}"
            )),
            _ => Ok(()),
        }
    }

    /// `Ok` when the gateway should get traffic, else why not.
    pub fn ready(&self) -> Result<(), String> {
        match &*self.state.borrow() {
            State::Serving => Ok(()),
            State::Starting => {
                Err("starting: the producer has not reached a Kafka broker yet".into())
            }
            State::Draining => Err("draining: the gateway is shutting down".into()),
            State::Failed(reason) => Err(format!(
                "fatal producer error, restart the gateway: {reason}"
            )),
        }
    }

    /// Mirrors every change on gRPC health checking, for the whole server
    /// (`""`) and for `kafka_gateway.v1.Producer`, until `shutdown`.
    ///
    /// At shutdown, watchers see NOT_SERVING and then their `Watch` stream
    /// ends, so that an open watch does not hold the server's graceful
    /// shutdown until `--shutdown-timeout`.
    pub async fn report(&self, mut reporter: HealthReporter, mut shutdown: shutdown::Signal) {
        let mut changes = self.state.subscribe();
        loop {
            let status = match self.ready() {
                Ok(()) if !shutdown.is_requested() => ServingStatus::Serving,
                _ => ServingStatus::NotServing,
            };
            for service in ["", SERVICE_NAME] {
                reporter.set_service_status(service, status).await;
            }
            if shutdown.is_requested() {
                for service in ["", SERVICE_NAME] {
                    reporter.clear_service_status(service).await;
                }
                return;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = shutdown.requested() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_move_forward_only() {
        let health = Health::new();
        assert!(health.live().is_ok());
        assert!(health.ready().unwrap_err().contains("starting"));
        health.serving();
        assert!(health.ready().is_ok());
        health.draining();
        health.serving();
        assert!(health.ready().unwrap_err().contains("draining"));
        assert!(health.live().is_ok());
        health.failed("Fatal error".into());
        health.draining();
        assert!(health.live().unwrap_err().contains("restart the gateway"));
        assert!(health.ready().is_err());
    }
}
