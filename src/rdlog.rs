//! librdkafka's log, through one path, once.
//!
//! librdkafka reports a broker failure twice: a `FAIL` log line, then the
//! same text as an error event (and, when every broker is down, a third
//! `AllBrokersDown` event whose count can read `0/1 brokers are down`).
//! Printed as they come, an unreachable cluster fills the log with pairs of
//! warnings. Here every log line and error event of every producer goes
//! through [`log`] and [`error`]:
//! - connection trouble (`FAIL` lines, transport, resolve and
//!   all-brokers-down errors) is summarized into one line per state change:
//!   `Kafka brokers unreachable since 12:00:01 UTC: <first reason>`, then
//!   `Kafka brokers reachable again` once a broker answers ([`reachable`]);
//! - an error event that repeats a line just logged is dropped;
//! - any other line is logged at most once per [`REPEAT_WINDOW`] per message
//!   (numbers ignored), the next one saying how many were suppressed;
//! - debug lines (`-X debug=...`) are logged as they come;
//! - after [`silence`] (the gateway said `bye`), nothing is logged.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// A message logged once is not logged again for this long: librdkafka
/// repeats most of its complaints every few seconds while they last.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// How long a logged line is remembered to drop the error event that
/// repeats it (librdkafka queues both at once).
const ECHO_WINDOW: Duration = Duration::from_secs(2);
/// Distinct messages remembered by the rate limit; beyond, the oldest are
/// forgotten (a forgotten message is logged again, never lost).
const MAX_MESSAGES: usize = 1024;

/// Whether the brokers can be reached, as librdkafka's events tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// Nothing seen yet.
    Unknown,
    Reachable,
    /// Since when: seconds since the epoch (for the log) and the instant
    /// (for the outage's length).
    Unreachable {
        since: u64,
        at: Instant,
    },
}

/// Turns connection events into one line per state change.
#[derive(Debug)]
pub struct Summarizer {
    reach: Reach,
}

impl Default for Summarizer {
    fn default() -> Self {
        Self {
            reach: Reach::Unknown,
        }
    }
}

impl Summarizer {
    /// A broker could not be reached for `reason` at `now` (`wall`: seconds
    /// since the epoch): the line to log when this starts an outage.
    pub fn trouble(&mut self, reason: &str, now: Instant, wall: u64) -> Option<String> {
        if matches!(self.reach, Reach::Unreachable { .. }) {
            return None;
        }
        self.reach = Reach::Unreachable {
            since: wall,
            at: now,
        };
        Some(format!(
            "Kafka brokers unreachable since {} UTC: {}",
            clock(wall),
            clean(reason)
        ))
    }

    /// A broker answered at `now`: the line to log when this ends an outage.
    pub fn reachable(&mut self, now: Instant) -> Option<String> {
        let line = match self.reach {
            Reach::Unreachable { since, at } => Some(format!(
                "Kafka brokers reachable again (unreachable since {} UTC, for {}s)",
                clock(since),
                now.saturating_duration_since(at).as_secs()
            )),
            _ => None,
        };
        self.reach = Reach::Reachable;
        line
    }

    /// Whether an outage is going on.
    pub fn unreachable(&self) -> bool {
        matches!(self.reach, Reach::Unreachable { .. })
    }
}

/// Logs each message at most once per window, counting the rest.
#[derive(Debug, Default)]
pub struct Limiter {
    /// Per message (numbers replaced by `#`): when it was last logged and
    /// how many times it was dropped since.
    seen: HashMap<String, (Instant, u64)>,
}

impl Limiter {
    /// `Some(suppressed)` when `message` may be logged at `now`, with how
    /// many identical messages were dropped since it last was.
    pub fn admit(&mut self, message: &str, now: Instant) -> Option<u64> {
        let key = shape(message);
        if let Some((last, dropped)) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(*last) < REPEAT_WINDOW {
                *dropped += 1;
                return None;
            }
            let suppressed = *dropped;
            *last = now;
            *dropped = 0;
            return Some(suppressed);
        }
        if self.seen.len() >= MAX_MESSAGES {
            self.seen
                .retain(|_, (last, _)| now.saturating_duration_since(*last) < REPEAT_WINDOW);
            if self.seen.len() >= MAX_MESSAGES {
                self.seen.clear();
            }
        }
        self.seen.insert(key, (now, 0));
        Some(0)
    }
}

/// The process's librdkafka log: shared by every producer, since whether
/// the brokers can be reached is the process's concern.
struct RdLog {
    silenced: AtomicBool,
    /// Mirrors `state.summary.unreachable()`, so that [`reachable`], called
    /// on every delivery, takes no lock while all is well.
    unreachable: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    summary: Summarizer,
    limiter: Limiter,
    /// Lines just logged, to drop the error event that repeats one.
    recent: VecDeque<(Instant, String)>,
}

static RDLOG: LazyLock<RdLog> = LazyLock::new(|| RdLog {
    silenced: AtomicBool::new(false),
    unreachable: AtomicBool::new(false),
    state: Mutex::new(State::default()),
});

/// A librdkafka log line (`ClientContext::log`).
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    if RDLOG.silenced.load(Ordering::Relaxed) {
        return;
    }
    if let RDKafkaLogLevel::Debug = level {
        // Asked for with -X debug=...: every line, as librdkafka wrote it.
        emit(level, facility, message, 0);
        return;
    }
    let now = Instant::now();
    let mut state = RDLOG.state.lock().unwrap_or_else(|e| e.into_inner());
    state.remember(message, now);
    let serious = (level as i32) <= (RDKafkaLogLevel::Warning as i32);
    if facility == "FAIL" && serious {
        state.trouble(message, now);
        return;
    }
    let Some(suppressed) = state.limiter.admit(message, now) else {
        return;
    };
    drop(state);
    emit(level, facility, message, suppressed);
}

/// A librdkafka error event (`ClientContext::error`).
pub fn error(error: &KafkaError, reason: &str) {
    if RDLOG.silenced.load(Ordering::Relaxed) {
        return;
    }
    let now = Instant::now();
    let mut state = RDLOG.state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = error.rdkafka_error_code()
        && is_connection(code)
    {
        let reason = if code == RDKafkaErrorCode::AllBrokersDown {
            "all brokers are down"
        } else {
            reason
        };
        state.trouble(reason, now);
        return;
    }
    if state.echoes(reason, now) {
        return;
    }
    let line = format!("{error}: {reason}");
    let Some(suppressed) = state.limiter.admit(&line, now) else {
        return;
    };
    drop(state);
    if suppressed > 0 {
        tracing::warn!(target: "librdkafka", %error, reason, suppressed, "librdkafka error");
    } else {
        tracing::warn!(target: "librdkafka", %error, reason, "librdkafka error");
    }
}

/// A broker answered (a delivery, a metadata request): ends an outage.
pub fn reachable() {
    if !RDLOG.unreachable.load(Ordering::Relaxed) || RDLOG.silenced.load(Ordering::Relaxed) {
        return;
    }
    let mut state = RDLOG.state.lock().unwrap_or_else(|e| e.into_inner());
    let line = state.summary.reachable(Instant::now());
    RDLOG.unreachable.store(false, Ordering::Relaxed);
    drop(state);
    if let Some(line) = line {
        tracing::info!(target: "librdkafka", "{line}");
    }
}

/// Nothing more is logged: the gateway said `bye`, and producers being torn
/// down have nothing left to say that matters.
pub fn silence() {
    RDLOG.silenced.store(true, Ordering::Relaxed);
}

impl State {
    fn trouble(&mut self, reason: &str, now: Instant) {
        if let Some(line) = self.summary.trouble(reason, now, wall_now()) {
            RDLOG.unreachable.store(true, Ordering::Relaxed);
            tracing::warn!(target: "librdkafka", "{line}");
        }
    }

    fn remember(&mut self, message: &str, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > ECHO_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= 64 {
            self.recent.pop_front();
        }
        self.recent.push_back((now, message.to_owned()));
    }

    /// Whether `reason` repeats a line just logged.
    fn echoes(&self, reason: &str, now: Instant) -> bool {
        self.recent.iter().any(|(at, message)| {
            now.saturating_duration_since(*at) <= ECHO_WINDOW
                && (message.contains(reason) || reason.contains(message.as_str()))
        })
    }
}

/// Logs a line at the level librdkafka gave it.
fn emit(level: RDKafkaLogLevel, facility: &str, message: &str, suppressed: u64) {
    macro_rules! at {
        ($macro:ident) => {
            if suppressed > 0 {
                tracing::$macro!(target: "librdkafka", facility, suppressed, "{message}")
            } else {
                tracing::$macro!(target: "librdkafka", facility, "{message}")
            }
        };
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => at!(error),
        RDKafkaLogLevel::Warning => at!(warn),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => at!(info),
        RDKafkaLogLevel::Debug => at!(debug),
    }
}

/// The error codes that mean a broker cannot be reached.
fn is_connection(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
    )
}

/// `message` with its runs of digits as `#`: librdkafka's repeats differ in
/// durations and counts (`after 1002ms`).
fn shape(message: &str) -> String {
    let mut shaped = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                shaped.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            shaped.push(c);
        }
    }
    shaped
}

/// A reason without librdkafka's thread prefix (`[thrd:host:9092/1]: `)
/// and per-attempt suffix
/// (`(after 0ms in state CONNECT, 3 identical error(s) suppressed)`).
fn clean(reason: &str) -> &str {
    let reason = match reason
        .strip_prefix("[thrd:")
        .and_then(|r| r.split_once("]: "))
    {
        Some((_, rest)) => rest,
        None => reason,
    };
    match reason.find(" (after ") {
        Some(at) => &reason[..at],
        None => reason,
    }
}

fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS` of a time in seconds since the epoch, in UTC (as the log's
/// own timestamps).
fn clock(secs: u64) -> String {
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_line_until_a_broker_answers() {
        let mut summary = Summarizer::default();
        let start = Instant::now();
        // 12:00:01 UTC on some day.
        let wall = 19_000 * 86_400 + 12 * 3600 + 1;
        assert_eq!(summary.reachable(start), None, "nothing to say at start");
        let reason = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: \
                      Connection refused (after 0ms in state CONNECT)";
        assert_eq!(
            summary.trouble(reason, start, wall).as_deref(),
            Some(
                "Kafka brokers unreachable since 12:00:01 UTC: 127.0.0.1:1/bootstrap: \
                 Connect to ipv4#127.0.0.1:1 failed: Connection refused"
            )
        );
        for i in 1..50 {
            let later = start + Duration::from_millis(400 * i);
            assert_eq!(summary.trouble(reason, later, wall + i), None);
            assert_eq!(summary.trouble("all brokers are down", later, wall), None);
        }
        assert!(summary.unreachable());
        assert_eq!(
            summary
                .reachable(start + Duration::from_secs(21))
                .as_deref(),
            Some("Kafka brokers reachable again (unreachable since 12:00:01 UTC, for 21s)")
        );
        assert_eq!(summary.reachable(start + Duration::from_secs(22)), None);
        // A new outage is a new state change.
        assert!(
            summary
                .trouble("Resolve kafka:9092 failed", start, wall + 60)
                .unwrap()
                .contains("since 12:01:01 UTC: Resolve kafka:9092 failed")
        );
    }

    #[test]
    fn a_message_is_logged_once_per_window_then_says_how_many_were_dropped() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        assert_eq!(
            limiter.admit("Metadata request failed after 12ms", start),
            Some(0)
        );
        for i in 1..=5 {
            let at = start + Duration::from_secs(i);
            // Only the numbers differ: the same message.
            assert_eq!(
                limiter.admit(&format!("Metadata request failed after {i}ms"), at),
                None
            );
        }
        assert_eq!(limiter.admit("another message", start), Some(0));
        assert_eq!(
            limiter.admit("Metadata request failed after 1ms", start + REPEAT_WINDOW),
            Some(5)
        );
        assert_eq!(
            limiter.admit("Metadata request failed after 1ms", start + REPEAT_WINDOW),
            None
        );
    }

    #[test]
    fn the_limiter_forgets_rather_than_grows() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        for i in 0..(MAX_MESSAGES * 3) {
            let message = format!("message {}", "x".repeat(i % 4000));
            limiter.admit(&message, start);
        }
        assert!(limiter.seen.len() <= MAX_MESSAGES);
    }

    #[test]
    fn reasons_lose_the_per_attempt_suffix() {
        assert_eq!(
            clean(
                "a: Connection refused (after 3ms in state CONNECT, 2 identical error(s) suppressed)"
            ),
            "a: Connection refused"
        );
        assert_eq!(clean("Resolve failed"), "Resolve failed");
        assert_eq!(
            clean("[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect failed"),
            "127.0.0.1:1/bootstrap: Connect failed"
        );
        assert_eq!(clock(86_400 + 3661), "01:01:01");
    }
}
