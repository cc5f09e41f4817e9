//! The `kafka-gateway` binary as a user runs it: `serve` with no Kafka starts
//! the embedded broker, records go through and can be read back from the
//! logged broker address, SIGTERM stops it cleanly, and bad configuration
//! exits 64 with a message that names the fix.

mod common;

use std::process::Command;

use common::binary::{BIN, serve, sigterm, wait_exit};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_out_of_the_box_on_the_embedded_broker() {
    let mut served = serve(&["--embedded-partitions", "3"], &[]);
    assert!(
        served
            .startup
            .iter()
            .any(|l| l.contains("WARN") && l.contains("in-memory")),
        "the gateway warns that the embedded broker keeps data in memory only"
    );
    assert!(
        served
            .startup
            .iter()
            .any(|l| l.contains("any caller may produce to any topic"))
            && served.startup.iter().any(|l| l.contains("transactions on")),
        "the start-up says what the front door does: {:#?}",
        served.startup
    );
    let bootstrap = served
        .bootstrap
        .clone()
        .expect("the embedded broker's address is logged");
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    let topic = rand_topic("cli");
    let requests: Vec<_> = (0..5)
        .map(|b| {
            batch(
                b,
                &topic,
                (0..20)
                    .map(|i| record(format!("key-{i}"), format!("{b}-{i}")))
                    .collect(),
            )
        })
        .collect();
    let responses = produce_stream(&mut client, requests.clone()).await;
    assert_eq!(responses.len(), 5);

    // The logged bootstrap address serves what was produced, on a topic
    // created with the configured partition count.
    let consumed = consume(&bootstrap, &topic, 100).await;
    assert_eq!(consumed.len(), 100);
    assert_eq!(
        consumed.iter().map(|c| c.partition).max(),
        Some(2),
        "3 partitions"
    );
    for (request, response) in requests.iter().zip(&responses) {
        for (record, result) in request
            .records
            .iter()
            .zip(&response.as_ref().unwrap().results)
        {
            assert_stored(at(&consumed, ok(result)), record);
        }
    }

    sigterm(&served.child);
    let status = wait_exit(&mut served.child);
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    let rest: Vec<String> = served.lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("producer flushed")),
        "{rest:#?}"
    );
}

#[test]
fn help_documents_every_option_with_its_variable() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--listen",
        "KAFKA_GATEWAY_LISTEN",
        "127.0.0.1:50051",
        "--bootstrap-servers",
        "KAFKA_GATEWAY_BOOTSTRAP_SERVERS",
        "--embedded-partitions",
        "--max-in-flight-records",
        "10000",
        "--max-in-flight-bytes",
        "16MiB",
        "--max-record-bytes",
        "--max-batch-records",
        "--max-batch-bytes",
        "--linger-ms",
        "--compression",
        "--enable-idempotence",
        "--partitioner",
        "murmur2_random",
        "--librdkafka-option",
        "KAFKA_GATEWAY_LIBRDKAFKA_OPTIONS",
        "--shutdown-timeout",
        "--metrics-listen",
        "KAFKA_GATEWAY_METRICS_LISTEN",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "/readyz",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn bad_configuration_exits_64_naming_the_fix() {
    for (args, needle) in [
        (
            vec!["serve", "--max-in-flight-records", "0"],
            "--max-in-flight-records",
        ),
        (vec!["serve", "-X", "linger.ms=50"], "use --linger-ms"),
        (
            vec![
                "serve",
                "-X",
                "no.such.property=1",
                "--bootstrap-servers",
                "127.0.0.1:9",
            ],
            "no.such.property",
        ),
        (vec!["serve", "--compression", "brotli"], "brotli"),
        (
            vec!["serve", "--metrics-listen", "localhost"],
            "--metrics-listen",
        ),
    ] {
        let output = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }

    // OpenTelemetry's variables are configuration too.
    let output = Command::new(BIN)
        .args(["serve", "--bootstrap-servers", "127.0.0.1:9"])
        .env("OTEL_TRACES_EXPORTER", "zipkin")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only otlp"), "{stderr}");
}

#[test]
fn sasl_and_ssl_settings_reach_librdkafka() {
    // A CA file that does not exist: librdkafka refuses the producer at
    // start, and the gateway exits 64 naming the property.
    let output = common::binary::command(
        "serve",
        &[
            "--bootstrap-servers",
            "127.0.0.1:9",
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-512",
            "-X",
            "sasl.username=gateway",
            "-X",
            "sasl.password=not-logged",
            "-X",
            "ssl.ca.location=/nonexistent/ca.pem",
        ],
        &[("RUST_LOG", "error")],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ssl.ca.location"), "{stderr}");
    assert!(
        !stderr.contains("not-logged"),
        "the password is not logged: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssl_producer_against_a_plaintext_broker_never_becomes_ready() {
    // SSL towards the embedded broker, which speaks plaintext: librdkafka's
    // TLS handshake fails, so the setting did reach it, and the gateway
    // stays not ready, saying why.
    let broker = kafka_gateway::EmbeddedBroker::start(1, 1).unwrap();
    let dir = common::pki::TempDir::new();
    let ca = dir.write("ca.pem", common::pki::Ca::new("kafka CA").cert_pem());
    let mut served = serve(
        &[
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--metrics-listen",
            "127.0.0.1:0",
            "-X",
            "security.protocol=SSL",
            "-X",
            &format!("ssl.ca.location={}", ca.display()),
        ],
        &[],
    );
    // The one line of the outage may come before the gRPC server's. It
    // names the broker as librdkafka does, `ssl://host:port/bootstrap`,
    // and says why: "SSL handshake failed: ... connecting to a PLAINTEXT
    // broker listener?", or, when the broker's reset comes first, only
    // "Disconnected: connection reset by peer" (which one is a race).
    let ssl = |line: &str| line.contains("ssl://") && line.contains("unreachable");
    let saw_ssl = served.startup.iter().any(|line| ssl(line))
        || (0..100).any(|_| {
            served
                .lines
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_ok_and(|line| ssl(&line))
        });
    assert!(
        saw_ssl,
        "librdkafka connects with SSL, and the outage is logged"
    );
    let metrics: std::net::SocketAddr = served.metrics.clone().unwrap().parse().unwrap();
    let (status, body) = http_get(metrics, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());
}

#[test]
fn unreachable_brokers_are_one_line_and_nothing_follows_bye() {
    // Nothing listens on port 1: librdkafka fails to connect every second or
    // so, and reports each failure as a log line and as an error event.
    let mut served = serve(&["--bootstrap-servers", "127.0.0.1:1"], &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut lines = served.startup.clone();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        if let Ok(line) = served.lines.recv_timeout(left) {
            lines.push(line);
        }
    }
    let rdkafka: Vec<&String> = lines.iter().filter(|l| l.contains("librdkafka")).collect();
    let outages: Vec<&&String> = rdkafka
        .iter()
        .filter(|l| l.contains("Kafka brokers unreachable since"))
        .collect();
    assert_eq!(outages.len(), 1, "one line for the outage: {rdkafka:#?}");
    assert!(
        outages[0].contains("127.0.0.1:1") && outages[0].contains("UTC"),
        "it names the broker and the time: {}",
        outages[0]
    );
    assert!(
        rdkafka.len() <= 2,
        "librdkafka's repeats are not printed over 6 s: {rdkafka:#?}"
    );

    sigterm(&served.child);
    assert!(wait_exit(&mut served.child).success());
    let mut after = Vec::new();
    while let Ok(line) = served.lines.recv_timeout(std::time::Duration::from_secs(2)) {
        after.push(line);
    }
    let bye = after
        .iter()
        .position(|l| l.contains(" bye"))
        .unwrap_or_else(|| panic!("the gateway says bye: {after:#?}"));
    assert_eq!(bye + 1, after.len(), "nothing after bye: {after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_listens_where_asked_and_falls_back_when_taken() {
    // `serve` asks for 127.0.0.1:9092; a test machine may have a Kafka
    // there, so this takes a free port the same way.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixed = format!("127.0.0.1:{port}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (asked, free) in [(&fixed, true), (&taken_addr, false)] {
        let mut served = serve(&["--embedded-listen", asked], &[]);
        let bootstrap = served.bootstrap.clone().expect("logged");
        let logged = served.startup.join("\n");
        assert_eq!(bootstrap == *asked, free, "{logged}");
        if !free {
            assert!(
                logged.contains(&format!("cannot listen on {asked}"))
                    && logged.contains("--embedded-listen"),
                "the fallback is logged: {logged}"
            );
        }
        assert!(
            logged.contains(&format!("kcat -b {bootstrap} -C -t TOPIC -e")),
            "a read-back command that exits: {logged}"
        );
        // The logged address serves what was produced.
        let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
            .await
            .unwrap();
        let topic = rand_topic("cli-fixed");
        let records = vec![record("k", "fixed")];
        let responses = produce_stream(&mut client, vec![batch(1, &topic, records)]).await;
        let ack = ok(&responses[0].as_ref().unwrap().results[0]).clone();
        let consumed = consume(&bootstrap, &topic, 1).await;
        assert_eq!(at(&consumed, &ack).value.as_deref(), Some(&b"fixed"[..]));
        sigterm(&served.child);
        assert!(wait_exit(&mut served.child).success());
    }
    drop(taken);
}
