//! The workload every strategy produces: which records, in which order, at
//! which pace.
//!
//! Stream `s` produces records `0..n` of its share, in batches of `batch`
//! records. A record's key is 12 bytes, the stream (u32) and the sequence
//! number (u64), big-endian, so the partitioner spreads each stream over
//! every partition and the stored order can be checked from the key alone.
//! Its value is `record_bytes` bytes of filler.
//!
//! With a rate cap, each stream's batches are due at fixed times (a token
//! bucket refilled at `rate / streams` records per second, one batch at a
//! time) and latency is measured from the time a batch was due, not from
//! when it was sent: a client held back by backpressure still counts the
//! wait (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::proto::{ProduceRequest, Record};

use super::Strategy;

/// Bytes of a record key: stream id and sequence number.
pub const KEY_BYTES: usize = 12;

/// Everything a child process needs to run one strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub strategy: Strategy,
    /// The records of the whole run, over all streams.
    pub records: u64,
    pub record_bytes: usize,
    pub streams: usize,
    pub batch: usize,
    pub window: usize,
    pub linger_ms: u64,
    /// librdkafka's name of the codec.
    pub compression: String,
    /// Records per second over all streams, or as fast as it goes.
    pub rate: Option<f64>,
    /// The run stops handing records over after this long.
    pub time_budget: Duration,
    pub topic: String,
    /// A one-partition topic for the warm-up record, which connects the
    /// producer before the clock starts.
    pub warmup_topic: String,
    pub bootstrap_servers: String,
    /// A running gateway, for `gateway`; else one starts in process.
    pub target: Option<String>,
    /// Runs the gateway as a process of its own (`kafka-gateway serve`),
    /// so its peak RSS is measured apart from the client's.
    #[serde(default)]
    pub gateway_process: bool,
    pub connections: usize,
    /// `KEY=VALUE` librdkafka properties for every producer.
    #[serde(default)]
    pub librdkafka_options: Vec<String>,
}

impl Workload {
    /// Records stream `stream` produces.
    pub fn stream_records(&self, stream: usize) -> u64 {
        let streams = self.streams as u64;
        self.records / streams + u64::from((stream as u64) < self.records % streams)
    }

    /// Payload bytes of one record: key and value.
    pub fn record_size(&self) -> usize {
        KEY_BYTES + self.record_bytes
    }
}

/// The key of record `seq` of stream `stream`.
pub fn key(stream: u32, seq: u64) -> [u8; KEY_BYTES] {
    let mut key = [0; KEY_BYTES];
    key[..4].copy_from_slice(&stream.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The stream and sequence number in a key, if it is one of ours.
pub fn parse_key(key: &[u8]) -> Option<(u32, u64)> {
    let key: &[u8; KEY_BYTES] = key.try_into().ok()?;
    let stream = u32::from_be_bytes(key[..4].try_into().ok()?);
    let seq = u64::from_be_bytes(key[4..].try_into().ok()?);
    Some((stream, seq))
}

/// The filler every value shares.
pub fn value(record_bytes: usize) -> Bytes {
    Bytes::from(
        (0..record_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// One batch's worth of a stream's records.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Sequence number of its first record.
    pub first_seq: u64,
    pub len: usize,
    /// Where latency is measured from: when the batch was due (with a rate
    /// cap), or when it was handed over.
    pub handoff: Instant,
}

/// Hands out one stream's batches, paced and bounded in time.
pub struct Source {
    pub stream: u32,
    next_seq: u64,
    end_seq: u64,
    batch: usize,
    /// When each batch is due, with a rate cap: `start + k * interval`.
    pacing: Option<(Instant, Duration)>,
    batches: u32,
    deadline: Instant,
    /// Set by any stream that stopped at the deadline.
    cut_short: Arc<AtomicBool>,
}

impl Source {
    pub fn new(
        workload: &Workload,
        stream: usize,
        start: Instant,
        cut_short: Arc<AtomicBool>,
    ) -> Self {
        let pacing = workload.rate.map(|rate| {
            let per_stream = rate / workload.streams as f64;
            let interval = Duration::from_secs_f64(workload.batch as f64 / per_stream);
            // Streams take turns rather than all firing at the same instant.
            let offset = interval.mul_f64(stream as f64 / workload.streams as f64);
            (start + offset, interval)
        });
        Self {
            stream: stream as u32,
            next_seq: 0,
            end_seq: workload.stream_records(stream),
            batch: workload.batch,
            pacing,
            batches: 0,
            deadline: start + workload.time_budget,
            cut_short,
        }
    }

    /// When the next batch is due (now, without a rate cap), or `None` when
    /// the stream is done or out of time.
    pub fn due(&self) -> Option<Instant> {
        if self.next_seq >= self.end_seq {
            return None;
        }
        let due = match self.pacing {
            Some((start, interval)) => start + interval * self.batches,
            None => Instant::now(),
        };
        if due >= self.deadline || Instant::now() >= self.deadline {
            self.cut_short.store(true, Ordering::Relaxed);
            return None;
        }
        Some(due)
    }

    /// Waits until the next batch is due and takes it; `None` when done.
    pub async fn next(&mut self) -> Option<Slot> {
        let due = self.due()?;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        Some(self.take(due))
    }

    /// Takes the next batch, due at `due` (from [`Source::due`]).
    pub fn take(&mut self, due: Instant) -> Slot {
        let len = (self.end_seq - self.next_seq).min(self.batch as u64) as usize;
        let slot = Slot {
            first_seq: self.next_seq,
            len,
            handoff: if self.pacing.is_some() {
                due
            } else {
                Instant::now()
            },
        };
        self.next_seq += len as u64;
        self.batches += 1;
        slot
    }
}

/// The gRPC request for `slot`: one allocation for all its keys, the value
/// shared.
pub fn request(stream: u32, slot: &Slot, topic: &str, value: &Bytes) -> ProduceRequest {
    let mut keys = BytesMut::with_capacity(slot.len * KEY_BYTES);
    for seq in slot.first_seq..slot.first_seq + slot.len as u64 {
        keys.put_slice(&key(stream, seq));
    }
    let keys = keys.freeze();
    ProduceRequest {
        batch_id: slot.first_seq,
        topic: topic.to_owned(),
        records: (0..slot.len)
            .map(|i| Record {
                key: Some(keys.slice(i * KEY_BYTES..(i + 1) * KEY_BYTES)),
                value: Some(value.clone()),
                ..Record::default()
            })
            .collect(),
        // The acks need not repeat the topic: the fast path clients use.
        compact_acks: true,
        skip_dead_letter: false,
        transactional_id: String::new(),
        commit: false,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small workload, for the tests of the bench's modules.
    pub(in crate::bench) fn workload(records: u64, streams: usize, rate: Option<f64>) -> Workload {
        Workload {
            strategy: Strategy::Direct,
            records,
            record_bytes: 10,
            streams,
            batch: 4,
            window: 100,
            linger_ms: 5,
            compression: "none".into(),
            rate,
            time_budget: Duration::from_secs(60),
            topic: "t".into(),
            warmup_topic: "w".into(),
            bootstrap_servers: "x".into(),
            target: None,
            gateway_process: false,
            connections: 1,
            librdkafka_options: Vec::new(),
        }
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(parse_key(&key(7, 1 << 40)), Some((7, 1 << 40)));
        assert_eq!(parse_key(b"short"), None);
    }

    #[test]
    fn records_are_spread_over_streams() {
        let w = workload(10, 3, None);
        let shares: Vec<u64> = (0..3).map(|s| w.stream_records(s)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
    }

    #[tokio::test]
    async fn a_source_hands_out_every_record_once_in_batches() {
        let w = workload(10, 1, None);
        let mut source = Source::new(&w, 0, Instant::now(), Arc::default());
        let mut seen = Vec::new();
        while let Some(slot) = source.next().await {
            seen.push((slot.first_seq, slot.len));
        }
        assert_eq!(seen, vec![(0, 4), (4, 4), (8, 2)]);
        let request = request(
            3,
            &Slot {
                first_seq: 8,
                len: 2,
                handoff: Instant::now(),
            },
            "t",
            &value(10),
        );
        assert_eq!(request.records.len(), 2);
        assert_eq!(
            parse_key(request.records[1].key.as_ref().unwrap()),
            Some((3, 9))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_cap_spaces_batches_and_dates_them_when_due() {
        // 2 streams at 8 records/s: 4 per stream per second, one batch of 4
        // per second each.
        let w = workload(16, 2, Some(8.0));
        let start = Instant::now();
        let mut source = Source::new(&w, 1, start, Arc::default());
        let first = source.next().await.unwrap();
        let second = source.next().await.unwrap();
        assert_eq!(first.handoff - start, Duration::from_millis(500));
        assert_eq!(second.handoff - first.handoff, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_a_run_short() {
        let mut w = workload(1_000, 1, Some(4.0));
        w.time_budget = Duration::from_millis(2_500);
        let cut = Arc::new(AtomicBool::new(false));
        let mut source = Source::new(&w, 0, Instant::now(), cut.clone());
        let mut batches = 0;
        while source.next().await.is_some() {
            batches += 1;
        }
        assert_eq!(batches, 3, "due at 0 s, 1 s and 2 s");
        assert!(cut.load(Ordering::Relaxed));
    }
}
