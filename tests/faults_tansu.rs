//! Network faults between the gateway and tansu, an independent
//! Kafka-compatible broker, made by a TCP proxy ([`common::proxy`]):
//! connections reset mid-request, latency, a blackhole, refused connections.
//! The embedded broker cannot lose a connection the way a network does, and
//! it does not deduplicate an idempotent producer's retries; tansu does, so
//! here a record stored twice is a broken promise.
//!
//! Each test starts its own tansu (`tansu` on the PATH), advertising the
//! proxy's address so that every connection of the producer goes through
//! it. They are ignored by a plain `cargo test`, which needs no tansu; CI
//! runs them with `--ignored` (see `.ci/run`), and so can you:
//!
//! ```sh
//! cargo install tansu --locked --no-default-features --features dynostore
//! cargo test --test faults_tansu -- --ignored
//! ```
//!
//! tansu 0.6 answers a retried write with a wrong base offset, so acked
//! offsets are not compared here (partitions, values, counts, duplicates and
//! order are); the embedded broker's tests compare offsets.

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::invariants::{
    Offsets, Retries, Verdict, assert_serves_a_fresh_stream, check, drive_stream, numbered,
};
use common::proxy::{FaultProxy, Mode};
use common::*;
use tokio::net::TcpListener;

/// A tansu broker of this test, stopped when dropped.
struct Tansu {
    child: Child,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tansu on a free port, advertising `advertised` to clients.
fn start_tansu(advertised: std::net::SocketAddr) -> (Tansu, std::net::SocketAddr) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new("tansu")
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &listen,
        ])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run tansu ({err}): these tests need it on the PATH; \
                 cargo install tansu --locked --no-default-features --features dynostore"
            )
        });
    // Its log says "ready in" once it listens.
    let (tx, rx) = mpsc::channel();
    for output in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready in") {
                    let _ = tx.send(());
                }
            }
        });
    }
    rx.recv_timeout(Duration::from_secs(20))
        .expect("tansu starts within 20 s");
    (
        Tansu { child },
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
}

/// The load of one run: 4 streams of 50 batches of 20 records.
const STREAMS: usize = 4;
const BATCHES: usize = 50;
const PER_BATCH: usize = 20;

/// Runs the load through a fault proxy in front of a fresh tansu, applies
/// `fault` to the proxy while the streams send, then checks every promise
/// and that a fresh stream is served.
async fn run<F, Fut>(args: &[&str], fault: F) -> Verdict
where
    F: FnOnce(std::sync::Arc<FaultProxy>) -> Fut,
    Fut: Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertised = listener.local_addr().unwrap();
    let (_tansu, target) = start_tansu(advertised);
    let proxy = std::sync::Arc::new(FaultProxy::start(listener, target));
    let kafka = TestKafka::External(proxy.addr.to_string());
    let topic = kafka.topic("net-faults").await;
    let mut argv = vec![
        // Notice a dead connection within seconds, not a minute.
        "-X",
        "socket.timeout.ms=3000",
        "-X",
        "reconnect.backoff.max.ms=500",
    ];
    argv.extend_from_slice(args);
    let gateway = start_gateway_on(kafka.clone(), false, &argv).await;
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut client = gateway.client().await;
        let batches = (0..BATCHES)
            .map(|b| numbered(s, b, PER_BATCH, 12, &topic))
            .collect();
        streams.push(tokio::spawn(async move {
            drive_stream(&mut client, s, batches, Duration::from_millis(40)).await
        }));
    }
    fault(proxy.clone()).await;
    proxy.set(Mode::Pass);
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(180), stream)
                .await
                .expect("streams end")
                .unwrap(),
        );
    }
    // A fresh stream is served (the record is told apart by its value).
    assert_serves_a_fresh_stream(&gateway, &topic).await;
    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    let replaced = sample(&metrics, "kafka_gateway_producer_replacements_total").unwrap_or(0.0);
    let consumed: Vec<Consumed> = consume(&proxy.addr.to_string(), &topic, 0)
        .await
        .into_iter()
        .filter(|c| c.value.as_deref() != Some(&b"fresh stream"[..]))
        .collect();
    let verdict = check(
        &outcomes,
        &consumed,
        Offsets::PartitionOnly,
        Retries::Deduplicated,
    );
    eprintln!(
        "{verdict}\nconnections reset by the proxy: {}; producers replaced: {replaced}",
        proxy.resets.load(std::sync::atomic::Ordering::Relaxed)
    );
    verdict.assert_holds();
    gateway.stop().await.unwrap();
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH: .ci/run runs it with --ignored"]
async fn connections_reset_mid_request_lose_and_duplicate_nothing() {
    let verdict = run(&[], |proxy| async move {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            // Every connection is cut after 3 KB towards the broker: inside
            // a Produce request.
            proxy.set(Mode::ResetAfter(3_000));
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.set(Mode::Pass);
            proxy.reset_all();
        }
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH: .ci/run runs it with --ignored"]
async fn latency_slows_but_loses_nothing() {
    let verdict = run(&[], |proxy| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Latency(Duration::from_millis(150)));
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH: .ci/run runs it with --ignored"]
async fn a_blackhole_then_recovery_loses_and_duplicates_nothing() {
    let verdict = run(&[], |proxy| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Blackhole);
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.reset_all();
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH: .ci/run runs it with --ignored"]
async fn refused_connections_then_recovery_lose_and_duplicate_nothing() {
    let verdict = run(&[], |proxy| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Refuse);
        proxy.reset_all();
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu on the PATH: .ci/run runs it with --ignored"]
async fn a_partition_longer_than_the_message_timeout_fails_records_retriably() {
    let verdict = run(&["-X", "message.timeout.ms=2000"], |proxy| async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        proxy.set(Mode::Blackhole);
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.reset_all();
    })
    .await;
    let timed_out = verdict
        .failed
        .get("ERROR_CODE_TIMED_OUT")
        .copied()
        .unwrap_or(0);
    assert!(timed_out > 0, "{verdict}");
    assert!(
        verdict.acked > 0,
        "records before the partition are acked: {verdict}"
    );
}
