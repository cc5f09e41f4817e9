//! Who a stream's records come from, and what that allows: the one place
//! the send path reads the caller's [`Principal`].
//!
//! - authorization: each record's topic is checked against
//!   `--authz-policy` before anything else happens to it; a denied record
//!   gets `NOT_AUTHORIZED` and is never sent (not even its topic is
//!   created);
//! - quotas: each batch is charged to the principal's rates; a caller over
//!   them is paused (its stream stops handing records over and reading),
//!   never failed;
//! - `--principal-header`: every record is stamped with the principal, in a
//!   header that replaces any of that name the client sent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::auth::{PolicyStore, Principal, Quotas, StreamAuthorizer};
use crate::error::record_error;
use crate::proto::{ErrorCode, RecordError};

/// A header every record of a stream carries: its name and value.
pub type Stamp = Arc<(String, Bytes)>;

/// What the gateway holds callers to, shared by every stream: builds each
/// stream's [`Caller`].
#[derive(Clone)]
pub struct Callers {
    policy: Arc<PolicyStore>,
    quotas: Arc<Quotas>,
    principal_header: Option<String>,
}

impl Callers {
    pub fn new(
        policy: Arc<PolicyStore>,
        quotas: Arc<Quotas>,
        principal_header: Option<String>,
    ) -> Self {
        Self {
            policy,
            quotas,
            principal_header,
        }
    }

    /// No policy, no quota, no principal header.
    pub fn open() -> Self {
        Self::new(
            Arc::new(PolicyStore::load(None).expect("the open policy reads no file")),
            Arc::new(Quotas::new(crate::auth::Rates::default(), None)),
            None,
        )
    }

    /// Whether `principal` may use the transactional id `id`: always without
    /// a policy; with one, when a grant lists it in `transactional_ids`.
    pub fn allows_transactional_id(&self, principal: Option<&Principal>, id: &str) -> bool {
        self.policy.allows_transactional_id(principal, id)
    }

    /// The caller of a stream authenticated as `principal`.
    pub fn caller(&self, principal: Option<Principal>) -> Caller {
        Caller::new(
            principal,
            &self.policy,
            &self.quotas,
            self.principal_header.as_deref(),
        )
    }
}

/// One stream's caller.
#[derive(Default)]
pub struct Caller {
    /// `None`: anonymous (no authentication configured).
    pub principal: Option<Principal>,
    /// `None` when no policy is configured: everything is allowed.
    authorizer: Option<StreamAuthorizer>,
    /// `None` when no quota can apply.
    quotas: Option<Arc<Quotas>>,
    /// `--principal-header` with the principal.
    stamp: Option<Stamp>,
    /// Records refused so far, for the stream's log line.
    pub denied: u64,
}

impl Caller {
    /// A caller nothing applies to: anonymous, unlimited, allowed everything.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The caller as refusals name it: `principal "orders"`, or an
    /// anonymous caller.
    pub fn describe(&self) -> String {
        match &self.principal {
            Some(principal) => format!("principal {:?}", principal.name()),
            None => "an anonymous caller".to_owned(),
        }
    }

    /// `principal`, held to `policy` (when it reads a file), `quotas` (when
    /// any can apply), and stamped into `principal_header` (when set).
    pub fn new(
        principal: Option<Principal>,
        policy: &Arc<PolicyStore>,
        quotas: &Arc<Quotas>,
        principal_header: Option<&str>,
    ) -> Self {
        let stamp = principal_header
            .zip(principal.as_ref())
            .map(|(name, principal)| {
                Arc::new((
                    name.to_owned(),
                    Bytes::copy_from_slice(principal.name().as_bytes()),
                ))
            });
        Self {
            authorizer: policy
                .path()
                .is_some()
                .then(|| policy.authorizer(principal.clone())),
            quotas: quotas.is_enabled().then(|| quotas.clone()),
            stamp,
            principal,
            denied: 0,
        }
    }

    /// `Ok` when the caller may produce to `topic`, else the record's error.
    pub fn authorize(&mut self, topic: &str) -> Result<(), RecordError> {
        let Some(authorizer) = &mut self.authorizer else {
            return Ok(());
        };
        if authorizer.allows_topic(topic) {
            return Ok(());
        }
        self.denied += 1;
        let who = self.describe();
        if self.denied == 1 {
            tracing::info!(
                principal = self.principal.as_ref().map(Principal::name),
                topic,
                "record refused: the policy grants no such topic (further refusals of this \
                 stream are counted)"
            );
        }
        Err(record_error(
            ErrorCode::NotAuthorized,
            format!(
                "{who} may not produce to topic {topic:?}: the gateway's --authz-policy grants \
                 it no such topic; ask for a grant, or send to a topic you were granted"
            ),
            false,
        ))
    }

    /// Charges a batch of `records` records and `bytes` payload bytes to
    /// the caller's quota; how long the stream must pause before handing it
    /// over.
    pub fn charge(&self, records: u64, bytes: u64) -> Duration {
        match &self.quotas {
            Some(quotas) if records > 0 => quotas.charge(self.principal.as_ref(), records, bytes),
            _ => Duration::ZERO,
        }
    }

    /// The header every record is stamped with, if any.
    pub fn stamp(&self) -> Option<&Stamp> {
        self.stamp.as_ref()
    }

    /// The principal's name, or `""` when anonymous: a metric label.
    pub fn label(&self) -> &str {
        self.principal.as_ref().map_or("", Principal::name)
    }
}
