//! The gateway's promises, checked the same way after every fault: what the
//! clients sent and were told, against what Kafka holds.
//!
//! - every acked record is stored, once, at its acked partition (and, where
//!   the broker reports offsets faithfully, at its acked offset), with its
//!   key and value;
//! - nothing is stored twice, and nothing is stored that was never sent;
//! - per stream and partition, the stored order is the send order;
//! - a record refused with a non-retriable error is not stored;
//! - every batch is answered, in order, or its stream ended with a status.
//!
//! Records are told apart by their values, which [`numbered`] makes unique:
//! `s{stream}-b{batch}-r{index}`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, ProduceResponse, Record, record_result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use super::{Consumed, batch, record};

/// What one client stream sent and was told.
#[derive(Debug)]
pub struct StreamOutcome {
    pub stream: usize,
    /// Every batch sent, in order.
    pub sent: Vec<ProduceRequest>,
    /// Every response received, in order.
    pub responses: Vec<ProduceResponse>,
    /// The status the stream ended with, if not OK.
    pub end: Option<Status>,
    /// When the first and the last response arrived.
    pub first_answer: Option<std::time::Instant>,
    pub last_answer: Option<std::time::Instant>,
}

/// Batch `b` of stream `stream`: `per_batch` records with unique values,
/// keys spread over `keys` keys.
pub fn numbered(
    stream: usize,
    b: usize,
    per_batch: usize,
    keys: usize,
    topic: &str,
) -> ProduceRequest {
    let records = (0..per_batch)
        .map(|i| {
            record(
                format!("s{stream}-k{}", (b * per_batch + i) % keys),
                format!("s{stream}-b{b}-r{i}"),
            )
        })
        .collect();
    batch(b as u64, topic, records)
}

/// The (stream, batch, index) a value names (whatever padding follows).
fn identity(value: &[u8]) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let mut number = |prefix: char| -> Option<usize> {
        let digits = parts.next()?.strip_prefix(prefix)?;
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse().ok()
    };
    Some((number('s')?, number('b')?, number('r')?))
}

/// Sends `batches` on one `Produce` stream, `pace` apart, until they are all
/// sent or the stream ends; collects everything the gateway answered.
pub async fn drive_stream(
    client: &mut ProducerClient<Channel>,
    stream: usize,
    batches: Vec<ProduceRequest>,
    pace: Duration,
) -> StreamOutcome {
    let (tx, rx) = mpsc::channel(4);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let feeder = tokio::spawn(async move {
        for request in batches {
            if tx.send(request.clone()).await.is_err() {
                break;
            }
            let _ = sent_tx.send(request);
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
    });
    let mut responses = Vec::new();
    let mut end = None;
    let (mut first_answer, mut last_answer) = (None, None);
    match client.produce(ReceiverStream::new(rx)).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => {
                        let now = std::time::Instant::now();
                        first_answer.get_or_insert(now);
                        last_answer = Some(now);
                        responses.push(response);
                    }
                    Ok(None) => break,
                    Err(status) => {
                        end = Some(status);
                        break;
                    }
                }
            }
        }
        Err(status) => end = Some(status),
    }
    feeder.abort();
    let _ = feeder.await;
    let mut sent = Vec::new();
    while let Ok(request) = sent_rx.try_recv() {
        sent.push(request);
    }
    StreamOutcome {
        stream,
        sent,
        responses,
        end,
        first_answer,
        last_answer,
    }
}

/// Checks that the gateway serves a new stream on a new connection after a
/// fault: a record to `topic` is acked. Like any client, it sends the record
/// again after a retriable error (a producer being replaced, a broker just
/// back), for up to 10 s. Returns the attempts it took.
pub async fn assert_serves_a_fresh_stream(gateway: &super::TestGateway, topic: &str) -> usize {
    let mut client = gateway.client().await;
    for attempt in 1..=20 {
        let request = batch(0, topic, vec![record("fresh", "fresh stream")]);
        let responses = super::produce_stream(&mut client, vec![request]).await;
        let result = &responses[0].as_ref().expect("a response").results[0];
        match &result.result {
            Some(record_result::Result::Ok(_)) => return attempt,
            Some(record_result::Result::Error(error)) if error.retriable => {
                eprintln!("fresh stream, attempt {attempt}: {}", error.message);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => panic!("the fresh stream's record: {other:?}"),
        }
    }
    panic!("no fresh stream was served within 10 s");
}

/// Whether acked offsets can be compared with where records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offsets {
    /// The broker reports where it stored each record (the embedded one).
    Exact,
    /// Only partitions are compared (tansu 0.6 may ack a retried write at
    /// a wrong offset).
    PartitionOnly,
}

/// Whether the broker deduplicates a retried write of the idempotent
/// producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// It does (Kafka, tansu): a record stored twice is a broken promise.
    Deduplicated,
    /// It does not: librdkafka's mock cluster checks sequence numbers only
    /// for transactional producers, so a request retried after a lost
    /// response is stored again. Such copies are counted, not failed; the
    /// acked copy must still be where the ack says, and order is checked on
    /// the acked copies.
    Stored,
}

/// The figures of one check.
#[derive(Debug, Default)]
pub struct Verdict {
    pub records_sent: usize,
    pub acked: usize,
    /// Error results by code.
    pub failed: BTreeMap<String, usize>,
    /// Records of batches that got no response.
    pub unanswered: usize,
    pub stored: usize,
    /// Records that got an error saying they may be stored
    /// (`may_be_stored`), and are.
    pub stored_after_retriable_error: usize,
    pub stored_unanswered: usize,
    /// Extra copies of retried writes, on a broker that does not
    /// deduplicate them ([`Retries::Stored`]).
    pub retry_copies: usize,
    /// Acks at offset -1 (stored, position unknown).
    pub acked_without_offset: usize,
    // Violations: each must be zero.
    pub lost: Vec<String>,
    pub duplicates: Vec<String>,
    pub misplaced: Vec<String>,
    pub order_breaks: Vec<String>,
    pub stored_after_refusal: Vec<String>,
    /// Stored although their error said they were not (`may_be_stored`
    /// false).
    pub stored_though_not: Vec<String>,
    pub unknown_stored: Vec<String>,
    pub unanswered_without_status: Vec<String>,
    pub answers_out_of_order: Vec<String>,
}

impl Verdict {
    fn violations(&self) -> usize {
        self.lost.len()
            + self.duplicates.len()
            + self.misplaced.len()
            + self.order_breaks.len()
            + self.stored_after_refusal.len()
            + self.stored_though_not.len()
            + self.unknown_stored.len()
            + self.unanswered_without_status.len()
            + self.answers_out_of_order.len()
    }

    /// Panics with every figure and the first examples when a promise broke.
    #[track_caller]
    pub fn assert_holds(&self) {
        assert!(self.records_sent > 0, "the check saw no record");
        assert_eq!(self.violations(), 0, "a promise broke:\n{self}");
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} records: acked {}, failed {:?}, unanswered {}; stored {} \
             ({} after a retriable error, {} unanswered, {} copies of retried writes); \
             acks without an offset {}",
            self.records_sent,
            self.acked,
            self.failed,
            self.unanswered,
            self.stored,
            self.stored_after_retriable_error,
            self.stored_unanswered,
            self.retry_copies,
            self.acked_without_offset
        )?;
        write!(
            f,
            "lost {}, duplicates {}, misplaced {}, order breaks {}, stored after refusal {}, \
             stored though their error said not {}, stored never sent {}, unanswered without \
             status {}, answers out of order {}",
            self.lost.len(),
            self.duplicates.len(),
            self.misplaced.len(),
            self.order_breaks.len(),
            self.stored_after_refusal.len(),
            self.stored_though_not.len(),
            self.unknown_stored.len(),
            self.unanswered_without_status.len(),
            self.answers_out_of_order.len()
        )?;
        for (name, list) in [
            ("lost", &self.lost),
            ("duplicates", &self.duplicates),
            ("misplaced", &self.misplaced),
            ("order breaks", &self.order_breaks),
            ("stored after refusal", &self.stored_after_refusal),
            (
                "stored though their error said not",
                &self.stored_though_not,
            ),
            ("stored never sent", &self.unknown_stored),
            ("unanswered without status", &self.unanswered_without_status),
            ("answers out of order", &self.answers_out_of_order),
        ] {
            if !list.is_empty() {
                write!(f, "\n  {name}: {:?}", &list[..list.len().min(5)])?;
            }
        }
        Ok(())
    }
}

/// What the client was told about one record.
enum Told {
    Ok {
        partition: i32,
        offset: i64,
    },
    Failed {
        retriable: bool,
        may_be_stored: bool,
    },
    Unanswered,
}

/// Checks `outcomes` against `stored`, everything read from their topic(s).
pub fn check(
    outcomes: &[StreamOutcome],
    stored: &[Consumed],
    offsets: Offsets,
    retries: Retries,
) -> Verdict {
    let mut verdict = Verdict::default();
    // (stream, batch, index) -> what the client was told, and the record.
    let mut told: HashMap<(usize, usize, usize), (Told, &Record)> = HashMap::new();
    for outcome in outcomes {
        let s = outcome.stream;
        if outcome.responses.len() > outcome.sent.len() {
            verdict.answers_out_of_order.push(format!(
                "stream {s}: {} responses for {} batches",
                outcome.responses.len(),
                outcome.sent.len()
            ));
        }
        for (b, request) in outcome.sent.iter().enumerate() {
            verdict.records_sent += request.records.len();
            let response = outcome.responses.get(b);
            if let Some(response) = response
                && (response.batch_id != request.batch_id
                    || response.results.len() != request.records.len())
            {
                verdict.answers_out_of_order.push(format!(
                    "stream {s}: response {b} is batch {} with {} results, not batch {} with {}",
                    response.batch_id,
                    response.results.len(),
                    request.batch_id,
                    request.records.len()
                ));
            }
            for (i, record) in request.records.iter().enumerate() {
                let what = match response.and_then(|r| r.results.get(i)) {
                    None => {
                        verdict.unanswered += 1;
                        Told::Unanswered
                    }
                    Some(result) => match &result.result {
                        Some(record_result::Result::Ok(meta)) => {
                            verdict.acked += 1;
                            Told::Ok {
                                partition: meta.partition,
                                offset: meta.offset,
                            }
                        }
                        Some(record_result::Result::Error(error)) => {
                            let code = ErrorCode::try_from(error.code)
                                .map_or("?", |c| c.as_str_name())
                                .to_owned();
                            *verdict.failed.entry(code).or_default() += 1;
                            Told::Failed {
                                retriable: error.retriable,
                                may_be_stored: error.may_be_stored,
                            }
                        }
                        None => Told::Failed {
                            retriable: false,
                            may_be_stored: false,
                        },
                    },
                };
                told.insert((s, b, i), (what, record));
            }
        }
        if outcome.responses.len() < outcome.sent.len() && outcome.end.is_none() {
            verdict.unanswered_without_status.push(format!(
                "stream {s}: {} of {} batches answered and the stream ended OK",
                outcome.responses.len(),
                outcome.sent.len()
            ));
        }
    }

    // Where each sent record is stored.
    let mut found: HashMap<(usize, usize, usize), Vec<&Consumed>> = HashMap::new();
    let told = told;
    for consumed in stored {
        verdict.stored += 1;
        let id = consumed.value.as_deref().and_then(identity);
        match id {
            Some(id) if told.contains_key(&id) => found.entry(id).or_default().push(consumed),
            _ => verdict.unknown_stored.push(format!(
                "{:?} at {}/{}",
                consumed.value.as_deref().map(String::from_utf8_lossy),
                consumed.partition,
                consumed.offset
            )),
        }
    }
    for (id, (what, record)) in &told {
        let Some(copies) = found.get_mut(id) else {
            if let Told::Ok { partition, offset } = what {
                verdict
                    .lost
                    .push(format!("{id:?} acked at {partition}/{offset}"));
            }
            continue;
        };
        if copies.len() > 1 && retries == Retries::Stored {
            // Keep the acked copy (or the first), count the others.
            let keep = match what {
                Told::Ok { partition, offset } => copies
                    .iter()
                    .position(|c| c.partition == *partition && c.offset == *offset)
                    .unwrap_or(0),
                _ => 0,
            };
            let kept = copies[keep];
            verdict.retry_copies += copies.len() - 1;
            *copies = vec![kept];
        }
        let copies = &copies[..];
        if copies.len() > 1 {
            let at: Vec<String> = copies
                .iter()
                .map(|c| format!("{}/{}", c.partition, c.offset))
                .collect();
            verdict
                .duplicates
                .push(format!("{id:?} stored {} times: {at:?}", copies.len()));
        }
        match (what, copies.first()) {
            (Told::Ok { partition, offset }, Some(copy)) => {
                // Offset -1: the broker confirmed a retried write without
                // saying where (the contract allows it); counted, not failed.
                if *offset < 0 {
                    verdict.acked_without_offset += 1;
                }
                let wrong_place = copy.partition != *partition
                    || (offsets == Offsets::Exact && *offset >= 0 && copy.offset != *offset);
                let wrong_content = copy.key.as_deref() != record.key.as_deref()
                    || copy.value.as_deref() != record.value.as_deref();
                if wrong_place || wrong_content {
                    verdict.misplaced.push(format!(
                        "{id:?} acked at {partition}/{offset}, stored at {}/{}",
                        copy.partition, copy.offset
                    ));
                }
            }
            (_, None) => {}
            (
                Told::Failed {
                    may_be_stored: true,
                    ..
                },
                Some(_),
            ) => verdict.stored_after_retriable_error += 1,
            (
                Told::Failed {
                    retriable: true, ..
                },
                Some(copy),
            ) => verdict
                .stored_though_not
                .push(format!("{id:?} at {}/{}", copy.partition, copy.offset)),
            (
                Told::Failed {
                    retriable: false, ..
                },
                Some(copy),
            ) => verdict
                .stored_after_refusal
                .push(format!("{id:?} at {}/{}", copy.partition, copy.offset)),
            (Told::Unanswered, Some(_)) => verdict.stored_unanswered += 1,
        }
    }

    // Per stream and partition, stored order = send order.
    // (stream, partition) -> (offset, (batch, index)) of its stored records.
    type Placed = Vec<(i64, (usize, usize))>;
    let mut by_stream_partition: BTreeMap<(usize, i32), Placed> = BTreeMap::new();
    for ((s, b, i), copies) in &found {
        for copy in copies {
            by_stream_partition
                .entry((*s, copy.partition))
                .or_default()
                .push((copy.offset, (*b, *i)));
        }
    }
    for ((s, partition), mut records) in by_stream_partition {
        records.sort();
        for pair in records.windows(2) {
            if pair[0].1 >= pair[1].1 {
                verdict.order_breaks.push(format!(
                    "stream {s} partition {partition}: {:?} at offset {} before {:?} at {}",
                    pair[0].1, pair[0].0, pair[1].1, pair[1].0
                ));
            }
        }
    }
    verdict
}
