//! The results: one [`RunReport`] per run, the ratios between strategies,
//! the table on stdout and the JSON file.

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
    /// One run per strategy, as fast as each goes (or at `--rate`).
    Main,
    /// `gateway` and `direct` again, at half the gateway's rate.
    LatencyAtLoad,
    /// `gateway` with `--scaling` stream counts.
    Scaling,
}

/// One run of one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub strategy: Strategy,
    pub group: Group,
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
    /// The child process's peak RSS, in MiB: for `gateway`, the client
    /// and (unless `--target` or `--gateway-process`) the gateway.
    pub peak_rss_mib: Option<f64>,
    /// The gateway process's own peak RSS, with `--gateway-process`.
    pub gateway_peak_rss_mib: Option<f64>,
    /// Records acked at an offset below an earlier record of the same
    /// stream and partition.
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
        workload: &Workload,
        measured: Measured,
        stored: Option<Stored>,
    ) -> Self {
        let seconds = measured.seconds.max(1e-9);
        let records_per_sec = measured.ok as f64 / seconds;
        Self {
            strategy: workload.strategy,
            group,
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
        match (self.group, self.rate_cap) {
            (Group::Scaling, _) => format!("{} x{}", self.strategy.name(), self.streams),
            (_, Some(rate)) => format!("{} @{}/s", self.strategy.name(), si(rate)),
            (_, None) => self.strategy.name().to_owned(),
        }
    }
}

/// Gateway throughput over the others', from the main runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub gateway_vs_direct: Option<f64>,
    pub gateway_vs_seed_sync: Option<f64>,
    pub gateway_vs_seed_futures_ordered: Option<f64>,
    pub gateway_vs_seed_spawn: Option<f64>,
}

impl Ratios {
    pub fn of(runs: &[RunReport]) -> Self {
        let rate = |strategy| {
            runs.iter()
                .find(|r| r.group == Group::Main && r.strategy == strategy)
                .map(|r| r.records_per_sec)
        };
        let vs = |other| match (rate(Strategy::Gateway), rate(other)) {
            (Some(gateway), Some(other)) if other > 0.0 => Some(gateway / other),
            _ => None,
        };
        Self {
            gateway_vs_direct: vs(Strategy::Direct),
            gateway_vs_seed_sync: vs(Strategy::SeedSync),
            gateway_vs_seed_futures_ordered: vs(Strategy::SeedFuturesOrdered),
            gateway_vs_seed_spawn: vs(Strategy::SeedSpawn),
        }
    }
}

/// gateway and direct at the same capped rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyAtLoad {
    pub rate: f64,
    pub gateway_p99_ms: f64,
    pub direct_p99_ms: f64,
    /// gateway p99 minus direct p99.
    pub p99_difference_ms: f64,
}

impl LatencyAtLoad {
    pub fn of(runs: &[RunReport]) -> Option<Self> {
        let run = |strategy| {
            runs.iter()
                .find(|r| r.group == Group::LatencyAtLoad && r.strategy == strategy)
        };
        let (gateway, direct) = (run(Strategy::Gateway)?, run(Strategy::Direct)?);
        Some(Self {
            rate: gateway.rate_cap?,
            gateway_p99_ms: gateway.latency_ms.p99,
            direct_p99_ms: direct.latency_ms.p99,
            p99_difference_ms: gateway.latency_ms.p99 - direct.latency_ms.p99,
        })
    }
}

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
    pub runs: Vec<RunReport>,
    pub ratios: Ratios,
    pub latency_at_load: Option<LatencyAtLoad>,
}

/// The results as a plain-text table, with the ratios below.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>7} {:>9} {:>7} {:>10} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>13} {:>7}",
        "strategy",
        "streams",
        "records",
        "secs",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "RSS MiB",
        "gw MiB",
        "order ack/st",
        "errors"
    );
    for run in &report.runs {
        let stored = run
            .stored_order_violations
            .map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<26} {:>7} {:>9} {:>7.2} {:>10} {:>7.1} {:>8.2} {:>8.2} {:>9.2} {:>8} {:>7} {:>13} {:>7}",
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
            run.peak_rss_mib
                .map_or("-".to_owned(), |m| format!("{m:.0}")),
            run.gateway_peak_rss_mib
                .map_or("-".to_owned(), |m| format!("{m:.0}")),
            format!("{}/{stored}", run.ack_order_violations),
            run.records_failed,
        );
    }
    let ratios = &report.ratios;
    let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}x"));
    let _ = writeln!(
        out,
        "\ngateway throughput: {} direct, {} seed-futures-ordered, {} seed-spawn, {} seed-sync",
        ratio(ratios.gateway_vs_direct),
        ratio(ratios.gateway_vs_seed_futures_ordered),
        ratio(ratios.gateway_vs_seed_spawn),
        ratio(ratios.gateway_vs_seed_sync),
    );
    if let Some(at_load) = &report.latency_at_load {
        let _ = writeln!(
            out,
            "p99 at {} records/s: gateway {:.2} ms, direct {:.2} ms ({:+.2} ms)",
            si(at_load.rate),
            at_load.gateway_p99_ms,
            at_load.direct_p99_ms,
            at_load.p99_difference_ms
        );
    }
    for run in report.runs.iter().filter(|r| r.first_error.is_some()) {
        let _ = writeln!(
            out,
            "{}: first error: {}",
            run.label(),
            run.first_error.as_deref().unwrap_or_default()
        );
    }
    for run in &report.runs {
        if let Some(stored) = run.stored.as_ref().filter(|s| s.dropped_by_retention > 0) {
            let _ = writeln!(
                out,
                "{}: the broker dropped {} of {} records (retention) before the read-back; \
                 the stored order was checked on the {} left",
                run.label(),
                stored.dropped_by_retention,
                stored.records,
                stored.checked
            );
        }
    }
    out
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
}
