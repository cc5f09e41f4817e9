//! Failed records parked in the dead-letter topic, in stream order.

use super::*;

fn dead_letter_limits(topic: &str, retriable: bool) -> StreamLimits {
    StreamLimits {
        dead_letter: Some(DeadLetter {
            topic: Arc::from(topic),
            retriable,
            not_authorized: true,
        }),
        ..limits(100, 100_000)
    }
}

fn error_of(result: &RecordResult) -> &proto::RecordError {
    match &result.result {
        Some(record_result::Result::Error(error)) => error,
        other => panic!("expected an error result, got {other:?}"),
    }
}

fn header<'a>(record: &'a OutboundRecord, key: &str) -> Option<&'a [u8]> {
    record
        .headers
        .iter()
        .find(|h| h.key == key)
        .map(|h| &h.value[..])
}

#[tokio::test(start_paused = true)]
async fn failed_records_are_parked_in_stream_order_and_say_where() {
    use crate::produce::dead_letter::{HEADER_CODE, HEADER_PARTITION, HEADER_TOPIC};
    for seed in 1..=10u64 {
        let mut requests = batches(&[6, 3]);
        // Stream order of the failures: 1 times out in flight (known
        // last), 2 is invalid, 3 is refused by the producer, 5 is
        // invalid, 7 times out.
        requests[0].records[2].topic = "bad topic!".into();
        requests[0].records[3].topic = "forbidden".into();
        requests[0].records[5].partition = Some(-2);
        let kafka = FakeKafka::new(usize::MAX);
        {
            let mut state = kafka.state.lock().unwrap();
            state
                .time_out
                .push(requests[0].records[1].value.clone().unwrap());
            state
                .time_out
                .push(requests[1].records[1].value.clone().unwrap());
        }
        let values = values(&requests);
        let (out, summary) =
            run_stream(&kafka, dead_letter_limits("dlq", true), requests, seed).await;
        let results: Vec<&RecordResult> = out
            .iter()
            .flat_map(|r| r.as_ref().unwrap().results.iter())
            .collect();
        let failed = [1, 2, 3, 5, 7];
        let letters = kafka.state.lock().unwrap().letters.clone();
        let parked: Vec<Bytes> = letters.iter().map(|l| l.value.clone().unwrap()).collect();
        let expected: Vec<Bytes> = failed.iter().map(|&i| values[i].clone()).collect();
        assert_eq!(parked, expected, "seed {seed}: parked in stream order");
        for (n, &i) in failed.iter().enumerate() {
            let error = error_of(results[i]);
            let at = error.dead_letter.as_ref().unwrap_or_else(|| {
                panic!("seed {seed}: record {i} says where it was parked: {error:?}")
            });
            assert_eq!(at.topic, "dlq");
            let code = ErrorCode::try_from(error.code).unwrap();
            assert_eq!(
                header(&letters[n], HEADER_CODE),
                Some(code.as_str_name().as_bytes()),
                "seed {seed}: record {i}"
            );
        }
        assert_eq!(header(&letters[1], HEADER_TOPIC), Some(&b"bad topic!"[..]));
        assert_eq!(header(&letters[2], HEADER_TOPIC), Some(&b"forbidden"[..]));
        assert_eq!(header(&letters[3], HEADER_PARTITION), Some(&b"-2"[..]));
        assert_eq!(header(&letters[0], HEADER_TOPIC), Some(&b"t"[..]));
        for i in [0, 4, 6, 8] {
            ok_metadata(results[i]);
        }
        assert_eq!(
            (
                summary.records_ok,
                summary.records_failed,
                summary.records_dead_lettered
            ),
            (4, 5, 5)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timed_out_records_are_parked_only_when_asked() {
    let requests = batches(&[3]);
    let kafka = FakeKafka::new(usize::MAX);
    kafka
        .state
        .lock()
        .unwrap()
        .time_out
        .push(requests[0].records[1].value.clone().unwrap());
    let (out, summary) = run_stream(&kafka, dead_letter_limits("dlq", false), requests, 3).await;
    let error = error_of(&out[0].as_ref().unwrap().results[1]);
    assert_eq!(error.code, ErrorCode::TimedOut as i32);
    assert!(error.dead_letter.is_none());
    assert!(kafka.state.lock().unwrap().letters.is_empty());
    assert_eq!(summary.records_dead_lettered, 0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_opts_out_is_only_answered() {
    let mut requests = batches(&[2, 2]);
    requests[0].skip_dead_letter = true;
    requests[0].records[0].topic = "bad topic!".into();
    requests[1].records[0].topic = "bad topic!".into();
    let kafka = FakeKafka::new(usize::MAX);
    let (out, _) = run_stream(&kafka, dead_letter_limits("dlq", false), requests, 5).await;
    let skipped = error_of(&out[0].as_ref().unwrap().results[0]);
    assert!(skipped.dead_letter.is_none(), "{skipped:?}");
    let parked = error_of(&out[1].as_ref().unwrap().results[0]);
    assert!(parked.dead_letter.is_some(), "{parked:?}");
    assert_eq!(kafka.state.lock().unwrap().letters.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_topic_that_fails_too_is_said_so() {
    let mut requests = batches(&[2]);
    requests[0].records[0].topic = "bad topic!".into();
    let kafka = FakeKafka::new(usize::MAX);
    // The fake refuses every record to "forbidden".
    let (out, summary) =
        run_stream(&kafka, dead_letter_limits("forbidden", false), requests, 7).await;
    let error = error_of(&out[0].as_ref().unwrap().results[0]);
    assert_eq!(
        error.code,
        ErrorCode::InvalidRecord as i32,
        "the original failure"
    );
    assert!(error.dead_letter.is_none());
    assert!(
        error
            .message
            .contains("dead-letter topic \"forbidden\" failed too")
            && error.message.contains("TOPIC_AUTHORIZATION_FAILED"),
        "{}",
        error.message
    );
    ok_metadata(&out[0].as_ref().unwrap().results[1]);
    assert_eq!(summary.records_dead_lettered, 0);
    assert_eq!(summary.records_failed, 1);
}
