//! The results: one [`RunReport`] per run; per strategy, the median, min
//! and max of its trials ([`Summary`]); each ratio between strategies as
//! the median of its per-trial ratios, with their spread ([`Ratio`]); the
//! table on stdout and the JSON file.

use std::fmt::Write as _;

use serde::Serialize;

use super::Strategy;
use super::broker::Stored;
use super::measure::{Latency, Measured};
use super::workload::Workload;

/// Which part of the benchmark a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// A short run that measures a strategy's rate, to size its trials.
    Calibration,
    /// The trials: every strategy once per round, as fast as each goes (or
    /// at `--rate`).
    Main,
    /// `gateway`, `direct` and `native` again, at half the gateway's rate.
    LatencyAtLoad,
    /// `gateway` with `--scaling` stream counts.
    Scaling,
}

/// Where the `gateway` strategy's gateway ran: whose CPU and memory the
/// figures hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayAt {
    /// A `kafka-gateway serve` process of its own: measured apart.
    Process,
    /// In the client's process: counted with the client.
    InProcess,
    /// `--target`: not measured.
    Elsewhere,
}

/// One run of one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub strategy: Strategy,
    pub group: Group,
    /// 1 to `--trials`, for the main runs.
    pub trial: Option<u32>,
    pub streams: usize,
    pub batch: usize,
    pub record_bytes: usize,
    /// Records per second over all streams, when capped.
    pub rate_cap: Option<f64>,
    pub records_requested: u64,
    pub records_handed: u64,
    pub records_ok: u64,
    pub records_failed: u64,
    /// The run hit its time budget; compare it by rate.
    pub cut_short: bool,
    pub seconds: f64,
    /// Acknowledged records per second.
    pub records_per_sec: f64,
    /// Acknowledged payload (key and value) in 10^6 bytes per second.
    pub mb_per_sec: f64,
    pub latency_ms: Latency,
    /// For `gateway`: where its gateway ran.
    pub gateway: Option<GatewayAt>,
    /// CPU seconds (user + system) of the strategy's process while the
    /// clock ran: for `gateway`, the client (and the gateway too when in
    /// process).
    pub cpu_seconds: Option<f64>,
    /// The same per million records acked.
    pub cpu_s_per_million: Option<f64>,
    /// CPU seconds of the gateway process over the same span.
    pub gateway_cpu_seconds: Option<f64>,
    pub gateway_cpu_s_per_million: Option<f64>,
    /// The child process's peak RSS, in MiB: for `gateway`, the client
    /// (and the gateway too when in process).
    pub peak_rss_mib: Option<f64>,
    /// The gateway process's own peak RSS.
    pub gateway_peak_rss_mib: Option<f64>,
    /// Records acked out of their stream's order in a partition.
    pub ack_order_violations: u64,
    /// Records stored after a record their stream sent later, from reading
    /// the topic back (`None`: not read back).
    pub stored_order_violations: Option<u64>,
    pub stored: Option<Stored>,
    pub first_error: Option<String>,
    pub topic: String,
}

impl RunReport {
    pub fn new(
        group: Group,
        trial: Option<u32>,
        workload: &Workload,
        measured: Measured,
        stored: Option<Stored>,
    ) -> Self {
        let seconds = measured.seconds.max(1e-9);
        let records_per_sec = measured.ok as f64 / seconds;
        let per_million = |cpu: Option<f64>| {
            cpu.filter(|_| measured.ok > 0)
                .map(|cpu| cpu / measured.ok as f64 * 1e6)
        };
        let gateway = (workload.strategy == Strategy::Gateway).then_some(
            match (&workload.target, workload.gateway_process) {
                (Some(_), _) => GatewayAt::Elsewhere,
                (None, true) => GatewayAt::Process,
                (None, false) => GatewayAt::InProcess,
            },
        );
        Self {
            strategy: workload.strategy,
            group,
            trial,
            streams: workload.streams,
            batch: workload.batch,
            record_bytes: workload.record_bytes,
            rate_cap: workload.rate,
            records_requested: workload.records,
            records_handed: measured.handed,
            records_ok: measured.ok,
            records_failed: measured.failed,
            cut_short: measured.cut_short,
            seconds: measured.seconds,
            records_per_sec,
            mb_per_sec: records_per_sec * workload.record_size() as f64 / 1e6,
            latency_ms: measured.latency_ms,
            gateway,
            cpu_seconds: measured.cpu_seconds,
            cpu_s_per_million: per_million(measured.cpu_seconds),
            gateway_cpu_seconds: measured.gateway_cpu_seconds,
            gateway_cpu_s_per_million: per_million(measured.gateway_cpu_seconds),
            peak_rss_mib: measured.peak_rss_bytes.map(mib),
            gateway_peak_rss_mib: measured.gateway_peak_rss_bytes.map(mib),
            ack_order_violations: measured.ack_violations,
            stored_order_violations: stored.as_ref().map(|s| s.violations),
            stored,
            first_error: measured.first_error,
            topic: workload.topic.clone(),
        }
    }

    /// The run's name in the table.
    pub fn label(&self) -> String {
        match (self.group, self.rate_cap, self.trial) {
            (Group::Scaling, _, _) => format!("{} x{}", self.strategy.name(), self.streams),
            (Group::Calibration, _, _) => format!("{} (calibration)", self.strategy.name()),
            (_, Some(rate), _) => format!("{} @{}/s", self.strategy.name(), si(rate)),
            (_, None, Some(trial)) => format!("{} #{trial}", self.strategy.name()),
            (_, None, None) => self.strategy.name().to_owned(),
        }
    }

    /// CPU seconds per million records of every process but the broker:
    /// the client's, plus the gateway's when it ran apart. `None` when a
    /// part is unknown (a gateway elsewhere).
    pub fn total_cpu_s_per_million(&self) -> Option<f64> {
        match self.gateway {
            Some(GatewayAt::Elsewhere) => None,
            Some(GatewayAt::Process) => {
                Some(self.cpu_s_per_million? + self.gateway_cpu_s_per_million?)
            }
            Some(GatewayAt::InProcess) | None => self.cpu_s_per_million,
        }
    }
}

/// The median of a figure over the trials, with its min and max.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of `values`; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }
}

/// One strategy over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub strategy: Strategy,
    /// Trials that acknowledged anything.
    pub trials: usize,
    /// Records each trial was asked for.
    pub records_per_trial: u64,
    /// Some trial hit its time budget (a sample, compared by rate).
    pub cut_short: bool,
    pub records_per_sec: Spread,
    pub mb_per_sec: Spread,
    pub p50_ms: Spread,
    pub p99_ms: Spread,
    pub p999_ms: Spread,
    /// CPU seconds per million records: the strategy's process.
    pub cpu_s_per_million: Option<Spread>,
    /// The gateway process's, for `gateway`.
    pub gateway_cpu_s_per_million: Option<Spread>,
    /// Every process but the broker: client plus gateway, per trial.
    pub total_cpu_s_per_million: Option<Spread>,
    /// The largest peak RSS over the trials.
    pub peak_rss_mib: Option<f64>,
    pub gateway_peak_rss_mib: Option<f64>,
    /// Over every trial.
    pub ack_order_violations: u64,
    pub stored_order_violations: Option<u64>,
    pub records_failed: u64,
}

impl Summary {
    /// One per strategy with a main run, in [`Strategy::ALL`]'s order.
    pub fn of(runs: &[RunReport]) -> Vec<Self> {
        Strategy::ALL
            .into_iter()
            .filter_map(|strategy| {
                let all: Vec<&RunReport> = runs
                    .iter()
                    .filter(|r| r.group == Group::Main && r.strategy == strategy)
                    .collect();
                let ok: Vec<&RunReport> =
                    all.iter().copied().filter(|r| r.records_ok > 0).collect();
                let spread = |f: &dyn Fn(&RunReport) -> f64| Spread::of(ok.iter().map(|r| f(r)));
                let optional = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                    Spread::of(ok.iter().filter_map(|r| f(r)))
                };
                let max = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                    all.iter().filter_map(|r| f(r)).reduce(f64::max)
                };
                Some(Self {
                    strategy,
                    trials: ok.len(),
                    records_per_trial: all.first()?.records_requested,
                    cut_short: all.iter().any(|r| r.cut_short),
                    records_per_sec: spread(&|r| r.records_per_sec)?,
                    mb_per_sec: spread(&|r| r.mb_per_sec)?,
                    p50_ms: spread(&|r| r.latency_ms.p50)?,
                    p99_ms: spread(&|r| r.latency_ms.p99)?,
                    p999_ms: spread(&|r| r.latency_ms.p999)?,
                    cpu_s_per_million: optional(&|r| r.cpu_s_per_million),
                    gateway_cpu_s_per_million: optional(&|r| r.gateway_cpu_s_per_million),
                    total_cpu_s_per_million: optional(&|r| r.total_cpu_s_per_million()),
                    peak_rss_mib: max(&|r| r.peak_rss_mib),
                    gateway_peak_rss_mib: max(&|r| r.gateway_peak_rss_mib),
                    ack_order_violations: all.iter().map(|r| r.ack_order_violations).sum(),
                    stored_order_violations: all
                        .iter()
                        .map(|r| r.stored_order_violations)
                        .sum::<Option<u64>>(),
                    records_failed: all.iter().map(|r| r.records_failed).sum(),
                })
            })
            .collect()
    }
}

/// One strategy's throughput over another's: the median of the per-trial
/// ratios (trial k of one over trial k of the other, run next to each
/// other), their min and max, and the spread, max / min.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub spread: f64,
    /// Trials with both runs.
    pub trials: usize,
}

impl Ratio {
    /// `of` over `to`, trial by trial.
    pub fn of(runs: &[RunReport], of: Strategy, to: Strategy) -> Option<Self> {
        let trial = |strategy, trial| {
            runs.iter().find(|r| {
                r.group == Group::Main
                    && r.strategy == strategy
                    && r.trial == trial
                    && r.records_ok > 0
            })
        };
        let ratios: Vec<f64> = runs
            .iter()
            .filter(|r| r.group == Group::Main && r.strategy == of && r.records_ok > 0)
            .filter_map(|a| Some(a.records_per_sec / trial(to, a.trial)?.records_per_sec))
            .collect();
        let spread = Spread::of(ratios.iter().copied())?;
        Some(Self {
            median: spread.median,
            min: spread.min,
            max: spread.max,
            spread: spread.max / spread.min,
            trials: ratios.len(),
        })
    }
}

/// Throughput ratios, trial by trial: the gateway over each of the others,
/// and `direct` (the gateway's send path without gRPC) over `native`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub gateway_vs_native: Option<Ratio>,
    pub gateway_vs_direct: Option<Ratio>,
    pub gateway_vs_seed_futures_ordered: Option<Ratio>,
    pub gateway_vs_seed_spawn: Option<Ratio>,
    pub gateway_vs_seed_sync: Option<Ratio>,
    pub direct_vs_native: Option<Ratio>,
}

impl Ratios {
    pub fn of(runs: &[RunReport]) -> Self {
        let gateway = |to| Ratio::of(runs, Strategy::Gateway, to);
        Self {
            gateway_vs_native: gateway(Strategy::Native),
            gateway_vs_direct: gateway(Strategy::Direct),
            gateway_vs_seed_futures_ordered: gateway(Strategy::SeedFuturesOrdered),
            gateway_vs_seed_spawn: gateway(Strategy::SeedSpawn),
            gateway_vs_seed_sync: gateway(Strategy::SeedSync),
            direct_vs_native: Ratio::of(runs, Strategy::Direct, Strategy::Native),
        }
    }

    /// Every ratio with its name, in the table's order.
    pub fn named(&self) -> [(&'static str, Option<Ratio>); 6] {
        [
            ("gateway / native", self.gateway_vs_native),
            ("gateway / direct", self.gateway_vs_direct),
            (
                "gateway / seed-futures-ordered",
                self.gateway_vs_seed_futures_ordered,
            ),
            ("gateway / seed-spawn", self.gateway_vs_seed_spawn),
            ("gateway / seed-sync", self.gateway_vs_seed_sync),
            ("direct / native", self.direct_vs_native),
        ]
    }
}

/// gateway, direct and native at the same capped rate (one run each).
#[derive(Debug, Clone, Serialize)]
pub struct LatencyAtLoad {
    pub rate: f64,
    pub gateway_p99_ms: f64,
    pub direct_p99_ms: Option<f64>,
    pub native_p99_ms: Option<f64>,
    /// gateway p99 minus direct p99.
    pub p99_difference_ms: Option<f64>,
    /// gateway p99 minus native p99.
    pub p99_difference_vs_native_ms: Option<f64>,
}

impl LatencyAtLoad {
    pub fn of(runs: &[RunReport]) -> Option<Self> {
        let p99 = |strategy| {
            runs.iter()
                .find(|r| {
                    r.group == Group::LatencyAtLoad && r.strategy == strategy && r.records_ok > 0
                })
                .map(|r| (r.latency_ms.p99, r.rate_cap))
        };
        let (gateway, rate) = p99(Strategy::Gateway)?;
        let direct = p99(Strategy::Direct).map(|(p99, _)| p99);
        let native = p99(Strategy::Native).map(|(p99, _)| p99);
        Some(Self {
            rate: rate?,
            gateway_p99_ms: gateway,
            direct_p99_ms: direct,
            native_p99_ms: native,
            p99_difference_ms: direct.map(|direct| gateway - direct),
            p99_difference_vs_native_ms: native.map(|native| gateway - native),
        })
    }
}

/// How the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    /// Trials per strategy, interleaved.
    pub trials: u32,
    /// What each trial was sized to take, when sized by calibration.
    pub trial_seconds: Option<f64>,
    /// `--records`, when every trial had that many.
    pub records_per_trial: Option<u64>,
    /// What the CPU figures count.
    pub cpu: &'static str,
}

/// What the CPU figures count, for the JSON and the table.
pub const CPU_NOTE: &str = "CPU is user + system time (/proc/PID/stat) per million records \
acked, over each trial's timed span: the strategy's own process (client) and, for gateway, \
the gateway process apart. The embedded broker runs in the bench's parent process and is in \
neither figure.";

/// Where the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: Option<String>,
    pub cores: usize,
    pub memory_gib: Option<f64>,
    pub kernel: Option<String>,
    /// The 1-minute load average before the first run: other work on the
    /// machine skews every number.
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
    pub version: &'static str,
}

impl Machine {
    pub fn probe() -> Self {
        let read = |path| std::fs::read_to_string(path).ok();
        Self {
            cpu: read("/proc/cpuinfo").and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            }),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: read("/proc/meminfo").and_then(|info| {
                let kib: f64 = info
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((kib / (1 << 20) as f64 * 10.0).round() / 10.0)
            }),
            kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            load_average_before: load_average(),
            load_average_after: None,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Everything `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// The command line.
    pub command: Vec<String>,
    pub broker: &'static str,
    pub method: Method,
    /// Per strategy, over its trials.
    pub strategies: Vec<Summary>,
    pub ratios: Ratios,
    pub latency_at_load: Option<LatencyAtLoad>,
    /// Every run: calibration, trials, at load, scaling.
    pub runs: Vec<RunReport>,
}

/// `median (min-max)` of `spread`, each formatted by `f`.
fn spread(spread: Option<Spread>, f: &dyn Fn(f64) -> String) -> String {
    spread.map_or("-".to_owned(), |s| {
        format!("{} ({}-{})", f(s.median), f(s.min), f(s.max))
    })
}

fn fixed(digits: usize) -> impl Fn(f64) -> String {
    move |v| format!("{v:.digits$}")
}

/// The results as a plain-text table: per strategy over its trials, the
/// ratios, then the runs at load and the scaling runs one by one.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let method = &report.method;
    let _ = match (method.records_per_trial, method.trial_seconds) {
        (Some(records), _) => writeln!(
            out,
            "{} trials of each strategy, interleaved, {} records each; median (min-max) over the trials",
            method.trials,
            si(records as f64)
        ),
        (None, seconds) => writeln!(
            out,
            "{} trials of each strategy, interleaved, each sized to take about {} s; \
             median (min-max) over the trials",
            method.trials,
            seconds.unwrap_or_default()
        ),
    };
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>8} {:>22} {:>22} {:>22} {:>19} {:>19} {:>19} {:>7} {:>6} {:>13} {:>6}",
        "strategy",
        "trials",
        "records",
        "records/s",
        "p50 ms",
        "p99 ms",
        "CPU s/M: client",
        "gateway",
        "total",
        "RSS MiB",
        "gw MiB",
        "order ack/st",
        "errors"
    );
    let mib = |m: Option<f64>| m.map_or("-".to_owned(), |m| format!("{m:.0}"));
    for summary in &report.strategies {
        let stored = summary
            .stored_order_violations
            .map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<22} {:>6} {:>8} {:>22} {:>22} {:>22} {:>19} {:>19} {:>19} {:>7} {:>6} {:>13} {:>6}",
            format!(
                "{}{}",
                summary.strategy.name(),
                if summary.cut_short { " (sample)" } else { "" }
            ),
            summary.trials,
            si(summary.records_per_trial as f64),
            spread(Some(summary.records_per_sec), &si),
            spread(Some(summary.p50_ms), &fixed(2)),
            spread(Some(summary.p99_ms), &fixed(2)),
            spread(summary.cpu_s_per_million, &fixed(2)),
            spread(summary.gateway_cpu_s_per_million, &fixed(2)),
            spread(summary.total_cpu_s_per_million, &fixed(2)),
            mib(summary.peak_rss_mib),
            mib(summary.gateway_peak_rss_mib),
            format!("{}/{stored}", summary.ack_order_violations),
            summary.records_failed,
        );
    }
    let _ = writeln!(out, "\n{CPU_NOTE}");
    let _ = writeln!(
        out,
        "\nthroughput ratios: median of the per-trial ratios (min-max), spread = max/min"
    );
    for (name, ratio) in report.ratios.named() {
        if let Some(r) = ratio {
            let _ = writeln!(
                out,
                "  {name:<31} {:>8}  ({:.2}-{:.2})  spread {:.2}  over {} trials",
                format!("{:.2}x", r.median),
                r.min,
                r.max,
                r.spread,
                r.trials
            );
        }
    }
    if let Some(at_load) = &report.latency_at_load {
        let mut line = format!(
            "\np99 at {} records/s (one run each): gateway {:.2} ms",
            si(at_load.rate),
            at_load.gateway_p99_ms
        );
        if let (Some(p99), Some(diff)) = (at_load.direct_p99_ms, at_load.p99_difference_ms) {
            let _ = write!(line, ", direct {p99:.2} ms ({diff:+.2} ms)");
        }
        if let (Some(p99), Some(diff)) =
            (at_load.native_p99_ms, at_load.p99_difference_vs_native_ms)
        {
            let _ = write!(line, ", native {p99:.2} ms ({diff:+.2} ms)");
        }
        let _ = writeln!(out, "{line}");
    }
    let single: Vec<&RunReport> = report
        .runs
        .iter()
        .filter(|r| matches!(r.group, Group::LatencyAtLoad | Group::Scaling))
        .collect();
    if !single.is_empty() {
        let _ = writeln!(out);
        runs_table(&mut out, &single);
    }
    let notes = report.runs.iter().filter(|r| r.group != Group::Calibration);
    for run in notes.clone().filter(|r| r.first_error.is_some()) {
        let _ = writeln!(
            out,
            "{}: first error: {}",
            run.label(),
            run.first_error.as_deref().unwrap_or_default()
        );
    }
    let (mut checked, mut stored, mut dropped) = (0, 0, 0);
    for run in notes {
        if let Some(s) = &run.stored {
            checked += s.checked;
            stored += s.records;
            dropped += s.dropped_by_retention;
        }
    }
    if dropped > 0 {
        let _ = writeln!(
            out,
            "the broker dropped {dropped} of {stored} records (retention: 5 MiB or 100,000 \
             records per partition) before they were read back; the stored order was checked \
             on the {checked} left (per run in the JSON)"
        );
    }
    out
}

/// One row per run, for the runs at load and the scaling runs.
fn runs_table(out: &mut String, runs: &[&RunReport]) {
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:>9} {:>7} {:>10} {:>7} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>13} {:>7}",
        "run",
        "streams",
        "records",
        "secs",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "CPU s/M",
        "gw s/M",
        "RSS MiB",
        "gw MiB",
        "order ack/st",
        "errors"
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    for run in runs {
        let stored = run
            .stored_order_violations
            .map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<26} {:>7} {:>9} {:>7.2} {:>10} {:>7.1} {:>8.2} {:>8.2} {:>9.2} {:>8} {:>8} {:>8} {:>7} {:>13} {:>7}",
            format!(
                "{}{}",
                run.label(),
                if run.cut_short { " (sample)" } else { "" }
            ),
            run.streams,
            run.records_ok,
            run.seconds,
            si(run.records_per_sec),
            run.mb_per_sec,
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.latency_ms.p999,
            opt(run.cpu_s_per_million, 2),
            opt(run.gateway_cpu_s_per_million, 2),
            opt(run.peak_rss_mib, 0),
            opt(run.gateway_peak_rss_mib, 0),
            format!("{}/{stored}", run.ack_order_violations),
            run.records_failed,
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// 1234567 as "1.23M", 45600 as "45.6k".
pub fn si(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let digits = match scaled.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format!("{scaled:.digits$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_rounds_to_three_figures() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(45_600.0), "45.6k");
        assert_eq!(si(312.4), "312");
        assert_eq!(si(0.5), "0.50");
    }

    #[test]
    fn a_spread_has_the_median_of_odd_and_even_counts() {
        let odd = Spread::of([3.0, 1.0, 2.0, 10.0, 4.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (3.0, 1.0, 10.0));
        let even = Spread::of([4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(Spread::of([]).is_none());
    }

    fn run(strategy: Strategy, trial: u32, records_per_sec: f64) -> RunReport {
        let workload = Workload {
            strategy,
            records: 100,
            ..super::super::workload::tests::workload(100, 1, None)
        };
        let measured = Measured {
            ok: 100,
            handed: 100,
            seconds: 100.0 / records_per_sec,
            cpu_seconds: Some(0.001),
            ..Measured::default()
        };
        RunReport::new(Group::Main, Some(trial), &workload, measured, None)
    }

    #[test]
    fn ratios_pair_runs_of_the_same_trial() {
        let runs = [
            run(Strategy::Gateway, 1, 90.0),
            run(Strategy::Native, 1, 100.0),
            run(Strategy::Gateway, 2, 40.0),
            run(Strategy::Native, 2, 50.0),
            run(Strategy::Gateway, 3, 70.0),
            run(Strategy::Native, 3, 100.0),
        ];
        let ratio = Ratio::of(&runs, Strategy::Gateway, Strategy::Native).unwrap();
        assert_eq!(ratio.trials, 3);
        assert!((ratio.median - 0.8).abs() < 1e-9, "{ratio:?}");
        assert!((ratio.min - 0.7).abs() < 1e-9 && (ratio.max - 0.9).abs() < 1e-9);
        assert!((ratio.spread - 0.9 / 0.7).abs() < 1e-9);
        assert!(Ratio::of(&runs, Strategy::Gateway, Strategy::Direct).is_none());

        let summaries = Summary::of(&runs);
        let names: Vec<_> = summaries.iter().map(|s| s.strategy).collect();
        assert_eq!(names, [Strategy::Native, Strategy::Gateway]);
        let gateway = &summaries[1];
        assert_eq!(gateway.records_per_sec.median, 70.0);
        // 0.001 s for 100 records: 10 s per million, from the client alone
        // (a gateway in process).
        let cpu = gateway.cpu_s_per_million.unwrap();
        assert!((cpu.median - 10.0).abs() < 1e-9);
    }
}
