//! `kafka-gateway bench`: pushes one workload through several ways of
//! producing to Kafka, on one broker, and compares them.
//!
//! The strategies ([`Strategy`]):
//! - `native`: librdkafka alone, a `ThreadedProducer` whose delivery
//!   callback counts the acks: the ceiling of any way of producing from
//!   Rust;
//! - `direct`: the gateway's own stream driver and ordered window over the
//!   shared librdkafka producer, in process, with no gRPC;
//! - `gateway`: N concurrent gRPC `Produce` streams over loopback TCP into a
//!   gateway (a `kafka-gateway serve` process of its own, or `--target` for
//!   a running one);
//! - `seed-sync`, `seed-spawn`, `seed-futures-ordered`: the three ways most
//!   code starts with `FutureProducer::send`.
//!
//! Each strategy runs in a child process of its own (this binary, re-run with
//! a hidden `--child` argument), so its peak RSS is its own; the parent owns
//! the broker, creates a fresh topic per run, shows progress, reads each
//! topic back to check the stored order, and reports.
//!
//! `--soak DURATION` instead holds many streams on a gateway process and
//! samples its memory ([`soak`]).
//!
//! One file per concern: [`workload`] (records, keys, pacing), [`measure`]
//! (what a run measures, and the harness its streams run in), [`child`]
//! (the child process) and [`strategies`] (the strategies), [`order`]
//! (order violations at ack and at store time), [`broker`] (topics, reading
//! back), [`rss`] and [`cpu`] (a process's memory and CPU time), [`runner`]
//! (the parent), [`report`] (table and JSON), [`plot`] (the SVG chart).

mod broker;
mod child;
mod cpu;
mod measure;
mod native;
mod order;
mod plot;
mod report;
mod rss;
mod runner;
mod soak;
mod strategies;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::config::{Compression, DEFAULT_LINGER_MS, DEFAULT_MAX_IN_FLIGHT_RECORDS};
use crate::error::Error;
use crate::units::parse_duration;

/// Trials of each strategy by default: the fewest whose median ignores one
/// disturbed trial and whose min and max still say how far apart they were.
pub const DEFAULT_TRIALS: u32 = 5;
/// How long each trial should take, by default: long enough that the start
/// (windows and queues filling) and the end (draining them) are a small part
/// of it, short enough that five trials of six strategies, interleaved, take
/// a few minutes.
pub const DEFAULT_TRIAL_SECONDS: f64 = 3.0;
/// Partitions of each run's topic by default. The embedded broker keeps at
/// most 5 MiB or 100,000 records per partition: 32 partitions hold about
/// 1.5 million records of 112 bytes, so the stored order of a trial of
/// 3 seconds at more than 500k records/s is checked on its last records
/// only (the report says how many). More partitions would check more and
/// change the workload: the default stays where earlier runs measured it.
pub const DEFAULT_PARTITIONS: i32 = 32;
/// The record size the throughput goals are stated for.
pub const DEFAULT_RECORD_BYTES: usize = 100;
/// Concurrent streams (gRPC streams, or tasks for the in-process strategies).
pub const DEFAULT_STREAMS: usize = 8;
/// Records per gRPC batch (and per paced step of every strategy).
pub const DEFAULT_BATCH: usize = 200;
/// How long `seed-sync`, which produces one record per round trip, runs:
/// it is compared by rate on what it did in that time.
pub const DEFAULT_SAMPLE: &str = "3s";
/// The longest any one run may take before it stops and is compared by rate.
pub const DEFAULT_MAX_TIME: &str = "60s";

/// A way of producing the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// librdkafka alone, driven the cheapest way rust-rdkafka allows: a
    /// `ThreadedProducer` and a delivery callback, no per-record future.
    Native,
    /// The gateway's stream driver and ordered window over librdkafka, in
    /// process, no gRPC.
    Direct,
    /// gRPC `Produce` streams into a gateway over loopback TCP.
    Gateway,
    /// `FuturesOrdered` of `FutureProducer::send` futures, at most `--window`
    /// per stream.
    SeedFuturesOrdered,
    /// `tokio::spawn` of `FutureProducer::send` per record.
    SeedSpawn,
    /// `FutureProducer::send(..).await` per record, one after the other.
    SeedSync,
}

impl Strategy {
    /// Every strategy, in the order they run and are reported.
    pub const ALL: [Strategy; 6] = [
        Strategy::Native,
        Strategy::Direct,
        Strategy::Gateway,
        Strategy::SeedFuturesOrdered,
        Strategy::SeedSpawn,
        Strategy::SeedSync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Native => "native",
            Strategy::Direct => "direct",
            Strategy::Gateway => "gateway",
            Strategy::SeedFuturesOrdered => "seed-futures-ordered",
            Strategy::SeedSpawn => "seed-spawn",
            Strategy::SeedSync => "seed-sync",
        }
    }
}

/// Benchmark the gateway against librdkafka alone, an in-process producer
/// and the usual `FutureProducer::send` patterns.
#[derive(Debug, Clone, Args)]
#[command(
    after_long_help = "Every strategy produces the same records (a 12-byte key holding \
the stream and sequence number, and a value of --record-bytes) to a fresh topic of \
--partitions partitions, in its own child process; the gateway strategy's gateway is a \
process of its own too.

Trials: each strategy first runs for one second to measure its rate, which sizes its trials \
to take --trial-seconds (or every trial has --records records). Then --trials rounds run every \
strategy once each, interleaved (A B C A B C ...), so that a slow spell of the machine hits \
every strategy alike. The report gives each figure's median with its min and max, and each \
ratio as the median of the per-trial ratios with its spread (max / min).

Ack latency runs from the moment a batch is handed over (or, with --rate, from the moment it \
was due) to its ack. CPU is user + system time per million records acked, over each trial's \
timed span, for the strategy's process (client) and the gateway process apart; the embedded \
broker runs in this, the parent process, and is in neither. After the trials, gateway, direct \
and native run once more at half the gateway's median rate to compare latency at load \
(--no-latency-at-load skips this). Progress goes to stderr, the table to stdout.

Examples:
  kafka-gateway bench
  kafka-gateway bench --trials 5 --json bench.json --plot bench.svg
  kafka-gateway bench --strategies native,direct,gateway --trials 9 --trial-seconds 5
  kafka-gateway bench --records 5000 --trials 2 --sample 1s        (a smoke test)
  kafka-gateway bench --strategies gateway --trials 1 --scaling 1,10,100,1000
  kafka-gateway bench --bootstrap-servers kafka:9092 --target 127.0.0.1:50051
  kafka-gateway bench --soak 10m --streams 1000 --batch 10 --json soak.json"
)]
pub struct BenchArgs {
    /// Trials of each strategy, run interleaved (A B C A B C ...): the
    /// report gives each figure's median, min and max over them, and each
    /// ratio as the median of the per-trial ratios with its spread.
    #[arg(long, default_value_t = DEFAULT_TRIALS, value_parser = clap::value_parser!(u32).range(1..))]
    pub trials: u32,

    /// How long each trial should take: each strategy's records per trial
    /// are its rate in a one-second calibration run times this. Ignored
    /// with --records.
    #[arg(long, default_value_t = DEFAULT_TRIAL_SECONDS, value_parser = positive_seconds,
          value_name = "SECONDS")]
    pub trial_seconds: f64,

    /// Records of every trial of every strategy (spread evenly over the
    /// streams), instead of sizing each strategy's trials to take
    /// --trial-seconds; `seed-sync` then stops after --sample.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: Option<u64>,

    /// Value bytes of each record (the key adds 12).
    #[arg(long, default_value_t = DEFAULT_RECORD_BYTES)]
    pub record_bytes: usize,

    /// Concurrent streams: gRPC streams for `gateway`, tasks for the others.
    #[arg(long, default_value_t = DEFAULT_STREAMS, value_parser = positive)]
    pub streams: usize,

    /// Records per gRPC batch, and per paced step of every strategy.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = positive)]
    pub batch: usize,

    /// Partitions of each run's topic. Keep records / partitions under the
    /// embedded broker's retention (about 40,000 records of 112 bytes) to
    /// have every record's stored order checked.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,

    /// Records in flight per stream: the gateway's --max-in-flight-records,
    /// and the bound of `seed-futures-ordered`.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT_RECORDS, value_parser = positive)]
    pub window: usize,

    /// librdkafka linger.ms of every producer.
    #[arg(long, default_value_t = DEFAULT_LINGER_MS)]
    pub linger_ms: u64,

    /// Compression of every producer.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Any other librdkafka producer property, for every strategy's
    /// producer, e.g. `-X acks=1` or `-X queue.buffering.max.messages=10000`;
    /// repeatable. The properties the options above own are refused.
    #[arg(short = 'X', long = "librdkafka-option", value_name = "KEY=VALUE", value_parser = property)]
    pub librdkafka_options: Vec<String>,

    /// Strategies to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "native,direct,gateway,seed-futures-ordered,seed-spawn,seed-sync"
    )]
    pub strategies: Vec<Strategy>,

    /// Caps every run at this many records per second (all streams
    /// together), for latency at a given load. Unset: as fast as it goes.
    #[arg(long, value_name = "RECORDS_PER_SEC")]
    pub rate: Option<f64>,

    /// Kafka to produce to. Unset: an embedded in-memory broker.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub bootstrap_servers: Option<String>,

    /// A running gateway (`HOST:PORT`) for the `gateway` strategy, instead
    /// of starting one. Give --bootstrap-servers of its Kafka too, so the
    /// topics are created there and read back.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,

    /// Run the `gateway` strategy's gateway inside the client's process
    /// instead of as a process of its own (`kafka-gateway serve`, the
    /// default). Its CPU and memory are then counted with the client's:
    /// one process to profile.
    #[arg(long, conflicts_with = "target")]
    pub gateway_in_process: bool,

    /// The default now: kept so that older commands still run.
    #[arg(long, hide = true, conflicts_with = "gateway_in_process")]
    pub gateway_process: bool,

    /// HTTP/2 connections the gRPC streams share. Default: one per 100
    /// streams.
    #[arg(long, value_parser = positive)]
    pub connections: Option<usize>,

    /// With --records, how long `seed-sync` runs; it is compared by rate.
    #[arg(long, default_value = DEFAULT_SAMPLE, value_parser = parse_duration, value_name = "DURATION")]
    pub sample: Duration,

    /// The longest one run may take; a run cut short is compared by rate.
    #[arg(long, default_value = DEFAULT_MAX_TIME, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time: Duration,

    /// Skip the runs of gateway, direct and native at half the gateway's
    /// median rate.
    #[arg(long)]
    pub no_latency_at_load: bool,

    /// Also run `gateway` once with each of these stream counts (e.g.
    /// 1,10,100,1000) and print a scaling table.
    #[arg(long, value_delimiter = ',', value_parser = positive)]
    pub scaling: Vec<usize>,

    /// Do not read the topics back to check the stored order.
    #[arg(long)]
    pub no_store_check: bool,

    /// Write the method, the per-strategy summaries, the ratios and every
    /// run as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Draw throughput, p99 latency and CPU per process for each strategy
    /// (medians, with min-max whiskers) as an SVG chart.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Instead of comparing strategies, hold --streams gRPC streams open on a
    /// gateway process for this long, each sending a batch of --batch
    /// records --soak-rate times a second, and sample the gateway's RSS
    /// every --soak-interval: the curve and its slope after warm-up show
    /// whether anything grows with time. E.g. `--soak 10m --streams 1000
    /// --batch 10`.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub soak: Option<Duration>,

    /// Batches each soak stream sends per second.
    #[arg(long, default_value_t = 1.0, value_name = "PER_SEC")]
    pub soak_rate: f64,

    /// How often the soak samples the gateway's RSS.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub soak_interval: Duration,

    /// Internal: run one strategy as described by this JSON and report on
    /// stdout.
    #[arg(long, hide = true, value_name = "JSON")]
    pub child: Option<String>,
}

/// Runs the benchmark (or, with `--child`, one strategy of it).
pub async fn run(args: BenchArgs) -> Result<(), Error> {
    match (&args.child, args.soak) {
        (Some(spec), _) => child::main(spec).await,
        (None, Some(duration)) => soak::main(&args, duration).await,
        (None, None) => runner::main(args).await,
    }
}

fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a number of seconds above 0".into()),
        Err(err) => Err(err.to_string()),
    }
}

fn property(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not KEY=VALUE, e.g. -X acks=1")),
    }
}

/// An error of the benchmark itself (not of configuration).
fn failure(message: impl Into<String>) -> Error {
    Error::Io(std::io::Error::other(message.into()))
}
