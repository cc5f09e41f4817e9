//! `native`: librdkafka driven the cheapest way rust-rdkafka allows, the
//! ceiling every other strategy is measured against.
//!
//! A `ThreadedProducer` (a `BaseProducer` whose own thread polls it) with a
//! [`ProducerContext`] whose `delivery` callback counts and checks each
//! report as librdkafka hands it over. Per record there is one
//! `rd_kafka_producev` call and one callback: no future, no channel, no
//! allocation of ours. (rust-rdkafka still makes a `CString` of the topic
//! per `send`; there is no way around it without `unsafe`.) The delivery
//! opaque is a plain integer, the record's batch hand-off time in
//! microseconds after the producer was made, so the callback can time the
//! ack without looking anything up.
//!
//! Each stream is a task that sends its records in order, each one
//! enqueued before the next is tried: on `QueueFull` librdkafka hands the
//! record back, and the task retries it after a millisecond in which the
//! polling thread serves delivery reports. Only that thread polls: with a
//! second poller, two batches of reports of one partition could run
//! through the callback at once, out of order (and the order check would
//! rightly count it). The producer's settings are the gateway's
//! (`--linger-ms`, `--compression`, idempotence, every `-X`), the records
//! the same as every strategy's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Notify, oneshot};

use crate::config::Config;

use super::measure::{Clock, Measured, Run, Tally};
use super::order::DeliveryOrder;
use super::workload::{self, Source};

/// How long a stream waits before it retries a record librdkafka's full
/// queue refused: a hundredth of the default queue (100,000 records)
/// drains in about that long at a million records a second, so the queue
/// never runs dry while a stream waits.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);
/// How often the wait for the last reports checks again, in case a wake-up
/// came between its check and its wait.
const RECHECK: Duration = Duration::from_millis(100);
/// The delivery opaque of the warm-up record.
const WARM_UP: usize = usize::MAX;

/// The delivery callback's side: what the reports said.
struct Reports {
    /// Hand-off times are sent as microseconds after this.
    origin: Instant,
    seen: Mutex<Seen>,
    /// Reports counted, for the progress bar.
    progress: Arc<AtomicU64>,
    /// Reports of the run's records so far.
    answered: AtomicU64,
    /// Wake the waiter once `answered` reaches this (`u64::MAX`: not yet
    /// waiting).
    target: AtomicU64,
    all_answered: Notify,
    warm_up: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

/// Everything the reports said, behind one lock: taken once per report, by
/// the polling thread nearly always, so it is uncontended.
#[derive(Default)]
struct Seen {
    tally: Tally,
    order: DeliveryOrder,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, handoff_micros: usize) {
        let now = Instant::now();
        if handoff_micros == WARM_UP {
            if let Some(warm_up) = self.warm_up.lock().expect("not poisoned").take() {
                let _ = warm_up.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
            }
            return;
        }
        {
            let mut seen = self.seen.lock().expect("not poisoned");
            let seen = &mut *seen;
            match result {
                Ok(message) => {
                    let handoff = self.origin + Duration::from_micros(handoff_micros as u64);
                    seen.tally
                        .latency(now.saturating_duration_since(handoff), 1);
                    seen.tally.ok += 1;
                    match message.key().and_then(workload::parse_key) {
                        Some((stream, seq)) => {
                            seen.order
                                .report(stream, seq, message.partition(), message.offset());
                        }
                        None => seen.order.violations += 1,
                    }
                }
                Err((err, _)) => seen.tally.failed(1, || err.to_string()),
            }
        }
        self.progress.fetch_add(1, Ordering::Relaxed);
        let answered = self.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if answered >= self.target.load(Ordering::SeqCst) {
            self.all_answered.notify_waiters();
        }
    }
}

impl Reports {
    /// Waits until `expected` records of the run were reported.
    async fn wait_for(&self, expected: u64) {
        self.target.store(expected, Ordering::SeqCst);
        loop {
            let notified = self.all_answered.notified();
            if self.answered.load(Ordering::SeqCst) >= expected {
                return;
            }
            let _ = tokio::time::timeout(RECHECK, notified).await;
        }
    }
}

type Native = ThreadedProducer<Reports>;

/// Runs the workload through a `ThreadedProducer` and its callback.
pub async fn run(run: Run, config: &Config) -> Result<Measured, String> {
    let (warm_up_tx, warm_up_rx) = oneshot::channel();
    let reports = Reports {
        origin: Instant::now(),
        seen: Mutex::default(),
        progress: run.progress.clone(),
        answered: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        all_answered: Notify::new(),
        warm_up: Mutex::new(Some(warm_up_tx)),
    };
    let producer: Arc<Native> = Arc::new(
        config
            .client_config(&run.workload.bootstrap_servers)
            .create_with_context(reports)
            .map_err(|err| format!("cannot create the producer: {err}"))?,
    );
    let warm_up = BaseRecord::<(), _, _>::with_opaque_to(&run.workload.warmup_topic, WARM_UP)
        .payload("warm-up")
        .partition(0);
    producer
        .send(warm_up)
        .map_err(|(err, _)| format!("warm-up record refused: {err}"))?;
    warm_up_rx
        .await
        .map_err(|_| "the warm-up record got no report".to_owned())?
        .map_err(|err| format!("warm-up record failed: {err}"))?;

    let clock = Clock::start(None);
    let tasks: Vec<_> = (0..run.workload.streams)
        .map(|stream| {
            let source = run.source(stream, clock.start);
            tokio::spawn(send_stream(run.clone(), producer.clone(), source))
        })
        .collect();
    // Records handed over, and those refused outright (never reported).
    let mut sent = Tally::new();
    for task in tasks {
        sent.merge(
            task.await
                .map_err(|err| format!("a stream task failed: {err}"))?,
        );
    }
    let context = producer.context();
    context.wait_for(sent.handed - sent.failed).await;
    let mut total = {
        let mut seen = context.seen.lock().expect("not poisoned");
        let mut tally = std::mem::take(&mut seen.tally);
        tally.order.violations += seen.order.violations;
        tally
    };
    // The reports counted the acks and their failures; the streams, what
    // they handed over and what was refused before it could be reported.
    total.merge(sent);
    Ok(clock.stop(total.into_measured(0.0, run.cut_short.load(Ordering::Relaxed))))
}

/// Sends one stream's records in order; returns how many it handed over and
/// which were refused (the rest are counted by the callback).
async fn send_stream(run: Run, producer: Arc<Native>, mut source: Source) -> Tally {
    let origin = producer.context().origin;
    let mut tally = Tally::new();
    while let Some(slot) = source.next().await {
        tally.handed += slot.len as u64;
        let handoff = slot.handoff.saturating_duration_since(origin).as_micros() as usize;
        for seq in slot.first_seq..slot.first_seq + slot.len as u64 {
            let key = workload::key(source.stream, seq);
            let mut record = BaseRecord::with_opaque_to(&run.topic, handoff)
                .key(&key[..])
                .payload(&run.value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                    Err((err, _)) => {
                        tally.failed(1, || format!("refused: {err}"));
                        run.answered(1);
                        break;
                    }
                }
            }
        }
    }
    tally
}
