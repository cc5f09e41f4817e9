//! Rolling the gateway under load loses nothing: SIGTERM to the real binary
//! while streams are sending, against a broker that outlives it. Every acked
//! record is in Kafka where its ack says; every record not acked sits in a
//! batch the client can see was never answered, and none of those reached
//! Kafka; every stream ends UNAVAILABLE; the process exits 0.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::binary::{serve, sigterm, wait_exit};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ProduceRequest, ProduceResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const STREAMS: usize = 4;
const RECORDS_PER_BATCH: usize = 50;

/// What one client saw.
struct Outcome {
    /// Every batch it sent, in order.
    sent: Vec<ProduceRequest>,
    responses: Vec<ProduceResponse>,
    end: tonic::Status,
}

/// Sends batches without pause until the gateway stops reading; tells
/// `acked` how many responses arrived so far.
async fn client(
    grpc: String,
    topic: String,
    stream: usize,
    acked: watch::Sender<usize>,
) -> Outcome {
    let mut client = ProducerClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    // Like a real client, it stops sending once the stream has ended.
    let (ended, mut end_seen) = watch::channel(false);
    let feeder = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for b in 0u64.. {
                let records = (0..RECORDS_PER_BATCH)
                    .map(|i| {
                        record(
                            format!("s{stream}-k{}", i % 7),
                            format!("s{stream}-b{b}-r{i}"),
                        )
                    })
                    .collect();
                let request = batch(b, &topic, records);
                tokio::select! {
                    sent_ok = tx.send(request.clone()) => if sent_ok.is_err() { break },
                    _ = end_seen.wait_for(|&ended| ended) => break,
                }
                sent.push(request);
            }
            sent
        })
    };
    let mut inbound = client
        .produce(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut responses = Vec::new();
    let end = loop {
        match inbound.message().await {
            Ok(Some(response)) => {
                responses.push(response);
                acked.send_replace(responses.len());
            }
            Ok(None) => panic!("stream {stream} ended without a status"),
            Err(status) => break status,
        }
    };
    ended.send_replace(true);
    let sent = tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the feeder stops once the stream ended")
        .unwrap();
    Outcome {
        sent,
        responses,
        end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_no_acked_record() {
    let broker = TestKafka::start();
    let topic = broker.topic("drain").await;
    if let TestKafka::Embedded(embedded) = &broker {
        // A slow broker, so records are in flight when the signal lands.
        embedded
            .with(|cluster| cluster.broker_round_trip_time(1, Duration::from_millis(30)))
            .await
            .unwrap();
    }
    let mut served = serve(&["--bootstrap-servers", broker.bootstrap_servers()], &[]);

    let mut progress = Vec::new();
    let mut clients = Vec::new();
    for stream in 0..STREAMS {
        let (tx, rx) = watch::channel(0);
        progress.push(rx);
        clients.push(tokio::spawn(client(
            served.grpc.clone(),
            topic.clone(),
            stream,
            tx,
        )));
    }
    // Mid-load: every stream has had some batches answered.
    for rx in &mut progress {
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|&n| n >= 3))
            .await
            .expect("the streams make progress")
            .unwrap();
    }
    sigterm(&served.child);

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.unwrap());
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut served.child);
        let rest: Vec<String> = served.lines.try_iter().collect();
        (status, rest)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit 0 after a drain, got {}", status.0);
    assert!(
        status.1.iter().any(|l| l.contains("producer flushed")),
        "{:#?}",
        status.1
    );

    let mut acked: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    let mut unanswered_records = 0;
    for (stream, outcome) in outcomes.iter().enumerate() {
        assert_eq!(
            outcome.end.code(),
            tonic::Code::Unavailable,
            "stream {stream}: {:?}",
            outcome.end
        );
        assert!(
            outcome.end.message().contains("server shutting down"),
            "{}",
            outcome.end
        );
        // Answers are a prefix of what was sent, in order, all acked.
        assert!(outcome.responses.len() <= outcome.sent.len());
        let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
        for (request, response) in outcome.sent.iter().zip(&outcome.responses) {
            assert_eq!(
                response.batch_id, request.batch_id,
                "stream {stream}: answers in order"
            );
            assert_eq!(response.results.len(), request.records.len());
            for (sent, result) in request.records.iter().zip(&response.results) {
                let meta = ok(result);
                let previous = last_offset.insert(meta.partition, meta.offset);
                assert!(
                    previous < Some(meta.offset),
                    "stream {stream}: offsets grow per partition"
                );
                let value = String::from_utf8(sent.value.clone().unwrap().to_vec()).unwrap();
                acked.insert(value, (meta.partition, meta.offset));
            }
        }
        unanswered_records += outcome.sent[outcome.responses.len()..]
            .iter()
            .map(|b| b.records.len())
            .sum::<usize>();
    }
    assert!(!acked.is_empty());
    eprintln!(
        "{} records acked before and during the drain; {unanswered_records} sent but never answered",
        acked.len()
    );

    // Kafka holds exactly the acked records, where their acks say.
    let consumed = consume(broker.bootstrap_servers(), &topic, acked.len()).await;
    let stored: HashSet<(String, i32, i64)> = consumed
        .iter()
        .map(|c| {
            let value = String::from_utf8(c.value.clone().unwrap()).unwrap();
            (value, c.partition, c.offset)
        })
        .collect();
    let expected: HashSet<(String, i32, i64)> = acked
        .into_iter()
        .map(|(value, (partition, offset))| (value, partition, offset))
        .collect();
    let missing: Vec<_> = expected.difference(&stored).take(5).collect();
    assert!(missing.is_empty(), "acked but not in Kafka: {missing:?}");
    let extra: Vec<_> = stored.difference(&expected).take(5).collect();
    assert!(extra.is_empty(), "in Kafka but never acked: {extra:?}");
}
