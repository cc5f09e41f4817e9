//! Transactional streams: acks after the commit, aborts, and misuse.

use super::*;
use crate::produce::stream::txn::CALL_ATTEMPTS;

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
        error
            .message
            .contains("records[1] of the request with batch_id 0 failed")
            && !error.retriable,
        "{error:?}"
    );
    assert_eq!(codes(out[1].as_ref().unwrap()), [0]);
    assert_eq!(
        kafka.events(),
        ["begin", "a", "c", "abort", "begin", "d", "commit"]
    );
}

/// The error of a record's result.
fn error(result: &RecordResult) -> &proto::RecordError {
    match &result.result {
        Some(record_result::Result::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Delivers every record the fake holds, now and as more come, for `for_`.
async fn deliver_for(kafka: &FakeKafka, for_: Duration) {
    let mut rng = Rng(17);
    let until = tokio::time::Instant::now() + for_;
    while tokio::time::Instant::now() < until {
        while kafka.deliver_one(&mut rng) {}
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_times_out_is_resumed_and_commits() {
    // librdkafka: a commit that timed out goes on in the background, and
    // calling it again resumes it. Its outcome is unknown until then: it is
    // not an abort (which the client would resend, storing it twice).
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commits
        .extend([Outcome::TimeOut, Outcome::TimeOut]);
    let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    assert_eq!(codes(out[0].as_ref().unwrap()), [0, 0], "{out:?}");
    assert_eq!(codes(out[1].as_ref().unwrap()), [0], "the stream goes on");
    assert_eq!(
        kafka.events(),
        [
            "begin", "a", "b", "commit", "commit", "commit", "begin", "c", "commit"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_never_finishes_has_an_unknown_outcome_and_a_new_producer() {
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commits
        .extend([Outcome::TimeOut; CALL_ATTEMPTS as usize]);
    let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
    let started = tokio::time::Instant::now();
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    let waited = started.elapsed();
    assert_eq!(
        waited.as_secs(),
        60 * u64::from(CALL_ATTEMPTS),
        "each attempt waits its timeout"
    );
    let first = out[0].as_ref().unwrap();
    assert_eq!(codes(first), [ErrorCode::Unavailable as i32; 2], "{out:?}");
    for result in &first.results {
        let e = error(result);
        assert!(e.may_be_stored && e.retriable, "{e:?}");
        assert!(
            e.message.contains("outcome is unknown") && e.message.contains("read_committed"),
            "the message says what is unknown and how to check: {e:?}"
        );
    }
    // Batch 1 was read meanwhile: never sent, it is aborted.
    let second = out[1].as_ref().unwrap();
    assert_eq!(codes(second), [ErrorCode::Aborted as i32]);
    assert!(!error(&second.results[0]).may_be_stored);
    let status = out[2].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("outcome of a commit is unknown"),
        "{status:?}"
    );
    assert_eq!(out.len(), 3, "{out:?}");
    let events = kafka.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("retire"),
        "{events:?}"
    );
    assert!(!events.contains(&"c".to_owned()), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn an_abortable_commit_is_aborted_and_the_producer_goes_on() {
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commits
        .push_back(Outcome::Abortable);
    let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    let first = out[0].as_ref().unwrap();
    assert_eq!(codes(first), [ErrorCode::Aborted as i32; 2]);
    let e = error(&first.results[0]);
    assert!(
        e.retriable && !e.may_be_stored && e.message.contains("UNKNOWN_PRODUCER_ID"),
        "{e:?}"
    );
    assert_eq!(codes(out[1].as_ref().unwrap()), [0], "the stream goes on");
    assert_eq!(
        kafka.events(),
        ["begin", "a", "b", "commit", "abort", "begin", "c", "commit"],
        "aborted, not retired"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fatal_commit_retires_the_producer_and_ends_the_stream() {
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commits
        .push_back(Outcome::Fatal);
    let requests = vec![txn_batch(0, &["a"], true), txn_batch(1, &["b"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    assert_eq!(codes(out[0].as_ref().unwrap()), [ErrorCode::Aborted as i32]);
    assert!(error(&out[0].as_ref().unwrap().results[0]).retriable);
    assert_eq!(codes(out[1].as_ref().unwrap()), [ErrorCode::Aborted as i32]);
    let status = out[2].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(status.message().contains("_FENCED"), "{status:?}");
    assert_eq!(kafka.events(), ["begin", "a", "commit", "retire"]);
}

#[tokio::test(start_paused = true)]
async fn an_abort_that_times_out_is_resumed_and_one_that_fails_retires_the_producer() {
    // A failed record makes the transaction abort; the abort times out
    // once, and is resumed.
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .aborts
        .push_back(Outcome::TimeOut);
    let mut first = txn_batch(0, &["a", "b"], true);
    first.records[1].topic = "bad topic!".into();
    let requests = vec![first, txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    assert_eq!(
        codes(out[0].as_ref().unwrap()),
        [ErrorCode::Aborted as i32, ErrorCode::InvalidRecord as i32]
    );
    assert_eq!(codes(out[1].as_ref().unwrap()), [0]);
    assert_eq!(
        kafka.events(),
        ["begin", "a", "abort", "abort", "begin", "c", "commit"]
    );

    // An abort that fails for good: the records are still ABORTED (never
    // committed), and the producer is retired.
    let kafka = FakeKafka::transactional();
    kafka.state.lock().unwrap().aborts.push_back(Outcome::Fatal);
    let mut first = txn_batch(0, &["a", "b"], true);
    first.records[1].topic = "bad topic!".into();
    let requests = vec![first, txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    assert_eq!(
        codes(out[0].as_ref().unwrap())[0],
        ErrorCode::Aborted as i32
    );
    assert_eq!(codes(out[1].as_ref().unwrap()), [ErrorCode::Aborted as i32]);
    assert_eq!(out[2].as_ref().unwrap_err().code(), tonic::Code::Aborted);
    assert_eq!(kafka.events(), ["begin", "a", "abort", "retire"]);
}

#[tokio::test(start_paused = true)]
async fn a_begin_that_fails_aborts_what_waits_and_ends_the_stream() {
    let kafka = FakeKafka::transactional();
    kafka.state.lock().unwrap().begins.push_back(Outcome::Fatal);
    let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
    let first = out[0].as_ref().unwrap();
    assert_eq!(codes(first), [ErrorCode::Aborted as i32; 2], "{out:?}");
    assert!(error(&first.results[0]).message.contains("cannot begin"));
    assert!(out.last().unwrap().is_err(), "{out:?}");
    assert_eq!(kafka.events(), ["begin", "retire"], "nothing is sent");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_before_its_commit_never_commits_part_of_it() {
    // The batch asks for a commit, but only 4 of its 10 records fit in the
    // window when the client goes away (its request side still open, so no
    // half-close): the 6 others are never sent, so the commit must not run.
    let kafka = FakeKafka::transactional();
    let (in_tx, in_rx) = mpsc::channel(8);
    let (driver, rx) = spawn_driver(
        &kafka,
        limits(4, 100_000),
        ReceiverStream::new(in_rx),
        Stop::never(),
    );
    let values: Vec<String> = (0..10).map(|n| format!("v{n}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    in_tx.send(Ok(txn_batch(0, &values, true))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(rx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    deliver_for(&kafka, Duration::from_millis(50)).await;
    let summary = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ends")
        .unwrap();
    assert!(summary.client_gone);
    assert_eq!(
        kafka.events(),
        ["begin", "v0", "v1", "v2", "v3", "abort"],
        "aborted, never committed"
    );
    assert_eq!(
        kafka.alive.load(Ordering::SeqCst),
        0,
        "every record reported"
    );
    drop(in_tx);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_mid_transaction_has_it_aborted_whatever_it_did_first() {
    // Gone while the request side stays open, and gone after a half-close
    // (which asks for a commit) racing with the cancel: the driver must
    // never commit records it then has nobody to answer for, whichever it
    // sees first.
    for half_close_first in [false, true] {
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
        if half_close_first {
            drop(in_tx);
            drop(rx);
        } else {
            drop(rx);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(in_tx);
        }
        deliver_for(&kafka, Duration::from_millis(50)).await;
        let summary = tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the driver ends")
            .unwrap();
        assert!(summary.client_gone);
        assert_eq!(
            kafka.events(),
            ["begin", "a", "b", "abort"],
            "{half_close_first}"
        );
        assert_eq!(
            kafka.alive.load(Ordering::SeqCst),
            0,
            "every record reported"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_fenced_stream_aborts_the_commits_it_had_not_started() {
    // The client asked for two commits; the first is under way when a newer
    // stream claims the id: it completes (it cannot be called back), the
    // second is aborted, not begun.
    let kafka = FakeKafka::transactional();
    kafka
        .state
        .lock()
        .unwrap()
        .commits
        .push_back(Outcome::TimeOut);
    let (fence, fenced) = crate::produce::transactions::Fence::manual("tx");
    let (in_tx, in_rx) = mpsc::channel(8);
    let (driver, mut rx) = spawn_driver(
        &kafka,
        limits(100, 100_000),
        ReceiverStream::new(in_rx),
        Stop::never().with_fence(fenced),
    );
    in_tx.send(Ok(txn_batch(0, &["a"], true))).await.unwrap();
    in_tx.send(Ok(txn_batch(1, &["b"], true))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    deliver_for(&kafka, Duration::from_millis(10)).await;
    assert_eq!(kafka.events(), ["begin", "a", "commit"]);
    fence.send_modify(|generation| *generation += 1);
    deliver_for(&kafka, Duration::from_secs(120)).await;
    assert_eq!(codes(&rx.recv().await.unwrap().unwrap()), [0]);
    assert_eq!(
        codes(&rx.recv().await.unwrap().unwrap()),
        [ErrorCode::Aborted as i32]
    );
    let status = rx.recv().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    driver.await.unwrap();
    assert_eq!(kafka.events(), ["begin", "a", "commit", "commit"]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_stuck_commit_past_its_bound() {
    // The commit hangs (a broker gone silent, a call timeout longer than
    // the shutdown's): once the gateway shuts down, the stream waits for it
    // only until its bound, then answers "outcome unknown" and ends.
    let kafka = FakeKafka::transactional();
    kafka.state.lock().unwrap().commits.push_back(Outcome::Hang);
    let (trigger, signal) = shutdown::channel();
    let (in_tx, in_rx) = mpsc::channel(8);
    let limits = limits(100, 100_000);
    let bound = limits.transactions.at_shutdown;
    let (driver, mut rx) = spawn_driver(
        &kafka,
        limits,
        ReceiverStream::new(in_rx),
        Stop::new(signal, None),
    );
    in_tx
        .send(Ok(txn_batch(0, &["a", "b"], true)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    deliver_for(&kafka, Duration::from_secs(5)).await;
    assert_eq!(kafka.events(), ["begin", "a", "b", "commit"]);
    let stopped = tokio::time::Instant::now();
    trigger.trigger();
    let response = rx.recv().await.unwrap().unwrap();
    assert_eq!(stopped.elapsed(), bound, "answered at the bound, not later");
    assert_eq!(codes(&response), [ErrorCode::Unavailable as i32; 2]);
    assert!(error(&response.results[0]).may_be_stored);
    assert_eq!(
        rx.recv().await.unwrap().unwrap_err().code(),
        tonic::Code::Unavailable
    );
    driver.await.unwrap();
    assert_eq!(kafka.events().last().map(String::as_str), Some("retire"));
    drop(in_tx);
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_an_open_transaction_and_bounds_the_abort() {
    let kafka = FakeKafka::transactional();
    kafka.state.lock().unwrap().aborts.push_back(Outcome::Hang);
    let (trigger, signal) = shutdown::channel();
    let (in_tx, in_rx) = mpsc::channel(8);
    let limits = limits(100, 100_000);
    let bound = limits.transactions.at_shutdown;
    let (driver, mut rx) = spawn_driver(
        &kafka,
        limits,
        ReceiverStream::new(in_rx),
        Stop::new(signal, None),
    );
    in_tx.send(Ok(txn_batch(0, &["a"], false))).await.unwrap();
    deliver_for(&kafka, Duration::from_millis(10)).await;
    let stopped = tokio::time::Instant::now();
    trigger.trigger();
    let response = rx.recv().await.unwrap().unwrap();
    assert!(stopped.elapsed() <= bound);
    assert_eq!(codes(&response), [ErrorCode::Aborted as i32]);
    assert!(
        !error(&response.results[0]).may_be_stored,
        "never committed"
    );
    assert_eq!(
        rx.recv().await.unwrap().unwrap_err().code(),
        tonic::Code::Unavailable
    );
    driver.await.unwrap();
    assert_eq!(kafka.events(), ["begin", "a", "abort", "retire"]);
    drop(in_tx);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_never_makes_committed_transactions_too_large() {
    // 30 committed transactions of one record each, on a stream whose
    // window holds 4 records, read by a client that reads nothing until
    // all were sent: their answers wait in the stream, which must not
    // mistake them for one open transaction too large to commit.
    let kafka = FakeKafka::transactional();
    let (in_tx, in_rx) = mpsc::channel(64);
    let (driver, mut rx) = spawn_observed(
        &kafka,
        limits(4, 100_000),
        ReceiverStream::new(in_rx),
        Stop::never(),
        1,
        Observers::none(),
    );
    let broker = {
        let kafka = kafka.clone();
        tokio::spawn(async move { deliver_for(&kafka, Duration::from_secs(3600)).await })
    };
    let sender = tokio::spawn(async move {
        for n in 0..30u64 {
            in_tx
                .send(Ok(txn_batch(n, &[&format!("v{n}")], true)))
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in 0..30u64 {
        let response = rx
            .recv()
            .await
            .unwrap()
            .unwrap_or_else(|status| panic!("batch {n}: the stream ended: {status:?}"));
        assert_eq!((response.batch_id, codes(&response)), (n, vec![0]));
    }
    sender.await.unwrap();
    assert!(rx.recv().await.is_none(), "the stream ends OK");
    assert_eq!(driver.await.unwrap().records_ok, 30);
    broker.abort();
}

/// The `kafka_gateway_records_total` samples of `result`, summed.
/// Records sent to Kafka counted with `result`.
fn records_total(metrics: &str, result: &str) -> f64 {
    series_total(metrics, "kafka_gateway_records_total{", result)
}

/// Records refused before any send counted with `result`.
fn refused_total(metrics: &str, result: &str) -> f64 {
    series_total(metrics, "kafka_gateway_refused_records_total{", result)
}

fn series_total(metrics: &str, series: &str, result: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(series) && line.contains(&format!("result=\"{result}\"")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(start_paused = true)]
async fn aborted_records_are_counted_as_aborted_not_as_delivered() {
    // Delivered, then aborted (a record of the transaction is invalid):
    // every record counts as what its client was told.
    let kafka = FakeKafka::transactional();
    let observers = Observers::none();
    let mut second = txn_batch(1, &["c", "d"], true);
    second.records[1].topic = "bad topic!".into();
    let requests = vec![txn_batch(0, &["a", "b"], false), second];
    let (driver, mut rx) = spawn_observed(
        &kafka,
        limits(100, 100_000),
        tokio_stream::iter(requests.into_iter().map(Ok)),
        Stop::never(),
        RESPONSES,
        observers.clone(),
    );
    deliver_for(&kafka, Duration::from_millis(50)).await;
    let mut all = Vec::new();
    while let Some(response) = rx.recv().await {
        all.extend(codes(&response.unwrap()));
    }
    driver.await.unwrap();
    let (aborted, invalid) = (ErrorCode::Aborted as i32, ErrorCode::InvalidRecord as i32);
    assert_eq!(all, [aborted, aborted, aborted, invalid]);
    assert_eq!(kafka.events(), ["begin", "a", "b", "c", "abort"]);
    let metrics = observers.metrics.encode();
    assert_eq!(records_total(&metrics, "ok"), 0.0, "{metrics}");
    assert_eq!(records_total(&metrics, "aborted"), 3.0, "{metrics}");
    assert_eq!(refused_total(&metrics, "invalid_record"), 1.0, "{metrics}");

    // Never sent: the window holds one record, the stream is stopped with
    // two more waiting behind it; all three are aborted and counted so.
    let kafka = FakeKafka::transactional();
    let observers = Observers::none();
    let (trigger, signal) = shutdown::channel();
    let (in_tx, in_rx) = mpsc::channel(8);
    let (driver, mut rx) = spawn_observed(
        &kafka,
        limits(1, 100_000),
        ReceiverStream::new(in_rx),
        Stop::new(signal, None),
        RESPONSES,
        observers.clone(),
    );
    in_tx
        .send(Ok(txn_batch(0, &["a", "b", "c"], false)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    trigger.trigger();
    let response = rx.recv().await.unwrap().unwrap();
    assert_eq!(codes(&response), [aborted; 3]);
    assert!(rx.recv().await.unwrap().is_err());
    driver.await.unwrap();
    assert_eq!(kafka.events(), ["begin", "a", "abort"]);
    let metrics = observers.metrics.encode();
    // "a" was sent; "b" and "c" never were.
    assert_eq!(records_total(&metrics, "aborted"), 1.0, "{metrics}");
    assert_eq!(refused_total(&metrics, "aborted"), 2.0, "{metrics}");
    assert_eq!(records_total(&metrics, "unavailable"), 0.0, "{metrics}");
    drop(in_tx);
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
