//! Faults between the gateway and a real Apache Kafka broker, with exact
//! offsets: every ok ack's partition and offset must be where the record
//! is stored, besides the promises of [`common::invariants`] (acked means
//! stored once, nothing stored twice, order per stream and partition,
//! every record answered or its stream ended with a status).
//!
//! - Network faults, made by a TCP proxy ([`common::proxy`]) in front of a
//!   broker of the test's own that advertises the proxy's address, so that
//!   every connection of the producer goes through it: connections reset
//!   mid-request, latency, a blackhole, refused connections, and a
//!   partition longer than `message.timeout.ms`.
//! - The broker killed with SIGKILL mid-stream and started again on the
//!   same log directory.
//!
//! Each test starts its own broker with `scripts/kafka.sh` (about 10 s),
//! so that its faults harm no other test. Ignored by a plain `cargo test`;
//! `.ci/run` runs them with `--ignored`:
//!
//! ```sh
//! cargo test --test kafka_faults -- --ignored --test-threads 2
//! ```

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::invariants::{
    Offsets, Retries, Verdict, assert_serves_a_fresh_stream, check, drive_stream, numbered,
};
use common::kafka::OwnBroker;
use common::proxy::{FaultProxy, Mode};
use common::*;
use tokio::net::TcpListener;

/// The load of one run: 4 streams of 50 batches of 20 records.
const STREAMS: usize = 4;
const BATCHES: usize = 50;
const PER_BATCH: usize = 20;

/// Settings that make librdkafka notice a dead connection within seconds.
const QUICK: [&str; 4] = [
    "-X",
    "socket.timeout.ms=3000",
    "-X",
    "reconnect.backoff.max.ms=500",
];

/// Sends the load over `kafka` while `fault` runs, then checks every
/// promise with exact offsets and that a fresh stream is served.
async fn run_load<F, Fut>(kafka: TestKafka, args: &[&str], fault: F) -> Verdict
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let topic = kafka.topic("kafka-faults").await;
    let mut argv = QUICK.to_vec();
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
    fault(topic.clone()).await;
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(240), stream)
                .await
                .expect("streams end")
                .unwrap(),
        );
    }
    assert_serves_a_fresh_stream(&gateway, &topic).await;
    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    let replaced = sample(&metrics, "kafka_gateway_producer_replacements_total").unwrap_or(0.0);
    let consumed: Vec<Consumed> = consume(kafka.bootstrap_servers(), &topic, 0)
        .await
        .into_iter()
        .filter(|c| c.value.as_deref() != Some(&b"fresh stream"[..]))
        .collect();
    let verdict = check(&outcomes, &consumed, Offsets::Exact, Retries::Deduplicated);
    eprintln!("{verdict}\nproducers replaced: {replaced}");
    verdict.assert_holds();
    gateway.stop().await.unwrap();
    verdict
}

/// Runs the load through a fault proxy in front of a broker of its own,
/// applying `fault` to the proxy while the streams send (with the broker's
/// own address and the topic, to watch progress past the proxy).
async fn through_proxy<F, Fut>(args: &[&str], fault: F) -> Verdict
where
    F: FnOnce(Arc<FaultProxy>, String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertised = listener.local_addr().unwrap().port();
    let broker = tokio::task::spawn_blocking(move || OwnBroker::start(Some(advertised)))
        .await
        .unwrap();
    let proxy = Arc::new(FaultProxy::start(
        listener,
        broker.direct().parse().unwrap(),
    ));
    let kafka = TestKafka::External(proxy.addr.to_string());
    let faulty = proxy.clone();
    let direct = broker.direct();
    let verdict = run_load(kafka, args, |topic| async move {
        fault(faulty.clone(), direct, topic).await;
        faulty.set(Mode::Pass);
    })
    .await;
    eprintln!(
        "connections reset by the proxy: {}",
        proxy.resets.load(std::sync::atomic::Ordering::Relaxed)
    );
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
    verdict
}

/// Waits (up to 60 s) until the broker at `direct` holds a record of
/// `topic`.
fn stored_some(direct: &str, topic: &str) {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", direct)
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if (0..PARTITIONS).any(|p| common::kafka::watermark(&consumer, topic, p) > 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing of {topic} was stored within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn connections_reset_mid_request_lose_duplicate_and_misplace_nothing() {
    let verdict = through_proxy(&[], |proxy, _, _| async move {
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
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn latency_slows_but_loses_nothing() {
    let verdict = through_proxy(&[], |proxy, _, _| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Latency(Duration::from_millis(150)));
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn a_blackhole_then_recovery_loses_duplicates_and_misplaces_nothing() {
    let verdict = through_proxy(&[], |proxy, _, _| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Blackhole);
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.reset_all();
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn refused_connections_then_recovery_lose_and_duplicate_nothing() {
    let verdict = through_proxy(&[], |proxy, _, _| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Mode::Refuse);
        proxy.reset_all();
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn a_partition_longer_than_the_message_timeout_fails_records_retriably() {
    let verdict = through_proxy(
        &["-X", "message.timeout.ms=2000"],
        |proxy, direct, topic| async move {
            // Once the broker has stored the first records (their acks follow
            // at once), the partition starts: what is in flight then times out.
            tokio::task::spawn_blocking(move || stored_some(&direct, &topic))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.set(Mode::Blackhole);
            tokio::time::sleep(Duration::from_secs(5)).await;
            proxy.reset_all();
        },
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn a_broker_killed_and_restarted_mid_stream_keeps_every_acked_record_where_it_was_acked() {
    let broker = Arc::new(
        tokio::task::spawn_blocking(|| OwnBroker::start(None))
            .await
            .unwrap(),
    );
    let kafka = TestKafka::External(broker.bootstrap_servers());
    let crashing = broker.clone();
    let verdict = run_load(kafka, &[], |_| async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tokio::task::spawn_blocking(move || {
            crashing.kill();
            std::thread::sleep(Duration::from_secs(1));
            crashing.restart();
        })
        .await
        .unwrap();
    })
    .await;
    // librdkafka holds what it could not send until the broker is back
    // (message.timeout.ms is minutes): everything is acked.
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
