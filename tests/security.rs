//! The front door, locked: TLS and mTLS, JWTs and API keys, per-topic
//! authorization, the principal header, quotas, and reloading without
//! dropping streams. Every negative case checks the status and the message
//! the client gets; what was denied is read back from the broker to show it
//! was never written.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::serve;
use common::pki::{Ca, Leaf, Signer, TempDir, api_key_line, jwks, now};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, ProduceResponse};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A TLS channel to the gateway at `addr`, trusting `ca`, presenting
/// `identity` when given.
async fn tls_channel(
    addr: impl std::fmt::Display,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// A plaintext channel.
async fn plain_channel(addr: impl std::fmt::Display) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Sends `requests` on one stream, with `token` as the bearer credential;
/// everything received, the stream's status last.
async fn send(
    channel: Channel,
    token: Option<&str>,
    requests: Vec<ProduceRequest>,
) -> Vec<Result<ProduceResponse, Status>> {
    let mut request = tonic::Request::new(tokio_stream::iter(requests));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut out = Vec::new();
    match ProducerClient::new(channel).produce(request).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.message().await {
                    Ok(Some(response)) => out.push(Ok(response)),
                    Ok(None) => break,
                    Err(status) => {
                        out.push(Err(status));
                        break;
                    }
                }
            }
        }
        Err(status) => out.push(Err(status)),
    }
    out
}

/// The status a call ended with; panics if it succeeded.
#[track_caller]
fn refused(responses: &[Result<ProduceResponse, Status>]) -> &Status {
    match responses.last() {
        Some(Err(status)) => status,
        other => panic!("expected the call to be refused, got {other:?}"),
    }
}

/// Asserts an UNAUTHENTICATED status whose message contains `needle` and
/// does not repeat `secret`.
#[track_caller]
fn assert_unauthenticated(
    responses: &[Result<ProduceResponse, Status>],
    needle: &str,
    secret: &str,
) {
    let status = refused(responses);
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} lacks {needle:?}",
        status.message()
    );
    assert!(
        secret.len() < 8 || !status.message().contains(secret),
        "the message echoes the credential: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_only_tls_clients_that_trust_its_certificate() {
    let (dir, ca) = (TempDir::new(), Ca::new("gateway CA"));
    let server = ca.server();
    let cert = dir.write("tls.crt", &server.cert_pem);
    let key = dir.write("tls.key", &server.key_pem);
    let gateway = start_gateway(&["--tls-cert", &path(&cert), "--tls-key", &path(&key)]).await;
    let topic = gateway.topic("tls").await;

    // Plaintext to the TLS port: the connection fails; nothing is served.
    let plain = Endpoint::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await;
    // (The client sees its HTTP/2 preface answered by a TLS alert: a
    // protocol error.)
    if let Ok(channel) = plain {
        let responses = send(
            channel,
            None,
            vec![batch(0, &topic, vec![record("k", "plain")])],
        )
        .await;
        refused(&responses);
    }
    // A client that trusts another CA refuses the gateway's certificate.
    let other = Ca::new("another CA");
    assert!(
        tls_channel(gateway.addr, &other.cert_pem(), None)
            .await
            .is_err()
    );

    // A client that trusts the gateway's CA is served, unaffected by the
    // failed attempts.
    let channel = tls_channel(gateway.addr, &ca.cert_pem(), None)
        .await
        .unwrap();
    let responses = send(
        channel,
        None,
        vec![batch(1, &topic, vec![record("k", "over TLS")])],
    )
    .await;
    let meta = ok(&responses[0].as_ref().unwrap().results[0]).clone();
    let consumed = consume(gateway.bootstrap_servers(), &topic, 1).await;
    assert_eq!(consumed.len(), 1);
    assert_eq!(
        at(&consumed, &meta).value.as_deref(),
        Some(&b"over TLS"[..])
    );
    gateway.stop().await.unwrap();
}

/// A gateway requiring client certificates from `ca`, with a policy
/// granting `orders-writer` the orders topics and any SPIFFE identity of
/// namespace `pay` the payments topic.
async fn mtls_gateway(dir: &TempDir, ca: &Ca, extra: &[&str]) -> TestGateway {
    let server = ca.server();
    let cert = dir.write("tls.crt", &server.cert_pem);
    let key = dir.write("tls.key", &server.key_pem);
    let client_ca = dir.write("clients.crt", ca.cert_pem());
    let policy = dir.write(
        "policy.toml",
        r#"
[[grant]]
principals = ["orders-writer"]
topics = ["orders-*"]

[[grant]]
principals = ["spiffe://prod/ns/pay/*"]
topics = ["payments-*"]
"#,
    );
    let mut args = vec![
        "--tls-cert".to_owned(),
        path(&cert),
        "--tls-key".to_owned(),
        path(&key),
        "--tls-client-ca".to_owned(),
        path(&client_ca),
        "--authz-policy".to_owned(),
        path(&policy),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_gateway(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_principals_may_write_exactly_their_topics() {
    let (dir, ca) = (TempDir::new(), Ca::new("clients CA"));
    let gateway = mtls_gateway(&dir, &ca, &[]).await;
    let orders = rand_topic("orders");
    let orders_eu = rand_topic("orders");
    let payments = rand_topic("payments");
    for topic in [&orders, &orders_eu, &payments] {
        gateway.kafka.create_topic(topic, PARTITIONS).await;
    }

    // No certificate, a certificate of another CA, an expired one: the
    // handshake fails, no call is served.
    let no_cert = tls_channel(gateway.addr, &ca.cert_pem(), None).await;
    let other_ca = Ca::new("another CA");
    let foreign = tls_channel(
        gateway.addr,
        &ca.cert_pem(),
        Some(&other_ca.client("orders-writer", None)),
    )
    .await;
    let expired = tls_channel(
        gateway.addr,
        &ca.cert_pem(),
        Some(&ca.expired_client("orders-writer")),
    )
    .await;
    // (TLS 1.3 finishes the client's side of the handshake before the
    // server checks the certificate, so the failure may show on the first
    // call instead, as a transport error.)
    for (what, channel) in [
        ("no certificate", no_cert),
        ("another CA", foreign),
        ("expired", expired),
    ] {
        if let Ok(channel) = channel {
            let responses = send(
                channel,
                None,
                vec![batch(0, &orders, vec![record("k", what)])],
            )
            .await;
            // Refused by the transport, whatever code the client's
            // library gives that; nothing is read (checked below).
            let status = refused(&responses);
            eprintln!("{what}: {status:?}");
        }
    }

    // The CN principal: its topics go through, another topic in the same
    // batch is refused per record, and the stream goes on.
    let writer = ca.client("orders-writer", None);
    let channel = tls_channel(gateway.addr, &ca.cert_pem(), Some(&writer))
        .await
        .unwrap();
    let mut to_payments = record("k", "not yours");
    to_payments.topic = payments.clone();
    let mut to_eu = record("k", "eu");
    to_eu.topic = orders_eu.clone();
    let responses = send(
        channel.clone(),
        None,
        vec![
            batch(1, &orders, vec![record("k", "mine"), to_payments, to_eu]),
            batch(2, &orders, vec![record("k", "still mine")]),
        ],
    )
    .await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    let first = &responses[0].as_ref().unwrap().results;
    ok(&first[0]);
    let denied = assert_error(
        &first[1],
        ErrorCode::NotAuthorized,
        "\"orders-writer\" may not produce",
    );
    assert!(
        denied.message.contains(&payments) && !denied.retriable,
        "{denied:?}"
    );
    ok(&first[2]);
    ok(&responses[1].as_ref().unwrap().results[0]);

    // The SPIFFE principal (URI SAN): the other way round.
    let payer = ca.client("ignored-cn", Some("spiffe://prod/ns/pay/sa/writer"));
    let channel = tls_channel(gateway.addr, &ca.cert_pem(), Some(&payer))
        .await
        .unwrap();
    let mut to_orders = record("k", "not yours either");
    to_orders.topic = orders.clone();
    let responses = send(
        channel,
        None,
        vec![batch(3, &payments, vec![record("k", "paid"), to_orders])],
    )
    .await;
    let results = &responses[0].as_ref().unwrap().results;
    ok(&results[0]);
    assert_error(
        &results[1],
        ErrorCode::NotAuthorized,
        "spiffe://prod/ns/pay/sa/writer",
    );

    // What was denied was never written.
    let stored = |topic: String| {
        let servers = gateway.bootstrap_servers().to_owned();
        async move { consume(&servers, &topic, 0).await }
    };
    let values = |records: Vec<Consumed>| -> Vec<Vec<u8>> {
        records.into_iter().filter_map(|c| c.value).collect()
    };
    assert_eq!(
        values(stored(orders.clone()).await),
        vec![b"mine".to_vec(), b"still mine".to_vec()]
    );
    assert_eq!(values(stored(orders_eu).await), vec![b"eu".to_vec()]);
    assert_eq!(values(stored(payments).await), vec![b"paid".to_vec()]);
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_denied_records_total{principal="orders-writer"}"#
        ),
        Some(1.0),
        "{text}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_and_every_bad_one_is_told_what_is_wrong() {
    let dir = TempDir::new();
    let (k1, k2) = (Signer::new("k1"), Signer::new("k2"));
    let jwks_file = dir.write("jwks.json", jwks(&[&k1]));
    let gateway = start_gateway(&[
        "--jwt-jwks",
        &path(&jwks_file),
        "--jwt-issuer",
        "https://issuer.test",
        "--jwt-audience",
        "kafka-gateway",
        "--reload-interval",
        "200ms",
    ])
    .await;
    let topic = gateway.topic("jwt").await;
    let channel = plain_channel(gateway.addr).await;
    let claims = |extra: serde_json::Value| {
        let mut claims = json!({
            "sub": "checkout", "iss": "https://issuer.test", "aud": "kafka-gateway",
            "exp": now() + 600, "iat": now(),
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    let one = |n: u64| vec![batch(n, &topic, vec![record("k", format!("jwt-{n}"))])];

    let valid = k1.token(claims(json!({})));
    let responses = send(channel.clone(), Some(&valid), one(1)).await;
    ok(&responses[0].as_ref().unwrap().results[0]);

    let other_key = Signer::new("k1");
    for (token, needle) in [
        (
            k1.token(claims(json!({"exp": now() - 3_600}))),
            "token expired at",
        ),
        (
            k1.token(claims(json!({"nbf": now() + 3_600}))),
            "token not valid before",
        ),
        (
            k1.token(claims(json!({"iss": "https://evil.test"}))),
            "wrong issuer",
        ),
        (
            k1.token(claims(json!({"aud": "someone-else"}))),
            "wrong audience",
        ),
        (other_key.token(claims(json!({}))), "bad signature"),
        (
            format!(
                "{}.{}.",
                base64_url(&json!({"alg": "none", "typ": "JWT"})),
                base64_url(&claims(json!({})))
            ),
            "algorithm not accepted",
        ),
        (k2.token(claims(json!({}))), "unknown key id \"k2\""),
        ("not-a-jwt-and-no-api-keys".to_owned(), "malformed token"),
    ] {
        let responses = send(channel.clone(), Some(&token), one(2)).await;
        assert_unauthenticated(&responses, needle, &token);
    }
    assert_unauthenticated(
        &send(channel.clone(), None, one(3)).await,
        "no credentials",
        "",
    );

    // The JWKS file gains k2: once reloaded, k2's tokens are accepted.
    std::fs::write(&jwks_file, jwks(&[&k1, &k2])).unwrap();
    let with_k2 = k2.token(claims(json!({})));
    eventually("k2's token accepted after the JWKS reload", || {
        let (channel, token) = (channel.clone(), with_k2.clone());
        let topic = topic.clone();
        async move {
            let responses = send(
                channel,
                Some(&token),
                vec![batch(4, &topic, vec![record("k", "k2")])],
            )
            .await;
            responses[0].as_ref().ok().map(|_| ())
        }
    })
    .await;

    // Health checking stays open without credentials.
    let mut health = HealthClient::new(channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health checking needs no token");
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    for reason in [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "bad_signature",
        "algorithm_not_accepted",
        "unknown_key_id",
        "missing",
    ] {
        let series = format!(r#"kafka_gateway_auth_failures_total{{reason="{reason}"}}"#);
        assert!(
            sample(&text, &series).is_some_and(|n| n >= 1.0),
            "{series} in\n{text}"
        );
    }
    gateway.stop().await.unwrap();
}

fn base64_url(value: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_right_and_wrong_and_the_principal_header_cannot_be_forged() {
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("loader", "s3cret-loader-key-0123456789"),
    );
    let gateway = start_gateway(&[
        "--api-keys",
        &path(&keys),
        "--principal-header",
        "x-principal",
    ])
    .await;
    let topic = gateway.topic("api-keys").await;
    let channel = plain_channel(gateway.addr).await;

    let wrong = send(
        channel.clone(),
        Some("s3cret-but-wrong-0123456789"),
        vec![batch(0, &topic, vec![record("k", "v")])],
    )
    .await;
    assert_unauthenticated(&wrong, "unknown API key", "s3cret-but-wrong-0123456789");

    // The client tries to pass as someone else: its headers of that name,
    // in any case, are dropped, the gateway's is added once.
    let mut forged = record("k", "v");
    forged.headers = vec![
        header("before", b"1"),
        header("x-principal", b"admin"),
        header("X-Principal", b"admin"),
        header("after", b"2"),
    ];
    let responses = send(
        channel,
        Some("s3cret-loader-key-0123456789"),
        vec![batch(1, &topic, vec![forged])],
    )
    .await;
    let meta = ok(&responses[0].as_ref().unwrap().results[0]).clone();
    let consumed = consume(gateway.bootstrap_servers(), &topic, 1).await;
    assert_eq!(
        at(&consumed, &meta).headers,
        vec![
            ("before".to_owned(), b"1".to_vec()),
            ("after".to_owned(), b"2".to_vec()),
            ("x-principal".to_owned(), b"loader".to_vec()),
        ]
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_slows_its_caller_without_errors_and_leaves_others_alone() {
    const RECORDS: usize = 2_000;
    const RATE: usize = 500;
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("slow", "slow-key-0001-0123456789ab")
            + &api_key_line("fast", "fast-key-0001-0123456789ab"),
    );
    let policy = dir.write(
        "policy.toml",
        r#"
[[grant]]
principals = ["*"]
topics = ["quota-*"]

[[quota]]
principals = ["fast"]
records_per_sec = 10000000
"#,
    );
    let rate = RATE.to_string();
    let gateway = start_gateway(&[
        "--api-keys",
        &path(&keys),
        "--authz-policy",
        &path(&policy),
        "--quota-records-per-sec",
        &rate,
    ])
    .await;
    let topic = gateway.topic("quota").await;
    let run = |key: &'static str| {
        let (addr, topic) = (gateway.addr, topic.clone());
        tokio::spawn(async move {
            let batches: Vec<ProduceRequest> = (0..RECORDS / 100)
                .map(|b| {
                    batch(
                        b as u64,
                        &topic,
                        (0..100)
                            .map(|i| record(key, format!("{key}-{b}-{i}")))
                            .collect(),
                    )
                })
                .collect();
            let started = Instant::now();
            let responses = send(plain_channel(addr).await, Some(key), batches).await;
            (started.elapsed(), responses)
        })
    };
    let (slow, fast) = (
        run("slow-key-0001-0123456789ab"),
        run("fast-key-0001-0123456789ab"),
    );
    let (slow_took, slow_responses) = slow.await.unwrap();
    let (fast_took, fast_responses) = fast.await.unwrap();
    for responses in [&slow_responses, &fast_responses] {
        assert_eq!(
            all_acks(responses).len(),
            RECORDS,
            "every record acked, none failed"
        );
    }
    // One second's worth passes at once; the rest at the rate.
    let floor = Duration::from_secs_f64((RECORDS - RATE) as f64 / RATE as f64 * 0.8);
    eprintln!("quota: slow caller {slow_took:?} (at least {floor:?}), fast caller {fast_took:?}");
    assert!(
        slow_took >= floor,
        "the slow caller took only {slow_took:?}"
    );
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    let throttled = |who: &str| {
        sample(
            &text,
            &format!(r#"kafka_gateway_throttled_seconds_total{{principal="{who}"}}"#),
        )
    };
    assert!(throttled("slow").is_some_and(|s| s > 1.0), "{text}");
    assert_eq!(throttled("fast"), None, "the other caller was never slowed");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_reaches_new_connections_while_open_streams_go_on() {
    let dir = TempDir::new();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let old = old_ca.server();
    let cert = dir.write("tls.crt", &old.cert_pem);
    let key = dir.write("tls.key", &old.key_pem);
    let gateway = start_gateway(&[
        "--tls-cert",
        &path(&cert),
        "--tls-key",
        &path(&key),
        "--reload-interval",
        "100ms",
    ])
    .await;
    let topic = gateway.topic("rotation").await;

    let channel = tls_channel(gateway.addr, &old_ca.cert_pem(), None)
        .await
        .unwrap();
    let mut client = ProducerClient::new(channel);
    let (mut responses, feeder) = {
        let (tx, rx) = mpsc::channel(4);
        tx.send(batch(0, &topic, vec![record("k", "before")]))
            .await
            .unwrap();
        let inbound = client
            .produce(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (inbound, tx)
    };
    ok(&responses.message().await.unwrap().unwrap().results[0]);

    // cert-manager style: the key and the certificate are replaced.
    let new = new_ca.server();
    dir.write("tls.key", &new.key_pem);
    dir.write("tls.crt", &new.cert_pem);
    eventually("new connections get the new certificate", || {
        let (addr, ca) = (gateway.addr, new_ca.cert_pem());
        async move { tls_channel(addr, &ca, None).await.ok().map(|_| ()) }
    })
    .await;
    assert!(
        tls_channel(gateway.addr, &old_ca.cert_pem(), None)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The stream opened before the rotation goes on.
    feeder
        .send(batch(1, &topic, vec![record("k", "after")]))
        .await
        .unwrap();
    ok(&responses.message().await.unwrap().unwrap().results[0]);
    drop(feeder);
    assert!(responses.message().await.unwrap().is_none());
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_an_open_stream_keeps_running() {
    let broker = TestKafka::start();
    let (granted, later) = (broker.topic("granted").await, broker.topic("later").await);
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("app", "app-key-0001-0123456789abc"),
    );
    let grant =
        |topics: &[&str]| format!("[[grant]]\nprincipals = [\"app\"]\ntopics = {topics:?}\n");
    let policy = dir.write("policy.toml", grant(&[&granted]));
    // Files are checked only hourly: only SIGHUP can reload them.
    let served = serve(
        &[
            "--bootstrap-servers",
            broker.bootstrap_servers(),
            "--api-keys",
            &path(&keys),
            "--authz-policy",
            &path(&policy),
            "--reload-interval",
            "3600s",
        ],
        &[],
    );
    let channel = plain_channel(&served.grpc).await;
    let (tx, rx) = mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        "Bearer app-key-0001-0123456789abc".parse().unwrap(),
    );
    let mut responses = ProducerClient::new(channel)
        .produce(request)
        .await
        .unwrap()
        .into_inner();
    let mut next = 0u64;
    let mut send_one = |topic: &str| {
        next += 1;
        batch(next, topic, vec![record("k", format!("{topic}-{next}"))])
    };
    tx.send(send_one(&later)).await.unwrap();
    let denied = responses.message().await.unwrap().unwrap();
    assert_error(&denied.results[0], ErrorCode::NotAuthorized, &later);

    dir.write("policy.toml", grant(&[&granted, &later]));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The same stream, still open: its next batches follow the new policy.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tx.send(send_one(&later)).await.unwrap();
        let response = responses.message().await.unwrap().unwrap();
        if matches!(
            response.results[0].result,
            Some(kafka_gateway::proto::record_result::Result::Ok(_))
        ) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy was not reloaded on SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    assert!(
        responses.message().await.unwrap().is_none(),
        "the stream ends OK"
    );
    drop(served);
}

// Its last step is `kafka-gateway produce`: the `client` feature.
#[cfg(feature = "client")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_steps_from_zero_to_tls_jwt_and_a_policy_work_as_written() {
    // 1. demo credentials, as docs/security.md makes them.
    let dir = TempDir::new();
    let made = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/security/demo_credentials.py"
        ))
        .arg(dir.path())
        .arg("orders-service")
        .output()
        .expect("python3 runs (the demo needs Python 3 and openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // 2. the policy.
    dir.write(
        "policy.toml",
        "[[grant]]\nprincipals = [\"orders-service\"]\ntopics = [\"orders\", \"orders.*\"]\n",
    );
    // 3. the gateway, with docs/security.md's flags (on loopback port 0 and the
    // embedded broker).
    let file = |name: &str| path(&dir.path().join(name));
    let served = serve(
        &[
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server-key.pem"),
            "--jwt-jwks",
            &file("jwks.json"),
            "--jwt-issuer",
            "https://demo.issuer",
            "--jwt-audience",
            "kafka-gateway",
            "--authz-policy",
            &file("policy.toml"),
        ],
        &[],
    );
    let port = served.grpc.rsplit(':').next().unwrap();
    // 4. the client: granted topic acked, another refused.
    let produce = |topic: &str| {
        let mut child = common::binary::command(
            "produce",
            &[
                "--target",
                &format!("https://localhost:{port}"),
                "--tls-ca",
                &file("ca.pem"),
                "--token-file",
                &file("orders-service.jwt"),
                "-t",
                topic,
            ],
            &[],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let orders = produce("orders");
    assert!(
        orders.status.success(),
        "{}",
        String::from_utf8_lossy(&orders.stderr)
    );
    let payments = produce("payments");
    assert_eq!(payments.status.code(), Some(1));
    let report = String::from_utf8_lossy(&payments.stderr);
    assert!(report.contains("ERROR_CODE_NOT_AUTHORIZED"), "{report}");
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_ids_are_granted_per_principal_so_none_fences_another() {
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("alice", "alice-key-0001-0123456789a")
            + &api_key_line("bob", "bob-key-0001-0123456789abc"),
    );
    let policy = dir.write(
        "policy.toml",
        r#"
[[grant]]
principals = ["alice", "bob"]
topics = ["txn-*"]

[[grant]]
principals = ["alice"]
transactional_ids = ["alice-*"]
"#,
    );
    // Transactions: an embedded broker of its own (tansu has none).
    let gateway =
        start_gateway_embedded(&["--api-keys", &path(&keys), "--authz-policy", &path(&policy)])
            .await;
    let topic = gateway.topic("txn").await;
    let transactional = |id: &str| ProduceRequest {
        transactional_id: id.into(),
        commit: true,
        ..batch(0, &topic, vec![record("k", "v")])
    };
    let responses = send(
        plain_channel(gateway.addr).await,
        Some("alice-key-0001-0123456789a"),
        vec![transactional("alice-orders")],
    )
    .await;
    assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
    for (key, id, who) in [
        ("alice-key-0001-0123456789a", "bob-orders", "alice"),
        ("bob-key-0001-0123456789abc", "alice-orders", "bob"),
    ] {
        let responses = send(
            plain_channel(gateway.addr).await,
            Some(key),
            vec![transactional(id)],
        )
        .await;
        let status = refused(&responses);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(&format!("principal {who:?}"))
                && status
                    .message()
                    .contains(&format!("transactional id {id:?}")),
            "{status:?}"
        );
    }
    gateway.stop().await.unwrap();
}

/// A stream opened with `token`, fed through the returned sender.
async fn open_with(
    channel: Channel,
    token: Option<&str>,
) -> (
    mpsc::Sender<ProduceRequest>,
    tonic::Streaming<ProduceResponse>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let responses = ProducerClient::new(channel)
        .produce(request)
        .await
        .expect("the stream is accepted")
        .into_inner();
    (tx, responses)
}

/// Sends one record to `topic` and expects it acked.
async fn acked(
    tx: &mpsc::Sender<ProduceRequest>,
    responses: &mut tonic::Streaming<ProduceResponse>,
    batch_id: u64,
    topic: &str,
) {
    tx.send(batch(
        batch_id,
        topic,
        vec![record("k", format!("v{batch_id}"))],
    ))
    .await
    .unwrap();
    let response = responses.message().await.unwrap().unwrap();
    ok(&response.results[0]);
}

/// Waits (at most 15 s) for the stream to end with a status, reading any
/// answers before it.
async fn ended(responses: &mut tonic::Streaming<ProduceResponse>) -> Status {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended OK"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream was ended within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_removed_by_a_reload_ends_the_streams_it_opened() {
    const ALICE: &str = "alice-key-0123456789abcdef";
    const BOB: &str = "bob-key-0123456789abcdefgh";
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("alice", ALICE) + &api_key_line("bob", BOB),
    );
    let gateway = start_gateway(&["--api-keys", &path(&keys), "--reload-interval", "100ms"]).await;
    let topic = gateway.topic("revoked").await;
    let (alice_tx, mut alice) = open_with(plain_channel(gateway.addr).await, Some(ALICE)).await;
    let (bob_tx, mut bob) = open_with(plain_channel(gateway.addr).await, Some(BOB)).await;
    acked(&alice_tx, &mut alice, 0, &topic).await;
    acked(&bob_tx, &mut bob, 0, &topic).await;

    // Alice's key is taken out of the file; the reload reaches her open
    // stream, not Bob's.
    let removed = Instant::now();
    dir.write("api-keys", api_key_line("bob", BOB));
    let status = ended(&mut alice).await;
    eprintln!("revoked after {:?}: {status:?}", removed.elapsed());
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("removed from the gateway's --api-keys file"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains(ALICE));
    acked(&bob_tx, &mut bob, 1, &topic).await;
    // And her key opens nothing new.
    let responses = send(
        plain_channel(gateway.addr).await,
        Some(ALICE),
        vec![batch(9, &topic, vec![record("k", "v")])],
    )
    .await;
    assert_unauthenticated(&responses, "unknown API key", ALICE);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_jwt_expires() {
    let dir = TempDir::new();
    let signer = Signer::new("k1");
    let jwks_file = dir.write("jwks.json", jwks(&[&signer]));
    let gateway = start_gateway(&[
        "--jwt-jwks",
        &path(&jwks_file),
        "--jwt-audience",
        "kafka-gateway",
    ])
    .await;
    let topic = gateway.topic("expiring").await;
    // Accepted for 3 s more: its exp passed 27 s ago, within the 30 s of
    // clock skew allowed.
    let token = signer.token(json!({
        "sub": "checkout", "aud": "kafka-gateway", "exp": now() - 27, "iat": now() - 600,
    }));
    let opened = Instant::now();
    let (tx, mut responses) = open_with(plain_channel(gateway.addr).await, Some(&token)).await;
    acked(&tx, &mut responses, 0, &topic).await;
    let status = ended(&mut responses).await;
    let lasted = opened.elapsed();
    eprintln!("an expiring token's stream ended after {lasted:?}: {status:?}");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("token expired at"),
        "{}",
        status.message()
    );
    assert!(lasted < Duration::from_secs(8), "{lasted:?}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_dropped_by_a_reload_ends_the_streams_of_its_certificates() {
    let (dir, ca) = (TempDir::new(), Ca::new("clients CA"));
    let gateway = mtls_gateway(&dir, &ca, &["--reload-interval", "100ms"]).await;
    let topic = gateway.topic("orders").await;
    let writer = ca.client("orders-writer", None);
    let channel = tls_channel(gateway.addr, &ca.cert_pem(), Some(&writer))
        .await
        .unwrap();
    let (tx, mut responses) = open_with(channel, None).await;
    acked(&tx, &mut responses, 0, &topic).await;

    // The clients' CA is replaced by another.
    dir.write("clients.crt", Ca::new("another CA").cert_pem());
    let status = ended(&mut responses).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("no longer verifies against the gateway's --tls-client-ca"),
        "{}",
        status.message()
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_id_taken_back_by_a_reload_ends_its_stream() {
    const ALICE: &str = "alice-key-0123456789abcdef";
    let dir = TempDir::new();
    let keys = dir.write("api-keys", api_key_line("alice", ALICE));
    let granted = "[[grant]]\nprincipals = [\"alice\"]\ntopics = [\"txn-*\"]\ntransactional_ids = [\"alice-*\"]\n";
    let policy = dir.write("policy.toml", granted);
    // Transactions: an embedded broker of its own (tansu has none).
    let gateway = start_gateway_embedded(&[
        "--api-keys",
        &path(&keys),
        "--authz-policy",
        &path(&policy),
        "--reload-interval",
        "100ms",
    ])
    .await;
    let topic = gateway.topic("txn").await;
    let (tx, mut responses) = open_with(plain_channel(gateway.addr).await, Some(ALICE)).await;
    let transactional = |batch_id: u64, commit: bool| ProduceRequest {
        transactional_id: "alice-orders".into(),
        commit,
        ..batch(batch_id, &topic, vec![record("k", format!("t{batch_id}"))])
    };
    tx.send(transactional(0, true)).await.unwrap();
    ok(&responses.message().await.unwrap().unwrap().results[0]);
    // A transaction is open when the grant goes.
    tx.send(transactional(1, false)).await.unwrap();
    dir.write(
        "policy.toml",
        "[[grant]]\nprincipals = [\"alice\"]\ntopics = [\"txn-*\"]\n",
    );
    let status = ended(&mut responses).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("may no longer use transactional id \"alice-orders\""),
        "{}",
        status.message()
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_take_every_stream() {
    const ALICE: &str = "alice-key-0123456789abcdef";
    const BOB: &str = "bob-key-0123456789abcdefgh";
    let dir = TempDir::new();
    let keys = dir.write(
        "api-keys",
        api_key_line("alice", ALICE) + &api_key_line("bob", BOB),
    );
    let gateway = start_gateway(&[
        "--api-keys",
        &path(&keys),
        "--max-streams",
        "10",
        "--max-streams-per-principal",
        "3",
    ])
    .await;
    let topic = gateway.topic("per-principal").await;
    let channel = plain_channel(gateway.addr).await;
    let mut open = Vec::new();
    for b in 0..3 {
        let (tx, mut responses) = open_with(channel.clone(), Some(ALICE)).await;
        acked(&tx, &mut responses, b, &topic).await;
        open.push((tx, responses));
    }
    let refused_call = send(
        channel.clone(),
        Some(ALICE),
        vec![batch(9, &topic, vec![record("k", "v")])],
    )
    .await;
    let status = refused(&refused_call);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("principal \"alice\" holds 3 calls")
            && status.message().contains("--max-streams-per-principal"),
        "{}",
        status.message()
    );
    // Bob is served.
    let (tx, mut responses) = open_with(channel.clone(), Some(BOB)).await;
    acked(&tx, &mut responses, 0, &topic).await;
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_topic_names_never_become_metric_labels() {
    const KEY: &str = "writer-key-0123456789abcdef";
    let dir = TempDir::new();
    let keys = dir.write("api-keys", api_key_line("writer", KEY));
    let kafka = TestKafka::start();
    let granted = kafka.topic("granted").await;
    let policy = dir.write(
        "policy.toml",
        format!("[[grant]]\nprincipals = [\"writer\"]\ntopics = [\"{granted}\"]\n"),
    );
    let gateway = start_gateway_on(
        kafka,
        true,
        &["--api-keys", &path(&keys), "--authz-policy", &path(&policy)],
    )
    .await;
    let denied: Vec<String> = (0..200)
        .map(|i| format!("attacker-chosen-{i}-{}", rand_topic("x")))
        .collect();
    let mut records: Vec<_> = denied
        .iter()
        .map(|topic| {
            let mut r = record("k", "v");
            r.topic = topic.clone();
            r
        })
        .collect();
    records.push(record("k", "granted"));
    let responses = send(
        plain_channel(gateway.addr).await,
        Some(KEY),
        vec![batch(0, &granted, records)],
    )
    .await;
    let results = &responses[0].as_ref().unwrap().results;
    assert_eq!(results.len(), 201);
    ok(&results[200]);
    let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
    let leaked: Vec<&String> = denied
        .iter()
        .filter(|t| text.contains(t.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} denied topics became labels, e.g. {:?}",
        leaked.len(),
        leaked.first()
    );
    assert_eq!(
        sample(
            &text,
            r#"kafka_gateway_refused_records_total{topic="",result="not_authorized"}"#
        ),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"kafka_gateway_records_total{{topic="{granted}",result="ok"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_stay_inside_the_policy_the_quota_and_their_own_headers() {
    use kafka_gateway::produce::dead_letter::{HEADER_CODE, HEADER_PRINCIPAL};
    const KEY: &str = "writer-key-0123456789abcdef";
    const RATE: usize = 200;
    const DENIED: usize = 600;
    let dir = TempDir::new();
    let keys = dir.write("api-keys", api_key_line("writer", KEY));
    let kafka = TestKafka::start();
    let (granted, dlq) = (kafka.topic("granted").await, kafka.topic("dlq").await);
    let policy = dir.write(
        "policy.toml",
        format!("[[grant]]\nprincipals = [\"writer\"]\ntopics = [\"{granted}\"]\n"),
    );
    let args = |opt_in: bool| {
        let mut args = vec![
            "--api-keys".to_owned(),
            path(&keys),
            "--authz-policy".to_owned(),
            path(&policy),
            "--dead-letter-topic".to_owned(),
            dlq.clone(),
            "--quota-records-per-sec".to_owned(),
            RATE.to_string(),
        ];
        if opt_in {
            args.push("--dead-letter-not-authorized".to_owned());
        }
        args
    };
    let denied_batches = || {
        (0..DENIED / 100)
            .map(|b| {
                batch(
                    b as u64,
                    "not-granted",
                    (0..100)
                        .map(|i| record("k", format!("denied-{b}-{i}")))
                        .collect(),
                )
            })
            .collect::<Vec<_>>()
    };

    // By default, a denied record is answered and written nowhere.
    let argv = args(false);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let gateway = start_gateway_on(kafka.clone(), true, &argv).await;
    let responses = send(
        plain_channel(gateway.addr).await,
        Some(KEY),
        denied_batches(),
    )
    .await;
    for response in &responses {
        for result in &response.as_ref().unwrap().results {
            let error = assert_error(result, ErrorCode::NotAuthorized, "may not produce");
            assert!(error.dead_letter.is_none(), "{error:?}");
        }
    }
    // A record that fails for its own sake is parked, with the gateway's
    // cause headers only, whatever the client put under their prefix.
    let mut forged = record("forged", "invalid partition");
    forged.partition = Some(-1);
    forged.headers = vec![
        header("kafka_gateway.dead_letter.code", b"FORGED"),
        header("kafka_gateway.dead_letter.principal", b"admin"),
        header("mine", b"kept"),
    ];
    let responses = send(
        plain_channel(gateway.addr).await,
        Some(KEY),
        vec![batch(0, &granted, vec![forged])],
    )
    .await;
    let error = err(&responses[0].as_ref().unwrap().results[0]).clone();
    let parked_at = error
        .dead_letter
        .clone()
        .expect("an invalid record is parked");
    let parked = consume(gateway.bootstrap_servers(), &dlq, 1).await;
    assert_eq!(parked.len(), 1, "nothing denied was parked: {parked:?}");
    let stored = at(&parked, &parked_at);
    assert_eq!(stored.key.as_deref(), Some(&b"forged"[..]));
    let codes: Vec<&[u8]> = stored
        .headers
        .iter()
        .filter(|(k, _)| k == HEADER_CODE)
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(
        codes,
        vec![&b"ERROR_CODE_INVALID_RECORD"[..]],
        "{:?}",
        stored.headers
    );
    let principals: Vec<&[u8]> = stored
        .headers
        .iter()
        .filter(|(k, _)| k == HEADER_PRINCIPAL)
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(principals, vec![&b"writer"[..]], "{:?}", stored.headers);
    assert!(
        stored
            .headers
            .contains(&("mine".to_owned(), b"kept".to_vec()))
    );
    gateway.stop().await.unwrap();

    // Opted in, denied records are parked, and charged to the quota first.
    let argv = args(true);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let gateway = start_gateway_on(kafka.clone(), true, &argv).await;
    let started = Instant::now();
    let responses = send(
        plain_channel(gateway.addr).await,
        Some(KEY),
        denied_batches(),
    )
    .await;
    let took = started.elapsed();
    let mut parked = 0;
    for response in &responses {
        for result in &response.as_ref().unwrap().results {
            let error = assert_error(result, ErrorCode::NotAuthorized, "may not produce");
            parked += usize::from(error.dead_letter.is_some());
        }
    }
    assert_eq!(parked, DENIED);
    // One second's worth passes at once, and a batch's pause holds back
    // what follows it; the rest goes at the rate. Without the charge, all
    // 600 were parked in about 0.1 s.
    let floor = Duration::from_secs_f64((DENIED - 2 * RATE) as f64 / RATE as f64 * 0.8);
    eprintln!("{DENIED} denied records parked at {RATE}/s took {took:?} (at least {floor:?})");
    assert!(took >= floor, "parking went around the quota: {took:?}");
    gateway.stop().await.unwrap();
}

#[test]
fn insecure_settings_are_refused_or_said_out_loud() {
    let dir = TempDir::new();
    let signer = Signer::new("k1");
    let jwks_file = dir.write("jwks.json", jwks(&[&signer]));
    // Started on its own, so that a gateway that does start is stopped
    // rather than waited for.
    let mut child = common::binary::command(
        "serve",
        &["--listen", "127.0.0.1:0", "--jwt-jwks", &path(&jwks_file)],
        &[],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started with --jwt-jwks and no --jwt-audience");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--jwt-audience"), "{stderr}");

    let keys = dir.write(
        "api-keys",
        api_key_line("app", "app-key-0123456789abcdefgh"),
    );
    let served = serve(&["--api-keys", &path(&keys)], &[]);
    let warning = served
        .startup
        .iter()
        .find(|line| line.contains("WARN") && line.contains("--authz-policy is not set"))
        .unwrap_or_else(|| panic!("no warning in {:#?}", served.startup));
    assert!(
        warning.contains("every authenticated caller may write every topic")
            && warning.contains("claim every transactional id"),
        "{warning}"
    );
}
