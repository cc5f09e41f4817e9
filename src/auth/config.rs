//! The security options of `kafka-gateway serve`: TLS and client
//! certificates, JWT and API-key authentication, the authorization policy,
//! per-principal quotas and how often the files behind them are re-read.
//!
//! Every option is a flag and a `KAFKA_GATEWAY_*` variable, like the rest of
//! [`crate::config::Config`], into which [`SecurityArgs`] is flattened.
//! [`SecurityArgs::validate`] refuses combinations that would silently do
//! less than asked, naming the flags involved.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::units::{parse_duration, parse_size};

/// The claim that names the caller in a JWT: `sub` is the subject, which
/// every issuer sets.
pub const DEFAULT_JWT_PRINCIPAL_CLAIM: &str = "sub";
/// How often the watched files are checked for changes: quick enough that a
/// rotated certificate or a policy edit is live within seconds, rare enough
/// that hashing a few small files costs nothing.
pub const DEFAULT_RELOAD_INTERVAL: &str = "5s";
/// The shortest `--reload-interval` accepted: polling faster buys nothing.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Security: TLS, client certificates, JWT and API-key authentication,
/// authorization and quotas. All off by default.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first). Re-read when
    /// it changes or on SIGHUP; open connections keep the one they began
    /// with.
    #[arg(long, env = "KAFKA_GATEWAY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KAFKA_GATEWAY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Require a client certificate signed by one of these CAs (PEM), i.e.
    /// mutual TLS. The caller's principal is the certificate's first URI SAN
    /// (e.g. spiffe://...), else its subject CN.
    #[arg(long, env = "KAFKA_GATEWAY_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// Accept `authorization: Bearer <JWT>` signed by a key of this JWKS: a
    /// file, or an https:// URL fetched, cached and refreshed when a token
    /// names an unknown key. Algorithms: RS*, PS*, ES256, ES384, EdDSA.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_JWKS", value_name = "PATH_OR_URL")]
    pub jwt_jwks: Option<String>,

    /// Extra CA certificates (PEM) to trust when fetching an https:// JWKS,
    /// besides the system's, e.g. for an in-cluster issuer.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_JWKS_CA", value_name = "PATH")]
    pub jwt_jwks_ca: Option<PathBuf>,

    /// Accept only JWTs whose `iss` is exactly this.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accept only JWTs whose `aud` is or includes this. Required with
    /// --jwt-jwks, unless --jwt-allow-any-audience.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Accept JWTs whatever their `aud`: any token the JWKS signs, for any
    /// service, then passes. Only for an issuer that mints tokens for this
    /// gateway alone.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_ALLOW_ANY_AUDIENCE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub jwt_allow_any_audience: bool,

    /// The JWT claim (a non-empty string) that names the caller.
    #[arg(long, env = "KAFKA_GATEWAY_JWT_PRINCIPAL_CLAIM", value_name = "CLAIM",
          default_value = DEFAULT_JWT_PRINCIPAL_CLAIM)]
    pub jwt_principal_claim: String,

    /// Accept `authorization: Bearer <API key>`: a file of
    /// `principal:<sha256 hex of the key>` lines ('#' starts a comment line).
    #[arg(long, env = "KAFKA_GATEWAY_API_KEYS", value_name = "PATH")]
    pub api_keys: Option<PathBuf>,

    /// Authorization policy (TOML): which principals may produce to which
    /// topics, and per-principal quotas. When set, whatever it does not
    /// grant is denied.
    #[arg(long, env = "KAFKA_GATEWAY_AUTHZ_POLICY", value_name = "PATH")]
    pub authz_policy: Option<PathBuf>,

    /// Stamp every produced record with a Kafka header of this name holding
    /// the caller's principal; a header of that name sent by the client is
    /// replaced, so it cannot be forged.
    #[arg(long, env = "KAFKA_GATEWAY_PRINCIPAL_HEADER", value_name = "NAME")]
    pub principal_header: Option<String>,

    /// Records per second each principal may produce, across all its
    /// streams; a faster caller is slowed down, not refused. Bursts of one
    /// second's worth pass at once. Unlimited when unset; the policy's
    /// [[quota]] entries override it per principal.
    #[arg(long, env = "KAFKA_GATEWAY_QUOTA_RECORDS_PER_SEC", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub quota_records_per_sec: Option<u64>,

    /// Payload bytes per second each principal may produce (e.g. 10MiB),
    /// across all its streams, as --quota-records-per-sec.
    #[arg(long, env = "KAFKA_GATEWAY_QUOTA_BYTES_PER_SEC", value_name = "SIZE",
          value_parser = parse_size)]
    pub quota_bytes_per_sec: Option<usize>,

    /// Require credentials for gRPC health checking and reflection too. By
    /// default they stay open, so probes and tools work without a token.
    #[arg(long, env = "KAFKA_GATEWAY_AUTH_PROTECT_HEALTH",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub auth_protect_health: bool,

    /// How often the certificate, key, client CA, JWKS file, API keys and
    /// policy files are checked for changes (content, not only mtime, so
    /// Kubernetes' symlink swaps of mounted secrets are seen). SIGHUP
    /// reloads them at once.
    #[arg(long, env = "KAFKA_GATEWAY_RELOAD_INTERVAL", value_name = "DURATION",
          default_value = DEFAULT_RELOAD_INTERVAL, value_parser = parse_duration)]
    pub reload_interval: Duration,
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// A local file, reloaded with the other files.
    File(PathBuf),
    /// An https:// URL, fetched and cached.
    Url(String),
}

impl SecurityArgs {
    /// Whether any credential is checked: client certificates, JWTs or API
    /// keys. When not, every caller is anonymous.
    pub fn authentication_enabled(&self) -> bool {
        self.tls_client_ca.is_some() || self.jwt_jwks.is_some() || self.api_keys.is_some()
    }

    /// Where the JWKS comes from, when `--jwt-jwks` is set and valid.
    pub fn jwks_location(&self) -> Option<Result<JwksLocation, String>> {
        self.jwt_jwks.as_deref().map(jwks_location)
    }

    /// Refuses combinations that would silently do less than asked.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (KAFKA_GATEWAY_TLS_KEY), \
                            the certificate's private key"
                    .into());
            }
            (None, Some(_)) => {
                return Err("--tls-key needs --tls-cert (KAFKA_GATEWAY_TLS_CERT), \
                            the certificate it belongs to"
                    .into());
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("--tls-client-ca (client certificates) needs TLS: \
                        set --tls-cert and --tls-key too"
                .into());
        }
        match self.jwks_location() {
            Some(Err(err)) => return Err(err),
            Some(Ok(JwksLocation::File(_))) if self.jwt_jwks_ca.is_some() => {
                return Err("--jwt-jwks-ca applies to an https:// --jwt-jwks only; \
                            drop it for a JWKS file"
                    .into());
            }
            Some(_) => {}
            None => {
                for (set, flag) in [
                    (self.jwt_issuer.is_some(), "--jwt-issuer"),
                    (self.jwt_audience.is_some(), "--jwt-audience"),
                    (self.jwt_jwks_ca.is_some(), "--jwt-jwks-ca"),
                    (self.jwt_allow_any_audience, "--jwt-allow-any-audience"),
                ] {
                    if set {
                        return Err(format!(
                            "{flag} needs --jwt-jwks (KAFKA_GATEWAY_JWT_JWKS), \
                             the keys tokens are checked against"
                        ));
                    }
                }
            }
        }
        if self.jwt_jwks.is_some() {
            match (&self.jwt_audience, self.jwt_allow_any_audience) {
                (None, false) => {
                    return Err(
                        "--jwt-jwks needs --jwt-audience (KAFKA_GATEWAY_JWT_AUDIENCE): \
                                without it any token the JWKS signs, for any service, is \
                                accepted; set the audience this gateway's tokens carry, or \
                                --jwt-allow-any-audience if the issuer mints tokens for this \
                                gateway alone"
                            .into(),
                    );
                }
                (Some(_), true) => {
                    return Err("--jwt-allow-any-audience contradicts --jwt-audience; \
                                drop one of them"
                        .into());
                }
                _ => {}
            }
        }
        if self.jwt_principal_claim.trim().is_empty() {
            return Err("--jwt-principal-claim is empty; name a claim, e.g. sub".into());
        }
        for (value, flag) in [
            (&self.jwt_issuer, "--jwt-issuer"),
            (&self.jwt_audience, "--jwt-audience"),
            (&self.principal_header, "--principal-header"),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("{flag} is empty; give it a value or unset it"));
            }
        }
        if !self.authentication_enabled() {
            for (set, flag, why) in [
                (
                    self.authz_policy.is_some(),
                    "--authz-policy",
                    "grants name principals, and without authentication there are none, \
                     so every request would be denied",
                ),
                (
                    self.principal_header.is_some(),
                    "--principal-header",
                    "there is no principal to stamp",
                ),
                (
                    self.auth_protect_health,
                    "--auth-protect-health",
                    "there are no credentials to require",
                ),
            ] {
                if set {
                    return Err(format!(
                        "{flag} needs authentication ({why}): set --tls-client-ca, \
                         --jwt-jwks or --api-keys"
                    ));
                }
            }
        }
        if self.reload_interval < MIN_RELOAD_INTERVAL {
            return Err(format!(
                "--reload-interval {:?} is too short; use at least {MIN_RELOAD_INTERVAL:?}",
                self.reload_interval
            ));
        }
        Ok(())
    }

    /// Settings that are valid but probably not what was meant, for the
    /// caller to log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.tls_cert.is_none() && (self.jwt_jwks.is_some() || self.api_keys.is_some()) {
            warnings.push(
                "bearer tokens are accepted over plaintext: set --tls-cert and --tls-key \
                 unless TLS ends in front of the gateway (a mesh sidecar, a load balancer)"
                    .into(),
            );
        }
        if self.authentication_enabled() && self.authz_policy.is_none() {
            warnings.push(
                "authentication is on but --authz-policy is not set: every authenticated \
                 caller may write every topic and claim every transactional id (and so fence \
                 another caller's transactions); set --authz-policy to grant each principal \
                 its topics and transactional ids"
                    .into(),
            );
        }
        warnings
    }
}

/// Parses `--jwt-jwks`: an https:// URL, or a path. Plain http:// is
/// refused: a JWKS fetched in the clear lets anyone on the path mint tokens.
fn jwks_location(value: &str) -> Result<JwksLocation, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("--jwt-jwks is empty; give a file path or an https:// URL".into());
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("https://") {
        let uri: http::Uri = value
            .parse()
            .map_err(|err| format!("--jwt-jwks {value:?} is not a valid URL: {err}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("--jwt-jwks {value:?} has no host"));
        }
        return Ok(JwksLocation::Url(value.to_owned()));
    }
    if lower.starts_with("http://") {
        return Err(format!(
            "--jwt-jwks {value:?} is plain http: the keys that vouch for tokens must come \
             over https://, or from a file"
        ));
    }
    if let Some((scheme, _)) = value.split_once("://") {
        return Err(format!(
            "--jwt-jwks {value:?}: {scheme}:// is not supported; give a file path or an https:// URL"
        ));
    }
    Ok(JwksLocation::File(PathBuf::from(value)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    /// Parses security flags as `kafka-gateway serve` would, ignoring the
    /// environment.
    pub(crate) fn parse(args: &[&str]) -> Result<SecurityArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|cli| cli.security)
    }

    fn invalid(args: &[&str]) -> String {
        parse(args).unwrap().validate().unwrap_err()
    }

    #[test]
    fn defaults_are_off() {
        let args = parse(&[]).unwrap();
        assert!(!args.authentication_enabled());
        assert_eq!(args.jwt_principal_claim, "sub");
        assert_eq!(args.reload_interval, Duration::from_secs(5));
        assert!(!args.auth_protect_health);
        assert!(args.validate().is_ok());
        assert!(args.warnings().is_empty());
    }

    #[test]
    fn sizes_and_durations_parse() {
        let args = parse(&[
            "--quota-bytes-per-sec",
            "2MiB",
            "--quota-records-per-sec",
            "500",
            "--reload-interval",
            "250ms",
            "--api-keys",
            "keys.txt",
        ])
        .unwrap();
        assert_eq!(args.quota_bytes_per_sec, Some(2 << 20));
        assert_eq!(args.quota_records_per_sec, Some(500));
        assert_eq!(args.reload_interval, Duration::from_millis(250));
        assert!(args.validate().is_ok());
        assert!(args.authentication_enabled());
        assert!(parse(&["--quota-records-per-sec", "0"]).is_err());
    }

    #[test]
    fn half_tls_is_refused_naming_the_flag() {
        assert!(invalid(&["--tls-cert", "c.pem"]).contains("--tls-key"));
        assert!(invalid(&["--tls-key", "k.pem"]).contains("--tls-cert"));
        assert!(invalid(&["--tls-client-ca", "ca.pem"]).contains("--tls-cert"));
        let mtls = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .unwrap();
        assert!(mtls.validate().is_ok());
        assert!(mtls.authentication_enabled());
    }

    #[test]
    fn jwt_options_need_a_jwks() {
        assert!(invalid(&["--jwt-issuer", "https://idp"]).contains("--jwt-jwks"));
        assert!(invalid(&["--jwt-audience", "gateway"]).contains("--jwt-jwks"));
        assert!(invalid(&["--jwt-jwks-ca", "ca.pem"]).contains("--jwt-jwks"));
        assert!(
            invalid(&["--jwt-jwks", "jwks.json", "--jwt-jwks-ca", "ca.pem"]).contains("https://")
        );
        assert!(
            invalid(&[
                "--jwt-jwks",
                "jwks.json",
                "--jwt-audience",
                "gateway",
                "--jwt-principal-claim",
                " "
            ])
            .contains("claim")
        );
    }

    #[test]
    fn a_jwks_without_an_audience_is_refused_unless_any_audience_is_asked_for() {
        let err = invalid(&["--jwt-jwks", "jwks.json"]);
        assert!(
            err.starts_with("--jwt-jwks needs --jwt-audience")
                && err.contains("--jwt-allow-any-audience"),
            "{err}"
        );
        // An issuer alone does not name this gateway as the token's audience.
        let err = invalid(&["--jwt-jwks", "jwks.json", "--jwt-issuer", "https://idp"]);
        assert!(err.contains("--jwt-audience"), "{err}");
        let any = parse(&["--jwt-jwks", "jwks.json", "--jwt-allow-any-audience"]).unwrap();
        assert!(any.validate().is_ok());
        let both = invalid(&[
            "--jwt-jwks",
            "jwks.json",
            "--jwt-audience",
            "gateway",
            "--jwt-allow-any-audience",
        ]);
        assert!(both.contains("contradicts"), "{both}");
        assert!(invalid(&["--jwt-allow-any-audience"]).contains("needs --jwt-jwks"));
    }

    #[test]
    fn authentication_without_a_policy_warns_that_everyone_may_write_everything() {
        for args in [
            &["--api-keys", "k"][..],
            &["--jwt-jwks", "jwks.json", "--jwt-audience", "gateway"][..],
        ] {
            let warnings = parse(args).unwrap().warnings();
            let warning = warnings
                .iter()
                .find(|w| w.contains("--authz-policy is not set"))
                .unwrap_or_else(|| panic!("no policy warning for {args:?}: {warnings:?}"));
            assert!(
                warning.contains("every authenticated caller may write every topic")
                    && warning.contains("claim every transactional id"),
                "{warning}"
            );
        }
        let with_policy = parse(&["--api-keys", "k", "--authz-policy", "p.toml"]).unwrap();
        assert!(
            !with_policy
                .warnings()
                .iter()
                .any(|w| w.contains("--authz-policy"))
        );
        assert!(parse(&[]).unwrap().warnings().is_empty());
    }

    #[test]
    fn jwks_must_be_https_or_a_file() {
        let err = invalid(&["--jwt-jwks", "http://idp.example/jwks.json"]);
        assert!(err.contains("https://"), "{err}");
        assert!(invalid(&["--jwt-jwks", "ftp://idp/jwks"]).contains("not supported"));
        assert!(invalid(&["--jwt-jwks", "https:///jwks"]).contains("--jwt-jwks \"https:///jwks\""));
        let url = parse(&[
            "--jwt-jwks",
            "https://idp.example/.well-known/jwks.json",
            "--jwt-audience",
            "gateway",
        ])
        .unwrap();
        assert!(url.validate().is_ok());
        assert_eq!(
            url.jwks_location(),
            Some(Ok(JwksLocation::Url(
                "https://idp.example/.well-known/jwks.json".into()
            )))
        );
        let file = parse(&["--jwt-jwks", "/etc/gateway/jwks.json"]).unwrap();
        assert_eq!(
            file.jwks_location(),
            Some(Ok(JwksLocation::File("/etc/gateway/jwks.json".into())))
        );
    }

    #[test]
    fn authorization_needs_authentication() {
        assert!(
            invalid(&["--authz-policy", "p.toml"])
                .contains("--tls-client-ca, --jwt-jwks or --api-keys")
        );
        assert!(invalid(&["--principal-header", "x-principal"]).contains("needs authentication"));
        assert!(invalid(&["--auth-protect-health"]).contains("--auth-protect-health"));
        let ok = parse(&[
            "--api-keys",
            "k",
            "--authz-policy",
            "p.toml",
            "--auth-protect-health",
        ])
        .unwrap();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn tokens_over_plaintext_warn() {
        let args = parse(&["--api-keys", "k", "--authz-policy", "p.toml"]).unwrap();
        assert_eq!(args.warnings().len(), 1);
        assert!(args.warnings()[0].contains("plaintext"));
        assert!(invalid(&["--reload-interval", "0s"]).contains("--reload-interval"));
    }
}
