//! The gateway against a real Apache Kafka broker that needs SASL and TLS
//! and authorizes by ACL, as real deployments do; and what a real broker
//! answers that the stand-ins did not: unknown topics with auto-creation
//! off, partitions added mid-stream.
//!
//! The broker of `scripts/kafka.sh` has a SASL_SSL listener (SCRAM-SHA-512,
//! a test CA) where user `gateway` may write only topics named `allowed-*`.
//! Ignored by a plain `cargo test`; `.ci/run` runs them with `--ignored`:
//!
//! ```sh
//! bash scripts/kafka.sh start && eval "$(bash scripts/kafka.sh env)"
//! cargo test --test kafka_security -- --ignored
//! ```

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::binary::serve;
use common::kafka::{ALLOWED, GATEWAY_USER, KAFKA_CA, KAFKA_SASL_SSL, env, kafka};
use common::pki::{Ca, TempDir};
use common::*;
use kafka_gateway::proto::{ErrorCode, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

/// `-X` options that make the gateway a SASL_SSL client of the broker as
/// `user` with `password`, trusting the CA at `ca`.
fn sasl_options(user: &str, password: &str, ca: &str) -> Vec<String> {
    [
        "security.protocol=SASL_SSL".to_owned(),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={ca}"),
    ]
    .into_iter()
    .flat_map(|option| ["-X".to_owned(), option])
    .collect()
}

/// A gateway producing over SASL_SSL as the ACL-limited user.
async fn sasl_gateway() -> TestGateway {
    let options = sasl_options(GATEWAY_USER.0, GATEWAY_USER.1, &env(KAFKA_CA));
    let args: Vec<&str> = options.iter().map(String::as_str).collect();
    start_gateway_on(TestKafka::External(env(KAFKA_SASL_SSL)), false, &args).await
}

/// A new topic named `PREFIX...`, created over PLAINTEXT (a super user).
async fn topic(prefix: &str, partitions: i32) -> String {
    let name = rand_topic(prefix);
    kafka().create_topic(&name, partitions).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn the_gateway_produces_over_sasl_ssl_with_scram_and_a_private_ca() {
    let gateway = sasl_gateway().await;
    let allowed = topic(&format!("{ALLOWED}sasl"), 3).await;
    let mut client = gateway.client().await;
    let records: Vec<Record> = (0..30)
        .map(|n| Record {
            headers: vec![header("n", n.to_string().as_bytes())],
            ..record(format!("key-{}", n % 5), format!("over SASL_SSL {n}"))
        })
        .collect();
    let responses = produce_stream(
        &mut client,
        vec![
            batch(0, &allowed, records[..15].to_vec()),
            batch(1, &allowed, records[15..].to_vec()),
        ],
    )
    .await;
    let acks = all_acks(&responses);
    assert_eq!(acks.len(), 30);
    let stored = consume(&env(common::kafka::KAFKA), &allowed, 30).await;
    assert_eq!(stored.len(), 30);
    for (record, ack) in records.iter().zip(&acks) {
        assert_stored(at(&stored, ack), record);
    }
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_topic_denied_by_an_acl_fails_its_records_promptly_and_spares_the_others() {
    let gateway = sasl_gateway().await;
    let allowed = topic(&format!("{ALLOWED}acl"), 3).await;
    let denied = topic("denied-acl", 3).await;
    let mut client = gateway.client().await;
    let mut records = Vec::new();
    for n in 0..12 {
        let topic = if n % 3 == 1 { &denied } else { &allowed };
        records.push(Record {
            topic: topic.clone(),
            ..record(format!("k{n}"), format!("record {n}"))
        });
    }
    let started = Instant::now();
    let responses = produce_stream(&mut client, vec![batch(0, "", records.clone())]).await;
    let took = started.elapsed();
    let results = &responses[0].as_ref().expect("a response").results;
    let mut acked = Vec::new();
    for (n, (record, result)) in records.iter().zip(results).enumerate() {
        if record.topic == denied {
            let error = assert_error(
                result,
                ErrorCode::NotAuthorized,
                "TOPIC_AUTHORIZATION_FAILED",
            );
            assert!(!error.retriable, "{error:?}");
        } else {
            acked.push((n, ok(result).clone()));
        }
    }
    assert_eq!(acked.len(), 8, "the allowed topic's records are acked");
    assert!(
        took < Duration::from_secs(15),
        "denied records are answered promptly, not after message.timeout.ms: {took:?}"
    );
    eprintln!("12 records, 4 to a denied topic: answered in {took:?}");
    let stored = consume(&env(common::kafka::KAFKA), &allowed, 8).await;
    assert_eq!(stored.len(), 8);
    for (n, ack) in &acked {
        assert_stored(at(&stored, ack), &records[*n]);
    }
    let nothing = consume(&env(common::kafka::KAFKA), &denied, 0).await;
    assert!(nothing.is_empty(), "nothing reached the denied topic");
    gateway.stop().await.unwrap();
}

/// Starts the binary against the SASL_SSL listener with `options`, and
/// checks that `/readyz` keeps failing for 8 s and the log names the cause
/// (a line containing one of `causes`).
async fn stays_unready(options: Vec<String>, causes: &[&str]) {
    let servers = env(KAFKA_SASL_SSL);
    let mut args = vec![
        "--bootstrap-servers",
        servers.as_str(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend(options.iter().map(String::as_str));
    let served = serve(&args, &[]);
    let metrics = served
        .metrics
        .clone()
        .expect("the metrics listener's address");
    let addr = metrics.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut checks = 0;
    while Instant::now() < deadline {
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 503, "ready although Kafka refuses it: {body}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut log: Vec<String> = served.startup.clone();
    while let Ok(line) = served.lines.try_recv() {
        log.push(line);
    }
    assert!(
        log.iter()
            .any(|line| causes.iter().any(|cause| line.contains(cause))),
        "no log line names the cause ({causes:?}):\n{}",
        log.join("\n")
    );
    eprintln!("/readyz answered 503 {checks} times in 8 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_wrong_password_keeps_readyz_failing_and_the_log_names_the_cause() {
    stays_unready(
        sasl_options(GATEWAY_USER.0, "not-the-password", &env(KAFKA_CA)),
        &[
            "Authentication failed",
            "SASL authentication error",
            "authentication",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn an_unknown_ca_keeps_readyz_failing_and_the_log_names_the_cause() {
    let dir = TempDir::new();
    let other = dir.write("other-ca.pem", Ca::new("some other CA").cert_pem());
    stays_unready(
        sasl_options(GATEWAY_USER.0, GATEWAY_USER.1, other.to_str().unwrap()),
        &["certificate verify failed", "SSL handshake failed"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn an_unknown_topic_fails_promptly_with_unknown_topic() {
    let gateway = start_gateway_on(kafka(), false, &[]).await;
    let known = gateway.topic("known").await;
    let missing = rand_topic("never-created");
    let mut client = gateway.client().await;
    let started = Instant::now();
    let responses = produce_stream(
        &mut client,
        vec![batch(
            0,
            &known,
            vec![
                record("a", "to a known topic"),
                Record {
                    topic: missing.clone(),
                    ..record("b", "to a topic that does not exist")
                },
                record("c", "to a known topic again"),
            ],
        )],
    )
    .await;
    let took = started.elapsed();
    let results = &responses[0].as_ref().expect("a response").results;
    ok(&results[0]);
    assert_error(&results[1], ErrorCode::UnknownTopic, "");
    ok(&results[2]);
    assert!(
        took < Duration::from_secs(15),
        "an unknown topic is answered promptly, not after message.timeout.ms: {took:?}"
    );
    eprintln!("a record to a missing topic answered UNKNOWN_TOPIC in {took:?}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn partitions_added_mid_stream_keep_each_keys_order_from_then_on() {
    // Metadata refreshed every second, so the new partitions are used soon.
    let gateway = start_gateway_on(
        kafka(),
        false,
        &["-X", "topic.metadata.refresh.interval.ms=1000"],
    )
    .await;
    let topic = topic("grow", 2).await;
    let mut client = gateway.client().await;
    let keys = 24;
    let key_of = |n: usize| format!("key-{}", n % keys);
    let mut sent = Vec::new();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", env(common::kafka::KAFKA))
        .create()
        .unwrap();
    let mut acks = Vec::new();
    for b in 0..40u64 {
        if b == 10 {
            let result = admin
                .create_partitions(&[NewPartitions::new(&topic, 6)], &AdminOptions::new())
                .await
                .expect("CreatePartitions");
            assert!(result[0].is_ok(), "{result:?}");
        }
        let records: Vec<Record> = (0..keys)
            .map(|i| {
                let n = b as usize * keys + i;
                record(key_of(n), format!("{n}"))
            })
            .collect();
        sent.extend(records.clone());
        tx.send(batch(b, &topic, records)).await.unwrap();
        let response = responses.message().await.unwrap().expect("a response");
        acks.extend(response.results.iter().map(|r| ok(r).clone()));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(tx);
    // Per key: its records' partitions change at most once (when the new
    // partitions are seen), and within a partition they are stored in the
    // order sent.
    let mut by_key: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for (record, ack) in sent.iter().zip(&acks) {
        let key = String::from_utf8(record.key.clone().unwrap().to_vec()).unwrap();
        by_key
            .entry(key)
            .or_default()
            .push((ack.partition, ack.offset));
    }
    let mut moved = 0;
    for (key, places) in &by_key {
        let switches = places.windows(2).filter(|w| w[0].0 != w[1].0).count();
        assert!(
            switches <= 1,
            "{key} went back and forth between partitions: {places:?}"
        );
        moved += switches;
        for pair in places.windows(2) {
            if pair[0].0 == pair[1].0 {
                assert!(
                    pair[0].1 < pair[1].1,
                    "{key}: out of order in a partition: {places:?}"
                );
            }
        }
    }
    let partitions: std::collections::BTreeSet<i32> = acks.iter().map(|a| a.partition).collect();
    assert!(
        partitions.iter().any(|&p| p >= 2),
        "the new partitions were used: {partitions:?}"
    );
    eprintln!("{moved} of {keys} keys moved to a new partition once, and none went back");
    let stored = consume(&env(common::kafka::KAFKA), &topic, sent.len()).await;
    assert_eq!(stored.len(), sent.len());
    for (record, ack) in sent.iter().zip(&acks) {
        assert_stored(at(&stored, ack), record);
    }
    gateway.stop().await.unwrap();
}
