//! The parent process: starts the broker, runs each strategy in a child
//! process with a progress bar, reads each topic back, and reports.

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
use super::report::{self, Group, LatencyAtLoad, Machine, Ratios, Report, RunReport, si};
use super::workload::Workload;
use super::{BenchArgs, Strategy, failure, plot, strategies};

/// Time a child may take beyond its run's budget (start-up, warm-up,
/// draining what is in flight) before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(180);
/// Streams per HTTP/2 connection when `--connections` is not given.
const STREAMS_PER_CONNECTION: usize = 100;
/// The latency-at-load runs go at this fraction of the gateway's rate.
const AT_LOAD: f64 = 0.5;

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
        runs: Vec::new(),
        failures: Vec::new(),
    };

    for &strategy in &strategies {
        bench
            .execute(Group::Main, strategy, args.streams, args.rate)
            .await?;
    }
    if !args.no_latency_at_load && args.rate.is_none() {
        let rate = |strategy| {
            bench
                .runs
                .iter()
                .find(|r| r.group == Group::Main && r.strategy == strategy && r.records_ok > 0)
                .map(|r| r.records_per_sec)
        };
        if let (Some(gateway), Some(_)) = (rate(Strategy::Gateway), rate(Strategy::Direct)) {
            let capped = (gateway * AT_LOAD).round().max(1.0);
            for strategy in [Strategy::Gateway, Strategy::Direct] {
                bench
                    .execute(Group::LatencyAtLoad, strategy, args.streams, Some(capped))
                    .await?;
            }
        }
    }
    for &streams in &args.scaling {
        bench
            .execute(Group::Scaling, Strategy::Gateway, streams, args.rate)
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

struct Bench<'a> {
    args: &'a BenchArgs,
    kafka: Kafka,
    gateway_elsewhere: bool,
    runs: Vec<RunReport>,
    /// Runs that did not finish, for the exit status.
    failures: Vec<String>,
}

impl Bench<'_> {
    /// Runs `strategy` with `streams` streams in a child process, reads its
    /// topic back, and adds the run to the report.
    async fn execute(
        &mut self,
        group: Group,
        strategy: Strategy,
        streams: usize,
        rate: Option<f64>,
    ) -> Result<(), Error> {
        let workload = self.workload(strategy, streams, rate);
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
        let label = match group {
            Group::Main => strategy.name().to_owned(),
            Group::LatencyAtLoad => format!("{} @{}/s", strategy.name(), si(rate.unwrap_or(0.0))),
            Group::Scaling => format!("{} x{streams}", strategy.name()),
        };
        let spawned = {
            let (workload, label) = (workload.clone(), label.clone());
            tokio::task::spawn_blocking(move || run_child(&workload, &label))
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
        let stored = if ours && !self.args.no_store_check && measured.handed > 0 {
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
        let run = RunReport::new(group, &workload, measured, stored);
        eprintln!("{}", summary(&label, &run));
        self.runs.push(run);
        Ok(())
    }

    fn workload(&self, strategy: Strategy, streams: usize, rate: Option<f64>) -> Workload {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let args = self.args;
        let topic = format!(
            "bench-{}-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed),
            strategy.name()
        );
        Workload {
            strategy,
            streams,
            rate,
            time_budget: match strategy {
                Strategy::SeedSync => args.sample.min(args.max_time),
                _ => args.max_time,
            },
            warmup_topic: format!("{topic}-warmup"),
            topic,
            connections: args
                .connections
                .unwrap_or(streams.div_ceil(STREAMS_PER_CONNECTION)),
            ..base_workload(args, self.kafka.bootstrap_servers())
        }
    }
}

/// What every run shares, from the command line.
fn base_workload(args: &BenchArgs, bootstrap_servers: String) -> Workload {
    Workload {
        strategy: Strategy::Direct,
        records: args.records,
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
    format!(
        "{label}: {} records in {:.2} s: {} records/s, p99 {:.2} ms, {} order violations{}",
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
fn run_child(workload: &Workload, label: &str) -> Result<Measured, String> {
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

    let bar = ProgressBar::new(workload.records).with_prefix(label.to_owned());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>24} [{bar:32}] {human_pos}/{human_len} records, {rate}/s, {elapsed}",
        )
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
