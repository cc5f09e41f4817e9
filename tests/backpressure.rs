//! Backpressure, cancellation and shutdown, end to end: nothing is buffered
//! without bound, nothing acked is lost, nothing is dropped silently.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kafka_gateway::proto::ProduceRequest;
use tokio_stream::StreamExt;

/// `count` batches of `per_batch` records to partition 0, values numbered
/// across the stream.
fn numbered_batches(
    topic: &str,
    count: usize,
    per_batch: usize,
    value_bytes: usize,
) -> Vec<ProduceRequest> {
    (0..count)
        .map(|b| {
            let records = (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    let mut value = format!("{n:08}").into_bytes();
                    value.resize(value_bytes.max(8), b'.');
                    let mut rec = record(format!("k{}", n % 5), value);
                    rec.partition = Some(0);
                    rec
                })
                .collect();
            batch(b as u64, topic, records)
        })
        .collect()
}

fn number(value: &[u8]) -> usize {
    std::str::from_utf8(&value[..8]).unwrap().parse().unwrap()
}

/// The numbers of consumed records, in the order given.
fn numbers<'a>(consumed: impl IntoIterator<Item = &'a Consumed>) -> Vec<usize> {
    consumed
        .into_iter()
        .map(|c| number(c.value.as_ref().unwrap()))
        .collect()
}

/// Waits until `counter` stops moving for half a second.
async fn settle(counter: &AtomicUsize) -> usize {
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_queue_and_window_still_deliver_everything_in_order() {
    // librdkafka's queue holds 10 records, so QueueFull is routine; the window
    // holds 7. Two streams share the producer.
    let gateway = start_gateway(&[
        "-X",
        "queue.buffering.max.messages=10",
        "--max-in-flight-records",
        "7",
    ])
    .await;
    let topic = gateway.topic("tiny-queue").await;
    let mut streams = Vec::new();
    for s in 0..2 {
        let mut client = gateway.client().await;
        let requests = numbered_batches(&topic, 40, 25, 20)
            .into_iter()
            .map(|mut b| {
                for r in &mut b.records {
                    r.partition = Some(s);
                }
                b
            })
            .collect::<Vec<_>>();
        streams.push(tokio::spawn(async move {
            produce_stream(&mut client, requests).await
        }));
    }
    for stream in streams {
        let responses = stream.await.unwrap();
        assert_eq!(responses.len(), 40);
        let mut offsets = Vec::new();
        for (b, response) in responses.iter().enumerate() {
            let response = response.as_ref().unwrap();
            assert_eq!(response.batch_id, b as u64);
            offsets.extend(response.results.iter().map(|r| ok(r).offset));
        }
        assert_eq!(offsets.len(), 1_000);
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "acked offsets follow stream order"
        );
    }

    let consumed = consume(gateway.bootstrap_servers(), &topic, 2_000).await;
    assert_eq!(consumed.len(), 2_000, "every record is in Kafka, once");
    for partition in 0..2 {
        let numbers = numbers(consumed.iter().filter(|c| c.partition == partition));
        assert_eq!(
            numbers,
            (0..1_000).collect::<Vec<_>>(),
            "partition {partition} holds the stream in order"
        );
    }
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_pushes_back_on_the_client() {
    const BATCHES: usize = 1_000;
    let gateway = start_gateway_embedded(&["--max-in-flight-records", "4"]).await;
    let topic = gateway.topic("pushback").await;
    let mut client = gateway.client().await;

    // Every broker answer now takes 2 s: the window fills at once.
    gateway
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(1, Duration::from_secs(2)))
        .await
        .unwrap();

    // 1,000 batches of one 4 KB record: 4 MB the client would like to send,
    // far more than HTTP/2's flow-control windows hold.
    let pulled = Arc::new(AtomicUsize::new(0));
    let outbound = {
        let pulled = pulled.clone();
        tokio_stream::iter(numbered_batches(&topic, BATCHES, 1, 4_000)).map(move |b| {
            pulled.fetch_add(1, Ordering::SeqCst);
            b
        })
    };
    let mut responses = client.produce(outbound).await.unwrap().into_inner();

    // The gateway stops reading the stream, and HTTP/2 flow control stops
    // the client: it gets only the HTTP/2 stream window (1 MiB, about 256
    // batches) plus the gateway's send window ahead, not the 4 MB it has.
    let stalled_at = settle(&pulled).await;
    assert!(
        stalled_at < 400,
        "the client pushed {stalled_at} of {BATCHES} batches into a full gateway"
    );

    // Once the broker is fast again, everything goes through, in order.
    gateway
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(1, Duration::ZERO))
        .await
        .unwrap();
    let mut next = 0;
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(response.batch_id, next);
        ok(&response.results[0]);
        next += 1;
    }
    assert_eq!(next as usize, BATCHES);
    let consumed = consume(gateway.bootstrap_servers(), &topic, BATCHES).await;
    let numbers = numbers(&consumed);
    assert_eq!(numbers, (0..BATCHES).collect::<Vec<_>>());
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_leaves_the_gateway_healthy_and_kafka_consistent() {
    let gateway = start_gateway(&["--max-in-flight-records", "50"]).await;
    let topic = gateway.topic("cancelled").await;
    let mut client = gateway.client().await;

    let (mut responses, feeder) =
        open_stream(&mut client, numbered_batches(&topic, 200, 20, 50)).await;
    let mut acked = 0;
    while acked < 10 {
        let response = responses.message().await.unwrap().expect("a response");
        assert_eq!(response.batch_id, acked);
        acked += 1;
    }
    // The client goes away mid-stream, with records in flight.
    feeder.abort();
    drop(responses);
    drop(client);

    // Other streams are served as before.
    let other_topic = gateway.topic("after-cancel").await;
    let mut client = gateway.client().await;
    let after = produce_stream(&mut client, numbered_batches(&other_topic, 3, 10, 10)).await;
    assert_eq!(after.len(), 3);
    assert!(all_acks(&after).iter().all(|meta| meta.offset >= 0));

    // The gateway drains and stops cleanly. What reached Kafka from the
    // cancelled stream is a prefix of it, in order, without duplicates, and
    // holds every acked record.
    let broker = gateway.stop().await.unwrap();
    let consumed = consume(broker.bootstrap_servers(), &topic, acked as usize * 20).await;
    let numbers = numbers(&consumed);
    assert_eq!(numbers, (0..numbers.len()).collect::<Vec<_>>());
    assert!(numbers.len() < 200 * 20, "the stream was cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_batch_read_and_keeps_every_ack() {
    let mut gateway = start_gateway(&["--max-in-flight-records", "30"]).await;
    let topic = gateway.topic("shutdown").await;
    let mut client = gateway.client().await;

    let (mut responses, feeder) =
        open_stream(&mut client, numbered_batches(&topic, 500, 10, 30)).await;

    let mut answered: Vec<kafka_gateway::proto::ProduceResponse> = Vec::new();
    let status = loop {
        match responses.message().await {
            Ok(Some(response)) => {
                if answered.len() == 20 {
                    gateway.request_stop();
                }
                answered.push(response);
            }
            Ok(None) => panic!("the stream must end with a status, not OK"),
            Err(status) => break status,
        }
    };
    feeder.abort();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("shutting down"),
        "{}",
        status.message()
    );
    assert!(
        answered.len() > 20 && answered.len() < 500,
        "{} answered",
        answered.len()
    );
    let mut acks = HashMap::new();
    for (b, response) in answered.iter().enumerate() {
        assert_eq!(
            response.batch_id, b as u64,
            "answered batches are a prefix, in order"
        );
        for result in &response.results {
            let meta = ok(result);
            acks.insert(meta.offset, ());
        }
    }

    let broker = gateway.stop().await.unwrap();

    // Every acked record is in Kafka, in order; nothing beyond what the
    // gateway read is.
    let consumed = consume(broker.bootstrap_servers(), &topic, acks.len()).await;
    let numbers = numbers(&consumed);
    assert_eq!(
        numbers.len(),
        acks.len(),
        "exactly the acked records are stored"
    );
    assert_eq!(numbers, (0..numbers.len()).collect::<Vec<_>>());
    assert!(consumed.iter().all(|c| acks.contains_key(&c.offset)));
}
