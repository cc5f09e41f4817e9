//! What an operator sees: Prometheus metrics that count what was produced,
//! health on gRPC and HTTP that follows the gateway from starting to
//! draining, and reflection that describes the API without the proto file.

mod common;

use std::time::Duration;

use common::*;
use kafka_gateway::proto::ErrorCode;
use prost::Message;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn metrics_count_records_by_topic_and_result() {
    // librdkafka's statistics every 100 ms instead of 5 s.
    let gateway = start_gateway(&["-X", "statistics.interval.ms=100"]).await;
    let mut client = gateway.client().await;
    let topic = gateway.topic("metrics").await;

    // The listener's root lists its paths; an unknown path gets that too.
    for (path, code) in [("/", 200), ("/nope", 404)] {
        let (status, body) = http_get(gateway.metrics_addr, path).await;
        assert_eq!(status, code, "{path}: {body}");
        for listed in ["/metrics", "/healthz", "/readyz"] {
            assert!(body.contains(listed), "{path} lists {listed}: {body}");
        }
    }

    let mut records: Vec<_> = (0..20)
        .map(|i| record(format!("k{i}"), "0123456789"))
        .collect();
    let mut bad_partition = record("k", "v");
    bad_partition.partition = Some(99);
    records.push(bad_partition);
    let mut bad_topic = record("k", "v");
    bad_topic.topic = "no spaces allowed".into();
    records.push(bad_topic);
    let responses = produce_stream(
        &mut client,
        vec![
            batch(1, &topic, records),
            batch(2, &topic, vec![record("k", "v")]),
        ],
    )
    .await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    let first = responses[0].as_ref().unwrap();
    assert_error(
        &first.results[20],
        ErrorCode::UnknownPartition,
        &format!("topic {topic:?} has no partition 99"),
    );
    assert_error(&first.results[21], ErrorCode::InvalidRecord, "topic");

    let ok = format!(r#"kafka_gateway_records_total{{topic="{topic}",result="ok"}}"#);
    let text = eventually("the stream's records in the metrics", || async {
        let (status, text) = http_get(gateway.metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        (sample(&text, &ok) == Some(21.0)
            && sample(&text, "kafka_gateway_open_streams") == Some(0.0)
            && sample(&text, "kafka_gateway_librdkafka_messages_sent_total") >= Some(21.0))
        .then_some(text)
    })
    .await;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    // Key "kN" (2 or 3 bytes) plus a 10-byte value; the extra record is 2.
    let ok_bytes = (0..20).map(|i| format!("k{i}").len() + 10).sum::<usize>() + 2;
    expect(
        &format!(r#"kafka_gateway_record_bytes_total{{topic="{topic}",result="ok"}}"#),
        ok_bytes as f64,
    );
    // librdkafka refuses a record to a partition it knows is missing, and
    // fails it at delivery when it learns later: sent or refused, once.
    let unknown_partition = |series: &str| {
        sample(
            &text,
            &format!(r#"{series}{{topic="{topic}",result="unknown_partition"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        unknown_partition("kafka_gateway_records_total")
            + unknown_partition("kafka_gateway_refused_records_total"),
        1.0,
        "{text}"
    );
    // Refused before any send: counted apart from the records sent. An
    // invalid topic name is not a label value.
    expect(
        r#"kafka_gateway_refused_records_total{topic="",result="invalid_record"}"#,
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_records_total{topic="",result="invalid_record"}"#
        ),
        None,
        "a refused record was not sent:\n{text}"
    );
    expect("kafka_gateway_batches_total", 2.0);
    // The batch latency by topic (empty: the first batch's records had
    // two) and error.type (its first failed record's).
    expect(
        r#"kafka_gateway_batch_ack_latency_seconds_count{topic="",error_type="unknown_partition"}"#,
        1.0,
    );
    expect(
        &format!(
            r#"kafka_gateway_batch_ack_latency_seconds_count{{topic="{topic}",error_type=""}}"#
        ),
        1.0,
    );
    expect(
        &format!(
            r#"kafka_gateway_batch_ack_latency_seconds_bucket{{le="10.0",topic="{topic}",error_type=""}}"#
        ),
        1.0,
    );
    expect("kafka_gateway_in_flight_records", 0.0);
    expect("kafka_gateway_in_flight_bytes", 0.0);
    expect(
        r#"kafka_gateway_stream_ends_total{reason="completed"}"#,
        1.0,
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("kafka_gateway_librdkafka_broker_up{broker=") && l.ends_with(" 1")
        ),
        "a connected broker in\n{text}"
    );
    assert!(
        text.contains("kafka_gateway_librdkafka_broker_rtt_p99_seconds{"),
        "{text}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    gateway.stop().await.unwrap();
}

async fn channel(gateway: &TestGateway) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .expect("the gateway accepts connections")
}

async fn check(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check answers")
        .into_inner()
        .status
}

#[tokio::test]
async fn health_is_serving_until_the_drain_begins() {
    let mut gateway = start_gateway_embedded(&[]).await;
    let mut health = HealthClient::new(channel(&gateway).await);
    for service in ["", "kafka_gateway.v1.Producer"] {
        eventually("SERVING", || {
            let mut health = health.clone();
            async move {
                (check(&mut health, service).await == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
    }
    assert_eq!(
        http_get(gateway.metrics_addr, "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(
        http_get(gateway.metrics_addr, "/healthz").await,
        (200, "live\n".into())
    );
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // A watcher, then a stream that keeps the drain busy: a slow broker.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "kafka_gateway.v1.Producer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    gateway
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(1, Duration::from_millis(1500)))
        .await
        .unwrap();
    let mut client = gateway.client().await;
    let topic = gateway.topic("drain-health").await;
    let (mut responses, _feeder) =
        open_stream(&mut client, vec![batch(1, &topic, vec![record("k", "v")])]).await;
    // The drain begins only once the batch is read and in flight.
    eventually("the record in flight", || async {
        let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
        (sample(&text, "kafka_gateway_in_flight_records") == Some(1.0)).then_some(())
    })
    .await;

    gateway.request_stop();
    let draining = watch.next().await.unwrap().unwrap();
    assert_eq!(draining.status, ServingStatus::NotServing as i32);
    let (status, body) = http_get(gateway.metrics_addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "draining: the gateway is shutting down\n")
    );
    assert_eq!(
        http_get(gateway.metrics_addr, "/healthz").await.0,
        200,
        "still live"
    );
    assert!(
        watch.next().await.is_none(),
        "the watch ends, not holding the drain"
    );

    // The batch already read is answered, then the stream ends UNAVAILABLE.
    let answered = responses.message().await.unwrap().unwrap();
    ok(&answered.results[0]);
    let end = responses.message().await.unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(end.message().contains("server shutting down"), "{end}");
    gateway.stop().await.unwrap();
}

/// Asks the reflection service one question.
async fn reflect(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_describes_the_api_and_health_checking() {
    let gateway = start_gateway(&[]).await;
    let mut client = ServerReflectionClient::new(channel(&gateway).await);

    let MessageResponse::ListServicesResponse(list) =
        reflect(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in ["kafka_gateway.v1.Producer", "grpc.health.v1.Health"] {
        assert!(services.contains(&name), "{name} missing from {services:?}");
    }

    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &mut client,
        MessageRequest::FileContainingSymbol("kafka_gateway.v1.Producer".into()),
    )
    .await
    else {
        panic!("not a file descriptor");
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(&bytes[..]).unwrap())
        .find(|file| file.package() == "kafka_gateway.v1")
        .expect("the gateway's proto file");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "Producer")
        .unwrap();
    let produce = service
        .method
        .iter()
        .find(|m| m.name() == "Produce")
        .unwrap();
    assert!(
        produce.client_streaming() && produce.server_streaming(),
        "Produce is bidirectional"
    );
    assert_eq!(produce.input_type(), ".kafka_gateway.v1.ProduceRequest");
    assert_eq!(produce.output_type(), ".kafka_gateway.v1.ProduceResponse");
    let record = file
        .message_type
        .iter()
        .find(|m| m.name() == "Record")
        .unwrap();
    let fields: Vec<_> = record.field.iter().map(|f| f.name()).collect();
    assert!(
        fields.contains(&"headers") && fields.contains(&"timestamp_ms"),
        "{fields:?}"
    );
    gateway.stop().await.unwrap();
}
