//! The authentication layer: turns each call's credentials (the bearer
//! token in its metadata, or its connection's client certificate) into a
//! [`Principal`] in the request's extensions, or answers `UNAUTHENTICATED`
//! saying what was wrong. Services and the send path only ever read the
//! principal.
//!
//! Under the call's span ([`super::trace`]), authenticating is a span of
//! its own, `authenticate`, naming the principal or why it failed.
//!
//! Health checking and reflection stay open unless
//! `--auth-protect-health`. Failures are counted by reason
//! (`kafka_gateway_auth_failures_total{reason}`) and logged at most once a
//! second, so a flood of bad tokens cannot flood the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::metrics::Metrics;

use super::listener::ConnInfo;
use super::trace::CallContext;

/// Applies the [`Authenticator`] to every call.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    /// The second of the last failure logged.
    last_logged: Arc<AtomicU64>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, metrics: Arc<Metrics>) -> Self {
        Self {
            authenticator,
            metrics,
            last_logged: Arc::default(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

type Request = http::Request<Body>;
type Response = http::Response<Body>;

impl<S> Service<Request> for Authenticate<S>
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
        let layer = self.layer.clone();
        if !layer
            .authenticator
            .requires_credentials(request.uri().path())
        {
            return Box::pin(inner.call(request));
        }
        Box::pin(async move {
            let conn = request.extensions().get::<ConnInfo>();
            let peer = conn.and_then(|c| c.peer.clone());
            let remote = conn.and_then(|c| c.remote);
            let metadata = MetadataMap::from_headers(request.headers().clone());
            let trace = request
                .extensions()
                .get::<CallContext>()
                .map(CallContext::start_authentication);
            let authenticated = layer
                .authenticator
                .authenticate(&metadata, peer.as_ref())
                .await;
            if let Some(trace) = trace {
                trace.finish(match &authenticated {
                    Ok(principal) => Ok(principal.as_ref().map(Principal::name)),
                    Err(error) => Err(reason(error)),
                });
            }
            match authenticated {
                Ok(Some(principal)) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Ok(None) => inner.call(request).await,
                Err(error) => {
                    layer.metrics.auth_failed(reason(&error));
                    layer.log(&error, remote, request.uri().path());
                    Ok(Status::from(error).into_http())
                }
            }
        })
    }
}

impl AuthLayer {
    /// Logs a failure, at most one a second.
    fn log(&self, error: &AuthError, remote: Option<std::net::SocketAddr>, path: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_logged.swap(now, Ordering::Relaxed) != now {
            tracing::info!(
                remote = ?remote,
                path,
                %error,
                "call refused: not authenticated (further refusals this second are only counted)"
            );
        }
    }
}

/// The metric label of a failure.
fn reason(error: &AuthError) -> &'static str {
    match error {
        AuthError::MissingCredentials { .. } => "missing",
        AuthError::MalformedAuthorization | AuthError::MalformedToken(_) => "malformed",
        AuthError::TokensNotAccepted => "tokens_not_accepted",
        AuthError::Expired { .. } => "expired",
        AuthError::NotYetValid { .. } => "not_yet_valid",
        AuthError::WrongIssuer { .. } => "wrong_issuer",
        AuthError::WrongAudience { .. } => "wrong_audience",
        AuthError::UnknownKeyId { .. } | AuthError::MissingKeyId => "unknown_key_id",
        AuthError::BadSignature => "bad_signature",
        AuthError::AlgorithmNotAccepted(_) => "algorithm_not_accepted",
        AuthError::UnknownApiKey => "unknown_api_key",
        AuthError::NoPrincipalClaim { .. } | AuthError::NoPrincipalInCertificate => "no_principal",
        AuthError::JwksUnavailable => "jwks_unavailable",
    }
}

/// The principal of a call, as the layer left it.
pub fn principal(extensions: &tonic::Extensions) -> Option<Principal> {
    extensions.get::<Principal>().cloned()
}
