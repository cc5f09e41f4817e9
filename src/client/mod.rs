//! `kafka-gateway produce`: a command-line producer. It reads records from
//! an input (stdin), one per line, sends them in batches on one `Produce`
//! stream and matches the ordered acks back to input lines.
//!
//! - [`connect`]: plain HTTP/2 or TLS (mTLS too), the bearer token, and
//!   what to check when the gateway cannot be reached or refuses the call;
//! - [`input`]: lines, bounded in length, and how they become records
//!   (plain values, `KEY<delimiter>VALUE`, or NDJSON);
//! - [`pipeline`]: batching with a linger, a bounded number of batches in
//!   flight, and the matching of responses to lines;
//! - [`report`]: progress, failures, `--failed-out` and the summary.
//!
//! Exit codes follow sysexits.h where one fits; see [`ProduceArgs`]' help.

pub mod connect;
pub mod input;
pub mod pipeline;
pub mod report;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::io::AsyncBufRead;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::produce::validate::check_topic;
use crate::proto::producer_client::ProducerClient;
use crate::units::{parse_duration, parse_size};
use connect::{ConnectArgs, Connection};
use input::{Delimiter, Format, LineParser, LineReader, parse_delimiter};
use pipeline::{Batching, InputEnd};
use report::{AckFormat, AckPrinter, Console, Counters, FailedOut, Reporter, Tally};

/// The gateway `serve` listens on by default.
pub const DEFAULT_TARGET: &str = "127.0.0.1:50051";
/// Records per batch: large enough that per-batch costs (one gRPC message,
/// one response) vanish, small enough to be well under the gateway's
/// default --max-batch-records (10000).
pub const DEFAULT_BATCH_RECORDS: u64 = 500;
/// Payload bytes per batch: one HTTP/2 stream window's worth, well under
/// the gateway's default --max-batch-bytes (16 MiB).
pub const DEFAULT_BATCH_BYTES: &str = "1MiB";
/// How long a partial batch waits for more lines: short enough that a line
/// typed by hand is acked at once, long enough to batch a slow pipe.
pub const DEFAULT_BATCH_LINGER_MS: u64 = 50;
/// Unanswered batches at a time: enough to keep the gateway's window busy
/// while the acks of earlier batches travel back.
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: u64 = 64;
/// Records per transaction with --transactional-id, unless --commit-every
/// says otherwise: half the gateway's default window, which a transaction
/// must fit in.
pub const DEFAULT_COMMIT_EVERY: u64 = 5_000;
/// How long connecting to the gateway may take.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";

/// Every record was acked.
pub const EXIT_OK: u8 = 0;
/// Some records failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad command line (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// The gateway could not be reached or the stream broke (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// --failed-out cannot be created (EX_CANTCREAT).
pub const EXIT_CANTCREAT: u8 = 73;
/// Reading the input or writing --failed-out failed (EX_IOERR).
pub const EXIT_IOERR: u8 = 74;
/// The gateway refused the credentials (EX_NOPERM): unlike 69, waiting and
/// retrying will not help, so a retry loop can tell the two apart.
pub const EXIT_REFUSED: u8 = 77;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

const AFTER_HELP: &str = "\
Input: one record per line of stdin.
  --format text (default): the line is the record's value, without a key. With -K DELIM the \
line is split at the first DELIM into key and value (\"-K '\\t'\" for a tab); a line without \
DELIM is a value without a key, as in kcat. Lines are bytes and need not be UTF-8; a \\r \
before the \\n is dropped; an empty line is a record with an empty value.
  --format json: one JSON object per line (NDJSON), every field optional:
    {\"key\": \"k\", \"value\": \"v\", \"headers\": {\"source\": \"cli\"}, \"partition\": 0, \
\"timestamp_ms\": 1700000000000, \"topic\": \"other\"}
  \"key\" and \"value\" are UTF-8 strings; null or missing means none (a record without a \
value is a tombstone); \"key_b64\" and \"value_b64\" take binary data in base64. \"headers\" \
is an object of string values or a list [{\"key\": \"h\", \"value\": \"x\"}, ...] that keeps \
order and duplicate keys (\"value_b64\" works there too). \"topic\" overrides --topic, which \
is then optional. Unknown fields are errors, so a typo is not silently a tombstone. Blank \
lines are skipped.

Failures: a line that is not a record (invalid JSON, an unknown field, a line over 16 MiB) is \
never sent: it is counted as failed with the code MALFORMED_INPUT and reading goes on. A \
record the gateway refuses (e.g. \"partition\": 99 gives ERROR_CODE_UNKNOWN_PARTITION) is \
counted as failed with the gateway's code. The first 10 failures are printed as \"line N: \
CODE: message\"; --failed-out PATH gets every one, one JSON object per line:
    {\"line\": 3, \"error_code\": \"ERROR_CODE_UNKNOWN_PARTITION\", \"message\": \"...\", \
\"retriable\": false, \"input\": \"<the line as read>\"}
  (\"input_b64\" instead when the line is not UTF-8). To resend them: jq -r .input FILE | \
kafka-gateway produce with the same options.

Output: nothing on stdout, unless --print-acks: then one line per record, in input order: \
`orders/0@42` (topic/partition@offset) when stored, `line 7: CODE: message` when not; with \
--print-acks=json (the default with --format json) a JSON object per record: \
{\"line\": 1, \"topic\": \"orders\", \"partition\": 0, \"offset\": 42} or {\"line\": 7, \
\"error_code\": \"...\", \"message\": \"...\", \"retriable\": false}. On stderr: a progress line with records/s (when stderr is a \
terminal, or with --progress), the first failures, and a summary: records acked by topic and \
partition, failed by error code, records parked as dead letters and transactions committed. \
--quiet prints only errors that stop the command.

Batching and backpressure: records go on one stream in batches of at most --batch-records \
lines and --batch-bytes payload bytes; a partial batch leaves when its first line is \
--batch-linger-ms old, so a line typed by hand is acked at once. At most \
--max-in-flight-batches batches are unanswered at a time; then reading waits, so memory stays \
bounded and a slow Kafka slows the input down. Acks come back in order and are matched to \
input lines. The gateway refuses batches over its --max-batch-records (default 10000).

When the stream breaks, the records sent but not acked are failed as NOT_ACKNOWLEDGED (they \
may or may not be stored) and the lines read but not sent as NOT_SENT; the error names the last \
line read. Resend those and the input after it.

TLS and tokens: an https:// --target speaks TLS (HTTP/2 by ALPN) and verifies the gateway's \
certificate, for --target's host or --tls-server-name, against the system's roots or against \
--tls-ca (the CA that signed the gateway's --tls-cert). A gateway started with --tls-client-ca \
requires a client certificate: --tls-cert and --tls-key. A gateway started with --api-keys or \
--jwt-jwks requires a token: --token-file, --token or KAFKA_GATEWAY_TOKEN sends it as \
`authorization: Bearer TOKEN`. The token is never printed; sent over a plain http:// --target to \
another host it travels in the clear, and a warning says so. A failed handshake exits 69 and says \
what to check (the CA, the name, the client certificate); a refused token exits 77 with the \
gateway's reason (unknown API key, expired, wrong audience...).

Exit status:
  0    every record was acked
  1    some records failed: see the summary and --failed-out
  64   bad usage, or a TLS or token file that cannot be used
  69   the gateway could not be reached, the TLS handshake failed, or the stream broke
  73   --failed-out cannot be created
  74   reading stdin or writing --failed-out failed
  77   the gateway refused the credentials (UNAUTHENTICATED): fix the token or certificate
  130  interrupted by Ctrl-C: reading stops, what was read is sent and answered,
       the summary is printed; a second Ctrl-C exits at once

Examples:
  echo hello | kafka-gateway produce -t greetings
  kafka-gateway produce -t orders -K : < orders.txt      # lines like customer-42:{\"total\": 10}
  kafka-gateway produce -t orders --format json --failed-out failed.ndjson < orders.ndjson
  echo '{\"key\": \"k\", \"value\": \"v\", \"headers\": {\"source\": \"cli\"}}' \\
      | kafka-gateway produce --target http://gateway.internal:50051 -t orders --format json
  kafka-gateway produce --target https://gateway.internal:50051 --tls-ca ca.pem \\
      --token-file /run/secrets/gateway-token -t orders < orders.txt
  kafka-gateway produce --target https://10.0.0.7:50051 --tls-ca ca.pem \\
      --tls-server-name gateway.internal --tls-cert client.pem --tls-key client-key.pem -t orders
  kafka-gateway produce -t chat                          # type lines; Ctrl-D to finish";

/// Read records from stdin, one per line, and produce them through a
/// running gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "kafka-gateway produce", after_long_help = AFTER_HELP)]
pub struct ProduceArgs {
    /// The gateway: HOST:PORT or http://HOST:PORT (plain HTTP/2), or
    /// https://HOST:PORT (TLS; see TLS and credentials).
    #[arg(long, env = "KAFKA_GATEWAY_TARGET", default_value = DEFAULT_TARGET,
          value_name = "ADDR", value_parser = parse_target)]
    pub target: String,

    /// The topic of every record. With --format json, the topic of records
    /// without a "topic" field, and optional.
    #[arg(short = 't', long, env = "KAFKA_GATEWAY_TOPIC")]
    pub topic: Option<String>,

    /// How each line is read.
    #[arg(short = 'f', long, env = "KAFKA_GATEWAY_FORMAT", value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Split each text line at the first DELIM into key and value, like
    /// kcat's -K. `\t` is a tab.
    #[arg(short = 'K', long, env = "KAFKA_GATEWAY_KEY_DELIMITER", value_name = "DELIM",
          value_parser = parse_delimiter)]
    pub key_delimiter: Option<Delimiter>,

    /// Most lines in one batch.
    #[arg(long, env = "KAFKA_GATEWAY_BATCH_RECORDS", default_value_t = DEFAULT_BATCH_RECORDS,
          value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_records: u64,

    /// Most payload bytes (keys, values, headers) in one batch; a larger
    /// record goes alone.
    #[arg(long, env = "KAFKA_GATEWAY_BATCH_BYTES", default_value = DEFAULT_BATCH_BYTES,
          value_parser = parse_size, value_name = "SIZE")]
    pub batch_bytes: usize,

    /// How long a partial batch waits for more lines before it is sent.
    #[arg(long, env = "KAFKA_GATEWAY_BATCH_LINGER_MS", default_value_t = DEFAULT_BATCH_LINGER_MS,
          value_name = "MS")]
    pub batch_linger_ms: u64,

    /// Most batches sent and not yet answered; then reading waits.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_IN_FLIGHT_BATCHES", default_value_t = DEFAULT_MAX_IN_FLIGHT_BATCHES,
          value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_in_flight_batches: u64,

    /// Compress each batch on the wire: gzip or zstd (the gateway accepts
    /// both), or none. Costs CPU on both ends; pays off over a slow or
    /// metered network.
    #[arg(long, env = "KAFKA_GATEWAY_COMPRESS", value_enum, default_value_t = Compress::None)]
    pub compress: Compress,

    /// Write in Kafka transactions, with this transactional id: the records
    /// of a transaction are acked only once it is committed, and none of
    /// them is visible to read_committed consumers if it aborts (each then
    /// fails with ERROR_CODE_ABORTED). Commits every --commit-every records
    /// and at the end of the input; also when --max-in-flight-batches
    /// batches wait for a commit, since their acks come only after it.
    #[arg(long, env = "KAFKA_GATEWAY_TRANSACTIONAL_ID", value_name = "ID")]
    pub transactional_id: Option<String>,

    /// With --transactional-id: commit every N records (at the end of the
    /// batch that reaches N; default 5000). A transaction must fit in the
    /// gateway's per-stream window (--max-in-flight-records, 10000 by
    /// default), or the gateway aborts it and ends the stream.
    #[arg(long, env = "KAFKA_GATEWAY_COMMIT_EVERY", value_name = "N",
          requires = "transactional_id", value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: Option<u64>,

    /// How long connecting to the gateway may take.
    #[arg(long, env = "KAFKA_GATEWAY_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT,
          value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Write every failed record or line to PATH (created or truncated), one
    /// JSON object per line with its line number, error code, message and
    /// the input line.
    #[arg(long, env = "KAFKA_GATEWAY_FAILED_OUT", value_name = "PATH")]
    pub failed_out: Option<PathBuf>,

    /// Show the progress line even when stderr is not a terminal (then one
    /// line per second).
    #[arg(long, conflicts_with = "quiet")]
    pub progress: bool,

    /// Print no progress, failures or summary: only errors that stop the
    /// command. The exit status still tells.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print each record's outcome on stdout, one line per record in input
    /// order: `topic/partition@offset` when stored, `line N: CODE: message`
    /// when not. As JSON objects ({"line", "topic", "partition", "offset"}
    /// or {"line", "error_code", "message", "retriable"}) with
    /// --print-acks=json, which is the default with --format json.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, require_equals = true,
          value_enum)]
    pub print_acks: Option<Option<AckFormat>>,

    /// TLS and the bearer token.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Compression of the batches on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compress {
    None,
    Gzip,
    Zstd,
}

impl Compress {
    fn encoding(self) -> Option<tonic::codec::CompressionEncoding> {
        use tonic::codec::CompressionEncoding;
        match self {
            Compress::None => None,
            Compress::Gzip => Some(CompressionEncoding::Gzip),
            Compress::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

/// Accepts `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT`; returns
/// a URI. A bare address stays plain HTTP/2, as before TLS existed: TLS is
/// asked for by its scheme, never guessed.
pub fn parse_target(s: &str) -> Result<String, String> {
    let s = s.trim();
    let uri = if s.starts_with("http://") || s.starts_with("https://") {
        s.to_owned()
    } else if s.contains("://") {
        return Err(format!(
            "{s:?}: use HOST:PORT, http://HOST:PORT or https://HOST:PORT"
        ));
    } else {
        format!("http://{s}")
    };
    match Endpoint::from_shared(uri.clone()) {
        Ok(endpoint) if endpoint.uri().host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        _ => Err(format!(
            "{s:?} is not an address; use HOST:PORT, http://HOST:PORT or https://HOST:PORT, \
             e.g. {DEFAULT_TARGET}"
        )),
    }
}

impl ProduceArgs {
    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), ProduceError> {
        let usage = |message: String| Err(ProduceError::Usage(message));
        match (&self.topic, self.format) {
            (Some(topic), _) => {
                if let Err(why) = check_topic(topic) {
                    return usage(format!("--topic: {why}"));
                }
            }
            (None, Format::Text) => {
                return usage(
                    "--topic (KAFKA_GATEWAY_TOPIC) is required; only --format json records \
                     can name their own topic"
                        .into(),
                );
            }
            (None, Format::Json) => {}
        }
        if self.key_delimiter.is_some() && self.format == Format::Json {
            return usage(
                "-K/--key-delimiter applies to --format text; JSON records have a \"key\" field"
                    .into(),
            );
        }
        self.connect
            .validate(&self.target)
            .map_err(ProduceError::Usage)
    }

    fn batching(&self) -> Batching {
        Batching {
            max_records: usize::try_from(self.batch_records).unwrap_or(usize::MAX),
            max_bytes: self.batch_bytes,
            linger: Duration::from_millis(self.batch_linger_ms),
            max_in_flight: usize::try_from(self.max_in_flight_batches).unwrap_or(1),
            transactional_id: self.transactional_id.clone(),
            commit_every: self
                .transactional_id
                .as_ref()
                .map(|_| self.commit_every.unwrap_or(DEFAULT_COMMIT_EVERY)),
        }
    }
}

/// Why `produce` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot create --failed-out {path}: {source}")]
    FailedOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
}

impl ProduceError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ProduceError::Usage(_) => EXIT_USAGE,
            ProduceError::FailedOut { .. } => EXIT_CANTCREAT,
            ProduceError::Unavailable(_) => EXIT_UNAVAILABLE,
            ProduceError::Refused(_) => EXIT_REFUSED,
        }
    }
}

/// Which of the standard streams are terminals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminal {
    /// Then a hint says how to finish typing.
    pub stdin: bool,
    /// Then the progress line is on by default and redrawn in place.
    pub stderr: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    pub tally: Tally,
    pub exit_code: u8,
}

/// Produces the lines of `input` through the gateway at `args.target`,
/// printing progress, failures and a summary on stderr. Stops reading when
/// `interrupt` resolves (then sends what it read and waits for its acks).
pub async fn run<R>(
    args: ProduceArgs,
    input: R,
    terminal: Terminal,
    interrupt: impl Future<Output = ()> + Send + 'static,
) -> Result<Finished, ProduceError>
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    args.validate()?;
    // Before --failed-out is created: a file that cannot be used leaves
    // nothing behind.
    let connection = Connection::load(&args.target, args.connect_timeout, &args.connect)?;
    let failed_out = match &args.failed_out {
        Some(path) => Some(
            FailedOut::create(path).map_err(|source| ProduceError::FailedOut {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let target = &args.target;
    let console = Arc::new(Console::new(terminal.stderr));
    if !args.quiet {
        for warning in connection.warnings() {
            console.line(&warning);
        }
    }
    let channel = match connection.endpoint.connect().await {
        Ok(channel) => channel,
        Err(err) => return Err(connection.connect_failed(&err).await),
    };
    let mut client = ProducerClient::new(channel);
    if let Some(encoding) = args.compress.encoding() {
        client = client.send_compressed(encoding);
    }
    let (requests, outbound) = mpsc::channel(1);
    let mut call = tonic::Request::new(ReceiverStream::new(outbound));
    connection.authorize(&mut call);
    let responses = match tokio::time::timeout(args.connect_timeout, client.produce(call)).await {
        Ok(Ok(responses)) => responses.into_inner(),
        Ok(Err(status)) => return Err(connection.call_failed(&status).await),
        Err(_) => {
            return Err(connection
                .unreachable(&std::io::Error::other("no answer within --connect-timeout")));
        }
    };

    let counters = Arc::new(Counters::default());
    if terminal.stdin && !args.quiet {
        console.line("reading records from stdin, one per line; Ctrl-D to finish");
    }
    let progress = (args.progress || (terminal.stderr && !args.quiet))
        .then(|| tokio::spawn(report::show_progress(console.clone(), counters.clone())));
    let acks = args.print_acks.map(|format| {
        let format = format.unwrap_or(match args.format {
            Format::Text => AckFormat::Text,
            Format::Json => AckFormat::Json,
        });
        AckPrinter::new(format, Box::new(std::io::BufWriter::new(std::io::stdout())))
    });
    let mut reporter = Reporter::new(counters.clone(), console.clone(), failed_out, !args.quiet)
        .with_acks(acks, args.transactional_id.is_some());
    let started = Instant::now();
    let parser = LineParser::new(
        args.format,
        args.key_delimiter.clone(),
        args.topic.is_some(),
    );
    let ended = pipeline::run(
        LineReader::new(input),
        parser,
        args.topic.clone().unwrap_or_default(),
        args.batching(),
        requests,
        responses,
        &mut reporter,
        counters,
        interrupt,
        args.format == Format::Text && !args.quiet,
    )
    .await;
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    console.clear();
    let (tally, failed_out, write_error) = reporter.finish();
    if !args.quiet {
        console.line(&tally.summary(elapsed, failed_out.as_deref()));
    }

    let resend = match &failed_out {
        Some(path) => format!("they are listed in {}", path.display()),
        None => "--failed-out PATH would list them".into(),
    };
    let mut exit_code = if tally.failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    if let InputEnd::Interrupted = ended.input {
        console.line(&format!(
            "interrupted: stopped reading after line {}; the records read were sent and answered",
            ended.last_line
        ));
        exit_code = EXIT_INTERRUPTED;
    }
    if let Some(err) = write_error {
        console.line(&format!(
            "error: writing --failed-out {} failed: {err}; it lacks some failures",
            failed_out
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ));
        exit_code = EXIT_IOERR;
    }
    if let InputEnd::Failed(err) = &ended.input {
        console.line(&format!(
            "error: reading stdin failed after line {}: {err}",
            ended.last_line
        ));
        exit_code = EXIT_IOERR;
    }
    if let Some(broke) = &ended.broke {
        console.line(&format!(
            "error: the stream to the gateway at {target} broke after line {}: {}. {} sent but \
             not acknowledged (they may or may not be stored) and {} read but not sent; \
             {resend}. To fix: {}; then resend them and any input after line {}",
            ended.last_line,
            broke.reason,
            report::records(ended.not_acknowledged),
            report::records(ended.not_sent),
            broke.fix,
            ended.last_line,
        ));
        exit_code = EXIT_UNAVAILABLE;
    }
    Ok(Finished { tally, exit_code })
}

/// An error and its sources, joined by ": ".
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = err.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ProduceArgs, clap::Error> {
        ProduceArgs::try_parse_from(std::iter::once("produce").chain(args.iter().copied()))
    }

    #[test]
    fn targets_are_addresses_or_http_or_https_uris() {
        assert_eq!(
            parse_target("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(parse_target("gw:9").unwrap(), "http://gw:9");
        assert_eq!(
            parse_target("http://[::1]:50051").unwrap(),
            "http://[::1]:50051"
        );
        assert_eq!(parse_target("https://gw:443").unwrap(), "https://gw:443");
        assert!(parse_target("grpc://gw:1").is_err());
        assert!(parse_target("").is_err());
        assert!(parse_target("a b").is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = parse(&["-t", "orders"]).unwrap();
        args.validate().unwrap();
        assert_eq!(args.target, "http://127.0.0.1:50051");
        assert_eq!(args.format, Format::Text);
        let batching = args.batching();
        assert_eq!(batching.max_records, 500);
        assert_eq!(batching.max_bytes, 1 << 20);
        assert_eq!(batching.linger, Duration::from_millis(50));
        assert_eq!(batching.max_in_flight, 64);
        assert_eq!(batching.commit_every, None, "not transactional");
        let transactional = parse(&["-t", "orders", "--transactional-id", "loader"]).unwrap();
        assert_eq!(transactional.batching().commit_every, Some(5_000));
    }

    #[test]
    fn inconsistent_options_are_usage_errors() {
        let usage = |args: &[&str]| parse(args).unwrap().validate().unwrap_err().to_string();
        assert!(usage(&[]).contains("--topic"));
        assert!(usage(&["-t", "bad topic"]).contains("' '"));
        assert!(usage(&["-t", "t", "-f", "json", "-K", ":"]).contains("--format text"));
        assert!(usage(&["-t", "t", "--tls-ca", "ca.pem"]).contains("https://127.0.0.1:50051"));
        assert!(
            usage(&["-t", "t", "--target", "https://gw:1", "--tls-key", "k"])
                .contains("--tls-cert")
        );
        parse(&["-f", "json"]).unwrap().validate().unwrap();
        assert!(parse(&["-t", "t", "--batch-records", "0"]).is_err());
        assert!(parse(&["-t", "t", "--progress", "--quiet"]).is_err());
        assert!(parse(&["-t", "t", "-K", ""]).is_err());
    }
}
