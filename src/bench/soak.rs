//! `kafka-gateway bench --soak DURATION`: holds many gRPC streams open on a
//! gateway process for a long time, each sending a batch at a steady pace,
//! and samples the gateway's resident memory, to show that nothing grows
//! with time: the curve, and the slope of a straight line fitted through
//! it after warm-up.
//!
//! Every response is checked as it arrives (batches answered in order, every
//! record acked); the run fails on any failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::EmbeddedBroker;
use crate::error::Error;
use crate::proto::producer_client::ProducerClient;
use crate::proto::{ProduceRequest, Record, record_result};

use super::broker::Kafka;
use super::{BenchArgs, failure, strategies};

/// The share of the run before the slope is measured: start-up, and the
/// allocator and buffers reaching their working size.
const WARM_UP: f64 = 0.2;
/// Streams per HTTP/2 connection when `--connections` is not given.
const STREAMS_PER_CONNECTION: usize = 100;

/// One sample of the gateway's memory.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub seconds: f64,
    pub rss_mib: f64,
    pub records_acked: u64,
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub duration_seconds: f64,
    pub streams: usize,
    pub connections: usize,
    pub batches_per_stream_per_second: f64,
    pub records_per_batch: usize,
    pub records_acked: u64,
    pub records_failed: u64,
    pub answers_out_of_order: u64,
    pub samples: Vec<Sample>,
    /// Least-squares slope of RSS over time after warm-up, MiB per minute.
    pub slope_mib_per_minute: f64,
    /// RSS at the end minus RSS at the end of warm-up.
    pub growth_after_warm_up_mib: f64,
    pub peak_rss_mib: f64,
}

/// What the streams count as they go.
#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
    out_of_order: AtomicU64,
}

pub async fn main(args: &BenchArgs, duration: Duration) -> Result<(), Error> {
    if !(args.soak_rate.is_finite() && args.soak_rate > 0.0) {
        return Err(Error::Config(format!(
            "--soak-rate {} must be above 0",
            args.soak_rate
        )));
    }
    let kafka = match &args.bootstrap_servers {
        Some(servers) => Kafka::External(servers.clone()),
        None => Kafka::Embedded(Arc::new(EmbeddedBroker::start(1, args.partitions)?)),
    };
    let servers = kafka.bootstrap_servers();
    let topic = format!("kafka-gateway-soak-{}", std::process::id());
    kafka
        .create_topic(&topic, args.partitions)
        .await
        .map_err(failure)?;
    let gateway_args: Vec<String> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--bootstrap-servers".into(),
        servers.clone(),
    ];
    let (mut child, addr) = strategies::spawn_gateway(&gateway_args).map_err(failure)?;
    let pid = child.id();
    let result = soak(args, duration, &addr, &topic, pid).await;
    // SIGTERM: the gateway drains and exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let report = result?;
    print_report(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("serializable");
        std::fs::write(path, json)
            .map_err(|err| failure(format!("cannot write {}: {err}", path.display())))?;
    }
    if report.records_failed > 0 || report.answers_out_of_order > 0 {
        return Err(failure(format!(
            "{} records failed, {} answers out of order",
            report.records_failed, report.answers_out_of_order
        )));
    }
    Ok(())
}

async fn soak(
    args: &BenchArgs,
    duration: Duration,
    addr: &str,
    topic: &str,
    pid: u32,
) -> Result<SoakReport, Error> {
    let streams = args.streams;
    let connections = args
        .connections
        .unwrap_or_else(|| streams.div_ceil(STREAMS_PER_CONNECTION));
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| failure(format!("bad gateway address {addr}: {err}")))?
        .tcp_nodelay(true);
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..connections {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|err| failure(format!("cannot connect to the gateway: {err}")))?,
        );
    }
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let period = Duration::from_secs_f64(1.0 / args.soak_rate);
    let value = Bytes::from(vec![b'.'; args.record_bytes]);
    let mut tasks = Vec::new();
    for stream in 0..streams {
        let client = ProducerClient::new(channels[stream % connections].clone());
        // Streams start spread over one period, so batches arrive evenly.
        let offset = period.mul_f64(stream as f64 / streams as f64);
        tasks.push(tokio::spawn(run_stream(
            client,
            stream,
            topic.to_owned(),
            args.batch,
            value.clone(),
            period,
            offset,
            stop.clone(),
            counters.clone(),
        )));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = started;
    eprintln!(
        "soak: {streams} streams on {connections} connections, a batch of {} records every \
         {period:?} each, for {duration:?}; sampling the gateway's RSS every {:?}",
        args.batch, args.soak_interval
    );
    loop {
        let rss = rss_mib(pid).ok_or_else(|| failure("the gateway process went away"))?;
        let seconds = started.elapsed().as_secs_f64();
        let acked = counters.acked.load(Ordering::Relaxed);
        eprintln!(
            "  {seconds:>6.0} s  RSS {rss:>7.1} MiB  {acked} records acked, {} failed",
            counters.failed.load(Ordering::Relaxed)
        );
        samples.push(Sample {
            seconds,
            rss_mib: rss,
            records_acked: acked,
        });
        if started.elapsed() >= duration {
            break;
        }
        next += args.soak_interval;
        tokio::time::sleep_until(next.min(started + duration).into()).await;
    }
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }

    let warm = duration.as_secs_f64() * WARM_UP;
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.seconds >= warm).collect();
    let slope = slope_per_minute(&steady);
    let growth = match (steady.first(), steady.last()) {
        (Some(first), Some(last)) => last.rss_mib - first.rss_mib,
        _ => 0.0,
    };
    Ok(SoakReport {
        duration_seconds: started.elapsed().as_secs_f64(),
        streams,
        connections,
        batches_per_stream_per_second: args.soak_rate,
        records_per_batch: args.batch,
        records_acked: counters.acked.load(Ordering::Relaxed),
        records_failed: counters.failed.load(Ordering::Relaxed),
        answers_out_of_order: counters.out_of_order.load(Ordering::Relaxed),
        peak_rss_mib: samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        samples,
        slope_mib_per_minute: slope,
        growth_after_warm_up_mib: growth,
    })
}

/// One stream: a batch every `period` until `stop`, then the stream is
/// closed and every answer awaited.
#[allow(clippy::too_many_arguments)]
async fn run_stream(
    mut client: ProducerClient<Channel>,
    stream: usize,
    topic: String,
    per_batch: usize,
    value: Bytes,
    period: Duration,
    offset: Duration,
    stop: CancellationToken,
    counters: Arc<Counters>,
) {
    let (tx, rx) = mpsc::channel(2);
    let key = Bytes::from(format!("soak-{stream}"));
    let feeder = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for batch_id in 0u64.. {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = stop.cancelled() => return,
                }
                let records = (0..per_batch)
                    .map(|_| Record {
                        key: Some(key.clone()),
                        value: Some(value.clone()),
                        ..Record::default()
                    })
                    .collect();
                let request = ProduceRequest {
                    batch_id,
                    topic: topic.clone(),
                    records,
                    compact_acks: true,
                    skip_dead_letter: false,
                    transactional_id: String::new(),
                    commit: false,
                };
                if tx.send(request).await.is_err() {
                    return;
                }
            }
        })
    };
    let Ok(response) = client.produce(ReceiverStream::new(rx)).await else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        feeder.abort();
        return;
    };
    let mut responses = response.into_inner();
    let mut expected = 0u64;
    loop {
        match responses.message().await {
            Ok(Some(response)) => {
                if response.batch_id != expected {
                    counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                expected = response.batch_id + 1;
                for result in &response.results {
                    match result.result {
                        Some(record_result::Result::Ok(_)) => {
                            counters.acked.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => counters.failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
            Ok(None) => break,
            Err(status) => {
                eprintln!("soak: stream {stream} ended: {status}");
                counters.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = feeder.await;
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The least-squares slope of RSS against time, in MiB per minute.
fn slope_per_minute(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_mib).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.seconds - mean_t) * (s.rss_mib - mean_r);
        den += (s.seconds - mean_t).powi(2);
    }
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

fn print_report(report: &SoakReport) {
    println!(
        "soak: {} streams, {:.0} s: {} records acked, {} failed, {} answers out of order",
        report.streams,
        report.duration_seconds,
        report.records_acked,
        report.records_failed,
        report.answers_out_of_order
    );
    println!(
        "{:>8}  {:>9}  {:>14}",
        "seconds", "RSS MiB", "records acked"
    );
    for sample in &report.samples {
        println!(
            "{:>8.0}  {:>9.1}  {:>14}",
            sample.seconds, sample.rss_mib, sample.records_acked
        );
    }
    println!(
        "after warm-up: slope {:+.3} MiB/min, growth {:+.1} MiB; peak {:.1} MiB",
        report.slope_mib_per_minute, report.growth_after_warm_up_mib, report.peak_rss_mib
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f64, rss_mib: f64) -> Sample {
        Sample {
            seconds,
            rss_mib,
            records_acked: 0,
        }
    }

    #[test]
    fn the_slope_is_in_mib_per_minute() {
        let rising: Vec<Sample> = (0..10)
            .map(|i| sample(i as f64 * 10.0, 100.0 + i as f64))
            .collect();
        let refs: Vec<&Sample> = rising.iter().collect();
        assert!((slope_per_minute(&refs) - 6.0).abs() < 1e-9);
        let flat: Vec<Sample> = (0..10).map(|i| sample(i as f64, 50.0)).collect();
        let refs: Vec<&Sample> = flat.iter().collect();
        assert_eq!(slope_per_minute(&refs), 0.0);
    }
}
