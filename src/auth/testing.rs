//! Test fixtures for the security modules: a throwaway CA issuing server
//! and client certificates, and a temporary directory for the files the
//! gateway reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A directory under the system's temp dir, removed when dropped.
pub(crate) struct TempDir {
    /// Unique per process and per call, so parallel tests never share files.
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "kafka-gateway-auth-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in the directory, returning its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A certificate authority made for one test.
pub(crate) struct Ca {
    /// Signs the leaves.
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own self-signed certificate, for trust stores.
    cert: rcgen::Certificate,
}

/// A certificate and its key, as PEM and DER.
pub(crate) struct Leaf {
    /// For files the gateway reads (`--tls-cert`).
    pub(crate) cert_pem: String,
    /// For files the gateway reads (`--tls-key`).
    pub(crate) key_pem: String,
    /// For in-memory rustls configurations of test clients and servers.
    cert_der: CertificateDer<'static>,
    /// PKCS#8, likewise.
    key_der: Vec<u8>,
}

impl Leaf {
    pub(crate) fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
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

    pub(crate) fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub(crate) fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf certificate for server and client use, with subject CN `cn`,
    /// URI SAN `uri`, DNS SANs `dns`, valid from January 1st of the first
    /// year to January 1st of the second when `years` is given.
    pub(crate) fn leaf(
        &self,
        cn: Option<&str>,
        uri: Option<&str>,
        dns: &[&str],
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
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}
