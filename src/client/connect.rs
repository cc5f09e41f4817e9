//! How `produce` reaches the gateway: plain HTTP/2 for an `http://` target,
//! TLS for an `https://` one (the CA that vouches for the gateway, a client
//! certificate for a gateway that requires one, the name to verify), and
//! the bearer token sent with the stream. When the handshake or the call is
//! refused, [`Connection::unreachable`] and [`Connection::refused`] turn
//! rustls' and the gateway's reasons into what to check. When the server
//! answers in TLS to an http:// target, or in plain HTTP/2 to an https://
//! one, a probe of its first bytes makes that the whole message.
//!
//! The token never appears in `Debug` output, `--help` or any message: the
//! messages name where it came from instead.

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::ProduceError;

// The client's variables are not the server's `KAFKA_GATEWAY_TLS_CERT` and
// `KAFKA_GATEWAY_TLS_KEY`: in a gateway's container those name the server's
// own certificate, which `produce` run there must not pick up as its client
// certificate. The Python and Node examples read the same names.

/// The CA bundle that verifies the gateway (`--tls-ca`).
pub const ENV_CA: &str = "KAFKA_GATEWAY_CA";
/// The client certificate (`--tls-cert`).
pub const ENV_CLIENT_CERT: &str = "KAFKA_GATEWAY_CLIENT_CERT";
/// The client certificate's key (`--tls-key`).
pub const ENV_CLIENT_KEY: &str = "KAFKA_GATEWAY_CLIENT_KEY";
/// The name the gateway's certificate is verified for (`--tls-server-name`).
pub const ENV_TLS_SERVER_NAME: &str = "KAFKA_GATEWAY_TLS_SERVER_NAME";
/// The bearer token (`--token`).
pub const ENV_TOKEN: &str = "KAFKA_GATEWAY_TOKEN";
/// A file holding the bearer token (`--token-file`).
pub const ENV_TOKEN_FILE: &str = "KAFKA_GATEWAY_TOKEN_FILE";

/// TLS and credentials: how `produce` proves who it talks to, and who it is.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS and credentials")]
pub struct ConnectArgs {
    /// Verify the gateway's certificate with these CA certificates (PEM)
    /// instead of the system's roots, e.g. the CA that signed the gateway's
    /// --tls-cert. Needs an https:// --target.
    #[arg(long, env = ENV_CA, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// Present this client certificate (PEM, leaf first) to a gateway that
    /// requires one (its --tls-client-ca). Needs --tls-key.
    #[arg(long, env = ENV_CLIENT_CERT, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = ENV_CLIENT_KEY, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Verify the gateway's certificate for NAME (and send it as SNI)
    /// instead of --target's host, e.g. to connect by IP address to a
    /// gateway whose certificate names only its DNS name.
    #[arg(long, env = ENV_TLS_SERVER_NAME, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Send `authorization: Bearer TOKEN` (a JWT or an API key) with the
    /// stream. Other users can read a flag in `ps`: prefer --token-file or
    /// the variable. Never printed.
    #[arg(long, env = ENV_TOKEN, value_name = "TOKEN", hide_env_values = true,
          value_parser = parse_token)]
    pub token: Option<Token>,

    /// Read the token from PATH, e.g. a mounted secret; whitespace around
    /// it (a trailing newline) is dropped.
    #[arg(long, env = ENV_TOKEN_FILE, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// A bearer token. Its `Debug` shows nothing of it, so a logged or
/// printed [`ConnectArgs`] cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Takes any value: a value parser's error would quote the token, so it is
/// checked later, by [`check_token`], with messages that do not.
fn parse_token(value: &str) -> Result<Token, std::convert::Infallible> {
    Ok(Token(value.to_owned()))
}

/// A token is one run of visible ASCII: what a JWT and an API key are, and
/// what the gateway accepts after `Bearer `.
fn check_token(token: &str, from: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("{from} is empty: give the token, or unset it"));
    }
    if let Some(at) = token.bytes().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{from}: the token must be printable ASCII without spaces (a JWT or an API key); \
             character {} is not",
            at + 1
        ));
    }
    Ok(())
}

/// A flag and its variable, as messages name them.
fn flag(name: &str, env: &str) -> String {
    format!("{name} ({env})")
}

impl ConnectArgs {
    /// Checks the options against each other and against `target`, a URI
    /// from [`super::parse_target`]. Reads no file.
    pub fn validate(&self, target: &str) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(format!(
                    "--tls-cert needs --tls-key ({ENV_CLIENT_KEY}), the client certificate's \
                     private key"
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "--tls-key needs --tls-cert ({ENV_CLIENT_CERT}), the client certificate it \
                     belongs to"
                ));
            }
            _ => {}
        }
        if !is_https(target) {
            for (set, name, env) in [
                (self.tls_ca.is_some(), "--tls-ca", ENV_CA),
                (self.tls_cert.is_some(), "--tls-cert", ENV_CLIENT_CERT),
                (self.tls_key.is_some(), "--tls-key", ENV_CLIENT_KEY),
                (
                    self.tls_server_name.is_some(),
                    "--tls-server-name",
                    ENV_TLS_SERVER_NAME,
                ),
            ] {
                if set {
                    let authority = target.trim_start_matches("http://");
                    return Err(format!(
                        "{} needs TLS, and --target {target} is plain HTTP/2: use \
                         --target https://{authority} (the gateway serves TLS when started \
                         with --tls-cert), or drop {name}",
                        flag(name, env)
                    ));
                }
            }
        }
        if let Some(name) = &self.tls_server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            return Err(format!(
                "--tls-server-name {name:?} is not a DNS name or an IP address"
            ));
        }
        if let Some(Token(token)) = &self.token {
            // Not a clap conflict: its message would blame --token when the
            // variable set it.
            if self.token_file.is_some() {
                return Err(format!(
                    "{} and {} are both set: keep one",
                    flag("--token", ENV_TOKEN),
                    flag("--token-file", ENV_TOKEN_FILE)
                ));
            }
            check_token(token, &flag("--token", ENV_TOKEN))?;
        }
        Ok(())
    }

    /// Where the token comes from, as messages name it.
    fn token_source(&self) -> Option<String> {
        match (&self.token, &self.token_file) {
            (_, Some(path)) => Some(format!("--token-file {}", path.display())),
            (Some(_), None) => Some(flag("--token", ENV_TOKEN)),
            (None, None) => None,
        }
    }
}

fn is_https(target: &str) -> bool {
    target.starts_with("https://")
}

/// The host of a URI, without an IPv6 address' brackets.
fn host(target: &str) -> Option<String> {
    let uri: http::Uri = target.parse().ok()?;
    let host = uri.host()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

/// Whether `host` is this machine, where plaintext never leaves it.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads a file an option names; a failure is a usage error naming both.
fn read(option: &str, path: &Path) -> Result<Vec<u8>, ProduceError> {
    std::fs::read(path).map_err(|err| {
        ProduceError::Usage(format!(
            "{option} {}: cannot read it: {err}",
            path.display()
        ))
    })
}

/// The certificates of a PEM file, refused when it holds none: an empty
/// trust store would fail every handshake with a misleading reason.
fn certificates(option: &str, path: &Path) -> Result<Vec<u8>, ProduceError> {
    let pem = read(option, path)?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(ProduceError::Usage(format!(
            "{option} {} holds no certificate: it needs PEM blocks \
             -----BEGIN CERTIFICATE-----",
            path.display()
        ))),
        Err(err) => Err(ProduceError::Usage(format!(
            "{option} {}: not a valid PEM certificate file: {err}",
            path.display()
        ))),
    }
}

/// Everything needed to open the stream, checked and loaded.
#[derive(Debug)]
pub struct Connection {
    /// The gateway, with TLS configured for an https:// target.
    pub endpoint: Endpoint,
    /// `--target`, for messages.
    target: String,
    /// `Bearer <token>`, marked sensitive so that HTTP/2 never indexes it
    /// in its header tables.
    authorization: Option<AsciiMetadataValue>,
    /// Where the token came from, for messages.
    token_source: Option<String>,
    /// `--tls-ca`, when set: the roots the gateway was verified with.
    tls_ca: Option<PathBuf>,
    /// `--tls-server-name`, when set: the name the gateway was verified for
    /// instead of --target's host.
    server_name: Option<String>,
    /// Whether a client certificate is presented.
    client_cert: bool,
    /// `--connect-timeout`: also bounds the probe that tells which protocol
    /// the server at --target speaks.
    connect_timeout: Duration,
}

impl Connection {
    /// Loads the files `args` names and configures the endpoint. Every
    /// failure is a usage error naming the option.
    pub fn load(
        target: &str,
        connect_timeout: Duration,
        args: &ConnectArgs,
    ) -> Result<Self, ProduceError> {
        args.validate(target).map_err(ProduceError::Usage)?;
        let mut endpoint = Endpoint::from_shared(target.to_owned())
            .map_err(|err| ProduceError::Usage(format!("--target {target}: {err}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if is_https(target) {
            let mut tls = ClientTlsConfig::new().timeout(connect_timeout);
            tls = match &args.tls_ca {
                Some(path) => tls.ca_certificate(Certificate::from_pem(certificates(
                    &flag("--tls-ca", ENV_CA),
                    path,
                )?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
                let cert = certificates(&flag("--tls-cert", ENV_CLIENT_CERT), cert)?;
                let key_option = flag("--tls-key", ENV_CLIENT_KEY);
                let key_pem = read(&key_option, key)?;
                if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                    return Err(ProduceError::Usage(format!(
                        "{key_option} {} holds no private key: it needs a PEM block \
                         -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)",
                        key.display()
                    )));
                }
                tls = tls.identity(Identity::from_pem(cert, key_pem));
            }
            if let Some(name) = &args.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|err| ProduceError::Usage(tls_config_error(args, &err)))?;
        }
        let authorization = match (&args.token, &args.token_file) {
            (_, Some(path)) => {
                let option = flag("--token-file", ENV_TOKEN_FILE);
                let bytes = read(&option, path)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ProduceError::Usage(format!(
                        "{option} {}: not a token: it is not text",
                        path.display()
                    ))
                })?;
                let token = text.trim();
                check_token(token, &format!("{option} {}", path.display()))
                    .map_err(ProduceError::Usage)?;
                Some(bearer(token))
            }
            (Some(Token(token)), None) => Some(bearer(token)),
            (None, None) => None,
        };
        Ok(Self {
            endpoint,
            target: target.to_owned(),
            authorization,
            token_source: args.token_source(),
            tls_ca: args.tls_ca.clone(),
            server_name: args.tls_server_name.clone(),
            client_cert: args.tls_cert.is_some(),
            connect_timeout,
        })
    }

    /// Adds the token, if any, to a call's metadata.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
    }

    /// Settings that work but are probably not what was meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(source) = &self.token_source
            && !is_https(&self.target)
            && host(&self.target).is_some_and(|host| !is_loopback(&host))
        {
            warnings.push(format!(
                "warning: the token from {source} is sent in the clear to {}: anyone on the \
                 way can read and reuse it. Use an https:// --target, unless TLS ends in front \
                 of the gateway on this side (a mesh sidecar, a tunnel)",
                self.target
            ));
        }
        warnings
    }

    /// Connecting failed (TCP or the TLS handshake): the error, and what to
    /// check.
    pub fn unreachable(&self, error: &(dyn StdError + 'static)) -> ProduceError {
        let target = &self.target;
        // A sentence of its own follows: no "..".
        let why = super::error_chain(error);
        let why = why.trim_end_matches('.');
        ProduceError::Unavailable(match self.tls_fix(error) {
            Some(fix) => format!("TLS with the gateway at {target} failed: {why}. {fix}"),
            None => format!(
                "cannot reach the gateway at {target}: {why}; is `kafka-gateway serve` running \
                 there? Set the address with --target or KAFKA_GATEWAY_TARGET"
            ),
        })
    }

    /// The connection was made but the call failed before the gateway
    /// answered: refused credentials are told apart from a broken
    /// connection, and a TLS alert from the rest.
    pub fn failed(&self, status: &tonic::Status) -> ProduceError {
        use tonic::Code;
        if let Code::Unauthenticated | Code::PermissionDenied = status.code() {
            return self.refused(status);
        }
        let target = &self.target;
        let why = super::pipeline::Broke::status(status).reason;
        let why = why.trim_end_matches('.');
        if let Some(fix) = self.tls_fix(status) {
            return ProduceError::Unavailable(format!(
                "TLS with the gateway at {target} failed: {why}. {fix}"
            ));
        }
        // A gateway that refuses a client certificate after a TLS 1.3
        // handshake closes the connection, and its alert may be lost on
        // the way: the closed connection is all there is to go by.
        let hint = if !is_https(target) {
            "If the gateway serves TLS (started with --tls-cert), use an https:// --target"
        } else if self.client_cert {
            "If the gateway requires client certificates, it may have refused this one: it \
             must be signed by a CA in the gateway's --tls-client-ca and be valid now; check \
             --tls-cert and --tls-key"
        } else {
            "If the gateway requires client certificates (started with --tls-client-ca), pass \
             --tls-cert and --tls-key; else check that it is running and that --target is a \
             kafka-gateway"
        };
        ProduceError::Unavailable(format!(
            "the gateway at {target} ended the call before answering: {why}. {hint}"
        ))
    }

    /// Connecting failed: [`Self::unreachable`], unless the server at
    /// --target speaks the other protocol than its scheme says, and then
    /// only that.
    pub async fn connect_failed(&self, error: &(dyn StdError + 'static)) -> ProduceError {
        match self.wrong_scheme(error).await {
            Some(wrong) => wrong,
            None => self.unreachable(error),
        }
    }

    /// The call failed before the gateway answered: [`Self::failed`],
    /// unless the server at --target speaks the other protocol than its
    /// scheme says, and then only that.
    pub async fn call_failed(&self, status: &tonic::Status) -> ProduceError {
        use tonic::Code;
        // What a connection that fails at the HTTP/2 level ends the call
        // with; the others come from a gateway.
        if let Code::Internal | Code::Unavailable | Code::Cancelled | Code::Unknown = status.code()
            && let Some(wrong) = self.wrong_scheme(status).await
        {
            return wrong;
        }
        self.failed(status)
    }

    /// When the server at --target answers in TLS to an http:// target, or
    /// in plain HTTP/2 to an https:// one, the fix. Plain HTTP/2 to a TLS
    /// port fails in h2 (`frame with invalid size`: the TLS alert's header
    /// read as a frame's) or as a closed connection, and TLS to a plaintext
    /// port as a corrupt TLS message: neither names the cause, so a second
    /// connection asks the server ([`probe`]).
    async fn wrong_scheme(&self, error: &(dyn StdError + 'static)) -> Option<ProduceError> {
        let https = is_https(&self.target);
        if https
            && !matches!(
                find_tls_error(error),
                Some(TlsFailure::Rustls(
                    rustls::Error::InvalidMessage(_)
                        | rustls::Error::InappropriateMessage { .. }
                        | rustls::Error::InappropriateHandshakeMessage { .. }
                ))
            )
        {
            return None;
        }
        let target = &self.target;
        let authority = target
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        match (https, probe(target, self.connect_timeout).await) {
            (false, Speaks::Tls) => Some(ProduceError::Unavailable(format!(
                "the gateway at {target} answers in TLS, not plain HTTP/2: use --target \
                 https://{authority}, with --tls-ca PATH ({ENV_CA}) when its certificate is \
                 not signed by a CA this system trusts"
            ))),
            (true, Speaks::Http2) => Some(ProduceError::Unavailable(format!(
                "the gateway at {target} answers in plain HTTP/2, not TLS: use --target \
                 http://{authority}, or start the gateway with --tls-cert and --tls-key to \
                 serve TLS"
            ))),
            _ => None,
        }
    }

    /// The gateway refused the call's credentials.
    fn refused(&self, status: &tonic::Status) -> ProduceError {
        let target = &self.target;
        let fix = match (&self.token_source, self.client_cert) {
            (Some(source), _) => format!(
                "check the token from {source}: the gateway says what is wrong with it \
                 (expired, another issuer or audience, an unknown key)"
            ),
            (None, true) => format!(
                "the gateway says what is wrong with the client certificate (--tls-cert); or \
                 send a token with --token-file PATH or {ENV_TOKEN}"
            ),
            (None, false) => format!(
                "this gateway requires credentials: send a token with --token-file PATH, \
                 --token or {ENV_TOKEN}, or a client certificate with --tls-cert and --tls-key \
                 over an https:// --target"
            ),
        };
        ProduceError::Refused(format!(
            "the gateway at {target} refused the call: {:?}: {}. To fix: {fix}",
            status.code(),
            status.message()
        ))
    }

    /// What to check when `error` is a TLS failure, or `None`.
    fn tls_fix(&self, error: &(dyn StdError + 'static)) -> Option<String> {
        let roots = match &self.tls_ca {
            Some(path) => format!("--tls-ca {}", path.display()),
            None => format!("the system's roots (no --tls-ca or {ENV_CA})"),
        };
        let name = match &self.server_name {
            Some(name) => format!("{name:?} (--tls-server-name)"),
            None => format!("{:?}", host(&self.target).unwrap_or_default()),
        };
        let fix = match find_tls_error(error)? {
            TlsFailure::Rustls(rustls::Error::InvalidCertificate(cert)) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "The gateway's certificate is not signed by a CA in {roots}: pass the CA \
                     that signed the gateway's --tls-cert with --tls-ca PATH ({ENV_CA})"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "The gateway's certificate does not name {name}: connect by a name or \
                     address its certificate holds, or verify it for one of those with \
                     --tls-server-name NAME"
                ),
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "The gateway's certificate is not valid now: renew it, or check this \
                     machine's clock"
                        .to_owned()
                }
                other => format!(
                    "The gateway's certificate was refused ({other:?}): check it against \
                     {roots}"
                ),
            },
            TlsFailure::Alert(alert) => match alert.as_str() {
                "CertificateRequired" => "The gateway requires a client certificate: pass \
                                          --tls-cert and --tls-key (one signed by a CA in the \
                                          gateway's --tls-client-ca)"
                    .to_owned(),
                "BadCertificate"
                | "UnknownCA"
                | "CertificateUnknown"
                | "CertificateExpired"
                | "CertificateRevoked"
                | "UnsupportedCertificate"
                | "AccessDenied"
                | "HandshakeFailure"
                | "DecryptError"
                    if self.client_cert =>
                {
                    "The gateway refused the client certificate: it must be signed by a CA in \
                     the gateway's --tls-client-ca and be valid now; check --tls-cert and \
                     --tls-key"
                        .to_owned()
                }
                "BadCertificate" | "HandshakeFailure" | "AccessDenied" => {
                    "The gateway refused the handshake: it may require a client certificate \
                     (pass --tls-cert and --tls-key)"
                        .to_owned()
                }
                "NoApplicationProtocol" => "The server does not speak HTTP/2 over TLS (ALPN \
                                            h2): is --target a kafka-gateway?"
                    .to_owned(),
                other => format!("The gateway ended the handshake ({other})"),
            },
            TlsFailure::Rustls(
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. },
            ) => "The server did not answer in TLS: if the gateway serves plain HTTP/2 (no \
                  --tls-cert), use an http:// --target"
                .to_owned(),
            TlsFailure::Rustls(other) => {
                format!("Check the gateway's certificate against {roots}, and --target ({other})")
            }
            TlsFailure::NoHttp2 => "The server does not speak HTTP/2 over TLS (ALPN h2): is \
                                    --target a kafka-gateway?"
                .to_owned(),
            TlsFailure::Timeout => "No TLS answer within --connect-timeout: is the gateway \
                                    serving TLS at --target? If it serves plain HTTP/2 (no \
                                    --tls-cert), use an http:// --target"
                .to_owned(),
        };
        Some(fix)
    }
}

/// The TLS failures that have a fix to name.
enum TlsFailure<'a> {
    Rustls(&'a rustls::Error),
    /// The gateway's alert, by its name in rustls' `AlertDescription`.
    Alert(String),
    /// The server did not agree to HTTP/2 (tonic's error is private: known
    /// by its message).
    NoHttp2,
    /// No handshake within the timeout (likewise).
    Timeout,
}

/// The TLS failure in an error's chain, if any. rustls' errors travel
/// inside `io::Error`s, whose `source` skips them, so those are looked
/// into. An alert that arrives after the handshake, on the HTTP/2
/// connection, has been flattened to its message by h2 by then: it is
/// known by rustls' wording.
fn find_tls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<TlsFailure<'a>> {
    let mut next = Some(error);
    while let Some(error) = next {
        let rustls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        });
        match rustls {
            Some(rustls::Error::AlertReceived(alert)) => {
                return Some(TlsFailure::Alert(format!("{alert:?}")));
            }
            Some(rustls) => return Some(TlsFailure::Rustls(rustls)),
            None => {}
        }
        let text = error.to_string();
        if let Some((_, alert)) = text.split_once(ALERT_RECEIVED) {
            let name = alert.split(|c: char| !c.is_ascii_alphanumeric()).next();
            return Some(TlsFailure::Alert(name.unwrap_or_default().to_owned()));
        }
        match text.as_str() {
            "HTTP/2 was not negotiated." => return Some(TlsFailure::NoHttp2),
            "TLS handshake timeout." => return Some(TlsFailure::Timeout),
            _ => {}
        }
        next = error.source();
    }
    None
}

/// How rustls words [`rustls::Error::AlertReceived`].
const ALERT_RECEIVED: &str = "received fatal alert: ";

/// The protocol a server answers an HTTP/2 connection preface in.
#[derive(Debug, PartialEq, Eq)]
enum Speaks {
    /// A TLS record: a TLS server's alert (it took the preface for a
    /// corrupt ClientHello).
    Tls,
    /// An HTTP/2 SETTINGS frame on stream 0: a plaintext HTTP/2 server.
    Http2,
    /// Anything else, nothing, or no connection within the time.
    Unknown,
}

/// The HTTP/2 client connection preface, then an empty SETTINGS frame: what
/// an http:// client sends first, and what a plaintext HTTP/2 server
/// answers with its own SETTINGS.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Sends [`PREFACE`] to the server at `target` on a connection of its own
/// and tells what its first bytes are in, within `timeout`.
async fn probe(target: &str, timeout: Duration) -> Speaks {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(uri) = target.parse::<http::Uri>() else {
        return Speaks::Unknown;
    };
    let Some(host) = uri.host() else {
        return Speaks::Unknown;
    };
    let port = uri
        .port_u16()
        .unwrap_or(if is_https(target) { 443 } else { 80 });
    let answer = tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .ok()?;
        stream.write_all(PREFACE).await.ok()?;
        // A frame header is 9 bytes; a TLS alert record, 7, then the close.
        let mut head = [0u8; 9];
        let mut read = 0;
        while read < head.len() {
            match stream.read(&mut head[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        Some(speaks(&head[..read]))
    })
    .await;
    answer.ok().flatten().unwrap_or(Speaks::Unknown)
}

/// What the first bytes a server sent are in.
fn speaks(head: &[u8]) -> Speaks {
    match head {
        // A TLS record (alert 21 or handshake 22) of TLS 1.x (major 3).
        [0x15 | 0x16, 0x03, ..] => Speaks::Tls,
        // A frame header: 24-bit length, type 4 (SETTINGS), flags, and
        // stream 0 (the reserved bit may be set).
        [_, _, _, 0x04, _, s0, 0, 0, 0] if s0 & 0x7f == 0 => Speaks::Http2,
        _ => Speaks::Unknown,
    }
}

/// `Bearer <token>`, for a token [`check_token`] accepted.
fn bearer(token: &str) -> AsciiMetadataValue {
    let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
        .expect("a checked token is visible ASCII");
    value.set_sensitive(true);
    value
}

/// Why tonic refused the TLS settings: in practice, a client certificate
/// and key that do not belong together.
fn tls_config_error(args: &ConnectArgs, error: &tonic::transport::Error) -> String {
    let why = super::error_chain(error);
    match (&args.tls_cert, &args.tls_key) {
        // tonic's message when the system has no CA certificates at all.
        _ if args.tls_ca.is_none() && why.contains("no native certs") => format!(
            "this system has no CA certificates to verify the gateway with ({why}): pass the \
             CA that signed the gateway's certificate with --tls-ca PATH ({ENV_CA})"
        ),
        (Some(cert), Some(key)) => format!(
            "--tls-cert {} and --tls-key {} cannot be used together: {why}; the key must be \
             the certificate's own",
            cert.display(),
            key.display()
        ),
        _ => format!("the TLS settings cannot be used: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn parse(args: &[&str]) -> ConnectArgs {
        Cli::try_parse_from(std::iter::once("produce").chain(args.iter().copied()))
            .unwrap()
            .connect
    }

    #[test]
    fn tls_options_need_an_https_target() {
        let err = parse(&["--tls-ca", "ca.pem"])
            .validate("http://gw:50051")
            .unwrap_err();
        assert!(err.contains("--target https://gw:50051"), "{err}");
        assert!(err.contains(ENV_CA), "{err}");
        let err = parse(&["--tls-server-name", "gw"])
            .validate("http://10.0.0.1:1")
            .unwrap_err();
        assert!(err.contains("--tls-server-name"), "{err}");
        parse(&["--tls-ca", "ca.pem", "--tls-server-name", "gw.internal"])
            .validate("https://10.0.0.1:1")
            .unwrap();
        parse(&["--token", "t"])
            .validate("http://127.0.0.1:1")
            .unwrap();
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let https = "https://gw:1";
        assert!(
            parse(&["--tls-cert", "c.pem"])
                .validate(https)
                .unwrap_err()
                .contains("--tls-key")
        );
        assert!(
            parse(&["--tls-key", "k.pem"])
                .validate(https)
                .unwrap_err()
                .contains("--tls-cert")
        );
        assert!(
            parse(&["--tls-server-name", "not a name"])
                .validate(https)
                .unwrap_err()
                .contains("not a DNS name")
        );
    }

    #[test]
    fn tokens_are_checked_without_being_quoted() {
        let secret = "s3cr3t value";
        let err = parse(&["--token", secret])
            .validate("http://127.0.0.1:1")
            .unwrap_err();
        assert!(err.contains("printable ASCII"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            parse(&["--token", ""])
                .validate("http://127.0.0.1:1")
                .unwrap_err()
                .contains("empty")
        );
        let args = parse(&["--token", "s3cr3t"]);
        assert!(!format!("{args:?}").contains("s3cr3t"));
        let err = parse(&["--token", "s3cr3t", "--token-file", "f"])
            .validate("http://127.0.0.1:1")
            .unwrap_err();
        assert!(err.contains("both set"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn plaintext_tokens_warn_off_this_machine() {
        let warned = |target: &str| {
            Connection::load(
                target,
                Duration::from_secs(1),
                &parse(&["--token", "s3cr3t"]),
            )
            .unwrap()
            .warnings()
        };
        for local in ["http://127.0.0.1:1", "http://[::1]:1", "http://localhost:1"] {
            assert!(warned(local).is_empty(), "{local}");
        }
        let warnings = warned("http://gw.internal:50051");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("in the clear"), "{}", warnings[0]);
        assert!(!warnings[0].contains("s3cr3t"));
        let none = Connection::load("http://gw:1", Duration::from_secs(1), &parse(&[])).unwrap();
        assert!(none.warnings().is_empty());
    }

    #[test]
    fn a_servers_first_bytes_tell_tls_from_http2() {
        // rustls' answer to an HTTP/2 preface: a decode_error alert.
        assert_eq!(speaks(b"\x15\x03\x03\x00\x02\x02\x32"), Speaks::Tls);
        assert_eq!(speaks(b"\x16\x03\x01"), Speaks::Tls);
        // hyper's SETTINGS, cut after its header.
        assert_eq!(
            speaks(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00"),
            Speaks::Http2
        );
        // A SETTINGS ack, an HTTP/1 answer, a frame on stream 1, nothing.
        assert_eq!(
            speaks(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"),
            Speaks::Http2
        );
        assert_eq!(speaks(b"HTTP/1.1 400 Bad Request"), Speaks::Unknown);
        assert_eq!(
            speaks(b"\x00\x00\x18\x04\x00\x00\x00\x00\x01"),
            Speaks::Unknown
        );
        assert_eq!(speaks(b"\x15"), Speaks::Unknown);
        assert_eq!(speaks(b""), Speaks::Unknown);
    }

    /// A server on 127.0.0.1 that answers every connection with `answer`
    /// and closes it; its address.
    async fn answering(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut preface = [0u8; PREFACE.len()];
                let _ = stream.read_exact(&mut preface).await;
                let _ = stream.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_probe_names_the_protocol_the_server_answers_in() {
        let second = Duration::from_secs(5);
        let tls = answering(b"\x15\x03\x03\x00\x02\x02\x32").await;
        assert_eq!(probe(&format!("http://{tls}"), second).await, Speaks::Tls);
        let h2 = answering(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
        assert_eq!(probe(&format!("https://{h2}"), second).await, Speaks::Http2);
        let silent = answering(b"").await;
        assert_eq!(
            probe(&format!("http://{silent}"), second).await,
            Speaks::Unknown
        );
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = refused.local_addr().unwrap();
        drop(refused);
        assert_eq!(
            probe(&format!("http://{closed}"), second).await,
            Speaks::Unknown
        );
    }

    #[tokio::test]
    async fn plain_http2_to_a_tls_port_is_told_first_and_alone() {
        let tls = answering(b"\x15\x03\x03\x00\x02\x02\x32").await;
        let target = format!("http://{tls}");
        let connection = Connection::load(&target, Duration::from_secs(5), &parse(&[])).unwrap();
        let status = tonic::Status::internal("h2 protocol error: frame with invalid size");
        let message = connection.call_failed(&status).await.to_string();
        assert_eq!(
            message,
            format!(
                "the gateway at {target} answers in TLS, not plain HTTP/2: use --target \
                 https://{tls}, with --tls-ca PATH ({ENV_CA}) when its certificate is not \
                 signed by a CA this system trusts"
            )
        );
        // Refused credentials are the gateway's answer: no probe.
        let refused = connection
            .call_failed(&tonic::Status::unauthenticated("no token"))
            .await;
        assert!(matches!(refused, ProduceError::Refused(_)), "{refused}");
    }

    #[test]
    fn the_token_is_sent_as_a_sensitive_bearer_header() {
        let connection = Connection::load(
            "http://127.0.0.1:1",
            Duration::from_secs(1),
            &parse(&["--token", "s3cr3t"]),
        )
        .unwrap();
        assert!(!format!("{connection:?}").contains("s3cr3t"));
        let mut request = tonic::Request::new(());
        connection.authorize(&mut request);
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value, "Bearer s3cr3t");
        assert!(value.is_sensitive());
    }
}
