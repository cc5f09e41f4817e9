//! The child process: runs one strategy and reports on stdout, one line at a
//! time: `P <records answered>` every 200 ms for the progress bar, then
//! `R <json>` with what it measured.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::Error;

use super::workload::Workload;
use super::{failure, rss, strategies};

/// How often the child reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Ack latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1e6,
        }
    }
}

/// What one run of one strategy measured, in its own process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Records handed over (fewer than asked when the run was cut short).
    pub handed: u64,
    /// Records acknowledged as stored.
    pub ok: u64,
    /// Records that got an error, or no answer.
    pub failed: u64,
    /// From the first hand-off to the last ack.
    pub seconds: f64,
    /// The run hit its time budget and stopped handing records over.
    pub cut_short: bool,
    /// Ack latency of the acknowledged records.
    pub latency_ms: Latency,
    /// Records acked at an offset below that of an earlier record of the
    /// same stream and partition.
    pub ack_violations: u64,
    /// The child's peak resident set size (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// The peak RSS of the gateway process, with `--gateway-process`.
    #[serde(default)]
    pub gateway_peak_rss_bytes: Option<u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

/// Runs the strategy described by `spec` (a [`Workload`] as JSON).
pub async fn main(spec: &str) -> Result<(), Error> {
    let workload: Workload = serde_json::from_str(spec)
        .map_err(|err| Error::Config(format!("--child takes a workload as JSON: {err}")))?;
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tick.tick().await;
                emit(&format!("P {}", progress.load(Ordering::Relaxed)));
            }
        }
    });
    let measured = strategies::run(&workload, progress).await;
    reporter.abort();
    let mut measured = measured.map_err(failure)?;
    measured.peak_rss_bytes = rss::peak_bytes();
    let json = serde_json::to_string(&measured).map_err(|err| failure(err.to_string()))?;
    emit(&format!("R {json}"));
    Ok(())
}

/// Writes one line to stdout, now.
fn emit(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
