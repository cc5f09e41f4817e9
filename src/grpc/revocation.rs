//! Open streams under reloads: a stream outlives the keys, tokens,
//! certificates and grants it was admitted with, so each one's reading is
//! guarded by what would refuse it now.
//!
//! When a reload succeeds (API keys, a JWKS file or URL, the client CAs,
//! the policy; see [`crate::auth::Reloader::subscribe`]), every open stream
//! with a credential checks it again ([`Authenticator::recheck`]) and, if
//! transactional, checks its transactional id's grant again; a stream whose
//! JWT expires is ended at its expiry. A stream that fails stops reading:
//! what it read is answered, an open transaction is aborted, and it ends
//! `UNAUTHENTICATED` (credential) or `PERMISSION_DENIED` (grant), saying
//! why. Anonymous streams (no authentication configured) are never checked.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::Status;

use crate::auth::{Authenticator, Credential, Principal};
use crate::produce::Callers;

/// What the streams are checked against, shared by all.
pub struct Revocation {
    authenticator: Arc<Authenticator>,
    /// The policy, for transactional ids.
    callers: Callers,
    /// Changes on every successful reload.
    changes: watch::Receiver<u64>,
}

impl Revocation {
    pub fn new(
        authenticator: Arc<Authenticator>,
        callers: Callers,
        changes: watch::Receiver<u64>,
    ) -> Self {
        Self {
            authenticator,
            callers,
            changes,
        }
    }

    /// `inbound`, ending with the status that refuses the stream once its
    /// `credential` no longer proves `principal`, or its `transactional_id`
    /// is no longer granted.
    pub fn guard<S>(
        &self,
        inbound: S,
        principal: Option<Principal>,
        credential: Option<Credential>,
        transactional_id: Option<String>,
    ) -> Guarded<S> {
        let revoked = principal.map(|principal| {
            let authenticator = self.authenticator.clone();
            let callers = self.callers.clone();
            let mut changes = self.changes.clone();
            changes.mark_unchanged();
            let expires = credential.as_ref().and_then(Credential::expires);
            Box::pin(async move {
                let expiry = async {
                    match expires {
                        Some(at) => {
                            let left = at
                                .duration_since(SystemTime::now())
                                .unwrap_or(Duration::ZERO);
                            tokio::time::sleep(left).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(expiry);
                loop {
                    tokio::select! {
                        () = &mut expiry => {
                            return Status::unauthenticated(format!(
                                "the stream's token expired at {}; open a new stream with a fresh token",
                                crate::auth::format_unix_time(
                                    expires.and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                                        .map_or(0, |d| d.as_secs() as i64)
                                )
                            ));
                        }
                        changed = changes.changed() => {
                            if changed.is_err() {
                                // No more reloads: only the expiry is left.
                                (&mut expiry).await;
                                continue;
                            }
                            if let Some(credential) = &credential
                                && let Err(err) = authenticator.recheck(&principal, credential).await
                            {
                                tracing::info!(principal = principal.name(), %err, "ending a stream: its credential was revoked");
                                return Status::from(err);
                            }
                            if let Some(id) = &transactional_id
                                && !callers.allows_transactional_id(Some(&principal), id)
                            {
                                tracing::info!(principal = principal.name(), id, "ending a stream: its transactional id is no longer granted");
                                return Status::permission_denied(format!(
                                    "principal {:?} may no longer use transactional id {id:?}: the \
                                     gateway's reloaded --authz-policy grants it no such \
                                     transactional_ids; the open transaction was aborted",
                                    principal.name()
                                ));
                            }
                        }
                    }
                }
            }) as BoxFuture<'static, Status>
        });
        Guarded {
            inner: inbound,
            revoked,
            ended: false,
        }
    }
}

impl Revocation {
    /// `inbound` as it is, for a gateway that checks nothing.
    pub fn unguarded<S>(inbound: S) -> Guarded<S> {
        Guarded {
            inner: inbound,
            revoked: None,
            ended: false,
        }
    }
}

/// A stream's requests, ended by [`Revocation`].
pub struct Guarded<S> {
    inner: S,
    /// Resolves with the status that ends the stream.
    revoked: Option<BoxFuture<'static, Status>>,
    /// The status was handed on: nothing follows.
    ended: bool,
}

impl<S, T> Stream for Guarded<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(revoked) = &mut self.revoked
            && let Poll::Ready(status) = revoked.as_mut().poll(cx)
        {
            self.revoked = None;
            self.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
