//! Admission limits, in one place with their metrics: how many connections
//! (`--max-connections`), how many concurrent calls (`--max-streams`), and
//! how many bytes of batches read and not yet answered over all streams
//! (`--max-total-in-flight-bytes`, see [`budget`]). HTTP/2's own
//! `max_concurrent_streams` (`--max-streams-per-connection`) is set on the
//! server and enforced by the HTTP/2 layer.
//!
//! What a caller who proves nothing can hold is kept apart ([`args`]): a
//! new connection is *unauthenticated* until its first Produce or
//! ProduceBatch call passes authentication; until then it does not count
//! against `--max-connections` but against
//! `--max-unauthenticated-connections`, where a newcomer closes the oldest
//! ([`Unauthenticated`]), so neither idle sockets nor a flood of them from
//! one address keep a client out. Health `Watch` and reflection streams
//! have a cap of their own (`--max-probe-streams`), never take a
//! `--max-streams` slot, and without credentials end after
//! `--unauthenticated-stream-timeout`. Each principal may hold at most
//! `--max-streams-per-principal` calls and `--max-connections-per-principal`
//! connections ([`PerPrincipal`]).
//!
//! A call over a cap gets `RESOURCE_EXHAUSTED` naming the flag to raise. A
//! spent budget refuses nothing: it stops reading, and HTTP/2 flow control
//! holds clients back.
//!
//! Every limit shows on `/metrics` as `kafka_gateway_limit_current`,
//! `kafka_gateway_limit_max`, `kafka_gateway_limit_refused_total` and
//! `kafka_gateway_limit_waits_total`, labelled `limit`.

pub mod args;
pub mod budget;
mod layer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::metrics::Metrics;

pub use args::AdmissionArgs;
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
    /// `--handshake-timeout`, `--max-unauthenticated-connections`,
    /// `--max-probe-streams`, `--unauthenticated-stream-timeout` and the
    /// per-principal caps.
    pub admission: AdmissionArgs,
}

/// The shared admission state.
pub struct Admission {
    pub caps: Caps,
    /// Open connections.
    pub connections: Slots,
    /// Calls being served, over every connection.
    pub streams: Slots,
    /// Connections that have not made an authenticated call yet.
    pub unauthenticated: Arc<Unauthenticated>,
    /// Health `Watch` and reflection streams.
    pub probe_streams: Slots,
    /// Calls per principal.
    pub principal_streams: Arc<PerPrincipal>,
    /// Connections per principal.
    pub principal_connections: Arc<PerPrincipal>,
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
            unauthenticated: Arc::new(Unauthenticated::new(
                caps.admission.max_unauthenticated_connections,
                metrics,
            )),
            probe_streams: Slots::new(
                "probe_streams",
                "--max-probe-streams / KAFKA_GATEWAY_MAX_PROBE_STREAMS",
                caps.admission.max_probe_streams,
                metrics,
            ),
            principal_streams: Arc::new(PerPrincipal::new(
                "streams_per_principal",
                "calls",
                "--max-streams-per-principal / KAFKA_GATEWAY_MAX_STREAMS_PER_PRINCIPAL",
                caps.admission.max_streams_per_principal,
                metrics,
            )),
            principal_connections: Arc::new(PerPrincipal::new(
                "connections_per_principal",
                "connections",
                "--max-connections-per-principal / KAFKA_GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL",
                caps.admission.max_connections_per_principal,
                metrics,
            )),
            budget: Budget::new(
                caps.max_total_in_flight_bytes,
                metrics.limit_current("total_in_flight_bytes"),
                metrics.limit_waits("total_in_flight_bytes"),
            ),
            tls_failures: metrics.auth_failures("tls_handshake"),
            caps,
        }
    }

    /// `--handshake-timeout`.
    pub fn handshake_timeout(&self) -> Duration {
        self.caps.admission.handshake_timeout
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

/// The connections that have not made an authenticated call yet, oldest
/// first, capped by `--max-unauthenticated-connections`: a newcomer over
/// the cap closes the oldest. Eviction rather than refusal, so that no
/// number of silent or unauthenticated sockets, even from one address,
/// keeps a new client from connecting and authenticating; such a client
/// is only ever closed if the cap's worth of newer connections arrive
/// before its first call.
pub struct Unauthenticated {
    max: usize,
    /// Connection ids (increasing) and what closes each.
    waiting: Mutex<VecDeque<(u64, CancellationToken)>>,
    current: Gauge,
    /// Connections closed to make room.
    evicted: Counter,
}

impl Unauthenticated {
    fn new(max: usize, metrics: &Metrics) -> Self {
        const WHAT: &str = "unauthenticated_connections";
        metrics.limit_max(WHAT).set(max as i64);
        Self {
            max,
            waiting: Mutex::default(),
            current: metrics.limit_current(WHAT),
            evicted: metrics.limit_refused(WHAT),
        }
    }

    /// Counts connection `id` (higher than every id before it), closing the
    /// oldest ones over the cap.
    pub fn admit(self: &Arc<Self>, id: u64) -> Pending {
        let evicted = CancellationToken::new();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        while waiting.len() >= self.max {
            let Some((_, oldest)) = waiting.pop_front() else {
                break;
            };
            oldest.cancel();
            self.evicted.inc();
            self.current.dec();
        }
        waiting.push_back((id, evicted.clone()));
        self.current.inc();
        Pending {
            id,
            set: self.clone(),
            evicted,
        }
    }

    /// Connections counted now.
    pub fn len(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's place among the unauthenticated ones, given up when
/// dropped (it authenticated, or closed).
pub struct Pending {
    id: u64,
    set: Arc<Unauthenticated>,
    /// Fires when a newer connection took its place: close it.
    pub evicted: CancellationToken,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut waiting = self
            .set
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Ok(at) = waiting.binary_search_by_key(&self.id, |(id, _)| *id) {
            waiting.remove(at);
            self.set.current.dec();
        }
    }
}

/// Where one connection stands: unauthenticated, or counted against
/// `--max-connections` (and its principal's cap) since its first
/// authenticated Produce or ProduceBatch call. Shared by its calls.
pub struct ConnAdmission {
    state: Mutex<ConnState>,
}

enum ConnState {
    Pending(#[allow(dead_code)] Pending),
    Admitted {
        _slot: Slot,
        _principal: Option<PrincipalSlot>,
    },
}

impl std::fmt::Debug for ConnAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnAdmission")
            .field("admitted", &self.is_admitted())
            .finish()
    }
}

impl ConnAdmission {
    /// A new connection, counted as unauthenticated.
    pub fn new(pending: Pending) -> Self {
        Self {
            state: Mutex::new(ConnState::Pending(pending)),
        }
    }

    /// Counts the connection against `--max-connections` and the caller's
    /// `--max-connections-per-principal`, on its first Produce or
    /// ProduceBatch call that reached admission (so passed authentication),
    /// leaving the unauthenticated ones. The refusal's message when a cap
    /// is reached; the connection then stays unauthenticated.
    pub fn admit(
        &self,
        admission: &Admission,
        principal: Option<&Principal>,
    ) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, ConnState::Admitted { .. }) {
            return Ok(());
        }
        let principal = match principal {
            Some(principal) => Some(admission.principal_connections.try_take(principal)?),
            None => None,
        };
        let slot = admission.connections.try_take()?;
        *state = ConnState::Admitted {
            _slot: slot,
            _principal: principal,
        };
        Ok(())
    }

    /// Whether the connection made an authenticated call.
    pub fn is_admitted(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            ConnState::Admitted { .. }
        )
    }
}

/// A cap per principal: how many calls, or connections, each one holds.
pub struct PerPrincipal {
    /// The counted thing, for messages: "calls", "connections".
    what: &'static str,
    flag: &'static str,
    max: usize,
    held: Mutex<HashMap<Principal, usize>>,
    refused: Counter,
}

impl PerPrincipal {
    fn new(
        limit: &'static str,
        what: &'static str,
        flag: &'static str,
        max: usize,
        metrics: &Metrics,
    ) -> Self {
        metrics.limit_max(limit).set(max as i64);
        Self {
            what,
            flag,
            max,
            held: Mutex::default(),
            refused: metrics.limit_refused(limit),
        }
    }

    /// One more for `principal`, or the refusal's message.
    pub fn try_take(self: &Arc<Self>, principal: &Principal) -> Result<PrincipalSlot, String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(principal.clone()).or_default();
        if *count >= self.max {
            drop(held);
            self.refused.inc();
            return Err(format!(
                "principal {:?} holds {} {}, its limit ({}); close some, or raise the limit",
                principal.name(),
                self.max,
                self.what,
                self.flag
            ));
        }
        *count += 1;
        Ok(PrincipalSlot {
            set: self.clone(),
            principal: principal.clone(),
        })
    }

    /// What `principal` holds now.
    pub fn held(&self, principal: &Principal) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(principal)
            .copied()
            .unwrap_or(0)
    }
}

/// One call or connection of a principal; given back when dropped.
pub struct PrincipalSlot {
    set: Arc<PerPrincipal>,
    principal: Principal,
}

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let mut held = self.set.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.principal);
            }
        }
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
    use crate::auth::AuthMethod;

    #[test]
    fn a_new_unauthenticated_connection_closes_the_oldest_over_the_cap() {
        let metrics = Metrics::new();
        let set = Arc::new(Unauthenticated::new(2, &metrics));
        let first = set.admit(1);
        let second = set.admit(2);
        assert!(!first.evicted.is_cancelled());
        let third = set.admit(3);
        assert!(first.evicted.is_cancelled(), "the oldest makes room");
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(set.len(), 2);
        drop(first);
        assert_eq!(set.len(), 2, "an evicted one was already counted out");
        drop(third);
        assert_eq!(set.len(), 1);
        let text = metrics.encode();
        for line in [
            r#"kafka_gateway_limit_current{limit="unauthenticated_connections"} 1"#,
            r#"kafka_gateway_limit_refused_total{limit="unauthenticated_connections"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_connection_leaves_the_unauthenticated_on_its_first_admitted_call() {
        let metrics = Metrics::new();
        let mut caps = crate::Config::defaults().caps();
        caps.max_connections = 1;
        caps.admission.max_connections_per_principal = 1;
        let admission = Admission::new(caps, &metrics);
        let alice = Principal::new("alice", AuthMethod::ApiKey);
        let one = ConnAdmission::new(admission.unauthenticated.admit(1));
        let two = ConnAdmission::new(admission.unauthenticated.admit(2));
        assert_eq!(admission.unauthenticated.len(), 2);
        one.admit(&admission, Some(&alice)).unwrap();
        assert!(one.is_admitted());
        one.admit(&admission, Some(&alice)).unwrap();
        assert_eq!(admission.unauthenticated.len(), 1);
        assert_eq!(admission.connections.used(), 1);
        // Alice's second connection: her own cap first.
        let refusal = two.admit(&admission, Some(&alice)).unwrap_err();
        assert!(
            refusal.contains("--max-connections-per-principal"),
            "{refusal}"
        );
        // Someone else's: the gateway's cap.
        let bob = Principal::new("bob", AuthMethod::ApiKey);
        let refusal = two.admit(&admission, Some(&bob)).unwrap_err();
        assert!(refusal.contains("--max-connections "), "{refusal}");
        assert!(!two.is_admitted());
        assert_eq!(admission.principal_connections.held(&bob), 0);
        drop(one);
        assert_eq!(admission.connections.used(), 0);
        assert_eq!(admission.principal_connections.held(&alice), 0);
        two.admit(&admission, Some(&bob)).unwrap();
    }

    #[test]
    fn per_principal_caps_count_each_principal_apart() {
        let metrics = Metrics::new();
        let set = Arc::new(PerPrincipal::new(
            "streams_per_principal",
            "calls",
            "--max-streams-per-principal",
            2,
            &metrics,
        ));
        let alice = Principal::new("alice", AuthMethod::Jwt);
        let bob = Principal::new("bob", AuthMethod::Jwt);
        let a1 = set.try_take(&alice).unwrap();
        let _a2 = set.try_take(&alice).unwrap();
        let refusal = set.try_take(&alice).err().unwrap();
        assert!(
            refusal.contains("\"alice\" holds 2 calls")
                && refusal.contains("--max-streams-per-principal"),
            "{refusal}"
        );
        let _b = set.try_take(&bob).unwrap();
        drop(a1);
        assert!(set.try_take(&alice).is_ok());
    }

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
