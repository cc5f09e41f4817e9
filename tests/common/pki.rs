//! Throwaway certificates for the TLS tests: a CA, a server certificate for
//! `localhost` and `127.0.0.1` and a client certificate signed by it, all
//! written as PEM files to a directory of their own, removed on drop. The
//! gateway and `produce` read them as a user's files.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The principal of [`Pki`]'s client certificate (its URI SAN), as the
/// gateway names it.
pub const CLIENT_PRINCIPAL: &str = "spiffe://tests/produce-cli";

/// A CA and the certificates it signed, as files.
pub struct Pki {
    /// Unique per call: tests running at once never share files.
    dir: PathBuf,
}

impl Pki {
    /// A new CA named `name`, a server certificate (`server.pem`,
    /// `server-key.pem`) for `localhost` and `127.0.0.1`, and a client
    /// certificate (`client.pem`, `client-key.pem`) for
    /// [`CLIENT_PRINCIPAL`]; the CA is `ca.pem`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(super::rand_topic(name));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self { dir };

        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        pki.write("ca.pem", params.self_signed(&key).unwrap().pem());
        let issuer = Issuer::new(params, key);

        let leaf = |names: &[&str], cn: &str, uri: Option<&str>, usage| {
            let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(uri) = uri {
                params
                    .subject_alt_names
                    .push(SanType::URI(uri.to_string().try_into().unwrap()));
            }
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf(
            &["localhost", "127.0.0.1"],
            "localhost",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.write("server.pem", cert);
        pki.write("server-key.pem", key);
        let (cert, key) = leaf(
            &[],
            "produce-cli",
            Some(CLIENT_PRINCIPAL),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki.write("client.pem", cert);
        pki.write("client-key.pem", key);
        pki
    }

    /// The path of a file in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        std::fs::write(self.dir.join(name), contents).unwrap();
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

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
