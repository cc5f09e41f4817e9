//! OpenTelemetry tracing: one PRODUCER span per batch, under the caller's
//! trace, exported over OTLP/gRPC.
//!
//! The caller's context (W3C `traceparent`, `tracestate` and `baggage`) is
//! read once per stream from the gRPC request metadata. Each batch gets a
//! span named `send {topic}` that starts when the batch enters the window and
//! ends when its last record's result is known, so its duration is the
//! batch's ack latency. Every record the batch sends carries the span's
//! context as W3C headers, after the client's own, so a consumer can continue
//! the trace.
//!
//! Configuration is OpenTelemetry's standard environment variables; see
//! [`Tracing::from_env`]. With no exporter configured nothing is recorded:
//! records only pass the caller's own context on, when it sent one.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

use crate::error::Error;
use crate::proto::{ErrorCode, RecordResult, record_result};

/// The record header a batch span's context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// Most per-record failure events one batch span holds; the error count
/// attribute still counts them all.
const MAX_ERROR_EVENTS: u32 = 32;

/// The process's tracing pipeline, or none.
pub struct Tracing {
    /// `None` when no exporter is configured: no span is ever built.
    pipeline: Option<(SdkTracerProvider, SdkTracer)>,
    propagator: TextMapCompositePropagator,
}

impl Tracing {
    /// No exporter: spans are not recorded, but records still carry the
    /// caller's trace context when it sent one.
    pub fn disabled() -> Self {
        Self {
            pipeline: None,
            propagator: propagator(),
        }
    }

    /// Tracing as OpenTelemetry's environment variables configure it.
    ///
    /// Spans are exported when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, or `OTEL_TRACES_EXPORTER=otlp`
    /// (then to `http://localhost:4317`); never when `OTEL_SDK_DISABLED=true`
    /// or `OTEL_TRACES_EXPORTER=none`. The exporter speaks OTLP/gRPC and
    /// reads the other `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
    /// compression); the sampler reads `OTEL_TRACES_SAMPLER` and
    /// `OTEL_TRACES_SAMPLER_ARG`; the service name is `OTEL_SERVICE_NAME`,
    /// else `kafka-gateway`, with `OTEL_RESOURCE_ATTRIBUTES` added.
    ///
    /// Must be called inside a Tokio runtime: the exporter's gRPC channel
    /// lives on it.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        if !exporter_configured(&var)? {
            return Ok(Self::disabled());
        }
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(tls) = exporter_tls(&var)? {
            builder = builder.with_tls_config(tls);
        }
        let exporter = builder
            .build()
            .map_err(|err| Error::Config(format!("OTLP trace exporter: {err}")))?;
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .with_max_events_per_span(MAX_ERROR_EVENTS)
            .build();
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        Ok(Self {
            pipeline: Some((provider, tracer)),
            propagator: propagator(),
        })
    }

    /// Whether spans are recorded and exported.
    pub fn is_enabled(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The caller's context from a request's metadata.
    pub fn extract(&self, metadata: &tonic::metadata::MetadataMap) -> Context {
        self.propagator.extract(&MetadataExtractor(metadata))
    }

    /// Starts the span of a batch of `records` records whose topics are
    /// `topic` (or several, when `None`), sent by `principal` when known.
    pub fn start_batch(
        &self,
        parent: &Context,
        topic: Option<&str>,
        batch_id: u64,
        records: usize,
        principal: Option<&str>,
    ) -> BatchTrace {
        let span = self.pipeline.as_ref().map(|(_, tracer)| {
            let name = match topic {
                Some(topic) => Cow::Owned(format!("send {topic}")),
                None => Cow::Borrowed("send"),
            };
            let mut attributes = vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.batch.message_count", records as i64),
                KeyValue::new("kafka_gateway.batch_id", batch_id as i64),
            ];
            if let Some(topic) = topic {
                attributes.push(KeyValue::new(
                    "messaging.destination.name",
                    topic.to_owned(),
                ));
            }
            if let Some(principal) = principal {
                attributes.push(KeyValue::new("enduser.id", principal.to_owned()));
            }
            tracer
                .span_builder(name)
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes)
                .start_with_context(tracer, parent)
        });
        // What the records carry: the batch span's context, or the caller's
        // when no span is recorded.
        let carried = match &span {
            Some(span) => parent.with_remote_span_context(span.span_context().clone()),
            None => parent.clone(),
        };
        let mut headers = RecordHeaders::default();
        self.propagator.inject_context(&carried, &mut headers);
        BatchTrace {
            span,
            headers: (!headers.0.is_empty()).then(|| Arc::new(headers.0)),
            errors: 0,
            dead_lettered: 0,
            partition: Partition::None,
        }
    }

    /// Starts the span of one transaction of a transactional stream, under
    /// the caller's context: its batches' spans go under it.
    pub fn start_transaction(
        &self,
        parent: &Context,
        transactional_id: &str,
        principal: Option<&str>,
    ) -> TxnTrace {
        let span = self.pipeline.as_ref().map(|(_, tracer)| {
            let mut attributes = vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new(
                    "kafka_gateway.transactional_id",
                    transactional_id.to_owned(),
                ),
            ];
            if let Some(principal) = principal {
                attributes.push(KeyValue::new("enduser.id", principal.to_owned()));
            }
            tracer
                .span_builder(format!("transaction {transactional_id}"))
                .with_kind(SpanKind::Internal)
                .with_attributes(attributes)
                .start_with_context(tracer, parent)
        });
        let context = match &span {
            Some(span) => parent.with_remote_span_context(span.span_context().clone()),
            None => parent.clone(),
        };
        TxnTrace { span, context }
    }

    /// Exports the spans still buffered and stops the exporter, for at most
    /// `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let Some((provider, _)) = &self.pipeline else {
            return;
        };
        let provider = provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await {
            Ok(Ok(())) => tracing::debug!("spans exported"),
            Ok(Err(err)) => tracing::warn!(%err, "spans not exported before exit"),
            Err(err) => tracing::warn!(%err, "span exporter shutdown panicked"),
        }
    }
}

/// Whether OpenTelemetry's variables ask for an OTLP trace exporter.
fn exporter_configured(var: &impl Fn(&str) -> Option<String>) -> Result<bool, Error> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = var(name)
            && protocol.trim() != "grpc"
        {
            return Err(Error::Config(format!(
                "{name}={protocol}: only OTLP over gRPC is supported; set it to grpc and point \
                 OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port (usually 4317)"
            )));
        }
    }
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        Some("none") => Ok(false),
        Some("otlp") => Ok(true),
        Some(other) => Err(Error::Config(format!(
            "OTEL_TRACES_EXPORTER={other}: only otlp (OTLP over gRPC) and none are supported"
        ))),
        None => Ok(var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()),
    }
}

/// TLS for an `https://` collector endpoint: the system's CAs, or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (PEM); a client certificate from
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `..._CLIENT_KEY` for mutual
/// TLS. Each also as `OTEL_EXPORTER_OTLP_TRACES_*`, which wins. `None` for a
/// plain `http://` endpoint.
fn exporter_tls(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, Error> {
    let setting = |name: &str| {
        var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .map(|v| (format!("OTEL_EXPORTER_OTLP_TRACES_{name}"), v))
            .or_else(|| {
                var(&format!("OTEL_EXPORTER_OTLP_{name}"))
                    .map(|v| (format!("OTEL_EXPORTER_OTLP_{name}"), v))
            })
    };
    let https =
        setting("ENDPOINT").is_some_and(|(_, endpoint)| endpoint.trim().starts_with("https://"));
    let read = |(name, path): (String, String)| {
        std::fs::read(path.trim())
            .map_err(|err| Error::Config(format!("{name}={path}: cannot read it: {err}")))
    };
    let ca = setting("CERTIFICATE");
    let client = (setting("CLIENT_CERTIFICATE"), setting("CLIENT_KEY"));
    if !https {
        if ca.is_some() || client.0.is_some() || client.1.is_some() {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_*CERTIFICATE/KEY are set but the endpoint is not https://: \
                 spans go out in plain text and the certificates are not used"
            );
        }
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match ca {
        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?)),
        None => tls.with_native_roots(),
    };
    match client {
        (Some(cert), Some(key)) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go \
                 together: set both for mutual TLS, or neither"
                    .into(),
            ));
        }
    }
    Ok(Some(tls))
}

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Headers carrying a trace context, shared by every record of a batch.
pub type TraceHeaders = Arc<Vec<(String, Bytes)>>;

/// The trace of one batch: its span, if recorded, and the headers its records
/// carry.
pub struct BatchTrace {
    span: Option<Span>,
    /// W3C headers for each record of the batch; `None` when there is no
    /// context to pass on.
    pub headers: Option<TraceHeaders>,
    errors: u32,
    /// Of the failed records, those parked in the dead-letter topic.
    dead_lettered: u32,
    partition: Partition,
}

/// The trace of one transaction: its span, if recorded, and the context its
/// batches' spans start under.
pub struct TxnTrace {
    span: Option<Span>,
    pub context: Context,
}

impl TxnTrace {
    /// Ends the span: `committed`, or aborted because of `cause`.
    pub fn finish(mut self, batches: u64, aborted: Option<&str>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "kafka_gateway.transaction.batch_count",
            batches as i64,
        ));
        span.set_attribute(KeyValue::new(
            "kafka_gateway.transaction.outcome",
            if aborted.is_some() {
                "aborted"
            } else {
                "committed"
            },
        ));
        if let Some(cause) = aborted {
            span.set_status(Status::error(cause.to_owned()));
        }
        span.end();
    }
}

impl Drop for TxnTrace {
    /// A transaction whose stream ended without a verdict still ends its
    /// span.
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error("the stream ended before the transaction did"));
            span.end();
        }
    }
}

/// The partitions a batch's stored records went to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Partition {
    None,
    One(i32),
    Several,
}

impl BatchTrace {
    /// Notes the result of the record at `index`.
    pub fn record(&mut self, index: usize, result: &RecordResult) {
        match &result.result {
            Some(record_result::Result::Ok(metadata)) => {
                self.partition = match self.partition {
                    Partition::None => Partition::One(metadata.partition),
                    Partition::One(p) if p == metadata.partition => Partition::One(p),
                    _ => Partition::Several,
                };
            }
            Some(record_result::Result::Error(error)) => {
                self.errors += 1;
                self.dead_lettered += u32::from(error.dead_letter.is_some());
                if let Some(span) = &mut self.span
                    && self.errors <= MAX_ERROR_EVENTS
                {
                    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                    let mut attributes = vec![
                        KeyValue::new("kafka_gateway.record.index", index as i64),
                        KeyValue::new("error.type", code.as_str_name()),
                        KeyValue::new("kafka_gateway.error.message", error.message.clone()),
                        KeyValue::new("kafka_gateway.error.retriable", error.retriable),
                    ];
                    if let Some(parked) = &error.dead_letter {
                        attributes.extend([
                            KeyValue::new("kafka_gateway.dead_letter.topic", parked.topic.clone()),
                            KeyValue::new(
                                "kafka_gateway.dead_letter.partition",
                                i64::from(parked.partition),
                            ),
                            KeyValue::new("kafka_gateway.dead_letter.offset", parked.offset),
                        ]);
                    }
                    span.add_event("record failed", attributes);
                }
            }
            None => {}
        }
    }

    /// Ends the span: every record's result is known.
    pub fn finish(&mut self, records: usize) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "kafka_gateway.batch.error_count",
            i64::from(self.errors),
        ));
        if self.dead_lettered > 0 {
            span.set_attribute(KeyValue::new(
                "kafka_gateway.batch.dead_letter_count",
                i64::from(self.dead_lettered),
            ));
        }
        if let Partition::One(partition) = self.partition {
            span.set_attribute(KeyValue::new(
                "messaging.destination.partition.id",
                partition.to_string(),
            ));
        }
        if self.errors > 0 {
            span.set_attribute(KeyValue::new("error.type", "record_failed"));
            span.set_status(Status::error(format!(
                "{} of {records} records failed",
                self.errors
            )));
        }
        span.end();
    }
}

impl Drop for BatchTrace {
    /// A batch dropped unanswered (its client left) still ends its span.
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error(
                "the stream ended before every record's result was known",
            ));
            span.end();
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Collects the propagator's headers in a fixed order (`traceparent`,
/// `tracestate`, `baggage`), so records are byte-for-byte reproducible.
#[derive(Default)]
struct RecordHeaders(Vec<(String, Bytes)>);

impl Injector for RecordHeaders {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), Bytes::from(value)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn headers_map(headers: &[(String, Bytes)]) -> HashMap<&str, &[u8]> {
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect()
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn exporter_follows_the_standard_variables() {
        let on = |pairs: &[(&str, &str)]| exporter_configured(&vars(pairs)).unwrap();
        assert!(!on(&[]));
        assert!(on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]));
        assert!(on(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317"
        )]));
        assert!(on(&[("OTEL_TRACES_EXPORTER", "otlp")]));
        assert!(!on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true")
        ]));
        assert!(!on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none")
        ]));
        assert!(on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        ]));
    }

    #[test]
    fn unsupported_exporters_are_refused_with_the_fix() {
        let err = |pairs: &[(&str, &str)]| match exporter_configured(&vars(pairs)) {
            Err(err) => err.to_string(),
            Ok(on) => panic!("accepted: {on}"),
        };
        assert!(err(&[("OTEL_TRACES_EXPORTER", "zipkin")]).contains("only otlp"));
        let message = err(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert!(message.contains("set it to grpc"), "{message}");
    }

    #[test]
    fn https_endpoints_get_tls_and_certificates_must_be_readable() {
        let tls = |pairs: &[(&str, &str)]| exporter_tls(&vars(pairs));
        assert!(
            tls(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
                .unwrap()
                .is_none()
        );
        assert!(
            tls(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")])
                .unwrap()
                .is_some()
        );
        let err = tls(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE=/no/such/ca.pem"),
            "{err}"
        );
        let err = tls(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("go together"), "{err}");
    }

    fn metadata(pairs: &[(&'static str, &'static str)]) -> tonic::metadata::MetadataMap {
        let mut map = tonic::metadata::MetadataMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn without_an_exporter_records_carry_the_callers_context() {
        let tracing = Tracing::disabled();
        let parent = tracing.extract(&metadata(&[
            ("traceparent", PARENT),
            ("tracestate", "vendor=x"),
            ("baggage", "tenant=acme"),
        ]));
        let trace = tracing.start_batch(&parent, Some("t"), 1, 3, None);
        let headers = trace.headers.clone().expect("a context to carry");
        let map = headers_map(&headers);
        assert_eq!(map["traceparent"], PARENT.as_bytes());
        assert_eq!(map["tracestate"], b"vendor=x");
        assert_eq!(map["baggage"], b"tenant=acme");
    }

    #[test]
    fn without_a_context_records_carry_nothing() {
        let tracing = Tracing::disabled();
        let parent = tracing.extract(&metadata(&[("traceparent", "garbage")]));
        assert!(
            tracing
                .start_batch(&parent, None, 1, 1, None)
                .headers
                .is_none()
        );
    }
}
