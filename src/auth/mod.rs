//! The front door's security: who is calling, and what they may do.
//!
//! One layer turns credentials into a [`Principal`]: a client certificate
//! verified in the TLS handshake ([`tls`]), a JWT checked against a JWKS
//! ([`jwt`]), or an API key ([`api_keys`]); [`authenticator`] decides which
//! one speaks for a request. Everything after that only reads the principal.
//! Authorization is one function, `(principal, topic) -> allowed`
//! ([`policy::Policy::allows_topic`]); [`quota`] slows a principal down to its
//! rate rather than failing it.
//!
//! Everything that can change while the gateway runs (the certificate and
//! its key, the client CA, the API keys, the JWKS, the policy) sits behind
//! one swap point each (`arc-swap`): readers never lock and never wait for a
//! reload, and a reload that fails keeps the previous value. [`reload`]
//! watches the files and reloads on SIGHUP. [`Security::load`] builds all of
//! it from [`SecurityArgs`].

pub mod api_keys;
pub mod authenticator;
pub mod config;
pub mod jwt;
pub mod policy;
pub mod quota;
pub mod reload;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::sync::Arc;

pub use api_keys::{ApiKeyStore, ApiKeys};
pub use authenticator::Authenticator;
pub use config::SecurityArgs;
pub use jwt::JwtVerifier;
pub use policy::{Policy, PolicyStore, QuotaOverride, StreamAuthorizer};
pub use quota::{Quotas, Rates};
pub use reload::Reloader;
pub use tls::{TlsConnectInfo, TlsConnection, TlsState, peer_principal};

/// Who is calling: the authenticated name every later step reads.
///
/// Cheap to clone (the name is shared), so it can ride in each request's
/// extensions and in each stream's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The name grants and quotas match: a certificate's URI SAN or CN, a
    /// JWT claim, or the name an API key is filed under.
    name: Arc<str>,
    /// How the name was proven, for logs and for policies that may one day
    /// care.
    method: AuthMethod,
}

/// How a [`Principal`] was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A client certificate verified against `--tls-client-ca`.
    Certificate,
    /// A bearer JWT verified against `--jwt-jwks`.
    Jwt,
    /// A bearer API key found in `--api-keys`.
    ApiKey,
}

impl Principal {
    /// A principal named `name`, authenticated by `method`.
    pub fn new(name: impl Into<Arc<str>>, method: AuthMethod) -> Self {
        Self {
            name: name.into(),
            method,
        }
    }

    /// The name grants and quotas match.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// How the principal was authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
        })
    }
}

/// Why a caller was not authenticated. The message goes back to the client
/// as is: it says what was wrong and how to fix it, and never repeats the
/// token or key it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all; `how` says which ones this gateway accepts.
    #[error("no credentials: {how}")]
    MissingCredentials {
        /// How to send credentials this gateway accepts.
        how: String,
    },
    /// The `authorization` header is not `Bearer <token>`.
    #[error(
        "malformed authorization header: send `authorization: Bearer <token>` \
         (one space, the token in ASCII)"
    )]
    MalformedAuthorization,
    /// A bearer token came, but the gateway verifies none (mTLS only).
    #[error(
        "this gateway does not accept bearer tokens; authenticate with a client \
         certificate and drop the authorization header"
    )]
    TokensNotAccepted,
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    MalformedToken(String),
    /// `exp` has passed (beyond the allowed clock skew).
    #[error("token expired at {at}; get a fresh token")]
    Expired {
        /// When it expired, RFC 3339 in UTC.
        at: String,
    },
    /// `nbf` is still ahead (beyond the allowed clock skew).
    #[error("token not valid before {at}; check the issuer's and the client's clocks")]
    NotYetValid {
        /// When it becomes valid, RFC 3339 in UTC.
        at: String,
    },
    /// `iss` is not `--jwt-issuer`.
    #[error("wrong issuer: the token's iss is {found}, this gateway accepts {expected:?}")]
    WrongIssuer {
        /// The token's issuer, quoted, or "missing".
        found: String,
        /// `--jwt-issuer`.
        expected: String,
    },
    /// `aud` does not name `--jwt-audience`.
    #[error(
        "wrong audience: the token's aud does not include {expected:?}; \
         request a token for this audience"
    )]
    WrongAudience {
        /// `--jwt-audience`.
        expected: String,
    },
    /// No key in the JWKS has the token's `kid`.
    #[error(
        "unknown key id {kid:?}: no key in the gateway's JWKS has it; if the issuer \
         just rotated its keys, retry shortly"
    )]
    UnknownKeyId {
        /// The token's `kid` (shortened, printable characters only).
        kid: String,
    },
    /// The token names no `kid` and the JWKS has more than one key.
    #[error(
        "the token has no kid (key id) header and the JWKS holds several keys; the issuer must set kid"
    )]
    MissingKeyId,
    /// The signature does not verify with the key named by `kid`.
    #[error("bad signature: the token was not signed by the key its kid names")]
    BadSignature,
    /// `alg` is `none`, HMAC, unknown, or does not fit the key.
    #[error("algorithm not accepted: {0}")]
    AlgorithmNotAccepted(String),
    /// The bearer value is not a known API key.
    #[error(
        "unknown API key: check the key, or ask for it to be added to the gateway's --api-keys file"
    )]
    UnknownApiKey,
    /// The JWT lacks the claim that names the principal.
    #[error("the token has no {claim:?} claim naming the caller (a non-empty string)")]
    NoPrincipalClaim {
        /// `--jwt-principal-claim`.
        claim: String,
    },
    /// A client certificate verified but names no principal.
    #[error(
        "the client certificate names no principal: it needs a URI SAN \
         (e.g. spiffe://...) or a subject CN"
    )]
    NoPrincipalInCertificate,
    /// The gateway has no JWKS to check tokens against yet.
    #[error(
        "the gateway cannot verify tokens right now: its JWKS is not loaded yet; retry shortly"
    )]
    JwksUnavailable,
}

impl From<AuthError> for tonic::Status {
    /// UNAUTHENTICATED, except when the gateway itself cannot check tokens
    /// yet ([`AuthError::JwksUnavailable`]), which is UNAVAILABLE: the
    /// client did nothing wrong and may retry.
    fn from(err: AuthError) -> tonic::Status {
        match err {
            AuthError::JwksUnavailable => tonic::Status::unavailable(err.to_string()),
            other => tonic::Status::unauthenticated(other.to_string()),
        }
    }
}

/// `secs` since the Unix epoch as RFC 3339 in UTC, for messages.
pub(crate) fn format_unix_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {secs}"))
}

/// A short, printable rendering of a value a client sent, for messages and
/// logs: at most `max` characters, control characters replaced.
pub(crate) fn printable(value: &str, max: usize) -> String {
    let mut out: String = value
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > max {
        out.push('…');
    }
    out
}
