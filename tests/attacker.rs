//! The fault suite's attacker, at today's defaults: someone with no
//! credentials who can reach the port, or a caller whose key is granted
//! little or nothing, tries to deny service to everyone or to write what
//! the policy forbids. Each test runs the gateway binary with its default
//! limits (authentication on: API keys and a policy), plays one attack on
//! 127.0.0.1, and meanwhile an authenticated client produces: its records
//! must be acked and stored as the invariant checker demands, and the
//! figure (time to the client's first ack, series on `/metrics`, records
//! parked) is printed.
//!
//! `a_flood_of_10000_watch_streams_...` is the issue's full figure; it fits
//! CI's two cores (refused streams cost little), and runs by default.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::{Served, serve};
use common::invariants::{Offsets, Retries, StreamOutcome, check, numbered};
use common::pki::{TempDir, api_key_line};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, Record};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The authenticated client's key: granted one topic.
const CLIENT_KEY: &str = "client-key-0123456789abcdefghij";
/// The attacker's key: granted nothing.
const NOBODY_KEY: &str = "nobody-key-0123456789abcdefghij";

/// A gateway binary with API keys and a policy, and everything else at its
/// defaults but `extra`.
struct Target {
    served: Served,
    /// Where the gateway produces, to read back.
    bootstrap: String,
    /// The topic the client may write.
    granted: String,
    metrics: SocketAddr,
    _dir: TempDir,
}

async fn start(extra: &[&str]) -> Target {
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("client", CLIENT_KEY) + &api_key_line("nobody", NOBODY_KEY),
    );
    let external = std::env::var(EXTERNAL_KAFKA).ok();
    let granted = match &external {
        Some(_) => TestKafka::start().topic("granted").await,
        None => rand_topic("granted"),
    };
    let policy = dir.write(
        "policy.toml",
        format!("[[grant]]\nprincipals = [\"client\"]\ntopics = [\"{granted}\"]\n"),
    );
    let mut args = vec![
        "--api-keys".to_owned(),
        keys.to_str().unwrap().to_owned(),
        "--authz-policy".to_owned(),
        policy.to_str().unwrap().to_owned(),
        "--metrics-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    if let Some(servers) = &external {
        args.extend(["--bootstrap-servers".to_owned(), servers.clone()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = serve(&args, &[]);
    let bootstrap = external
        .or_else(|| served.bootstrap.clone())
        .expect("a broker to read back from");
    let metrics = served
        .metrics
        .as_deref()
        .expect("the metrics address is logged")
        .parse()
        .unwrap();
    Target {
        served,
        bootstrap,
        granted,
        metrics,
        _dir: dir,
    }
}

impl Target {
    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.served.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The authenticated client's run: 20 batches of 10 records on a new
    /// connection, checked against what Kafka stored. Returns the time to
    /// its first ack.
    async fn client_produces(&self, stream: usize) -> Duration {
        let started = Instant::now();
        let channel = self.channel().await;
        let batches: Vec<ProduceRequest> = (0..20)
            .map(|b| numbered(stream, b, 10, 4, &self.granted))
            .collect();
        let outcome = drive_with_key(channel, CLIENT_KEY, stream, batches).await;
        let first_ack = outcome
            .first_answer
            .map(|at| at.duration_since(started))
            .unwrap_or_else(|| panic!("the client got no answer: {:?}", outcome.end));
        assert!(outcome.end.is_none(), "{:?}", outcome.end);
        let acked: usize = outcome.responses.iter().map(|r| r.results.len()).sum();
        assert_eq!(acked, 200);
        let stored = consume(&self.bootstrap, &self.granted, 200 * (stream + 1)).await;
        let stored: Vec<Consumed> = stored
            .into_iter()
            .filter(|c| {
                c.value
                    .as_deref()
                    .is_some_and(|v| v.starts_with(format!("s{stream}-").as_bytes()))
            })
            .collect();
        check(
            &[outcome],
            &stored,
            Offsets::PartitionOnly,
            Retries::Deduplicated,
        )
        .assert_holds();
        first_ack
    }

    async fn metrics(&self) -> String {
        let (status, text) = http_get(self.metrics, "/metrics").await;
        assert_eq!(status, 200);
        text
    }
}

/// Sends `batches` on one stream authenticated with `key`, as
/// [`common::invariants::drive_stream`] does without a key.
async fn drive_with_key(
    channel: Channel,
    key: &str,
    stream: usize,
    batches: Vec<ProduceRequest>,
) -> StreamOutcome {
    let (tx, rx) = mpsc::channel(4);
    let sent = batches.clone();
    let feeder = tokio::spawn(async move {
        for request in batches {
            if tx.send(request).await.is_err() {
                break;
            }
        }
    });
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut responses, mut end) = (Vec::new(), None);
    let (mut first_answer, mut last_answer) = (None, None);
    match ProducerClient::new(channel).produce(request).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => {
                        let now = Instant::now();
                        first_answer.get_or_insert(now);
                        last_answer = Some(now);
                        responses.push(response);
                    }
                    Ok(None) => break,
                    Err(status) => {
                        end = Some(status);
                        break;
                    }
                }
            }
        }
        Err(status) => end = Some(status),
    }
    feeder.abort();
    StreamOutcome {
        stream,
        sent,
        responses,
        end,
        first_answer,
        last_answer,
    }
}

/// Opens `streams` health `Watch` streams without credentials over
/// `connections` connections, holding every one the gateway accepts.
/// Returns the streams held and how many were refused.
async fn watch_flood(
    target: &Target,
    streams: usize,
    connections: usize,
) -> (
    Vec<tonic::Streaming<tonic_health::pb::HealthCheckResponse>>,
    usize,
) {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(target.channel().await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..streams {
        let mut health = HealthClient::new(channels[n % connections].clone());
        tasks.spawn(async move {
            let mut stream = health
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner();
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        });
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(stream) => held.push(stream),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    (held, refused)
}

async fn a_watch_flood(streams: usize) {
    let target = start(&[]).await;
    let before = target.client_produces(0).await;
    let started = Instant::now();
    let (held, refused) = watch_flood(&target, streams, 10).await;
    let flooded = started.elapsed();
    let during = target.client_produces(1).await;
    eprintln!(
        "attacker: {streams} Watch streams without credentials over 10 connections in \
         {flooded:?}: {} held, {refused} refused (--max-probe-streams); the client's first ack \
         {during:?} (before the flood: {before:?})",
        held.len()
    );
    assert_eq!(held.len(), 100, "the default --max-probe-streams");
    assert!(during < Duration::from_secs(5), "{during:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_10000_watch_streams_takes_no_produce_slot() {
    a_watch_flood(10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_keep_no_client_out() {
    const SOCKETS: usize = 1_024;
    let target = start(&[]).await;
    let addr: SocketAddr = target.served.grpc.parse().unwrap();
    let mut idle = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let during = target.client_produces(0).await;
    let text = target.metrics().await;
    let unauthenticated = sample(
        &text,
        r#"kafka_gateway_limit_current{limit="unauthenticated_connections"}"#,
    );
    let connections = sample(&text, r#"kafka_gateway_limit_current{limit="connections"}"#);
    eprintln!(
        "attacker: {SOCKETS} idle sockets; the client's first ack {during:?}; \
         unauthenticated connections held {unauthenticated:?} (cap 256), \
         --max-connections slots used {connections:?}"
    );
    assert!(during < Duration::from_secs(5), "{during:?}");
    assert!(unauthenticated <= Some(256.0), "{unauthenticated:?}");
    // After the default 10 s --handshake-timeout, none is left.
    eventually("the idle sockets closed", || async {
        let text = target.metrics().await;
        let left = sample(
            &text,
            r#"kafka_gateway_limit_current{limit="unauthenticated_connections"}"#,
        );
        (left == Some(0.0)).then_some(())
    })
    .await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_denied_topic_names_add_no_metric_series() {
    const DENIED: usize = 2_000;
    let target = start(&[]).await;
    target.client_produces(0).await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let before = series(&target.metrics().await);
    let names: Vec<String> = (0..DENIED)
        .map(|i| rand_topic(&format!("denied{i}")))
        .collect();
    let batches: Vec<ProduceRequest> = names
        .chunks(500)
        .enumerate()
        .map(|(b, chunk)| {
            let records = chunk
                .iter()
                .map(|topic| Record {
                    topic: topic.clone(),
                    ..record("k", "v")
                })
                .collect();
            batch(b as u64, &target.granted, records)
        })
        .collect();
    let outcome = drive_with_key(target.channel().await, CLIENT_KEY, 9, batches).await;
    let denied = outcome
        .responses
        .iter()
        .flat_map(|r| &r.results)
        .filter(|r| err(r).code == ErrorCode::NotAuthorized as i32)
        .count();
    assert_eq!(denied, DENIED);
    let text = target.metrics().await;
    let after = series(&text);
    let leaked = names.iter().filter(|n| text.contains(n.as_str())).count();
    let during = target.client_produces(1).await;
    eprintln!(
        "attacker: {DENIED} denied topic names from a caller granted one topic: /metrics went \
         from {before} to {after} series, {leaked} names leaked; the client's first ack {during:?}"
    );
    assert_eq!(leaked, 0);
    // The first denials add label sets of fixed values only: the refused
    // counter and the histogram of batch latency (17 series) under
    // topic="" and not_authorized, and the principal's denials. None per
    // name: a second flood of new names adds nothing.
    assert!(after <= before + 20, "{before} -> {after} series");
    let more: Vec<Record> = (0..500)
        .map(|i| Record {
            topic: rand_topic(&format!("again{i}")),
            ..record("k", "v")
        })
        .collect();
    drive_with_key(
        target.channel().await,
        CLIENT_KEY,
        9,
        vec![batch(0, &target.granted, more)],
    )
    .await;
    let again = series(&target.metrics().await);
    assert_eq!(
        again, after,
        "500 more denied names changed the series count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_granted_nothing_writes_nothing_to_the_dead_letter_topic() {
    const RECORDS: usize = 1_000;
    let external = std::env::var(EXTERNAL_KAFKA).is_ok();
    let dlq = if external {
        TestKafka::start().topic("dlq").await
    } else {
        rand_topic("dlq")
    };
    let target = start(&[
        "--dead-letter-topic",
        &dlq,
        "--quota-records-per-sec",
        "100",
    ])
    .await;
    target.client_produces(0).await;
    // Straight at the dead-letter topic, and at topics it was not granted.
    let batches: Vec<ProduceRequest> = (0..RECORDS / 100)
        .map(|b| {
            let topic = if b % 2 == 0 {
                dlq.clone()
            } else {
                format!("other-{b}")
            };
            batch(
                b as u64,
                &topic,
                (0..100)
                    .map(|i| record("k", format!("forbidden-{b}-{i}")))
                    .collect(),
            )
        })
        .collect();
    let started = Instant::now();
    let outcome = drive_with_key(target.channel().await, NOBODY_KEY, 7, batches).await;
    let took = started.elapsed();
    let results: Vec<_> = outcome.responses.iter().flat_map(|r| &r.results).collect();
    assert_eq!(results.len(), RECORDS, "{:?}", outcome.end);
    for result in &results {
        let error = err(result);
        assert_eq!(error.code, ErrorCode::NotAuthorized as i32, "{error:?}");
        assert!(error.dead_letter.is_none(), "{error:?}");
    }
    let during = target.client_produces(1).await;
    // Nothing of the attacker's reached the dead-letter topic.
    let parked = consume(&target.bootstrap, &dlq, 0).await;
    let forbidden = parked
        .iter()
        .filter(|c| {
            c.value
                .as_deref()
                .is_some_and(|v| v.starts_with(b"forbidden"))
        })
        .count();
    eprintln!(
        "attacker: {RECORDS} records from a caller granted nothing, at the dead-letter topic \
         and elsewhere, under a 100/s quota: answered NOT_AUTHORIZED in {took:?}, {forbidden} \
         written to the dead-letter topic; the client's first ack {during:?}"
    );
    assert_eq!(forbidden, 0);
}
