//! Tests of JWT verification, with keys made here: RSA by the `rsa` crate
//! (ring cannot generate RSA keys), EC and Ed25519 by ring, which also
//! signs every token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RsaKeyPair,
};
use serde_json::json;

use super::*;
use crate::auth::testing::{Ca, TempDir};

/// A key that signs test tokens, and its JWK.
pub(crate) struct Signer {
    /// The `kid` of its JWK and of its tokens.
    pub(crate) kid: String,
    /// The private key.
    key: SigningKey,
}

enum SigningKey {
    Rsa(RsaKeyPair, Vec<u8>, Vec<u8>),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One 2048-bit RSA key per test run: generating it takes a while.
fn rsa_key() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        (pkcs8, key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

impl Signer {
    pub(crate) fn rsa(kid: &str) -> Self {
        let (pkcs8, n, e) = rsa_key();
        let pair = RsaKeyPair::from_pkcs8(pkcs8).unwrap();
        Self::new(kid, SigningKey::Rsa(pair, n.clone(), e.clone()))
    }

    pub(crate) fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Self::new(kid, SigningKey::P256(pair))
    }

    pub(crate) fn es384(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Self::new(kid, SigningKey::P384(pair))
    }

    pub(crate) fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self::new(kid, SigningKey::Ed25519(pair))
    }

    fn new(kid: &str, key: SigningKey) -> Self {
        Self {
            kid: kid.into(),
            key,
        }
    }

    /// The public JWK.
    pub(crate) fn jwk(&self) -> Value {
        match &self.key {
            SigningKey::Rsa(_, n, e) => {
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": b64(n), "e": b64(e)})
            }
            SigningKey::P256(pair) | SigningKey::P384(pair) => {
                let point = &pair.public_key().as_ref()[1..];
                let (x, y) = point.split_at(point.len() / 2);
                let crv = if x.len() == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": self.kid, "crv": crv, "x": b64(x), "y": b64(y)})
            }
            SigningKey::Ed25519(pair) => {
                json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(pair.public_key())})
            }
        }
    }

    /// The public key bytes an attacker would use as an HMAC secret.
    fn public_bytes(&self) -> Vec<u8> {
        match &self.key {
            SigningKey::Rsa(pair, ..) => pair.public().as_ref().to_vec(),
            SigningKey::P256(pair) | SigningKey::P384(pair) => pair.public_key().as_ref().to_vec(),
            SigningKey::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// The algorithm this key signs with by default.
    fn default_alg(&self) -> &'static str {
        match &self.key {
            SigningKey::Rsa(..) => "RS256",
            SigningKey::P256(_) => "ES256",
            SigningKey::P384(_) => "ES384",
            SigningKey::Ed25519(_) => "EdDSA",
        }
    }

    /// A token with `claims`, signed with the key's default algorithm.
    pub(crate) fn token(&self, claims: Value) -> String {
        self.token_with(self.default_alg(), claims)
    }

    /// A token with `claims`, signed with `alg`.
    pub(crate) fn token_with(&self, alg: &str, claims: Value) -> String {
        self.sign(json!({"alg": alg, "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A token with `header` and `claims`, signed per the header's alg.
    fn sign(&self, header: Value, claims: Value) -> String {
        let signed = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let alg = header["alg"].as_str().unwrap();
        let rng = SystemRandom::new();
        let signature = match &self.key {
            SigningKey::Rsa(pair, ..) => {
                let padding: &'static dyn ring::signature::RsaEncoding = match alg {
                    "RS256" => &ring::signature::RSA_PKCS1_SHA256,
                    "RS384" => &ring::signature::RSA_PKCS1_SHA384,
                    "RS512" => &ring::signature::RSA_PKCS1_SHA512,
                    "PS256" => &ring::signature::RSA_PSS_SHA256,
                    "PS384" => &ring::signature::RSA_PSS_SHA384,
                    "PS512" => &ring::signature::RSA_PSS_SHA512,
                    other => panic!("an RSA key cannot sign {other}"),
                };
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, signed.as_bytes(), &mut signature)
                    .unwrap();
                signature
            }
            SigningKey::P256(pair) | SigningKey::P384(pair) => pair
                .sign(&rng, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", b64(signature))
    }
}

/// A JWKS document holding the keys of `signers`.
pub(crate) fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims for `sub`, valid for another hour.
pub(crate) fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 3600})
}

fn settings() -> JwtSettings {
    JwtSettings {
        issuer: None,
        audience: None,
        principal_claim: "sub".into(),
        leeway: JWT_LEEWAY,
    }
}

/// A verifier over a JWKS file of `signers`, and the directory it is in.
pub(crate) fn file_verifier(signers: &[&Signer], settings: JwtSettings) -> (TempDir, JwtVerifier) {
    let dir = TempDir::new();
    let path = dir.write("jwks.json", jwks(signers));
    let verifier = JwtVerifier::from_file(&path, settings).unwrap();
    (dir, verifier)
}

#[tokio::test]
async fn rs256_es256_es384_and_eddsa_tokens_verify() {
    let signers = [
        Signer::rsa("rsa"),
        Signer::es256("p256"),
        Signer::es384("p384"),
        Signer::ed25519("ed"),
    ];
    let (_dir, verifier) = file_verifier(&signers.iter().collect::<Vec<_>>(), settings());
    assert_eq!(verifier.key_count(), 4);
    for signer in &signers {
        let principal = verifier
            .verify(&signer.token(claims(&format!("svc-{}", signer.kid))))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", signer.kid));
        assert_eq!(principal.name(), format!("svc-{}", signer.kid));
        assert_eq!(principal.method(), AuthMethod::Jwt);
    }
    let rsa = &signers[0];
    for alg in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
        let token = rsa.token_with(alg, claims("svc"));
        assert!(verifier.verify(&token).await.is_ok(), "{alg}");
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_with_the_time() {
    let signer = Signer::es256("k");
    let (_dir, verifier) = file_verifier(&[&signer], settings());
    let expired = signer.token(json!({"sub": "a", "exp": 1_700_000_000}));
    let err = verifier.verify(&expired).await.unwrap_err();
    assert_eq!(
        err,
        AuthError::Expired {
            at: "2023-11-14T22:13:20Z".into()
        }
    );
    assert!(
        err.to_string().contains("expired at 2023-11-14T22:13:20Z"),
        "{err}"
    );

    // Within the leeway, still good.
    let just = signer.token(json!({"sub": "a", "exp": now() - 10, "nbf": now() + 10}));
    assert!(verifier.verify(&just).await.is_ok());

    let early = signer.token(json!({"sub": "a", "exp": now() + 7200, "nbf": now() + 3600}));
    let err = verifier.verify(&early).await.unwrap_err();
    assert!(matches!(err, AuthError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains("not valid before"), "{err}");

    let forever = signer.token(json!({"sub": "a"}));
    let err = verifier.verify(&forever).await.unwrap_err();
    assert!(err.to_string().contains("no exp"), "{err}");
    let text = signer.token(json!({"sub": "a", "exp": "tomorrow"}));
    let err = verifier.verify(&text).await.unwrap_err();
    assert!(err.to_string().contains("not a number"), "{err}");
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let signer = Signer::ed25519("k");
    let settings = JwtSettings {
        issuer: Some("https://idp.example".into()),
        audience: Some("kafka-gateway".into()),
        ..settings()
    };
    let (_dir, verifier) = file_verifier(&[&signer], settings);
    let with = |iss: Value, aud: Value| {
        signer.token(json!({"sub": "a", "exp": now() + 60, "iss": iss, "aud": aud}))
    };
    let good = with(json!("https://idp.example"), json!("kafka-gateway"));
    assert!(verifier.verify(&good).await.is_ok());
    let listed = with(
        json!("https://idp.example"),
        json!(["other", "kafka-gateway"]),
    );
    assert!(verifier.verify(&listed).await.is_ok());

    let err = verifier
        .verify(&with(json!("https://evil.example"), json!("kafka-gateway")))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::WrongIssuer { .. }));
    assert!(
        err.to_string().contains("\"https://evil.example\""),
        "{err}"
    );
    let no_iss = signer.token(json!({"sub": "a", "exp": now() + 60, "aud": "kafka-gateway"}));
    let err = verifier.verify(&no_iss).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");

    for aud in [json!("other"), json!(["a", "b"]), json!(null)] {
        let err = verifier
            .verify(&with(json!("https://idp.example"), aud))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AuthError::WrongAudience {
                expected: "kafka-gateway".into()
            }
        );
    }
}

#[tokio::test]
async fn a_signature_by_another_key_is_refused() {
    let (signer, impostor) = (Signer::es256("k"), Signer::es256("k"));
    let (_dir, verifier) = file_verifier(&[&signer], settings());
    let err = verifier
        .verify(&impostor.token(claims("a")))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::BadSignature);

    // A genuine token whose payload was edited.
    let token = signer.token(claims("reader"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string()),
        parts[2]
    );
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err(),
        AuthError::BadSignature
    );
}

#[tokio::test]
async fn alg_none_and_hmac_are_never_accepted() {
    let signer = Signer::rsa("k");
    let (_dir, verifier) = file_verifier(&[&signer], settings());

    let header = b64(json!({"alg": "none", "kid": "k"}).to_string());
    let unsigned = format!("{header}.{}.", b64(claims("admin").to_string()));
    let err = verifier.verify(&unsigned).await.unwrap_err();
    assert!(matches!(err, AuthError::AlgorithmNotAccepted(_)), "{err}");
    assert!(err.to_string().contains("none"), "{err}");

    // The classic confusion: HS256 keyed with the public key everyone has.
    let signed = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": "k"}).to_string()),
        b64(claims("admin").to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &signer.public_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    let hs256 = format!("{signed}.{}", b64(tag.as_ref()));
    let err = verifier.verify(&hs256).await.unwrap_err();
    assert!(matches!(err, AuthError::AlgorithmNotAccepted(_)), "{err}");
    assert!(err.to_string().contains("HS256"), "{err}");

    let err = verifier
        .verify(&format!("{}.e30.", b64(r#"{"alg":"XS999"}"#)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"XS999\" is not one of"), "{err}");
}

#[tokio::test]
async fn the_algorithm_must_fit_the_key_the_kid_names() {
    let (rsa, ec) = (Signer::rsa("rsa"), Signer::es256("ec"));
    let (_dir, verifier) = file_verifier(&[&rsa, &ec], settings());
    // A token claiming ES256 but naming the RSA key.
    let mut confused = ec.token(claims("a"));
    let header = b64(json!({"alg": "ES256", "kid": "rsa"}).to_string());
    confused = format!("{header}{}", &confused[confused.find('.').unwrap()..]);
    let err = verifier.verify(&confused).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("ES256 does not fit the key the token names, an RSA key"),
        "{err}"
    );

    // A JWK that pins its algorithm refuses the others.
    let dir = TempDir::new();
    let mut jwk = rsa.jwk();
    jwk["alg"] = json!("PS256");
    let path = dir.write("jwks.json", json!({"keys": [jwk]}).to_string());
    let pinned = JwtVerifier::from_file(&path, settings()).unwrap();
    assert!(
        pinned
            .verify(&rsa.token_with("PS256", claims("a")))
            .await
            .is_ok()
    );
    let err = pinned
        .verify(&rsa.token_with("RS256", claims("a")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("for PS256 only"), "{err}");
}

#[tokio::test]
async fn the_principal_claim_must_be_a_non_empty_string() {
    let signer = Signer::es384("k");
    let (_dir, verifier) = file_verifier(&[&signer], settings());
    for bad in [
        json!({"exp": now() + 60}),
        json!({"exp": now() + 60, "sub": ""}),
        json!({"exp": now() + 60, "sub": 42}),
    ] {
        let err = verifier.verify(&signer.token(bad)).await.unwrap_err();
        assert_eq!(
            err,
            AuthError::NoPrincipalClaim {
                claim: "sub".into()
            }
        );
    }
    let settings = JwtSettings {
        principal_claim: "client_id".into(),
        ..settings()
    };
    let (_dir, verifier) = file_verifier(&[&signer], settings);
    let token = signer.token(json!({"sub": "ignored", "client_id": "orders", "exp": now() + 60}));
    assert_eq!(verifier.verify(&token).await.unwrap().name(), "orders");
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_echoing_them() {
    let signer = Signer::es256("k");
    let (_dir, verifier) = file_verifier(&[&signer], settings());
    let secretish = "c2VjcmV0LXRva2VuLXZhbHVl";
    for token in [
        secretish.to_string(),
        format!("{secretish}.{secretish}"),
        format!("{secretish}.{secretish}.{secretish}.{secretish}"),
        format!("!!!.{secretish}.{secretish}"),
        format!("{}.{secretish}.{secretish}", b64("[1,2]")),
        format!("{}.{secretish}.{secretish}", b64(r#"{"kid":"k"}"#)),
        format!(
            "{}.{secretish}.{secretish}",
            b64(r#"{"alg":"ES256","kid":"k","crit":["x"]}"#)
        ),
        "x".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        let err = verifier.verify(&token).await.unwrap_err();
        assert!(matches!(err, AuthError::MalformedToken(_)), "{err}");
        assert!(!err.to_string().contains(secretish), "{err}");
    }
    // A wrong signature on a real token: the message shows no part of it.
    let token = signer.token(claims("a"));
    // A character well inside the signature, changed for sure (the last one
    // may carry only padding bits, and may already be the replacement).
    let at = token.len() - 10;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{replacement}{}", &token[..at], &token[at + 1..]);
    let err = verifier.verify(&tampered).await.unwrap_err();
    for part in tampered.split('.') {
        assert!(!err.to_string().contains(part), "{err}");
    }
}

#[tokio::test]
async fn an_unknown_kid_is_named_until_the_jwks_file_gains_it() {
    let (old, new) = (Signer::es256("old"), Signer::ed25519("new"));
    let (dir, verifier) = file_verifier(&[&old], settings());
    let token = new.token(claims("a"));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownKeyId { kid: "new".into() });
    assert!(err.to_string().contains("unknown key id \"new\""), "{err}");

    dir.write("jwks.json", jwks(&[&old, &new]));
    verifier.reload().unwrap();
    assert!(verifier.verify(&token).await.is_ok());

    dir.write("jwks.json", "{\"keys\": [");
    assert!(verifier.reload().unwrap_err().contains("not JSON"));
    assert!(
        verifier.verify(&token).await.is_ok(),
        "a broken file keeps the old keys"
    );
}

#[test]
fn jwks_parsing_skips_keys_it_cannot_use() {
    let ec = Signer::es256("ec");
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "small", "n": b64([0xffu8; 128]), "e": "AQAB"},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "EC", "kid": "hs", "alg": "HS256", "crv": "P-256", "x": "AA", "y": "AA"},
        ec.jwk(),
    ]});
    let set = KeySet::parse(doc.to_string().as_bytes(), "test").unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.find(Some("ec"), Algorithm::ES256).is_ok());
    assert!(
        set.find(None, Algorithm::ES256).is_ok(),
        "the only key serves tokens without kid"
    );

    let err = KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "AA"}]}"#, "jwks.json").unwrap_err();
    assert!(
        err.contains("jwks.json") && err.contains("no usable signing key"),
        "{err}"
    );
    assert!(
        KeySet::parse(b"[]", "x")
            .unwrap_err()
            .contains("\"keys\" array")
    );

    let two = KeySet::parse(jwks(&[&ec, &Signer::es256("b")]).as_bytes(), "x").unwrap();
    assert_eq!(
        two.find(None, Algorithm::ES256).unwrap_err(),
        AuthError::MissingKeyId
    );
}

/// Serves a JWKS that tests can change, and counts fetches.
struct FakeFetcher {
    /// What the next fetch returns; tests change it to rotate keys.
    body: Mutex<String>,
    /// Fetches so far, to check the refresh rate.
    calls: AtomicUsize,
}

impl FakeFetcher {
    fn new(body: String) -> Arc<Self> {
        Arc::new(Self {
            body: Mutex::new(body),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body = self.body.lock().unwrap().clone();
        Box::pin(async move { Ok(body.into_bytes()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_jwks_url_is_refetched_for_unknown_kids_at_a_bounded_rate() {
    let (old, new) = (Signer::es256("old"), Signer::es256("new"));
    let fetcher = FakeFetcher::new(jwks(&[&old]));
    let verifier = JwtVerifier::from_url("https://idp/jwks", fetcher.clone(), settings());
    // Not fetched yet: the first token fetches.
    assert!(verifier.verify(&old.token(claims("a"))).await.is_ok());
    assert_eq!(fetcher.calls(), 1);
    assert!(verifier.verify(&old.token(claims("a"))).await.is_ok());
    assert_eq!(fetcher.calls(), 1, "known keys are served from the cache");

    // The issuer rotates; the first token with the new kid right after the
    // last fetch is refused, without a fetch.
    *fetcher.body.lock().unwrap() = jwks(&[&old, &new]);
    let token = new.token(claims("b"));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err, AuthError::UnknownKeyId { kid: "new".into() });
    assert_eq!(fetcher.calls(), 1);

    tokio::time::advance(MIN_JWKS_REFRESH_INTERVAL).await;
    assert_eq!(verifier.verify(&token).await.unwrap().name(), "b");
    assert_eq!(fetcher.calls(), 2);

    // Made-up kids cost one fetch per interval, however many arrive.
    for _ in 0..100 {
        let forged = Signer::es256("forged").token(claims("x"));
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(AuthError::UnknownKeyId { .. })
        ));
    }
    assert_eq!(fetcher.calls(), 2);
    tokio::time::advance(MIN_JWKS_REFRESH_INTERVAL).await;
    let forged = Signer::es256("forged").token(claims("x"));
    assert!(verifier.verify(&forged).await.is_err());
    assert_eq!(fetcher.calls(), 3);

    // The periodic refresh waits for its interval.
    verifier.refresh_if_due().await.unwrap();
    assert_eq!(fetcher.calls(), 3);
    tokio::time::advance(JWKS_REFRESH_INTERVAL).await;
    verifier.refresh_if_due().await.unwrap();
    assert_eq!(fetcher.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_jwks_url_that_fails_keeps_the_old_keys_or_says_unavailable() {
    let signer = Signer::es256("k");
    let fetcher = FakeFetcher::new("not json".into());
    let verifier = JwtVerifier::from_url("https://idp/jwks", fetcher.clone(), settings());
    assert!(verifier.refresh().await.is_err());
    let token = signer.token(claims("a"));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err, AuthError::JwksUnavailable);
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::Unavailable,
        "the client did nothing wrong"
    );

    *fetcher.body.lock().unwrap() = jwks(&[&signer]);
    tokio::time::advance(MIN_JWKS_REFRESH_INTERVAL).await;
    assert!(verifier.verify(&token).await.is_ok());
    *fetcher.body.lock().unwrap() = "{}".into();
    assert!(verifier.refresh().await.is_err());
    assert!(verifier.verify(&token).await.is_ok());
}

/// Serves `body` over HTTPS on loopback, one response per connection,
/// with a certificate for 127.0.0.1 from `ca`.
async fn serve_https(ca: &Ca, body: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let leaf = ca.leaf(Some("jwks"), None, &["127.0.0.1"], None);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_jwks_is_fetched_over_https_trusting_an_extra_ca() {
    let (dir, ca) = (TempDir::new(), Ca::new("issuer CA"));
    let signer = Signer::rsa("k");
    let addr = serve_https(&ca, jwks(&[&signer])).await;
    let url = format!("https://{addr}/.well-known/jwks.json");

    // Without the issuer's CA the fetch fails, naming the URL.
    let other = dir.write("other.pem", Ca::new("other").cert_pem());
    let err = HttpsFetcher::new(Some(&other))
        .unwrap()
        .fetch(&url)
        .await
        .unwrap_err();
    assert!(err.contains(&url) && err.contains("UnknownIssuer"), "{err}");

    let ca_file = dir.write("ca.pem", ca.cert_pem());
    let args = crate::auth::config::tests::parse(&[
        "--jwt-jwks",
        &url,
        "--jwt-jwks-ca",
        ca_file.to_str().unwrap(),
        "--jwt-allow-any-audience",
    ])
    .unwrap();
    args.validate().unwrap();
    let verifier = JwtVerifier::load(&args).await.unwrap().unwrap();
    assert!(verifier.is_remote());
    assert_eq!(verifier.key_count(), 1);
    assert_eq!(
        verifier
            .verify(&signer.token(claims("svc")))
            .await
            .unwrap()
            .name(),
        "svc"
    );
}

/// A JWKS endpoint that never answers until told to.
struct StuckFetcher {
    release: tokio::sync::Notify,
    body: String,
}

impl JwksFetcher for StuckFetcher {
    fn fetch<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            self.release.notified().await;
            Ok(self.body.clone().into_bytes())
        })
    }
}

#[tokio::test]
async fn tokens_with_unknown_key_ids_cannot_pile_up_behind_a_slow_jwks_fetch() {
    let known = Signer::es256("known");
    let fetcher = Arc::new(StuckFetcher {
        release: tokio::sync::Notify::new(),
        body: jwks(&[&known]),
    });
    let verifier = Arc::new(JwtVerifier::from_url(
        "https://idp/jwks",
        fetcher.clone(),
        settings(),
    ));
    // The first load: the keys are there, the endpoint then hangs.
    verifier.keys.store(Arc::new(
        KeySet::parse(jwks(&[&known]).as_bytes(), "x").unwrap(),
    ));
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..MAX_JWKS_FETCH_WAITERS + 200 {
        let verifier = verifier.clone();
        let forged = Signer::es256("forged").token(claims("x"));
        waiting.spawn(async move { verifier.verify(&forged).await });
    }
    // Every call beyond the bound is answered at once, while the fetch hangs.
    let mut answered = 0;
    while answered < 200 {
        let result = tokio::time::timeout(Duration::from_secs(5), waiting.join_next())
            .await
            .expect("calls beyond the bound do not wait for the fetch")
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(AuthError::UnknownKeyId { .. })));
        answered += 1;
    }
    assert_eq!(waiting.len(), MAX_JWKS_FETCH_WAITERS);
    // Known keys are never held up.
    assert!(verifier.verify(&known.token(claims("a"))).await.is_ok());
    fetcher.release.notify_waiters();
    fetcher.release.notify_one();
    waiting.abort_all();
}
