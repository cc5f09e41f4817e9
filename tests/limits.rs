//! The bounds, attacked: a flood of cheap batches behind a stuck record, more
//! connections and calls than the caps, more bytes than the memory budget, a
//! client that never reads, a connection past its maximum age, and
//! malformed messages. Each test measures what it claims.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::{serve, sigterm, wait_exit};
use common::invariants::{Offsets, Retries, check, drive_stream, numbered};
use common::*;
use kafka_gateway::EmbeddedBroker;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, Record};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Waits until `counter` stops moving for a second; returns its value.
async fn settle(counter: &AtomicUsize) -> usize {
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Batch `b` of the flood: alternately empty, and one record refused by
/// validation (a negative partition) with a 100-byte value.
fn cheap_batch(b: usize, topic: &str) -> ProduceRequest {
    if b.is_multiple_of(2) {
        return batch(b as u64, topic, vec![]);
    }
    let mut refused = record("k", vec![b'x'; 100]);
    refused.partition = Some(-1);
    batch(b as u64, topic, vec![refused])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_stream_stops_reading_and_memory_stays_flat_under_a_flood_of_cheap_batches() {
    const FLOOD: usize = 60_000;
    let broker = Arc::new(EmbeddedBroker::start(1, PARTITIONS).unwrap());
    let topic = rand_topic("flood");
    broker.create_topic(&topic, PARTITIONS).await.unwrap();
    let served = serve(&["--bootstrap-servers", broker.bootstrap_servers()], &[]);
    let pid = served.child.id();
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    // Warm up: the producer and the connection exist before measuring.
    let warm = produce_stream(
        &mut client,
        vec![batch(0, &topic, vec![record("k", "warm")])],
    )
    .await;
    ok(&warm[0].as_ref().unwrap().results[0]);
    let before = rss(pid);

    // The broker goes away: the stream's first record is stuck in
    // librdkafka (message.timeout.ms is 5 minutes), at the head of the line.
    broker.with(|c| c.broker_down(1)).await.unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let requests = {
        let pulled = pulled.clone();
        let topic = topic.clone();
        let head = batch(0, &topic, vec![record("k", "stuck at the head")]);
        tokio_stream::iter(
            std::iter::once(head).chain((1..FLOOD).map(move |b| cheap_batch(b, &topic))),
        )
        .map(move |request| {
            pulled.fetch_add(1, Ordering::SeqCst);
            request
        })
    };
    let mut responses = client.produce(requests).await.unwrap().into_inner();
    let held_back_at = settle(&pulled).await;
    let at_plateau = rss(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = rss(pid);
    let growth = at_plateau.saturating_sub(before) as f64 / (1 << 20) as f64;
    let drift = later.saturating_sub(at_plateau) as f64 / (1 << 20) as f64;
    eprintln!(
        "flood: the client pushed {held_back_at} of {FLOOD} batches before being held back; \
         gateway RSS {:.1} MiB before, +{growth:.1} MiB at the plateau, +{drift:.1} MiB 2 s later",
        before as f64 / (1 << 20) as f64
    );
    assert!(
        held_back_at < FLOOD / 2,
        "the gateway kept reading: {held_back_at} batches"
    );
    assert!(growth < 24.0, "the gateway grew {growth:.1} MiB");
    assert!(drift < 2.0, "memory still growing: {drift:.1} MiB in 2 s");

    // Once the broker is back, every batch is answered, in order.
    broker.with(|c| c.broker_up(1)).await.unwrap();
    let mut next = 0usize;
    while let Some(response) = responses.message().await.unwrap() {
        assert_eq!(response.batch_id, next as u64, "answers in order");
        match next {
            0 => {
                ok(&response.results[0]);
            }
            b if b.is_multiple_of(2) => assert!(response.results.is_empty()),
            _ => {
                assert_error(
                    &response.results[0],
                    ErrorCode::InvalidRecord,
                    "partition -1",
                );
            }
        }
        next += 1;
    }
    assert_eq!(next, FLOOD, "every batch answered");
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_connection_and_stream_caps_are_refused_naming_the_flag() {
    let gateway = start_gateway(&["--max-connections", "2", "--max-streams", "3"]).await;
    let topic = gateway.topic("caps").await;
    let mut first = gateway.client().await;
    let mut second = gateway.client().await;
    // A connection counts against --max-connections from its first call.
    for client in [&mut first, &mut second] {
        let served = produce_stream(client, vec![batch(0, &topic, vec![record("k", "v")])]).await;
        ok(&served[0].as_ref().unwrap().results[0]);
    }

    // A third connection's calls are refused.
    let mut third = gateway.client().await;
    let refused = produce_stream(&mut third, vec![batch(1, &topic, vec![record("k", "v")])]).await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-connections"),
        "{}",
        status.message()
    );

    // Three calls are served; a fourth, on the other connection, is refused.
    let mut open = Vec::new();
    for b in 0..3 {
        open.push(
            open_stream(
                &mut first,
                vec![batch(b, &topic, vec![record("k", "held")])],
            )
            .await,
        );
    }
    for (responses, _) in &mut open {
        ok(&responses.message().await.unwrap().unwrap().results[0]);
    }
    let refused = produce_stream(&mut second, vec![batch(9, &topic, vec![record("k", "v")])]).await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-streams"),
        "{}",
        status.message()
    );

    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    for (series, value) in [
        (r#"kafka_gateway_limit_current{limit="streams"}"#, 3.0),
        (r#"kafka_gateway_limit_max{limit="streams"}"#, 3.0),
        (r#"kafka_gateway_limit_refused_total{limit="streams"}"#, 1.0),
        (r#"kafka_gateway_limit_max{limit="connections"}"#, 2.0),
        (
            r#"kafka_gateway_limit_refused_total{limit="connections"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }

    // A call ends; the next one is served.
    let (responses, feeder) = open.pop().unwrap();
    feeder.abort();
    drop(responses);
    eventually("a stream slot freed", || async {
        let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
        (sample(&text, r#"kafka_gateway_limit_current{limit="streams"}"#) == Some(2.0))
            .then_some(())
    })
    .await;
    let served = produce_stream(&mut second, vec![batch(10, &topic, vec![record("k", "v")])]).await;
    ok(&served[0].as_ref().unwrap().results[0]);
    drop(open);
    gateway.stop().await.unwrap();
}

/// Opens a health `Watch` stream on a connection of its own and reads its
/// first answer, so that the gateway holds the stream.
async fn watch(gateway: &TestGateway) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut health = HealthClient::new(second_channel(gateway).await);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a Watch stream is served")
        .into_inner();
    stream.message().await.unwrap().expect("a first status");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_streams_have_their_own_cap_and_never_take_produce_slots() {
    let gateway = start_gateway(&[
        "--max-streams",
        "2",
        "--max-probe-streams",
        "3",
        "--unauthenticated-stream-timeout",
        "2s",
    ])
    .await;
    let topic = gateway.topic("probes").await;
    let mut watches = Vec::new();
    for _ in 0..3 {
        watches.push(watch(&gateway).await);
    }
    // A fourth is refused, naming its own flag.
    let mut health = HealthClient::new(second_channel(&gateway).await);
    let status = match health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-probe-streams"),
        "{}",
        status.message()
    );
    // Every --max-streams slot is still there for Produce.
    let mut client = gateway.client().await;
    let mut open = Vec::new();
    for b in 0..2 {
        let (mut responses, feeder) = open_stream(
            &mut client,
            vec![batch(b, &topic, vec![record("k", "while watched")])],
        )
        .await;
        ok(&responses.message().await.unwrap().unwrap().results[0]);
        open.push((responses, feeder));
    }
    // Health checks are never refused.
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Check is exempt from every cap");

    // Without credentials, a Watch stream ends at its lifetime.
    let started = Instant::now();
    let ended = loop {
        match watches[0].message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    let lasted = started.elapsed();
    eprintln!("an unauthenticated Watch stream ended after {lasted:?}: {ended:?}");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(
        ended.message().contains("--unauthenticated-stream-timeout"),
        "{}",
        ended.message()
    );
    assert!(lasted < Duration::from_secs(5), "{lasted:?}");
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_limit_refused_total{limit="probe_streams"}"#
        ),
        Some(1.0),
        "{text}"
    );
    for (_, feeder) in open {
        feeder.abort();
    }
    gateway.stop().await.unwrap();
}

/// Opens `n` TCP connections to `addr` that send `preface` (perhaps
/// nothing) and then nothing more.
async fn silent_sockets(
    addr: std::net::SocketAddr,
    n: usize,
    preface: &[u8],
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        if !preface.is_empty() {
            socket.write_all(preface).await.unwrap();
        }
        sockets.push(socket);
    }
    sockets
}

/// How many of `sockets` the server has closed (a read returns end of
/// file or an error at once).
async fn closed(sockets: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for socket in sockets {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_millis(20), socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                // The server's SETTINGS and the like: read on.
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    closed
}

/// The HTTP/2 client preface and an empty SETTINGS frame: a client that
/// spoke HTTP/2 and then went quiet.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unauthenticated_sockets_cannot_keep_a_client_out() {
    let gateway = start_gateway(&[
        "--max-connections",
        "4",
        "--max-unauthenticated-connections",
        "8",
        "--handshake-timeout",
        "1s",
    ])
    .await;
    let topic = gateway.topic("silent").await;
    // More silent sockets than both caps, then more that spoke HTTP/2 and
    // went quiet: all from this one address.
    let mut silent = silent_sockets(gateway.addr, 30, b"").await;
    let mut quiet = silent_sockets(gateway.addr, 30, H2_PREFACE).await;
    let started = Instant::now();
    let mut client = gateway.client().await;
    let served = produce_stream(&mut client, vec![batch(0, &topic, vec![record("k", "v")])]).await;
    let first_ack = started.elapsed();
    ok(&served[0].as_ref().unwrap().results[0]);
    eprintln!("60 idle sockets: a client's first ack after {first_ack:?}");
    assert!(first_ack < Duration::from_secs(5), "{first_ack:?}");

    // The silent ones are closed by the handshake timeout, the quiet ones
    // made room for newer connections; none holds a --max-connections slot.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (closed_silent, closed_quiet) = (closed(&mut silent).await, closed(&mut quiet).await);
    eprintln!("closed: {closed_silent} of 30 silent, {closed_quiet} of 30 quiet");
    assert_eq!(
        closed_silent, 30,
        "a silent socket outlived --handshake-timeout"
    );
    assert!(closed_quiet >= 30 - 8, "{closed_quiet} of 30 closed");
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&text, r#"kafka_gateway_limit_current{limit="connections"}"#),
        Some(1.0),
        "only the client counts: {text}"
    );
    // Four real clients still fit.
    let mut clients = vec![client];
    for b in 1..4 {
        let mut client = gateway.client().await;
        let served =
            produce_stream(&mut client, vec![batch(b, &topic, vec![record("k", "v")])]).await;
        ok(&served[0].as_ref().unwrap().results[0]);
        clients.push(client);
    }
    drop((silent, quiet, clients));
    gateway.stop().await.unwrap();
}

/// A connection of its own, for a health check under full load.
async fn second_channel(gateway: &TestGateway) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_answered_when_every_stream_slot_is_taken() {
    let gateway = start_gateway(&["--max-streams", "1"]).await;
    let topic = gateway.topic("health-under-load").await;
    let mut client = gateway.client().await;
    let (mut responses, feeder) =
        open_stream(&mut client, vec![batch(0, &topic, vec![record("k", "v")])]).await;
    ok(&responses.message().await.unwrap().unwrap().results[0]);
    let mut health = HealthClient::new(second_channel(&gateway).await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check is never refused for load")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    feeder.abort();
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_bounds_unanswered_bytes_and_every_stream_progresses() {
    const STREAMS: usize = 6;
    const CAP: usize = 400 << 10;
    let cap = CAP.to_string();
    let gateway = start_gateway_embedded(&[
        "--max-batch-bytes",
        "64KiB",
        "--max-record-bytes",
        "16KiB",
        "--max-total-in-flight-bytes",
        &cap,
    ])
    .await;
    let topic = rand_topic("budget");
    gateway.kafka.create_topic(&topic, PARTITIONS).await;
    // A slow broker: batches stay unanswered long enough to fill the budget.
    gateway
        .embedded()
        .with(|c| c.broker_round_trip_time(1, Duration::from_millis(150)))
        .await
        .unwrap();
    let started = Instant::now();
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut client = gateway.client().await;
        let topic = topic.clone();
        streams.push(tokio::spawn(async move {
            // 30 batches of 4 records of 12 KiB: about 48 KiB each, so the
            // budget holds 8 batches of the 6 streams' 180.
            let batches = (0..30)
                .map(|b| {
                    let mut request = numbered(s, b, 4, 4, &topic);
                    for record in &mut request.records {
                        let mut value = record.value.take().unwrap().to_vec();
                        value.resize(12 << 10, b'.');
                        record.value = Some(Bytes::from(value));
                    }
                    request
                })
                .collect();
            drive_stream(&mut client, s, batches, Duration::ZERO).await
        }));
    }
    // Sample the budget's use while the streams run.
    let mut peak = 0.0f64;
    let mut samples = 0;
    while !streams.iter().all(|s| s.is_finished()) {
        let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
        if let Some(used) = sample(
            &text,
            r#"kafka_gateway_limit_current{limit="total_in_flight_bytes"}"#,
        ) {
            peak = peak.max(used);
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.push(stream.await.unwrap());
    }
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    let waits = sample(
        &text,
        r#"kafka_gateway_limit_waits_total{limit="total_in_flight_bytes"}"#,
    )
    .unwrap_or(0.0);
    eprintln!(
        "budget: {CAP} bytes; peak use {peak} bytes over {samples} samples; {waits} waits; {:?}",
        started.elapsed()
    );
    assert!(peak <= CAP as f64, "the budget was exceeded: {peak}");
    assert!(
        peak > (CAP / 2) as f64,
        "the test must fill the budget: {peak}"
    );
    assert!(waits > 0.0, "streams must have waited for the budget");
    // No stream starved: every stream had its first answer before any
    // stream had its last.
    let last_first = outcomes
        .iter()
        .filter_map(|o| o.first_answer)
        .max()
        .unwrap();
    let first_last = outcomes.iter().filter_map(|o| o.last_answer).min().unwrap();
    assert!(
        last_first < first_last,
        "a stream was served only after another had finished"
    );
    let consumed = consume(gateway.bootstrap_servers(), &topic, 0).await;
    let verdict = check(&outcomes, &consumed, Offsets::Exact, Retries::Stored);
    verdict.assert_holds();
    assert_eq!(verdict.acked, STREAMS * 30 * 4, "{verdict}");
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_limit_current{limit="total_in_flight_bytes"}"#
        ),
        Some(0.0),
        "every reservation is given back"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_ended_after_the_stall_timeout_and_others_go_on() {
    let mut gateway = start_gateway(&["--stall-timeout", "1s"]).await;
    let topic = gateway.topic("stall").await;
    let mut client = gateway.client().await;
    // 1,500 batches of 100 records: about 7 MB of acks, far more than the
    // client's HTTP/2 window (2 MiB) and the gateway's buffers hold for a
    // client that does not read.
    let requests: Vec<ProduceRequest> = (0..1_500)
        .map(|b| numbered(0, b, 100, 10, &topic))
        .collect();
    let (mut unread, feeder) = open_stream(&mut client, requests.clone()).await;
    eventually("the stalled stream to end", || async {
        let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
        (sample(
            &text,
            r#"kafka_gateway_stream_ends_total{reason="stalled"}"#,
        ) == Some(1.0))
        .then_some(())
    })
    .await;

    // Others are served meanwhile.
    let mut other = gateway.client().await;
    let served = produce_stream(
        &mut other,
        vec![batch(1, &topic, vec![record("k", "other")])],
    )
    .await;
    ok(&served[0].as_ref().unwrap().results[0]);

    // When the client reads at last: the answers that were sent, then a
    // status naming the option.
    let mut answered = Vec::new();
    let status = loop {
        match unread.message().await {
            Ok(Some(response)) => answered.push(response),
            Ok(None) => panic!("a stalled stream ends with a status"),
            Err(status) => break status,
        }
    };
    feeder.abort();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--stall-timeout"),
        "{}",
        status.message()
    );
    assert!(
        !answered.is_empty() && answered.len() < 1_500,
        "{} answered",
        answered.len()
    );
    // Every answered record is stored where its ack says; records handed to
    // Kafka before the stall completed.
    let outcome = common::invariants::StreamOutcome {
        stream: 0,
        sent: requests,
        responses: answered,
        end: Some(status),
        first_answer: None,
        last_answer: None,
    };
    let consumed: Vec<Consumed> = consume(gateway.bootstrap_servers(), &topic, 0)
        .await
        .into_iter()
        .filter(|c| c.value.as_deref() != Some(&b"other"[..]))
        .collect();
    let verdict = check(&[outcome], &consumed, Offsets::Exact, Retries::Stored);
    eprintln!("stall: {verdict}");
    verdict.assert_holds();

    // Shutdown is not held up by a client that does not read.
    let (mut unread, _feeder) = open_stream(
        &mut client,
        (0..1_500)
            .map(|b| numbered(1, b, 100, 10, &topic))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    gateway.request_stop();
    gateway.stop().await.unwrap();
    let took = stopping.elapsed();
    eprintln!("shutdown with a client that does not read took {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let _ = unread.message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_maximum_age_ends_its_streams_and_the_client_reconnects() {
    let gateway = start_gateway(&[
        "--max-connection-age",
        "2s",
        "--max-connection-age-grace",
        "3s",
    ])
    .await;
    let topic = gateway.topic("age").await;
    let mut client = gateway.client().await;
    let started = Instant::now();
    let batches = (0..1_000).map(|b| numbered(0, b, 5, 5, &topic)).collect();
    let outcome = drive_stream(&mut client, 0, batches, Duration::from_millis(20)).await;
    let took = started.elapsed();
    let status = outcome.end.clone().expect("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("connection age reached, reconnect"),
        "{}",
        status.message()
    );
    assert!(
        took >= Duration::from_millis(1_700) && took < Duration::from_secs(5),
        "ended after {took:?}, not at 2 s give or take 10%"
    );
    let consumed = consume(gateway.bootstrap_servers(), &topic, 0).await;
    let verdict = check(&[outcome], &consumed, Offsets::Exact, Retries::Stored);
    eprintln!("connection age: {verdict}");
    verdict.assert_holds();
    assert_eq!(
        verdict.unanswered,
        verdict.records_sent - verdict.acked,
        "{verdict}"
    );
    // The same client opens its next stream on a new connection.
    let again = produce_stream(
        &mut client,
        vec![batch(1, &topic, vec![record("k", "again")])],
    )
    .await;
    ok(&again[0].as_ref().unwrap().results[0]);
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_stream_ends_total{reason="connection_age"}"#
        ),
        Some(1.0)
    );
    gateway.stop().await.unwrap();
}

/// A `ProduceRequest` look-alike whose topic may be any bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRequest {
    #[prost(uint64, tag = "1")]
    batch_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    topic: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_get_precise_statuses() {
    let gateway =
        start_gateway(&["--max-batch-bytes", "64KiB", "--max-record-bytes", "16KiB"]).await;
    let channel = second_channel(&gateway).await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let not_utf8 = RawRequest {
        batch_id: 1,
        topic: vec![0xff, 0xfe, b'x'],
    };
    let codec =
        tonic_prost::ProstCodec::<RawRequest, kafka_gateway::proto::ProduceResponse>::default();
    grpc.ready().await.unwrap();
    let path = "/kafka_gateway.v1.Producer/ProduceBatch".parse().unwrap();
    let status = grpc
        .unary(tonic::Request::new(not_utf8.clone()), path, codec.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("ProduceRequest.topic"),
        "{}",
        status.message()
    );

    let path = "/kafka_gateway.v1.Producer/Produce".parse().unwrap();
    grpc.ready().await.unwrap();
    let mut stream = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![not_utf8])),
            path,
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("ProduceRequest.topic"),
        "{}",
        status.message()
    );

    // Over --max-batch-bytes: RESOURCE_EXHAUSTED naming the option.
    let mut client = ProducerClient::new(channel);
    let big: Vec<Record> = (0..8)
        .map(|i| record(format!("k{i}"), vec![b'x'; 10_000]))
        .collect();
    let status = client
        .produce_batch(batch(1, "t", big.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-batch-bytes"),
        "{}",
        status.message()
    );
    let responses = produce_stream(&mut client, vec![batch(1, "t", big)]).await;
    let status = responses[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-batch-bytes"),
        "{}",
        status.message()
    );
    gateway.stop().await.unwrap();
}

#[test]
fn settings_that_would_make_an_ok_ack_lie_are_refused_at_startup() {
    for (args, needle) in [
        (&["-X", "acks=0"][..], "acks=0"),
        (&["-X", "acks=1"][..], "needs acks=all"),
        (&["-X", "request.required.acks=0"][..], "acks=0"),
        (&["-X", "transactional.id=gw"][..], "transactional"),
        (&["-X", "queuing.strategy=lifo"][..], "fifo"),
        (
            &["--max-total-in-flight-bytes", "1MiB"][..],
            "--max-batch-bytes",
        ),
    ] {
        let output = common::binary::command("serve", args, &[])
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // With idempotence off, acks=1 still means "stored at this offset".
    let mut served = serve(&["--enable-idempotence", "false", "-X", "acks=1"], &[]);
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_accepted_and_cannot_expand_past_the_limit() {
    use tonic::codec::CompressionEncoding;
    let gateway =
        start_gateway(&["--max-batch-bytes", "64KiB", "--max-record-bytes", "60KiB"]).await;
    let topic = gateway.topic("compressed").await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = gateway.client().await.send_compressed(encoding);
        // 40 KiB of one byte: tiny once compressed, within the limit once not.
        let fits = record("k", vec![b'z'; 40 << 10]);
        let responses = produce_stream(&mut client, vec![batch(1, &topic, vec![fits])]).await;
        ok(&responses[0].as_ref().unwrap().results[0]);
        // 200 KiB of one byte: a few hundred bytes on the wire, past the
        // 64 KiB limit once decompressed.
        let bomb = record("k", vec![b'z'; 200 << 10]);
        let responses = produce_stream(&mut client, vec![batch(2, &topic, vec![bomb])]).await;
        let status = responses[0].as_ref().unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "{encoding:?}: {status:?}"
        );
        assert!(
            status.message().contains("--max-batch-bytes"),
            "{}",
            status.message()
        );
    }
    let consumed = consume(gateway.bootstrap_servers(), &topic, 2).await;
    assert_eq!(
        consumed.len(),
        2,
        "only the batches within the limit were stored"
    );
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_limit_current{limit="total_in_flight_bytes"}"#
        ),
        Some(0.0),
        "the worst-case reservations of compressed batches are all given back"
    );
    gateway.stop().await.unwrap();
}
