//! Transactional streams against the embedded broker, whose mock implements
//! Kafka's transaction protocol (InitProducerId, AddPartitionsToTxn,
//! EndTxn). tansu 0.6 does not (EndTxn is refused), so these tests start an
//! embedded broker of their own in every suite.
//!
//! What the mock does not do is hide aborted or open transactions from a
//! `read_committed` consumer (it serves every record): so what a client sees
//! is checked here (no ack before the commit, ABORTED after an abort, each
//! record stored where its ack says), and what a consumer would see is
//! Kafka's part.

mod common;

use std::time::Duration;

use common::binary::serve;
use common::*;
use kafka_gateway::proto::producer_client::ProducerClient;
use kafka_gateway::proto::{ErrorCode, ProduceRequest, ProduceResponse, Record};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_stream::StreamExt;

/// A batch of a transactional stream: the first names the id.
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

fn codes(response: &ProduceResponse) -> Vec<i32> {
    response
        .results
        .iter()
        .map(|r| match &r.result {
            Some(kafka_gateway::proto::record_result::Result::Ok(_)) => 0,
            Some(kafka_gateway::proto::record_result::Result::Error(e)) => e.code,
            None => -1,
        })
        .collect()
}

/// Nothing arrives on `responses` for `wait`.
async fn nothing_for(responses: &mut tonic::Streaming<ProduceResponse>, wait: Duration) {
    match tokio::time::timeout(wait, responses.message()).await {
        Err(_) => {}
        Ok(got) => panic!("expected nothing yet, got {got:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_come_only_after_the_commit_and_say_where_each_record_is() {
    let gateway = start_gateway_embedded(&[]).await;
    let (orders, audit) = (gateway.topic("orders").await, gateway.topic("audit").await);
    let mut client = gateway.client().await;
    // One transaction over two topics and several partitions, in two
    // batches; the second asks for the commit.
    let first: Vec<Record> = (0..6)
        .map(|n| record(format!("k{n}"), format!("order {n}")))
        .collect();
    let second = vec![
        Record {
            topic: audit.clone(),
            partition: Some(2),
            ..record("a", "audit entry")
        },
        record("k9", "order 9"),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(txn_batch("orders-tx", 0, &orders, first.clone(), false))
        .await
        .unwrap();
    nothing_for(&mut responses, Duration::from_millis(800)).await;
    tx.send(txn_batch("", 1, &orders, second.clone(), true))
        .await
        .unwrap();
    let mut acks = Vec::new();
    for batch_id in [0, 1] {
        let response = responses
            .message()
            .await
            .unwrap()
            .expect("answered after the commit");
        assert_eq!(response.batch_id, batch_id);
        acks.extend(response.results.iter().map(|r| ok(r).clone()));
    }
    drop(tx);
    assert!(
        responses.message().await.unwrap().is_none(),
        "the stream ends OK"
    );

    let records: Vec<Record> = first.into_iter().chain(second).collect();
    let stored_orders = consume(gateway.bootstrap_servers(), &orders, 7).await;
    let stored_audit = consume(gateway.bootstrap_servers(), &audit, 1).await;
    assert_eq!((stored_orders.len(), stored_audit.len()), (7, 1));
    for (record, ack) in records.iter().zip(&acks) {
        let stored = if ack.topic == audit {
            &stored_audit
        } else {
            &stored_orders
        };
        let consumed = at(stored, ack);
        assert_eq!(consumed.key.as_deref(), record.key.as_deref());
        assert_eq!(consumed.value.as_deref(), record.value.as_deref());
    }
    assert_eq!(acks[6].partition, 2);
    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "kafka_gateway_transactions_total{outcome=\"committed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_commits_several_commits_go_on_and_a_cancel_aborts() {
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    // Three commits on one stream, the last by half-closing.
    let requests = vec![
        txn_batch("t-1", 0, &topic, vec![record("a", "1")], true),
        txn_batch(
            "",
            1,
            &topic,
            vec![record("b", "2"), record("c", "3")],
            true,
        ),
        txn_batch("", 2, &topic, vec![record("d", "4")], false),
    ];
    let responses = produce_stream(&mut client, requests).await;
    assert_eq!(all_acks(&responses).len(), 4, "{responses:?}");

    // A stream whose connection breaks mid-transaction (through a proxy
    // that resets it: ending the request side instead would be a
    // half-close, which commits): aborted, so that the id's producer can
    // run the next stream's transaction.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = common::proxy::FaultProxy::start(listener, gateway.addr);
    let mut proxied = ProducerClient::connect(format!("http://{}", proxy.addr))
        .await
        .unwrap();
    let (mut open, feeder) = open_stream(
        &mut proxied,
        vec![txn_batch("t-1", 0, &topic, vec![record("e", "5")], false)],
    )
    .await;
    nothing_for(&mut open, Duration::from_millis(500)).await;
    proxy.reset_all();
    let aborted = eventually("the cancelled transaction is aborted", || async {
        let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
        sample(
            &metrics,
            "kafka_gateway_transactions_total{outcome=\"aborted\"}",
        )
        .filter(|&n| n >= 1.0)
    })
    .await;
    assert_eq!(aborted, 1.0);
    feeder.abort();
    let responses = produce_stream(
        &mut client,
        vec![txn_batch("t-1", 0, &topic, vec![record("f", "6")], true)],
    )
    .await;
    assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "kafka_gateway_transactions_total{outcome=\"committed\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stream_with_the_same_id_fences_the_older_one() {
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    // The older stream commits once (so it surely holds the id's
    // producer), then leaves a transaction open.
    let (mut older, _feeder) = open_stream(
        &mut client,
        vec![
            txn_batch("shared", 0, &topic, vec![record("z", "older 0")], true),
            txn_batch(
                "",
                1,
                &topic,
                vec![record("a", "older 1"), record("b", "older 2")],
                false,
            ),
        ],
    )
    .await;
    let committed = older.message().await.unwrap().expect("the first commit");
    assert_eq!(codes(&committed), [0]);
    nothing_for(&mut older, Duration::from_millis(500)).await;

    let newer = tokio::spawn({
        let mut client = client.clone();
        let topic = topic.clone();
        async move {
            produce_stream(
                &mut client,
                vec![txn_batch(
                    "shared",
                    0,
                    &topic,
                    vec![record("c", "newer")],
                    true,
                )],
            )
            .await
        }
    });
    let answered = older
        .message()
        .await
        .unwrap()
        .expect("the older batch is answered");
    assert_eq!(codes(&answered), [ErrorCode::Aborted as i32; 2]);
    let status = older.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert!(
        status
            .message()
            .contains("fenced by a newer stream with transactional id \"shared\""),
        "{status:?}"
    );
    let responses = newer.await.unwrap();
    assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transactional_stream_over_the_cap_is_refused_naming_the_flag() {
    let gateway = start_gateway_embedded(&["--max-transactional-streams", "1"]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    let (mut first, feeder) = open_stream(
        &mut client,
        vec![txn_batch("one", 0, &topic, vec![record("a", "1")], true)],
    )
    .await;
    assert_eq!(codes(&first.message().await.unwrap().unwrap()), [0]);
    let refused = produce_stream(
        &mut client,
        vec![txn_batch("two", 0, &topic, vec![record("b", "2")], true)],
    )
    .await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-transactional-streams"),
        "{status:?}"
    );
    // Once the first ends, its idle producer makes room.
    feeder.abort();
    drop(first);
    let responses = eventually("the second id gets a producer", || {
        let mut client = client.clone();
        let topic = topic.clone();
        async move {
            let responses = produce_stream(
                &mut client,
                vec![txn_batch("two", 0, &topic, vec![record("b", "2")], true)],
            )
            .await;
            responses[0].is_ok().then_some(responses)
        }
    })
    .await;
    assert_eq!(all_acks(&responses).len(), 1);
    // Producers are capped too: the idle one of "one" made room. (It is
    // destroyed off the runtime once its last holder lets go, which on a
    // busy machine can come just after the second stream's answer.)
    eventually("the idle producer of \"one\" closed", || async {
        let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
        (sample(&metrics, "kafka_gateway_transactional_producers") == Some(1.0)).then_some(())
    })
    .await;
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_errors_are_survived_or_end_in_a_retriable_abort() {
    use RDKafkaRespErr::*;
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    // The coordinator briefly unavailable, then busy: the producer retries
    // the commit, which goes through.
    gateway
        .embedded()
        .with(|cluster| {
            cluster.request_errors(
                RDKafkaApiKey::EndTxn,
                &[
                    RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                    RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
                ],
            )
        })
        .await;
    let responses = produce_stream(
        &mut client,
        vec![txn_batch(
            "coord",
            0,
            &topic,
            vec![record("a", "1"), record("b", "2")],
            true,
        )],
    )
    .await;
    assert_eq!(all_acks(&responses).len(), 2, "{responses:?}");

    // Adding a partition to the transaction refused for good: the
    // transaction cannot commit and is aborted, each record told so.
    gateway
        .embedded()
        .with(|cluster| {
            cluster.request_errors(
                RDKafkaApiKey::AddPartitionsToTxn,
                &[RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
            )
        })
        .await;
    let responses = produce_stream(
        &mut client,
        vec![
            txn_batch(
                "coord",
                0,
                &topic,
                vec![record("c", "3"), record("d", "4")],
                true,
            ),
            txn_batch("", 1, &topic, vec![record("e", "5")], true),
        ],
    )
    .await;
    let first = responses[0].as_ref().expect("answered");
    assert_eq!(codes(first), [ErrorCode::Aborted as i32; 2], "{first:?}");
    let error = err(&first.results[0]);
    assert!(
        error.retriable && error.message.contains("TOPIC_AUTHORIZATION_FAILED"),
        "the cause is named: {error:?}"
    );
    // The stream goes on: the next transaction commits.
    assert_eq!(
        codes(responses[1].as_ref().expect("answered")),
        [0],
        "{responses:?}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_transaction_is_replaced_and_the_id_goes_on() {
    let broker = TestKafka::Embedded(std::sync::Arc::new(
        kafka_gateway::EmbeddedBroker::start(1, PARTITIONS).unwrap(),
    ));
    let topic = broker.topic("txn").await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let mut first = serve(&["--bootstrap-servers", &bootstrap], &[]);
    let mut client = ProducerClient::connect(format!("http://{}", first.grpc))
        .await
        .unwrap();
    let (mut stream, _feeder) = open_stream(
        &mut client,
        vec![
            txn_batch("crash", 0, &topic, vec![record("a", "committed")], true),
            txn_batch("", 1, &topic, vec![record("b", "left open")], false),
        ],
    )
    .await;
    assert_eq!(codes(&stream.message().await.unwrap().unwrap()), [0]);
    nothing_for(&mut stream, Duration::from_millis(500)).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        stream.next().await.is_some_and(|r| r.is_err()),
        "the stream breaks"
    );

    // A new gateway, the same id: its producer's InitProducerId ends the
    // leftover transaction, then the id commits again.
    let mut second = serve(&["--bootstrap-servers", &bootstrap], &[]);
    let mut client = ProducerClient::connect(format!("http://{}", second.grpc))
        .await
        .unwrap();
    let responses = produce_stream(
        &mut client,
        vec![txn_batch(
            "crash",
            0,
            &topic,
            vec![record("c", "after restart")],
            true,
        )],
    )
    .await;
    assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_is_reused_by_the_next_stream_and_closed_once_idle() {
    let gateway = start_gateway_embedded(&["--transactional-idle-timeout", "1s"]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    let producers = || async {
        let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
        sample(&metrics, "kafka_gateway_transactional_producers")
    };
    for value in ["1", "2"] {
        // Back to back: the second stream gets the first one's producer.
        let responses = produce_stream(
            &mut client,
            vec![txn_batch(
                "reused",
                0,
                &topic,
                vec![record("k", value)],
                true,
            )],
        )
        .await;
        assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
        assert_eq!(producers().await, Some(1.0), "one producer for the id");
    }
    eventually("the idle producer is closed", || async {
        (producers().await == Some(0.0)).then_some(())
    })
    .await;
    // The id still works: a new producer.
    let responses = produce_stream(
        &mut client,
        vec![txn_batch("reused", 0, &topic, vec![record("k", "3")], true)],
    )
    .await;
    assert_eq!(all_acks(&responses).len(), 1, "{responses:?}");
    assert_eq!(producers().await, Some(1.0));
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fenced_by_kafka_ends_its_stream_and_the_id_gets_a_new_one() {
    // Kafka fences a producer when another one (on another gateway, or any
    // client) initialises the same transactional id. The embedded broker
    // does not (two gateways on it with one id both commit), so the fencing
    // is injected where Kafka reports it: first on the commit, then on
    // adding a partition to the transaction.
    use RDKafkaRespErr::*;
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    let producers = || async {
        let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
        sample(&metrics, "kafka_gateway_transactional_producers")
    };
    let mut acked = Vec::new();
    for (api, value) in [
        (RDKafkaApiKey::EndTxn, "on the commit"),
        (RDKafkaApiKey::AddPartitionsToTxn, "on adding a partition"),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stream = client
            .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // One transaction commits, so the stream surely holds a producer.
        let committed = format!("before fencing {value}");
        tx.send(txn_batch(
            "fenced",
            0,
            &topic,
            vec![record("a", &*committed)],
            true,
        ))
        .await
        .unwrap();
        acked.push((ack(&stream.message().await.unwrap().unwrap()), committed));

        gateway
            .embedded()
            .with(move |cluster| cluster.request_errors(api, &[RD_KAFKA_RESP_ERR_PRODUCER_FENCED]))
            .await;
        tx.send(txn_batch(
            "",
            1,
            &topic,
            vec![record("b", "fenced 1"), record("c", "fenced 2")],
            true,
        ))
        .await
        .unwrap();
        let answered = stream.message().await.unwrap().expect("answered");
        assert_eq!(
            codes(&answered),
            [ErrorCode::Aborted as i32; 2],
            "{answered:?}"
        );
        for result in &answered.results {
            let error = err(result);
            assert!(
                error.retriable && error.message.contains("fenced by a newer instance"),
                "each record names the fencing and may be resent: {error:?}"
            );
        }
        // The producer is finished: the stream ends, and the next batch
        // is never taken.
        let _ = tx
            .send(txn_batch("", 2, &topic, vec![record("d", "after")], true))
            .await;
        let status = stream
            .message()
            .await
            .expect_err("the fenced stream ends with a status");
        assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
        assert!(
            status.message().contains("fenced by a newer instance"),
            "the status names the fencing: {status:?}"
        );
        eventually("the fenced producer is closed", || async {
            (producers().await == Some(0.0)).then_some(())
        })
        .await;
    }

    // The id gets a new producer, which commits.
    let again = produce_stream(
        &mut client,
        vec![txn_batch(
            "fenced",
            0,
            &topic,
            vec![record("e", "again")],
            true,
        )],
    )
    .await;
    let again = all_acks(&again);
    assert_eq!(again.len(), 1, "{again:?}");
    acked.push((again[0].clone(), "again".to_owned()));

    // Every acked record is stored where its ack says.
    let stored = consume(gateway.bootstrap_servers(), &topic, acked.len()).await;
    for (ack, value) in &acked {
        let found = stored
            .iter()
            .find(|c| c.partition == ack.partition && c.offset == ack.offset)
            .unwrap_or_else(|| panic!("{ack:?} stored; consumed {stored:?}"));
        assert_eq!(found.value.as_deref(), Some(value.as_bytes()), "{found:?}");
    }
    gateway.stop().await.unwrap();
}

/// The ack of a single-record response.
fn ack(response: &ProduceResponse) -> kafka_gateway::proto::RecordMetadata {
    match &response.results[..] {
        [
            kafka_gateway::proto::RecordResult {
                result: Some(kafka_gateway::proto::record_result::Result::Ok(ack)),
            },
        ] => ack.clone(),
        other => panic!("one ack, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_filling_the_budget_all_commit() {
    // The budget holds three 1.2 MiB batches, not four. Four transactional
    // streams each send one, then ask for the commit in a request of its
    // own, which needs budget too: every commit must complete.
    let gateway = start_gateway_embedded(&[
        "--max-total-in-flight-bytes",
        "4MiB",
        "--max-batch-bytes",
        "2MiB",
    ])
    .await;
    let topic = gateway.topic("txn").await;
    let value = vec![7u8; 100 << 10];
    let mut streams = Vec::new();
    for n in 0..4 {
        let mut client = gateway.client().await;
        let records: Vec<Record> = (0..12)
            .map(|i| record(format!("k{n}-{i}"), value.clone()))
            .collect();
        let id = format!("budget-{n}");
        let (topic, id) = (topic.clone(), id.clone());
        streams.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut responses = client
                .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            tx.send(txn_batch(&id, 0, &topic, records, false))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(txn_batch("", 1, &topic, vec![], true))
                .await
                .unwrap();
            let mut acks = 0;
            for _ in 0..2 {
                let response = responses.message().await.unwrap().expect("answered");
                acks += codes(&response).iter().filter(|&&c| c == 0).count();
            }
            drop(tx);
            acks
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut acks = Vec::new();
        for stream in streams {
            acks.push(stream.await.unwrap());
        }
        acks
    })
    .await
    .expect("every commit completes: no open transaction waits for budget only a commit frees");
    assert_eq!(all, [12; 4]);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_producer_id_aborts_the_transaction_and_the_producer_goes_on() {
    // UNKNOWN_PRODUCER_ID on a transactional producer is abortable in
    // librdkafka (it bumps its epoch): the transaction is aborted, and the
    // same producer runs the next one.
    use RDKafkaRespErr::*;
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    let producers = || async {
        let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
        sample(&metrics, "kafka_gateway_transactional_producers")
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(txn_batch("lost", 0, &topic, vec![record("a", "1")], true))
        .await
        .unwrap();
    assert_eq!(codes(&stream.message().await.unwrap().unwrap()), [0]);
    gateway
        .embedded()
        .with(|cluster| {
            cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID],
            )
        })
        .await;
    tx.send(txn_batch("", 1, &topic, vec![record("b", "2")], true))
        .await
        .unwrap();
    let aborted = stream.message().await.unwrap().expect("answered");
    assert_eq!(codes(&aborted), [ErrorCode::Aborted as i32], "{aborted:?}");
    assert!(err(&aborted.results[0]).retriable, "{aborted:?}");
    tx.send(txn_batch("", 2, &topic, vec![record("c", "3")], true))
        .await
        .unwrap();
    let next = stream.message().await.unwrap().expect("the stream goes on");
    assert_eq!(codes(&next), [0], "{next:?}");
    drop(tx);
    assert!(
        stream.message().await.unwrap().is_none(),
        "the stream ends OK"
    );
    // The producer was not torn down: still alive once its stream ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(producers().await, Some(1.0));
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_transactions_is_refused_naming_the_fix() {
    // (An id Kafka does not grant is mapped to PERMISSION_DENIED the same
    // way; the mock does not refuse InitProducerId on its own, and an
    // injected refusal is met by the shared idempotent producer too: see
    // the registry's unit test.)
    let gateway = start_gateway_embedded(&["--transaction-timeout", "5s"]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    // A cluster without transactions.
    gateway
        .embedded()
        .with(|cluster| cluster.apiversion(RDKafkaApiKey::InitProducerId, None, None))
        .await
        .unwrap();
    let refused = produce_stream(
        &mut client,
        vec![txn_batch(
            "unsupported",
            0,
            &topic,
            vec![record("a", "1")],
            true,
        )],
    )
    .await;
    let status = refused[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("must offer transactions"),
        "{status:?}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_does_not_finish_in_time_has_an_unknown_outcome() {
    // The broker answers nothing for a minute once the records are in: the
    // commit times out three times (2 s each) and the client is told its
    // outcome is unknown, not that it aborted.
    let gateway = start_gateway_embedded(&["--transaction-timeout", "2s"]).await;
    let topic = gateway.topic("txn").await;
    let mut client = gateway.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(txn_batch("slow", 0, &topic, vec![record("a", "1")], true))
        .await
        .unwrap();
    assert_eq!(codes(&stream.message().await.unwrap().unwrap()), [0]);
    tx.send(txn_batch("", 1, &topic, vec![record("b", "2")], false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateway
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(-1, Duration::from_secs(60)))
        .await
        .unwrap();
    tx.send(txn_batch("", 2, &topic, vec![], true))
        .await
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("answered within the commit's bound")
        .unwrap()
        .expect("answered");
    assert_eq!(answered.batch_id, 1);
    let error = err(&answered.results[0]);
    assert_eq!(error.code, ErrorCode::Unavailable as i32, "{error:?}");
    assert!(
        error.may_be_stored && error.retriable && error.message.contains("read_committed"),
        "{error:?}"
    );
    let status = stream.message().await.unwrap();
    assert!(status.is_some(), "the empty commit batch is answered too");
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(tx);
    gateway
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(-1, Duration::ZERO))
        .await
        .unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stuck_commit_exits_within_the_shutdown_timeout() {
    // The commit is stuck behind a broker that answers nothing for a minute,
    // and a call may block for 50 s: SIGTERM must still end the gateway
    // within --shutdown-timeout, the records told their outcome is unknown.
    let broker = TestKafka::Embedded(std::sync::Arc::new(
        kafka_gateway::EmbeddedBroker::start(1, PARTITIONS).unwrap(),
    ));
    let topic = broker.topic("txn").await;
    let bootstrap = broker.bootstrap_servers().to_owned();
    let mut served = serve(
        &[
            "--bootstrap-servers",
            &bootstrap,
            "--shutdown-timeout",
            "4s",
            "--transaction-timeout",
            "50s",
        ],
        &[],
    );
    let mut client = ProducerClient::connect(format!("http://{}", served.grpc))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .produce(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(txn_batch("term", 0, &topic, vec![record("a", "1")], false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(-1, Duration::from_secs(60)))
        .await
        .unwrap();
    tx.send(txn_batch("", 1, &topic, vec![], true))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    common::binary::sigterm(&served.child);
    let answered = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("answered before the shutdown timeout")
        .unwrap()
        .expect("answered");
    let error = err(&answered.results[0]);
    assert_eq!(error.code, ErrorCode::Unavailable as i32, "{error:?}");
    assert!(error.may_be_stored, "{error:?}");
    let status = common::binary::wait_exit(&mut served.child);
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(8),
        "exited {took:?} after SIGTERM, past --shutdown-timeout 4s"
    );
    broker
        .embedded()
        .with(|cluster| cluster.broker_round_trip_time(-1, Duration::ZERO))
        .await
        .unwrap();
}
