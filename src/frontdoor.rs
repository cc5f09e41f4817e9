//! What the front door does, said once at start-up: one log line per
//! feature that is on (TLS and client certificates, JWTs, API keys, the
//! policy, quotas, the principal header, the dead-letter topic,
//! transactions), or one line saying that any caller may produce anywhere.
//!
//! It reads the configuration, and the API key and policy files for their
//! counts, after [`crate::auth::Security::load`] accepted them; a file that
//! cannot be read again is said so on its line, never fatal here.

use std::path::Path;

use crate::Config;
use crate::auth::api_keys::ApiKeys;

/// The lines [`log`] prints, in the order a call meets them.
pub fn lines(config: &Config) -> Vec<String> {
    let security = &config.security;
    let mut lines = Vec::new();
    if let Some(cert) = &security.tls_cert {
        lines.push(format!("TLS on: certificate {}", cert.display()));
    }
    if let Some(ca) = &security.tls_client_ca {
        lines.push(format!(
            "mutual TLS on: a client certificate signed by {} is required; the caller is its \
             URI SAN or subject CN",
            ca.display()
        ));
    }
    if let Some(jwks) = &security.jwt_jwks {
        lines.push(format!(
            "JWTs accepted: keys from {jwks}, issuer {}, audience {}, caller from claim {:?}",
            security.jwt_issuer.as_deref().unwrap_or("any"),
            security.jwt_audience.as_deref().unwrap_or("any"),
            security.jwt_principal_claim
        ));
    }
    if let Some(path) = &security.api_keys {
        let count = match ApiKeys::load(path) {
            Ok(keys) => keys.len().to_string(),
            Err(err) => format!("? ({err})"),
        };
        lines.push(format!(
            "API keys accepted: {count} from {}",
            path.display()
        ));
    }
    if let Some(path) = &security.authz_policy {
        lines.push(format!(
            "authorization policy on: {}; whatever it does not grant is denied",
            policy_counts(path)
        ));
    }
    match (security.quota_records_per_sec, security.quota_bytes_per_sec) {
        (None, None) => {}
        (records, bytes) => lines.push(format!(
            "quotas on, per principal: {} records/s, {} bytes/s (the policy's [[quota]] \
             entries override them)",
            records.map_or("unlimited".into(), |r| r.to_string()),
            bytes.map_or("unlimited".into(), |b| b.to_string()),
        )),
    }
    if let Some(header) = &security.principal_header {
        lines.push(format!(
            "every record carries the caller's principal in header {header:?}"
        ));
    }
    if security.tls_cert.is_none()
        && security.jwt_jwks.is_none()
        && security.api_keys.is_none()
        && security.authz_policy.is_none()
    {
        lines.push(
            "no TLS, no authentication, no policy: any caller may produce to any topic \
             (see --tls-cert, --jwt-jwks, --api-keys, --authz-policy)"
                .into(),
        );
    }
    if let Some(topic) = &config.dead_letter_topic {
        lines.push(format!(
            "dead-letter topic on: records failed for a reason of their own are parked in \
             {topic:?}{}",
            if config.dead_letter_retriable {
                ", timed-out ones too"
            } else {
                ""
            }
        ));
    }
    lines.push(format!(
        "transactions on: at most {} transactional streams at once (--max-transactional-streams)",
        config.max_transactional_streams
    ));
    lines
}

/// Logs [`lines`].
pub fn log(config: &Config) {
    for line in lines(config) {
        tracing::info!("{line}");
    }
}

/// "3 grants, 1 quota from policy.toml", read from the policy file.
fn policy_counts(path: &Path) -> String {
    let counted = std::fs::read_to_string(path)
        .map_err(|err| err.to_string())
        .and_then(|text| toml::from_str::<toml::Table>(&text).map_err(|err| err.to_string()))
        .map(|table| {
            let count = |name: &str| {
                table
                    .get(name)
                    .and_then(|v| v.as_array())
                    .map_or(0, Vec::len)
            };
            (count("grant"), count("quota"))
        });
    match counted {
        Ok((grants, quotas)) => format!(
            "{grants} grant{}, {quotas} quota{} from {}",
            if grants == 1 { "" } else { "s" },
            if quotas == 1 { "" } else { "s" },
            path.display()
        ),
        Err(err) => format!("{} (cannot count its grants: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("kafka-gateway").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn an_open_gateway_says_so() {
        let lines = lines(&config(&[]));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("any caller may produce to any topic"));
        assert!(lines[1].starts_with("transactions on: at most"));
    }

    #[test]
    fn each_feature_on_has_its_line() {
        let dir = std::env::temp_dir().join(format!("frontdoor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys");
        let hash = "0".repeat(64);
        std::fs::write(
            &keys,
            format!("# two keys\na:{hash}\nb:{}\n", "1".repeat(64)),
        )
        .unwrap();
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            "[[grant]]\nprincipals = [\"a\"]\ntopics = [\"orders\"]\n\n\
             [[grant]]\nprincipals = [\"b\"]\ntopics = [\"*\"]\n\n\
             [[quota]]\nprincipals = [\"b\"]\nrecords_per_sec = 10\n",
        )
        .unwrap();
        let (keys, policy) = (keys.to_str().unwrap(), policy.to_str().unwrap());
        let lines = lines(&config(&[
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--tls-client-ca",
            "ca.pem",
            "--jwt-jwks",
            "jwks.json",
            "--jwt-issuer",
            "https://issuer",
            "--jwt-audience",
            "gateway",
            "--api-keys",
            keys,
            "--authz-policy",
            policy,
            "--quota-records-per-sec",
            "1000",
            "--dead-letter-topic",
            "dlq",
            "--max-transactional-streams",
            "7",
        ]));
        let all = lines.join("\n");
        for needle in [
            "TLS on: certificate cert.pem",
            "mutual TLS on: a client certificate signed by ca.pem",
            "issuer https://issuer, audience gateway",
            "API keys accepted: 2 from",
            "authorization policy on: 2 grants, 1 quota from",
            "quotas on, per principal: 1000 records/s, unlimited bytes/s",
            "dead-letter topic on: records failed for a reason of their own are parked in \"dlq\"",
            "at most 7 transactional streams",
        ] {
            assert!(all.contains(needle), "{needle:?} in {all}");
        }
        assert!(!all.contains("any caller"), "{all}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
