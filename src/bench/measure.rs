//! What a run measures, and the harness every strategy runs its streams in:
//! a [`Tally`] per stream (ack latency, counts, the ack-order check), merged
//! into the run's [`Measured`], which the child process reports to the
//! parent. The clock and the CPU readings start when the streams start and
//! stop when the last of them is done, so every strategy is timed the same
//! way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::cpu;
use super::order::AckOrder;
use super::workload::{self, Slot, Source, Workload};

/// Latencies the histograms hold: 1 us to 1 h, 3 significant digits.
const LATENCY_BOUNDS_NS: (u64, u64) = (1_000, 3_600_000_000_000);

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
    /// Records acked out of their stream's order in a partition (see
    /// [`super::order`]).
    pub ack_violations: u64,
    /// The child's peak resident set size (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// The peak RSS of the gateway process, when `gateway` runs one.
    #[serde(default)]
    pub gateway_peak_rss_bytes: Option<u64>,
    /// CPU time (user + system) the child process used while the clock ran.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// CPU time the gateway process used while the clock ran, when
    /// `gateway` runs one.
    #[serde(default)]
    pub gateway_cpu_seconds: Option<f64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

/// What one stream (or all of them, merged) saw.
pub struct Tally {
    /// Ack latency in nanoseconds.
    latency: Histogram<u64>,
    pub handed: u64,
    pub ok: u64,
    pub failed: u64,
    pub order: AckOrder,
    first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    pub fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(LATENCY_BOUNDS_NS.0, LATENCY_BOUNDS_NS.1, 3)
                .expect("valid histogram bounds"),
            handed: 0,
            ok: 0,
            failed: 0,
            order: AckOrder::default(),
            first_error: None,
        }
    }

    /// `count` records acked after `latency`; call [`Tally::ack`] for each
    /// one's position.
    pub fn latency(&mut self, latency: Duration, count: u64) {
        let ns = (latency.as_nanos() as u64).clamp(LATENCY_BOUNDS_NS.0, LATENCY_BOUNDS_NS.1);
        self.latency
            .record_n(ns, count)
            .expect("clamped into the bounds");
    }

    /// The next record of the stream, in send order, was stored here.
    pub fn ack(&mut self, partition: i32, offset: i64) {
        self.ok += 1;
        self.order.ack(partition, offset);
    }

    pub fn failed(&mut self, count: u64, error: impl FnOnce() -> String) {
        self.failed += count;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds");
        self.handed += other.handed;
        self.ok += other.ok;
        self.failed += other.failed;
        self.order.violations += other.order.violations;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn into_measured(self, seconds: f64, cut_short: bool) -> Measured {
        Measured {
            handed: self.handed,
            ok: self.ok,
            failed: self.failed,
            seconds,
            cut_short,
            latency_ms: Latency::from_histogram(&self.latency),
            ack_violations: self.order.violations,
            first_error: self.first_error,
            ..Measured::default()
        }
    }
}

/// What every stream of a run shares.
#[derive(Clone)]
pub struct Run {
    pub workload: Arc<Workload>,
    pub progress: Arc<AtomicU64>,
    pub cut_short: Arc<AtomicBool>,
    /// The value of every record.
    pub value: Bytes,
    pub topic: Arc<str>,
}

impl Run {
    /// A run of `workload`, counting answered records in `progress`.
    pub fn new(workload: &Workload, progress: Arc<AtomicU64>) -> Self {
        Self {
            workload: Arc::new(workload.clone()),
            progress,
            cut_short: Arc::default(),
            value: workload::value(workload.record_bytes),
            topic: Arc::from(workload.topic.as_str()),
        }
    }

    pub fn source(&self, stream: usize, start: Instant) -> Source {
        Source::new(&self.workload, stream, start, self.cut_short.clone())
    }

    pub fn answered(&self, records: u64) {
        self.progress.fetch_add(records, Ordering::Relaxed);
    }

    /// Where a record's latency runs from: when its batch was due under a
    /// rate cap, else now.
    pub fn handoff(&self, slot: &Slot) -> Instant {
        if self.workload.rate.is_some() {
            slot.handoff
        } else {
            Instant::now()
        }
    }

    /// Runs `stream_task` for every stream from now on, and merges what
    /// they saw.
    pub async fn streams<F, Fut>(&self, stream_task: F) -> Result<Measured, String>
    where
        F: Fn(usize, Instant) -> Fut,
        Fut: Future<Output = Tally> + Send + 'static,
    {
        self.streams_watching(None, stream_task).await
    }

    /// [`Run::streams`], also taking the CPU time of process `watched` (the
    /// gateway) over the same span.
    pub async fn streams_watching<F, Fut>(
        &self,
        watched: Option<u32>,
        stream_task: F,
    ) -> Result<Measured, String>
    where
        F: Fn(usize, Instant) -> Fut,
        Fut: Future<Output = Tally> + Send + 'static,
    {
        let clock = Clock::start(watched);
        let tasks: Vec<_> = (0..self.workload.streams)
            .map(|stream| tokio::spawn(stream_task(stream, clock.start)))
            .collect();
        let mut total = Tally::new();
        for task in tasks {
            total.merge(
                task.await
                    .map_err(|err| format!("a stream task failed: {err}"))?,
            );
        }
        let measured = total.into_measured(0.0, self.cut_short.load(Ordering::Relaxed));
        Ok(clock.stop(measured))
    }
}

/// The span a run is measured over: wall time, and the CPU time of this
/// process and of a watched one (the gateway).
pub struct Clock {
    pub start: Instant,
    cpu: Option<f64>,
    watched: Option<(u32, Option<f64>)>,
}

impl Clock {
    /// Starts now.
    pub fn start(watched: Option<u32>) -> Self {
        // The CPU readings first: the wall clock then starts last and stops
        // first, so no CPU time of the span is missed.
        let watched = watched.map(|pid| (pid, cpu::seconds_of(pid)));
        let cpu = cpu::seconds();
        Self {
            start: Instant::now(),
            cpu,
            watched,
        }
    }

    /// Stops now and fills in the time and CPU of `measured`.
    pub fn stop(self, mut measured: Measured) -> Measured {
        measured.seconds = self.start.elapsed().as_secs_f64();
        measured.cpu_seconds = self.cpu.zip(cpu::seconds()).map(|(a, b)| b - a);
        if let Some((pid, Some(before))) = self.watched {
            measured.gateway_cpu_seconds = cpu::seconds_of(pid).map(|after| after - before);
        }
        measured
    }
}
