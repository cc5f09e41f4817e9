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
pub use authenticator::{Authenticator, Credential};
pub use config::SecurityArgs;
pub use jwt::JwtVerifier;
pub use policy::{Policy, PolicyStore, QuotaOverride, StreamAuthorizer};
pub use quota::{Quotas, Rates};
pub use reload::Reloader;
pub use tls::{TlsConnectInfo, TlsConnection, TlsState, incoming, peer_principal};

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
    /// The bearer value is too short to be an API key of at least 128 bits.
    #[error(
        "API key refused: it is shorter than {min} characters, too short to hold 128 random \
         bits; issue a longer key (e.g. openssl rand -base64 32) and file its hash in the \
         gateway's --api-keys file"
    )]
    ApiKeyTooShort {
        /// [`api_keys::MIN_KEY_CHARS`].
        min: usize,
    },
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
    /// A stream's credential no longer proves its principal after a reload
    /// (a key removed, a JWKS or client CA changed).
    #[error(
        "the stream's credentials are no longer accepted: {0}; open a new stream with current credentials"
    )]
    Revoked(String),
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

/// Everything the front door needs, built from [`SecurityArgs`]: what the
/// server, its auth layer and the send path hold.
pub struct Security {
    /// TLS for the listener, when `--tls-cert` is set: accept connections
    /// with [`TlsState::accept`] (or its acceptor).
    pub tls: Option<TlsState>,
    /// Turns a request's metadata and the connection's certificate
    /// principal into a [`Principal`].
    pub authenticator: Arc<Authenticator>,
    /// Topic and transactional-id grants; open without `--authz-policy`.
    pub policy: Arc<PolicyStore>,
    /// Per-principal rates; [`Quotas::is_enabled`] says whether any apply.
    pub quotas: Arc<Quotas>,
    /// Reloads all of the above; start it with [`Reloader::spawn`] unless
    /// [`Reloader::is_empty`].
    pub reloader: Arc<Reloader>,
    /// `--principal-header`: the Kafka record header to stamp with the
    /// caller's principal, replacing any the client sent.
    pub principal_header: Option<String>,
}

impl Security {
    /// Validates `args`, loads every file they name (errors name the file
    /// and the fix), fetches an https:// JWKS once, logs the warnings of
    /// [`SecurityArgs::warnings`], and registers each file with the
    /// reloader.
    pub async fn load(args: &SecurityArgs) -> Result<Self, String> {
        args.validate()?;
        let tls = TlsState::load(args)?;
        let jwt = JwtVerifier::load(args).await?;
        let api_keys = match &args.api_keys {
            Some(path) => Some(Arc::new(ApiKeyStore::load(path)?)),
            None => None,
        };
        let policy = Arc::new(PolicyStore::load(args.authz_policy.as_deref())?);
        let quotas = Arc::new(Quotas::new(
            Rates::from_args(args),
            args.authz_policy.is_some().then(|| policy.clone()),
        ));

        let mut reloader = Reloader::new(args.reload_interval);
        if let Some(tls) = &tls {
            let tls_ = tls.clone();
            reloader.watch("TLS certificate", tls.watched_files(), move || {
                tls_.reload()
            });
        }
        if let Some(jwt) = &jwt {
            match jwt.watched_file() {
                Some(path) => {
                    let jwt = jwt.clone();
                    reloader.watch("JWKS", vec![path.to_owned()], move || jwt.reload());
                }
                None => reloader.refresh_remote(jwt.clone()),
            }
        }
        if let Some(keys) = &api_keys {
            let keys_ = keys.clone();
            reloader.watch("API keys", vec![keys.path().to_owned()], move || {
                keys_.reload()
            });
        }
        if let Some(path) = policy.path() {
            let policy = policy.clone();
            reloader.watch("authorization policy", vec![path.to_owned()], move || {
                policy.reload()
            });
        }
        for warning in args.warnings() {
            tracing::warn!("{warning}");
        }

        let client_certificates = tls
            .as_ref()
            .is_some_and(TlsState::requires_client_certificates);
        Ok(Self {
            authenticator: Arc::new(
                Authenticator::new(jwt, api_keys, client_certificates, args.auth_protect_health)
                    .with_tls(tls.clone()),
            ),
            tls,
            policy,
            quotas,
            reloader: Arc::new(reloader),
            principal_header: args.principal_header.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::tests::parse;
    use crate::auth::testing::{Ca, TempDir};

    #[tokio::test]
    async fn nothing_configured_means_open_and_anonymous() {
        let security = Security::load(&parse(&[]).unwrap()).await.unwrap();
        assert!(security.tls.is_none());
        assert!(!security.authenticator.is_enabled());
        assert!(security.policy.current().is_open());
        assert!(!security.quotas.is_enabled());
        assert!(security.reloader.is_empty());
        assert_eq!(security.principal_header, None);
    }

    #[tokio::test]
    async fn every_file_is_loaded_and_watched() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let leaf = ca.leaf(Some("localhost"), None, &["localhost"], None);
        let cert = dir.write("tls.crt", &leaf.cert_pem);
        let key = dir.write("tls.key", &leaf.key_pem);
        let client_ca = dir.write("ca.crt", ca.cert_pem());
        let keys = dir.write(
            "keys",
            api_keys::key_line("loader", "k-123-0123456789abcdefghij"),
        );
        let policy = dir.write(
            "policy.toml",
            "[[grant]]\nprincipals = [\"loader\"]\ntopics = [\"t\"]\n",
        );
        let path = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
        let args = parse(&[
            "--tls-cert",
            &path(&cert),
            "--tls-key",
            &path(&key),
            "--tls-client-ca",
            &path(&client_ca),
            "--api-keys",
            &path(&keys),
            "--authz-policy",
            &path(&policy),
            "--quota-records-per-sec",
            "10",
            "--principal-header",
            "x-principal",
        ])
        .unwrap();
        let security = Security::load(&args).await.unwrap();
        assert!(
            security
                .tls
                .as_ref()
                .unwrap()
                .requires_client_certificates()
        );
        assert!(security.authenticator.is_enabled());
        assert!(security.quotas.is_enabled());
        assert_eq!(security.principal_header.as_deref(), Some("x-principal"));

        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "authorization",
            "Bearer k-123-0123456789abcdefghij".parse().unwrap(),
        );
        let principal = security
            .authenticator
            .authenticate(&metadata, None)
            .await
            .unwrap()
            .unwrap();
        assert!(security.policy.allows_topic(Some(&principal), "t"));
        assert!(!security.policy.allows_topic(Some(&principal), "u"));

        std::fs::write(
            &policy,
            "[[grant]]\nprincipals = [\"loader\"]\ntopics = [\"u\"]\n",
        )
        .unwrap();
        let results = security.reloader.reload_changed();
        assert_eq!(results, vec![("authorization policy", Ok(()))]);
        assert!(security.policy.allows_topic(Some(&principal), "u"));
        let all: Vec<_> = security
            .reloader
            .reload_all()
            .into_iter()
            .map(|(name, result)| {
                assert!(result.is_ok(), "{name}: {result:?}");
                name
            })
            .collect();
        assert_eq!(all, ["TLS certificate", "API keys", "authorization policy"]);
    }

    #[tokio::test]
    async fn a_bad_file_or_combination_stops_the_start() {
        let dir = TempDir::new();
        let err = Security::load(&parse(&["--authz-policy", "p.toml"]).unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.contains("--authz-policy needs authentication"), "{err}");
        let keys = dir.write("keys", "not a key line");
        let args = parse(&["--api-keys", keys.to_str().unwrap()]).unwrap();
        let err = Security::load(&args).await.err().unwrap();
        assert!(err.contains("keys: line 1"), "{err}");
    }

    #[test]
    fn principals_display_their_name_and_clone_cheaply() {
        let principal = Principal::new("orders", AuthMethod::Jwt);
        let clone = principal.clone();
        assert!(Arc::ptr_eq(principal.shared_name(), clone.shared_name()));
        assert_eq!(principal.to_string(), "orders");
        assert_eq!(AuthMethod::Certificate.to_string(), "certificate");
    }

    #[test]
    fn printable_shortens_and_cleans_client_values() {
        assert_eq!(printable("abc", 5), "abc");
        assert_eq!(printable("a\nb", 5), "a?b");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(format_unix_time(0), "1970-01-01T00:00:00Z");
    }
}
