//! Faults injected into the embedded broker while streams are sending, each
//! run ending in the same check of the gateway's promises
//! ([`common::invariants`]): every acked record stored once where its ack
//! says, nothing stored twice, per stream and partition the stored order is
//! the send order, every record answered or its stream ended with a status,
//! and the gateway serves a fresh stream afterwards.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::invariants::{
    Offsets, Retries, StreamOutcome, Verdict, assert_serves_a_fresh_stream, check, drive_stream,
    numbered,
};
use common::*;
use kafka_gateway::EmbeddedBroker;
use kafka_gateway::proto::ErrorCode;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The load of one run.
#[derive(Clone, Copy)]
struct Load {
    streams: usize,
    batches: usize,
    per_batch: usize,
    /// Time between a stream's batches.
    pace: Duration,
}

const LOAD: Load = Load {
    streams: 4,
    batches: 60,
    per_batch: 25,
    pace: Duration::from_millis(20),
};

/// Runs `load` against a gateway started with `args`, applies `fault` to
/// the embedded broker while the streams send, then checks every promise
/// and that a fresh stream is served. Returns the figures and the gateway.
async fn run<F, Fut>(
    args: &[&str],
    load: Load,
    fault: F,
) -> (Verdict, Vec<StreamOutcome>, TestGateway)
where
    F: FnOnce(Arc<EmbeddedBroker>) -> Fut,
    Fut: Future<Output = ()>,
{
    let gateway = start_gateway_embedded(args).await;
    // Created before the load, so that every stream starts at once.
    let topic = rand_topic("faults");
    gateway.kafka.create_topic(&topic, PARTITIONS).await;
    let mut streams = Vec::new();
    for s in 0..load.streams {
        let mut client = gateway.client().await;
        let batches = (0..load.batches)
            .map(|b| numbered(s, b, load.per_batch, 12, &topic))
            .collect();
        streams.push(tokio::spawn(async move {
            drive_stream(&mut client, s, batches, load.pace).await
        }));
    }
    fault(gateway.embedded().clone()).await;
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(120), stream)
                .await
                .expect("streams end")
                .unwrap(),
        );
    }
    assert_serves_a_fresh_stream(&gateway, &gateway.topic("fresh").await).await;
    let consumed = consume(gateway.bootstrap_servers(), &topic, 0).await;
    // librdkafka's mock cluster does not deduplicate the idempotent
    // producer's retries: see Retries::Stored.
    let verdict = check(&outcomes, &consumed, Offsets::Exact, Retries::Stored);
    eprintln!("{verdict}");
    verdict.assert_holds();
    (verdict, outcomes, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_request_errors_are_retried_by_the_producer() {
    use RDKafkaRespErr::*;
    let (verdict, _, gateway) = run(&[], LOAD, |broker| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker
            .with(|cluster| {
                cluster.request_errors(
                    RDKafkaApiKey::Produce,
                    &[
                        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    ],
                )
            })
            .await;
    })
    .await;
    // Retriable broker errors are the producer's to retry: nothing fails,
    // and the refused requests were never stored.
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
    assert_eq!(verdict.retry_copies, 0, "{verdict}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_mid_request_lose_nothing() {
    use RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT as TRANSPORT;
    let (verdict, _, gateway) = run(&[], LOAD, |broker| async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The broker closes the connection when the next Produce
            // arrives: the responses to the requests before it are lost,
            // and the producer sends those again.
            broker
                .with(|cluster| cluster.request_errors(RDKafkaApiKey::Produce, &[TRANSPORT]))
                .await;
        }
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_shorter_than_the_message_timeout_delays_but_loses_nothing() {
    let (verdict, _, gateway) = run(&[], LOAD, |broker| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.with(|cluster| cluster.broker_down(1)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.with(|cluster| cluster.broker_up(1)).await.unwrap();
    })
    .await;
    assert_eq!(verdict.acked, verdict.records_sent, "{verdict}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_message_timeout_fails_records_retriably() {
    let (verdict, _, gateway) = run(
        &["-X", "message.timeout.ms=1000"],
        LOAD,
        |broker| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            broker.with(|cluster| cluster.broker_down(1)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            broker.with(|cluster| cluster.broker_up(1)).await.unwrap();
        },
    )
    .await;
    let timed_out = verdict
        .failed
        .get("ERROR_CODE_TIMED_OUT")
        .copied()
        .unwrap_or(0);
    assert!(timed_out > 0, "the outage must time records out: {verdict}");
    assert_eq!(
        verdict.acked + timed_out,
        verdict.records_sent,
        "every other record is acked: {verdict}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_longer_than_the_message_timeout_fail_records_retriably() {
    let (verdict, _, gateway) = run(
        &["-X", "message.timeout.ms=1000"],
        LOAD,
        |broker| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            broker
                .with(|cluster| cluster.broker_round_trip_time(1, Duration::from_millis(1_500)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            broker
                .with(|cluster| cluster.broker_round_trip_time(1, Duration::ZERO))
                .await
                .unwrap();
        },
    )
    .await;
    let timed_out = verdict
        .failed
        .get("ERROR_CODE_TIMED_OUT")
        .copied()
        .unwrap_or(0);
    assert!(
        timed_out > 0,
        "slow round trips must time records out: {verdict}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_replaces_the_producer_and_streams_go_on() {
    let (verdict, outcomes, gateway) = run(&[], LOAD, |broker| async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        broker
            .with(|cluster| {
                cluster.request_errors(
                    RDKafkaApiKey::Produce,
                    &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
                )
            })
            .await;
    })
    .await;
    let unavailable = verdict
        .failed
        .get("ERROR_CODE_UNAVAILABLE")
        .copied()
        .unwrap_or(0);
    assert!(
        unavailable > 0,
        "the fatal error must fail some records: {verdict}"
    );
    // Each failure names the fatal error and is retriable; every stream
    // went on to get acks after its failures.
    for outcome in &outcomes {
        let results: Vec<_> = outcome.responses.iter().flat_map(|r| &r.results).collect();
        for result in &results {
            if let Some(kafka_gateway::proto::record_result::Result::Error(error)) = &result.result
            {
                assert_eq!(error.code, ErrorCode::Unavailable as i32, "{error:?}");
                assert!(error.retriable);
                assert!(error.message.contains("fatal error"), "{}", error.message);
            }
        }
        assert!(
            matches!(
                results.last().and_then(|r| r.result.as_ref()),
                Some(kafka_gateway::proto::record_result::Result::Ok(_))
            ),
            "stream {} ends with acks",
            outcome.stream
        );
    }
    let (status, body) = http_get(gateway.metrics_addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "live"));
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, "kafka_gateway_producer_replacements_total"),
        Some(1.0),
        "{text}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_keeps_failing_fails_the_liveness_probe() {
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("keeps-failing").await;
    let mut client = gateway.client().await;
    for round in 0..3u64 {
        gateway
            .embedded()
            .with(|cluster| {
                cluster.request_errors(
                    RDKafkaApiKey::Produce,
                    &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
                )
            })
            .await;
        // The first record after the fault trips it; once the replacement
        // is in place, records flow again.
        let _ = produce_stream(
            &mut client,
            vec![batch(round, &topic, vec![record("k", "trip")])],
        )
        .await;
        eventually("the replacement producer", || async {
            let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
            (sample(&text, "kafka_gateway_producer_replacements_total") == Some(round as f64 + 1.0))
                .then_some(())
        })
        .await;
    }
    let (status, body) = http_get(gateway.metrics_addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("failed fatally 3 times"), "{body}");
    gateway.stop().await.unwrap();
}
