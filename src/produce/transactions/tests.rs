//! The registry of transactional ids against fake producers: fencing, the
//! bound on waiting for a fenced stream, producers destroyed off the
//! runtime, and what a client is told when a producer cannot be built.

use std::sync::atomic::AtomicBool;
use std::thread::ThreadId;

use super::*;

/// A fake producer: says where it was destroyed.
struct FakeProducer {
    dead: AtomicBool,
    dropped_on: Arc<Mutex<Vec<ThreadId>>>,
}

impl TxnProducer for FakeProducer {
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl Drop for FakeProducer {
    fn drop(&mut self) {
        self.dropped_on
            .lock()
            .unwrap()
            .push(std::thread::current().id());
    }
}

/// Builds fake producers, or fails as told.
#[derive(Default)]
struct FakeProducers {
    built: AtomicUsize,
    fail_with: Mutex<Option<TxnError>>,
    dropped_on: Arc<Mutex<Vec<ThreadId>>>,
}

impl Producers for Arc<FakeProducers> {
    type Producer = FakeProducer;

    fn build(&self, _id: &str, _timeout: Duration) -> Result<FakeProducer, TxnError> {
        if let Some(error) = self.fail_with.lock().unwrap().clone() {
            return Err(error);
        }
        self.built.fetch_add(1, Ordering::SeqCst);
        Ok(FakeProducer {
            dead: AtomicBool::new(false),
            dropped_on: self.dropped_on.clone(),
        })
    }
}

fn limits() -> TxnLimits {
    TxnLimits {
        max_streams: 4,
        idle_timeout: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_waits_a_bounded_time_for_a_fenced_stream_that_does_not_let_go() {
    let factory = Arc::new(FakeProducers::default());
    let registry = Transactions::new(factory.clone(), limits());
    let held = registry.claim("a").await.unwrap();
    let mut fence = held.fenced.clone();
    let started = Instant::now();
    let refused = registry.claim("a").await.err().expect("refused in time");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("retry"), "{refused:?}");
    assert_eq!(started.elapsed(), limits().timeout + LET_GO_GRACE);
    assert_eq!(fence.fenced().await, "a", "the holder was fenced");
    // Once it lets go, the id's producer is taken over, not rebuilt.
    drop(held);
    let again = registry.claim("a").await.unwrap();
    assert_eq!(factory.built.load(Ordering::SeqCst), 1);
    drop(again);
}

#[tokio::test(start_paused = true)]
async fn of_two_claims_waiting_for_one_id_the_newer_wins_and_the_older_is_told() {
    let factory = Arc::new(FakeProducers::default());
    let registry = Transactions::new(factory.clone(), limits());
    let held = registry.claim("a").await.unwrap();
    let older = tokio::spawn({
        let registry = registry.clone();
        async move { registry.claim("a").await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let newer = tokio::spawn({
        let registry = registry.clone();
        async move {
            let claim = registry.claim("a").await?;
            let fenced = claim.fenced.clone();
            Ok::<_, Status>((claim, fenced))
        }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(held);
    let refused = older
        .await
        .unwrap()
        .expect_err("the older claim was fenced");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    let (claim, mut fenced) = newer.await.unwrap().expect("the newer claim holds the id");
    // Nobody claimed after it: its fence has not moved.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), fenced.fenced())
            .await
            .is_err()
    );
    drop(claim);
}

#[tokio::test(start_paused = true)]
async fn ids_claimed_or_waited_for_stay_in_the_registry_through_idle_sweeps() {
    let factory = Arc::new(FakeProducers::default());
    let registry = Transactions::new(factory.clone(), limits());
    let held = registry.claim("a").await.unwrap();
    let waiting = tokio::spawn({
        let registry = registry.clone();
        async move { registry.claim("a").await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    registry.close_idle(Duration::ZERO, None);
    assert_eq!(registry.ids(), 1, "held and waited for: kept");
    drop(held);
    waiting.await.unwrap().unwrap();
    // Idle now: the sweep closes its producer and forgets the id.
    registry.close_idle(Duration::ZERO, None);
    assert_eq!((registry.ids(), registry.producers()), (0, 0));
}

#[test]
fn a_dead_producer_is_destroyed_off_the_runtime() {
    // One runtime thread: anything destroyed elsewhere was destroyed on
    // the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let worker = std::thread::current().id();
    let factory = Arc::new(FakeProducers::default());
    runtime.block_on(async {
        let registry = Transactions::new(factory.clone(), limits());
        let claim = registry.claim("a").await.unwrap();
        claim.sender.dead.store(true, Ordering::SeqCst);
        drop(claim);
        // The blocking pool gets to it.
        for _ in 0..100 {
            if !factory.dropped_on.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next claim builds a new one.
        let claim = registry.claim("a").await.unwrap();
        assert_eq!(factory.built.load(Ordering::SeqCst), 2);
        drop(claim);
    });
    // Dropping the runtime waits for its blocking pool.
    drop(runtime);
    let dropped_on = factory.dropped_on.lock().unwrap().clone();
    assert_eq!(dropped_on.len(), 2, "the dead one, then the registry's");
    assert!(
        !dropped_on.contains(&worker),
        "a producer was destroyed on the runtime's thread"
    );
}

#[tokio::test(start_paused = true)]
async fn a_producer_that_cannot_be_built_says_what_to_fix() {
    let cases = [
        (
            TxnErrorKind::NotAuthorized,
            "Broker: Transactional Id authorization failed",
            tonic::Code::PermissionDenied,
            "kafka-acls --transactional-id",
        ),
        (
            TxnErrorKind::Misconfigured,
            "Local: Unsupported feature",
            tonic::Code::FailedPrecondition,
            "must offer transactions",
        ),
        (
            TxnErrorKind::Retriable,
            "Local: Timed out",
            tonic::Code::Unavailable,
            "retry",
        ),
    ];
    for (kind, message, code, fix) in cases {
        let factory = Arc::new(FakeProducers::default());
        *factory.fail_with.lock().unwrap() = Some(TxnError::new(kind, message));
        let registry = Transactions::new(factory, limits());
        let status = registry.claim("a").await.err().expect("refused");
        assert_eq!(status.code(), code, "{kind:?}: {status:?}");
        assert!(
            status.message().contains(message) && status.message().contains(fix),
            "{kind:?}: {status:?}"
        );
    }
}
