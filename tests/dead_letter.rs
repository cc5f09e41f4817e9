//! The dead-letter topic, against a broker: every class of failure the
//! gateway parks lands there with its key, value and headers unchanged plus
//! the cause headers, in stream order, where the client's error result
//! says; a batch can opt out; a record the dead-letter topic refuses too
//! gets an error that says so. Read back from the broker each time.

mod common;

use common::*;
use kafka_gateway::produce::dead_letter::{
    HEADER_CODE, HEADER_MESSAGE, HEADER_PARTITION, HEADER_TOPIC, HEADERS,
};
use kafka_gateway::proto::{ErrorCode, ProduceResponse, Record, RecordError};
use tonic::Status;

/// A gateway parking failed records in a topic of its own, over a broker
/// where that topic exists; records over 1,000 bytes are refused.
async fn gateway_with_dead_letters(extra: &[&str]) -> (TestGateway, String) {
    let kafka = TestKafka::start();
    let dlq = kafka.topic("dlq").await;
    let mut args = vec!["--dead-letter-topic", &dlq, "--max-record-bytes", "1000"];
    args.extend(extra);
    (start_gateway_on(kafka, true, &args).await, dlq)
}

/// Every record's result across `responses`, in order.
fn results(
    responses: &[Result<ProduceResponse, Status>],
) -> Vec<&kafka_gateway::proto::RecordResult> {
    responses
        .iter()
        .flat_map(|r| r.as_ref().expect("no stream error").results.iter())
        .collect()
}

/// The headers a record parked after failing with `error` carries: its own,
/// then the cause.
fn parked_headers(record: &Record, topic: &str, error: &RecordError) -> Vec<(String, Vec<u8>)> {
    let code = ErrorCode::try_from(error.code).unwrap();
    let mut headers: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.to_vec()))
        .collect();
    headers.push((HEADER_CODE.into(), code.as_str_name().into()));
    headers.push((HEADER_MESSAGE.into(), error.message.clone().into_bytes()));
    headers.push((HEADER_TOPIC.into(), topic.into()));
    if let Some(partition) = record.partition {
        headers.push((HEADER_PARTITION.into(), partition.to_string().into_bytes()));
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_are_parked_with_their_cause_in_stream_order() {
    let (gateway, dlq) = gateway_with_dead_letters(&[]).await;
    let topic = gateway.topic("orders").await;
    let mut client = gateway.client().await;

    let with_headers = |key: &str, value: &str| Record {
        headers: vec![header("h1", b"one"), header("h1", b"dup")],
        ..record(key, value)
    };
    // Stream order, failures marked: the same key for every failure would
    // put them in one partition; distinct keys spread them, and the order
    // is checked per partition.
    let mut records = vec![
        with_headers("k0", "stored 0"),
        Record {
            topic: "not a topic!".into(),
            ..with_headers("k1", "invalid topic")
        }, // fails
        with_headers("k2", "stored 2"),
        Record {
            partition: Some(PARTITIONS + 10),
            ..with_headers("k3", "no such partition")
        }, // fails
        with_headers("k4", &"x".repeat(1_200)), // fails: over --max-record-bytes
        Record {
            timestamp_ms: Some(-3),
            ..with_headers("k5", "negative timestamp")
        }, // fails
        with_headers("k6", "stored 6"),
    ];
    // More failures in later batches, one per batch, same key: these must
    // land in one partition in stream order.
    let mut later = Vec::new();
    for n in 0..8 {
        later.push(batch(
            1 + n,
            &topic,
            vec![
                Record {
                    topic: "bad/topic".into(),
                    ..record("same-key", format!("later failure {n}"))
                },
                record("same-key", format!("later ok {n}")),
            ],
        ));
    }
    let mut requests = vec![batch(0, &topic, records.clone())];
    requests.extend(later.clone());
    let responses = produce_stream(&mut client, requests).await;
    assert_eq!(responses.len(), 9, "{responses:?}");
    let results = results(&responses);
    for request in &later {
        records.extend(request.records.iter().cloned());
    }

    let failed: Vec<usize> = (0..records.len())
        .filter(|&i| matches!(i, 1 | 3 | 4 | 5) || (i >= 7 && (i - 7) % 2 == 0))
        .collect();
    let parked = consume(gateway.bootstrap_servers(), &dlq, failed.len()).await;
    assert_eq!(
        parked.len(),
        failed.len(),
        "one parked copy per failure, no more"
    );
    let mut last_index_per_partition = std::collections::HashMap::new();
    for (i, (record, result)) in records.iter().zip(&results).enumerate() {
        if !failed.contains(&i) {
            let meta = ok(result);
            assert_eq!(meta.topic, topic);
            continue;
        }
        let error = err(result);
        let at_meta = error
            .dead_letter
            .as_ref()
            .unwrap_or_else(|| panic!("record {i} says where it was parked: {error:?}"));
        assert_eq!(at_meta.topic, dlq);
        let stored = at(&parked, at_meta);
        assert_eq!(
            stored.key.as_deref(),
            record.key.as_deref(),
            "record {i}: key"
        );
        assert_eq!(
            stored.value.as_deref(),
            record.value.as_deref(),
            "record {i}: value"
        );
        let own_topic = if record.topic.is_empty() {
            &topic
        } else {
            &record.topic
        };
        assert_eq!(
            stored.headers,
            parked_headers(record, own_topic, error),
            "record {i}: its headers, then the cause"
        );
        // Parked in stream order within each partition of the dead-letter
        // topic.
        if let Some(previous) =
            last_index_per_partition.insert(stored.partition, (i, stored.offset))
        {
            assert!(
                previous.1 < stored.offset,
                "record {i} parked before record {}",
                previous.0
            );
        }
    }
    let codes: Vec<i32> = [1, 3, 4, 5].iter().map(|&i| err(results[i]).code).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::InvalidRecord as i32,
            ErrorCode::UnknownPartition as i32,
            ErrorCode::RecordTooLarge as i32,
            ErrorCode::InvalidRecord as i32,
        ]
    );
    // The same-key failures share a partition: all 8 in stream order.
    let same_key: Vec<&Consumed> = parked
        .iter()
        .filter(|c| c.key.as_deref() == Some(&b"same-key"[..]))
        .collect();
    let values: Vec<String> = same_key
        .iter()
        .map(|c| String::from_utf8(c.value.clone().unwrap()).unwrap())
        .collect();
    let expected: Vec<String> = (0..8).map(|n| format!("later failure {n}")).collect();
    assert_eq!(values, expected, "one partition, stream order");

    // The good records are where their acks say, and only they.
    let stored = consume(gateway.bootstrap_servers(), &topic, 3 + 8).await;
    assert_eq!(stored.len(), 3 + 8);

    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "kafka_gateway_dead_letter_records_total{topic=\"\",code=\"invalid_record\",outcome=\"parked\"}"
        ),
        Some(10.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "kafka_gateway_dead_letter_records_total{topic=\"\",code=\"record_too_large\",outcome=\"parked\"}"
        ),
        Some(1.0),
        "a refused record's topic is not a label: {metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "kafka_gateway_dead_letter_records_total{{topic=\"{topic}\",code=\"unknown_partition\",outcome=\"parked\"}}"
            )
        ),
        Some(1.0),
        "{metrics}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_opts_out_is_only_answered_and_the_unary_call_parks_too() {
    let (gateway, dlq) = gateway_with_dead_letters(&[]).await;
    let topic = gateway.topic("orders").await;
    let mut client = gateway.client().await;
    let bad = || Record {
        topic: "bad topic".into(),
        ..record("k", "v")
    };
    let mut skipped = batch(0, &topic, vec![bad()]);
    skipped.skip_dead_letter = true;
    let responses = produce_stream(&mut client, vec![skipped]).await;
    let error = assert_error(
        results(&responses)[0],
        ErrorCode::InvalidRecord,
        "contains ' '",
    );
    assert!(error.dead_letter.is_none(), "{error:?}");

    let response = client
        .produce_batch(batch(1, &topic, vec![bad()]))
        .await
        .expect("the call succeeds")
        .into_inner();
    let error = err(&response.results[0]);
    let parked_at = error.dead_letter.clone().expect("parked");
    let parked = consume(gateway.bootstrap_servers(), &dlq, 1).await;
    assert_eq!(parked.len(), 1, "only the batch that did not opt out");
    let stored = at(&parked, &parked_at);
    assert_eq!(stored.value.as_deref(), Some(&b"v"[..]));
    assert!(
        stored
            .headers
            .iter()
            .all(|(k, _)| HEADERS.contains(&k.as_str())),
        "{:?}",
        stored.headers
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_dead_letter_topic_refuses_too_gets_an_error_that_says_so() {
    // librdkafka refuses records over 3,000 bytes; the gateway over 1,000.
    let (gateway, dlq) = gateway_with_dead_letters(&["-X", "message.max.bytes=3000"]).await;
    let topic = gateway.topic("orders").await;
    let mut client = gateway.client().await;
    let responses = produce_stream(
        &mut client,
        vec![batch(
            0,
            &topic,
            vec![
                record("big", "y".repeat(5_000)),
                record("small", "fits"),
                record("medium", "z".repeat(1_500)),
            ],
        )],
    )
    .await;
    let results = results(&responses);
    let error = assert_error(
        results[0],
        ErrorCode::RecordTooLarge,
        &format!("parking the record in the dead-letter topic {dlq:?} failed too"),
    );
    assert!(error.dead_letter.is_none());
    assert!(
        error.message.contains("MSG_SIZE_TOO_LARGE"),
        "{}",
        error.message
    );
    ok(results[1]);
    let parked_at = err(results[2])
        .dead_letter
        .clone()
        .expect("1,500 bytes fit the dead-letter topic");
    let parked = consume(gateway.bootstrap_servers(), &dlq, 1).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        at(&parked, &parked_at).value.as_ref().map(Vec::len),
        Some(1_500)
    );
    gateway.stop().await.unwrap();
}
