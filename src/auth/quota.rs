//! Per-principal rate limits as backpressure: a caller over its quota is
//! slowed down, never refused.
//!
//! Each principal has one token bucket for records and one for payload
//! bytes, shared by all its streams; anonymous callers (no authentication)
//! share one. A bucket holds one second of its rate (the burst) and refills
//! continuously. [`Quotas::acquire`] first waits until the bucket is out of
//! debt, then takes what the batch needs, going into debt if the batch is
//! larger than what is there: a batch bigger than the burst still passes,
//! and the caller's next batch waits it off. Nothing is ever an error and
//! nothing waits on anything but time, so no caller can wedge another.
//!
//! Rates are `--quota-records-per-sec` and `--quota-bytes-per-sec`, or a
//! principal's `[[quota]]` in the policy, read at each call so a policy
//! reload applies at once. Buckets of principals not seen for
//! [`BUCKET_IDLE`] are dropped: by then they are full again, so forgetting
//! them changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Principal;
use super::config::SecurityArgs;
use super::policy::{PolicyStore, QuotaOverride};

/// How long a principal's bucket is kept after its last use. Far above the
/// one second a bucket takes to refill, so dropping one forgets nothing.
pub const BUCKET_IDLE: Duration = Duration::from_secs(60);
/// Most principals with a bucket at once; past it, idle buckets go first,
/// then the least recently used. Ten thousand buckets are about a megabyte.
pub const MAX_BUCKETS: usize = 10_000;

/// Rates a principal is held to; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Records per second.
    pub records_per_sec: Option<u64>,
    /// Payload bytes per second.
    pub bytes_per_sec: Option<u64>,
}

impl Rates {
    /// The defaults of `args`.
    pub fn from_args(args: &SecurityArgs) -> Self {
        Self {
            records_per_sec: args.quota_records_per_sec,
            bytes_per_sec: args.quota_bytes_per_sec.map(|bytes| bytes as u64),
        }
    }

    /// These rates with what `quota` sets replacing them.
    pub fn overridden_by(self, quota: QuotaOverride) -> Self {
        Self {
            records_per_sec: quota.records_per_sec.or(self.records_per_sec),
            bytes_per_sec: quota.bytes_per_sec.or(self.bytes_per_sec),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.records_per_sec.is_none() && self.bytes_per_sec.is_none()
    }
}

/// The buckets of every principal, with their rates.
#[derive(Debug)]
pub struct Quotas {
    /// `--quota-records-per-sec` and `--quota-bytes-per-sec`.
    defaults: Rates,
    /// Per-principal overrides, read at each call.
    policy: Option<Arc<PolicyStore>>,
    /// Buckets by principal name (`None`: anonymous callers).
    buckets: Mutex<Buckets>,
    /// [`MAX_BUCKETS`], smaller in tests.
    max_buckets: usize,
}

#[derive(Debug)]
struct Buckets {
    /// One entry per principal seen lately.
    map: HashMap<Option<Arc<str>>, Bucket>,
    /// When idle buckets were last dropped.
    last_sweep: Instant,
}

#[derive(Debug)]
struct Bucket {
    /// Records, when limited.
    records: Option<TokenBucket>,
    /// Payload bytes, when limited.
    bytes: Option<TokenBucket>,
    /// The last call, for dropping idle buckets.
    last_seen: Instant,
}

/// A token bucket that may go into debt.
#[derive(Debug)]
struct TokenBucket {
    /// Tokens added per second; also the most it holds (one second's burst).
    rate: f64,
    /// Tokens now; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    fn full(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            updated: now,
        }
    }

    /// Takes `amount` tokens, returning how long the caller must first
    /// wait for earlier debt to be paid off.
    fn take(&mut self, amount: u64, now: Instant) -> Duration {
        self.refill(now);
        let wait = if self.tokens < 0.0 {
            Duration::from_secs_f64(-self.tokens / self.rate)
        } else {
            Duration::ZERO
        };
        self.tokens -= amount as f64;
        wait
    }

    /// Adds the tokens earned since the last update, up to the burst.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.updated = now;
    }

    /// Follows a rate change: what was earned so far at the old rate is
    /// kept, and so is any debt.
    fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate as f64;
        self.tokens = self.tokens.min(self.rate);
    }
}

/// Brings `slot` to `rate`: made full, changed, or dropped when unlimited.
fn update(slot: &mut Option<TokenBucket>, rate: Option<u64>, now: Instant) {
    match (slot.as_mut(), rate) {
        (_, None) => *slot = None,
        (None, Some(rate)) => *slot = Some(TokenBucket::full(rate, now)),
        (Some(bucket), Some(rate)) if bucket.rate != rate as f64 => bucket.set_rate(rate, now),
        (Some(_), Some(_)) => {}
    }
}

impl Quotas {
    /// Quotas with `defaults` for everyone and overrides from `policy`.
    pub fn new(defaults: Rates, policy: Option<Arc<PolicyStore>>) -> Self {
        Self::with_capacity(defaults, policy, MAX_BUCKETS)
    }

    fn with_capacity(defaults: Rates, policy: Option<Arc<PolicyStore>>, max: usize) -> Self {
        Self {
            defaults,
            policy,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            max_buckets: max.max(1),
        }
    }

    /// The rates `principal` is held to now.
    pub fn rates_for(&self, principal: Option<&Principal>) -> Rates {
        match self
            .policy
            .as_ref()
            .and_then(|policy| policy.quota_for(principal))
        {
            Some(quota) => self.defaults.overridden_by(quota),
            None => self.defaults,
        }
    }

    /// Whether any limit can apply: defaults are set, or a policy might set
    /// some. When not, [`Self::acquire`] returns at once.
    pub fn is_enabled(&self) -> bool {
        !self.defaults.is_unlimited() || self.policy.is_some()
    }

    /// Waits until `principal` may send a batch of `records` records and
    /// `bytes` payload bytes, and returns how long it waited (for a
    /// throttled-time metric). Dropping the future mid-wait still counts
    /// the batch.
    pub async fn acquire(
        &self,
        principal: Option<&Principal>,
        records: u64,
        bytes: u64,
    ) -> Duration {
        let wait = self.charge(principal, records, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Takes the batch from the principal's buckets, returning how long the
    /// caller should wait before sending it: [`Self::acquire`] without the
    /// sleep, for a caller that waits in its own way.
    pub fn charge(&self, principal: Option<&Principal>, records: u64, bytes: u64) -> Duration {
        let rates = self.rates_for(principal);
        if rates.is_unlimited() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let key = principal.map(|p| p.shared_name().clone());
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.map.contains_key(&key) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.map.entry(key).or_insert_with(|| Bucket {
            records: None,
            bytes: None,
            last_seen: now,
        });
        bucket.last_seen = now;
        update(&mut bucket.records, rates.records_per_sec, now);
        update(&mut bucket.bytes, rates.bytes_per_sec, now);
        let records_wait = bucket
            .records
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(records, now));
        let bytes_wait = bucket
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(bytes, now));
        records_wait.max(bytes_wait)
    }

    /// Before a new bucket is added: drops idle buckets now and then, and
    /// the least recently used one when still full.
    fn make_room(&self, buckets: &mut Buckets, now: Instant) {
        if buckets.map.len() >= self.max_buckets
            || now.saturating_duration_since(buckets.last_sweep) >= BUCKET_IDLE
        {
            buckets
                .map
                .retain(|_, bucket| now.saturating_duration_since(bucket.last_seen) < BUCKET_IDLE);
            buckets.last_sweep = now;
        }
        if buckets.map.len() >= self.max_buckets {
            let oldest = buckets
                .map
                .iter()
                .min_by_key(|(_, bucket)| bucket.last_seen)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                buckets.map.remove(&oldest);
            }
        }
    }

    /// How many principals have a bucket now.
    pub fn tracked_principals(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use crate::auth::testing::TempDir;

    fn who(name: &str) -> Principal {
        Principal::new(name, AuthMethod::ApiKey)
    }

    fn records_per_sec(rate: u64) -> Rates {
        Rates {
            records_per_sec: Some(rate),
            bytes_per_sec: None,
        }
    }

    /// Sends `total` records in batches of `batch`, offered at `offered`
    /// records per second; returns the time taken and the time throttled.
    async fn produce(
        quotas: &Quotas,
        principal: &Principal,
        total: u64,
        batch: u64,
        offered: u64,
    ) -> (Duration, Duration) {
        let start = Instant::now();
        let mut throttled = Duration::ZERO;
        let pause = Duration::from_secs_f64(batch as f64 / offered as f64);
        for _ in 0..total / batch {
            throttled += quotas.acquire(Some(principal), batch, batch * 100).await;
            tokio::time::sleep(pause).await;
        }
        (start.elapsed(), throttled)
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_at_twice_its_quota_is_slowed_to_it_and_others_are_not() {
        let quotas = Arc::new(Quotas::new(records_per_sec(1_000), None));
        let (greedy, modest) = (who("greedy"), who("modest"));
        let other = tokio::spawn({
            let quotas = quotas.clone();
            async move { produce(&quotas, &modest, 5_000, 50, 500).await }
        });
        // 20,000 records offered at 2,000/s: 10 s unthrottled. At 1,000/s
        // with a one-second burst it takes about 19 s.
        let (elapsed, throttled) = produce(&quotas, &greedy, 20_000, 100, 2_000).await;
        assert!(
            elapsed >= Duration::from_millis(18_500) && elapsed <= Duration::from_millis(19_500),
            "{elapsed:?}"
        );
        let rate = 20_000.0 / elapsed.as_secs_f64();
        assert!((1_000.0..1_100.0).contains(&rate), "{rate} records/s");
        assert!(throttled >= Duration::from_secs(8), "{throttled:?}");
        // The other principal, at half the quota, never waited.
        let (elapsed, throttled) = other.await.unwrap();
        assert_eq!(throttled, Duration::ZERO);
        assert_eq!(elapsed, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn streams_of_one_principal_share_its_bucket() {
        let quotas = Arc::new(Quotas::new(records_per_sec(1_000), None));
        let start = Instant::now();
        let streams: Vec<_> = (0..4)
            .map(|_| {
                let quotas = quotas.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        quotas.acquire(Some(&who("shared")), 100, 0).await;
                    }
                })
            })
            .collect();
        for stream in streams {
            stream.await.unwrap();
        }
        // 20,000 records at 1,000/s, less the first second's burst and the
        // last batches, which pass as soon as the debt before them is paid.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(18_500) && elapsed <= Duration::from_secs(19),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_over_the_burst_passes_and_the_next_one_pays() {
        let quotas = Quotas::new(
            Rates {
                records_per_sec: None,
                bytes_per_sec: Some(1_000),
            },
            None,
        );
        let p = who("big");
        assert_eq!(quotas.acquire(Some(&p), 1, 10_000).await, Duration::ZERO);
        // 9,000 bytes of debt at 1,000 bytes/s.
        assert_eq!(quotas.acquire(Some(&p), 1, 1).await, Duration::from_secs(9));
        assert_eq!(
            quotas.acquire(Some(&p), 1, 0).await,
            Duration::from_millis(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_quota_means_no_wait_and_no_bucket() {
        let quotas = Quotas::new(Rates::default(), None);
        assert!(!quotas.is_enabled());
        for _ in 0..100 {
            assert_eq!(
                quotas.acquire(None, 1_000_000, 1 << 30).await,
                Duration::ZERO
            );
        }
        assert_eq!(quotas.tracked_principals(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn anonymous_callers_share_one_bucket() {
        let quotas = Quotas::new(records_per_sec(10), None);
        assert_eq!(quotas.acquire(None, 10, 0).await, Duration::ZERO);
        assert_eq!(quotas.acquire(None, 10, 0).await, Duration::ZERO);
        assert_eq!(quotas.acquire(None, 1, 0).await, Duration::from_secs(1));
        assert_eq!(quotas.tracked_principals(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_policy_overrides_the_defaults_and_reloads_apply() {
        let dir = TempDir::new();
        let path = dir.write(
            "policy.toml",
            "[[grant]]\nprincipals = [\"*\"]\ntopics = [\"t\"]\n\n[[quota]]\nprincipals = [\"bulk-*\"]\nrecords_per_sec = 100\n",
        );
        let policy = Arc::new(PolicyStore::load(Some(&path)).unwrap());
        let quotas = Quotas::new(records_per_sec(10), Some(policy.clone()));
        assert_eq!(quotas.rates_for(Some(&who("bulk-1"))), records_per_sec(100));
        assert_eq!(quotas.rates_for(Some(&who("small"))), records_per_sec(10));

        assert_eq!(
            quotas.acquire(Some(&who("bulk-1")), 150, 0).await,
            Duration::ZERO
        );
        assert_eq!(
            quotas.acquire(Some(&who("bulk-1")), 1, 0).await,
            Duration::from_millis(500)
        );

        std::fs::write(
            &path,
            "[[grant]]\nprincipals = [\"*\"]\ntopics = [\"t\"]\n\n[[quota]]\nprincipals = [\"bulk-*\"]\nrecords_per_sec = 1\n",
        )
        .unwrap();
        policy.reload().unwrap();
        assert_eq!(quotas.rates_for(Some(&who("bulk-1"))), records_per_sec(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            quotas.acquire(Some(&who("bulk-1")), 2, 0).await,
            Duration::ZERO
        );
        assert_eq!(
            quotas.acquire(Some(&who("bulk-1")), 1, 0).await,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_are_bounded_and_idle_ones_dropped() {
        let quotas = Quotas::with_capacity(records_per_sec(10), None, 3);
        for name in ["a", "b", "c", "d", "e"] {
            quotas.acquire(Some(&who(name)), 1, 0).await;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(quotas.tracked_principals(), 3);
        tokio::time::advance(BUCKET_IDLE).await;
        quotas.acquire(Some(&who("f")), 1, 0).await;
        assert_eq!(quotas.tracked_principals(), 1);
    }
}
