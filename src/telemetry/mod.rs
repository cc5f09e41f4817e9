//! OpenTelemetry tracing: a SERVER span per gRPC call, under the caller's
//! trace, with a PRODUCER span per batch under it, exported over OTLP/gRPC.
//!
//! The caller's context (W3C `traceparent`, `tracestate` and `baggage`) is
//! read from the gRPC request metadata by [`crate::grpc::trace`], which
//! starts the call's span, `kafka_gateway.v1.Producer/Produce` (or
//! `/ProduceBatch`), before authentication and ends it with the call's gRPC
//! status, so a refused call leaves a span too. Each batch gets a span named
//! `send` under it that starts when the batch enters the window and ends
//! when its last record's result is known, so its duration is the batch's
//! ack latency. Names are fixed words; the topic, the transactional id and
//! the like are attributes, so clients cannot grow the set of operation
//! names. Every record the batch sends carries the span's context as W3C
//! headers, after the client's own; a record that carries a `traceparent` of
//! its own keeps it alone, and the batch span links to it. A failed record
//! parked in the dead-letter topic is written under a `send` span of its
//! own, whose context the parked copy carries.
//!
//! Every failure is named by one low-cardinality `error.type` vocabulary,
//! the same on spans, span events and metrics: a record's error code in
//! snake case (`timed_out`, `unknown_topic`, `invalid_record`, ...; see
//! [`crate::metrics::code_label`]), and a call's gRPC status code in snake
//! case (`unauthenticated`, `resource_exhausted`, ...).
//!
//! Configuration is OpenTelemetry's standard environment variables; see
//! [`Tracing::from_env`]. With no exporter configured nothing is recorded:
//! records only pass the caller's own context on, when it sent one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithTonicConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

use crate::error::Error;
use crate::proto;

mod spans;

use spans::Partition;
pub use spans::{AuthTrace, BatchTrace, CallTrace, ParkTrace, TxnTrace, status_label};

/// The record header a batch span's context travels in.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that goes with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Most per-record failure events one batch span holds; the error count
/// attribute still counts them all.
const MAX_ERROR_EVENTS: u32 = 32;
/// Most per-record `record stored` events one batch span holds with
/// `--trace-records`: a batch of the default maximum (10,000 records) keeps
/// the first ones, and its offset ranges still cover them all.
const MAX_RECORD_EVENTS: u32 = 1_000;
/// Most links from one batch span to the contexts its records carry.
pub const MAX_LINKS: u32 = 32;
/// Most topic-partitions one batch span lists the offsets of.
const MAX_OFFSET_RANGES: usize = 32;

/// The process's tracing pipeline, or none.
pub struct Tracing {
    /// `None` when no exporter is configured: no span is ever built.
    pipeline: Option<(SdkTracerProvider, SdkTracer)>,
    propagator: TextMapCompositePropagator,
    /// `--trace-records`: each stored record is an event on its batch's
    /// span, with its partition and offset.
    record_events: bool,
}

impl Tracing {
    /// No exporter: spans are not recorded, but records still carry the
    /// caller's trace context when it sent one.
    pub fn disabled() -> Self {
        Self {
            pipeline: None,
            propagator: propagator(),
            record_events: false,
        }
    }

    /// With `on` (`--trace-records`), every stored record is an event on its
    /// batch's span (its topic, partition and offset), up to
    /// 1,000 a batch; without it a batch span lists only each partition's
    /// first and last offset.
    pub fn with_record_events(self, on: bool) -> Self {
        Self {
            record_events: on,
            ..self
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
            // The spans' own bounds (below) are the real ones; these only
            // back them up.
            .with_max_events_per_span(MAX_ERROR_EVENTS + MAX_RECORD_EVENTS)
            .with_max_links_per_span(MAX_LINKS)
            .build();
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        Ok(Self {
            pipeline: Some((provider, tracer)),
            propagator: propagator(),
            record_events: false,
        })
    }

    /// Whether spans are recorded and exported.
    pub fn is_enabled(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The caller's context from a request's metadata.
    pub fn extract(&self, metadata: &tonic::metadata::MetadataMap) -> Context {
        self.extract_headers(metadata.as_ref())
    }

    /// The caller's context from a request's HTTP/2 headers.
    pub fn extract_headers(&self, headers: &http::HeaderMap) -> Context {
        self.propagator.extract(&HeaderMapExtractor(headers))
    }

    /// Starts the SERVER span of a call of `method` of the
    /// `kafka_gateway.v1.Producer` service, from the client at `peer`, under
    /// the caller's context `parent`. Its context (`parent` itself when
    /// nothing is recorded) is where the call's other spans go.
    pub fn start_call(
        &self,
        parent: &Context,
        method: &'static str,
        peer: Option<SocketAddr>,
    ) -> CallTrace {
        let Some((_, tracer)) = &self.pipeline else {
            return CallTrace {
                context: parent.clone(),
                recorded: false,
            };
        };
        let mut attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", SERVICE),
            KeyValue::new("rpc.method", method),
        ];
        if let Some(peer) = peer {
            attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
            attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
        }
        let span = tracer
            .span_builder(format!("{SERVICE}/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        CallTrace {
            context: parent.with_span(span),
            recorded: true,
        }
    }

    /// Starts the span of authenticating a call, under the call's span.
    pub fn start_authentication(&self, call: &Context) -> AuthTrace {
        let span = self.pipeline.as_ref().map(|(_, tracer)| {
            tracer
                .span_builder("authenticate")
                .with_kind(SpanKind::Internal)
                .start_with_context(tracer, call)
        });
        AuthTrace {
            span,
            call: call.clone(),
        }
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
                .span_builder("send")
                .with_kind(SpanKind::Producer)
                .with_attributes(attributes)
                .start_with_context(tracer, parent)
        });
        let headers = self.carried(parent, span.as_ref());
        BatchTrace {
            span,
            headers,
            record_events: self.record_events,
            error_events: 0,
            partition: Partition::None,
            offsets: Vec::new(),
            links: 0,
            events: 0,
        }
    }

    /// Starts the span of one transaction of a transactional stream, under
    /// the call's context: its batches' spans go under it.
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
                .span_builder("transaction")
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

    /// Starts the span of parking a failed record in the dead-letter
    /// `topic`: a PRODUCER `send` under the span of the record's batch, whose
    /// context `record` carried (`trace`). The parked copy carries the
    /// returned headers; without an exporter they are the ones the record
    /// carried, so a consumer of the copy still continues the caller's
    /// trace.
    pub fn start_parking(
        &self,
        trace: Option<&TraceHeaders>,
        topic: &str,
        cause: &'static str,
    ) -> ParkTrace {
        let Some((_, tracer)) = &self.pipeline else {
            return ParkTrace {
                span: None,
                headers: trace.cloned(),
            };
        };
        let parent = match trace {
            Some(headers) => self.propagator.extract(&PairsExtractor(headers)),
            None => Context::new(),
        };
        let span = tracer
            .span_builder("send")
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.destination.name", topic.to_owned()),
                KeyValue::new("kafka_gateway.dead_letter.cause", cause),
            ])
            .start_with_context(tracer, &parent);
        let headers = self.carried(&parent, Some(&span));
        ParkTrace {
            span: Some(span),
            headers,
        }
    }

    /// The W3C headers of `span` (with `parent`'s baggage), or of `parent`
    /// when no span is recorded; `None` when there is no context to pass on.
    fn carried(&self, parent: &Context, span: Option<&Span>) -> Option<TraceHeaders> {
        let carried = match span {
            Some(span) => parent.with_remote_span_context(span.span_context().clone()),
            None => parent.clone(),
        };
        let mut headers = RecordHeaders::default();
        self.propagator.inject_context(&carried, &mut headers);
        (!headers.0.is_empty()).then(|| Arc::new(headers.0))
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

/// The gRPC service whose calls get a SERVER span.
pub const SERVICE: &str = "kafka_gateway.v1.Producer";

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

/// A request's HTTP/2 headers (its gRPC metadata), as a propagator reads
/// them.
struct HeaderMapExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The trace headers a record carried.
struct PairsExtractor<'a>(&'a [(String, Bytes)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(k, _)| k == key)?;
        std::str::from_utf8(value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A record's own headers; of several with one name, the last counts, as
/// Kafka consumers' `lastHeader` reads them.
pub(crate) struct RecordExtractor<'a>(&'a [proto::Header]);

impl Extractor for RecordExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let header = self.0.iter().rev().find(|h| h.key == key)?;
        std::str::from_utf8(&header.value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key.as_str()).collect()
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
