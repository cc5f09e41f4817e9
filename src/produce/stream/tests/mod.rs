//! The driver against a fake Kafka whose deliveries complete in an order
//! the test chooses, so order, bounds and backpressure are checked
//! without a broker.

mod dead_letters;
mod order;
mod transactions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::error::record_error;
use crate::produce::respond::{self, ResponseStream};
use crate::produce::{Completions, Delivered, DeliveryResult, TxnError, TxnErrorKind};
use crate::proto::{self, ErrorCode, ProduceResponse, Record, RecordResult, record_result};

/// Responses the fake client's channel holds unread.
const RESPONSES: usize = 128;

/// A tiny deterministic PRNG (xorshift64*), so failures replay.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

#[derive(Default)]
struct FakeState {
    /// Values in the order the fake accepted them.
    accepted: Vec<Bytes>,
    /// Undelivered records: where to report, under which number, the
    /// outcome each will get, and its size.
    pending: Vec<(Arc<Completions>, u64, DeliveryResult, usize)>,
    /// Values whose delivery times out.
    time_out: Vec<Bytes>,
    /// Records accepted for the topic "dlq", in the order accepted.
    letters: Vec<OutboundRecord>,
    /// A transactional fake's calls and records, in order: `begin`,
    /// `commit`, `abort`, `retire`, and each record's value.
    events: Vec<String>,
    /// How the next calls of each kind end; `Ok` once a script runs out.
    begins: VecDeque<Outcome>,
    commits: VecDeque<Outcome>,
    aborts: VecDeque<Outcome>,
    next_offset: HashMap<i32, i64>,
    /// Undelivered records the fake's queue holds at most; more is QueueFull.
    queue_capacity: usize,
    /// Answer QueueFull to this many calls regardless (other streams' load).
    forced_queue_full: usize,
    queue_full_answers: usize,
    /// Most records and bytes accepted and not yet reported at once.
    max_alive: usize,
    max_alive_bytes: usize,
}

/// How a scripted transactional call of the fake ends: the test double of
/// librdkafka's transactional calls.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Blocks for its whole timeout, then fails retriably: the call goes on
    /// in the background and calling it again resumes it.
    TimeOut,
    /// Fails at once: the transaction must be aborted
    /// (`txn_requires_abort`).
    Abortable,
    /// Fails at once: the producer cannot go on (fenced).
    Fatal,
    /// Never returns (a broker that stopped answering, past any timeout).
    Hang,
}

/// Plays a scripted outcome; `None` succeeds.
async fn play(outcome: Option<Outcome>, timeout: Duration) -> Result<(), TxnError> {
    match outcome {
        None => Ok(()),
        Some(Outcome::TimeOut) => {
            tokio::time::sleep(timeout).await;
            Err(TxnError::new(
                TxnErrorKind::Retriable,
                "Local: Timed out (_TIMED_OUT)",
            ))
        }
        Some(Outcome::Abortable) => Err(TxnError::new(
            TxnErrorKind::Abortable,
            "Broker: Unknown producer id (UNKNOWN_PRODUCER_ID)",
        )),
        Some(Outcome::Fatal) => Err(TxnError::new(
            TxnErrorKind::Fatal,
            "Local: This instance has been fenced by a newer instance (_FENCED)",
        )),
        Some(Outcome::Hang) => std::future::pending().await,
    }
}

/// A fake librdkafka: partition = first key byte % 3; offsets per partition
/// in acceptance order; outcomes reported when the test says, in any order.
#[derive(Clone)]
struct FakeKafka {
    state: Arc<Mutex<FakeState>>,
    /// Set: a transactional producer with this id.
    txn_id: Option<&'static str>,
    /// Records and bytes accepted and not yet reported.
    alive: Arc<AtomicUsize>,
    alive_bytes: Arc<AtomicUsize>,
}

impl FakeKafka {
    fn new(queue_capacity: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                queue_capacity,
                ..FakeState::default()
            })),
            alive: Arc::default(),
            alive_bytes: Arc::default(),
            txn_id: None,
        }
    }

    /// A transactional fake.
    fn transactional() -> Self {
        Self {
            txn_id: Some("tx"),
            ..Self::new(usize::MAX)
        }
    }

    fn events(&self) -> Vec<String> {
        self.state.lock().unwrap().events.clone()
    }

    /// Delivers one random pending record; false when none is pending.
    fn deliver_one(&self, rng: &mut Rng) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.pending.is_empty() {
            return false;
        }
        let index = rng.below(state.pending.len());
        let (completions, seq, outcome, size) = state.pending.swap_remove(index);
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.alive_bytes.fetch_sub(size, Ordering::SeqCst);
        completions.push(seq, outcome);
        true
    }

    fn accepted(&self) -> Vec<Bytes> {
        self.state.lock().unwrap().accepted.clone()
    }
}

impl Sender for FakeKafka {
    fn try_send(
        &self,
        record: &OutboundRecord,
        completions: &Arc<Completions>,
        seq: u64,
    ) -> Result<(), TrySendError> {
        let mut state = self.state.lock().unwrap();
        if &*record.topic == "forbidden" {
            return Err(TrySendError::Rejected(record_error(
                ErrorCode::NotAuthorized,
                "TOPIC_AUTHORIZATION_FAILED",
                false,
            )));
        }
        if state.forced_queue_full > 0 || state.pending.len() >= state.queue_capacity {
            state.forced_queue_full = state.forced_queue_full.saturating_sub(1);
            state.queue_full_answers += 1;
            return Err(TrySendError::QueueFull);
        }
        let partition = i32::from(record.key.as_ref().map_or(0, |k| k[0]) % 3);
        let value = record.value.clone().unwrap_or_default();
        let outcome = if &*record.topic != "dlq" && state.time_out.contains(&value) {
            Err(record_error(
                ErrorCode::TimedOut,
                "Local: Message timed out",
                true,
            ))
        } else {
            let offset = state.next_offset.entry(partition).or_default();
            let delivered = Delivered {
                partition,
                offset: *offset,
                timestamp_ms: 7,
            };
            *offset += 1;
            Ok(delivered)
        };
        state
            .pending
            .push((completions.clone(), seq, outcome, record.size));
        if &*record.topic == "dlq" {
            state.letters.push(record.clone());
        }
        if self.txn_id.is_some() {
            state
                .events
                .push(String::from_utf8_lossy(&value).into_owned());
        }
        state.accepted.push(value);
        let alive = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
        let bytes = self.alive_bytes.fetch_add(record.size, Ordering::SeqCst) + record.size;
        state.max_alive = state.max_alive.max(alive);
        state.max_alive_bytes = state.max_alive_bytes.max(bytes);
        Ok(())
    }

    async fn ensure_topic(&self, _topic: &str) -> Result<(), proto::RecordError> {
        Ok(())
    }

    fn transactional_id(&self) -> Option<&str> {
        self.txn_id
    }

    async fn begin(&self) -> Result<(), TxnError> {
        let outcome = {
            let mut state = self.state.lock().unwrap();
            state.events.push("begin".into());
            state.begins.pop_front()
        };
        play(outcome, Duration::ZERO).await
    }

    fn retire(&self, _cause: &str) {
        self.state.lock().unwrap().events.push("retire".into());
    }

    async fn commit(&self, timeout: Duration) -> Result<(), TxnError> {
        let outcome = {
            let mut state = self.state.lock().unwrap();
            assert!(
                state.pending.is_empty(),
                "a commit only once every record is delivered"
            );
            state.events.push("commit".into());
            state.commits.pop_front()
        };
        play(outcome, timeout).await
    }

    async fn abort(&self, timeout: Duration) -> Result<(), TxnError> {
        // As librdkafka: what is not delivered yet is purged.
        let outcome = self.purge();
        play(outcome, timeout).await
    }
}

impl FakeKafka {
    /// An abort's purge: every undelivered record fails. Returns how the
    /// abort ends.
    fn purge(&self) -> Option<Outcome> {
        let mut state = self.state.lock().unwrap();
        state.events.push("abort".into());
        let outcome = state.aborts.pop_front();
        for (completions, seq, _, size) in state.pending.drain(..) {
            self.alive.fetch_sub(1, Ordering::SeqCst);
            self.alive_bytes.fetch_sub(size, Ordering::SeqCst);
            completions.push(
                seq,
                Err(record_error(
                    ErrorCode::Unavailable,
                    "Local: Purged in queue",
                    true,
                )),
            );
        }
        outcome
    }
}

/// Runs the driver in a task of its own, as the service does; returns
/// the task and what the client receives.
fn spawn_driver<In>(
    kafka: &FakeKafka,
    limits: StreamLimits,
    inbound: In,
    stop: Stop,
) -> (tokio::task::JoinHandle<Summary>, ResponseStream)
where
    In: Stream<Item = Result<ProduceRequest, Status>> + Unpin + Send + 'static,
{
    spawn_observed(kafka, limits, inbound, stop, RESPONSES, Observers::none())
}

/// [`spawn_driver`] with a response channel of `responses` and the given
/// observers.
fn spawn_observed<In>(
    kafka: &FakeKafka,
    limits: StreamLimits,
    inbound: In,
    stop: Stop,
    responses: usize,
    observers: Observers,
) -> (tokio::task::JoinHandle<Summary>, ResponseStream)
where
    In: Stream<Item = Result<ProduceRequest, Status>> + Unpin + Send + 'static,
{
    let kafka = kafka.clone();
    let (responder, responses) = respond::channel(responses);
    let task = tokio::spawn(async move {
        drive(
            &kafka,
            &limits,
            inbound,
            Reservations::default(),
            responder,
            stop,
            Caller::anonymous(),
            &observers,
        )
        .await
    });
    (task, responses)
}

/// The next item if one is there now.
fn try_recv(responses: &mut ResponseStream) -> Option<Result<ProduceResponse, Status>> {
    futures_util::FutureExt::now_or_never(responses.recv()).flatten()
}

fn limits(max_records: usize, max_bytes: usize) -> StreamLimits {
    StreamLimits {
        window: Limits {
            max_records,
            max_bytes,
        },
        max_batch_records: 1_000,
        max_record_bytes: 1_000,
        stall_timeout: Duration::from_secs(60),
        dead_letter: None,
        transactions: TxnTimeouts::new(Duration::from_secs(60), Duration::from_secs(30)),
    }
}

fn record(n: usize) -> Record {
    Record {
        key: Some(Bytes::from(vec![n as u8])),
        value: Some(Bytes::from(format!("value-{n}"))),
        ..Record::default()
    }
}

/// `sizes.len()` batches; batch i holds `sizes[i]` records numbered
/// consecutively across the stream.
fn batches(sizes: &[usize]) -> Vec<ProduceRequest> {
    let mut n = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| ProduceRequest {
            batch_id: i as u64,
            topic: "t".into(),
            records: (0..size)
                .map(|_| {
                    n += 1;
                    record(n - 1)
                })
                .collect(),
            compact_acks: false,
            skip_dead_letter: false,
            transactional_id: String::new(),
            commit: false,
        })
        .collect()
}

fn values(requests: &[ProduceRequest]) -> Vec<Bytes> {
    requests
        .iter()
        .flat_map(|r| r.records.iter().map(|rec| rec.value.clone().unwrap()))
        .collect()
}

/// Runs the driver over `requests` while a "broker" task delivers pending
/// records in random order. Returns everything the client received.
async fn run_stream(
    kafka: &FakeKafka,
    limits: StreamLimits,
    requests: Vec<ProduceRequest>,
    seed: u64,
) -> (Vec<Result<ProduceResponse, Status>>, Summary) {
    let (responder, mut responses) = respond::channel(4);
    let broker = {
        let kafka = kafka.clone();
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            loop {
                tokio::time::sleep(Duration::from_micros(1 + rng.below(300) as u64)).await;
                kafka.deliver_one(&mut rng);
            }
        })
    };
    let inbound = tokio_stream::iter(requests.into_iter().map(Ok));
    let observers = Observers::none();
    let driver = drive(
        kafka,
        &limits,
        inbound,
        Reservations::default(),
        responder,
        Stop::never(),
        Caller::anonymous(),
        &observers,
    );
    let collect = async {
        let mut out = Vec::new();
        while let Some(item) = responses.recv().await {
            out.push(item);
        }
        out
    };
    let (summary, out) = tokio::join!(driver, collect);
    broker.abort();
    (out, summary)
}

fn ok_metadata(result: &RecordResult) -> &proto::RecordMetadata {
    match &result.result {
        Some(record_result::Result::Ok(meta)) => meta,
        other => panic!("expected an ok result, got {other:?}"),
    }
}
