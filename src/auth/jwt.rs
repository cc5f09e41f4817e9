//! Bearer JWTs, verified against a JWKS (JSON Web Key Set).
//!
//! The JWKS is a file (re-read with the other files) or an https:// URL
//! (fetched, cached, refreshed every [`JWKS_REFRESH_INTERVAL`], and at once
//! when a token names a key id the cache lacks, at most once per
//! [`MIN_JWKS_REFRESH_INTERVAL`] so a flood of made-up key ids cannot turn
//! the gateway against the issuer).
//!
//! Only asymmetric signatures are accepted: RS256/384/512, PS256/384/512,
//! ES256, ES384 and EdDSA (Ed25519). `none` and the HMAC algorithms never
//! are: with them, anyone holding the public JWKS could mint tokens. The
//! token's `alg` must fit the type of the key its `kid` names (and that
//! key's own `alg`, if it has one), so no key is ever used with an algorithm
//! it was not made for. The signature is checked before any claim is read.
//! Then: `exp` is required, `nbf` honoured, both with [`JWT_LEEWAY`] for
//! clock skew; `iss` and `aud` are checked when `--jwt-issuer` and
//! `--jwt-audience` are set; the principal is the `--jwt-principal-claim`
//! claim, a non-empty string.
//!
//! The JOSE framing is a few lines here; the signature arithmetic is ring's,
//! the same library under the gateway's TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::config::{JwksLocation, SecurityArgs};
use super::tls::{load_certs, provider};
use super::{AuthError, AuthMethod, Principal, format_unix_time, printable};

/// Clock skew allowed on `exp` and `nbf`: clocks of issuers and gateways
/// drift by seconds, not minutes, and a stolen token gains little from
/// half a minute.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
/// Calls that may wait at once for a JWKS fetch started by a token with an
/// unknown key id; more are answered at once (unknown key id, retry
/// shortly), so a flood of such tokens cannot pile up behind the fetch.
pub const MAX_JWKS_FETCH_WAITERS: usize = 64;
/// The least time between two fetches of a JWKS URL caused by unknown key
/// ids: new keys are picked up within seconds of first use, and a stream of
/// forged key ids costs the issuer one request per ten seconds.
pub const MIN_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How often a JWKS URL is fetched again on its own, so removed (revoked)
/// keys stop being trusted; five minutes is what issuers' caching headers
/// commonly allow.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long one JWKS fetch may take, connection and body included.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted; real ones are a few kilobytes.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// The longest token accepted; real ones are well under 4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

const ACCEPTED: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA";

impl Algorithm {
    /// The algorithm named `alg`, or why it is not accepted.
    pub fn parse(alg: &str) -> Result<Self, AuthError> {
        Ok(match alg {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "none" => {
                return Err(AuthError::AlgorithmNotAccepted(
                    "alg \"none\" (an unsigned token) is never accepted".into(),
                ));
            }
            "HS256" | "HS384" | "HS512" => {
                return Err(AuthError::AlgorithmNotAccepted(format!(
                    "{alg} uses a shared secret and is never accepted; the issuer must sign \
                     with a private key whose public key is in the JWKS ({ACCEPTED})"
                )));
            }
            other => {
                return Err(AuthError::AlgorithmNotAccepted(format!(
                    "{:?} is not one of {ACCEPTED}",
                    printable(other, 20)
                )));
            }
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A public key from a JWK, in the form ring verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PublicKey {
    /// An RSA public key.
    Rsa {
        /// The modulus, big-endian without leading zeros, as ring wants it.
        n: Vec<u8>,
        /// The public exponent, big-endian.
        e: Vec<u8>,
    },
    /// An uncompressed P-256 point (0x04, x, y).
    P256(Vec<u8>),
    /// An uncompressed P-384 point.
    P384(Vec<u8>),
    /// The 32-byte Ed25519 key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Whether `alg` is made for this type of key.
    fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (
                Self::Rsa { .. },
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512
            ) | (Self::P256(_), ES256)
                | (Self::P384(_), ES384)
                | (Self::Ed25519(_), EdDSA)
        )
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Rsa { .. } => "an RSA key",
            Self::P256(_) => "an EC P-256 key (ES256)",
            Self::P384(_) => "an EC P-384 key (ES384)",
            Self::Ed25519(_) => "an Ed25519 key (EdDSA)",
        }
    }

    /// Whether `signature` over `message` verifies with this key and `alg`.
    fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        use Algorithm::*;
        let rsa = |params, n: &[u8], e: &[u8]| {
            RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok()
        };
        let unparsed = |params: &'static dyn signature::VerificationAlgorithm, key: &[u8]| {
            UnparsedPublicKey::new(params, key)
                .verify(message, sig)
                .is_ok()
        };
        match (self, alg) {
            (Self::Rsa { n, e }, RS256) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n, e),
            (Self::Rsa { n, e }, RS384) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384, n, e),
            (Self::Rsa { n, e }, RS512) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512, n, e),
            (Self::Rsa { n, e }, PS256) => rsa(&signature::RSA_PSS_2048_8192_SHA256, n, e),
            (Self::Rsa { n, e }, PS384) => rsa(&signature::RSA_PSS_2048_8192_SHA384, n, e),
            (Self::Rsa { n, e }, PS512) => rsa(&signature::RSA_PSS_2048_8192_SHA512, n, e),
            (Self::P256(point), ES256) => unparsed(&signature::ECDSA_P256_SHA256_FIXED, point),
            (Self::P384(point), ES384) => unparsed(&signature::ECDSA_P384_SHA384_FIXED, point),
            (Self::Ed25519(key), EdDSA) => unparsed(&signature::ED25519, key),
            _ => false,
        }
    }
}

/// One usable key of a JWKS.
#[derive(Debug, Clone)]
struct Jwk {
    /// `kid`, which tokens name.
    kid: Option<String>,
    /// The key's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    /// The key material.
    key: PublicKey,
}

impl Jwk {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// The usable signing keys of a JWKS.
#[derive(Debug, Default)]
pub struct KeySet {
    /// In JWKS order.
    keys: Vec<Arc<Jwk>>,
}

impl KeySet {
    /// Parses a JWKS document; `origin` names it in errors. Keys not meant
    /// for signatures (`use` other than `sig`), or of types the gateway does
    /// not verify with, are skipped with a warning; a JWKS with no usable
    /// key is an error.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_slice(json)
            .map_err(|err| format!("{origin}: the JWKS is not JSON: {err}"))?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| {
            format!("{origin}: not a JWKS: expected a JSON object with a \"keys\" array")
        })?;
        let mut set = KeySet::default();
        for (index, key) in keys.iter().enumerate() {
            match parse_jwk(key) {
                Ok(Some(jwk)) => set.keys.push(Arc::new(jwk)),
                Ok(None) => {}
                Err(why) => {
                    let kid = key.get("kid").and_then(|kid| kid.as_str()).unwrap_or("");
                    tracing::warn!(jwks = origin, index, kid, "skipping a JWKS key: {why}");
                }
            }
        }
        if set.keys.is_empty() {
            return Err(format!(
                "{origin}: the JWKS has no usable signing key (RSA of 2048 bits or more, \
                 EC P-256 or P-384, or Ed25519)"
            ));
        }
        Ok(set)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (before a JWKS URL was first fetched).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token with `kid` and `alg`.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Jwk>, AuthError> {
        let not_fitting = |jwk: &Jwk| {
            AuthError::AlgorithmNotAccepted(format!(
                "{} does not fit the key the token names, {}{}",
                alg.name(),
                jwk.key.describe(),
                match jwk.alg {
                    Some(own) => format!(" for {} only", own.name()),
                    None => String::new(),
                }
            ))
        };
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|jwk| jwk.kid.as_deref() == Some(kid))
                    .peekable();
                let first = named
                    .peek()
                    .cloned()
                    .ok_or_else(|| AuthError::UnknownKeyId {
                        kid: printable(kid, 64),
                    })?;
                named
                    .find(|jwk| jwk.fits(alg))
                    .cloned()
                    .ok_or_else(|| not_fitting(first))
            }
            None => match self.keys.as_slice() {
                [only] if only.fits(alg) => Ok(only.clone()),
                [only] => Err(not_fitting(only)),
                _ => Err(AuthError::MissingKeyId),
            },
        }
    }
}

/// One JWK: `Ok(None)` when it is not a signature key, `Err` with why it
/// cannot be used.
fn parse_jwk(key: &Value) -> Result<Option<Jwk>, String> {
    let text = |name: &str| key.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|usage| usage != "sig") {
        return Ok(None);
    }
    if let Some(ops) = key.get("key_ops").and_then(Value::as_array)
        && !ops.iter().any(|op| op.as_str() == Some("verify"))
    {
        return Ok(None);
    }
    let alg = match text("alg") {
        Some(alg) => Some(Algorithm::parse(alg).map_err(|err| err.to_string())?),
        None => None,
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name).ok_or_else(|| format!("no \"{name}\""))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|_| format!("\"{name}\" is not base64url"))
    };
    let sized = |name: &str, len: usize| -> Result<Vec<u8>, String> {
        let value = bytes(name)?;
        if value.len() != len {
            return Err(format!("\"{name}\" is {} bytes, not {len}", value.len()));
        }
        Ok(value)
    };
    let point = |len: usize| -> Result<Vec<u8>, String> {
        let mut point = vec![4];
        point.extend(sized("x", len)?);
        point.extend(sized("y", len)?);
        Ok(point)
    };
    let public = match text("kty") {
        Some("RSA") => {
            let mut n = bytes("n")?;
            let zeros = n.iter().take_while(|&&byte| byte == 0).count();
            n.drain(..zeros);
            let e = bytes("e")?;
            if n.len() < 256 {
                return Err(format!(
                    "an RSA key of {} bits; at least 2048 are required",
                    n.len() * 8
                ));
            }
            if e.iter().all(|&byte| byte == 0) {
                return Err("an RSA key without an exponent".into());
            }
            PublicKey::Rsa { n, e }
        }
        Some("EC") => match text("crv") {
            Some("P-256") => PublicKey::P256(point(32)?),
            Some("P-384") => PublicKey::P384(point(48)?),
            other => {
                return Err(format!(
                    "EC curve {other:?} is not supported (P-256, P-384)"
                ));
            }
        },
        Some("OKP") => match text("crv") {
            Some("Ed25519") => PublicKey::Ed25519(sized("x", 32)?),
            other => return Err(format!("OKP curve {other:?} is not supported (Ed25519)")),
        },
        Some("oct") => return Err("symmetric (oct) keys are never accepted".into()),
        other => {
            return Err(format!(
                "key type {other:?} is not supported (RSA, EC, OKP)"
            ));
        }
    };
    let jwk = Jwk {
        kid: text("kid").map(str::to_owned),
        alg,
        key: public,
    };
    if let Some(alg) = jwk.alg
        && !jwk.key.fits(alg)
    {
        return Err(format!(
            "its alg {} does not fit {}",
            alg.name(),
            jwk.key.describe()
        ));
    }
    Ok(Some(jwk))
}

/// Fetches a JWKS document; injected in tests.
pub trait JwksFetcher: Send + Sync {
    /// The body at `url`, or why it could not be had.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>>;
}

/// Fetches over HTTPS (rustls with ring; HTTP/1.1), trusting the system's
/// CA certificates and, optionally, more from a file.
pub struct HttpsFetcher {
    /// Keeps connections to the issuer alive between fetches.
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpsFetcher {
    /// A fetcher trusting the system's CAs and those in `extra_ca` (PEM).
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(path) = extra_ca {
            for cert in load_certs(path, "--jwt-jwks-ca")? {
                roots.add(cert).map_err(|err| {
                    format!(
                        "{} (--jwt-jwks-ca) holds a certificate that cannot be a trust \
                         anchor: {err}",
                        path.display()
                    )
                })?;
            }
        }
        if roots.is_empty() {
            return Err(
                "no CA certificates to trust for fetching the JWKS: install the \
                        system's CA certificates (ca-certificates) or set --jwt-jwks-ca"
                    .into(),
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("cannot set up TLS for the JWKS fetch: {err}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl JwksFetcher for HttpsFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let request = http::Request::get(url)
                .header(http::header::ACCEPT, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("kafka-gateway/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|err| format!("{url} is not a valid URL: {err}"))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| format!("cannot fetch {url}: {}", error_chain(&err)))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|err| format!("cannot read the JWKS from {url}: {err}"))?;
            Ok(body.to_bytes().to_vec())
        })
    }
}

/// An error and its sources, joined: hyper's top-level errors alone say
/// little ("client error (Connect)").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

/// What tokens are checked for besides their signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `--jwt-issuer`.
    pub issuer: Option<String>,
    /// `--jwt-audience`.
    pub audience: Option<String>,
    /// `--jwt-principal-claim`.
    pub principal_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl JwtSettings {
    /// The settings of `args`.
    pub fn from_args(args: &SecurityArgs) -> Self {
        Self {
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            principal_claim: args.jwt_principal_claim.trim().to_owned(),
            leeway: JWT_LEEWAY,
        }
    }
}

/// Where the keys come from.
enum Source {
    /// A file, re-read by [`JwtVerifier::reload`].
    File(PathBuf),
    /// A URL and what fetches it.
    Url {
        /// `--jwt-jwks`, https:// only.
        url: String,
        /// HTTPS in production, a fake in tests.
        fetcher: Arc<dyn JwksFetcher>,
    },
}

/// When a JWKS URL was last fetched.
#[derive(Debug, Default)]
struct FetchState {
    /// The last try, successful or not: unknown key ids refetch at most
    /// once per [`MIN_JWKS_REFRESH_INTERVAL`] after it.
    last_attempt: Option<Instant>,
    /// The last success: the periodic refresh counts from it.
    last_success: Option<Instant>,
}

/// Verifies bearer JWTs and names their principal.
pub struct JwtVerifier {
    /// Issuer, audience, principal claim, leeway.
    settings: JwtSettings,
    /// The JWKS file or URL.
    source: Source,
    /// The last good key set; readers never lock.
    keys: ArcSwap<KeySet>,
    /// One fetch at a time; those waiting see its result.
    fetch: tokio::sync::Mutex<FetchState>,
    /// Bounds the calls waiting on `fetch` ([`MAX_JWKS_FETCH_WAITERS`]).
    fetch_waiters: tokio::sync::Semaphore,
}

impl JwtVerifier {
    /// The verifier of `args`, or `None` without `--jwt-jwks`. A JWKS file
    /// must load; a JWKS URL is fetched once, and if that fails the gateway
    /// still starts, answering tokens with UNAVAILABLE until a fetch
    /// succeeds (retried as tokens arrive and periodically).
    pub async fn load(args: &SecurityArgs) -> Result<Option<Arc<Self>>, String> {
        let settings = JwtSettings::from_args(args);
        match args.jwks_location().transpose()? {
            None => Ok(None),
            Some(JwksLocation::File(path)) => Ok(Some(Arc::new(Self::from_file(&path, settings)?))),
            Some(JwksLocation::Url(url)) => {
                let fetcher = Arc::new(HttpsFetcher::new(args.jwt_jwks_ca.as_deref())?);
                let verifier = Arc::new(Self::from_url(&url, fetcher, settings));
                if let Err(err) = verifier.refresh().await {
                    tracing::warn!(
                        %err,
                        "the JWKS could not be fetched; tokens are refused until it is"
                    );
                }
                Ok(Some(verifier))
            }
        }
    }

    /// A verifier with the JWKS file at `path`.
    pub fn from_file(path: &Path, settings: JwtSettings) -> Result<Self, String> {
        Ok(Self {
            keys: ArcSwap::from_pointee(load_file(path)?),
            settings,
            source: Source::File(path.to_owned()),
            fetch: Default::default(),
            fetch_waiters: tokio::sync::Semaphore::new(MAX_JWKS_FETCH_WAITERS),
        })
    }

    /// A verifier with the JWKS at `url`, fetched by `fetcher`. It has no
    /// key until [`Self::refresh`] or a token fetches them.
    pub fn from_url(url: &str, fetcher: Arc<dyn JwksFetcher>, settings: JwtSettings) -> Self {
        Self {
            keys: ArcSwap::from_pointee(KeySet::default()),
            settings,
            source: Source::Url {
                url: url.to_owned(),
                fetcher,
            },
            fetch: Default::default(),
            fetch_waiters: tokio::sync::Semaphore::new(MAX_JWKS_FETCH_WAITERS),
        }
    }

    /// The JWKS file, when the keys come from one.
    pub fn watched_file(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) => Some(path),
            Source::Url { .. } => None,
        }
    }

    /// Whether the keys come from a URL.
    pub fn is_remote(&self) -> bool {
        matches!(self.source, Source::Url { .. })
    }

    /// The keys loaded now; a reload or fetch replaces the whole set.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// How many usable keys are loaded.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Re-reads a JWKS file; on error the previous keys stay. Nothing to do
    /// for a URL (see [`Self::refresh`]).
    pub fn reload(&self) -> Result<(), String> {
        if let Source::File(path) = &self.source {
            self.keys.store(Arc::new(load_file(path)?));
        }
        Ok(())
    }

    /// Fetches a JWKS URL now; on error the previous keys stay.
    pub async fn refresh(&self) -> Result<(), String> {
        let mut state = self.fetch.lock().await;
        self.fetch_now(&mut state).await
    }

    /// Fetches a JWKS URL if the last success is older than
    /// [`JWKS_REFRESH_INTERVAL`] (and no try was made in the last
    /// [`MIN_JWKS_REFRESH_INTERVAL`]).
    pub async fn refresh_if_due(&self) -> Result<(), String> {
        let mut state = self.fetch.lock().await;
        let due = state
            .last_success
            .is_none_or(|at| at.elapsed() >= JWKS_REFRESH_INTERVAL)
            && state
                .last_attempt
                .is_none_or(|at| at.elapsed() >= MIN_JWKS_REFRESH_INTERVAL);
        if due {
            self.fetch_now(&mut state).await
        } else {
            Ok(())
        }
    }

    async fn fetch_now(&self, state: &mut FetchState) -> Result<(), String> {
        let Source::Url { url, fetcher } = &self.source else {
            return Ok(());
        };
        state.last_attempt = Some(Instant::now());
        let body = tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetcher.fetch(url))
            .await
            .map_err(|_| format!("fetching {url} took over {JWKS_FETCH_TIMEOUT:?}"))??;
        let keys = KeySet::parse(&body, url)?;
        tracing::info!(jwks = %url, keys = keys.len(), "JWKS fetched");
        self.keys.store(Arc::new(keys));
        state.last_success = Some(Instant::now());
        Ok(())
    }

    /// The key for `kid` and `alg`; for a URL, an unknown `kid` refetches
    /// the JWKS, at most once per [`MIN_JWKS_REFRESH_INTERVAL`].
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<Jwk>, AuthError> {
        let keys = self.keys.load_full();
        let missing = match keys.find(kid, alg) {
            Ok(key) => return Ok(key),
            Err(unknown @ AuthError::UnknownKeyId { .. }) if !keys.is_empty() => unknown,
            Err(_) if keys.is_empty() => AuthError::JwksUnavailable,
            Err(other) => return Err(other),
        };
        if !self.is_remote() {
            return Err(missing);
        }
        // Enough calls already wait for a fetch: this one does not queue.
        let Ok(_waiting) = self.fetch_waiters.try_acquire() else {
            return Err(missing);
        };
        let mut state = self.fetch.lock().await;
        // Someone else may have fetched while this call waited.
        if Arc::ptr_eq(&keys, &*self.keys.load()) {
            let recent = state
                .last_attempt
                .is_some_and(|at| at.elapsed() < MIN_JWKS_REFRESH_INTERVAL);
            if recent {
                return Err(missing);
            }
            if let Err(err) = self.fetch_now(&mut state).await {
                tracing::warn!(%err, "the JWKS could not be fetched for an unknown key id");
            }
        }
        drop(state);
        let keys = self.keys.load_full();
        if keys.is_empty() {
            return Err(AuthError::JwksUnavailable);
        }
        keys.find(kid, alg)
    }

    /// Verifies `token` (the bearer value) and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_expiring(token)
            .await
            .map(|(principal, _)| principal)
    }

    /// Verifies `token` and returns its principal and the moment it is no
    /// longer accepted (its `exp` plus the allowed clock skew).
    pub async fn verify_expiring(&self, token: &str) -> Result<(Principal, SystemTime), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let (principal, exp) = self.verify_at(token, now).await?;
        let until = exp + self.settings.leeway.as_secs_f64();
        let until =
            UNIX_EPOCH + Duration::try_from_secs_f64(until.max(0.0)).unwrap_or(Duration::MAX);
        Ok((principal, until))
    }

    async fn verify_at(&self, token: &str, now: f64) -> Result<(Principal, f64), AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::MalformedToken(format!(
                "it is over {} KiB",
                MAX_TOKEN_BYTES >> 10
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::MalformedToken(
                "a JWT is three base64url parts joined by '.'".into(),
            ));
        };
        let fields = json_object(&decode(header, "header")?, "header")?;
        let alg = fields
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::MalformedToken("its header has no alg".into()))?;
        let alg = Algorithm::parse(alg)?;
        if fields.contains_key("crit") {
            return Err(AuthError::MalformedToken(
                "it marks header parameters critical (crit), which the gateway does not support"
                    .into(),
            ));
        }
        let kid = match fields.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(AuthError::MalformedToken("its kid is not a string".into())),
        };
        let signature = decode(sig, "signature")?;
        let key = self.key_for(kid, alg).await?;
        let signed = &token[..header.len() + 1 + payload.len()];
        if !key.key.verify(alg, signed.as_bytes(), &signature) {
            return Err(AuthError::BadSignature);
        }
        let claims = json_object(&decode(payload, "payload")?, "payload")?;
        self.check_claims(&claims, now)
    }

    /// Checks the claims of a token whose signature verified; its principal
    /// and `exp`.
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<(Principal, f64), AuthError> {
        let leeway = self.settings.leeway.as_secs_f64();
        let exp = numeric_claim(claims, "exp")?.ok_or_else(|| {
            AuthError::MalformedToken(
                "it has no exp (expiry) claim; the gateway accepts only tokens that expire".into(),
            )
        })?;
        if now > exp + leeway {
            return Err(AuthError::Expired {
                at: format_unix_time(exp as i64),
            });
        }
        if let Some(nbf) = numeric_claim(claims, "nbf")?
            && now + leeway < nbf
        {
            return Err(AuthError::NotYetValid {
                at: format_unix_time(nbf as i64),
            });
        }
        if let Some(expected) = &self.settings.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                found => {
                    return Err(AuthError::WrongIssuer {
                        found: match found {
                            Some(Value::String(iss)) => format!("{:?}", printable(iss, 100)),
                            Some(_) => "not a string".into(),
                            None => "missing".into(),
                        },
                        expected: expected.clone(),
                    });
                }
            }
        }
        if let Some(expected) = &self.settings.audience {
            let included = match claims.get("aud") {
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(expected)),
                _ => false,
            };
            if !included {
                return Err(AuthError::WrongAudience {
                    expected: expected.clone(),
                });
            }
        }
        let claim = &self.settings.principal_claim;
        match claims.get(claim) {
            Some(Value::String(name)) if !name.trim().is_empty() => {
                Ok((Principal::new(name.as_str(), AuthMethod::Jwt), exp))
            }
            _ => Err(AuthError::NoPrincipalClaim {
                claim: claim.clone(),
            }),
        }
    }
}

fn load_file(path: &Path) -> Result<KeySet, String> {
    let json = std::fs::read(path)
        .map_err(|err| format!("cannot read {} (--jwt-jwks): {err}", path.display()))?;
    KeySet::parse(&json, &path.display().to_string())
}

fn decode(segment: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::MalformedToken(format!("its {what} is not base64url")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, AuthError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::MalformedToken(format!(
            "its {what} is not a JSON object"
        ))),
    }
}

/// A NumericDate claim: seconds since 1970, possibly fractional.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or_else(|| {
            AuthError::MalformedToken(format!(
                "its {name} claim is not a number (seconds since 1970)"
            ))
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
