//! What `produce` tells its user: a progress line while it runs, one line
//! per failed record (the first few), the failed records in full in
//! `--failed-out`, and a summary at the end. All of it on stderr; stdout
//! carries only what `--print-acks` asks for: each record's outcome, in
//! input order.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use crate::proto::{ErrorCode, RecordError, RecordMetadata};

/// The error code of an input line that is not a record. Client-side: such
/// lines are never sent.
pub const MALFORMED_INPUT: &str = "MALFORMED_INPUT";
/// The error code of a record sent on a stream that broke before its ack:
/// it may or may not be stored.
pub const NOT_ACKNOWLEDGED: &str = "NOT_ACKNOWLEDGED";
/// The error code of a record read but not sent because the stream broke
/// first: it is not stored.
pub const NOT_SENT: &str = "NOT_SENT";
/// Failures printed one per line on stderr; the rest are only counted (and
/// written to `--failed-out`), so a wrong `--format` on a big file does not
/// flood the terminal.
pub const SHOWN_FAILURES: u64 = 10;

/// "1 record", "2 records".
pub fn records(n: u64) -> String {
    if n == 1 {
        "1 record".into()
    } else {
        format!("{n} records")
    }
}

/// Codes of records the stream broke under: the error that ends the
/// command counts them, so they are not printed one by one.
fn unconfirmed(code: &str) -> bool {
    code == NOT_ACKNOWLEDGED || code == NOT_SENT
}

/// What the progress line reads while the stream runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read (malformed lines included, blank JSON lines not).
    pub read: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// stderr, shared by the progress line and everything else: on a terminal
/// the progress line is redrawn in place and erased before any other line.
#[derive(Debug)]
pub struct Console {
    tty: bool,
    /// Whether a progress line is on screen (terminal only).
    progress_shown: Mutex<bool>,
}

impl Console {
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            progress_shown: Mutex::new(false),
        }
    }

    /// Prints a line, erasing the progress line first.
    pub fn line(&self, text: &str) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut stderr = io::stderr().lock();
        if *shown {
            let _ = write!(stderr, "\r\x1b[2K");
            *shown = false;
        }
        let _ = writeln!(stderr, "{text}");
    }

    /// Shows the progress: redrawn in place on a terminal, a line of its own
    /// elsewhere.
    pub fn progress(&self, text: &str) {
        if !self.tty {
            return self.line(text);
        }
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut stderr = io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{text}");
        let _ = stderr.flush();
        *shown = true;
    }

    /// Erases the progress line, if one is shown.
    pub fn clear(&self) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *shown {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
            *shown = false;
        }
    }
}

/// Redraws the progress line until dropped (abort the task running it):
/// four times a second on a terminal, once a second elsewhere. The rate is
/// of acked records over the last three seconds.
pub async fn show_progress(console: Arc<Console>, counters: Arc<Counters>) {
    let every = if console.tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let started = Instant::now();
    let mut samples = VecDeque::from([(started, 0u64)]);
    loop {
        tokio::time::sleep(every).await;
        let now = Instant::now();
        let acked = Counters::get(&counters.acked);
        samples.push_back((now, acked));
        while samples.len() > 2 && now - samples[0].0 > Duration::from_secs(3) {
            samples.pop_front();
        }
        let (then, acked_then) = samples[0];
        let rate = (acked - acked_then) as f64 / (now - then).as_secs_f64().max(0.001);
        console.progress(&format!(
            "{} read, {acked} acked, {} failed, {rate:.0} records/s, {:.0} s",
            Counters::get(&counters.read),
            Counters::get(&counters.failed),
            (now - started).as_secs_f64(),
        ));
    }
}

/// A record, or a line, that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The input line, from 1.
    pub line: u64,
    /// An `ERROR_CODE_*` name from the gateway, or one of this module's
    /// client-side codes.
    pub code: String,
    pub message: String,
    /// Whether sending the same record again can succeed.
    pub retriable: bool,
    /// The line as read, when it was kept.
    pub input: Option<Bytes>,
    /// Where the gateway parked the record (its dead-letter topic), if it
    /// did.
    pub dead_letter: Option<ParkedAt>,
}

/// Where a failed record was parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedAt {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Failure {
    /// A record the gateway refused.
    pub fn from_gateway(line: u64, error: &RecordError, input: Option<Bytes>) -> Self {
        let code = ErrorCode::try_from(error.code).map_or_else(
            |_| format!("ERROR_CODE_{}", error.code),
            |c| c.as_str_name().to_owned(),
        );
        Self {
            line,
            code,
            message: error.message.clone(),
            retriable: error.retriable,
            input,
            dead_letter: error.dead_letter.as_ref().map(|at| ParkedAt {
                topic: at.topic.clone(),
                partition: at.partition,
                offset: at.offset,
            }),
        }
    }
}

/// One line of `--failed-out`.
#[derive(Debug, Serialize)]
struct FailedLine<'a> {
    line: u64,
    error_code: &'a str,
    message: &'a str,
    retriable: bool,
    /// The input line, when it is UTF-8...
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    /// ...else in base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_b64: Option<String>,
    /// Where the gateway parked the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<&'a ParkedAt>,
}

/// The `--failed-out` line of a failure.
pub fn failed_line(failure: &Failure) -> String {
    let (input, input_b64) = match &failure.input {
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some(BASE64.encode(bytes))),
        },
        None => (None, None),
    };
    serde_json::to_string(&FailedLine {
        line: failure.line,
        error_code: &failure.code,
        message: &failure.message,
        retriable: failure.retriable,
        input,
        input_b64,
        dead_letter: failure.dead_letter.as_ref(),
    })
    .expect("a failure serializes")
}

/// How `--print-acks` prints each record's outcome on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AckFormat {
    /// `topic/partition@offset` for a stored record; `line N: CODE: message`
    /// for a failed one.
    Text,
    /// One JSON object per line: `{"line", "topic", "partition", "offset"}`
    /// or `{"line", "error_code", "message", "retriable"}`.
    Json,
}

/// Writes each record's outcome, in input order (`--print-acks`).
pub struct AckPrinter {
    format: AckFormat,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for AckPrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckPrinter")
            .field("format", &self.format)
            .finish()
    }
}

impl AckPrinter {
    pub fn new(format: AckFormat, out: Box<dyn Write + Send>) -> Self {
        Self { format, out }
    }

    /// The line for a stored record.
    pub fn ack_line(
        format: AckFormat,
        line: u64,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> String {
        match format {
            AckFormat::Text => format!("{topic}/{partition}@{offset}"),
            AckFormat::Json => serde_json::json!({
                "line": line,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            })
            .to_string(),
        }
    }

    /// The line for a failed record.
    pub fn failure_line(format: AckFormat, failure: &Failure) -> String {
        match format {
            AckFormat::Text => format!(
                "line {}: {}: {}",
                failure.line, failure.code, failure.message
            ),
            AckFormat::Json => {
                let mut value = serde_json::json!({
                    "line": failure.line,
                    "error_code": failure.code,
                    "message": failure.message,
                    "retriable": failure.retriable,
                });
                if let Some(parked) = &failure.dead_letter {
                    value["dead_letter"] = serde_json::json!(parked);
                }
                value.to_string()
            }
        }
    }

    fn write(&mut self, text: &str) {
        // A closed stdout (`| head`) is not the records' failure.
        let _ = writeln!(self.out, "{text}");
    }
}

/// Counts of what happened to the records read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub acked: u64,
    pub failed: u64,
    /// Failed records the gateway parked in its dead-letter topic.
    pub parked: u64,
    /// Transactions committed, on a transactional stream.
    pub committed: Option<u64>,
    /// Acked records by topic and partition.
    pub by_partition: BTreeMap<(String, i32), u64>,
    /// Failed records by error code.
    pub by_code: BTreeMap<String, u64>,
}

impl Tally {
    /// The end-of-run summary: totals and rate, acked records by partition,
    /// failed ones by error code.
    pub fn summary(&self, elapsed: Duration, failed_out: Option<&Path>) -> String {
        let seconds = elapsed.as_secs_f64();
        let mut out = format!(
            "{}: {} acked, {} failed, in {seconds:.2} s{}",
            records(self.acked + self.failed),
            self.acked,
            self.failed,
            rate(self.acked, elapsed),
        );
        if self.parked > 0 {
            out.push_str(&format!(
                ", {} parked as dead letter{}",
                self.parked,
                if self.parked == 1 { "" } else { "s" }
            ));
        }
        if let Some(committed) = self.committed {
            out.push_str(&format!(
                ", {committed} transaction{} committed",
                if committed == 1 { "" } else { "s" }
            ));
        }
        for ((topic, partition), count) in &self.by_partition {
            out.push_str(&format!("\n  {topic} partition {partition}: {count} acked"));
        }
        for (code, count) in &self.by_code {
            out.push_str(&format!("\n  {code}: {count} failed"));
        }
        if let (Some(path), true) = (failed_out, self.failed > 0) {
            out.push_str(&format!(
                "\nfailed records, with their line numbers and errors: {}",
                path.display()
            ));
        }
        out
    }
}

/// ` (N records/s)`, or nothing when nothing was acked or too little time
/// passed to measure. Below 10 records/s, with a decimal: a slow pipe's 3
/// records in 6 s are 0.5 records/s, not 0.
fn rate(acked: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if acked == 0 || seconds < 0.01 {
        return String::new();
    }
    let rate = acked as f64 / seconds;
    if rate < 10.0 {
        format!(" ({rate:.1} records/s)")
    } else {
        format!(" ({rate:.0} records/s)")
    }
}

/// `--failed-out`, once opened.
#[derive(Debug)]
pub struct FailedOut {
    path: PathBuf,
    writer: BufWriter<File>,
    /// The first write error; nothing more is written after one.
    error: Option<io::Error>,
}

impl FailedOut {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            writer: BufWriter::new(File::create(path)?),
            error: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, failure: &Failure) {
        if self.error.is_none()
            && let Err(err) = writeln!(self.writer, "{}", failed_line(failure))
        {
            self.error = Some(err);
        }
    }

    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(err) = self.writer.flush()
        {
            self.error = Some(err);
        }
    }
}

/// Takes every outcome, in input order: counts it, shows it, writes it out.
#[derive(Debug)]
pub struct Reporter {
    tally: Tally,
    counters: Arc<Counters>,
    console: Arc<Console>,
    failed_out: Option<FailedOut>,
    /// Print failures on stderr (not under `--quiet`).
    show_failures: bool,
    /// Failures printed so far.
    shown: u64,
    /// `--print-acks`.
    acks: Option<AckPrinter>,
}

impl Reporter {
    pub fn new(
        counters: Arc<Counters>,
        console: Arc<Console>,
        failed_out: Option<FailedOut>,
        show_failures: bool,
    ) -> Self {
        Self {
            tally: Tally::default(),
            counters,
            console,
            failed_out,
            show_failures,
            shown: 0,
            acks: None,
        }
    }

    /// Prints every record's outcome (`--print-acks`); on a transactional
    /// stream, counts the transactions committed.
    pub fn with_acks(mut self, acks: Option<AckPrinter>, transactional: bool) -> Self {
        self.acks = acks;
        if transactional {
            self.tally.committed = Some(0);
        }
        self
    }

    /// Whether each ack is wanted with its line (`--print-acks`).
    pub fn prints_acks(&self) -> bool {
        self.acks.is_some()
    }

    /// stderr, for warnings about the input.
    pub fn console(&self) -> Arc<Console> {
        self.console.clone()
    }

    /// A transaction was committed.
    pub fn committed(&mut self) {
        if let Some(committed) = &mut self.tally.committed {
            *committed += 1;
        }
    }

    /// Counts and prints one stored record, of input line `line`.
    pub fn acked_line(&mut self, line: u64, topic: &str, partition: i32, offset: i64) {
        self.acked_many(topic, partition, 1);
        if let Some(acks) = &mut self.acks {
            let text = AckPrinter::ack_line(acks.format, line, topic, partition, offset);
            acks.write(&text);
        }
    }

    pub fn acked(&mut self, meta: &RecordMetadata) {
        self.acked_many(&meta.topic, meta.partition, 1);
    }

    /// Counts `count` records acked in `topic`'s `partition`: a batch's acks
    /// are counted per partition, not one by one.
    pub fn acked_many(&mut self, topic: &str, partition: i32, count: u64) {
        self.tally.acked += count;
        match self
            .tally
            .by_partition
            .get_mut(&(topic.to_owned(), partition))
        {
            Some(acked) => *acked += count,
            None => {
                self.tally
                    .by_partition
                    .insert((topic.to_owned(), partition), count);
            }
        }
        self.counters
            .acked
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn failed(&mut self, failure: Failure) {
        self.tally.failed += 1;
        if failure.dead_letter.is_some() {
            self.tally.parked += 1;
        }
        if let Some(acks) = &mut self.acks {
            let text = AckPrinter::failure_line(acks.format, &failure);
            acks.write(&text);
        }
        *self.tally.by_code.entry(failure.code.clone()).or_default() += 1;
        Counters::add(&self.counters.failed);
        if self.show_failures && !unconfirmed(&failure.code) {
            self.shown += 1;
            if self.shown <= SHOWN_FAILURES {
                self.console.line(&format!(
                    "line {}: {}: {}",
                    failure.line, failure.code, failure.message
                ));
            } else if self.shown == SHOWN_FAILURES + 1 {
                self.console.line(&format!(
                    "(further failures are not shown; the summary counts them{})",
                    if self.failed_out.is_some() {
                        " and --failed-out lists them"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(out) = &mut self.failed_out {
            out.write(&failure);
        }
    }

    /// Writes out what is buffered, so `--failed-out` can be followed while
    /// the command runs.
    pub fn flush(&mut self) {
        if let Some(out) = &mut self.failed_out {
            out.flush();
        }
        if let Some(acks) = &mut self.acks {
            let _ = acks.out.flush();
        }
    }

    /// The counts, the `--failed-out` path, and the error that stopped
    /// writing to it, if one did.
    pub fn finish(mut self) -> (Tally, Option<PathBuf>, Option<io::Error>) {
        self.flush();
        match self.failed_out {
            Some(out) => (self.tally, Some(out.path), out.error),
            None => (self.tally, None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_lines_carry_the_input_as_text_or_base64() {
        let failure = Failure {
            line: 7,
            code: "ERROR_CODE_UNKNOWN_PARTITION".into(),
            message: "Broker: Unknown partition".into(),
            retriable: false,
            input: Some(Bytes::from_static(br#"{"value":"v","partition":99}"#)),
            dead_letter: None,
        };
        assert_eq!(
            failed_line(&failure),
            r#"{"line":7,"error_code":"ERROR_CODE_UNKNOWN_PARTITION","message":"Broker: Unknown partition","retriable":false,"input":"{\"value\":\"v\",\"partition\":99}"}"#
        );
        let binary = Failure {
            input: Some(Bytes::from_static(b"\xff\x00")),
            ..failure.clone()
        };
        assert!(failed_line(&binary).ends_with(r#""retriable":false,"input_b64":"/wA="}"#));
        let none = Failure {
            input: None,
            ..failure.clone()
        };
        assert!(failed_line(&none).ends_with(r#""retriable":false}"#));
        let parked = Failure {
            dead_letter: Some(ParkedAt {
                topic: "dlq".into(),
                partition: 2,
                offset: 41,
            }),
            ..none
        };
        assert!(
            failed_line(&parked)
                .ends_with(r#""dead_letter":{"topic":"dlq","partition":2,"offset":41}}"#)
        );
    }

    #[test]
    fn gateway_errors_are_named_by_their_proto_name() {
        let error = RecordError {
            code: ErrorCode::UnknownPartition as i32,
            message: "m".into(),
            retriable: false,
            may_be_stored: false,
            dead_letter: None,
        };
        let failure = Failure::from_gateway(3, &error, None);
        assert_eq!(failure.code, "ERROR_CODE_UNKNOWN_PARTITION");
        let unknown = RecordError { code: 99, ..error };
        assert_eq!(
            Failure::from_gateway(3, &unknown, None).code,
            "ERROR_CODE_99"
        );
    }

    #[test]
    fn the_summary_counts_by_partition_and_by_code() {
        let counters = Arc::new(Counters::default());
        let mut reporter =
            Reporter::new(counters.clone(), Arc::new(Console::new(false)), None, false);
        for partition in [0, 4, 0] {
            reporter.acked(&RecordMetadata {
                topic: "orders".into(),
                partition,
                offset: 0,
                timestamp_ms: -1,
            });
        }
        reporter.failed(Failure {
            line: 2,
            code: MALFORMED_INPUT.into(),
            message: "not valid JSON".into(),
            retriable: false,
            input: None,
            dead_letter: None,
        });
        let (tally, path, error) = reporter.finish();
        assert!(path.is_none() && error.is_none());
        assert_eq!(Counters::get(&counters.acked), 3);
        assert_eq!(Counters::get(&counters.failed), 1);
        assert_eq!(
            tally.summary(Duration::from_secs(2), Some(Path::new("failed.ndjson"))),
            "4 records: 3 acked, 1 failed, in 2.00 s (1.5 records/s)\n  \
             orders partition 0: 2 acked\n  \
             orders partition 4: 1 acked\n  \
             MALFORMED_INPUT: 1 failed\n\
             failed records, with their line numbers and errors: failed.ndjson"
        );
        let clean = Tally::default().summary(Duration::ZERO, Some(Path::new("f")));
        assert_eq!(clean, "0 records: 0 acked, 0 failed, in 0.00 s");
    }

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn print_acks_writes_each_outcome_in_input_order() {
        for (format, expected) in [
            (
                AckFormat::Text,
                "orders/1@41\nline 2: ERROR_CODE_INVALID_RECORD: too large\norders/0@7\n",
            ),
            (
                AckFormat::Json,
                "{\"line\":1,\"offset\":41,\"partition\":1,\"topic\":\"orders\"}\n\
                 {\"dead_letter\":{\"offset\":3,\"partition\":0,\"topic\":\"dlq\"},\
                 \"error_code\":\"ERROR_CODE_INVALID_RECORD\",\"line\":2,\
                 \"message\":\"too large\",\"retriable\":false}\n\
                 {\"line\":3,\"offset\":7,\"partition\":0,\"topic\":\"orders\"}\n",
            ),
        ] {
            let out = Shared::default();
            let mut reporter = Reporter::new(
                Arc::new(Counters::default()),
                Arc::new(Console::new(false)),
                None,
                false,
            )
            .with_acks(Some(AckPrinter::new(format, Box::new(out.clone()))), true);
            reporter.acked_line(1, "orders", 1, 41);
            reporter.failed(Failure {
                line: 2,
                code: "ERROR_CODE_INVALID_RECORD".into(),
                message: "too large".into(),
                retriable: false,
                input: None,
                dead_letter: Some(ParkedAt {
                    topic: "dlq".into(),
                    partition: 0,
                    offset: 3,
                }),
            });
            reporter.acked_line(3, "orders", 0, 7);
            reporter.committed();
            let (tally, _, _) = reporter.finish();
            let printed = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            assert_eq!(printed, expected, "{format:?}");
            assert_eq!(
                tally
                    .summary(Duration::from_secs(6), None)
                    .lines()
                    .next()
                    .unwrap(),
                "3 records: 2 acked, 1 failed, in 6.00 s (0.3 records/s), \
                 1 parked as dead letter, 1 transaction committed"
            );
        }
    }
}
