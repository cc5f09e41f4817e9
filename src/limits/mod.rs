//! Admission limits, in one place with their metrics: how many connections
//! (`--max-connections`), how many concurrent calls (`--max-streams`), and
//! how many bytes of batches read and not yet answered over all streams
//! (`--max-total-in-flight-bytes`, see [`budget`]). HTTP/2's own
//! `max_concurrent_streams` (`--max-streams-per-connection`) is set on the
//! server and enforced by the HTTP/2 layer.
//!
//! A connection over its cap is still served, but only to answer each of its
//! calls with `RESOURCE_EXHAUSTED` naming the flag to raise, and closed soon
//! after; a call over the stream cap gets the same. A spent budget refuses
//! nothing: it stops reading, and HTTP/2 flow control holds clients back.
//!
//! Every limit shows on `/metrics` as `kafka_gateway_limit_current`,
//! `kafka_gateway_limit_max`, `kafka_gateway_limit_refused_total` and
//! `kafka_gateway_limit_waits_total`, labelled `limit`.

pub mod budget;
mod layer;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

pub use budget::{BATCH_OVERHEAD, Budget, BudgetBody, Reservation, Reservations};
pub use layer::AdmissionLayer;

/// The caps, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_connections: usize,
    pub max_streams: usize,
    pub max_streams_per_connection: u32,
    pub max_total_in_flight_bytes: usize,
    /// The largest message the decoder accepts; nothing is reserved for a
    /// larger one, which is refused anyway.
    pub max_batch_bytes: usize,
}

/// The shared admission state.
pub struct Admission {
    pub caps: Caps,
    /// Open connections.
    pub connections: Slots,
    /// Calls being served, over every connection.
    pub streams: Slots,
    /// Bytes of batches read and not yet answered.
    pub budget: Budget,
    /// TLS handshakes that failed (no or a bad client certificate, a
    /// plaintext client, a client that does not trust ours).
    pub tls_failures: Counter,
}

impl Admission {
    pub fn new(caps: Caps, metrics: &Metrics) -> Self {
        metrics
            .limit_max("streams_per_connection")
            .set(i64::from(caps.max_streams_per_connection));
        metrics
            .limit_max("total_in_flight_bytes")
            .set(caps.max_total_in_flight_bytes as i64);
        Self {
            connections: Slots::new(
                "connections",
                "--max-connections / KAFKA_GATEWAY_MAX_CONNECTIONS",
                caps.max_connections,
                metrics,
            ),
            streams: Slots::new(
                "streams",
                "--max-streams / KAFKA_GATEWAY_MAX_STREAMS",
                caps.max_streams,
                metrics,
            ),
            budget: Budget::new(
                caps.max_total_in_flight_bytes,
                metrics.limit_current("total_in_flight_bytes"),
                metrics.limit_waits("total_in_flight_bytes"),
            ),
            tls_failures: metrics.auth_failures("tls_handshake"),
            caps,
        }
    }
}

/// A counted resource with a cap.
pub struct Slots {
    /// What is counted, for messages.
    what: &'static str,
    /// The option that raises the cap, for messages.
    flag: &'static str,
    used: Arc<AtomicUsize>,
    max: usize,
    current: Gauge,
    refused: Counter,
}

impl Slots {
    fn new(what: &'static str, flag: &'static str, max: usize, metrics: &Metrics) -> Self {
        metrics.limit_max(what).set(max as i64);
        Self {
            what,
            flag,
            used: Arc::default(),
            max,
            current: metrics.limit_current(what),
            refused: metrics.limit_refused(what),
        }
    }

    /// A slot, or the message of the refusal when all are taken (counted as
    /// refused).
    pub fn try_take(&self) -> Result<Slot, String> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            });
        match taken {
            Ok(_) => {
                self.current.inc();
                Ok(Slot {
                    used: self.used.clone(),
                    current: self.current.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                Err(format!(
                    "the gateway is serving {} {}, its limit ({}); retry with backoff, \
                     reach another replica, or raise the limit",
                    self.max, self.what, self.flag
                ))
            }
        }
    }

    /// Slots taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One taken slot; given back when dropped.
pub struct Slot {
    used: Arc<AtomicUsize>,
    current: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
        self.current.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_over_the_cap_and_name_the_flag() {
        let metrics = Metrics::new();
        let slots = Slots::new("streams", "--max-streams", 2, &metrics);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        let refusal = slots.try_take().err().unwrap();
        assert!(refusal.contains("2 streams") && refusal.contains("--max-streams"));
        drop(a);
        assert!(slots.try_take().is_ok());
        let text = metrics.encode();
        for line in [
            r#"kafka_gateway_limit_current{limit="streams"} 1"#,
            r#"kafka_gateway_limit_max{limit="streams"} 2"#,
            r#"kafka_gateway_limit_refused_total{limit="streams"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
