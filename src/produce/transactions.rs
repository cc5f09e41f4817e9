//! The transactional producers: one per transactional id, owned by one
//! stream at a time.
//!
//! A stream whose first request names a transactional id claims it here. A
//! claim fences the stream that holds the id (its open transaction is
//! aborted and it ends with ABORTED), waits for it to let go, and takes the
//! id's producer over, or builds one (`init_transactions`, which also aborts
//! whatever a previous producer with this id, in this gateway or a crashed
//! one, left open). Producers outlive their streams, so that a client that
//! reconnects does not pay for a new one, and are closed once idle for
//! `--transactional-idle-timeout`. At most `--max-transactional-streams`
//! streams hold a producer at once, and as many producers live, held or
//! idle: a new id's producer closes the idle ones first when there are
//! that many.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, watch};
use tokio::time::Instant;
use tonic::Status;

use super::kafka::{KafkaSender, TxnSender};

/// How often idle producers are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The settings of transactional streams.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    /// Streams holding a transactional producer at once.
    pub max_streams: usize,
    /// How long an unclaimed producer is kept.
    pub idle_timeout: Duration,
    /// How long `init_transactions`, a commit or an abort may take.
    pub timeout: Duration,
}

/// Every transactional id in use, or recently used.
pub struct Transactions {
    kafka: Arc<KafkaSender>,
    limits: TxnLimits,
    ids: Mutex<HashMap<String, Arc<Entry>>>,
    /// Streams holding a producer now.
    claimed: Arc<AtomicUsize>,
}

/// One transactional id.
struct Entry {
    /// Held by the stream that owns the id.
    slot: Arc<tokio::sync::Mutex<Slot>>,
    /// Bumped by each claim: the owner ends when it changes.
    fence: watch::Sender<u64>,
}

#[derive(Default)]
struct Slot {
    producer: Option<Arc<TxnSender>>,
    /// Since when nobody holds it.
    idle_since: Option<Instant>,
}

/// A stream's hold on a transactional id. Dropping it lets the id go.
pub struct Claim {
    pub sender: Arc<TxnSender>,
    /// Changes when a newer stream claims the id.
    pub fenced: Fence,
    slot: OwnedMutexGuard<Slot>,
    claimed: Arc<AtomicUsize>,
}

/// Resolves once a newer stream claimed the id.
#[derive(Clone)]
pub struct Fence {
    id: Arc<str>,
    changes: watch::Receiver<u64>,
    mine: u64,
}

impl Fence {
    /// Resolves with the id once a newer stream claimed it.
    pub async fn fenced(&mut self) -> String {
        let mine = self.mine;
        // An error means the entry is gone: nobody can claim it any more.
        if self.changes.wait_for(|now| *now != mine).await.is_err() {
            std::future::pending::<()>().await;
        }
        self.id.to_string()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claimed.fetch_sub(1, Ordering::SeqCst);
        self.slot.idle_since = Some(Instant::now());
        if self.sender.is_dead() {
            // Fenced by another producer, or failed: the next claim builds
            // a new one.
            if let Some(producer) = self.slot.producer.take() {
                producer.close();
            }
        }
    }
}

impl Transactions {
    /// Starts the sweeping of idle producers; it stops when the returned
    /// value is dropped.
    pub fn new(kafka: Arc<KafkaSender>, limits: TxnLimits) -> Arc<Self> {
        let this = Arc::new(Self {
            kafka,
            limits,
            ids: Mutex::default(),
            claimed: Arc::default(),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(sweep(weak));
        this
    }

    /// Claims `id` for a stream: fences its current holder and waits for it
    /// to let go, then takes its producer over or builds one.
    pub async fn claim(&self, id: &str) -> Result<Claim, Status> {
        let entry = {
            let mut ids = self.ids.lock().expect("not poisoned");
            ids.entry(id.to_owned())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        slot: Arc::default(),
                        fence: watch::Sender::new(0),
                    })
                })
                .clone()
        };
        // `None`: someone holds the id (and will be fenced).
        let has_producer = entry
            .slot
            .try_lock()
            .ok()
            .map(|slot| slot.producer.is_some());
        if has_producer.is_some() && self.claimed.load(Ordering::SeqCst) >= self.limits.max_streams
        {
            return Err(Status::resource_exhausted(format!(
                "{} transactional streams are open, the gateway's limit \
                 (--max-transactional-streams); end one, or raise the limit",
                self.limits.max_streams
            )));
        }
        if has_producer == Some(false) && self.producers() >= self.limits.max_streams {
            // Producers are bounded too, held or idle: idle ones make room.
            self.close_idle(Duration::ZERO, Some(id));
        }
        // Fence whoever holds it, then wait for it to let go.
        entry.fence.send_modify(|generation| *generation += 1);
        let mine = *entry.fence.borrow();
        let mut slot = entry.slot.clone().lock_owned().await;
        self.claimed.fetch_add(1, Ordering::SeqCst);
        let claim = |slot: OwnedMutexGuard<Slot>, sender: Arc<TxnSender>| Claim {
            sender,
            fenced: Fence {
                id: Arc::from(id),
                changes: entry.fence.subscribe(),
                mine,
            },
            slot,
            claimed: self.claimed.clone(),
        };
        if let Some(producer) = slot.producer.clone()
            && !producer.is_dead()
        {
            slot.idle_since = None;
            return Ok(claim(slot, producer));
        }
        if let Some(dead) = slot.producer.take() {
            dead.close();
        }
        let (kafka, name, timeout) = (self.kafka.clone(), id.to_owned(), self.limits.timeout);
        let built = tokio::task::spawn_blocking(move || kafka.transactional(&name, timeout)).await;
        match built {
            Ok(Ok(producer)) => {
                let producer = Arc::new(producer);
                slot.producer = Some(producer.clone());
                slot.idle_since = None;
                tracing::info!(transactional_id = id, "transactional producer ready");
                Ok(claim(slot, producer))
            }
            Ok(Err(err)) => {
                self.claimed.fetch_sub(1, Ordering::SeqCst);
                Err(Status::unavailable(format!(
                    "cannot start transactions for transactional id {id:?}: {}; retry",
                    err.message
                )))
            }
            Err(err) => {
                self.claimed.fetch_sub(1, Ordering::SeqCst);
                Err(Status::internal(format!(
                    "building the transactional producer failed: {err}"
                )))
            }
        }
    }

    /// Closes producers nobody has held for `idle` (but `except`'s), and
    /// forgets ids with nothing left.
    fn close_idle(&self, idle: Duration, except: Option<&str>) {
        let mut ids = self.ids.lock().expect("not poisoned");
        ids.retain(|id, entry| {
            if except == Some(id.as_str()) {
                return true;
            }
            let Ok(mut slot) = entry.slot.try_lock() else {
                return true;
            };
            if slot.idle_since.is_some_and(|since| since.elapsed() >= idle)
                && let Some(producer) = slot.producer.take()
            {
                tracing::debug!(
                    transactional_id = id,
                    "closing an idle transactional producer"
                );
                producer.close();
            }
            // Keep the entry while someone waits for it or may be fenced
            // through it.
            slot.producer.is_some() || Arc::strong_count(&entry.slot) > 1
        });
    }

    /// Producers alive (held or idle).
    pub fn producers(&self) -> usize {
        let ids = self.ids.lock().expect("not poisoned");
        ids.values()
            .filter(|entry| {
                entry
                    .slot
                    .try_lock()
                    .map_or(true, |slot| slot.producer.is_some())
            })
            .count()
    }
}

/// Closes idle producers until the registry is dropped.
async fn sweep(registry: Weak<Transactions>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.close_idle(registry.limits.idle_timeout, None);
    }
}
