//! The tracing layer, outermost of the gRPC layers: each call of the
//! `kafka_gateway.v1.Producer` service gets a SERVER span, named
//! `kafka_gateway.v1.Producer/Produce` (or `/ProduceBatch`) as the RPC
//! conventions name it, under the caller's W3C context from the metadata.
//!
//! The span starts before authentication and the admission limits, so a
//! call they refuse (UNAUTHENTICATED, RESOURCE_EXHAUSTED) has one, and the
//! time spent authenticating shows (as its `authenticate` child). It ends
//! when the response does, with the call's gRPC status: at once for a call
//! refused before its stream began (a trailers-only response), else when the
//! stream's trailers are written, or, when the client leaves first, as
//! CANCELLED. Its context, [`CallContext`] in the request's extensions, is
//! where the call's other spans go: the stream's batches and transactions.
//!
//! Health checking and reflection are not traced, nor anything when no
//! exporter is configured.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::telemetry::{AuthTrace, CallTrace, SERVICE, Tracing};

use super::listener::ConnInfo;

/// The context a call's spans start under: the caller's, with the call's
/// SERVER span in it when spans are recorded.
#[derive(Clone)]
pub struct CallContext {
    pub context: opentelemetry::Context,
    tracing: Arc<Tracing>,
}

impl CallContext {
    /// Starts the span of authenticating the call, under the call's.
    pub fn start_authentication(&self) -> AuthTrace {
        self.tracing.start_authentication(&self.context)
    }
}

/// Starts a SERVER span for every call of the Producer service.
#[derive(Clone)]
pub struct TraceLayer {
    tracing: Arc<Tracing>,
}

impl TraceLayer {
    pub fn new(tracing: Arc<Tracing>) -> Self {
        Self { tracing }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            tracing: self.tracing.clone(),
        }
    }
}

/// The service [`TraceLayer`] wraps.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    tracing: Arc<Tracing>,
}

type Request = http::Request<Body>;
type Response = http::Response<Body>;

/// The method a request's path calls, when it is one of the service's:
/// span names come from this fixed list, never from the path itself.
fn method(path: &str) -> Option<&'static str> {
    let method = path.strip_prefix('/')?.strip_prefix(SERVICE)?;
    match method {
        "/Produce" => Some("Produce"),
        "/ProduceBatch" => Some("ProduceBatch"),
        _ => None,
    }
}

impl<S> Service<Request> for Traced<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Nothing to record: the service reads the caller's context from
        // the metadata itself.
        let method = method(request.uri().path()).filter(|_| self.tracing.is_enabled());
        let Some(method) = method else {
            return Box::pin(inner.call(request));
        };
        let parent = self.tracing.extract_headers(request.headers());
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(|info| info.remote);
        let call = self.tracing.start_call(&parent, method, peer);
        request.extensions_mut().insert(CallContext {
            context: call.context.clone(),
            tracing: self.tracing.clone(),
        });
        Box::pin(async move {
            let response = inner.call(request).await?;
            // A trailers-only response: the call ended before its stream
            // began.
            if let Some(status) = tonic::Status::from_header_map(response.headers()) {
                call.finish(status.code(), status.message());
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(TracedBody {
                    body,
                    call: Some(call),
                })
            }))
        })
    }
}

/// A response body that ends its call's span with the status in its
/// trailers.
struct TracedBody {
    body: Body,
    /// Until the span is ended.
    call: Option<CallTrace>,
}

impl TracedBody {
    fn finish(&mut self, code: tonic::Code, message: &str) {
        if let Some(call) = self.call.take() {
            call.finish(code, message);
        }
    }
}

impl http_body::Body for TracedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    match tonic::Status::from_header_map(trailers) {
                        Some(status) => self.finish(status.code(), status.message()),
                        None => self.finish(tonic::Code::Unknown, "trailers without grpc-status"),
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let status = status.clone();
                self.finish(status.code(), status.message());
            }
            Poll::Ready(None) => self.finish(tonic::Code::Unknown, "no trailers"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for TracedBody {
    /// The response was dropped before its trailers: the client left (or
    /// the connection was closed under it).
    fn drop(&mut self) {
        self.finish(
            tonic::Code::Cancelled,
            "the response ended before its status was sent",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_services_methods_are_traced_under_fixed_names() {
        assert_eq!(
            method("/kafka_gateway.v1.Producer/Produce"),
            Some("Produce")
        );
        assert_eq!(
            method("/kafka_gateway.v1.Producer/ProduceBatch"),
            Some("ProduceBatch")
        );
        assert_eq!(method("/kafka_gateway.v1.Producer/Random123"), None);
        assert_eq!(method("/grpc.health.v1.Health/Check"), None);
        assert_eq!(method("/kafka_gateway.v1.ProducerX/Produce"), None);
    }
}
