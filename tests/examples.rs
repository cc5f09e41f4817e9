//! The Rust client example, compiled in here as it is, against a live
//! gateway: every record comes back in order, acked or with its own error,
//! and the acked ones are in Kafka where their acks say.

mod common;

#[path = "../examples/rust/produce.rs"]
mod example;

use common::*;
use example::Ack;
use kafka_gateway::proto::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_gets_every_result_in_order() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("example-rust").await;
    let mut requests: Vec<_> = (0..4u64)
        .map(|b| {
            let records = (0..25)
                .map(|i| record(format!("key-{}", i % 5), format!("{b}-{i}")))
                .collect();
            batch(b, &topic, records)
        })
        .collect();
    requests[2].records[7].partition = Some(99);
    // Compact acks for two of the batches: their acks name the topic too.
    requests[1].compact_acks = true;
    requests[2].compact_acks = true;

    let acks = example::produce(format!("http://{}", gateway.addr), requests.clone())
        .await
        .expect("the stream is answered");
    assert_eq!(acks.len(), 100);
    let sent: Vec<_> = requests.iter().flat_map(|b| &b.records).collect();
    let stored: Vec<_> = acks
        .iter()
        .enumerate()
        .filter_map(|(n, ack)| match ack {
            Ack::Stored(meta) => {
                assert_eq!(meta.topic, topic, "record {n}: the ack names its topic");
                Some((n, meta.clone()))
            }
            Ack::Failed(error) => {
                assert_eq!(n, 2 * 25 + 7, "only the record to partition 99 fails");
                assert_eq!(error.code, ErrorCode::UnknownPartition as i32);
                None
            }
        })
        .collect();
    assert_eq!(stored.len(), 99);

    let consumed = consume(gateway.bootstrap_servers(), &topic, 99).await;
    assert_eq!(consumed.len(), 99);
    let mut last = std::collections::HashMap::new();
    for (n, meta) in &stored {
        assert_stored(at(&consumed, meta), sent[*n]);
        let previous = last.insert(meta.partition, meta.offset);
        assert!(previous < Some(meta.offset), "offsets grow in send order");
    }
    gateway.stop().await.unwrap();
}
