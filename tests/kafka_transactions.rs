//! Transactional streams observed on a real Apache Kafka broker, by
//! `read_committed` and `read_uncommitted` consumers: what the embedded
//! broker cannot show (it serves open and aborted records to every
//! consumer) and tansu cannot run (it has no transactions).
//!
//! - nothing of an open transaction is visible before its commit, and after
//!   it everything is, once, in order, at the acked offsets;
//! - a transaction that ends by abort is never visible: the client goes
//!   away (its connection cut), a record fails, the gateway closes the connection, the gateway process
//!   is killed (before and after the broker's transaction timeout);
//! - SIGTERM mid-transaction: every record answered ABORTED, the process
//!   out within its shutdown timeout, nothing visible;
//! - a commit under a network blackhole: its outcome unknown
//!   (`UNAVAILABLE`, `may_be_stored`) once its resumed calls ran out, all
//!   or nothing of it visible, and the id's next stream commits;
//! - two gateway processes with the same transactional id: the older is
//!   fenced and told, its transaction never visible, the newer's committed;
//! - a transactional id that a broker ACL denies ends the stream with a
//!   clear error.
//!
//! Each aborted case also writes a committed transaction afterwards, and
//! checks that `read_committed` shows exactly that one: the aborted records
//! were written (`read_uncommitted` shows them) and are skipped, not merely
//! stuck behind an open transaction.
//!
//! Ignored by a plain `cargo test`; `.ci/run` runs them against the broker
//! of `scripts/kafka.sh`:
//!
//! ```sh
//! bash scripts/kafka.sh start && eval "$(bash scripts/kafka.sh env)"
//! cargo test --test kafka_transactions -- --ignored
//! ```

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::binary::{Served, serve, wait_exit};
use common::kafka::{ALLOWED, GATEWAY_USER, Isolation, KAFKA_CA, KAFKA_SASL_SSL, env, kafka, read};
use common::proxy::{FaultProxy, Mode};
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, ProduceResponse, Record};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// A batch of a transactional stream.
fn txn_batch(
    id: &str,
    batch_id: u64,
    topic: &str,
    records: Vec<Record>,
    commit: bool,
) -> ProduceRequest {
    ProduceRequest {
        transactional_id: id.into(),
        commit,
        ..batch(batch_id, topic, records)
    }
}

/// `count` records whose values start with `tag`.
fn records(tag: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|n| record(format!("key-{}", n % 7), format!("{tag} {n}")))
        .collect()
}

fn values(consumed: &[Consumed]) -> HashSet<String> {
    consumed
        .iter()
        .map(|c| String::from_utf8_lossy(c.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Consumed records whose value starts with `tag`.
fn tagged<'a>(consumed: &'a [Consumed], tag: &str) -> Vec<&'a Consumed> {
    consumed
        .iter()
        .filter(|c| {
            c.value
                .as_deref()
                .is_some_and(|v| v.starts_with(format!("{tag} ").as_bytes()))
        })
        .collect()
}

/// A transactional stream with its request side held open.
struct TxnStream {
    /// The request side; `None` once half-closed.
    tx: Option<mpsc::Sender<ProduceRequest>>,
    responses: tonic::Streaming<ProduceResponse>,
}

async fn open(client: &mut ProducerClient<Channel>) -> TxnStream {
    let (tx, rx) = mpsc::channel(8);
    let responses = client
        .produce(ReceiverStream::new(rx))
        .await
        .expect("the gateway accepts the stream")
        .into_inner();
    TxnStream {
        tx: Some(tx),
        responses,
    }
}

impl TxnStream {
    async fn send(&self, request: ProduceRequest) {
        let tx = self.tx.as_ref().expect("the request side is open");
        tx.send(request).await.expect("the stream is open");
    }

    /// Ends the request side, as a client that is done (which commits).
    fn half_close(&mut self) {
        self.tx = None;
    }

    /// The next response, within 30 s.
    async fn next(&mut self) -> Result<Option<ProduceResponse>, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(30), self.responses.message())
            .await
            .expect("an answer within 30 s")
    }

    /// Nothing arrives for `wait`.
    async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(got) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("expected no answer before the commit, got {got:?}");
        }
    }
}

/// Commits `records` in one transaction of a new stream with id `id`, and
/// returns their acks.
async fn commit_once(
    client: &mut ProducerClient<Channel>,
    id: &str,
    topic: &str,
    records: Vec<Record>,
) -> Vec<kafka_gateway::proto::RecordMetadata> {
    let mut stream = open(client).await;
    stream.send(txn_batch(id, 0, topic, records, true)).await;
    let response = stream
        .next()
        .await
        .expect("the commit is answered")
        .expect("a response");
    let acks = response.results.iter().map(|r| ok(r).clone()).collect();
    stream.half_close();
    assert!(
        stream.next().await.expect("the stream ends OK").is_none(),
        "the stream ends after the half-close"
    );
    acks
}

/// Waits until a `read_uncommitted` consumer sees `count` records tagged
/// `tag`: they are written, in a transaction that is still open.
async fn written_but_open(bootstrap: &str, topic: &str, tag: &str, count: usize) {
    let uncommitted = read(bootstrap, topic, Isolation::Uncommitted, count).await;
    assert_eq!(
        tagged(&uncommitted, tag).len(),
        count,
        "read_uncommitted sees the open transaction's records"
    );
    let committed = read(bootstrap, topic, Isolation::Committed, 0).await;
    assert!(
        tagged(&committed, tag).is_empty(),
        "read_committed sees none of an open transaction: {:?}",
        values(&committed)
    );
}

/// After an abort: `read_committed` shows the records of `committed_tag`
/// (a transaction committed after the abort) and none of `aborted_tag`,
/// which `read_uncommitted` shows were written.
async fn only_the_commit_is_visible(
    bootstrap: &str,
    topic: &str,
    aborted_tag: &str,
    aborted: usize,
    committed_tag: &str,
    committed: usize,
) {
    let all = read(
        bootstrap,
        topic,
        Isolation::Uncommitted,
        aborted + committed,
    )
    .await;
    assert_eq!(
        tagged(&all, aborted_tag).len(),
        aborted,
        "the aborted records were written"
    );
    let visible = read(bootstrap, topic, Isolation::Committed, committed).await;
    assert!(
        tagged(&visible, aborted_tag).is_empty(),
        "aborted records are visible to read_committed: {:?}",
        values(&visible)
    );
    assert_eq!(
        tagged(&visible, committed_tag).len(),
        committed,
        "the later commit is visible, once"
    );
    eprintln!(
        "{topic}: {} records written, {} visible to read_committed, {} of them aborted",
        all.len(),
        visible.len(),
        tagged(&visible, aborted_tag).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_transaction_is_invisible_until_its_commit_then_visible_once_in_order_at_its_acks() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let gateway = start_gateway_on(kafka, false, &[]).await;
    let topic = gateway.topic("txn-visible").await;
    let mut client = gateway.client().await;
    let id = rand_topic("txn-visible");
    let (first, second, third) = (records("v", 40), records("w", 40), records("x", 20));

    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, first.clone(), false))
        .await;
    stream
        .send(txn_batch("", 1, &topic, second.clone(), false))
        .await;
    written_but_open(&bootstrap, &topic, "v", 40).await;
    written_but_open(&bootstrap, &topic, "w", 40).await;
    stream.nothing_for(Duration::from_millis(500)).await;

    // The commit: the acks of all three batches come only now.
    stream
        .send(txn_batch("", 2, &topic, third.clone(), true))
        .await;
    let mut acks = Vec::new();
    for batch_id in 0..3 {
        let response = stream
            .next()
            .await
            .unwrap()
            .expect("answered after the commit");
        assert_eq!(response.batch_id, batch_id, "answers in order");
        acks.extend(response.results.iter().map(|r| ok(r).clone()));
    }
    let sent: Vec<Record> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(acks.len(), sent.len());

    let visible = read(&bootstrap, &topic, Isolation::Committed, sent.len()).await;
    assert_eq!(visible.len(), sent.len(), "every record visible, once");
    for (record, ack) in sent.iter().zip(&acks) {
        assert_stored(at(&visible, ack), record);
    }
    // Stream order within each partition: acked offsets grow.
    let mut last = std::collections::HashMap::new();
    for ack in &acks {
        let previous = last.insert(ack.partition, ack.offset);
        assert!(
            previous.is_none_or(|p| p < ack.offset),
            "partition {}: offset {} after {previous:?}",
            ack.partition,
            ack.offset
        );
    }
    eprintln!(
        "{} records sent in one transaction: {} visible to read_committed after the commit, 0 before",
        sent.len(),
        visible.len()
    );
    stream.half_close();
    assert!(stream.next().await.unwrap().is_none());
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_client_that_goes_away_mid_transaction_leaves_nothing_visible() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let gateway = start_gateway_on(kafka, false, &[]).await;
    let topic = gateway.topic("txn-gone").await;
    let id = rand_topic("txn-gone");
    // The client reaches the gateway through a proxy that can cut its
    // connection, as a client that crashes or loses its network.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = FaultProxy::start(listener, gateway.addr);
    let mut client = ProducerClient::connect(format!("http://{}", proxy.addr))
        .await
        .unwrap();

    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("c", 30), false))
        .await;
    written_but_open(&bootstrap, &topic, "c", 30).await;
    stream.nothing_for(Duration::from_millis(200)).await;
    proxy.set(Mode::Refuse);
    proxy.reset_all();
    assert!(
        stream.next().await.is_err(),
        "the client sees its stream break"
    );

    // The same id again, on a new connection: only its commit shows.
    let mut client = gateway.client().await;
    commit_once(&mut client, &id, &topic, records("after", 6)).await;
    only_the_commit_is_visible(&bootstrap, &topic, "c", 30, "after", 6).await;
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_failing_record_aborts_the_transaction_and_leaves_nothing_visible() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let gateway = start_gateway_on(kafka, false, &[]).await;
    let topic = gateway.topic("txn-fail").await;
    let mut client = gateway.client().await;
    let id = rand_topic("txn-fail");

    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("f", 20), false))
        .await;
    written_but_open(&bootstrap, &topic, "f", 20).await;
    // A record for a partition the topic does not have: it fails, and the
    // whole transaction with it.
    let mut second = records("g", 3);
    second[1].partition = Some(PARTITIONS + 10);
    stream.send(txn_batch("", 1, &topic, second, true)).await;
    let mut codes = Vec::new();
    for batch_id in 0..2 {
        let response = stream.next().await.unwrap().expect("answered");
        assert_eq!(response.batch_id, batch_id);
        codes.extend(response.results.iter().map(|r| err(r).code));
    }
    assert_eq!(codes.len(), 23);
    assert_eq!(
        codes[21],
        ErrorCode::UnknownPartition as i32,
        "the record keeps its own error"
    );
    assert!(
        codes
            .iter()
            .enumerate()
            .all(|(i, &code)| i == 21 || code == ErrorCode::Aborted as i32),
        "every other record is ABORTED: {codes:?}"
    );
    drop(stream);

    commit_once(&mut client, &id, &topic, records("after", 6)).await;
    only_the_commit_is_visible(&bootstrap, &topic, "f", 20, "after", 6).await;
    let all = read(&bootstrap, &topic, Isolation::Committed, 6).await;
    assert!(
        tagged(&all, "g").is_empty(),
        "the failing batch is not visible"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_connection_closed_by_the_gateway_mid_transaction_leaves_nothing_visible() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    // The gateway retires connections after 4 s (then 1 s of grace).
    let gateway = start_gateway_on(
        kafka,
        false,
        &[
            "--max-connection-age",
            "4s",
            "--max-connection-age-grace",
            "1s",
        ],
    )
    .await;
    let topic = gateway.topic("txn-age").await;
    let mut client = gateway.client().await;
    let id = rand_topic("txn-age");

    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("a", 25), false))
        .await;
    written_but_open(&bootstrap, &topic, "a", 25).await;
    // No commit comes: the connection's age ends the stream.
    let mut aborted = 0;
    let status = loop {
        match stream.next().await {
            Ok(Some(response)) => {
                for result in &response.results {
                    assert_eq!(err(result).code, ErrorCode::Aborted as i32);
                    aborted += 1;
                }
            }
            Ok(None) => panic!("the stream ended OK with its transaction open"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        aborted, 25,
        "every record of the open transaction is answered ABORTED"
    );

    let mut client = gateway.client().await;
    commit_once(&mut client, &id, &topic, records("after", 6)).await;
    only_the_commit_is_visible(&bootstrap, &topic, "a", 25, "after", 6).await;
    gateway.stop().await.unwrap();
}

/// A gateway process producing to the shared broker.
fn gateway_process(extra: &[&str]) -> Served {
    let servers = env(common::kafka::KAFKA);
    let mut args = vec!["--bootstrap-servers", servers.as_str()];
    args.extend_from_slice(extra);
    serve(&args, &[])
}

async fn client_of(served: &Served) -> ProducerClient<Channel> {
    ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .expect("the gateway accepts connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_gateway_killed_mid_transaction_leaves_nothing_visible_before_or_after_the_timeout() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let topic = kafka.topic("txn-kill").await;
    let id = rand_topic("txn-kill");
    // The broker aborts the orphaned transaction 6 s after it started.
    let mut served = gateway_process(&["-X", "transaction.timeout.ms=6000"]);
    let mut client = client_of(&served).await;
    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("k", 40), false))
        .await;
    written_but_open(&bootstrap, &topic, "k", 40).await;
    served.child.kill().expect("SIGKILL");
    wait_exit(&mut served.child);
    assert!(
        stream.next().await.is_err(),
        "the client sees its stream break"
    );

    // Before the broker's transaction timeout: nothing visible.
    let visible = read(&bootstrap, &topic, Isolation::Committed, 0).await;
    assert!(tagged(&visible, "k").is_empty(), "{:?}", values(&visible));
    // After it, with no gateway to resume the id: the broker aborted it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let visible = read(&bootstrap, &topic, Isolation::Committed, 0).await;
    assert!(tagged(&visible, "k").is_empty(), "{:?}", values(&visible));

    // A new gateway with the same id writes and commits; only that shows.
    let served = gateway_process(&[]);
    let mut client = client_of(&served).await;
    commit_once(&mut client, &id, &topic, records("after", 6)).await;
    only_the_commit_is_visible(&bootstrap, &topic, "k", 40, "after", 6).await;
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_second_gateway_with_the_same_id_fences_the_first() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let topic = kafka.topic("txn-fence").await;
    let id = rand_topic("txn-fence");
    let (older, newer) = (gateway_process(&[]), gateway_process(&[]));

    let mut older_client = client_of(&older).await;
    let mut old = open(&mut older_client).await;
    old.send(txn_batch(&id, 0, &topic, records("old", 30), false))
        .await;
    written_but_open(&bootstrap, &topic, "old", 30).await;

    // The newer gateway's stream with the same id commits.
    let mut newer_client = client_of(&newer).await;
    let acks = commit_once(&mut newer_client, &id, &topic, records("new", 10)).await;
    assert_eq!(acks.len(), 10);

    // The older learns it is fenced when it next talks to Kafka: it tries
    // to commit, and its records are answered ABORTED, its stream ends.
    old.send(txn_batch("", 1, &topic, records("old-late", 2), true))
        .await;
    let mut aborted = 0;
    let status = loop {
        match old.next().await {
            Ok(Some(response)) => {
                for result in &response.results {
                    let error = err(result);
                    assert_eq!(error.code, ErrorCode::Aborted as i32, "{error:?}");
                    aborted += 1;
                }
            }
            Ok(None) => panic!("the fenced stream ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("fenced") || status.message().contains("FENCED"),
        "the status says the stream was fenced: {status:?}"
    );
    assert_eq!(
        aborted, 32,
        "every record of the fenced transaction is answered"
    );

    only_the_commit_is_visible(&bootstrap, &topic, "old", 30, "new", 10).await;
    let visible = read(&bootstrap, &topic, Isolation::Committed, 10).await;
    assert!(tagged(&visible, "old-late").is_empty());
    drop((older, newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn a_transactional_id_denied_by_an_acl_ends_the_stream_with_a_clear_error() {
    let kafka = kafka();
    let topic = format!("{ALLOWED}{}", rand_topic("txn-acl"));
    kafka.create_topic(&topic, 3).await;
    let sasl = env(KAFKA_SASL_SSL);
    let ca = env(KAFKA_CA);
    let username = format!("sasl.username={}", GATEWAY_USER.0);
    let password = format!("sasl.password={}", GATEWAY_USER.1);
    let ca_location = format!("ssl.ca.location={ca}");
    let gateway = start_gateway_on(
        common::TestKafka::External(sasl),
        false,
        &[
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            "sasl.mechanisms=SCRAM-SHA-512",
            "-X",
            &username,
            "-X",
            &password,
            "-X",
            &ca_location,
        ],
    )
    .await;
    let mut client = gateway.client().await;

    // An id the ACLs grant works.
    let allowed_id = format!("{ALLOWED}{}", rand_topic("txn"));
    assert_eq!(
        commit_once(&mut client, &allowed_id, &topic, records("ok", 3))
            .await
            .len(),
        3
    );

    // One they do not: the stream ends with a status naming the cause.
    let denied_id = rand_topic("denied-txn");
    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&denied_id, 0, &topic, records("no", 3), true))
        .await;
    let status = loop {
        match stream.next().await {
            Ok(Some(response)) => {
                for result in &response.results {
                    assert_ne!(
                        result.result.as_ref().map(|r| matches!(
                            r,
                            kafka_gateway::proto::record_result::Result::Ok(_)
                        )),
                        Some(true),
                        "a record of a denied transactional id was acked"
                    );
                }
            }
            Ok(None) => panic!("the stream ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED")
            || status.message().contains("ransactional"),
        "the status names the denied transactional id: {status:?}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka: bash scripts/kafka.sh start; .ci/run runs it with --ignored"]
async fn sigterm_mid_transaction_answers_aborted_exits_in_time_and_leaves_nothing_visible() {
    let kafka = kafka();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    let topic = kafka.topic("txn-sigterm").await;
    let id = rand_topic("txn-sigterm");
    let mut served = gateway_process(&["--shutdown-timeout", "10s"]);
    let mut client = client_of(&served).await;
    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("t", 30), false))
        .await;
    written_but_open(&bootstrap, &topic, "t", 30).await;

    let stopped = std::time::Instant::now();
    common::binary::sigterm(&served.child);
    let mut aborted = 0;
    let status = loop {
        match stream.next().await {
            Ok(Some(response)) => {
                for result in &response.results {
                    let error = err(result);
                    assert_eq!(error.code, ErrorCode::Aborted as i32, "{error:?}");
                    assert!(error.retriable, "{error:?}");
                    aborted += 1;
                }
            }
            Ok(None) => panic!("the stream ended OK with its transaction open"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        aborted, 30,
        "every record of the open transaction is answered"
    );
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        wait_exit(&mut served.child).success(),
        "exit 0 after the drain"
    );
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "within --shutdown-timeout: {took:?}"
    );
    eprintln!("SIGTERM mid-transaction: 30 records answered ABORTED, exit after {took:?}");

    let served = gateway_process(&[]);
    let mut client = client_of(&served).await;
    commit_once(&mut client, &id, &topic, records("after", 6)).await;
    only_the_commit_is_visible(&bootstrap, &topic, "t", 30, "after", 6).await;
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Java and Kafka's jars (scripts/kafka.sh); .ci/run runs it with --ignored"]
async fn a_commit_under_a_blackhole_has_an_unknown_outcome_and_the_id_goes_on() {
    // A broker of the test's own, behind a proxy that can swallow
    // everything: the commit is sent and never answered.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertised = listener.local_addr().unwrap().port();
    let broker =
        tokio::task::spawn_blocking(move || common::kafka::OwnBroker::start(Some(advertised)))
            .await
            .unwrap();
    let proxy = FaultProxy::start(listener, broker.direct().parse().unwrap());
    let kafka = common::TestKafka::External(proxy.addr.to_string());
    let topic = kafka.topic("txn-blackhole").await;
    let id = rand_topic("txn-blackhole");
    // Each commit call may take 2 s (resumed up to three times); the broker
    // aborts a transaction nobody ends within 10 s.
    let gateway = start_gateway_on(
        kafka,
        false,
        &[
            "--transaction-timeout",
            "2s",
            "-X",
            "transaction.timeout.ms=10000",
            "-X",
            "socket.timeout.ms=3000",
        ],
    )
    .await;
    let mut client = gateway.client().await;
    let mut stream = open(&mut client).await;
    stream
        .send(txn_batch(&id, 0, &topic, records("b", 20), false))
        .await;
    written_but_open(&broker.direct(), &topic, "b", 20).await;

    proxy.set(Mode::Blackhole);
    let asked = std::time::Instant::now();
    stream.send(txn_batch("", 1, &topic, vec![], true)).await;
    let mut unknown = 0;
    let status = loop {
        match stream.next().await {
            Ok(Some(response)) => {
                for result in &response.results {
                    let error = err(result);
                    assert_eq!(error.code, ErrorCode::Unavailable as i32, "{error:?}");
                    assert!(error.may_be_stored && error.retriable, "{error:?}");
                    assert!(error.message.contains("unknown"), "{error:?}");
                    unknown += 1;
                }
            }
            Ok(None) => panic!("the stream ended OK with its commit's outcome unknown"),
            Err(status) => break status,
        }
    };
    let took = asked.elapsed();
    assert_eq!(unknown, 20, "every record is told its outcome is unknown");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    eprintln!("a commit under a blackhole: outcome unknown after {took:?}");
    proxy.set(Mode::Pass);
    proxy.reset_all();

    // Whatever Kafka decided, it is all or nothing; here the commit never
    // reached the broker, which aborts the transaction at its timeout.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let visible = read(&broker.direct(), &topic, Isolation::Committed, 0).await;
    let seen = tagged(&visible, "b").len();
    assert!(
        seen == 0 || seen == 20,
        "a partial transaction is visible: {seen} of 20"
    );
    // The id is not stuck: a new stream with it commits.
    let mut client = gateway.client().await;
    let acks = commit_once(&mut client, &id, &topic, records("after", 6)).await;
    assert_eq!(acks.len(), 6);
    let visible = read(&broker.direct(), &topic, Isolation::Committed, 6).await;
    assert_eq!(tagged(&visible, "after").len(), 6);
    eprintln!("after the blackhole: {seen} of the 20 records visible, and the id's next commit is");
    gateway.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
