//! Tracing for real: the binary exports its spans over OTLP/gRPC to a trace
//! receiver in this test, configured only by OpenTelemetry's environment
//! variables. Each call is a SERVER span under the caller's context, refused
//! or not; each batch a PRODUCER span `send` under it, linked to the
//! contexts its records carry of their own; each stored record carries a
//! `traceparent` pointing at its batch's span; a parked record carries its
//! dead-letter write's. (tests/jaeger.rs checks the same against Jaeger.)

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::binary::{serve, sigterm, wait_exit};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

/// Spans received, each with its resource's attributes.
type Received = Vec<(Vec<KeyValue>, Span)>;

/// An OTLP/gRPC trace receiver that keeps every span.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Received>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.unwrap_or_default().attributes;
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((resource.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (receiver, endpoint)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string<'a>(attributes: &'a [KeyValue], key: &str) -> &'a str {
    match attribute(attributes, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key} is not a string attribute: {other:?}"),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> i64 {
    match attribute(attributes, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key} is not an int attribute: {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of `kind`.
fn of_kind(spans: &Received, kind: span::SpanKind) -> Vec<&Span> {
    spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.kind == kind as i32)
        .collect()
}

/// The one span named `name`.
fn named<'a>(spans: &'a Received, name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one span {name}: {spans:#?}");
    found[0]
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Sends `requests` on one stream whose metadata carries `context`.
async fn traced_stream(
    grpc: &str,
    context: &[(&'static str, &'static str)],
    requests: Vec<ProduceRequest>,
) -> Vec<kafka_gateway::proto::ProduceResponse> {
    let mut client = ProducerClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for request in requests {
        tx.send(request).await.unwrap();
    }
    drop(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    for (key, value) in context {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    let mut inbound = client.produce(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(response) = inbound.message().await.unwrap() {
        out.push(response);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_server_span_with_its_batches_under_it() {
    let (receiver, endpoint) = start_receiver().await;
    // The broker outlives the gateway, so what it stored can be read after.
    let broker = TestKafka::start();
    let topic = broker.topic("traced").await;
    let mut served = serve(
        &["--bootstrap-servers", broker.bootstrap_servers()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "gateway-under-test"),
            // Spans reach the receiver only by the flush at shutdown.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    assert!(
        served.startup.iter().any(|l| l.contains("tracing=otlp")),
        "{:#?}",
        served.startup
    );

    let mut first = record("k1", "v1");
    first.headers = vec![header("client", b"1"), header("client", b"2")];
    let pinned = |value: &str| {
        let mut r = record("pinned", value);
        r.partition = Some(2);
        r
    };
    // A record with a context of its own keeps it, and only it.
    let mut own = record("k2", "v2");
    own.headers = vec![header(
        "traceparent",
        b"00-11111111111111111111111111111111-2222222222222222-01",
    )];
    let mut bad = record("k", "bad");
    bad.partition = Some(99);
    let requests = vec![
        batch(
            10,
            &topic,
            vec![first.clone(), own.clone(), record("k3", "v3")],
        ),
        batch(11, &topic, vec![pinned("p1"), pinned("p2")]),
        batch(12, &topic, vec![record("k4", "v4"), bad]),
    ];
    let context = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("baggage", "tenant=acme"),
    ];
    let responses = traced_stream(&served.grpc, &context, requests.clone()).await;
    assert_eq!(responses.len(), 3);
    assert_error(
        &responses[2].results[1],
        ErrorCode::UnknownPartition,
        "partition",
    );
    // A caller without a context starts a trace of its own.
    let untraced = traced_stream(
        &served.grpc,
        &[],
        vec![batch(20, &topic, vec![record("u", "u")])],
    )
    .await;
    assert_eq!(untraced.len(), 1);

    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());

    let spans: Received = receiver.spans.lock().unwrap().clone();
    assert_eq!(
        spans.len(),
        6,
        "one span per call and one per batch: {spans:#?}"
    );
    for (resource, _) in &spans {
        assert_eq!(string(resource, "service.name"), "gateway-under-test");
    }
    let calls = of_kind(&spans, span::SpanKind::Server);
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let (call, root_call) = match hex(&calls[0].trace_id) == TRACE_ID {
        true => (calls[0], calls[1]),
        false => (calls[1], calls[0]),
    };
    assert_eq!(call.name, "kafka_gateway.v1.Producer/Produce");
    assert_eq!(
        hex(&call.trace_id),
        TRACE_ID,
        "the call is in the caller's trace"
    );
    assert_eq!(
        hex(&call.parent_span_id),
        CLIENT_SPAN,
        "under the caller's span"
    );
    assert_eq!(string(&call.attributes, "rpc.system"), "grpc");
    assert_eq!(
        string(&call.attributes, "rpc.service"),
        "kafka_gateway.v1.Producer"
    );
    assert_eq!(string(&call.attributes, "rpc.method"), "Produce");
    assert_eq!(int(&call.attributes, "rpc.grpc.status_code"), 0);
    assert_eq!(
        string(&call.attributes, "network.peer.address"),
        "127.0.0.1"
    );
    let by_batch: HashMap<i64, &Span> = of_kind(&spans, span::SpanKind::Producer)
        .into_iter()
        .map(|span| (int(&span.attributes, "kafka_gateway.batch_id"), span))
        .collect();
    assert_eq!(by_batch.len(), 4, "{spans:#?}");
    for (batch_id, records, errors) in [(10, 3, 0), (11, 2, 0), (12, 2, 1)] {
        let span = by_batch[&batch_id];
        assert_eq!(
            hex(&span.trace_id),
            TRACE_ID,
            "batch {batch_id} is in the caller's trace"
        );
        assert_eq!(
            span.parent_span_id, call.span_id,
            "the call's span is its parent"
        );
        assert!(span.start_time_unix_nano >= call.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= call.end_time_unix_nano);
        assert_eq!(span.name, "send", "the topic is not in the name");
        let attributes = &span.attributes;
        assert_eq!(string(attributes, "messaging.system"), "kafka");
        assert_eq!(string(attributes, "messaging.operation.type"), "send");
        assert_eq!(string(attributes, "messaging.operation.name"), "send");
        assert_eq!(string(attributes, "messaging.destination.name"), topic);
        assert_eq!(int(attributes, "messaging.batch.message_count"), records);
        assert_eq!(int(attributes, "kafka_gateway.batch.error_count"), errors);
        let request = &requests[(batch_id - 10) as usize];
        let bytes: usize = request
            .records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len())
                    + r.value.as_ref().map_or(0, |v| v.len())
                    + r.headers
                        .iter()
                        .map(|h| h.key.len() + h.value.len())
                        .sum::<usize>()
            })
            .sum();
        assert_eq!(int(attributes, "kafka_gateway.batch.bytes"), bytes as i64);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        // Where the stored records are: each partition's first and last
        // offset, from the acks.
        let response = &responses[(batch_id - 10) as usize];
        let mut ranges: Vec<(i32, i64, i64)> = Vec::new();
        for result in &response.results {
            if let Some(kafka_gateway::proto::record_result::Result::Ok(meta)) = &result.result {
                match ranges.iter_mut().find(|(p, _, _)| *p == meta.partition) {
                    Some((_, first, last)) => {
                        *first = (*first).min(meta.offset);
                        *last = (*last).max(meta.offset);
                    }
                    None => ranges.push((meta.partition, meta.offset, meta.offset)),
                }
            }
        }
        let mut listed: Vec<&str> = string(attributes, "kafka_gateway.batch.offsets")
            .split(", ")
            .collect();
        listed.sort_unstable();
        let mut expected: Vec<String> = ranges
            .iter()
            .map(|(p, first, last)| format!("{topic}/{p}:{first}-{last}"))
            .collect();
        expected.sort_unstable();
        assert_eq!(listed, expected, "batch {batch_id}'s offsets");
        let status = span.status.clone().unwrap_or_default();
        if errors == 0 {
            assert_ne!(
                status.code,
                status::StatusCode::Error as i32,
                "batch {batch_id}"
            );
            assert!(attribute(attributes, "error.type").is_none());
        } else {
            assert_eq!(status.code, status::StatusCode::Error as i32);
            assert_eq!(status.message, "1 of 2 records failed");
            assert_eq!(string(attributes, "error.type"), "unknown_partition");
            let event = &span.events[0];
            assert_eq!(event.name, "record failed");
            assert_eq!(int(&event.attributes, "kafka_gateway.record.index"), 1);
            assert_eq!(
                string(&event.attributes, "error.type"),
                "unknown_partition",
                "one error.type vocabulary: the metrics' label"
            );
        }
    }
    // The record with a context of its own: its batch's span links to it.
    let links = &by_batch[&10].links;
    assert_eq!(links.len(), 1, "{links:#?}");
    assert_eq!(hex(&links[0].trace_id), "11111111111111111111111111111111");
    assert_eq!(hex(&links[0].span_id), "2222222222222222");
    assert_eq!(int(&links[0].attributes, "kafka_gateway.record.index"), 1);
    assert!(by_batch[&11].links.is_empty());
    assert_eq!(
        string(
            &by_batch[&11].attributes,
            "messaging.destination.partition.id"
        ),
        "2",
        "a batch that hit one partition names it"
    );
    let root = by_batch[&20];
    assert_ne!(hex(&root.trace_id), TRACE_ID);
    assert!(
        root_call.parent_span_id.is_empty(),
        "no caller context: the call's span is a root"
    );
    assert_eq!(root.parent_span_id, root_call.span_id);

    // Every stored record carries its batch span's context after the
    // client's own headers.
    let consumed = consume(broker.bootstrap_servers(), &topic, 7).await;
    assert_eq!(consumed.len(), 7);
    let mut kept_own_context = 0;
    for (request, response) in requests.iter().zip(&responses) {
        let span = by_batch[&(request.batch_id as i64)];
        let traceparent = format!("00-{TRACE_ID}-{}-01", hex(&span.span_id));
        for (sent, result) in request.records.iter().zip(&response.results) {
            let Some(kafka_gateway::proto::record_result::Result::Ok(meta)) = &result.result else {
                continue;
            };
            let stored = at(&consumed, meta);
            let mut expected: Vec<(String, Vec<u8>)> = sent
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.to_vec()))
                .collect();
            if sent.headers.iter().any(|h| h.key == "traceparent") {
                assert_eq!(
                    stored.headers, expected,
                    "the record's own context stays alone"
                );
                kept_own_context += 1;
                continue;
            }
            expected.extend([
                ("traceparent".to_owned(), traceparent.clone().into_bytes()),
                ("tracestate".to_owned(), b"congo=t61rcWkgMzE".to_vec()),
                ("baggage".to_owned(), b"tenant=acme".to_vec()),
            ]);
            assert_eq!(stored.headers, expected, "batch {}", request.batch_id);
            assert_eq!(stored.value.as_deref(), sent.value.as_deref());
        }
    }
    assert_eq!(
        kept_own_context, 1,
        "the record with its own context was checked"
    );
    let root_record = at(&consumed, ok(&untraced[0].results[0]));
    assert_eq!(root_record.headers.len(), 1);
    assert_eq!(
        root_record.headers[0],
        (
            "traceparent".to_owned(),
            format!("00-{}-{}-01", hex(&root.trace_id), hex(&root.span_id)).into_bytes()
        )
    );
}

/// The receiver over TLS, with a certificate for `localhost`.
async fn start_tls_receiver(server: &common::pki::Leaf) -> (Receiver, String) {
    use tonic::transport::{Identity, ServerTlsConfig};
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&server.cert_pem, &server.key_pem));
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (receiver, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_to_an_https_collector_and_name_the_caller() {
    let dir = common::pki::TempDir::new();
    let ca = common::pki::Ca::new("collector CA");
    let ca_file = dir.write("collector-ca.pem", ca.cert_pem());
    let keys = dir.write(
        "api-keys",
        common::pki::api_key_line("checkout", "checkout-key-01-0123456789"),
    );
    let (receiver, endpoint) = start_tls_receiver(&ca.server()).await;
    let broker = TestKafka::start();
    let topic = broker.topic("traced-tls").await;
    let mut served = serve(
        &[
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--api-keys",
            keys.to_str().unwrap(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.to_str().unwrap()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(tokio_stream::iter(vec![batch(
        7,
        &topic,
        vec![record("k", "v")],
    )]));
    request.metadata_mut().insert(
        "authorization",
        "Bearer checkout-key-01-0123456789".parse().unwrap(),
    );
    let mut inbound = client.produce(request).await.unwrap().into_inner();
    ok(&inbound.message().await.unwrap().unwrap().results[0]);
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());

    let spans: Received = receiver.spans.lock().unwrap().clone();
    assert_eq!(
        spans.len(),
        3,
        "the call's, its authentication's and its batch's spans crossed TLS: {spans:#?}"
    );
    let call = named(&spans, "kafka_gateway.v1.Producer/Produce");
    let auth = named(&spans, "authenticate");
    let batch = named(&spans, "send");
    assert_eq!(int(&batch.attributes, "kafka_gateway.batch_id"), 7);
    assert_eq!(string(&batch.attributes, "enduser.id"), "checkout");
    assert_eq!(string(&call.attributes, "enduser.id"), "checkout");
    assert_eq!(string(&auth.attributes, "enduser.id"), "checkout");
    assert_eq!(auth.parent_span_id, call.span_id);
    assert_eq!(batch.parent_span_id, call.span_id);
    assert!(auth.end_time_unix_nano <= batch.start_time_unix_nano);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_leave_a_server_span_with_their_status() {
    let (receiver, endpoint) = start_receiver().await;
    let dir = common::pki::TempDir::new();
    let keys = dir.write(
        "api-keys",
        common::pki::api_key_line("checkout", "checkout-key-01-0123456789abcdef"),
    );
    let mut served = serve(
        &["--api-keys", keys.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(batch(1, "t", vec![record("k", "v")]));
    request.metadata_mut().insert(
        "authorization",
        // Long enough to be looked up (shorter keys are refused as such).
        "Bearer wrong-key-of-enough-length-0123456789"
            .parse()
            .unwrap(),
    );
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let status = client.produce_batch(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());

    let spans: Received = receiver.spans.lock().unwrap().clone();
    assert_eq!(
        spans.len(),
        2,
        "the call's and its authentication's: {spans:#?}"
    );
    let call = named(&spans, "kafka_gateway.v1.Producer/ProduceBatch");
    assert_eq!(hex(&call.parent_span_id), CLIENT_SPAN);
    assert_eq!(call.kind, span::SpanKind::Server as i32);
    assert_eq!(string(&call.attributes, "rpc.method"), "ProduceBatch");
    assert_eq!(
        int(&call.attributes, "rpc.grpc.status_code"),
        tonic::Code::Unauthenticated as i64
    );
    assert_eq!(string(&call.attributes, "error.type"), "unauthenticated");
    assert!(
        string(&call.attributes, "kafka_gateway.grpc.message").contains("API key"),
        "{call:#?}"
    );
    // A refusal is the client's failure, not the server's: no ERROR status,
    // as the RPC conventions have it for a server span.
    assert_ne!(
        call.status.clone().unwrap_or_default().code,
        status::StatusCode::Error as i32
    );
    let auth = named(&spans, "authenticate");
    assert_eq!(auth.parent_span_id, call.span_id);
    assert_eq!(string(&auth.attributes, "error.type"), "unauthenticated");
    assert_eq!(
        string(&auth.attributes, "kafka_gateway.auth.failure"),
        "unknown_api_key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_record_carries_its_dead_letter_writes_context() {
    let (receiver, endpoint) = start_receiver().await;
    let broker = TestKafka::start();
    let topic = broker.topic("traced-dlq").await;
    let dlq = broker.topic("traced-dlq-parked").await;
    let mut served = serve(
        &[
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--dead-letter-topic",
            &dlq,
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let mut bad = record("k", "bad");
    bad.partition = Some(99);
    // Its own context: kept in the cause headers, not on the copy.
    bad.headers = vec![header(
        "traceparent",
        b"00-11111111111111111111111111111111-2222222222222222-01",
    )];
    let context = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let responses = traced_stream(
        &served.grpc,
        &context,
        vec![batch(1, &topic, vec![record("k", "ok"), bad])],
    )
    .await;
    let failed = err(&responses[0].results[1]);
    let parked = failed.dead_letter.clone().expect("parked");
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());

    let spans: Received = receiver.spans.lock().unwrap().clone();
    let sends = of_kind(&spans, span::SpanKind::Producer);
    assert_eq!(sends.len(), 2, "the batch's and the parking's: {spans:#?}");
    let (batch_span, parking) =
        match string(&sends[0].attributes, "messaging.destination.name") == topic {
            true => (sends[0], sends[1]),
            false => (sends[1], sends[0]),
        };
    assert_eq!(parking.name, "send");
    assert_eq!(parking.parent_span_id, batch_span.span_id);
    assert_eq!(hex(&parking.trace_id), TRACE_ID);
    assert_eq!(
        string(&parking.attributes, "messaging.destination.name"),
        dlq
    );
    assert_eq!(
        string(&parking.attributes, "kafka_gateway.dead_letter.cause"),
        "unknown_partition"
    );
    assert_eq!(
        int(&parking.attributes, "messaging.kafka.offset"),
        parked.offset
    );
    assert_eq!(
        int(
            &batch_span.attributes,
            "kafka_gateway.batch.dead_letter_count"
        ),
        1
    );

    let stored = consume(broker.bootstrap_servers(), &dlq, 1).await;
    assert_eq!(stored.len(), 1);
    let headers = &stored[0].headers;
    let get = |key: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    assert_eq!(
        get("traceparent"),
        vec![format!("00-{TRACE_ID}-{}-01", hex(&parking.span_id)).as_bytes()],
        "one traceparent: the dead-letter write's, so a consumer continues the trace"
    );
    assert_eq!(
        get("kafka_gateway.dead_letter.traceparent"),
        vec![&b"00-11111111111111111111111111111111-2222222222222222-01"[..]],
        "the record's own context is kept in the cause headers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_a_span_with_its_batches_under_it() {
    let (receiver, endpoint) = start_receiver().await;
    // Transactions need the embedded broker (tansu has none).
    let broker = TestKafka::Embedded(Arc::new(
        kafka_gateway::EmbeddedBroker::start(1, PARTITIONS).unwrap(),
    ));
    let topic = broker.topic("traced-txn").await;
    let mut served = serve(
        &["--bootstrap-servers", broker.bootstrap_servers()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let txn = |batch_id, commit, records| ProduceRequest {
        transactional_id: if batch_id == 1 {
            "traced-tx".into()
        } else {
            String::new()
        },
        commit,
        ..batch(batch_id, &topic, records)
    };
    let mut bad = record("k", "bad");
    bad.topic = "not valid!".into();
    let requests = vec![
        txn(1, false, vec![record("a", "1")]),
        txn(2, true, vec![record("b", "2")]),
        txn(3, true, vec![record("c", "3"), bad]),
    ];
    let context = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let responses = traced_stream(&served.grpc, &context, requests).await;
    assert_eq!(responses.len(), 3);
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());

    let spans: Received = receiver.spans.lock().unwrap().clone();
    let transactions: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == "transaction")
        .collect();
    assert_eq!(
        transactions.len(),
        2,
        "one span per transaction: {spans:#?}"
    );
    let mut transactions = transactions;
    transactions.sort_by_key(|span| span.start_time_unix_nano);
    let outcomes: Vec<&str> = transactions
        .iter()
        .map(|span| string(&span.attributes, "kafka_gateway.transaction.outcome"))
        .collect();
    assert_eq!(outcomes, ["committed", "aborted"], "{responses:#?}");
    let call = named(&spans, "kafka_gateway.v1.Producer/Produce");
    assert_eq!(hex(&call.parent_span_id), CLIENT_SPAN);
    for (span, outcome, batches) in [
        (transactions[0], "committed", 2),
        (transactions[1], "aborted", 1),
    ] {
        assert_eq!(span.parent_span_id, call.span_id, "under the call's span");
        assert_eq!(
            string(&span.attributes, "kafka_gateway.transaction.outcome"),
            outcome
        );
        assert_eq!(
            string(&span.attributes, "kafka_gateway.transactional_id"),
            "traced-tx"
        );
        assert_eq!(
            int(&span.attributes, "kafka_gateway.transaction.batch_count"),
            batches
        );
    }
    let aborted = transactions[1].status.clone().unwrap_or_default();
    assert_eq!(aborted.code, status::StatusCode::Error as i32);
    assert_eq!(string(&transactions[1].attributes, "error.type"), "aborted");
    assert!(
        aborted
            .message
            .contains("records[1] of the request with batch_id 3 failed"),
        "{aborted:?}"
    );
    for (batch_id, parent) in [
        (1, transactions[0]),
        (2, transactions[0]),
        (3, transactions[1]),
    ] {
        let batch = spans
            .iter()
            .map(|(_, span)| span)
            .find(|span| {
                span.name == "send" && int(&span.attributes, "kafka_gateway.batch_id") == batch_id
            })
            .unwrap_or_else(|| panic!("batch {batch_id}'s span"));
        assert_eq!(
            batch.parent_span_id, parent.span_id,
            "batch {batch_id} is under its transaction"
        );
    }
}
