//! Transactional streams: acks after the commit, aborts, and misuse.

use super::*;

fn txn_batch(batch_id: u64, values: &[&str], commit: bool) -> ProduceRequest {
    ProduceRequest {
        batch_id,
        topic: "t".into(),
        records: values
            .iter()
            .map(|v| Record {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                ..Record::default()
            })
            .collect(),
        transactional_id: if batch_id == 0 {
            "tx".into()
        } else {
            String::new()
        },
        commit,
        ..ProduceRequest::default()
    }
}

fn codes(response: &ProduceResponse) -> Vec<i32> {
    response
        .results
        .iter()
        .map(|r| match &r.result {
            Some(record_result::Result::Ok(_)) => 0,
            Some(record_result::Result::Error(e)) => e.code,
            None => -1,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn acks_of_a_transaction_wait_for_its_commit() {
    let kafka = FakeKafka::transactional();
    let (in_tx, in_rx) = mpsc::channel(8);
    let (driver, mut rx) = spawn_driver(
        &kafka,
        limits(100, 100_000),
        ReceiverStream::new(in_rx),
        Stop::never(),
    );
    let mut rng = Rng(3);
    in_tx
        .send(Ok(txn_batch(0, &["a", "b"], false)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    while kafka.deliver_one(&mut rng) {}
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        try_recv(&mut rx).is_none(),
        "delivered, not committed: no ack yet"
    );

    in_tx.send(Ok(txn_batch(1, &["c"], true))).await.unwrap();
    in_tx.send(Ok(txn_batch(2, &["d"], false))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        kafka.events(),
        ["begin", "a", "b", "c"],
        "the next transaction's records wait for the commit"
    );
    while kafka.deliver_one(&mut rng) {}
    tokio::time::sleep(Duration::from_millis(10)).await;
    for batch_id in [0, 1] {
        let response = try_recv(&mut rx).expect("committed: answered").unwrap();
        assert_eq!(response.batch_id, batch_id);
        assert!(codes(&response).iter().all(|&c| c == 0));
    }
    assert!(
        try_recv(&mut rx).is_none(),
        "batch 2 is in the next transaction"
    );
    // Half-close commits what is open.
    drop(in_tx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    while kafka.deliver_one(&mut rng) {}
    let summary = driver.await.unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap().batch_id, 2);
    assert!(rx.recv().await.is_none(), "the stream ends OK");
    assert_eq!(
        kafka.events(),
        ["begin", "a", "b", "c", "commit", "begin", "d", "commit"]
    );
    assert_eq!(summary.records_ok, 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_record_aborts_its_whole_transaction_and_the_next_one_commits() {
    let mut first = txn_batch(0, &["a", "b", "c"], true);
    first.records[1].topic = "bad topic!".into();
    let requests = vec![first, txn_batch(1, &["d"], true)];
    let kafka = FakeKafka::transactional();
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 9).await;
    let aborted = out[0].as_ref().unwrap();
    assert_eq!(
        codes(aborted),
        [
            ErrorCode::Aborted as i32,
            ErrorCode::InvalidRecord as i32,
            ErrorCode::Aborted as i32
        ]
    );
    let error = match &aborted.results[0].result {
        Some(record_result::Result::Error(e)) => e,
        _ => unreachable!(),
    };
    assert!(
        error.message.contains("record 1 of batch 0 failed") && !error.retriable,
        "{error:?}"
    );
    assert_eq!(codes(out[1].as_ref().unwrap()), [0]);
    assert_eq!(
        kafka.events(),
        ["begin", "a", "c", "abort", "begin", "d", "commit"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_aborts_with_a_retriable_error() {
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commit_errors
        .push_back(TxnError {
            message: "Broker: Coordinator not available (COORDINATOR_NOT_AVAILABLE)".into(),
            retriable: true,
            fatal: false,
        });
    let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    let first = out[0].as_ref().unwrap();
    assert_eq!(codes(first), [ErrorCode::Aborted as i32; 2]);
    match &first.results[0].result {
        Some(record_result::Result::Error(e)) => assert!(
            e.retriable
                && e.message.contains("the commit failed")
                && e.message.contains("COORDINATOR_NOT_AVAILABLE"),
            "{e:?}"
        ),
        _ => unreachable!(),
    }
    assert_eq!(codes(out[1].as_ref().unwrap()), [0], "the stream goes on");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_mid_transaction_has_it_aborted() {
    let kafka = FakeKafka::transactional();
    let (in_tx, in_rx) = mpsc::channel(8);
    let (driver, rx) = spawn_driver(
        &kafka,
        limits(100, 100_000),
        ReceiverStream::new(in_rx),
        Stop::never(),
    );
    in_tx
        .send(Ok(txn_batch(0, &["a", "b"], false)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(rx);
    drop(in_tx);
    let summary = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ends")
        .unwrap();
    assert!(summary.client_gone);
    assert_eq!(kafka.events(), ["begin", "a", "b", "abort"]);
    assert_eq!(
        kafka.alive.load(Ordering::SeqCst),
        0,
        "every record reported"
    );
}

#[tokio::test(start_paused = true)]
async fn a_transaction_that_fills_the_window_without_a_commit_is_aborted() {
    let requests = (0..10).map(|n| txn_batch(n, &["x"], false)).collect();
    let kafka = FakeKafka::transactional();
    let (out, _) = run_stream(&kafka, limits(4, 100_000), requests, 2).await;
    assert_eq!(out.len(), 5, "4 answered, then the status: {out:?}");
    for response in &out[..4] {
        assert_eq!(
            codes(response.as_ref().unwrap()),
            [ErrorCode::Aborted as i32]
        );
    }
    let status = out[4].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("commit more often"), "{status:?}");
    assert_eq!(kafka.events().last().map(String::as_str), Some("abort"));
}

#[tokio::test(start_paused = true)]
async fn transaction_fields_on_the_wrong_stream_end_it() {
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(
        &kafka,
        limits(100, 100_000),
        vec![txn_batch(0, &["a"], true)],
        1,
    )
    .await;
    let status = out[0].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("not transactional"), "{status:?}");

    let kafka = FakeKafka::transactional();
    let mut other = txn_batch(1, &["b"], true);
    other.transactional_id = "other".into();
    let (out, _) = run_stream(
        &kafka,
        limits(100, 100_000),
        vec![txn_batch(0, &["a"], true), other],
        1,
    )
    .await;
    assert_eq!(codes(out[0].as_ref().unwrap()), [0]);
    let status = out[1].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("\"other\""), "{status:?}");
}
