//! TLS on the gRPC listener, with certificates that rotate without a
//! restart.
//!
//! One rustls [`ServerConfig`] lives as long as the listener. Its certificate
//! comes from a resolver and its client-certificate check from a verifier,
//! each reading an `arc-swap` cell, so [`TlsState::reload`] changes what NEW
//! handshakes see while open connections keep the session they have. With
//! `--tls-client-ca` a client certificate is required (mutual TLS) and is
//! checked by rustls' WebPKI verifier: signed by one of those CAs, and within
//! its validity. The caller's principal is then read once per connection by
//! [`peer_principal`] and carried in [`TlsConnectInfo`].
//!
//! A reload also empties the session cache, so that no client resumes a
//! session (and the client certificate verified in it) established under
//! the CAs it replaced; and [`TlsState::verify_client_chain`] checks a
//! connection's certificate against the CAs of now, for its open streams.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::{Stream, StreamExt};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use x509_parser::extensions::GeneralName;

use super::config::SecurityArgs;
use super::{AuthError, AuthMethod, Principal};

/// How long a client may take to finish the TLS handshake. Ten seconds is
/// ample over any real network and stops a silent peer from holding a
/// connection slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions remembered for resumption (rustls' default).
const SESSION_CACHE_SIZE: usize = 256;
/// Finished handshakes waiting for the server to take them; the server
/// takes them as fast as they come, so this only smooths bursts.
const INCOMING_BACKLOG: usize = 64;

/// The one crypto provider of the gateway's TLS: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's TLS: a rustls configuration whose certificate and client
/// CAs can be swapped. Cheap to clone; clones share the swap points.
#[derive(Clone)]
pub struct TlsState {
    /// Shared by every clone, so a reload through one is seen by all.
    inner: Arc<Inner>,
}

struct Inner {
    /// `--tls-cert`, re-read on reload.
    cert_path: PathBuf,
    /// `--tls-key`, re-read on reload.
    key_path: PathBuf,
    /// `--tls-client-ca`, re-read on reload; `None` when mTLS is off.
    client_ca_path: Option<PathBuf>,
    /// Serves the current certificate to each new handshake.
    resolver: Arc<SwappableCert>,
    /// Checks client certificates against the current CAs (mTLS only).
    verifier: Option<Arc<SwappableVerifier>>,
    /// The sessions clients may resume, emptied by every reload.
    sessions: Arc<SwappableSessions>,
    /// Built once; reloads swap what the resolver and verifier read.
    config: Arc<ServerConfig>,
}

impl TlsState {
    /// The TLS of `args`, or `None` when `--tls-cert` is unset. Errors name
    /// the file and what is wrong with it.
    pub fn load(args: &SecurityArgs) -> Result<Option<TlsState>, String> {
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Self::from_files(cert, key, args.tls_client_ca.as_deref()).map(Some)
            }
            (None, None) => Ok(None),
            _ => Err("--tls-cert and --tls-key go together; set both".into()),
        }
    }

    /// TLS with the certificate chain in `cert` and its key in `key` (PEM);
    /// with `client_ca`, client certificates signed by those CAs are required.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, String> {
        let resolver = Arc::new(SwappableCert {
            current: ArcSwap::from_pointee(load_certified_key(cert, key)?),
        });
        let verifier = match client_ca {
            Some(path) => Some(Arc::new(SwappableVerifier {
                current: ArcSwap::from_pointee(load_client_verifier(path)?),
            })),
            None => None,
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("cannot set up TLS: {err}"))?;
        let builder = match &verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Resumption goes through a cache a reload empties; rustls makes no
        // stateless tickets unless given a ticketer, and none is.
        let sessions = Arc::new(SwappableSessions {
            current: ArcSwap::new(ServerSessionMemoryCache::new(SESSION_CACHE_SIZE)),
        });
        config.session_storage = sessions.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                cert_path: cert.to_owned(),
                key_path: key.to_owned(),
                client_ca_path: client_ca.map(Path::to_owned),
                resolver,
                verifier,
                sessions,
                config: Arc::new(config),
            }),
        })
    }

    /// An acceptor for new connections. Any acceptor made from this state
    /// sees later reloads.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.config.clone())
    }

    /// The rustls configuration behind [`Self::acceptor`].
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.config.clone()
    }

    /// Whether clients must present a certificate (`--tls-client-ca`).
    pub fn requires_client_certificates(&self) -> bool {
        self.inner.verifier.is_some()
    }

    /// The files [`Self::reload`] reads.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let inner = &self.inner;
        [
            Some(&inner.cert_path),
            Some(&inner.key_path),
            inner.client_ca_path.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// Re-reads the certificate, key and client CAs. All of them load, or
    /// nothing changes: a new certificate with an old key, or a broken CA
    /// file, keeps the previous state and says why.
    pub fn reload(&self) -> Result<(), String> {
        let inner = &self.inner;
        let certified = load_certified_key(&inner.cert_path, &inner.key_path)?;
        let verifier = match &inner.client_ca_path {
            Some(path) => Some(load_client_verifier(path)?),
            None => None,
        };
        inner.resolver.current.store(Arc::new(certified));
        if let (Some(swap), Some(verifier)) = (&inner.verifier, verifier) {
            swap.current.store(Arc::new(verifier));
        }
        // Sessions established under the old CAs are not resumed.
        inner
            .sessions
            .current
            .store(ServerSessionMemoryCache::new(SESSION_CACHE_SIZE));
        Ok(())
    }

    /// Whether the client certificate `chain` (leaf first) still verifies
    /// against the current `--tls-client-ca`, now; `Ok` without mTLS.
    pub fn verify_client_chain(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let (Some(verifier), Some((leaf, intermediates))) =
            (&self.inner.verifier, chain.split_first())
        else {
            return Ok(());
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    /// Runs the TLS handshake on `io` (bounded by [`TLS_HANDSHAKE_TIMEOUT`])
    /// and reads the client certificate's principal, if any.
    ///
    /// A handshake that fails leaves the socket closed gently: the alert that
    /// says why (no certificate, unknown CA, expired) is sent, and what the
    /// client already wrote is read and dropped for a moment, so that the
    /// close is not a reset that could destroy the alert before the client
    /// reads it.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsConnection<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.acceptor().accept(io).into_fallible();
        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not finished within {TLS_HANDSHAKE_TIMEOUT:?}"),
                ));
            }
            Ok(Err((err, mut io))) => {
                let _ = tokio::time::timeout(REFUSED_HANDSHAKE_LINGER, async {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = io.shutdown().await;
                    let mut sink = [0u8; 1024];
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                return Err(err);
            }
            Ok(Ok(stream)) => stream,
        };
        let chain = stream.get_ref().1.peer_certificates().map(|certs| {
            certs
                .iter()
                .map(|cert| cert.clone().into_owned())
                .collect::<Arc<[_]>>()
        });
        let principal = match chain.as_deref().and_then(|c| c.first()) {
            Some(cert) => match peer_principal(cert) {
                Ok(principal) => Some(principal),
                Err(err) => {
                    tracing::warn!(%err, "client certificate accepted, but it names no principal");
                    None
                }
            },
            None => None,
        };
        Ok(TlsConnection {
            stream,
            principal,
            chain,
        })
    }
}

/// How long a connection whose handshake failed is read (and what it sends
/// dropped) before it is closed, so the client gets the alert.
const REFUSED_HANDSHAKE_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// The connections of `tcp` (e.g. tonic's `TcpIncoming`), each through
/// the TLS handshake, as a stream for `Server::serve_with_incoming`.
///
/// Handshakes run concurrently, one task each, so a client that connects
/// and stalls holds up nobody; one that fails its handshake is logged at
/// debug and dropped. Errors of `tcp` itself pass through. Stops accepting
/// once the returned stream is dropped.
pub fn incoming<S, IO, E>(state: TlsState, tcp: S) -> ReceiverStream<Result<TlsConnection<IO>, E>>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Send + 'static,
{
    let (tx, rx) = mpsc::channel(INCOMING_BACKLOG);
    tokio::spawn(async move {
        tokio::pin!(tcp);
        loop {
            let next = tokio::select! {
                () = tx.closed() => break,
                next = tcp.next() => next,
            };
            match next {
                None => break,
                Some(Err(err)) => {
                    if tx.send(Err(err)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(io)) => {
                    let (state, tx) = (state.clone(), tx.clone());
                    tokio::spawn(async move {
                        match state.accept(io).await {
                            Ok(connection) => {
                                let _ = tx.send(Ok(connection)).await;
                            }
                            Err(err) => tracing::debug!(%err, "TLS handshake failed"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The principal a client certificate (DER) names: its first URI SAN (e.g.
/// `spiffe://prod/ns/orders/sa/writer`) when it has one, else its subject
/// CN. Call only on a certificate the verifier accepted.
pub fn peer_principal(cert_der: &[u8]) -> Result<Principal, AuthError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|_| AuthError::NoPrincipalInCertificate)?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let uri = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) if !uri.is_empty() => Some(*uri),
            _ => None,
        });
        if let Some(uri) = uri {
            return Ok(Principal::new(uri, AuthMethod::Certificate));
        }
    }
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().filter(|cn| !cn.is_empty()))
        .map(|cn| Principal::new(cn, AuthMethod::Certificate))
        .ok_or(AuthError::NoPrincipalInCertificate)
}

/// A server-side TLS connection and the principal its client certificate
/// names. Implements tonic's [`Connected`], so a stream of these can be
/// served with `Server::serve_with_incoming`, and handlers find the
/// principal in [`TlsConnectInfo`].
pub struct TlsConnection<IO> {
    /// The TLS stream itself.
    stream: tokio_rustls::server::TlsStream<IO>,
    /// Read once at the handshake: parsing the certificate per request would
    /// be waste.
    principal: Option<Principal>,
    /// The client's certificate chain, leaf first, to verify again when the
    /// client CAs change.
    chain: Option<Arc<[CertificateDer<'static>]>>,
}

impl<IO> TlsConnection<IO> {
    /// The principal of the client certificate, when one was presented and
    /// names one.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// The client's certificate chain, leaf first, when one was presented.
    pub fn peer_chain(&self) -> Option<&Arc<[CertificateDer<'static>]>> {
        self.chain.as_ref()
    }

    /// The underlying TLS stream.
    pub fn get_ref(&self) -> &tokio_rustls::server::TlsStream<IO> {
        &self.stream
    }
}

/// What tonic keeps about a [`TlsConnection`]: the transport's own info
/// (addresses) and the client certificate's principal.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo<T> {
    /// The connect info of the transport under TLS, e.g. tonic's
    /// `TcpConnectInfo` with the remote address.
    pub inner: T,
    /// The client certificate's principal, if any.
    pub principal: Option<Principal>,
}

impl<IO: Connected> Connected for TlsConnection<IO> {
    type ConnectInfo = TlsConnectInfo<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        TlsConnectInfo {
            inner: self.stream.get_ref().0.connect_info(),
            principal: self.principal.clone(),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConnection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConnection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The server certificate, swapped on reload.
#[derive(Debug)]
struct SwappableCert {
    /// Read by every handshake, replaced whole by a reload.
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The session cache, replaced (so emptied) by every reload.
#[derive(Debug)]
struct SwappableSessions {
    current: ArcSwap<ServerSessionMemoryCache>,
}

impl StoresServerSessions for SwappableSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.current.load().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current.load().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current.load().take(key)
    }

    fn can_cache(&self) -> bool {
        self.current.load().can_cache()
    }
}

/// The client-certificate check, swapped on reload; each call goes to the
/// WebPKI verifier built from the current CA file.
#[derive(Debug)]
struct SwappableVerifier {
    /// Read by every handshake, replaced whole by a reload.
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl ClientCertVerifier for SwappableVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are sent to the client: the list would have to outlive a
    /// reload. Per RFC 8446 a client then sends any certificate it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {} ({flag}): {err}", path.display()))
}

/// The PEM certificates in `path`; at least one.
pub(crate) fn load_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{} ({flag}) is not valid PEM: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} ({flag}) holds no certificate: expected PEM blocks beginning \
             with -----BEGIN CERTIFICATE-----",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        pem::Error::NoItemsFound => format!(
            "{} (--tls-key) holds no private key: expected a PEM block beginning with \
             -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)",
            path.display()
        ),
        other => format!("{} (--tls-key) is not valid PEM: {other}", path.display()),
    })
}

/// The certificate chain in `cert_path` with the key in `key_path`, checked
/// to be a pair.
fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs = load_certs(cert_path, "--tls-cert")?;
    warn_unless_current(&certs[0], cert_path);
    let key = load_key(key_path)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => format!(
            "the key in {} (--tls-key) does not match the certificate in {} (--tls-cert); \
             give the key the certificate was issued for",
            key_path.display(),
            cert_path.display()
        ),
        other => format!(
            "cannot use the key in {} (--tls-key): {other}; use an RSA, ECDSA (P-256, P-384) \
             or Ed25519 key",
            key_path.display()
        ),
    })
}

/// Logs when the certificate being loaded is outside its validity period:
/// clients will refuse it, but serving it beats serving nothing.
fn warn_unless_current(cert: &CertificateDer<'_>, path: &Path) {
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert)
        && !parsed.validity().is_valid()
    {
        tracing::warn!(
            file = %path.display(),
            not_before = %parsed.validity().not_before,
            not_after = %parsed.validity().not_after,
            "the TLS certificate is outside its validity period; clients will refuse it"
        );
    }
}

/// A verifier requiring client certificates signed by a CA in `path`.
fn load_client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "--tls-client-ca")? {
        roots.add(cert).map_err(|err| {
            format!(
                "{} (--tls-client-ca) holds a certificate that cannot be a trust anchor: {err}",
                path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| format!("{} (--tls-client-ca): {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{Ca, TempDir};
    use rustls::ClientConfig;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientTlsStream;

    /// A server certificate for `localhost` from `ca`, written to `dir`.
    fn server_files(dir: &TempDir, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
        let leaf = ca.leaf(Some("localhost"), None, &["localhost"], None);
        (
            dir.write(&format!("{name}.crt"), &leaf.cert_pem),
            dir.write(&format!("{name}.key"), &leaf.key_pem),
        )
    }

    fn client_config(
        trust: &Ca,
        identity: Option<&crate::auth::testing::Leaf>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(trust.cert_der()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.cert_der()], leaf.key_der())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    type Handshake = (
        io::Result<TlsConnection<DuplexStream>>,
        io::Result<ClientTlsStream<DuplexStream>>,
    );

    /// Both sides of a handshake over an in-memory pipe.
    async fn handshake(state: &TlsState, client: Arc<ClientConfig>) -> Handshake {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        tokio::join!(
            state.accept(server_io),
            TlsConnector::from(client).connect(name, client_io)
        )
    }

    /// Sends `message` from the client and echoes it back from the server.
    async fn echo(
        server: &mut TlsConnection<DuplexStream>,
        client: &mut ClientTlsStream<DuplexStream>,
        message: &[u8],
    ) {
        client.write_all(message).await.unwrap();
        client.flush().await.unwrap();
        let mut buf = vec![0; message.len()];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(&buf).await.unwrap();
        server.flush().await.unwrap();
        let mut back = vec![0; message.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }

    fn mtls(dir: &TempDir, ca: &Ca) -> TlsState {
        let (cert, key) = server_files(dir, ca, "server");
        let client_ca = dir.write("client-ca.crt", ca.cert_pem());
        TlsState::from_files(&cert, &key, Some(&client_ca)).unwrap()
    }

    #[tokio::test]
    async fn plain_tls_serves_h2_without_client_certificates() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let (cert, key) = server_files(&dir, &ca, "server");
        let state = TlsState::from_files(&cert, &key, None).unwrap();
        assert!(!state.requires_client_certificates());
        let (server, client) = handshake(&state, client_config(&ca, None)).await;
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        assert_eq!(server.principal(), None);
        assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        echo(&mut server, &mut client, b"hello").await;
    }

    #[tokio::test]
    async fn client_certificate_names_the_principal_by_cn() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let leaf = ca.leaf(Some("orders-service"), None, &[], None);
        let (server, client) = handshake(&state, client_config(&ca, Some(&leaf))).await;
        let (server, _client) = (server.unwrap(), client.unwrap());
        let principal = server.principal().unwrap();
        assert_eq!(principal.name(), "orders-service");
        assert_eq!(principal.method(), AuthMethod::Certificate);
        let info = server.connect_info();
        assert_eq!(info.principal.as_ref(), Some(principal));
    }

    #[tokio::test]
    async fn client_certificate_names_the_principal_by_spiffe_uri() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let uri = "spiffe://prod/ns/orders/sa/writer";
        let leaf = ca.leaf(Some("ignored-cn"), Some(uri), &[], None);
        let (server, client) = handshake(&state, client_config(&ca, Some(&leaf))).await;
        let (server, _client) = (server.unwrap(), client.unwrap());
        assert_eq!(server.principal().unwrap().name(), uri);
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_refused() {
        let (dir, ca, other) = (TempDir::new(), Ca::new("test CA"), Ca::new("other CA"));
        let state = mtls(&dir, &ca);
        let leaf = other.leaf(Some("intruder"), None, &[], None);
        let (server, _) = handshake(&state, client_config(&ca, Some(&leaf))).await;
        let err = server
            .err()
            .expect("a foreign client certificate must be refused");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn no_client_certificate_is_refused_with_mtls() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let (server, _) = handshake(&state, client_config(&ca, None)).await;
        let err = server.err().expect("mTLS requires a client certificate");
        assert!(err.to_string().contains("no certificates"), "{err}");
    }

    #[tokio::test]
    async fn an_expired_client_certificate_is_refused() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let expired = ca.leaf(Some("late"), None, &[], Some((2000, 2001)));
        let (server, _) = handshake(&state, client_config(&ca, Some(&expired))).await;
        let err = server
            .err()
            .expect("an expired certificate must be refused");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn rotation_reaches_new_connections_and_spares_open_ones() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let (cert, key) = server_files(&dir, &ca, "server");
        let state = TlsState::from_files(&cert, &key, None).unwrap();
        let (server, client) = handshake(&state, client_config(&ca, None)).await;
        let (mut old_server, mut old_client) = (server.unwrap(), client.unwrap());
        let first = old_client.get_ref().1.peer_certificates().unwrap()[0].clone();

        let (new_cert, new_key) = server_files(&dir, &ca, "rotated");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        state.reload().unwrap();

        let (server, client) = handshake(&state, client_config(&ca, None)).await;
        let (_new_server, new_client) = (server.unwrap(), client.unwrap());
        let second = new_client.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_ne!(
            first, second,
            "a new handshake must see the new certificate"
        );
        assert_eq!(
            second.as_ref(),
            std::fs::read(&new_cert)
                .map(|pem| {
                    CertificateDer::from_pem_slice(&pem)
                        .unwrap()
                        .as_ref()
                        .to_vec()
                })
                .unwrap()
        );
        echo(&mut old_server, &mut old_client, b"still here").await;
    }

    #[tokio::test]
    async fn no_session_outlives_the_client_cas_it_was_verified_under() {
        use rustls::HandshakeKind;
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let leaf = ca.leaf(Some("orders-service"), None, &[], None);
        // One client configuration: it keeps the sessions it was given.
        let client = client_config(&ca, Some(&leaf));
        let (server, first) = handshake(&state, client.clone()).await;
        let (mut server, mut first) = (server.unwrap(), first.unwrap());
        // TLS 1.3 hands the session over after the handshake: exchange data.
        echo(&mut server, &mut first, b"hello").await;
        let (_, again) = handshake(&state, client.clone()).await;
        assert_eq!(
            again.unwrap().get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "resumption works while the CAs stay"
        );

        // The client's CA is no longer trusted.
        let other = Ca::new("other CA");
        dir.write("client-ca.crt", other.cert_pem());
        state.reload().unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![leaf.cert_der()];
        assert!(state.verify_client_chain(&chain).is_err());
        let (server, _) = handshake(&state, client.clone()).await;
        let err = server
            .err()
            .expect("a session from before the reload must not be resumed");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_old_certificate() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let (cert, key) = server_files(&dir, &ca, "server");
        let state = TlsState::from_files(&cert, &key, None).unwrap();
        // A new certificate whose key has not arrived yet.
        let (new_cert, _) = server_files(&dir, &ca, "rotated");
        std::fs::copy(&new_cert, &cert).unwrap();
        let err = state.reload().unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let (server, client) = handshake(&state, client_config(&ca, None)).await;
        assert!(
            server.is_ok() && client.is_ok(),
            "the old pair keeps serving"
        );
    }

    #[test]
    fn loading_errors_name_the_file_and_the_fix() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let (cert, key) = server_files(&dir, &ca, "server");
        let empty = dir.write("empty.pem", "");
        let missing = dir.path().join("missing.pem");
        let err = |c: &Path, k: &Path| TlsState::from_files(c, k, None).err().unwrap();

        let e = err(&empty, &key);
        assert!(
            e.contains("empty.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = err(&cert, &empty);
        assert!(
            e.contains("empty.pem") && e.contains("no private key"),
            "{e}"
        );
        let e = err(&missing, &key);
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
        let (_, other_key) = server_files(&dir, &ca, "other");
        let e = err(&cert, &other_key);
        assert!(e.contains("does not match"), "{e}");
        let e = TlsState::from_files(&cert, &key, Some(&empty))
            .err()
            .unwrap();
        assert!(
            e.contains("--tls-client-ca") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn incoming_handshakes_run_side_by_side() {
        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections =
            incoming(state, tonic::transport::server::TcpIncoming::from(listener));
        // A client that connects and never says hello holds up nobody.
        let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Nor does one whose certificate is refused.
        let stranger = Ca::new("other CA").leaf(Some("stranger"), None, &[], None);
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let _ = TlsConnector::from(client_config(&ca, Some(&stranger)))
            .connect(name.clone(), refused)
            .await;

        let leaf = ca.leaf(Some("orders-service"), None, &[], None);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _client = TlsConnector::from(client_config(&ca, Some(&leaf)))
            .connect(name, tcp)
            .await
            .unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), connections.next())
            .await
            .expect("the good client is not held up")
            .unwrap()
            .unwrap();
        let info = accepted.connect_info();
        assert_eq!(info.principal.unwrap().name(), "orders-service");
        assert!(info.inner.remote_addr().is_some());
    }

    #[tokio::test]
    async fn tonic_serves_over_it_and_hands_handlers_the_principal() {
        use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;

        let (dir, ca) = (TempDir::new(), Ca::new("test CA"));
        let state = mtls(&dir, &ca);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(None::<Principal>));
        let record = {
            let seen = seen.clone();
            move |request: tonic::Request<()>| {
                let info = request
                    .extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .ok_or_else(|| tonic::Status::internal("no TLS connect info"))?;
                *seen.lock().unwrap() = info.principal.clone();
                Ok(request)
            }
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(record))
                .add_service(health)
                .serve_with_incoming_shutdown(
                    incoming(state, TcpIncoming::from(listener)),
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );

        let leaf = ca.leaf(None, Some("spiffe://prod/ns/orders/sa/writer"), &[], None);
        let tls = TlsConnector::from(client_config(&ca, Some(&leaf)));
        let connect = tower::service_fn(move |_: http::Uri| {
            let tls = tls.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").unwrap();
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connect)
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
        let principal = seen.lock().unwrap().clone().expect("a principal");
        assert_eq!(principal.name(), "spiffe://prod/ns/orders/sa/writer");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn peer_principal_prefers_the_uri_san_then_the_cn() {
        let ca = Ca::new("test CA");
        let both = ca.leaf(
            Some("cn-name"),
            Some("spiffe://prod/ns/a/sa/b"),
            &["host"],
            None,
        );
        assert_eq!(
            peer_principal(&both.cert_der()).unwrap().name(),
            "spiffe://prod/ns/a/sa/b"
        );
        let cn = ca.leaf(Some("cn-name"), None, &["host"], None);
        assert_eq!(peer_principal(&cn.cert_der()).unwrap().name(), "cn-name");
        let none = ca.leaf(None, None, &["host"], None);
        assert_eq!(
            peer_principal(&none.cert_der()),
            Err(AuthError::NoPrincipalInCertificate)
        );
        assert_eq!(
            peer_principal(b"not a certificate"),
            Err(AuthError::NoPrincipalInCertificate)
        );
    }
}
