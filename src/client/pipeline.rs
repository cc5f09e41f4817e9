//! One `Produce` stream fed from the input, in two halves:
//!
//! - the feeder reads lines, parses them and gathers them into batches; it
//!   sends a batch when it is full or when its first line has waited
//!   `linger`. Before sending, it takes one of `max_in_flight` slots, so at
//!   most that many batches are unacknowledged: when they are all taken,
//!   the feeder stops reading, and a slow gateway slows the input down
//!   instead of filling memory;
//! - the collector takes the batches in the order they were sent, waits for
//!   each one's response (the gateway answers in order) and matches its
//!   results to the batch's input lines; then the slot is free again.
//!
//! Malformed lines travel in their batch without being sent, so every line
//! is reported in input order. When the stream breaks, the collector stops
//! the feeder; records sent but not answered, and records read but not
//! sent, are reported as such.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncBufRead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::input::{Line, LineParser, LineReader, MAX_LINE_BYTES};
use super::report::{
    Console, Counters, Failure, MALFORMED_INPUT, NOT_ACKNOWLEDGED, NOT_SENT, Reporter,
};
use crate::produce::validate::record_size;
use crate::proto::record_result::Result as Outcome;
use crate::proto::{ProduceRequest, ProduceResponse, Record};

/// How records are gathered into batches.
#[derive(Debug, Clone)]
pub struct Batching {
    /// Lines in one batch (records and malformed lines).
    pub max_records: usize,
    /// Payload bytes (key + value + headers) in one batch; a record larger
    /// than this goes alone.
    pub max_bytes: usize,
    /// How long a partial batch waits for more lines.
    pub linger: Duration,
    /// Batches sent and not yet answered.
    pub max_in_flight: usize,
    /// Makes the stream transactional, with this id.
    pub transactional_id: Option<String>,
    /// In a transactional stream, commit once this many records were sent
    /// since the last commit (and at the end of the input).
    pub commit_every: Option<u64>,
}

/// One input line of a batch.
#[derive(Debug)]
struct Entry {
    line: u64,
    /// The line as read; `None` for a line too long to keep.
    input: Option<Bytes>,
    /// Why the line is not a record; `None` for a record, which is sent as
    /// the batch's next one.
    malformed: Option<String>,
}

impl Entry {
    /// How the line failed: as malformed, for its own reason, if it is;
    /// else with `code` and `message`.
    fn failure(self, code: &str, message: String, retriable: bool) -> Failure {
        match self.malformed {
            Some(why) => Failure {
                line: self.line,
                code: MALFORMED_INPUT.into(),
                message: why,
                retriable: false,
                input: self.input,
                dead_letter: None,
            },
            None => Failure {
                line: self.line,
                code: code.into(),
                message,
                retriable,
                input: self.input,
                dead_letter: None,
            },
        }
    }
}

/// A batch handed to the stream, waiting for its response.
#[derive(Debug)]
struct Pending {
    /// `None` when the batch holds only malformed lines: nothing was sent.
    batch_id: Option<u64>,
    /// Records sent.
    records: usize,
    /// Whether the batch commits its transaction.
    commit: bool,
    entries: Vec<Entry>,
    /// Returned when the batch is answered: what bounds the batches in
    /// flight.
    _slot: OwnedSemaphorePermit,
}

/// Why the feeder stopped reading.
#[derive(Debug)]
pub enum InputEnd {
    /// The input ended.
    Exhausted,
    /// The interrupt fired (Ctrl-C).
    Interrupted,
    /// Reading failed.
    Failed(std::io::Error),
    /// The stream broke: the collector stopped the feeder.
    StreamBroke,
}

/// How a run of the stream ended.
#[derive(Debug)]
pub struct Ended {
    pub input: InputEnd,
    /// The last line read.
    pub last_line: u64,
    /// Why the stream broke, if it did.
    pub broke: Option<Broke>,
    /// Records sent and never answered, when the stream broke.
    pub not_acknowledged: u64,
    /// Records read and not sent, when the stream broke.
    pub not_sent: u64,
}

/// Why a stream broke, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broke {
    pub reason: String,
    pub fix: &'static str,
}

impl Broke {
    /// A stream the gateway (or the network) ended.
    pub fn status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let mut reason = format!("{:?}: {}", status.code(), status.message());
        if let Some(source) = std::error::Error::source(status) {
            reason.push_str(&format!(" ({})", super::error_chain(source)));
        }
        let fix = match status.code() {
            Code::ResourceExhausted => {
                "lower --batch-records or --batch-bytes below the gateway's --max-batch-records \
                 and --max-batch-bytes"
            }
            Code::Unimplemented => "point --target at a kafka-gateway",
            Code::Unauthenticated | Code::PermissionDenied => {
                "check the credentials: the token (--token-file, --token or KAFKA_GATEWAY_TOKEN) \
                 or the client certificate (--tls-cert and --tls-key)"
            }
            _ => UNREACHABLE_FIX,
        };
        Self { reason, fix }
    }

    /// A gateway that answered out of turn.
    fn protocol(reason: String) -> Self {
        Self {
            reason,
            fix: "point --target at a kafka-gateway",
        }
    }
}

/// What to do when the gateway went away.
const UNREACHABLE_FIX: &str = "check that the gateway is running and reachable at --target";

/// The stream stopped taking batches.
struct Broken;

/// Runs the stream: feeds it from `reader` until the input ends, the
/// interrupt fires or the stream breaks, and reports every line's outcome to
/// `reporter`, in input order. `requests` is the request side of the open
/// stream whose responses are `responses`.
#[allow(clippy::too_many_arguments)]
pub async fn run<R>(
    reader: LineReader<R>,
    parser: LineParser,
    topic: String,
    batching: Batching,
    requests: mpsc::Sender<ProduceRequest>,
    mut responses: Streaming<ProduceResponse>,
    reporter: &mut Reporter,
    counters: Arc<Counters>,
    interrupt: impl Future<Output = ()> + Send + 'static,
    // Warn if the first line is a JSON object (text input, not --quiet).
    json_hint: bool,
) -> Ended
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(batching.max_in_flight));
    // The input lines of the records of recent batches, kept by the feeder
    // as it sends them: an aborted transaction's message names its failed
    // record by batch and index, and that batch may be one the collector
    // has not reached yet.
    let lines = Arc::new(std::sync::Mutex::new(BatchLines::new(
        batching.max_in_flight * 2 + 2,
    )));
    // Never full: there are as many places as slots.
    let (pending_tx, mut pending) = mpsc::channel(batching.max_in_flight);
    let broken = CancellationToken::new();
    let feeder = Feeder {
        reader,
        parser,
        topic,
        batching: batching.clone(),
        counters,
        slots: slots.clone(),
        pending: pending_tx,
        requests,
        broken: broken.clone(),
        entries: Vec::new(),
        records: Vec::new(),
        bytes: 0,
        deadline: None,
        last_batch_id: 0,
        uncommitted: (0, 0),
        json_hint: json_hint.then(|| reporter.console()),
        lines: lines.clone(),
    };
    let feeder = tokio::spawn(feeder.run(interrupt));

    let mut not_acknowledged = 0;
    // The input lines of the records of recent batches: an aborted
    // transaction's message names its failed record by batch and index.
    // Whether the transaction going on has acked records (then it was
    // committed).
    let mut transaction_acked = false;
    let broke = loop {
        let Some(batch) = pending.recv().await else {
            break None;
        };
        let Some(batch_id) = batch.batch_id else {
            report(reporter, batch, ProduceResponse::default(), &lines);
            continue;
        };
        let commit = batch.commit;
        match responses.message().await {
            Ok(Some(response)) if response.batch_id != batch_id => {
                not_acknowledged += unanswered(reporter, batch, NOT_ACKNOWLEDGED);
                break Some(Broke::protocol(format!(
                    "the gateway answered batch {} when batch {batch_id} was due",
                    response.batch_id
                )));
            }
            Ok(Some(response)) if response.results.len() != batch.records => {
                let results = response.results.len();
                let records = batch.records;
                not_acknowledged += unanswered(reporter, batch, NOT_ACKNOWLEDGED);
                break Some(Broke::protocol(format!(
                    "the gateway answered batch {batch_id} of {records} records with \
                     {results} results"
                )));
            }
            Ok(Some(response)) => {
                transaction_acked |= report(reporter, batch, response, &lines);
                if commit && std::mem::take(&mut transaction_acked) {
                    reporter.committed();
                }
            }
            Ok(None) => {
                not_acknowledged += unanswered(reporter, batch, NOT_ACKNOWLEDGED);
                break Some(Broke {
                    reason: format!(
                        "the gateway ended the stream without answering batch {batch_id}"
                    ),
                    fix: UNREACHABLE_FIX,
                });
            }
            Err(status) => {
                not_acknowledged += unanswered(reporter, batch, NOT_ACKNOWLEDGED);
                break Some(Broke::status(&status));
            }
        }
    };
    if broke.is_none() && transaction_acked {
        // The end of the input committed the rest.
        reporter.committed();
    }
    if broke.is_some() {
        broken.cancel();
        slots.close();
        pending.close();
        while let Some(batch) = pending.recv().await {
            not_acknowledged += unanswered(reporter, batch, NOT_ACKNOWLEDGED);
        }
    }
    let fed = feeder.await.expect("the feeder does not panic");
    let not_sent = fed
        .unsent
        .into_iter()
        .map(|entry| {
            let sendable = entry.malformed.is_none();
            reporter.failed(entry.failure(
                NOT_SENT,
                "read but not sent: the stream broke first; it is not stored".into(),
                true,
            ));
            u64::from(sendable)
        })
        .sum();
    reporter.flush();
    Ended {
        input: fed.end,
        last_line: fed.last_line,
        broke,
        not_acknowledged,
        not_sent,
    }
}

/// Reports a batch's lines with the results of its records in `response`;
/// returns whether any was acked. Acks are counted per partition for the
/// whole batch (each printed with its line under --print-acks): their topic
/// is the response's (compact acks) unless an ack names its own.
fn report(
    reporter: &mut Reporter,
    batch: Pending,
    response: ProduceResponse,
    lines: &std::sync::Mutex<BatchLines>,
) -> bool {
    let mut any_acked = false;
    // (partition, acks) of the batch's topic; other topics one by one.
    let mut acked: Vec<(i32, u64)> = Vec::new();
    let mut results = response.results.into_iter();
    for entry in batch.entries {
        if entry.malformed.is_some() {
            // Not sent: no result of its own.
            reporter.failed(entry.failure(MALFORMED_INPUT, String::new(), false));
            continue;
        }
        let outcome = results.next().and_then(|result| result.result);
        any_acked |= matches!(outcome, Some(Outcome::Ok(_)));
        match outcome {
            Some(Outcome::Ok(meta)) if reporter.prints_acks() => {
                let topic = if meta.topic.is_empty() {
                    &response.topic
                } else {
                    &meta.topic
                };
                reporter.acked_line(entry.line, topic, meta.partition, meta.offset);
            }
            Some(Outcome::Ok(meta)) if meta.topic.is_empty() || meta.topic == response.topic => {
                match acked.iter_mut().find(|(p, _)| *p == meta.partition) {
                    Some((_, n)) => *n += 1,
                    None => acked.push((meta.partition, 1)),
                }
            }
            Some(Outcome::Ok(meta)) => reporter.acked(&meta),
            Some(Outcome::Error(mut error)) => {
                error.message = lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .name_lines(&error.message);
                reporter.failed(Failure::from_gateway(entry.line, &error, entry.input))
            }
            None => reporter.failed(entry.failure(
                "ERROR_CODE_UNSPECIFIED",
                "the gateway's result for this record is empty".into(),
                false,
            )),
        }
    }
    for (partition, count) in acked {
        reporter.acked_many(&response.topic, partition, count);
    }
    reporter.flush();
    any_acked
}

/// The input lines of the records of the last few batches, by batch id.
#[derive(Debug)]
struct BatchLines {
    batches: std::collections::VecDeque<(u64, Vec<u64>)>,
    keep: usize,
}

impl BatchLines {
    fn new(keep: usize) -> Self {
        Self {
            batches: std::collections::VecDeque::new(),
            keep,
        }
    }

    /// Remembers the lines of the records (not the malformed lines) of
    /// batch `batch_id`.
    fn add(&mut self, batch_id: u64, entries: &[Entry]) {
        if self.batches.len() >= self.keep {
            self.batches.pop_front();
        }
        let records = entries
            .iter()
            .filter(|entry| entry.malformed.is_none())
            .map(|entry| entry.line)
            .collect();
        self.batches.push_back((batch_id, records));
    }

    /// The input line of record `index` (from 0) of batch `batch_id`.
    fn line(&self, batch_id: u64, index: usize) -> Option<u64> {
        self.batches
            .iter()
            .find(|(id, _)| *id == batch_id)
            .and_then(|(_, lines)| lines.get(index).copied())
    }

    /// `message` with the gateway's name of a record (its index in the
    /// request with a given `batch_id`: `records[I] of the request with
    /// batch_id B`, or an older gateway's `record I of batch B`) as the
    /// user's `line N`. Anything else, a batch no longer remembered
    /// included, is left as it is.
    fn name_lines(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(at) = rest.find("record") {
            out.push_str(&rest[..at]);
            let candidate = &rest[at..];
            let named = gateway_record_name(candidate).and_then(|(batch_id, index, tail)| {
                Some((self.line(batch_id, usize::try_from(index).ok()?)?, tail))
            });
            match named {
                Some((line, tail)) => {
                    out.push_str(&format!("line {line}"));
                    rest = tail;
                }
                None => {
                    out.push_str("record");
                    rest = &candidate["record".len()..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The gateway's name of a record that `s` starts with: (batch id, index
/// from 0, what follows the name).
fn gateway_record_name(s: &str) -> Option<(u64, u64, &str)> {
    if let Some(tail) = s.strip_prefix("records[") {
        let (index, tail) = split_number(tail)?;
        let tail = tail.strip_prefix("] of the request with batch_id ")?;
        let (batch_id, tail) = split_number(tail)?;
        return Some((batch_id, index, tail));
    }
    let tail = s.strip_prefix("record ")?;
    let (index, tail) = split_number(tail)?;
    let tail = tail.strip_prefix(" of batch ")?;
    let (batch_id, tail) = split_number(tail)?;
    Some((batch_id, index, tail))
}

/// The number `s` starts with, and what follows it.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// Whether a text line is a JSON object, as with --format json.
fn looks_like_json(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii();
    trimmed.first() == Some(&b'{')
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(trimmed).is_ok()
}

/// Reports a batch that got no response; returns how many of its records
/// were sent.
fn unanswered(reporter: &mut Reporter, batch: Pending, code: &str) -> u64 {
    let sent = batch.records as u64;
    for entry in batch.entries {
        reporter.failed(
            entry.failure(
                code,
                "sent, but the stream broke before the gateway acknowledged it: \
             it may or may not be stored"
                    .into(),
                true,
            ),
        );
    }
    sent
}

/// What the feeder returns.
struct Fed {
    end: InputEnd,
    last_line: u64,
    /// Lines read and not handed to the stream (when it broke).
    unsent: Vec<Entry>,
}

/// Reads lines into batches and sends them.
struct Feeder<R> {
    reader: LineReader<R>,
    parser: LineParser,
    /// The batches' default topic.
    topic: String,
    batching: Batching,
    counters: Arc<Counters>,
    /// One per unanswered batch.
    slots: Arc<Semaphore>,
    /// Batches sent, in order, to the collector.
    pending: mpsc::Sender<Pending>,
    /// The request side of the stream.
    requests: mpsc::Sender<ProduceRequest>,
    /// Cancelled by the collector when the stream breaks.
    broken: CancellationToken,
    /// The batch being gathered: its lines, its records and their bytes.
    entries: Vec<Entry>,
    records: Vec<Record>,
    bytes: usize,
    /// When the batch being gathered must go, however small.
    deadline: Option<Instant>,
    last_batch_id: u64,
    /// In a transactional stream: batches and records sent since the last
    /// commit.
    uncommitted: (usize, u64),
    /// Where to warn, once, that text input looks like JSON lines; `None`
    /// once checked (or with --format json, or --quiet).
    json_hint: Option<Arc<Console>>,
    /// Where the lines of each batch sent are kept.
    lines: Arc<std::sync::Mutex<BatchLines>>,
}

impl<R: AsyncBufRead + Unpin> Feeder<R> {
    async fn run(mut self, interrupt: impl Future<Output = ()>) -> Fed {
        tokio::pin!(interrupt);
        let end = 'reading: loop {
            // Every line already read, without a select (or a timer) per
            // line: what waits is reading the next chunk.
            while let Some(line) = self.reader.next_buffered() {
                if let Err(Broken) = self.take(line).await {
                    break 'reading InputEnd::StreamBroke;
                }
            }
            let deadline = self.deadline;
            let filled = tokio::select! {
                biased;
                () = self.broken.cancelled() => break InputEnd::StreamBroke,
                () = &mut interrupt => break InputEnd::Interrupted,
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() =>
                {
                    match self.flush().await {
                        Ok(()) => continue,
                        Err(Broken) => break InputEnd::StreamBroke,
                    }
                }
                filled = self.reader.fill() => filled,
            };
            match filled {
                Ok(true) => {}
                Ok(false) => {
                    if let Some(line) = self.reader.last_unterminated()
                        && let Err(Broken) = self.take(line).await
                    {
                        break InputEnd::StreamBroke;
                    }
                    break InputEnd::Exhausted;
                }
                Err(err) => break InputEnd::Failed(err),
            }
        };
        // What was read is sent, also after an interrupt or a read error.
        let end = match end {
            InputEnd::StreamBroke => end,
            end => match self.flush().await {
                Ok(()) => end,
                Err(Broken) => InputEnd::StreamBroke,
            },
        };
        Fed {
            end,
            last_line: self.reader.last_line(),
            unsent: self.entries,
        }
    }

    /// Adds a line to the batch, sending the batch when it is full.
    async fn take(&mut self, line: Line) -> Result<(), Broken> {
        let (input, parsed) = match line.content {
            Ok(bytes) => {
                if let Some(console) = &self.json_hint
                    && !bytes.trim_ascii().is_empty()
                {
                    if looks_like_json(&bytes) {
                        console.line(&format!(
                            "warning: line {} is a JSON object, but --format is text: each \
                             line is stored whole as a value, without a key; for JSON lines, \
                             use --format json",
                            line.number
                        ));
                    }
                    self.json_hint = None;
                }
                let parsed = self.parser.parse(&bytes);
                (Some(bytes), parsed)
            }
            Err(length) => (
                None,
                Err(format!(
                    "the line is {length} bytes long, over the limit of {MAX_LINE_BYTES}"
                )),
            ),
        };
        let malformed = match parsed {
            Ok(None) => return Ok(()),
            Ok(Some(record)) => {
                let size = record_size(&record);
                if !self.records.is_empty() && self.bytes + size > self.batching.max_bytes {
                    self.flush().await?;
                }
                self.bytes += size;
                self.records.push(record);
                None
            }
            Err(why) => Some(why),
        };
        self.counters
            .read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.entries.push(Entry {
            line: line.number,
            input,
            malformed,
        });
        if self.entries.len() >= self.batching.max_records || self.bytes >= self.batching.max_bytes
        {
            self.flush().await?;
        } else if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.batching.linger);
        }
        Ok(())
    }

    /// Whether the batch of `records` records about to go commits the
    /// transaction: once `--commit-every` records were sent since the last
    /// commit, or when this batch takes the last in-flight slot (the acks
    /// of a transaction come only after its commit, so waiting for a slot
    /// would wait forever). The end of the input commits the rest.
    fn commit_due(&mut self, records: usize) -> bool {
        if self.batching.transactional_id.is_none() {
            return false;
        }
        self.uncommitted.0 += 1;
        self.uncommitted.1 += records as u64;
        let due = self
            .batching
            .commit_every
            .is_some_and(|every| self.uncommitted.1 >= every)
            || self.uncommitted.0 >= self.batching.max_in_flight;
        if due {
            self.uncommitted = (0, 0);
        }
        due
    }

    /// Sends the batch being gathered, once a slot is free.
    async fn flush(&mut self) -> Result<(), Broken> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let slot = tokio::select! {
            biased;
            () = self.broken.cancelled() => return Err(Broken),
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| Broken)?,
        };
        // The next batch gets room for as many as this one: growing the
        // vectors line by line copied every record twice over.
        let (batch_records, batch_entries) = (self.records.len(), self.entries.len());
        let records = std::mem::replace(&mut self.records, Vec::with_capacity(batch_records));
        let batch_id = (!records.is_empty()).then(|| {
            self.last_batch_id += 1;
            self.last_batch_id
        });
        let commit = batch_id.is_some() && self.commit_due(records.len());
        if let Some(batch_id) = batch_id {
            self.lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(batch_id, &self.entries);
        }
        let pending = Pending {
            batch_id,
            records: records.len(),
            commit,
            entries: std::mem::replace(&mut self.entries, Vec::with_capacity(batch_entries)),
            _slot: slot,
        };
        self.bytes = 0;
        self.deadline = None;
        if let Err(mpsc::error::SendError(pending)) = self.pending.send(pending).await {
            // Not sent: the lines go back, to be reported as not sent.
            self.entries = pending.entries;
            return Err(Broken);
        }
        if let Some(batch_id) = batch_id {
            let request = ProduceRequest {
                batch_id,
                topic: self.topic.clone(),
                records,
                // The acks name the topic once per batch, not per record.
                compact_acks: true,
                skip_dead_letter: false,
                transactional_id: match (&self.batching.transactional_id, batch_id) {
                    (Some(id), 1) => id.clone(),
                    _ => String::new(),
                },
                commit,
            };
            tokio::select! {
                biased;
                () = self.broken.cancelled() => return Err(Broken),
                sent = self.requests.send(request) => sent.map_err(|_| Broken)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: u64, malformed: bool) -> Entry {
        Entry {
            line,
            input: None,
            malformed: malformed.then(|| "bad".to_owned()),
        }
    }

    fn two_batches() -> BatchLines {
        let mut lines = BatchLines::new(4);
        // Batch 1: lines 1 to 3; batch 2: lines 4, 5 (malformed, not sent), 6, 7.
        lines.add(1, &[entry(1, false), entry(2, false), entry(3, false)]);
        lines.add(
            2,
            &[
                entry(4, false),
                entry(5, true),
                entry(6, false),
                entry(7, false),
            ],
        );
        lines
    }

    #[test]
    fn the_gateways_record_names_become_input_lines() {
        let lines = two_batches();
        assert_eq!(
            lines.name_lines(
                "transaction aborted: records[2] of the request with batch_id 2 failed: \
                 record too large"
            ),
            "transaction aborted: line 7 failed: record too large"
        );
        assert_eq!(
            lines.name_lines("records[0] of the request with batch_id 1 failed"),
            "line 1 failed"
        );
        assert_eq!(
            lines.name_lines(
                "records[1] of the request with batch_id 1 and records[0] of the request \
                 with batch_id 2"
            ),
            "line 2 and line 4"
        );
    }

    #[test]
    fn an_older_gateways_record_names_become_input_lines() {
        let lines = two_batches();
        assert_eq!(
            lines.name_lines("transaction aborted: record 2 of batch 2 failed: record too large"),
            "transaction aborted: line 7 failed: record too large"
        );
        assert_eq!(
            lines.name_lines("record 0 of batch 1 failed"),
            "line 1 failed"
        );
    }

    #[test]
    fn what_is_not_a_known_record_is_left_alone() {
        let lines = two_batches();
        for message in [
            // A batch no longer remembered, an index past its records.
            "records[0] of the request with batch_id 9 failed: record of",
            "records[3] of the request with batch_id 2 failed",
            "record 0 of batch 9 failed: record of",
            // Other uses of the words, cut short, not numbers.
            "records[",
            "records[1]",
            "records[1] of the request with batch_id ",
            "records[x] of the request with batch_id 1",
            "records[99999999999999999999] of the request with batch_id 1",
            "record",
            "the record's value: records[] recorded",
            "r\u{e9}cord records\u{e9}[1] record \u{e9}",
        ] {
            assert_eq!(lines.name_lines(message), message);
        }
    }

    #[test]
    fn json_objects_are_recognized_as_such() {
        assert!(looks_like_json(br#"{"key": "k", "value": "v"}"#));
        assert!(looks_like_json(b"  {}  "));
        assert!(!looks_like_json(b"{not json"));
        assert!(!looks_like_json(b"[1, 2]"));
        assert!(!looks_like_json(b"hello"));
    }
}
