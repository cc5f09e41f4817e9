//! A streaming producer on tonic: sends batches on one `Produce` stream and
//! gets one result per record, in the order sent, each either where Kafka
//! stored the record or why it did not.
//!
//! ```text
//! cargo run --release -- serve                          # in one terminal
//! cargo run --example produce -- http://127.0.0.1:50051 orders
//! ```
//!
//! Outside this repository, generate the client from
//! proto/kafka_gateway/v1/producer.proto with tonic-prost-build and replace
//! `kafka_gateway::proto` with the generated module.

use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::record_result::Result as Outcome;
use kafka_gateway::proto::{ProduceRequest, Record, RecordError, RecordMetadata};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The result of one record, in the order the records were sent. A
/// `Stored` ack always names its topic, also when the batch asked for
/// compact acks (see [`produce`]).
#[derive(Debug)]
pub enum Ack {
    Stored(RecordMetadata),
    Failed(RecordError),
}

/// Sends `batches` on one stream and returns every record's result, in
/// order. Batches are fed through a small channel, so a gateway that pushes
/// back slows this sender down instead of filling memory. An `Err` is the
/// stream's own end (e.g. UNAVAILABLE while the gateway restarts): batches
/// after the last answered one were not produced and can be sent again.
///
/// A batch with `compact_acks` gets acks whose topic is empty when it is the
/// batch's: the response names it once (`ProduceResponse.topic`), and it is
/// filled in here.
pub async fn produce(
    target: String,
    batches: Vec<ProduceRequest>,
) -> Result<Vec<Ack>, Box<dyn std::error::Error>> {
    let mut client = ProducerClient::connect(target).await?;
    let (tx, rx) = mpsc::channel(4);
    let sent: Vec<(u64, usize)> = batches
        .iter()
        .map(|b| (b.batch_id, b.records.len()))
        .collect();
    tokio::spawn(async move {
        for batch in batches {
            if tx.send(batch).await.is_err() {
                break; // the stream ended
            }
        }
    });
    let mut responses = client.produce(ReceiverStream::new(rx)).await?.into_inner();
    let mut acks = Vec::new();
    for (batch_id, records) in sent {
        let response = responses
            .message()
            .await?
            .ok_or("the stream ended before every batch was answered")?;
        // Responses come back in the order the batches were sent.
        assert_eq!(response.batch_id, batch_id);
        assert_eq!(response.results.len(), records);
        let topic = response.topic;
        acks.extend(response.results.into_iter().map(|r| match r.result {
            Some(Outcome::Ok(mut stored)) => {
                if stored.topic.is_empty() {
                    stored.topic.clone_from(&topic); // a compact ack
                }
                Ack::Stored(stored)
            }
            Some(Outcome::Error(error)) => Ack::Failed(error),
            None => Ack::Failed(RecordError {
                message: "empty result".into(),
                ..RecordError::default()
            }),
        }));
    }
    Ok(acks)
}

/// Three batches of five keyed records, asking for compact acks: less to
/// encode and decode per record.
fn batches(topic: &str) -> Vec<ProduceRequest> {
    // What every batch shares: its topic, and compact acks (`produce` fills
    // in each ack's topic from the response).
    let shared = ProduceRequest {
        topic: topic.to_owned(),
        compact_acks: true,
        ..ProduceRequest::default()
    };
    (0..3u64)
        .map(|b| ProduceRequest {
            batch_id: b,
            records: (0..5)
                .map(|i| Record {
                    key: Some(format!("customer-{i}").into()),
                    value: Some(format!("order {b}-{i}").into()),
                    ..Record::default()
                })
                .collect(),
            ..shared.clone()
        })
        .collect()
}

#[allow(dead_code)] // also compiled into the integration tests, which call `produce`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let mut failed = 0;
    for (n, ack) in produce(target, batches(&topic)).await?.iter().enumerate() {
        match ack {
            Ack::Stored(at) => println!(
                "record {n}: {} partition {} offset {}",
                at.topic, at.partition, at.offset
            ),
            Ack::Failed(error) => {
                failed += 1;
                println!(
                    "record {n}: failed: {} (retriable: {})",
                    error.message, error.retriable
                );
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} records failed").into());
    }
    Ok(())
}
