//! The transactional producers: one per transactional id, owned by one
//! stream at a time.
//!
//! A stream whose first request names a transactional id claims it here. A
//! claim fences the stream that holds the id (its open transaction is
//! aborted and it ends with ABORTED), waits for it to let go (at most
//! [`TxnLimits::timeout`] and a little more: a fenced stream ends within
//! its call timeout), and takes the id's producer over, or builds one
//! (`init_transactions`, which also aborts whatever a previous producer
//! with this id, in this gateway or a crashed one, left open). Producers
//! outlive their streams, so that a client that reconnects does not pay for
//! a new one, and are closed once idle for `--transactional-idle-timeout`.
//! At most `--max-transactional-streams` streams hold a producer at once,
//! and as many producers live, held or idle: a new id's producer closes the
//! idle ones first when there are that many.
//!
//! Building a producer and destroying one block: both run on the blocking
//! pool. The transactional calls of a held producer are the stream
//! driver's (`stream/txn.rs`, where the state machine is written down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, watch};
use tokio::time::Instant;
use tonic::Status;

use super::kafka::{KafkaSender, TxnSender};
use super::{TxnError, TxnErrorKind};

/// How often idle producers are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How much longer than the call timeout a claim waits for a fenced stream
/// to let go: the stream answers what it read and ends.
const LET_GO_GRACE: Duration = Duration::from_secs(5);

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

/// Builds the producers of transactional ids: librdkafka's in the gateway,
/// a fake in tests.
pub trait Producers: Send + Sync + 'static {
    type Producer: TxnProducer;

    /// The producer of `id`, its transactions initialized. Blocks for up to
    /// `timeout`: called on the blocking pool.
    fn build(&self, id: &str, timeout: Duration) -> Result<Self::Producer, TxnError>;
}

/// What the registry needs of a producer.
pub trait TxnProducer: Send + Sync + 'static {
    /// Failed for good or retired: the id's next claim builds a new one.
    fn is_dead(&self) -> bool;
}

impl Producers for Arc<KafkaSender> {
    type Producer = TxnSender;

    fn build(&self, id: &str, timeout: Duration) -> Result<TxnSender, TxnError> {
        self.transactional(id, timeout)
    }
}

impl TxnProducer for TxnSender {
    fn is_dead(&self) -> bool {
        TxnSender::is_dead(self)
    }
}

/// Every transactional id in use, or recently used.
pub struct Transactions<F: Producers = Arc<KafkaSender>> {
    factory: Arc<F>,
    limits: TxnLimits,
    ids: Mutex<HashMap<String, Arc<Entry<F::Producer>>>>,
    /// Streams holding a producer now.
    claimed: Arc<AtomicUsize>,
}

/// One transactional id.
struct Entry<P> {
    /// Held by the stream that owns the id.
    slot: Arc<tokio::sync::Mutex<Slot<P>>>,
    /// Bumped by each claim: the owner ends when it changes.
    fence: watch::Sender<u64>,
    /// Claims under way or held: while there are any, the entry stays in
    /// the map, so that a later claim of the id finds it (and fences them)
    /// rather than making a second one. Changed under the map's lock.
    claims: AtomicUsize,
}

struct Slot<P> {
    producer: Option<Arc<P>>,
    /// Since when nobody holds it.
    idle_since: Option<Instant>,
}

impl<P> Default for Slot<P> {
    fn default() -> Self {
        Self {
            producer: None,
            idle_since: None,
        }
    }
}

/// A stream's hold on a transactional id. Dropping it lets the id go.
pub struct Claim<P: TxnProducer = TxnSender> {
    /// The id's producer.
    pub sender: Held<P>,
    /// Changes when a newer stream claims the id.
    pub fenced: Fence,
    slot: OwnedMutexGuard<Slot<P>>,
    /// Declared after `slot`: the slot is let go before the claim stops
    /// counting, so that a claim which then finds room also finds this
    /// idle producer free to close (else both producers lived on, over
    /// the cap, until the idle timeout).
    _claimed: Counted,
    /// Lets the entry go from the map once nobody claims it.
    _claiming: Claiming<P>,
}

/// One open claim, counted until dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A claim's reference to its producer: dropped on the blocking pool,
/// where destroying the producer (if it is the last reference) may block.
pub struct Held<P: Send + Sync + 'static>(Option<Arc<P>>);

impl<P: Send + Sync + 'static> std::ops::Deref for Held<P> {
    type Target = P;

    fn deref(&self) -> &P {
        self.0.as_deref().expect("set until dropped")
    }
}

impl<P: Send + Sync + 'static> Drop for Held<P> {
    fn drop(&mut self) {
        close(self.0.take());
    }
}

/// Resolves once a newer stream claimed the id.
#[derive(Clone)]
pub struct Fence {
    id: Arc<str>,
    changes: watch::Receiver<u64>,
    mine: u64,
}

impl Fence {
    /// A fence the test moves itself: bumping the sender fences.
    #[cfg(test)]
    pub(crate) fn manual(id: &str) -> (watch::Sender<u64>, Fence) {
        let changes = watch::Sender::new(0);
        let fence = Fence {
            id: Arc::from(id),
            changes: changes.subscribe(),
            mine: 0,
        };
        (changes, fence)
    }

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

/// One claim counted on its entry, from the lookup until the claim ends.
struct Claiming<P> {
    entry: Arc<Entry<P>>,
}

impl<P> Drop for Claiming<P> {
    fn drop(&mut self) {
        self.entry.claims.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<P: TxnProducer> Drop for Claim<P> {
    fn drop(&mut self) {
        self.slot.idle_since = Some(Instant::now());
        if self.sender.is_dead() {
            // Fenced by another producer, failed or retired: the next claim
            // builds a new one.
            close(self.slot.producer.take());
        }
    }
}

/// Destroys a producer, when this was its last reference, on the blocking
/// pool: librdkafka's destruction waits for its threads.
fn close<P: Send + Sync + 'static>(producer: Option<Arc<P>>) {
    if let Some(producer) = producer {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(producer))),
            Err(_) => drop(producer),
        }
    }
}

impl<F: Producers> Transactions<F> {
    /// Starts the sweeping of idle producers; it stops when the returned
    /// value is dropped.
    pub fn new(factory: F, limits: TxnLimits) -> Arc<Self> {
        let this = Arc::new(Self {
            factory: Arc::new(factory),
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
    pub async fn claim(&self, id: &str) -> Result<Claim<F::Producer>, Status> {
        let claiming = {
            let mut ids = self.ids.lock().expect("not poisoned");
            let entry = ids
                .entry(id.to_owned())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        slot: Arc::default(),
                        fence: watch::Sender::new(0),
                        claims: AtomicUsize::new(0),
                    })
                })
                .clone();
            entry.claims.fetch_add(1, Ordering::SeqCst);
            Claiming { entry }
        };
        let entry = claiming.entry.clone();
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
        // Fence whoever holds it (this claim's generation is the one it
        // set, whatever other claims do meanwhile), then wait for it to let
        // go.
        let mut mine = 0;
        entry.fence.send_modify(|generation| {
            *generation += 1;
            mine = *generation;
        });
        let wait = self.limits.timeout + LET_GO_GRACE;
        let Ok(mut slot) = tokio::time::timeout(wait, entry.slot.clone().lock_owned()).await else {
            return Err(Status::unavailable(format!(
                "transactional id {id:?} is still held by an older stream, which did not \
                 end within {wait:?} of being fenced; retry"
            )));
        };
        if *entry.fence.borrow() != mine {
            // A newer claim came while this one waited: it owns the id.
            return Err(Status::aborted(format!(
                "fenced by a newer stream with transactional id {id:?} before this one \
                 started; only one stream at a time may use a transactional id"
            )));
        }
        self.claimed.fetch_add(1, Ordering::SeqCst);
        let claim = |slot: OwnedMutexGuard<Slot<F::Producer>>, sender, claiming| Claim {
            sender: Held(Some(sender)),
            fenced: Fence {
                id: Arc::from(id),
                changes: entry.fence.subscribe(),
                mine,
            },
            slot,
            _claimed: Counted(self.claimed.clone()),
            _claiming: claiming,
        };
        if let Some(producer) = slot.producer.clone()
            && !producer.is_dead()
        {
            slot.idle_since = None;
            return Ok(claim(slot, producer, claiming));
        }
        close(slot.producer.take());
        let (factory, name, timeout) = (self.factory.clone(), id.to_owned(), self.limits.timeout);
        let built = tokio::task::spawn_blocking(move || factory.build(&name, timeout)).await;
        match built {
            Ok(Ok(producer)) => {
                let producer = Arc::new(producer);
                slot.producer = Some(producer.clone());
                slot.idle_since = None;
                tracing::info!(transactional_id = id, "transactional producer ready");
                Ok(claim(slot, producer, claiming))
            }
            Ok(Err(err)) => {
                self.claimed.fetch_sub(1, Ordering::SeqCst);
                Err(cannot_start(id, &err))
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
    /// forgets ids nobody claims any more.
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
                close(Some(producer));
            }
            // Keep the entry while someone claims it (waits for it, or holds
            // it), so that every claim of the id goes through one entry.
            slot.producer.is_some() || entry.claims.load(Ordering::SeqCst) > 0
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

    /// Ids in the registry.
    #[cfg(test)]
    fn ids(&self) -> usize {
        self.ids.lock().expect("not poisoned").len()
    }
}

/// The status of a stream whose transactional producer could not be built:
/// what the client or the operator must fix, and whether to retry.
fn cannot_start(id: &str, err: &TxnError) -> Status {
    match err.kind {
        TxnErrorKind::NotAuthorized => Status::permission_denied(format!(
            "Kafka does not allow the gateway transactional id {id:?}: {}; grant the \
             gateway's Kafka principal WRITE and DESCRIBE on the TransactionalId {id:?} \
             (kafka-acls --transactional-id), or use an id it is granted",
            err.message
        )),
        TxnErrorKind::Misconfigured => Status::failed_precondition(format!(
            "transactions cannot start for transactional id {id:?}: {}; the Kafka cluster \
             must offer transactions (Kafka 0.11 or later, a transaction state log it can \
             replicate) and accept the producer's transaction.timeout.ms \
             (transaction.max.timeout.ms)",
            err.message
        )),
        TxnErrorKind::Retriable | TxnErrorKind::Abortable | TxnErrorKind::Fatal => {
            Status::unavailable(format!(
                "cannot start transactions for transactional id {id:?} now: {}; retry",
                err.message
            ))
        }
    }
}

impl<F: Producers> Drop for Transactions<F> {
    /// The producers left (idle ones; held ones go with their claims) are
    /// destroyed off the runtime too.
    fn drop(&mut self) {
        let ids = self.ids.get_mut().expect("not poisoned");
        for entry in ids.values() {
            if let Ok(mut slot) = entry.slot.try_lock() {
                close(slot.producer.take());
            }
        }
    }
}

/// Closes idle producers until the registry is dropped.
async fn sweep<F: Producers>(registry: Weak<Transactions<F>>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.close_idle(registry.limits.idle_timeout, None);
    }
}

#[cfg(test)]
mod tests;
