//! Credentials made for one test: a CA issuing server and client
//! certificates (rcgen), ES256 keys signing JWTs and their JWKS (ring), API
//! keys, and a directory for the files the gateway reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "kafka-gateway-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    /// Writes `contents` to `name` (atomically: a file the gateway polls is
    /// never seen half written), returning its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        let partial = self.path.join(format!(".{name}.partial"));
        std::fs::write(&partial, contents).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for the gateway on loopback: `localhost` and
    /// 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            Some("localhost"),
            None,
            &["localhost"],
            Some("127.0.0.1"),
            None,
        )
    }

    /// A client certificate with subject CN `cn` and, when given, a URI SAN.
    pub fn client(&self, cn: &str, uri: Option<&str>) -> Leaf {
        self.leaf(Some(cn), uri, &[], None, None)
    }

    /// A client certificate that expired at the start of 2021.
    pub fn expired_client(&self, cn: &str) -> Leaf {
        self.leaf(Some(cn), None, &[], None, Some((2020, 2021)))
    }

    fn leaf(
        &self,
        cn: Option<&str>,
        uri: Option<&str>,
        dns: &[&str],
        ip: Option<&str>,
        years: Option<(i32, i32)>,
    ) -> Leaf {
        let names: Vec<String> = dns.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.to_string().try_into().unwrap()));
        }
        if let Some(ip) = ip {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The principal of [`Pki`]'s client certificate (its URI SAN), as the
/// gateway names it.
pub const CLIENT_PRINCIPAL: &str = "spiffe://tests/produce-cli";

/// A CA and certificates it signed, as the files a user would have: the CA
/// (`ca.pem`), a server certificate for `localhost` and `127.0.0.1`
/// (`server.pem`, `server-key.pem`) and a client certificate for
/// [`CLIENT_PRINCIPAL`] (`client.pem`, `client-key.pem`).
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let (dir, ca) = (TempDir::new(), Ca::new(&format!("{name} CA")));
        dir.write("ca.pem", ca.cert_pem());
        let server = ca.server();
        dir.write("server.pem", &server.cert_pem);
        dir.write("server-key.pem", &server.key_pem);
        let client = ca.client("produce-cli", Some(CLIENT_PRINCIPAL));
        dir.write("client.pem", &client.cert_pem);
        dir.write("client-key.pem", &client.key_pem);
        Self { dir }
    }

    /// The path of a file in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        self.dir.write(name, contents);
        self.path(name)
    }

    /// `serve` flags for TLS with the server certificate.
    pub fn serve_tls(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("server.pem"),
            "--tls-key".into(),
            self.path("server-key.pem"),
        ]
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An ES256 key that signs test tokens.
pub struct Signer {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl Signer {
    pub fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Self {
            kid: kid.into(),
            pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        let point = &self.pair.public_key().as_ref()[1..];
        let (x, y) = point.split_at(32);
        json!({"kty": "EC", "kid": self.kid, "crv": "P-256", "use": "sig", "x": b64(x), "y": b64(y)})
    }

    /// A token with `claims`, signed ES256 and naming this key.
    pub fn token(&self, claims: Value) -> String {
        self.sign(
            json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A token with any `header`, signed ES256 by this key.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        let signed = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", b64(signature))
    }
}

/// A JWKS holding the keys of `signers`.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A line of an `--api-keys` file for `principal` holding `key`.
pub fn api_key_line(principal: &str, key: &str) -> String {
    use sha2::Digest;
    format!(
        "{principal}:{}\n",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}
