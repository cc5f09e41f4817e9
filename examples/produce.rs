//! A minimal streaming client: three batches of five records, one ack per
//! record, in order.
//!
//! ```text
//! cargo run --release -- serve                 # in one terminal
//! cargo run --example produce -- http://127.0.0.1:50051 orders
//! ```
//!
//! Outside this repository, generate the client from
//! proto/kafka_gateway/v1/producer.proto with tonic-prost-build.

use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::record_result::Result as Outcome;
use kafka_gateway::proto::{ProduceRequest, Record};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());

    let mut client = ProducerClient::connect(target).await?;
    let batches = (0..3u64).map(move |b| ProduceRequest {
        batch_id: b,
        topic: topic.clone(),
        records: (0..5)
            .map(|i| Record {
                key: Some(format!("customer-{i}").into()),
                value: Some(format!("order {b}-{i}").into()),
                ..Record::default()
            })
            .collect(),
    });
    let mut acks = client
        .produce(tokio_stream::iter(batches))
        .await?
        .into_inner();
    while let Some(response) = acks.message().await? {
        for result in response.results {
            match result.result {
                Some(Outcome::Ok(at)) => println!(
                    "batch {}: {} partition {} offset {}",
                    response.batch_id, at.topic, at.partition, at.offset
                ),
                Some(Outcome::Error(error)) => println!(
                    "batch {}: failed: {} (retriable: {})",
                    response.batch_id, error.message, error.retriable
                ),
                None => println!("batch {}: empty result", response.batch_id),
            }
        }
    }
    Ok(())
}
