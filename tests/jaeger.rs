//! One trace, from a client's span to the Kafka write, read back from a
//! real Jaeger: the gateway binary exports to it over OTLP, as a user runs
//! it, and the test's client exports its own spans there too, with the
//! OpenTelemetry SDK.
//!
//! Ignored by `cargo test`: it needs Jaeger (`bash scripts/jaeger.sh start`),
//! whose query API and OTLP endpoint it reads from
//! `KAFKA_GATEWAY_TEST_JAEGER` and `KAFKA_GATEWAY_TEST_JAEGER_OTLP` (`eval
//! "$(bash scripts/jaeger.sh env)"` sets both); CI runs it with `cargo test
//! --test jaeger -- --ignored`. Without them it fails, never skips. With
//! `KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS` the gateway produces to that Kafka
//! (the test creates its topic), else to an embedded broker. With
//! `KAFKA_GATEWAY_TEST_TRACE_OUT` the trace Jaeger returned is saved there
//! (`scripts/trace-svg.py` draws it: docs/trace.svg).
//!
//! The client starts a `checkout` span, a CLIENT span for the `Produce` call
//! (sent as `traceparent` in the call's metadata) and a `create` span whose
//! context one record carries in its own `traceparent` header. It sends
//! three batches (one with that record, one to a pinned partition, one with
//! a record that fails), reads the acks, closes the stream, and stops the
//! gateway with SIGTERM: the gateway exports its spans only when it drains
//! (`OTEL_BSP_SCHEDULE_DELAY` is ten minutes), so finding them proves the
//! drain exports the last batches' spans. Then it reads the trace from
//! Jaeger's HTTP API (`/api/traces/{traceId}`) and checks the spans'
//! parents, names and attributes, and reads the records back from Kafka.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::{serve, sigterm, wait_exit};
use common::*;
use http_body_util::{BodyExt, Empty};
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, ProduceResponse, RecordMetadata};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

/// Jaeger's query API, e.g. `http://127.0.0.1:16686`.
const JAEGER: &str = "KAFKA_GATEWAY_TEST_JAEGER";
/// Jaeger's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
const JAEGER_OTLP: &str = "KAFKA_GATEWAY_TEST_JAEGER_OTLP";
/// Where to save the trace's JSON, when set.
const TRACE_OUT: &str = "KAFKA_GATEWAY_TEST_TRACE_OUT";
/// How long spans may take to show in Jaeger's API.
const JAEGER_WAIT: Duration = Duration::from_secs(30);

fn required(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{name} is not set: start Jaeger with 'bash scripts/jaeger.sh start' and set \
             {JAEGER} and {JAEGER_OTLP} with 'eval \"$(bash scripts/jaeger.sh env)\"'"
        ),
    }
}

/// A name no other run shares, so its traces are its own.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The `traceparent` of `context`.
fn traceparent(context: &Context) -> String {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove("traceparent").expect("a valid context")
}

/// GET `url`: the status and the body.
async fn get(url: &str) -> (u16, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().unwrap())
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err} (is Jaeger running?)"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// One span as Jaeger's API returns it.
#[derive(Debug)]
struct JaegerSpan<'a> {
    service: &'a str,
    name: &'a str,
    id: &'a str,
    /// The span's CHILD_OF reference.
    parent: Option<&'a str>,
    /// Its FOLLOWS_FROM references (the OTLP span's links): (trace, span).
    links: Vec<(&'a str, &'a str)>,
    json: &'a Value,
}

impl<'a> JaegerSpan<'a> {
    fn tag(&self, key: &str) -> Option<&'a Value> {
        tag_in(&self.json["tags"], key)
    }

    fn string(&self, key: &str) -> &'a str {
        self.tag(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{} has no string tag {key}: {:#}", self.name, self.json))
    }

    fn int(&self, key: &str) -> i64 {
        self.tag(key)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("{} has no int tag {key}: {:#}", self.name, self.json))
    }

    /// Its events (Jaeger's logs) named `name`.
    fn logs(&self, name: &str) -> Vec<&'a Value> {
        self.json["logs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|log| tag_in(&log["fields"], "event").and_then(Value::as_str) == Some(name))
            .collect()
    }
}

fn tag_in<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array()?
        .iter()
        .find(|tag| tag["key"] == key)
        .map(|tag| &tag["value"])
}

/// The spans of a trace in Jaeger's `/api/traces/{id}` response.
fn spans_of(trace: &Value) -> Vec<JaegerSpan<'_>> {
    let trace = &trace["data"][0];
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let refs = span["references"].as_array().into_iter().flatten();
            let mut parent = None;
            let mut links = Vec::new();
            for reference in refs {
                let ids = (
                    reference["traceID"].as_str().unwrap(),
                    reference["spanID"].as_str().unwrap(),
                );
                match reference["refType"].as_str() {
                    Some("CHILD_OF") if parent.is_none() => parent = Some(ids.1),
                    _ => links.push(ids),
                }
            }
            let process = span["processID"].as_str().unwrap();
            JaegerSpan {
                service: processes[process]["serviceName"].as_str().unwrap(),
                name: span["operationName"].as_str().unwrap(),
                id: span["spanID"].as_str().unwrap(),
                parent,
                links,
                json: span,
            }
        })
        .collect()
}

/// Polls Jaeger until the trace holds `expected` spans of `service` and
/// `client` spans of the client's, or [`JAEGER_WAIT`] passed.
async fn wait_for_trace(
    jaeger: &str,
    trace_id: &str,
    service: &str,
    expected: usize,
    client: (&str, usize),
) -> (Value, Bytes) {
    let url = format!("{jaeger}/api/traces/{trace_id}");
    let deadline = Instant::now() + JAEGER_WAIT;
    loop {
        let (status, body) = get(&url).await;
        if status == 200 {
            let trace: Value = serde_json::from_slice(&body).expect("Jaeger's JSON");
            let spans = spans_of(&trace);
            let count = |name: &str| spans.iter().filter(|s| s.service == name).count();
            if count(service) >= expected && count(client.0) >= client.1 {
                return (trace, body);
            }
            if Instant::now() >= deadline {
                panic!(
                    "after {JAEGER_WAIT:?} Jaeger's trace {trace_id} holds {} spans of {service} \
                     (expected {expected}) and {} of {} (expected {}): {trace:#}",
                    count(service),
                    count(client.0),
                    client.0,
                    client.1
                );
            }
        } else if Instant::now() >= deadline {
            panic!(
                "after {JAEGER_WAIT:?} Jaeger has no trace {trace_id} (GET {url}: {status} {})",
                String::from_utf8_lossy(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The offsets of the stored records of a response: `TOPIC/PARTITION:FIRST-LAST`.
fn offset_ranges(topic: &str, response: &ProduceResponse) -> Vec<String> {
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
    let mut ranges: Vec<String> = ranges
        .iter()
        .map(|(p, first, last)| format!("{topic}/{p}:{first}-{last}"))
        .collect();
    ranges.sort_unstable();
    ranges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Jaeger: bash scripts/jaeger.sh start; eval \"$(bash scripts/jaeger.sh env)\""]
async fn one_trace_from_the_clients_span_to_the_kafka_write() {
    let jaeger = required(JAEGER);
    let otlp = required(JAEGER_OTLP);
    let (status, body) = get(&format!("{jaeger}/api/services")).await;
    assert_eq!(
        status,
        200,
        "Jaeger's query API at {jaeger} ({JAEGER}) answers: {}",
        String::from_utf8_lossy(&body)
    );
    let gateway_service = unique("kafka-gateway-test");
    let client_service = unique("jaeger-test-client");

    let broker = TestKafka::start();
    let topic = broker.topic("jaeger").await;
    let mut served = serve(
        &[
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--trace-records",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_SERVICE_NAME", &gateway_service),
            // Exported only by the drain at SIGTERM.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );

    // The client's own tracing, to the same Jaeger.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("the client's OTLP exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(client_service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("jaeger-test");
    let checkout = tracer
        .span_builder("checkout")
        .with_kind(SpanKind::Internal)
        .start(&tracer);
    let checkout = Context::new().with_span(checkout);
    let call = tracer
        .span_builder("kafka_gateway.v1.Producer/Produce")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", "kafka_gateway.v1.Producer"),
            KeyValue::new("rpc.method", "Produce"),
        ])
        .start_with_context(&tracer, &checkout);
    let call = checkout.with_span(call);
    let create = tracer
        .span_builder("create")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "create"),
            KeyValue::new("messaging.destination.name", topic.clone()),
        ])
        .start_with_context(&tracer, &checkout);
    let create = checkout.with_span(create);
    let trace_id = checkout.span().span_context().trace_id().to_string();
    let client_span_id = call.span().span_context().span_id().to_string();
    let create_span_id = create.span().span_context().span_id().to_string();
    let record_traceparent = traceparent(&create);
    create.span().end();

    // Three batches: one with a record carrying its own context, one to a
    // pinned partition, one with a record that fails.
    let mut own = record("order-2", "with its own context");
    own.headers = vec![header("traceparent", record_traceparent.as_bytes())];
    let pinned = |key: &str| {
        let mut r = record(key, "pinned");
        r.partition = Some(2);
        r
    };
    let mut bad = record("order-7", "no such partition");
    bad.partition = Some(99);
    let requests: Vec<ProduceRequest> = vec![
        batch(
            1,
            &topic,
            vec![
                record("order-1", "v1"),
                own.clone(),
                record("order-3", "v3"),
            ],
        ),
        batch(2, &topic, vec![pinned("order-4"), pinned("order-5")]),
        batch(3, &topic, vec![record("order-6", "v6"), bad]),
    ];
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for request in requests.clone() {
        tx.send(request).await.unwrap();
    }
    drop(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("traceparent", traceparent(&call).parse().unwrap());
    let mut inbound = client.produce(request).await.unwrap().into_inner();
    let mut responses = Vec::new();
    while let Some(response) = inbound.message().await.expect("the stream ends OK") {
        responses.push(response);
    }
    assert_eq!(responses.len(), 3, "{responses:#?}");
    for (request, response) in requests.iter().zip(&responses) {
        assert_eq!(response.batch_id, request.batch_id);
        assert_eq!(response.results.len(), request.records.len());
    }
    assert_error(
        &responses[2].results[1],
        ErrorCode::UnknownPartition,
        "partition",
    );
    call.span().end();
    checkout.span().end();

    // The drain exports the gateway's spans; the client's follow.
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success(), "the gateway drains");
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("the client's spans are exported");

    let (trace, body) = wait_for_trace(
        &jaeger,
        &trace_id,
        &gateway_service,
        4,
        (&client_service, 3),
    )
    .await;
    if let Ok(path) = std::env::var(TRACE_OUT)
        && !path.is_empty()
    {
        std::fs::write(&path, &body).unwrap_or_else(|err| panic!("{TRACE_OUT}={path}: {err}"));
        eprintln!("saved trace {trace_id} to {path}");
    }
    let spans = spans_of(&trace);
    eprintln!("Jaeger's trace {trace_id}:");
    for span in &spans {
        eprintln!(
            "  {} {:<36} {} parent={:?} links={:?}",
            span.service, span.name, span.id, span.parent, span.links
        );
    }
    let one = |service: &str, name: &str| -> &JaegerSpan<'_> {
        let found: Vec<&JaegerSpan<'_>> = spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one {name} span of {service}: {found:#?}");
        found[0]
    };

    // The client's spans.
    let client_call = one(&client_service, "kafka_gateway.v1.Producer/Produce");
    assert_eq!(client_call.id, client_span_id);
    assert_eq!(client_call.string("span.kind"), "client");
    let root = one(&client_service, "checkout");
    assert_eq!(client_call.parent, Some(root.id));
    assert_eq!(one(&client_service, "create").id, create_span_id);

    // The gateway's SERVER span, under the client's call.
    let server = one(&gateway_service, "kafka_gateway.v1.Producer/Produce");
    assert_eq!(
        server.parent,
        Some(client_call.id),
        "under the client's span"
    );
    assert_eq!(server.string("span.kind"), "server");
    assert_eq!(server.string("rpc.system"), "grpc");
    assert_eq!(server.string("rpc.service"), "kafka_gateway.v1.Producer");
    assert_eq!(server.string("rpc.method"), "Produce");
    assert_eq!(server.int("rpc.grpc.status_code"), 0);
    assert!(server.tag("error").is_none(), "{:#}", server.json);

    // The batch spans, under it.
    let batches: Vec<&JaegerSpan<'_>> = spans
        .iter()
        .filter(|s| s.service == gateway_service && s.name == "send")
        .collect();
    assert_eq!(batches.len(), 3, "one send span per batch: {batches:#?}");
    let by_id: HashMap<i64, &JaegerSpan<'_>> = batches
        .iter()
        .map(|span| (span.int("kafka_gateway.batch_id"), *span))
        .collect();
    for (request, response) in requests.iter().zip(&responses) {
        let span = by_id[&(request.batch_id as i64)];
        let errors = response
            .results
            .iter()
            .filter(|r| {
                matches!(
                    r.result,
                    Some(kafka_gateway::proto::record_result::Result::Error(_))
                )
            })
            .count() as i64;
        assert_eq!(
            span.parent,
            Some(server.id),
            "batch {} under the call",
            request.batch_id
        );
        assert_eq!(span.string("span.kind"), "producer");
        assert_eq!(span.string("messaging.system"), "kafka");
        assert_eq!(span.string("messaging.operation.type"), "send");
        assert_eq!(span.string("messaging.operation.name"), "send");
        assert_eq!(span.string("messaging.destination.name"), topic);
        assert_eq!(
            span.int("messaging.batch.message_count"),
            request.records.len() as i64
        );
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
        assert_eq!(span.int("kafka_gateway.batch.bytes"), bytes as i64);
        assert_eq!(span.int("kafka_gateway.batch.error_count"), errors);
        let mut listed: Vec<&str> = span
            .string("kafka_gateway.batch.offsets")
            .split(", ")
            .collect();
        listed.sort_unstable();
        assert_eq!(
            listed,
            offset_ranges(&topic, response),
            "batch {}",
            request.batch_id
        );
        // --trace-records: each stored record is an event with its offset.
        let stored: Vec<(i64, i64)> = span
            .logs("record stored")
            .iter()
            .map(|log| {
                let partition: i64 = tag_in(&log["fields"], "messaging.destination.partition.id")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse().ok())
                    .expect("a partition");
                let offset = tag_in(&log["fields"], "messaging.kafka.offset")
                    .and_then(Value::as_i64)
                    .expect("an offset");
                (partition, offset)
            })
            .collect();
        let acked: Vec<(i64, i64)> = response
            .results
            .iter()
            .filter_map(|r| match &r.result {
                Some(kafka_gateway::proto::record_result::Result::Ok(meta)) => {
                    Some((i64::from(meta.partition), meta.offset))
                }
                _ => None,
            })
            .collect();
        let mut stored = stored;
        stored.sort_unstable();
        let mut acked = acked;
        acked.sort_unstable();
        assert_eq!(stored, acked, "batch {}'s record events", request.batch_id);
        if errors == 0 {
            assert!(span.tag("error").is_none(), "{:#}", span.json);
            assert!(span.tag("error.type").is_none(), "{:#}", span.json);
        } else {
            assert_eq!(
                span.tag("error"),
                Some(&Value::Bool(true)),
                "{:#}",
                span.json
            );
            assert_eq!(span.string("otel.status_code"), "ERROR");
            assert_eq!(span.string("error.type"), "unknown_partition");
            let failed = span.logs("record failed");
            assert_eq!(failed.len(), 1, "{:#}", span.json);
            assert_eq!(
                tag_in(&failed[0]["fields"], "error.type"),
                Some(&Value::from("unknown_partition"))
            );
            assert_eq!(
                tag_in(&failed[0]["fields"], "kafka_gateway.record.index"),
                Some(&Value::from(1))
            );
        }
    }
    assert_eq!(by_id[&2].string("messaging.destination.partition.id"), "2");
    // The record's own context: linked from its batch's span.
    assert_eq!(
        by_id[&1].links,
        vec![(trace_id.as_str(), create_span_id.as_str())],
        "batch 1 links to the context its record carried"
    );
    assert!(by_id[&2].links.is_empty() && by_id[&3].links.is_empty());

    // "Which trace wrote TOPIC/PARTITION@OFFSET?": one tag search.
    let own_ack = ok(&responses[0].results[1]);
    let position = format!("{topic}/{}@{}", own_ack.partition, own_ack.offset);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let search = format!(
        "{jaeger}/api/traces?service={gateway_service}&tag=kafka_gateway.record.position:{}\
         &start={}&end={}&limit=20",
        position.replace('/', "%2F").replace('@', "%40"),
        now - 3_600_000_000,
        now + 60_000_000
    );
    let (status, body) = get(&search).await;
    assert_eq!(status, 200, "{search}: {}", String::from_utf8_lossy(&body));
    let found: Value = serde_json::from_slice(&body).unwrap();
    let found: Vec<&str> = found["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|trace| trace["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        vec![trace_id.as_str()],
        "the trace that wrote {position}"
    );

    // Kafka holds the record's own traceparent, alone, and every other
    // record its batch span's.
    let consumed = consume(broker.bootstrap_servers(), &topic, 6).await;
    assert_eq!(consumed.len(), 6, "{consumed:#?}");
    let stored_at = |meta: &RecordMetadata| at(&consumed, meta);
    for (request, response) in requests.iter().zip(&responses) {
        let span = by_id[&(request.batch_id as i64)];
        for (sent, result) in request.records.iter().zip(&response.results) {
            let Some(kafka_gateway::proto::record_result::Result::Ok(meta)) = &result.result else {
                continue;
            };
            let stored = stored_at(meta);
            assert_eq!(stored.value.as_deref(), sent.value.as_deref());
            let traceparents: Vec<&[u8]> = stored
                .headers
                .iter()
                .filter(|(k, _)| k == "traceparent")
                .map(|(_, v)| v.as_slice())
                .collect();
            let expected = if sent.headers.is_empty() {
                format!("00-{trace_id}-{}-01", span.id)
            } else {
                record_traceparent.clone()
            };
            assert_eq!(
                traceparents,
                vec![expected.as_bytes()],
                "batch {} record {:?}",
                request.batch_id,
                sent.key
            );
        }
    }
}
