//! The parent process: starts the broker, sizes each strategy's trials
//! from a calibration run, runs the trials interleaved, each in a child
//! process with a progress bar, reads each topic back, and reports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::EmbeddedBroker;
use crate::error::Error;

use super::broker::Kafka;
use super::measure::Measured;
use super::report::{
    self, Group, LatencyAtLoad, Machine, Method, Ratios, Report, RunReport, Summary, si,
};
use super::workload::Workload;
use super::{BenchArgs, Strategy, failure, plot, strategies};

/// Time a child may take beyond its run's budget (start-up, warm-up,
/// draining what is in flight) before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(180);
/// Streams per HTTP/2 connection when `--connections` is not given.
const STREAMS_PER_CONNECTION: usize = 100;
/// The latency-at-load runs go at this fraction of the gateway's rate.
const AT_LOAD: f64 = 0.5;
/// How long a calibration run hands records over: long enough to get past
/// the windows filling up, short next to the trials it sizes.
const CALIBRATION: Duration = Duration::from_secs(1);
/// Records a calibration run is given: more than any strategy sends in
/// [`CALIBRATION`], so that time, not the count, ends it.
const CALIBRATION_RECORDS: u64 = 1_000_000_000;

pub async fn main(args: BenchArgs) -> Result<(), Error> {
    let strategies: Vec<Strategy> = Strategy::ALL
        .into_iter()
        .filter(|s| args.strategies.contains(s))
        .collect();
    if strategies.is_empty() && args.scaling.is_empty() {
        return Err(Error::Config("--strategies names no strategy".into()));
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(Error::Config(format!("--rate {rate} must be above 0")));
    }
    let mut machine = Machine::probe();
    // The options every producer gets, checked once, as the gateway would.
    strategies::gateway_config(&base_workload(&args, "127.0.0.1:9092".into()))
        .map_err(Error::Config)?;
    let kafka = match &args.bootstrap_servers {
        Some(servers) => Kafka::External(servers.clone()),
        None => Kafka::Embedded(Arc::new(EmbeddedBroker::start(1, args.partitions)?)),
    };
    // With --target alone, the gateway writes to its own Kafka: its topic
    // cannot be created or read back from here.
    let gateway_elsewhere = args.target.is_some() && args.bootstrap_servers.is_none();
    if gateway_elsewhere {
        eprintln!(
            "note: --target without --bootstrap-servers: the gateway writes to its own Kafka, \
             the other strategies to an embedded broker; its topic is created on first use \
             there and not read back"
        );
    }
    let mut bench = Bench {
        args: &args,
        kafka,
        gateway_elsewhere,
        sizes: HashMap::new(),
        runs: Vec::new(),
        failures: Vec::new(),
    };

    for &strategy in &strategies {
        bench.size(strategy).await?;
    }
    for trial in 1..=args.trials {
        for &strategy in &strategies {
            let records = bench.size(strategy).await?;
            bench
                .execute(Spec {
                    group: Group::Main,
                    trial: Some(trial),
                    ..Spec::new(strategy, args.streams, args.rate, records)
                })
                .await?;
        }
    }
    let summaries = Summary::of(&bench.runs);
    if !args.no_latency_at_load && args.rate.is_none() {
        let gateway = summaries
            .iter()
            .find(|s| s.strategy == Strategy::Gateway)
            .map(|s| s.records_per_sec.median);
        let others = [Strategy::Direct, Strategy::Native];
        if let Some(gateway) = gateway
            && others.iter().any(|s| strategies.contains(s))
        {
            let capped = (gateway * AT_LOAD).round().max(1.0);
            let records = args.records.unwrap_or_else(|| {
                let records = (capped * args.trial_seconds).ceil() as u64;
                round_up(records, args.streams * args.batch)
            });
            for strategy in [Strategy::Gateway, Strategy::Direct, Strategy::Native] {
                if strategy == Strategy::Gateway || strategies.contains(&strategy) {
                    bench
                        .execute(Spec {
                            group: Group::LatencyAtLoad,
                            ..Spec::new(strategy, args.streams, Some(capped), records)
                        })
                        .await?;
                }
            }
        }
    }
    for &streams in &args.scaling {
        let records = bench.size(Strategy::Gateway).await?;
        bench
            .execute(Spec {
                group: Group::Scaling,
                ..Spec::new(Strategy::Gateway, streams, args.rate, records)
            })
            .await?;
    }
    machine.load_average_after = report::load_average();

    let report = Report {
        machine,
        command: std::env::args().collect(),
        broker: match bench.kafka {
            Kafka::Embedded(_) => "embedded",
            Kafka::External(_) => "external",
        },
        method: Method {
            trials: args.trials,
            trial_seconds: args.records.is_none().then_some(args.trial_seconds),
            records_per_trial: args.records,
            cpu: report::CPU_NOTE,
        },
        strategies: summaries,
        ratios: Ratios::of(&bench.runs),
        latency_at_load: LatencyAtLoad::of(&bench.runs),
        runs: bench.runs,
    };
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| failure(e.to_string()))?;
        std::fs::write(path, json + "\n")
            .map_err(|err| failure(format!("cannot write {}: {err}", path.display())))?;
    }
    if let Some(path) = &args.plot {
        plot::draw(&report, path)
            .map_err(|err| failure(format!("cannot draw {}: {err}", path.display())))?;
    }
    if bench.failures.is_empty() {
        Ok(())
    } else {
        Err(failure(bench.failures.join("; ")))
    }
}

/// `n` rounded up to a multiple of `step`.
fn round_up(n: u64, step: usize) -> u64 {
    let step = step.max(1) as u64;
    n.div_ceil(step).max(1) * step
}

/// One run to make.
struct Spec {
    group: Group,
    trial: Option<u32>,
    strategy: Strategy,
    streams: usize,
    rate: Option<f64>,
    records: u64,
}

impl Spec {
    fn new(strategy: Strategy, streams: usize, rate: Option<f64>, records: u64) -> Self {
        Self {
            group: Group::Main,
            trial: None,
            strategy,
            streams,
            rate,
            records,
        }
    }
}

struct Bench<'a> {
    args: &'a BenchArgs,
    kafka: Kafka,
    gateway_elsewhere: bool,
    /// Records per trial of each strategy, once known.
    sizes: HashMap<Strategy, u64>,
    runs: Vec<RunReport>,
    /// Runs that did not finish, for the exit status.
    failures: Vec<String>,
}

impl Bench<'_> {
    /// Records per trial of `strategy`: `--records`, or what it acks in
    /// `--trial-seconds` at the rate of a calibration run (made on first
    /// use), in whole batches of every stream.
    async fn size(&mut self, strategy: Strategy) -> Result<u64, Error> {
        if let Some(records) = self.args.records {
            return Ok(records);
        }
        if let Some(&records) = self.sizes.get(&strategy) {
            return Ok(records);
        }
        let args = self.args;
        let rate = self
            .execute(Spec {
                group: Group::Calibration,
                ..Spec::new(strategy, args.streams, args.rate, CALIBRATION_RECORDS)
            })
            .await?
            .records_per_sec;
        let whole = args.streams * args.batch;
        let records = if rate > 0.0 {
            round_up((rate * args.trial_seconds).ceil() as u64, whole)
        } else {
            // The failure is reported; the trials will show it again.
            whole as u64
        };
        eprintln!(
            "{}: {} records/s in calibration: {} records per trial",
            strategy.name(),
            si(rate),
            records
        );
        self.sizes.insert(strategy, records);
        Ok(records)
    }

    /// Runs `spec` in a child process, reads its topic back (but for a
    /// calibration run), and adds the run to the report.
    async fn execute(&mut self, spec: Spec) -> Result<&RunReport, Error> {
        let workload = self.workload(&spec);
        let strategy = spec.strategy;
        let ours = !(strategy == Strategy::Gateway && self.gateway_elsewhere);
        let topics = [
            (&workload.topic, self.args.partitions),
            (&workload.warmup_topic, 1),
        ];
        for (topic, partitions) in topics.into_iter().filter(|_| ours) {
            // A broker that refuses CreateTopics may still create topics on
            // first use, with its own partition count: go on, and say so.
            if let Err(err) = self.kafka.create_topic(topic, partitions).await {
                eprintln!("warning: {err}; relying on the broker to create it on first use");
            }
        }
        let label = match spec.group {
            Group::Calibration => format!("{} calibration", strategy.name()),
            Group::Main => match spec.trial {
                Some(trial) => format!("{} [{trial}/{}]", strategy.name(), self.args.trials),
                None => strategy.name().to_owned(),
            },
            Group::LatencyAtLoad => {
                format!("{} @{}/s", strategy.name(), si(spec.rate.unwrap_or(0.0)))
            }
            Group::Scaling => format!("{} x{}", strategy.name(), spec.streams),
        };
        let spawned = {
            let (workload, label) = (workload.clone(), label.clone());
            let bar_length = match spec.group {
                Group::Calibration => 0,
                _ => workload.records,
            };
            tokio::task::spawn_blocking(move || run_child(&workload, &label, bar_length))
                .await
                .map_err(|err| failure(err.to_string()))?
        };
        let measured = match spawned {
            Ok(measured) => measured,
            Err(err) => {
                eprintln!("{label}: failed: {err}");
                self.failures.push(format!("{label}: {err}"));
                Measured {
                    first_error: Some(err),
                    ..Measured::default()
                }
            }
        };
        let read_back = ours
            && !self.args.no_store_check
            && spec.group != Group::Calibration
            && measured.handed > 0;
        let stored = if read_back {
            let spinner = ProgressBar::new_spinner().with_message(format!("{label}: reading back"));
            spinner.enable_steady_tick(Duration::from_millis(100));
            let stored = self.kafka.read_back(&workload.topic).await;
            spinner.finish_and_clear();
            match stored {
                Ok(stored) => Some(stored),
                Err(err) => {
                    eprintln!("{label}: read-back failed: {err}");
                    self.failures.push(format!("{label}: read-back: {err}"));
                    None
                }
            }
        } else {
            None
        };
        let run = RunReport::new(spec.group, spec.trial, &workload, measured, stored);
        eprintln!("{}", summary(&label, &run));
        self.runs.push(run);
        Ok(self.runs.last().expect("just pushed"))
    }

    fn workload(&self, spec: &Spec) -> Workload {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let args = self.args;
        let topic = format!(
            "bench-{}-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed),
            spec.strategy.name()
        );
        let time_budget = match (spec.group, spec.strategy, args.records) {
            (Group::Calibration, _, _) => CALIBRATION,
            // A fixed count that seed-sync, at a record per round trip,
            // would take minutes to send.
            (_, Strategy::SeedSync, Some(_)) => args.sample,
            _ => args.max_time,
        };
        Workload {
            strategy: spec.strategy,
            records: spec.records,
            streams: spec.streams,
            rate: spec.rate,
            time_budget: time_budget.min(args.max_time),
            warmup_topic: format!("{topic}-warmup"),
            topic,
            connections: args
                .connections
                .unwrap_or(spec.streams.div_ceil(STREAMS_PER_CONNECTION)),
            ..base_workload(args, self.kafka.bootstrap_servers())
        }
    }
}

/// What every run shares, from the command line.
fn base_workload(args: &BenchArgs, bootstrap_servers: String) -> Workload {
    Workload {
        strategy: Strategy::Direct,
        records: args.records.unwrap_or(1),
        record_bytes: args.record_bytes,
        streams: args.streams,
        batch: args.batch,
        window: args.window,
        linger_ms: args.linger_ms,
        compression: clap::ValueEnum::to_possible_value(&args.compression)
            .map_or("none".to_owned(), |v| v.get_name().to_owned()),
        rate: args.rate,
        time_budget: args.max_time,
        topic: String::new(),
        warmup_topic: String::new(),
        bootstrap_servers,
        target: args.target.clone(),
        gateway_process: !args.gateway_in_process,
        connections: 1,
        librdkafka_options: args.librdkafka_options.clone(),
    }
}

/// One line per finished run, on stderr.
fn summary(label: &str, run: &RunReport) -> String {
    let cpu = match (run.cpu_s_per_million, run.gateway_cpu_s_per_million) {
        (Some(client), Some(gateway)) => {
            format!(", CPU {client:.2} + gateway {gateway:.2} s per million")
        }
        (Some(client), None) => format!(", CPU {client:.2} s per million"),
        _ => String::new(),
    };
    format!(
        "{label}: {} records in {:.2} s: {} records/s, p99 {:.2} ms{cpu}, {} order violations{}",
        run.records_ok,
        run.seconds,
        si(run.records_per_sec),
        run.latency_ms.p99,
        run.ack_order_violations + run.stored_order_violations.unwrap_or(0),
        if run.records_failed > 0 {
            format!(", {} errors", run.records_failed)
        } else {
            String::new()
        }
    )
}

/// Runs one workload in a child process (this binary, `bench --child`),
/// showing its progress, and returns what it measured.
/// `bar_length` 0 shows a spinner (a run that time, not a count, ends).
fn run_child(workload: &Workload, label: &str, bar_length: u64) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|err| format!("cannot find this binary: {err}"))?;
    let spec = serde_json::to_string(workload).map_err(|err| err.to_string())?;
    let mut command = Command::new(exe);
    command
        .args(["bench", "--child", &spec])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("RUST_LOG").is_none() {
        // The in-process gateway's start and stop are not news here.
        command.env("RUST_LOG", "warn");
    }
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start a child process: {err}"))?;

    let bar = ProgressBar::new(bar_length).with_prefix(label.to_owned());
    let template = if bar_length == 0 {
        "{prefix:>28} {spinner} {human_pos} records, {rate}/s, {elapsed}"
    } else {
        "{prefix:>28} [{bar:32}] {human_pos}/{human_len} records, {rate}/s, {elapsed}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{}", si(state.per_sec()));
                },
            )
            .progress_chars("=> "),
    );
    let stderr = child.stderr.take().expect("piped");
    let forward = {
        let (bar, label) = (bar.clone(), label.to_owned());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                bar.suspend(|| eprintln!("{label}: {line}"));
            }
        })
    };
    let limit = workload.time_budget + CHILD_GRACE;
    let started = Instant::now();
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut measured = None;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(count) = line.strip_prefix("P ") {
                    bar.set_position(count.parse().unwrap_or(0));
                } else if let Some(json) = line.strip_prefix("R ") {
                    measured = Some(
                        serde_json::from_str::<Measured>(json)
                            .map_err(|err| format!("unreadable result from the child: {err}"))?,
                    );
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                bar.finish_and_clear();
                return Err(format!("did not finish within {limit:?}; killed"));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|err| format!("lost the child process: {err}"))?;
    let _ = forward.join();
    bar.finish_and_clear();
    match measured {
        Some(measured) if status.success() => Ok(measured),
        _ => Err(format!("the child process failed ({status})")),
    }
}
