//! The real Apache Kafka broker for the suites that need one
//! (`tests/kafka_*.rs`): its addresses from the variables that
//! `scripts/kafka.sh env` prints, brokers of a test's own (to crash one, or
//! to put a fault proxy in front of it), and a reader of what
//! `read_committed` and `read_uncommitted` consumers see.
//!
//! Those suites are ignored by a plain `cargo test`, which needs no Kafka;
//! `.ci/run` starts the broker and runs them with `--ignored`. A test that
//! runs without the variables fails and says how to start the broker.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{Consumed, TestKafka};

/// The PLAINTEXT address of the shared broker (a super user).
pub const KAFKA: &str = "KAFKA_GATEWAY_TEST_KAFKA";
/// Its SASL_SSL address: SCRAM-SHA-512, users `gateway` and `admin`.
pub const KAFKA_SASL_SSL: &str = "KAFKA_GATEWAY_TEST_KAFKA_SASL_SSL";
/// The CA that signed its SASL_SSL listener's certificate.
pub const KAFKA_CA: &str = "KAFKA_GATEWAY_TEST_KAFKA_CA";

/// The user of the SASL_SSL listener whose rights the ACLs limit: topics and
/// transactional ids starting with [`ALLOWED`] only.
pub const GATEWAY_USER: (&str, &str) = ("gateway", "gateway-secret");
/// The prefix of what [`GATEWAY_USER`] may use.
pub const ALLOWED: &str = "allowed-";

/// The value of `name`, which `scripts/kafka.sh env` sets.
#[track_caller]
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: this test needs Apache Kafka. Start it and set the variables with \
             `bash scripts/kafka.sh start && eval \"$(bash scripts/kafka.sh env)\"`, then run \
             `cargo test --test <suite> -- --ignored`"
        ),
    }
}

/// The shared broker, over PLAINTEXT.
pub fn kafka() -> TestKafka {
    TestKafka::External(env(KAFKA))
}

/// What a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only committed transactions, and records outside transactions.
    Committed,
    /// Everything written, open and aborted transactions included.
    Uncommitted,
}

/// How long a read goes on with nothing new arriving before it takes the
/// end as reached. Everything is on loopback: a record that is readable
/// arrives within milliseconds.
const SETTLE: Duration = Duration::from_secs(2);

/// Everything a consumer with `isolation` reads of `topic`, from the
/// beginning of every partition, once it has read at least `at_least`
/// records and nothing more arrived for two seconds (with `Uncommitted`,
/// also once every partition's high watermark is reached). Panics after
/// 60 s. Sorted by partition, then offset. With `at_least` 0 it answers
/// "what is visible now".
pub async fn read(
    bootstrap_servers: &str,
    topic: &str,
    isolation: Isolation,
    at_least: usize,
) -> Vec<Consumed> {
    let bootstrap_servers = bootstrap_servers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        read_blocking(&bootstrap_servers, &topic, isolation, at_least)
    })
    .await
    .unwrap()
}

fn read_blocking(
    bootstrap_servers: &str,
    topic: &str,
    isolation: Isolation,
    at_least: usize,
) -> Vec<Consumed> {
    let level = match isolation {
        Isolation::Committed => "read_committed",
        Isolation::Uncommitted => "read_uncommitted",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", "kafka-gateway-tests")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .set("isolation.level", level)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    let mut highs = Vec::new();
    for partition in 0..partitions {
        let high = watermark(&consumer, topic, partition);
        highs.push(high);
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let at_highs = |consumer: &BaseConsumer| {
        let position = consumer.position().expect("position");
        (0..partitions).all(|p| {
            let high = highs[p as usize];
            match position.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(next)) => next >= high,
                _ => high == 0,
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        if out.len() >= at_least
            && idle_since.elapsed() >= SETTLE
            && (isolation == Isolation::Committed || at_highs(&consumer))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{level}: read {} of at least {at_least} records of {topic} in 60 s",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        idle_since = Instant::now();
        out.push(Consumed::from(&message.expect("consume")));
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// The high watermark of a partition; retried for 10 s, as a topic just
/// created may not have its leader yet (NOT_LEADER_OR_FOLLOWER).
pub fn watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok((_, high)) => return high,
            Err(err) if Instant::now() < deadline => {
                eprintln!("watermarks of {topic}/{partition}: {err}; again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => panic!("watermarks of {topic}/{partition}: {err}"),
        }
    }
}

/// `scripts/kafka.sh`.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// A broker of one test's own, started by `scripts/kafka.sh` on free
/// ports with a log directory of its own, and deleted when dropped: a test
/// may kill it, restart it, or put a fault proxy in front of it, and no
/// other test notices.
pub struct OwnBroker {
    /// Its PLAINTEXT port.
    pub port: u16,
    /// The port it tells clients to use.
    pub advertised_port: u16,
    state: super::pki::TempDir,
}

impl OwnBroker {
    /// Starts a broker that tells its clients to connect to
    /// `advertised_port` (a fault proxy's), or to its own port.
    pub fn start(advertised_port: Option<u16>) -> Self {
        let port = free_ports(4);
        let broker = OwnBroker {
            port,
            advertised_port: advertised_port.unwrap_or(port),
            state: super::pki::TempDir::new(),
        };
        broker.run("start");
        broker
    }

    /// Its address, as its clients reach it (through the proxy, if any).
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised_port)
    }

    /// Its own address, past any proxy.
    pub fn direct(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash: the log directory stays.
    pub fn kill(&self) {
        self.run("kill");
    }

    /// Starts it again on its log directory.
    pub fn restart(&self) {
        self.run("start");
    }

    fn run(&self, action: &str) {
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(script())
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_ADVERTISED_PORT", self.advertised_port.to_string())
            .env("KAFKA_STATE_DIR", self.state.path())
            .env("KAFKA_GRANT_ACLS", "0")
            .output()
            .expect("bash runs scripts/kafka.sh");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "scripts/kafka.sh {action} failed:\n{log}"
        );
        eprintln!(
            "scripts/kafka.sh {action} (port {}) took {:.1} s",
            self.port,
            started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// The first of `count` consecutive free loopback ports.
fn free_ports(count: u16) -> u16 {
    let taken = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_err();
    for _ in 0..200 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let first = probe.local_addr().unwrap().port();
        drop(probe);
        if first < 60_000 && !(first..first + count).any(taken) {
            return first;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}
