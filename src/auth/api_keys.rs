//! API keys: long random secrets a client sends as `authorization: Bearer
//! <key>`, each filed under the principal it authenticates.
//!
//! The `--api-keys` file never holds a key, only its SHA-256, one
//! `principal:<64 hex digits>` per line (blank lines and lines starting with
//! `#` are skipped). A principal may contain `:` (e.g. a SPIFFE ID); the
//! hash is what follows the last one. Make a line with
//! `printf %s "$KEY" | sha256sum`. A presented key is hashed and compared
//! with every entry in constant time, so timing says nothing about how close
//! a guess came.
//!
//! Keys must be long random strings: a presented key shorter than
//! [`MIN_KEY_CHARS`] characters is refused before it is looked up, whatever
//! the file holds. The file holds only hashes, so the gateway cannot tell a
//! weak key when it loads them; it tells when one is used. Because every
//! key carries at least 128 bits, an unsalted SHA-256 is enough: a salt
//! defends guessable secrets against precomputed tables, and a 128-bit
//! random key is not guessable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthMethod, Principal};

/// The shortest API key accepted: 22 characters of base64 (6 bits each)
/// hold 128 bits, the least a bearer secret should have. Make keys with
/// `openssl rand -base64 32` (43 characters, 256 bits) or
/// `openssl rand -hex 24` (48 characters, 192 bits).
pub const MIN_KEY_CHARS: usize = 22;

/// The parsed contents of an `--api-keys` file.
#[derive(Debug, Default)]
pub struct ApiKeys {
    /// SHA-256 of each key and the principal it stands for, in file order.
    entries: Vec<([u8; 32], Principal)>,
}

impl ApiKeys {
    /// Parses the text of an `--api-keys` file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], Principal)> = Vec::new();
        let mut lines_of = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |what: &str| {
                format!(
                    "{}: line {number}: {what}; each line is principal:<sha256 hex of the key>, \
                     made with: printf %s \"$KEY\" | sha256sum",
                    origin.display()
                )
            };
            let (principal, hash) = line
                .rsplit_once(':')
                .ok_or_else(|| fail("no ':' between the principal and the hash"))?;
            let principal = principal.trim();
            if principal.is_empty() {
                return Err(fail("the principal is empty"));
            }
            let hash = hash.trim();
            let mut digest = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut digest).is_err() {
                return Err(fail(
                    "the hash is not 64 hex digits (is the key itself there instead of its hash?)",
                ));
            }
            if let Some(first) = entries.iter().position(|(known, _)| *known == digest) {
                return Err(format!(
                    "{}: line {number}: the same key hash as line {}; a key must name one \
                     principal, so give each its own key",
                    origin.display(),
                    lines_of[first]
                ));
            }
            entries.push((digest, Principal::new(principal, AuthMethod::ApiKey)));
            lines_of.push(number);
        }
        Ok(Self { entries })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {} (--api-keys): {err}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The principal of `key`, if it is one of ours. Every entry is compared,
    /// in constant time, whatever matches.
    pub fn lookup(&self, key: &str) -> Option<Principal> {
        self.lookup_digest(&Sha256::digest(key.as_bytes()).into())
    }

    /// The principal of the key whose SHA-256 is `digest`, if it is one
    /// of ours; in constant time, as [`Self::lookup`].
    pub fn lookup_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found = None;
        for (known, principal) in &self.entries {
            if bool::from(known.ct_eq(digest)) {
                found = Some(principal);
            }
        }
        found.cloned()
    }

    /// How many keys the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The line to put in an `--api-keys` file for `key` under `principal`.
pub fn key_line(principal: &str, key: &str) -> String {
    format!(
        "{principal}:{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// The `--api-keys` file, reloadable: lookups read the current keys without
/// locking; a reload that fails keeps them.
#[derive(Debug)]
pub struct ApiKeyStore {
    /// `--api-keys`.
    path: PathBuf,
    /// The keys of the last good load.
    current: ArcSwap<ApiKeys>,
}

impl ApiKeyStore {
    /// Loads `path`; fails when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(ApiKeys::load(path)?),
        })
    }

    /// Re-reads the file; on error the previous keys stay.
    pub fn reload(&self) -> Result<(), String> {
        let keys = ApiKeys::load(&self.path)?;
        self.current.store(Arc::new(keys));
        Ok(())
    }

    /// The file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The principal of `key`, if it is one of ours.
    pub fn lookup(&self, key: &str) -> Option<Principal> {
        self.current.load().lookup(key)
    }

    /// The principal of the key whose SHA-256 is `digest`, if it is one of
    /// ours.
    pub fn lookup_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        self.current.load().lookup_digest(digest)
    }

    /// The keys as last loaded.
    pub fn current(&self) -> Arc<ApiKeys> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::TempDir;

    fn parse(text: &str) -> Result<ApiKeys, String> {
        ApiKeys::parse(text, Path::new("keys.txt"))
    }

    #[test]
    fn keys_are_found_by_their_hash() {
        let text = format!(
            "# loaders\n\n{}\n  {}  \n",
            key_line("bulk-loader", "s3cret-one"),
            key_line("spiffe://prod/ns/orders/sa/x", "s3cret-two"),
        );
        let keys = parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        let one = keys.lookup("s3cret-one").unwrap();
        assert_eq!(one.name(), "bulk-loader");
        assert_eq!(one.method(), AuthMethod::ApiKey);
        assert_eq!(
            keys.lookup("s3cret-two").unwrap().name(),
            "spiffe://prod/ns/orders/sa/x"
        );
        assert_eq!(keys.lookup("s3cret-thr"), None);
        assert_eq!(keys.lookup(""), None);
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let line = key_line("p", "k").to_uppercase().replacen("P:", "p:", 1);
        assert_eq!(parse(&line).unwrap().lookup("k").unwrap().name(), "p");
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let good = key_line("a", "k1");
        let err = parse(&format!("{good}\n# c\nno-colon-here\n")).unwrap_err();
        assert!(err.starts_with("keys.txt: line 3:"), "{err}");
        assert!(err.contains("no ':'"), "{err}");
        let err = parse("p:not-a-hash").unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("64 hex digits"),
            "{err}"
        );
        let err = parse(&format!(":{}", &good[2..])).unwrap_err();
        assert!(err.contains("principal is empty"), "{err}");
        let err = parse(&format!("{good}\n{}", key_line("b", "k1"))).unwrap_err();
        assert!(err.contains("line 2") && err.contains("line 1"), "{err}");
        // The error never shows the line's content, which may be a key
        // pasted in by mistake.
        let err = parse("svc:the-actual-secret-key").unwrap_err();
        assert!(!err.contains("the-actual-secret-key"), "{err}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_keys() {
        let dir = TempDir::new();
        let path = dir.write("keys", key_line("a", "k1"));
        let store = ApiKeyStore::load(&path).unwrap();
        assert!(store.lookup("k1").is_some());
        std::fs::write(&path, key_line("b", "k2")).unwrap();
        store.reload().unwrap();
        assert!(store.lookup("k1").is_none());
        assert_eq!(store.lookup("k2").unwrap().name(), "b");
        std::fs::write(&path, "garbage").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.lookup("k2").unwrap().name(), "b");
    }
}
