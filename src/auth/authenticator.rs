//! Which credential speaks for a request, and the principal it proves.
//!
//! A request may carry a bearer token (`authorization: Bearer <token>`) and
//! may come over a connection whose client certificate named a principal.
//! The token wins when present: a service behind a mesh that gives every
//! pod a certificate can still act as the user whose token it forwards.
//! Without a token, the certificate's principal stands.
//!
//! A token shaped like a JWT (three base64url parts, the first a JSON
//! object) goes to JWT verification when `--jwt-jwks` is set; any other
//! token, or every token when only `--api-keys` is set, is looked up as an
//! API key. Random API keys never look like JWTs, so with both set each
//! kind goes where it belongs, and a broken JWT is reported as one rather
//! than as an unknown key.
//!
//! gRPC health checking and reflection stay open unless
//! `--auth-protect-health`, so probes and tools need no credentials
//! ([`Authenticator::requires_credentials`]).
//!
//! A call also learns the [`Credential`] that proved its principal, so that
//! a stream that outlives a reload can be checked again
//! ([`Authenticator::recheck`]): an API key removed from the file, a JWT
//! whose key left the JWKS, a client certificate whose CA was dropped no
//! longer speak for an open stream either.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;
use tonic::metadata::MetadataMap;

use super::api_keys::{ApiKeyStore, MIN_KEY_CHARS};
use super::jwt::JwtVerifier;
use super::tls::TlsState;
use super::{AuthError, Principal};

/// What proved a call's principal, kept with the call (in its extensions)
/// to be checked again when keys, JWKS, CAs or the policy change.
#[derive(Clone)]
pub enum Credential {
    /// An API key, by its SHA-256: the key itself is not kept.
    ApiKey([u8; 32]),
    /// A JWT, and when it stops being accepted.
    Jwt {
        token: Arc<str>,
        expires: SystemTime,
    },
    /// The connection's client certificate chain, leaf first.
    Certificate(Arc<[rustls_pki_types::CertificateDer<'static>]>),
}

impl std::fmt::Debug for Credential {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::ApiKey(_) => "Credential::ApiKey",
            Credential::Jwt { .. } => "Credential::Jwt",
            Credential::Certificate(_) => "Credential::Certificate",
        })
    }
}

impl Credential {
    /// When the credential expires on its own, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        match self {
            Credential::Jwt { expires, .. } => Some(*expires),
            _ => None,
        }
    }
}

/// gRPC services open to all unless `--auth-protect-health`: health
/// checking and both versions of reflection.
const OPEN_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Turns a request's credentials into a [`Principal`].
pub struct Authenticator {
    /// `--jwt-jwks`.
    jwt: Option<Arc<JwtVerifier>>,
    /// `--api-keys`.
    api_keys: Option<Arc<ApiKeyStore>>,
    /// `--tls-client-ca`: connections carry a certificate's principal.
    client_certificates: bool,
    /// `--auth-protect-health`.
    protect_health: bool,
    /// The listener's TLS, to check client certificates again.
    tls: Option<TlsState>,
}

impl Authenticator {
    /// An authenticator accepting JWTs when `jwt` is given, API keys when
    /// `api_keys` is, and the client certificate's principal when
    /// `client_certificates`.
    pub fn new(
        jwt: Option<Arc<JwtVerifier>>,
        api_keys: Option<Arc<ApiKeyStore>>,
        client_certificates: bool,
        protect_health: bool,
    ) -> Self {
        Self {
            jwt,
            api_keys,
            client_certificates,
            protect_health,
            tls: None,
        }
    }

    /// Checks client certificates of open streams again against `tls`'s
    /// current CAs ([`Self::recheck`]).
    pub fn with_tls(mut self, tls: Option<TlsState>) -> Self {
        self.tls = tls;
        self
    }

    /// Accepts everyone, anonymously.
    pub fn disabled() -> Self {
        Self::new(None, None, false, false)
    }

    /// Whether any credential is checked.
    pub fn is_enabled(&self) -> bool {
        self.jwt.is_some() || self.api_keys.is_some() || self.client_certificates
    }

    /// Whether a call to `path` (`/package.Service/Method`) needs
    /// credentials: always when authentication is on, except health
    /// checking and reflection without `--auth-protect-health`.
    pub fn requires_credentials(&self, path: &str) -> bool {
        self.is_enabled()
            && (self.protect_health || !OPEN_SERVICES.iter().any(|open| path.starts_with(open)))
    }

    /// The principal of a request with `metadata` over a connection whose
    /// client certificate named `peer`: `Ok(None)` when no authentication is
    /// configured. Only a JWKS fetch for an unknown key id awaits anything.
    pub async fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<&Principal>,
    ) -> Result<Option<Principal>, AuthError> {
        let proven = self.authenticate_call(metadata, peer, None).await?;
        Ok(proven.map(|(principal, _)| principal))
    }

    /// [`Self::authenticate`], with the credential that proved the
    /// principal; `peer_chain` is the connection's client certificate
    /// chain, kept as the credential when the certificate speaks.
    pub async fn authenticate_call(
        &self,
        metadata: &MetadataMap,
        peer: Option<&Principal>,
        peer_chain: Option<&Arc<[rustls_pki_types::CertificateDer<'static>]>>,
    ) -> Result<Option<(Principal, Option<Credential>)>, AuthError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let Some(token) = bearer_token(metadata)? else {
            return match peer {
                Some(principal) => Ok(Some((
                    principal.clone(),
                    peer_chain.cloned().map(Credential::Certificate),
                ))),
                None => Err(AuthError::MissingCredentials { how: self.how() }),
            };
        };
        let jwt = |jwt: &Arc<JwtVerifier>| {
            let jwt = jwt.clone();
            async move {
                let (principal, expires) = jwt.verify_expiring(token).await?;
                let credential = Credential::Jwt {
                    token: token.into(),
                    expires,
                };
                Ok(Some((principal, Some(credential))))
            }
        };
        match (&self.jwt, &self.api_keys) {
            (Some(verifier), _) if looks_like_jwt(token) => jwt(verifier).await,
            (_, Some(_)) if token.chars().count() < MIN_KEY_CHARS => {
                Err(AuthError::ApiKeyTooShort { min: MIN_KEY_CHARS })
            }
            (_, Some(keys)) => {
                let principal = keys.lookup(token).ok_or(AuthError::UnknownApiKey)?;
                let digest = sha2::Sha256::digest(token.as_bytes()).into();
                Ok(Some((principal, Some(Credential::ApiKey(digest)))))
            }
            (Some(verifier), None) => jwt(verifier).await,
            (None, None) => Err(AuthError::TokensNotAccepted),
        }
    }

    /// Whether `credential` still proves `principal` under the keys, JWKS
    /// and client CAs loaded now: what a reload must not leave to a stream
    /// opened before it. The error says what changed.
    pub async fn recheck(
        &self,
        principal: &Principal,
        credential: &Credential,
    ) -> Result<(), AuthError> {
        let same = |found: Principal| {
            if found.name() == principal.name() && found.method() == principal.method() {
                Ok(())
            } else {
                Err(AuthError::Revoked(format!(
                    "the credential now names another principal than {:?}",
                    principal.name()
                )))
            }
        };
        match credential {
            Credential::ApiKey(digest) => match self
                .api_keys
                .as_ref()
                .and_then(|keys| keys.lookup_digest(digest))
            {
                Some(found) => same(found),
                None => Err(AuthError::Revoked(
                    "its API key was removed from the gateway's --api-keys file".into(),
                )),
            },
            Credential::Jwt { token, .. } => {
                let Some(jwt) = &self.jwt else {
                    return Err(AuthError::Revoked("JWTs are no longer accepted".into()));
                };
                match jwt.verify(token).await {
                    Ok(found) => same(found),
                    Err(err) => Err(AuthError::Revoked(format!(
                        "its token is no longer accepted: {err}"
                    ))),
                }
            }
            Credential::Certificate(chain) => match &self.tls {
                Some(tls) => tls.verify_client_chain(chain).map_err(|err| {
                    AuthError::Revoked(format!(
                        "its client certificate no longer verifies against the gateway's \
                         --tls-client-ca: {err}"
                    ))
                }),
                None => Ok(()),
            },
        }
    }

    /// How to send credentials this gateway accepts.
    fn how(&self) -> String {
        let token = match (&self.jwt, &self.api_keys) {
            (Some(_), Some(_)) => Some("a JWT or an API key"),
            (Some(_), None) => Some("a JWT"),
            (None, Some(_)) => Some("an API key"),
            (None, None) => None,
        };
        let mut ways = Vec::new();
        if let Some(token) = token {
            ways.push(format!(
                "send the metadata `authorization: Bearer <token>` with {token}"
            ));
        }
        if self.client_certificates {
            ways.push(
                "connect with a client certificate naming a principal (URI SAN or CN)".into(),
            );
        }
        ways.join(", or ")
    }
}

/// The bearer token of `metadata`, if it has an `authorization` entry.
fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, AuthError> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedAuthorization);
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization)?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::MalformedAuthorization)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedAuthorization);
    }
    Ok(Some(token))
}

/// Whether `token` has a JWT's shape: three parts joined by '.', the first
/// decoding to a JSON object.
fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|json| json.trim_ascii_start().first() == Some(&b'{'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use crate::auth::api_keys::key_line;
    use crate::auth::jwt::tests::{Signer, claims, file_verifier};
    use crate::auth::jwt::{JWT_LEEWAY, JwtSettings};
    use crate::auth::testing::TempDir;

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = authorization {
            map.insert("authorization", value.parse().unwrap());
        }
        map
    }

    fn settings() -> JwtSettings {
        JwtSettings {
            issuer: None,
            audience: None,
            principal_claim: "sub".into(),
            leeway: JWT_LEEWAY,
        }
    }

    fn keys(dir: &TempDir, lines: &[(&str, &str)]) -> Arc<ApiKeyStore> {
        let text: Vec<String> = lines.iter().map(|(p, k)| key_line(p, k)).collect();
        let path = dir.write("api-keys", text.join("\n"));
        Arc::new(ApiKeyStore::load(&path).unwrap())
    }

    fn cert(name: &str) -> Principal {
        Principal::new(name, AuthMethod::Certificate)
    }

    #[tokio::test]
    async fn without_authentication_everyone_is_anonymous() {
        let auth = Authenticator::disabled();
        assert!(!auth.is_enabled());
        assert!(!auth.requires_credentials("/kafka_gateway.v1.Producer/Produce"));
        for header in [None, Some("Bearer whatever"), Some("Basic abc")] {
            assert_eq!(auth.authenticate(&metadata(header), None).await, Ok(None));
        }
    }

    #[tokio::test]
    async fn with_mtls_alone_the_certificate_names_the_caller() {
        let auth = Authenticator::new(None, None, true, false);
        let peer = cert("spiffe://prod/ns/orders/sa/x");
        assert_eq!(
            auth.authenticate(&metadata(None), Some(&peer)).await,
            Ok(Some(peer.clone()))
        );
        let err = auth.authenticate(&metadata(None), None).await.unwrap_err();
        assert!(err.to_string().contains("client certificate"), "{err}");
        assert!(!err.to_string().contains("Bearer"), "{err}");
        assert_eq!(
            auth.authenticate(&metadata(Some("Bearer abc")), Some(&peer))
                .await,
            Err(AuthError::TokensNotAccepted)
        );
    }

    #[tokio::test]
    async fn jwts_and_api_keys_each_go_where_they_belong() {
        let dir = TempDir::new();
        let signer = Signer::es256("k");
        let (_jwks_dir, jwt) = file_verifier(&[&signer], settings());
        let auth = Authenticator::new(
            Some(Arc::new(jwt)),
            Some(keys(&dir, &[("loader", "key-0123456789abcdefghij")])),
            true,
            false,
        );
        let bearer = |token: &str| metadata(Some(&format!("Bearer {token}")));

        let token = signer.token(claims("orders"));
        let principal = auth
            .authenticate(&bearer(&token), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (principal.name(), principal.method()),
            ("orders", AuthMethod::Jwt)
        );

        let principal = auth
            .authenticate(&metadata(Some("bearer key-0123456789abcdefghij")), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (principal.name(), principal.method()),
            ("loader", AuthMethod::ApiKey)
        );

        assert_eq!(
            auth.authenticate(&bearer("key-wrong-0123456789abcdefghij"), None)
                .await,
            Err(AuthError::UnknownApiKey)
        );
        // A broken JWT is reported as a JWT problem, not as an unknown key.
        let forged = Signer::es256("k").token(claims("orders"));
        assert_eq!(
            auth.authenticate(&bearer(&forged), None).await,
            Err(AuthError::BadSignature)
        );

        // The token wins over the certificate.
        let principal = auth
            .authenticate(&bearer(&token), Some(&cert("mesh-sidecar")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(principal.name(), "orders");
        // And a bad token is not rescued by the certificate.
        assert!(
            auth.authenticate(
                &bearer("key-wrong-0123456789abcdefghij"),
                Some(&cert("mesh-sidecar"))
            )
            .await
            .is_err()
        );

        let err = auth.authenticate(&metadata(None), None).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("Bearer <token>")
                && message.contains("a JWT or an API key")
                && message.contains("client certificate"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn one_kind_of_token_alone_takes_every_token() {
        let dir = TempDir::new();
        let signer = Signer::es256("k");
        let token = signer.token(claims("orders"));

        let (_jwks_dir, jwt) = file_verifier(&[&signer], settings());
        let jwt_only = Authenticator::new(Some(Arc::new(jwt)), None, false, false);
        let err = jwt_only
            .authenticate(&metadata(Some("Bearer not-a-jwt")), None)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err}");

        let keys_only = Authenticator::new(None, Some(keys(&dir, &[("a", "k")])), false, false);
        let header = format!("Bearer {token}");
        assert_eq!(
            keys_only.authenticate(&metadata(Some(&header)), None).await,
            Err(AuthError::UnknownApiKey)
        );
    }

    #[tokio::test]
    async fn a_malformed_authorization_header_says_how_to_send_one() {
        let dir = TempDir::new();
        let auth = Authenticator::new(None, Some(keys(&dir, &[("a", "k")])), false, false);
        for header in ["Basic YTpi", "Bearer", "Bearer    ", "Token k"] {
            let err = auth
                .authenticate(&metadata(Some(header)), None)
                .await
                .unwrap_err();
            assert_eq!(err, AuthError::MalformedAuthorization, "{header}");
            assert!(err.to_string().contains("Bearer <token>"));
        }
        let mut twice = metadata(Some("Bearer k"));
        twice.append("authorization", "Bearer k".parse().unwrap());
        assert_eq!(
            auth.authenticate(&twice, None).await,
            Err(AuthError::MalformedAuthorization)
        );
        let status = tonic::Status::from(AuthError::UnknownApiKey);
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn an_api_key_under_128_bits_is_refused_even_when_filed() {
        let dir = TempDir::new();
        let short = "k".repeat(MIN_KEY_CHARS - 1);
        let long = "k".repeat(MIN_KEY_CHARS);
        let auth = Authenticator::new(
            None,
            Some(keys(&dir, &[("weak", &short), ("strong", &long)])),
            false,
            false,
        );
        let err = auth
            .authenticate(&metadata(Some(&format!("Bearer {short}"))), None)
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::ApiKeyTooShort { min: MIN_KEY_CHARS });
        assert!(err.to_string().contains("openssl rand"), "{err}");
        let strong = auth
            .authenticate(&metadata(Some(&format!("Bearer {long}"))), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(strong.name(), "strong");
    }

    #[test]
    fn health_and_reflection_stay_open_unless_protected() {
        let open = Authenticator::new(None, None, true, false);
        assert!(open.requires_credentials("/kafka_gateway.v1.Producer/Produce"));
        assert!(!open.requires_credentials("/grpc.health.v1.Health/Check"));
        assert!(
            !open.requires_credentials("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        );
        assert!(!open.requires_credentials(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        let closed = Authenticator::new(None, None, true, true);
        assert!(closed.requires_credentials("/grpc.health.v1.Health/Watch"));
    }

    #[test]
    fn jwt_shape_is_told_apart_from_api_keys() {
        let signer = Signer::ed25519("k");
        assert!(looks_like_jwt(&signer.token(claims("a"))));
        assert!(!looks_like_jwt("sk_live_0123456789abcdef"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("eyJhbGciOiJub25lIn0.e30"));
    }
}
