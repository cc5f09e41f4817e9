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
//! second per remote address, so a flood of bad tokens can neither flood
//! the log nor hide another client's failures.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::metrics::Metrics;

use super::listener::{ConnInfo, LogThrottle};
use super::trace::CallContext;

/// Applies the [`Authenticator`] to every call.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    /// At most one line a second per remote address.
    throttle: Arc<LogThrottle>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, metrics: Arc<Metrics>) -> Self {
        Self {
            authenticator,
            metrics,
            throttle: Arc::default(),
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
            let peer_chain = conn.and_then(|c| c.peer_chain.clone());
            let remote = conn.and_then(|c| c.remote);
            let metadata = MetadataMap::from_headers(request.headers().clone());
            let trace = request
                .extensions()
                .get::<CallContext>()
                .map(CallContext::start_authentication);
            let authenticated = layer
                .authenticator
                .authenticate_call(&metadata, peer.as_ref(), peer_chain.as_ref())
                .await;
            if let Some(trace) = trace {
                trace.finish(match &authenticated {
                    Ok(found) => Ok(found.as_ref().map(|(principal, _)| principal.name())),
                    Err(error) => Err(reason(error)),
                });
            }
            match authenticated {
                Ok(Some((principal, credential))) => {
                    request.extensions_mut().insert(principal);
                    if let Some(credential) = credential {
                        request.extensions_mut().insert(credential);
                    }
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
    /// Logs a failure, at most one a second per remote address.
    fn log(&self, error: &AuthError, remote: Option<std::net::SocketAddr>, path: &str) {
        let ip = remote.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |r| r.ip());
        if self.throttle.allows(ip) {
            tracing::info!(
                remote = ?remote,
                path,
                %error,
                "call refused: not authenticated (further refusals from this address this second are only counted)"
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
        AuthError::ApiKeyTooShort { .. } => "api_key_too_short",
        AuthError::NoPrincipalClaim { .. } | AuthError::NoPrincipalInCertificate => "no_principal",
        AuthError::JwksUnavailable => "jwks_unavailable",
        AuthError::Revoked(_) => "revoked",
    }
}

/// The principal of a call, as the layer left it.
pub fn principal(extensions: &tonic::Extensions) -> Option<Principal> {
    extensions.get::<Principal>().cloned()
}
