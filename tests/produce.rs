//! The gateway end to end: gRPC streams in, records consumed back from the
//! broker, compared field by field.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::*;
use kafka_gateway::proto::{ErrorCode, Record};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_with_keys_tombstones_headers_and_timestamps() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("roundtrip").await;
    let mut client = gateway.client().await;

    let mut with_headers = record("k-headers", "v-headers");
    with_headers.headers = vec![
        header("trace", b"one"),
        header("dup", b"first"),
        header("empty", b""),
        header("dup", b"second"),
    ];
    let tombstone = Record {
        key: Some(Bytes::from_static(b"k-tombstone")),
        value: None,
        ..Record::default()
    };
    let null_key = Record {
        key: None,
        value: Some(Bytes::from_static(b"no key")),
        ..Record::default()
    };
    let empty_value = record("k-empty", "");
    let mut pinned = record("k-pinned", "to partition 4 at a set time");
    pinned.partition = Some(4);
    pinned.timestamp_ms = Some(1_700_000_000_123);
    let mut own_topic = record("k-own", "names its own topic");
    own_topic.topic = topic.clone();

    let first = vec![with_headers, tombstone, null_key];
    let second = vec![empty_value, pinned, own_topic];
    let responses = produce_stream(
        &mut client,
        vec![
            batch(41, &topic, first.clone()),
            // No default topic: every record names its own or fails.
            batch(42, &topic, second.clone()),
        ],
    )
    .await;

    assert_eq!(responses.len(), 2, "one response per batch, no status");
    let sent: Vec<Record> = first.into_iter().chain(second).collect();
    let acks = all_acks(&responses);
    assert_eq!(responses[0].as_ref().unwrap().batch_id, 41);
    assert_eq!(responses[1].as_ref().unwrap().batch_id, 42);
    assert_eq!(acks.len(), sent.len());
    assert_eq!(acks[4].partition, 4, "an explicit partition is kept");
    // The ack's timestamp is not checked: the embedded broker answers every
    // produce with a fixed log-append time. The stored timestamp is checked
    // below.

    let consumed = consume(gateway.bootstrap_servers(), &topic, sent.len()).await;
    assert_eq!(
        consumed.len(),
        sent.len(),
        "nothing more, nothing less in Kafka"
    );
    for (record, meta) in sent.iter().zip(&acks) {
        assert_eq!(meta.topic, topic);
        assert_stored(at(&consumed, meta), record);
    }
    assert!(
        at(&consumed, &acks[1]).value.is_none(),
        "an unset value is a tombstone"
    );
    assert_eq!(
        at(&consumed, &acks[3]).value.as_deref(),
        Some(&b""[..]),
        "an empty value is not a tombstone"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_each_get_every_ack_in_order() {
    const STREAMS: usize = 6;
    const BATCHES: usize = 15;
    const PER_BATCH: usize = 40;
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("concurrent").await;

    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        let mut client = gateway.client().await;
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let requests: Vec<_> = (0..BATCHES)
                .map(|b| {
                    let records = (0..PER_BATCH)
                        .map(|i| record(format!("key-{}", i % 9), format!("s{stream}-b{b}-r{i}")))
                        .collect();
                    batch(b as u64, &topic, records)
                })
                .collect();
            (
                stream,
                requests.clone(),
                produce_stream(&mut client, requests).await,
            )
        }));
    }

    let mut acked = Vec::new();
    for task in tasks {
        let (stream, requests, responses) = task.await.unwrap();
        assert_eq!(
            responses.len(),
            BATCHES,
            "stream {stream}: one response per batch"
        );
        let mut last_offset: HashMap<i32, i64> = HashMap::new();
        for (request, response) in requests.iter().zip(&responses) {
            let response = response.as_ref().expect("no stream error");
            assert_eq!(
                response.batch_id, request.batch_id,
                "stream {stream}: responses in order"
            );
            assert_eq!(response.results.len(), request.records.len());
            for (record, result) in request.records.iter().zip(&response.results) {
                let meta = ok(result).clone();
                if let Some(last) = last_offset.insert(meta.partition, meta.offset) {
                    assert!(
                        last < meta.offset,
                        "stream {stream}: offsets must grow per partition in stream order"
                    );
                }
                acked.push((record.clone(), meta));
            }
        }
    }

    let consumed = consume(gateway.bootstrap_servers(), &topic, acked.len()).await;
    assert_eq!(consumed.len(), STREAMS * BATCHES * PER_BATCH);
    for (record, meta) in &acked {
        assert_stored(at(&consumed, meta), record);
    }
    gateway.stop().await.unwrap();
}

/// Kafka's Java `Utils.murmur2`, which the default partitioner hashes keys
/// with.
fn java_murmur2(data: &[u8]) -> i32 {
    const M: i32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: i32 = 0x9747_b28c_u32 as i32 ^ len as i32;
    for chunk in data.chunks_exact(4) {
        let mut k = i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[len & !3..];
    if tail.len() == 3 {
        h ^= i32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= i32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= i32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_where_the_java_client_puts_them() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("partitioner").await;
    let mut client = gateway.client().await;
    let keys: Vec<String> = (0..60).map(|i| format!("customer-{i}")).collect();
    let records = keys.iter().map(|k| record(k.as_str(), "v")).collect();
    let responses = produce_stream(&mut client, vec![batch(0, &topic, records)]).await;
    let results = &responses[0].as_ref().unwrap().results;
    let mut used = std::collections::HashSet::new();
    for (key, result) in keys.iter().zip(results) {
        let expected = (java_murmur2(key.as_bytes()) & 0x7fff_ffff) % PARTITIONS;
        assert_eq!(ok(result).partition, expected, "key {key}");
        used.insert(expected);
    }
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "the embedded topic has {PARTITIONS} partitions"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_get_their_own_errors_while_streams_go_on() {
    let gateway = start_gateway(&["--max-record-bytes", "1KiB"]).await;
    let topic = gateway.topic("bad-input").await;
    let healthy_topic = gateway.topic("healthy").await;
    let mut client = gateway.client().await;

    // A healthy stream runs beside the one with bad input.
    let healthy = {
        let mut client = gateway.client().await;
        let healthy_topic = healthy_topic.clone();
        tokio::spawn(async move {
            let requests = (0..20)
                .map(|b| {
                    batch(
                        b,
                        &healthy_topic,
                        (0..25).map(|i| record("k", format!("{b}-{i}"))).collect(),
                    )
                })
                .collect();
            produce_stream(&mut client, requests).await
        })
    };

    let mut bad_name = record("k", "v");
    bad_name.topic = "no spaces allowed".into();
    let mut too_long = record("k", "v");
    too_long.topic = "t".repeat(250);
    let oversized = record("k", vec![b'x'; 1025]);
    let mut negative = record("k", "v");
    negative.partition = Some(-3);
    let mut missing_partition = record("k", "v");
    missing_partition.partition = Some(PARTITIONS + 10);
    let good = record("k", "good");

    let responses = produce_stream(
        &mut client,
        vec![
            batch(
                1,
                &topic,
                vec![
                    good.clone(),
                    bad_name,
                    too_long,
                    oversized,
                    negative,
                    good.clone(),
                ],
            ),
            batch(2, "", vec![good.clone()]),
            batch(3, &topic, vec![missing_partition]),
            batch(4, &topic, vec![good.clone()]),
        ],
    )
    .await;
    assert_eq!(responses.len(), 4, "the stream survives every bad record");
    let first = &responses[0].as_ref().unwrap().results;
    ok(&first[0]);
    for (index, needle) in [(1, "' '"), (2, "at most 249"), (4, "partition -3")] {
        let error = assert_error(&first[index], ErrorCode::InvalidRecord, needle);
        assert!(!error.retriable);
    }
    assert_error(&first[3], ErrorCode::RecordTooLarge, "--max-record-bytes");
    ok(&first[5]);

    let no_topic = &responses[1].as_ref().unwrap().results[0];
    assert_error(no_topic, ErrorCode::InvalidRecord, "no topic");

    let unknown_partition = &responses[2].as_ref().unwrap().results[0];
    assert_error(
        unknown_partition,
        ErrorCode::UnknownPartition,
        "_UNKNOWN_PARTITION",
    );
    ok(&responses[3].as_ref().unwrap().results[0]);

    // Only the three good records reached Kafka.
    let consumed = consume(gateway.bootstrap_servers(), &topic, 3).await;
    assert_eq!(consumed.len(), 3);
    assert!(
        consumed
            .iter()
            .all(|c| c.value.as_deref() == Some(&b"good"[..]))
    );

    let healthy = healthy.await.unwrap();
    assert_eq!(healthy.len(), 20);
    assert!(all_acks(&healthy).iter().all(|meta| meta.offset >= 0));
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_failures_become_record_errors() {
    let gateway = start_gateway_embedded(&["-X", "message.max.bytes=2000"]).await;
    let topic = gateway.topic("broker-errors").await;
    let mut client = gateway.client().await;

    // librdkafka refuses a record over its message.max.bytes.
    let responses = produce_stream(
        &mut client,
        vec![batch(
            1,
            &topic,
            vec![
                record("k", "small"),
                record("k", vec![b'x'; 5_000]),
                record("k", "small again"),
            ],
        )],
    )
    .await;
    let results = &responses[0].as_ref().unwrap().results;
    ok(&results[0]);
    assert_error(&results[1], ErrorCode::RecordTooLarge, "MSG_SIZE_TOO_LARGE");
    ok(&results[2]);

    // The broker refuses writes to a topic.
    gateway
        .embedded()
        .with(|cluster| {
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
            )
        })
        .await;
    let responses = produce_stream(
        &mut client,
        vec![batch(2, &topic, vec![record("k", "denied")])],
    )
    .await;
    let denied = assert_error(
        &responses[0].as_ref().unwrap().results[0],
        ErrorCode::NotAuthorized,
        "TOPIC_AUTHORIZATION_FAILED",
    );
    assert!(!denied.retriable);

    // The gateway goes on after the failure. (librdkafka remembers the
    // authorization failure for that topic, so use another.)
    let other = gateway.topic("broker-errors-after").await;
    let responses = produce_stream(
        &mut client,
        vec![batch(3, &other, vec![record("k", "allowed")])],
    )
    .await;
    ok(&responses[0].as_ref().unwrap().results[0]);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_topic_is_a_record_error() {
    // The gateway sees its broker as an external Kafka that does not create
    // topics on demand.
    let gateway = start_gateway_plain(&[
        "-X",
        "allow.auto.create.topics=false",
        "-X",
        "topic.metadata.propagation.max.ms=300",
    ])
    .await;
    let existing = gateway.topic("exists").await;
    let mut client = gateway.client().await;
    let missing = rand_topic("missing");
    let mut elsewhere = record("k", "to a missing topic");
    elsewhere.topic = missing.clone();
    let responses = produce_stream(
        &mut client,
        vec![batch(
            1,
            &existing,
            vec![record("k", "first"), elsewhere, record("k", "last")],
        )],
    )
    .await;
    let results = &responses[0].as_ref().unwrap().results;
    ok(&results[0]);
    assert_error(&results[1], ErrorCode::UnknownTopic, "UNKNOWN_TOPIC");
    ok(&results[2]);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_produce_batch_answers_like_a_stream() {
    let gateway = start_gateway(&["--max-batch-records", "10"]).await;
    let topic = gateway.topic("unary").await;
    let mut client = gateway.client().await;
    let records: Vec<Record> = (0..10)
        .map(|i| record(format!("k{i}"), format!("v{i}")))
        .collect();
    let response = client
        .produce_batch(batch(7, &topic, records.clone()))
        .await
        .expect("unary call succeeds")
        .into_inner();
    assert_eq!(response.batch_id, 7);
    assert_eq!(response.results.len(), 10);
    let consumed = consume(gateway.bootstrap_servers(), &topic, 10).await;
    for (record, result) in records.iter().zip(&response.results) {
        assert_stored(at(&consumed, ok(result)), record);
    }

    let status = client
        .produce_batch(batch(
            8,
            &topic,
            (0..11).map(|i| record("k", format!("{i}"))).collect(),
        ))
        .await
        .expect_err("an over-limit batch fails the call");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-batch-records"),
        "{}",
        status.message()
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_batches_end_the_stream_after_answering_earlier_ones() {
    let gateway = start_gateway(&[
        "--max-batch-bytes",
        "64KiB",
        "--max-record-bytes",
        "48KiB",
        "--max-batch-records",
        "100",
    ])
    .await;
    let topic = gateway.topic("over-limit").await;
    let mut client = gateway.client().await;

    let too_many = (0..101).map(|i| record("k", format!("{i}"))).collect();
    let responses = produce_stream(
        &mut client,
        vec![
            batch(1, &topic, vec![record("k", "a")]),
            batch(2, &topic, too_many),
            batch(3, &topic, vec![record("k", "never")]),
        ],
    )
    .await;
    assert_eq!(responses.len(), 2);
    ok(&responses[0].as_ref().unwrap().results[0]);
    let status = responses[1].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("101 records") && status.message().contains("split"),
        "{}",
        status.message()
    );

    let too_big = (0..3).map(|_| record("k", vec![b'x'; 40_000])).collect();
    let responses = produce_stream(
        &mut client,
        vec![
            batch(1, &topic, vec![record("k", "b")]),
            batch(2, &topic, too_big),
        ],
    )
    .await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    ok(&responses[0].as_ref().unwrap().results[0]);
    let status = responses[1].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-batch-bytes"),
        "{}",
        status.message()
    );

    let consumed = consume(gateway.bootstrap_servers(), &topic, 2).await;
    let values: Vec<_> = consumed.iter().map(|c| c.value.clone().unwrap()).collect();
    assert_eq!(
        values.len(),
        2,
        "only the two one-record batches were written: {values:?}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_time_out_while_the_broker_is_down_and_flow_again_after() {
    let gateway = start_gateway_embedded(&[
        "-X",
        "message.timeout.ms=1500",
        "-X",
        "reconnect.backoff.max.ms=200",
    ])
    .await;
    let topic = gateway.topic("broker-down").await;
    let mut client = gateway.client().await;
    let first = produce_stream(
        &mut client,
        vec![batch(1, &topic, vec![record("k", "before")])],
    )
    .await;
    ok(&first[0].as_ref().unwrap().results[0]);

    gateway
        .embedded()
        .with(|cluster| cluster.broker_down(1))
        .await
        .unwrap();
    let down = produce_stream(
        &mut client,
        vec![batch(
            2,
            &topic,
            vec![record("k", "lost-1"), record("k", "lost-2")],
        )],
    )
    .await;
    for result in &down[0].as_ref().unwrap().results {
        let timed_out = assert_error(result, ErrorCode::TimedOut, "_MSG_TIMED_OUT");
        assert!(timed_out.retriable, "a timed-out record may be sent again");
    }

    // Once the broker is back, a client retrying a retriable error gets
    // through (after librdkafka reconnects).
    gateway
        .embedded()
        .with(|cluster| cluster.broker_up(1))
        .await
        .unwrap();
    let mut acked = None;
    for attempt in 0..20 {
        let after = produce_stream(
            &mut client,
            vec![batch(
                3,
                &topic,
                vec![record("k", format!("after-{attempt}"))],
            )],
        )
        .await;
        let result = &after[0].as_ref().unwrap().results[0];
        if let Some(kafka_gateway::proto::record_result::Result::Ok(meta)) = &result.result {
            acked = Some((attempt, meta.clone()));
            break;
        }
        assert!(err(result).retriable, "{:?}", err(result));
    }
    let (attempt, meta) = acked.expect("the broker is reachable again within 20 attempts");
    let consumed = consume(gateway.bootstrap_servers(), &topic, 2).await;
    assert_eq!(consumed[0].value.as_deref(), Some(&b"before"[..]));
    assert_eq!(
        at(&consumed, &meta).value,
        Some(format!("after-{attempt}").into_bytes())
    );
    assert!(
        consumed
            .iter()
            .all(|c| !c.value.as_ref().unwrap().starts_with(b"lost")),
        "records that timed out while the broker was down are not stored"
    );
    gateway.stop().await.unwrap();
}

/// What a client built from a different proto would send: field 1 as a
/// string where `ProduceRequest.batch_id` is a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAProduceRequest {
    #[prost(string, tag = "1")]
    batch_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_ends_the_stream_with_invalid_argument() {
    let gateway = start_gateway(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<NotAProduceRequest, kafka_gateway::proto::ProduceResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/kafka_gateway.v1.Producer/Produce");
    let garbage = tokio_stream::iter(vec![NotAProduceRequest {
        batch_id: "seven".into(),
    }]);
    let mut responses = grpc
        .streaming(tonic::Request::new(garbage), path, codec)
        .await
        .unwrap()
        .into_inner();
    let status = responses
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("producer.proto"),
        "{}",
        status.message()
    );

    // The gateway is unharmed.
    let mut client = gateway.client().await;
    let topic = gateway.topic("after-garbage").await;
    let responses =
        produce_stream(&mut client, vec![batch(1, &topic, vec![record("k", "v")])]).await;
    ok(&responses[0].as_ref().unwrap().results[0]);
    gateway.stop().await.unwrap();
}
