//! The tower layer that applies the admission limits to every call, before
//! any service sees it (and after authentication: a call here either
//! carries its principal or needs none):
//! - the first Produce or ProduceBatch call of a connection counts the
//!   connection against `--max-connections` and its principal's
//!   `--max-connections-per-principal`, or is refused;
//! - a gRPC health `Watch` or reflection call takes a `--max-probe-streams`
//!   slot, never a `--max-streams` one; without a principal it ends
//!   UNAVAILABLE after `--unauthenticated-stream-timeout`;
//! - any other call over `--max-streams`, or over its principal's
//!   `--max-streams-per-principal`, is refused (gRPC health `Check` is
//!   exempt from every cap, so probes keep working under load); slots are
//!   held until the response ends;
//! - the request body of a `Producer` call charges the memory budget for
//!   each message before it is buffered ([`BudgetBody`]);
//! - a unary `ProduceBatch` whose request cannot be decoded gets
//!   `INVALID_ARGUMENT` (or `RESOURCE_EXHAUSTED` when too large) naming the
//!   field or the flag, as a stream does, instead of tonic's `INTERNAL` and
//!   `OUT_OF_RANGE`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::Principal;
use crate::error::StreamError;
use crate::grpc::listener::ConnInfo;

use super::{Admission, BudgetBody, PrincipalSlot, Reservations, Slot};

/// gRPC health checking's unary probe: never refused for load.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// Every call of the `kafka_gateway.v1.Producer` service.
const PRODUCER: &str = "/kafka_gateway.v1.Producer/";
/// The unary call, whose request tonic decodes before our code runs.
const PRODUCE_BATCH: &str = "/kafka_gateway.v1.Producer/ProduceBatch";
/// Health checking and reflection: every call but `Check` is a stream
/// tools and probes hold open.
const PROBE_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Applies [`Admission`] to every call.
#[derive(Clone)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl AdmissionLayer {
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] wraps around the gateway's routes.
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    admission: Arc<Admission>,
}

type Request = http::Request<Body>;
type Response = http::Response<Body>;

impl<S> Service<Request> for Admit<S>
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
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let refuse = |message: String| -> Self::Future {
            Box::pin(std::future::ready(Ok(
                Status::resource_exhausted(message).into_http()
            )))
        };
        let path = request.uri().path();
        let principal = request.extensions().get::<Principal>().cloned();
        let producer = path.starts_with(PRODUCER);
        if producer
            && let Some(info) = request.extensions().get::<ConnInfo>()
            && let Err(message) = info.admission.admit(&self.admission, principal.as_ref())
        {
            return refuse(message);
        }
        let mut lifetime = None;
        let slot = if path == HEALTH_CHECK {
            None
        } else if PROBE_SERVICES.iter().any(|probe| path.starts_with(probe)) {
            if principal.is_none() {
                lifetime = Some(self.admission.caps.admission.unauthenticated_stream_timeout);
            }
            match self.admission.probe_streams.try_take() {
                Ok(slot) => Some(slot),
                Err(message) => return refuse(message),
            }
        } else {
            match self.admission.streams.try_take() {
                Ok(slot) => Some(slot),
                Err(message) => return refuse(message),
            }
        };
        let principal_slot = match (&principal, &slot) {
            (Some(principal), Some(_)) => {
                match self.admission.principal_streams.try_take(principal) {
                    Ok(slot) => Some(slot),
                    Err(message) => return refuse(message),
                }
            }
            _ => None,
        };
        let unary_produce = path == PRODUCE_BATCH;
        if path.starts_with(PRODUCER) {
            let reservations = Reservations::default();
            request.extensions_mut().insert(reservations.clone());
            let budget = self.admission.budget.clone();
            let max_message = self.admission.caps.max_batch_bytes;
            request = request
                .map(|body| Body::new(BudgetBody::new(body, budget, reservations, max_message)));
        }
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if unary_produce {
                precise_decode_status(response.headers_mut());
            }
            Ok(match slot {
                Some(slot) => response.map(|body| {
                    Body::new(Held {
                        body,
                        _slot: slot,
                        _principal: principal_slot,
                        lifetime: lifetime
                            .map(|after| (Box::pin(tokio::time::sleep(after)), after)),
                        ended: false,
                    })
                }),
                None => response,
            })
        })
    }
}

/// Rewrites tonic's status for a request it could not decode (trailers-only
/// response) into the one a stream gets for the same problem.
fn precise_decode_status(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(error) = StreamError::from_inbound(&status) else {
        return;
    };
    let precise: Status = error.into();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if let Err(err) = precise.add_header(headers) {
        tracing::warn!(%err, "cannot rewrite a decode error's status");
    }
}

/// A response body that holds a stream slot (and its principal's) until
/// the response ends, and ends it when its lifetime is up.
struct Held {
    body: Body,
    _slot: Slot,
    _principal: Option<PrincipalSlot>,
    /// For an unauthenticated stream: when it ends, and how long that is.
    lifetime: Option<(Pin<Box<Sleep>>, Duration)>,
    /// The lifetime's status was sent: nothing follows.
    ended: bool,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some((sleep, after)) = &mut self.lifetime
            && sleep.as_mut().poll(cx).is_ready()
        {
            let status = Status::unavailable(format!(
                "a health or reflection stream without credentials lasts at most {after:?} \
                 (--unauthenticated-stream-timeout); call again"
            ));
            let mut trailers = http::HeaderMap::new();
            if let Err(err) = status.add_header(&mut trailers) {
                tracing::warn!(%err, "cannot end a stream at its lifetime");
            }
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_of_the_unary_call_become_precise() {
        let mut headers = http::HeaderMap::new();
        Status::internal(
            "failed to decode Protobuf message: ProduceRequest.topic: invalid string value: data is not UTF-8 encoded",
        )
        .add_header(&mut headers)
        .unwrap();
        precise_decode_status(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("ProduceRequest.topic"),
            "{}",
            status.message()
        );

        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 99 bytes, the limit is: 10 bytes",
        )
        .add_header(&mut headers)
        .unwrap();
        precise_decode_status(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-batch-bytes"),
            "{}",
            status.message()
        );

        // Other statuses are left alone.
        let mut headers = http::HeaderMap::new();
        Status::unavailable("server shutting down")
            .add_header(&mut headers)
            .unwrap();
        precise_decode_status(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
