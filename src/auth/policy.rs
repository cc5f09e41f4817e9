//! Authorization: which principal may produce to which topic, use which
//! transactional id, and at what rate.
//!
//! Without `--authz-policy` every caller may do everything ([`Policy::open`]).
//! With it, whatever the file does not grant is denied:
//!
//! ```toml
//! [[grant]]
//! principals = ["orders-service", "spiffe://prod/ns/orders/*"]
//! topics = ["orders", "orders.*"]
//! transactional_ids = ["orders-*"]   # optional
//!
//! [[quota]]                          # optional, per-principal rates
//! principals = ["bulk-loader"]
//! records_per_sec = 100000
//! bytes_per_sec = "50MiB"
//! ```
//!
//! A pattern is exact, or ends in `*` to match every name starting with
//! what comes before it; `"*"` alone matches anything, and in `principals`
//! it means any authenticated caller (never an anonymous one). A principal
//! pattern matches the name however it was proven, unless qualified:
//! `cert:` (a client certificate), `key:` (an API key) or `jwt:` (a JWT),
//! as in `"cert:orders-service"`, matches only names proven that way, so a
//! certificate's CN cannot pass for an API key's principal of the same
//! name. The first
//! `[[quota]]` naming a principal wins. Unknown fields and misplaced `*`
//! are errors naming the file and line, so a typo cannot silently grant or
//! deny.
//!
//! A file cut short must not load as a smaller policy (a reload that reads
//! a file while it is being written, a copy that failed half-way): a policy
//! whose last line does not end in a newline, or that grants nothing at
//! all (an emptied file), is refused, and a reload that meets one keeps
//! the policy it had. A cut inside a table leaves a value or a table
//! incomplete, which TOML and the checks below refuse.
//!
//! The check runs per record, so it is plain string work on data built at
//! load time: exact names in hash sets, prefixes in short lists. A stream
//! holds a [`StreamAuthorizer`], which keeps only the grants naming its
//! principal and remembers its last topic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use toml::Spanned;

use super::{AuthMethod, Principal};
use crate::units::parse_size;

/// What the policy file holds, for errors that must say how to fix it.
const FORMAT_HINT: &str = "the file holds [[grant]] tables (principals, topics, \
transactional_ids) and [[quota]] tables (principals, records_per_sec, bytes_per_sec)";

/// Per-principal rates from a `[[quota]]` table; `None` keeps the flag's
/// default (`--quota-records-per-sec`, `--quota-bytes-per-sec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaOverride {
    /// Records per second.
    pub records_per_sec: Option<u64>,
    /// Payload bytes per second.
    pub bytes_per_sec: Option<u64>,
}

/// A parsed authorization policy.
#[derive(Debug)]
pub struct Policy {
    /// Grants and quotas; `None` when no policy is configured and all is
    /// allowed.
    rules: Option<Rules>,
}

#[derive(Debug, Default)]
struct Rules {
    /// `[[grant]]` tables, in file order.
    grants: Vec<Grant>,
    /// `[[quota]]` tables, in file order: the first match wins.
    quotas: Vec<(Principals, QuotaOverride)>,
}

#[derive(Debug)]
struct Grant {
    /// Who the grant is for.
    principals: Principals,
    /// The topics it lets them produce to.
    topics: Matcher,
    /// The transactional ids it lets them use.
    transactional_ids: Matcher,
}

/// Principal patterns: unqualified ones, and those qualified by how the
/// name must have been proven.
#[derive(Debug, Default)]
struct Principals {
    /// Patterns without a qualifier: any method.
    any_method: Matcher,
    /// `cert:`, `key:` and `jwt:` patterns, in [`QUALIFIERS`] order.
    by_method: [Matcher; 3],
}

/// The qualifiers of principal patterns, and the method each names.
const QUALIFIERS: [(&str, AuthMethod); 3] = [
    ("cert:", AuthMethod::Certificate),
    ("key:", AuthMethod::ApiKey),
    ("jwt:", AuthMethod::Jwt),
];

impl Principals {
    fn matches(&self, principal: &Principal) -> bool {
        self.any_method.matches(principal.name())
            || QUALIFIERS
                .iter()
                .zip(&self.by_method)
                .any(|((_, method), matcher)| {
                    *method == principal.method() && matcher.matches(principal.name())
                })
    }

    fn is_empty(&self) -> bool {
        self.any_method.is_empty() && self.by_method.iter().all(Matcher::is_empty)
    }
}

/// A set of patterns, compiled for matching.
#[derive(Debug, Default)]
struct Matcher {
    /// `"*"` was among the patterns.
    any: bool,
    /// Patterns without `*`.
    exact: HashSet<Box<str>>,
    /// Patterns ending in `*`, without it.
    prefixes: Vec<Box<str>>,
}

impl Matcher {
    fn matches(&self, name: &str) -> bool {
        self.any
            || self.exact.contains(name)
            || self
                .prefixes
                .iter()
                .any(|prefix| name.starts_with(&**prefix))
    }

    fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.prefixes.is_empty()
    }
}

impl Policy {
    /// No policy: every caller, authenticated or not, may do everything.
    pub fn open() -> Self {
        Self { rules: None }
    }

    /// Whether this is [`Policy::open`].
    pub fn is_open(&self) -> bool {
        self.rules.is_none()
    }

    /// Reads and parses the policy at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {} (--authz-policy): {err}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a policy file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, String> {
        let at = |span: Option<std::ops::Range<usize>>| match span {
            Some(span) => format!(
                "{}: line {}",
                origin.display(),
                text[..span.start.min(text.len())].matches('\n').count() + 1
            ),
            None => origin.display().to_string(),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(format!(
                "{}: line {}: the file does not end with a newline, so it may have been cut \
                 short (a write still under way?); end its last line with a newline",
                origin.display(),
                text.matches('\n').count() + 1
            ));
        }
        let file: PolicyFile = toml::from_str(text).map_err(|err| {
            format!(
                "{}: {}; {FORMAT_HINT}",
                at(err.span()),
                err.message().trim()
            )
        })?;
        let matcher_of = |patterns: &[(std::ops::Range<usize>, &str)], field: &str| {
            let mut matcher = Matcher::default();
            for (span, text) in patterns {
                let fail = |what: &str| format!("{}: {field}: {what}", at(Some(span.clone())));
                let text = text.trim();
                match text.find('*') {
                    _ if text.is_empty() => {
                        return Err(fail("an empty pattern matches nothing; remove it"));
                    }
                    None => {
                        matcher.exact.insert(text.into());
                    }
                    Some(i) if i + 1 < text.len() => {
                        return Err(fail(&format!(
                            "{text:?} has '*' before its end; '*' may only end a pattern, \
                             as in \"orders.*\""
                        )));
                    }
                    Some(0) => matcher.any = true,
                    Some(i) => matcher.prefixes.push(text[..i].into()),
                }
            }
            Ok(matcher)
        };
        let matcher = |patterns: &[Spanned<String>], field: &str| {
            let patterns: Vec<_> = patterns
                .iter()
                .map(|p| (p.span(), p.get_ref().as_str()))
                .collect();
            matcher_of(&patterns, field)
        };
        let principals = |patterns: &[Spanned<String>]| {
            let mut any_method = Vec::new();
            let mut by_method: [Vec<_>; 3] = Default::default();
            for pattern in patterns {
                let text = pattern.get_ref().trim();
                match QUALIFIERS
                    .iter()
                    .position(|(qualifier, _)| text.starts_with(qualifier))
                {
                    Some(i) => by_method[i].push((pattern.span(), &text[QUALIFIERS[i].0.len()..])),
                    None => any_method.push((pattern.span(), text)),
                }
            }
            let [cert, key, jwt] = by_method;
            Ok::<_, String>(Principals {
                any_method: matcher_of(&any_method, "principals")?,
                by_method: [
                    matcher_of(&cert, "principals")?,
                    matcher_of(&key, "principals")?,
                    matcher_of(&jwt, "principals")?,
                ],
            })
        };
        let mut rules = Rules::default();
        for grant in &file.grant {
            let fail = |what: &str| format!("{}: [[grant]]: {what}", at(Some(grant.span())));
            let entry = grant.get_ref();
            let grant = Grant {
                principals: principals(&entry.principals)?,
                topics: matcher(&entry.topics, "topics")?,
                transactional_ids: matcher(&entry.transactional_ids, "transactional_ids")?,
            };
            if grant.principals.is_empty() {
                return Err(fail(
                    "principals is empty; name who the grant is for (\"*\" for any authenticated caller)",
                ));
            }
            if grant.topics.is_empty() && grant.transactional_ids.is_empty() {
                return Err(fail("it grants nothing; list topics or transactional_ids"));
            }
            rules.grants.push(grant);
        }
        for quota in &file.quota {
            let entry = quota.get_ref();
            let fail = |what: &str| format!("{}: [[quota]]: {what}", at(Some(quota.span())));
            let principals = principals(&entry.principals)?;
            if principals.is_empty() {
                return Err(fail("principals is empty; name who the quota is for"));
            }
            let records_per_sec = match &entry.records_per_sec {
                Some(rate) if *rate.get_ref() == 0 => {
                    return Err(fail(
                        "records_per_sec must be at least 1; remove it for no limit",
                    ));
                }
                rate => rate.as_ref().map(|rate| *rate.get_ref()),
            };
            let bytes_per_sec = match &entry.bytes_per_sec {
                None => None,
                Some(size) => Some(match size.get_ref() {
                    Size::Bytes(0) => {
                        return Err(fail(
                            "bytes_per_sec must be at least 1; remove it for no limit",
                        ));
                    }
                    Size::Bytes(bytes) => *bytes,
                    Size::Text(text) => parse_size(text)
                        .map_err(|err| fail(&format!("bytes_per_sec: {err}")))?
                        as u64,
                }),
            };
            if records_per_sec.is_none() && bytes_per_sec.is_none() {
                return Err(fail(
                    "it sets no rate; give records_per_sec or bytes_per_sec",
                ));
            }
            rules.quotas.push((
                principals,
                QuotaOverride {
                    records_per_sec,
                    bytes_per_sec,
                },
            ));
        }
        if rules.grants.is_empty() {
            return Err(format!(
                "{}: the policy has no [[grant]], so it would deny every caller everything; \
                 an empty or cut-short file is refused (to lock everyone out on purpose, stop \
                 the gateway instead); {FORMAT_HINT}",
                origin.display()
            ));
        }
        Ok(Self { rules: Some(rules) })
    }

    /// Whether `principal` may produce to `topic`. An open policy allows
    /// everyone; otherwise an anonymous caller (`None`) is denied and an
    /// authenticated one needs a grant.
    pub fn allows_topic(&self, principal: Option<&Principal>, topic: &str) -> bool {
        match (&self.rules, principal) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(rules), Some(principal)) => rules
                .grants
                .iter()
                .any(|grant| grant.principals.matches(principal) && grant.topics.matches(topic)),
        }
    }

    /// Whether `principal` may use the transactional id `id`.
    pub fn allows_transactional_id(&self, principal: Option<&Principal>, id: &str) -> bool {
        match (&self.rules, principal) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(rules), Some(principal)) => rules.grants.iter().any(|grant| {
                grant.principals.matches(principal) && grant.transactional_ids.matches(id)
            }),
        }
    }

    /// The rates of the first `[[quota]]` naming `principal`, if any.
    pub fn quota_for(&self, principal: Option<&Principal>) -> Option<QuotaOverride> {
        let (rules, principal) = (self.rules.as_ref()?, principal?);
        rules
            .quotas
            .iter()
            .find(|(principals, _)| principals.matches(principal))
            .map(|(_, quota)| *quota)
    }

    /// Indices of the grants naming `principal`.
    fn grants_for(&self, principal: Option<&Principal>) -> Vec<usize> {
        match (&self.rules, principal) {
            (Some(rules), Some(principal)) => rules
                .grants
                .iter()
                .enumerate()
                .filter(|(_, grant)| grant.principals.matches(principal))
                .map(|(index, _)| index)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// `[[grant]]` tables, spanned so errors can name their line.
    #[serde(default)]
    grant: Vec<Spanned<GrantEntry>>,
    /// `[[quota]]` tables, likewise.
    #[serde(default)]
    quota: Vec<Spanned<QuotaEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    /// Who the grant is for; each pattern spanned for its line in errors.
    principals: Vec<Spanned<String>>,
    /// Topics they may produce to.
    #[serde(default)]
    topics: Vec<Spanned<String>>,
    /// Transactional ids they may use.
    #[serde(default)]
    transactional_ids: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaEntry {
    /// Who the quota is for.
    principals: Vec<Spanned<String>>,
    /// Overrides `--quota-records-per-sec`.
    records_per_sec: Option<Spanned<u64>>,
    /// Overrides `--quota-bytes-per-sec`.
    bytes_per_sec: Option<Spanned<Size>>,
}

/// `bytes_per_sec`: a number, or a string with a KiB/MiB/GiB suffix.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// The policy behind one swap point: readers never lock, a reload that
/// fails keeps the previous policy.
#[derive(Debug)]
pub struct PolicyStore {
    /// `--authz-policy`; `None` for the open policy, which never reloads.
    path: Option<PathBuf>,
    /// The last good policy.
    current: ArcSwap<Policy>,
}

impl PolicyStore {
    /// The policy at `path`, or the open policy when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let policy = match path {
            Some(path) => Policy::load(path)?,
            None => Policy::open(),
        };
        Ok(Self {
            path: path.map(Path::to_owned),
            current: ArcSwap::from_pointee(policy),
        })
    }

    /// Re-reads the file; on error the previous policy stays.
    pub fn reload(&self) -> Result<(), String> {
        if let Some(path) = &self.path {
            self.current.store(Arc::new(Policy::load(path)?));
        }
        Ok(())
    }

    /// The file this store reads, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current policy.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// [`Policy::allows_topic`] on the current policy.
    pub fn allows_topic(&self, principal: Option<&Principal>, topic: &str) -> bool {
        self.current.load().allows_topic(principal, topic)
    }

    /// [`Policy::allows_transactional_id`] on the current policy.
    pub fn allows_transactional_id(&self, principal: Option<&Principal>, id: &str) -> bool {
        self.current.load().allows_transactional_id(principal, id)
    }

    /// [`Policy::quota_for`] on the current policy.
    pub fn quota_for(&self, principal: Option<&Principal>) -> Option<QuotaOverride> {
        self.current.load().quota_for(principal)
    }

    /// A per-stream checker for `principal`.
    pub fn authorizer(self: &Arc<Self>, principal: Option<Principal>) -> StreamAuthorizer {
        let policy = self.current();
        StreamAuthorizer {
            grants: policy.grants_for(principal.as_ref()),
            store: self.clone(),
            principal,
            policy,
            last: None,
        }
    }
}

/// One stream's topic check: the grants naming its principal, picked once
/// (and again after a reload), and its last answer, since a stream tends
/// to send to one topic.
#[derive(Debug)]
pub struct StreamAuthorizer {
    /// Where reloads land.
    store: Arc<PolicyStore>,
    /// The stream's caller.
    principal: Option<Principal>,
    /// The policy `grants` was picked from.
    policy: Arc<Policy>,
    /// Indices into the policy's grants naming the principal.
    grants: Vec<usize>,
    /// The last topic asked about and the answer.
    last: Option<(Box<str>, bool)>,
}

impl StreamAuthorizer {
    /// Whether the stream's principal may produce to `topic`, under the
    /// current policy.
    pub fn allows_topic(&mut self, topic: &str) -> bool {
        let current = self.store.current.load();
        if !Arc::ptr_eq(&current, &self.policy) {
            self.grants = current.grants_for(self.principal.as_ref());
            self.policy = Arc::clone(&current);
            self.last = None;
        }
        if let Some((last, allowed)) = &self.last
            && **last == *topic
        {
            return *allowed;
        }
        let allowed = match &self.policy.rules {
            None => true,
            Some(rules) => self
                .grants
                .iter()
                .any(|&index| rules.grants[index].topics.matches(topic)),
        };
        self.last = Some((topic.into(), allowed));
        allowed
    }

    /// The stream's principal.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use crate::auth::testing::TempDir;

    const EXAMPLE: &str = r#"
[[grant]]
principals = ["orders-service", "spiffe://prod/ns/orders/*"]
topics = ["orders", "orders.*"]
transactional_ids = ["orders-*"]

[[grant]]
principals = ["*"]
topics = ["public"]

[[grant]]
principals = ["admin"]
topics = ["*"]

[[quota]]
principals = ["bulk-loader"]
records_per_sec = 100000
bytes_per_sec = "50MiB"

[[quota]]
principals = ["spiffe://prod/*"]
bytes_per_sec = 1024

[[quota]]
principals = ["*"]
records_per_sec = 10
"#;

    fn who(name: &str) -> Principal {
        Principal::new(name, AuthMethod::Jwt)
    }

    fn parse(text: &str) -> Result<Policy, String> {
        Policy::parse(text, Path::new("policy.toml"))
    }

    #[test]
    fn grants_match_exact_names_and_prefixes() {
        let policy = parse(EXAMPLE).unwrap();
        let orders = who("orders-service");
        let spiffe = who("spiffe://prod/ns/orders/sa/writer");
        for principal in [&orders, &spiffe] {
            assert!(policy.allows_topic(Some(principal), "orders"));
            assert!(policy.allows_topic(Some(principal), "orders.eu"));
            assert!(!policy.allows_topic(Some(principal), "orders-eu"));
            assert!(!policy.allows_topic(Some(principal), "payments"));
            assert!(policy.allows_topic(Some(principal), "public"));
        }
        assert!(!policy.allows_topic(Some(&who("orders-service-2")), "orders"));
        assert!(!policy.allows_topic(Some(&who("spiffe://prod/ns/payments/sa/x")), "orders"));
        assert!(policy.allows_topic(Some(&who("admin")), "anything"));
    }

    #[test]
    fn everything_not_granted_is_denied() {
        let policy = parse(EXAMPLE).unwrap();
        assert!(!policy.allows_topic(Some(&who("stranger")), "orders"));
        assert!(policy.allows_topic(Some(&who("stranger")), "public"));
        // "*" means any authenticated caller, never an anonymous one.
        assert!(!policy.allows_topic(None, "public"));
        assert!(!policy.allows_transactional_id(None, "orders-1"));
    }

    #[test]
    fn a_file_cut_short_is_refused_rather_than_loaded_as_a_smaller_policy() {
        // An emptied file would deny everyone everything.
        for empty in ["", "\n", "# nothing yet\n"] {
            let err = parse(empty).unwrap_err();
            assert!(err.contains("no [[grant]]"), "{err}");
        }
        // Quotas alone grant nothing either.
        let err = parse("[[quota]]\nprincipals = [\"a\"]\nrecords_per_sec = 5\n").unwrap_err();
        assert!(err.contains("no [[grant]]"), "{err}");
        // Cut in the middle of its last line: "100000" became "10".
        let whole = "[[grant]]\nprincipals = [\"a\"]\ntopics = [\"t\"]\n\n[[quota]]\nprincipals = [\"a\"]\nrecords_per_sec = 100000\n";
        assert!(parse(whole).is_ok());
        let cut = &whole[..whole.len() - 5];
        let err = parse(cut).unwrap_err();
        assert!(
            err.starts_with("policy.toml: line 7:") && err.contains("newline"),
            "{err}"
        );
        // Cut at every other byte: never a smaller policy that loads, except
        // at a line's end, where the tables must still each be whole.
        for end in 1..whole.len() {
            let text = &whole[..end];
            if let Ok(policy) = parse(text) {
                assert!(text.ends_with('\n'), "{text:?} loaded");
                let rules = policy.rules.as_ref().unwrap();
                assert_eq!(rules.grants.len(), 1, "{text:?}");
            }
        }
    }

    #[test]
    fn the_open_policy_allows_everything() {
        let open = Policy::open();
        assert!(open.is_open());
        assert!(open.allows_topic(None, "orders"));
        assert!(open.allows_transactional_id(Some(&who("x")), "tx"));
        assert_eq!(open.quota_for(Some(&who("x"))), None);
    }

    #[test]
    fn transactional_ids_need_their_own_grant() {
        let policy = parse(EXAMPLE).unwrap();
        let orders = who("orders-service");
        assert!(policy.allows_transactional_id(Some(&orders), "orders-7"));
        assert!(!policy.allows_transactional_id(Some(&orders), "payments-7"));
        assert!(!policy.allows_transactional_id(Some(&who("admin")), "orders-7"));
    }

    #[test]
    fn qualified_principals_match_only_names_proven_that_way() {
        let policy = parse(
            "[[grant]]\nprincipals = [\"cert:svc\", \"jwt:team-*\", \"anyhow\"]\ntopics = [\"t\"]\n\n\
             [[quota]]\nprincipals = [\"key:bulk\"]\nrecords_per_sec = 5\n",
        )
        .unwrap();
        let as_ = |name: &str, method| Principal::new(name, method);
        assert!(policy.allows_topic(Some(&as_("svc", AuthMethod::Certificate)), "t"));
        assert!(!policy.allows_topic(Some(&as_("svc", AuthMethod::ApiKey)), "t"));
        assert!(!policy.allows_topic(Some(&as_("svc", AuthMethod::Jwt)), "t"));
        assert!(policy.allows_topic(Some(&as_("team-a", AuthMethod::Jwt)), "t"));
        assert!(!policy.allows_topic(Some(&as_("team-a", AuthMethod::Certificate)), "t"));
        for method in [AuthMethod::Certificate, AuthMethod::ApiKey, AuthMethod::Jwt] {
            assert!(policy.allows_topic(Some(&as_("anyhow", method)), "t"));
        }
        assert!(
            policy
                .quota_for(Some(&as_("bulk", AuthMethod::ApiKey)))
                .is_some()
        );
        assert!(
            policy
                .quota_for(Some(&as_("bulk", AuthMethod::Jwt)))
                .is_none()
        );
        let err = parse("[[grant]]\nprincipals = [\"cert:\"]\ntopics = [\"t\"]\n").unwrap_err();
        assert!(err.contains("empty pattern"), "{err}");
    }

    #[test]
    fn the_first_matching_quota_wins() {
        let policy = parse(EXAMPLE).unwrap();
        assert_eq!(
            policy.quota_for(Some(&who("bulk-loader"))),
            Some(QuotaOverride {
                records_per_sec: Some(100_000),
                bytes_per_sec: Some(50 << 20),
            })
        );
        assert_eq!(
            policy.quota_for(Some(&who("spiffe://prod/x"))),
            Some(QuotaOverride {
                records_per_sec: None,
                bytes_per_sec: Some(1024),
            })
        );
        assert_eq!(
            policy
                .quota_for(Some(&who("someone")))
                .unwrap()
                .records_per_sec,
            Some(10)
        );
        assert_eq!(policy.quota_for(None), None);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_fix() {
        let err = parse("[[grant]]\nprincipals = [\"a\"]\ntopic = [\"x\"]\n").unwrap_err();
        assert!(err.starts_with("policy.toml: line 3:"), "{err}");
        assert!(
            err.contains("topic") && err.contains("[[grant]] tables"),
            "{err}"
        );

        let err = parse("[[grant]]\nprincipals = [\"a\"]\ntopics = [\"ord*ers\"]\n").unwrap_err();
        assert!(err.starts_with("policy.toml: line 3: topics:"), "{err}");
        assert!(err.contains("may only end a pattern"), "{err}");

        let err = parse("[[grant]]\nprincipals = [\"*-svc\"]\ntopics = [\"x\"]\n").unwrap_err();
        assert!(err.contains("line 2: principals"), "{err}");

        let err = parse("\n[[grant]]\nprincipals = []\ntopics = [\"x\"]\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("principals is empty"),
            "{err}"
        );

        let err = parse("[[grant]]\nprincipals = [\"a\"]\n").unwrap_err();
        assert!(err.contains("grants nothing"), "{err}");

        let err = parse("[[grant]]\nprincipals = [\"a\"]\ntopics = [\"\"]\n").unwrap_err();
        assert!(err.contains("empty pattern"), "{err}");

        let err =
            parse("[[quota]]\nprincipals = [\"a\"]\nbytes_per_sec = \"5 parsecs\"\n").unwrap_err();
        assert!(
            err.contains("bytes_per_sec") && err.contains("KiB"),
            "{err}"
        );

        let err = parse("[[quota]]\nprincipals = [\"a\"]\n").unwrap_err();
        assert!(err.contains("sets no rate"), "{err}");

        let err = parse("[[quota]]\nprincipals = [\"a\"]\nrecords_per_sec = -5\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");

        let err = parse("[grant]\nprincipals = [\"a\"]\n").unwrap_err();
        assert!(err.starts_with("policy.toml: line 1:"), "{err}");

        let err = parse("[[grants]]\n").unwrap_err();
        assert!(err.contains("grants"), "{err}");
    }

    #[test]
    fn a_stream_authorizer_follows_reloads() {
        let dir = TempDir::new();
        let path = dir.write(
            "policy.toml",
            "[[grant]]\nprincipals = [\"a\"]\ntopics = [\"one\"]\n",
        );
        let store = Arc::new(PolicyStore::load(Some(&path)).unwrap());
        let mut stream = store.authorizer(Some(who("a")));
        assert!(stream.allows_topic("one"));
        assert!(stream.allows_topic("one"));
        assert!(!stream.allows_topic("two"));

        std::fs::write(
            &path,
            "[[grant]]\nprincipals = [\"a\"]\ntopics = [\"two\"]\n",
        )
        .unwrap();
        store.reload().unwrap();
        assert!(!stream.allows_topic("one"));
        assert!(stream.allows_topic("two"));

        std::fs::write(
            &path,
            "[[grant]]\nprincipals = [\"a\"]\ntopicz = [\"one\"]\n",
        )
        .unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.contains("topicz"), "{err}");
        assert!(
            stream.allows_topic("two"),
            "a broken file keeps the old policy"
        );
        assert!(store.allows_topic(Some(&who("a")), "two"));

        let mut anonymous = Arc::new(PolicyStore::load(None).unwrap()).authorizer(None);
        assert!(anonymous.allows_topic("anything"));
    }
}
