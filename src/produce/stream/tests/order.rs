//! Order, bounds and backpressure of a plain stream, its shutdown and its
//! client leaving.

use super::*;

#[tokio::test(start_paused = true)]
async fn acks_come_back_in_order_whatever_the_delivery_order() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed * 7919);
        let sizes: Vec<usize> = (0..30).map(|_| rng.below(12)).collect();
        let requests = batches(&sizes);
        let sent = values(&requests);
        let kafka = FakeKafka::new(usize::MAX);
        let (out, summary) = run_stream(&kafka, limits(7, 10_000), requests, seed).await;

        assert_eq!(
            kafka.accepted(),
            sent,
            "seed {seed}: handed over out of stream order"
        );
        assert_eq!(
            out.len(),
            sizes.len(),
            "seed {seed}: one response per batch"
        );
        let mut last_offset: HashMap<i32, i64> = HashMap::new();
        for (i, response) in out.iter().enumerate() {
            let response = response.as_ref().expect("no stream error");
            assert_eq!(
                response.batch_id, i as u64,
                "seed {seed}: responses out of order"
            );
            assert_eq!(response.results.len(), sizes[i]);
            for result in &response.results {
                let meta = ok_metadata(result);
                assert_eq!(meta.topic, "t");
                let last = last_offset.insert(meta.partition, meta.offset);
                assert!(
                    last.is_none_or(|last| last < meta.offset),
                    "seed {seed}: offsets must grow per partition"
                );
            }
        }
        assert_eq!(summary.records_ok as usize, sent.len());
        assert_eq!(summary.records_failed, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn the_window_bounds_records_and_bytes_in_flight() {
    let requests = batches(&[50, 50, 50]);
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(&kafka, limits(5, 1_000), requests, 3).await;
    assert_eq!(out.len(), 3);
    assert_eq!(
        kafka.state.lock().unwrap().max_alive,
        5,
        "the window must fill up to, and not past, 5 records"
    );

    // Each record is 1 key byte + 7 to 9 value bytes: at most 3 fit in 30 bytes.
    let requests = batches(&[40]);
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(&kafka, limits(100, 30), requests, 4).await;
    assert_eq!(out[0].as_ref().unwrap().results.len(), 40);
    let max_bytes = kafka.state.lock().unwrap().max_alive_bytes;
    assert!(
        (20..=30).contains(&max_bytes),
        "bytes in flight peaked at {max_bytes}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_window_stops_reading_the_stream() {
    let kafka = FakeKafka::new(usize::MAX);
    let read = Arc::new(AtomicUsize::new(0));
    let inbound = {
        let read = read.clone();
        tokio_stream::iter(batches(&[1; 100]).into_iter().map(Ok)).map(move |item| {
            read.fetch_add(1, Ordering::SeqCst);
            item
        })
    };
    let limits = limits(4, 10_000);
    let (driver, mut rx) = spawn_driver(&kafka, limits, inbound, Stop::never());
    // Nothing is delivered: the driver fills the window, then must stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(kafka.accepted().len(), 4);
    assert_eq!(
        read.load(Ordering::SeqCst),
        4,
        "4 batches in the window, no more: unanswered batches hold the window's worth"
    );
    assert!(try_recv(&mut rx).is_none(), "no ack before a delivery");

    let mut rng = Rng(9);
    let mut answered = 0;
    while answered < 100 {
        while kafka.deliver_one(&mut rng) {}
        tokio::time::sleep(Duration::from_millis(1)).await;
        while let Some(response) = try_recv(&mut rx) {
            assert_eq!(response.unwrap().batch_id, answered);
            answered += 1;
        }
    }
    assert_eq!(driver.await.unwrap().records_ok, 100);
}

#[tokio::test(start_paused = true)]
async fn queue_full_retries_the_same_record_in_order() {
    let requests = batches(&[40, 3, 60]);
    let sent = values(&requests);
    // librdkafka's queue holds 3 records; the window would allow 100.
    let kafka = FakeKafka::new(3);
    let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 11).await;
    assert!(
        kafka.state.lock().unwrap().queue_full_answers > 10,
        "the test must hit QueueFull"
    );
    assert_eq!(
        kafka.accepted(),
        sent,
        "no record lost, duplicated or reordered"
    );
    assert_eq!(out.len(), 3);
    assert_eq!(summary.records_ok as usize, sent.len());
}

#[tokio::test(start_paused = true)]
async fn queue_full_with_nothing_in_flight_waits_and_retries() {
    let requests = batches(&[5]);
    let kafka = FakeKafka::new(usize::MAX);
    kafka.state.lock().unwrap().forced_queue_full = 25;
    let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 5).await;
    assert_eq!(kafka.state.lock().unwrap().queue_full_answers, 25);
    assert_eq!(out[0].as_ref().unwrap().results.len(), 5);
    assert_eq!(summary.records_ok, 5);
}

#[tokio::test(start_paused = true)]
async fn bad_records_fail_alone_and_the_stream_goes_on() {
    let mut requests = batches(&[4, 2]);
    requests[0].records[1].topic = "bad topic!".into();
    requests[0].records[2].topic = "forbidden".into();
    requests[0].records[3].partition = Some(-2);
    let kafka = FakeKafka::new(usize::MAX);
    let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 2).await;
    let first = out[0].as_ref().unwrap();
    let codes: Vec<Option<i32>> = first
        .results
        .iter()
        .map(|r| match &r.result {
            Some(record_result::Result::Error(e)) => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ErrorCode::InvalidRecord as i32),
            Some(ErrorCode::NotAuthorized as i32),
            Some(ErrorCode::InvalidRecord as i32)
        ]
    );
    assert_eq!(out[1].as_ref().unwrap().results.len(), 2);
    assert_eq!((summary.records_ok, summary.records_failed), (3, 3));
    assert_eq!(kafka.accepted().len(), 3, "bad records are never sent");
}

#[tokio::test(start_paused = true)]
async fn an_oversized_batch_ends_the_stream_after_earlier_batches() {
    let requests = batches(&[3, 1_001, 2]);
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 8).await;
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].as_ref().unwrap().results.len(), 3);
    let status = out[1].as_ref().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-batch-records"),
        "{}",
        status.message()
    );
    assert_eq!(
        kafka.accepted().len(),
        3,
        "nothing of the oversized batch or after it is sent"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_what_was_read_then_ends_unavailable() {
    let kafka = FakeKafka::new(usize::MAX);
    let (trigger, signal) = shutdown::channel();
    let (in_tx, in_rx) = mpsc::channel(8);
    let limits = limits(100, 100_000);
    let stop = Stop::new(signal, None);
    let (driver, mut rx) = spawn_driver(&kafka, limits, ReceiverStream::new(in_rx), stop);
    for request in batches(&[3, 4]) {
        in_tx.send(Ok(request)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    trigger.trigger();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // A batch sent after shutdown is never read.
    let _ = in_tx.send(Ok(batches(&[9]).remove(0))).await;
    let mut rng = Rng(1);
    while kafka.deliver_one(&mut rng) {}
    assert_eq!(rx.recv().await.unwrap().unwrap().results.len(), 3);
    assert_eq!(rx.recv().await.unwrap().unwrap().results.len(), 4);
    let status = rx.recv().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(rx.recv().await.is_none());
    assert_eq!(driver.await.unwrap().records_ok, 7);
    assert_eq!(kafka.accepted().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_still_has_its_in_flight_records_completed() {
    let kafka = FakeKafka::new(usize::MAX);
    let (in_tx, in_rx) = mpsc::channel(8);
    let limits = limits(10, 100_000);
    let (driver, rx) = spawn_driver(&kafka, limits, ReceiverStream::new(in_rx), Stop::never());
    // 25 records: 10 enter the window, 15 wait behind it.
    in_tx.send(Ok(batches(&[25]).remove(0))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(rx);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut rng = Rng(4);
    while kafka.deliver_one(&mut rng) {}
    let summary = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the driver ends")
        .unwrap();
    assert!(summary.client_gone);
    assert_eq!(
        summary.records_ok, 10,
        "every record handed to Kafka completes"
    );
    assert_eq!(
        summary.records_abandoned, 15,
        "records never handed over are dropped, not sent"
    );
    assert_eq!(kafka.accepted().len(), 10);
    assert_eq!(
        kafka.alive.load(Ordering::SeqCst),
        0,
        "no delivery is leaked"
    );
}

#[tokio::test(start_paused = true)]
async fn compact_acks_name_the_batch_topic_once() {
    let mut requests = batches(&[3, 2]);
    requests[0].compact_acks = true;
    requests[0].records[1].topic = "elsewhere".into();
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 6).await;
    let compact = out[0].as_ref().unwrap();
    assert_eq!(compact.topic, "t", "the response names the batch's topic");
    let topics: Vec<&str> = compact
        .results
        .iter()
        .map(|r| ok_metadata(r).topic.as_str())
        .collect();
    assert_eq!(
        topics,
        vec!["", "elsewhere", ""],
        "only other topics are named"
    );
    let full = out[1].as_ref().unwrap();
    assert_eq!(full.topic, "", "a batch that did not ask gets full acks");
    assert!(full.results.iter().all(|r| ok_metadata(r).topic == "t"));
}
