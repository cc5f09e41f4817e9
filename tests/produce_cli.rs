//! `kafka-gateway produce` as a user runs it: the real binary reads stdin
//! and produces through a gateway in this process, or through the gateway
//! binary serving TLS, client certificates and API keys; the records are
//! read back from the broker and compared with the input, line by line.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::binary::{self, BIN};
use common::pki::{CLIENT_PRINCIPAL, Pki};
use common::*;
use kafka_gateway::proto::producer_server::{Producer, ProducerServer};
use kafka_gateway::proto::{ProduceRequest, ProduceResponse, RecordMetadata, RecordResult};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// `kafka-gateway produce ARGS` in a clean environment, with `envs` added,
/// its standard streams piped.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = binary::command("produce", args, &[]);
    command
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What a finished run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `produce ARGS` with `input` on stdin until it exits (at most a
/// minute).
async fn produce_with(args: &[&str], envs: &[(&str, &str)], input: Vec<u8>) -> Run {
    let mut child = command(args, envs).spawn().expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    // A thread of its own, so a large input cannot block on a full pipe.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    wait(child).await
}

/// Waits up to a minute for `produce` to exit.
async fn wait(child: Child) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("produce exits within a minute")
    .unwrap()
    .unwrap();
    finished(output)
}

async fn produce(args: &[&str], input: impl Into<Vec<u8>>) -> Run {
    produce_with(args, &[], input.into()).await
}

fn finished(output: Output) -> Run {
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!("produce exited {:?}; stderr:\n{}", run.code, run.stderr);
    run
}

/// A path in the temporary directory no other test uses; the file is
/// removed when this is dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(rand_topic(name)))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The lines of a --failed-out file, parsed.
fn failed_out(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("--failed-out exists")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

fn bytes(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_are_stored_in_input_order() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-text").await;
    let failed = TempPath::new("cli-text-failed");
    let mut lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("value-{i:04}").into_bytes())
        .collect();
    // An empty line, a CRLF line end and bytes that are not UTF-8 are
    // records too.
    lines[10] = Vec::new();
    lines[11] = b"windows\r".to_vec();
    lines[12] = b"\xff\xfe binary \x00".to_vec();
    let mut input = lines.join(&b'\n');
    input.push(b'\n');

    let target = gateway.addr.to_string();
    let run = produce(
        &[
            "--target",
            &target,
            "--topic",
            &topic,
            "--batch-records",
            "64",
            "--max-in-flight-batches",
            "2",
            "--failed-out",
            failed.as_str(),
        ],
        input,
    )
    .await;
    assert_eq!(run.code, Some(0), "every record acked exits 0");
    assert!(
        run.stdout.is_empty(),
        "stdout is left alone: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1000 records: 1000 acked, 0 failed"),
        "{}",
        run.stderr
    );
    assert!(failed_out(&failed.0).is_empty(), "nothing failed");

    let consumed = consume(gateway.bootstrap_servers(), &topic, 1000).await;
    assert_eq!(consumed.len(), 1000);
    lines[11] = b"windows".to_vec();
    let position = |value: &[u8]| lines.iter().position(|line| line == value);
    let mut seen = vec![false; lines.len()];
    for partition in 0..PARTITIONS {
        let stored: Vec<usize> = consumed
            .iter()
            .filter(|c| c.partition == partition)
            .map(|c| {
                assert_eq!(c.key, None, "a plain line has no key");
                position(c.value.as_deref().unwrap()).expect("a stored value was an input line")
            })
            .collect();
        assert!(
            stored.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} keeps input order: {stored:?}"
        );
        for index in &stored {
            seen[*index] = true;
        }
        // The summary's count per partition is what the partition holds.
        if !stored.is_empty() {
            let line = format!("{topic} partition {partition}: {} acked", stored.len());
            assert!(run.stderr.contains(&line), "{line} in {}", run.stderr);
        }
    }
    assert!(seen.iter().all(|&s| s), "every line was stored once");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_carry_fewer_bytes_and_store_the_same_records() {
    let gateway = start_gateway(&[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Counts what the client sends the gateway.
    let proxy = common::proxy::FaultProxy::start(listener, gateway.addr);
    let target = proxy.addr.to_string();
    // Text that compresses the way logs and JSON do.
    let lines: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                r#"{{"order":{i},"status":"shipped","warehouse":"north-{}"}}"#,
                i % 7
            )
        })
        .collect();
    let input = lines.join("\n") + "\n";

    let mut sent = Vec::new();
    for compress in ["none", "zstd", "gzip"] {
        let topic = gateway.topic(&format!("cli-compress-{compress}")).await;
        let before = proxy.forwarded.load(Ordering::Relaxed);
        let run = produce(
            &[
                "--target",
                &target,
                "--topic",
                &topic,
                "--compress",
                compress,
            ],
            input.clone(),
        )
        .await;
        assert_eq!(run.code, Some(0), "{compress}: {}", run.stderr);
        assert!(
            run.stderr.contains("2000 records: 2000 acked, 0 failed"),
            "{compress}: {}",
            run.stderr
        );
        sent.push(proxy.forwarded.load(Ordering::Relaxed) - before);

        // The same records, in input order per partition.
        let consumed = consume(gateway.bootstrap_servers(), &topic, 2000).await;
        assert_eq!(consumed.len(), 2000, "{compress}");
        for partition in 0..PARTITIONS {
            let stored: Vec<usize> = consumed
                .iter()
                .filter(|c| c.partition == partition)
                .map(|c| {
                    let value = c.value.as_deref().unwrap();
                    lines
                        .iter()
                        .position(|line| line.as_bytes() == value)
                        .expect("a stored value was an input line")
                })
                .collect();
            assert!(
                stored.windows(2).all(|w| w[0] < w[1]),
                "{compress}: partition {partition} keeps input order"
            );
        }
    }
    let [none, zstd, gzip] = sent[..] else {
        unreachable!()
    };
    eprintln!("sent: plain {none}, zstd {zstd}, gzip {gzip} bytes");
    // Over 100 KiB of records plain; compressed, a small fraction of it.
    assert!(none > 100_000, "plain sent {none} bytes");
    assert!(zstd * 3 < none, "zstd sent {zstd} bytes, plain {none}");
    assert!(gzip * 3 < none, "gzip sent {gzip} bytes, plain {none}");
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_delimiter_splits_each_line_at_its_first_occurrence() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-keys").await;
    let target = gateway.addr.to_string();
    // Everything from the environment this time; `\t` is a tab.
    let run = produce_with(
        &[],
        &[
            ("KAFKA_GATEWAY_TARGET", &target),
            ("KAFKA_GATEWAY_TOPIC", &topic),
            ("KAFKA_GATEWAY_KEY_DELIMITER", "\\t"),
        ],
        b"user-1\t{\"n\": 1}\nuser-2\ta\tb\n\tempty key\nno delimiter\nuser-1\t{\"n\": 2}\n"
            .to_vec(),
    )
    .await;
    assert_eq!(run.code, Some(0));
    assert!(run.stderr.contains("5 records: 5 acked"), "{}", run.stderr);

    let consumed = consume(gateway.bootstrap_servers(), &topic, 5).await;
    let mut pairs: Vec<_> = consumed
        .iter()
        .map(|c| (c.key.clone(), c.value.clone()))
        .collect();
    pairs.sort();
    let mut expected = vec![
        (bytes("user-1"), bytes("{\"n\": 1}")),
        (bytes("user-2"), bytes("a\tb")),
        (bytes(""), bytes("empty key")),
        (None, bytes("no delimiter")),
        (bytes("user-1"), bytes("{\"n\": 2}")),
    ];
    expected.sort();
    assert_eq!(pairs, expected);
    // One key, one partition, input order.
    let user_1: Vec<_> = consumed
        .iter()
        .filter(|c| c.key == bytes("user-1"))
        .collect();
    assert_eq!(user_1[0].partition, user_1[1].partition);
    assert_eq!(user_1[0].value, bytes("{\"n\": 1}"));
    assert_eq!(user_1[1].value, bytes("{\"n\": 2}"));
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_carry_headers_partitions_timestamps_and_topics() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-json").await;
    let other = gateway.topic("cli-json-other").await;
    let input = format!(
        r#"{{"key":"k1","value":"v1","headers":[{{"key":"h","value":"1"}},{{"key":"h","value":"2"}}],"partition":3,"timestamp_ms":1700000000000}}
{{"key":"k2","value":null,"partition":3}}
{{"value":"v3","headers":{{"z":"last","a":"first"}},"partition":3}}

{{"key_b64":"AP8=","value_b64":"/w==","headers":[{{"key":"bin","value_b64":"AQI="}}],"partition":3}}
{{"value":"elsewhere","topic":"{other}","partition":1}}
"#
    );
    let target = gateway.addr.to_string();
    let run = produce(
        &["--target", &target, "-t", &topic, "--format", "json"],
        input,
    )
    .await;
    assert_eq!(run.code, Some(0));
    assert!(run.stderr.contains("5 records: 5 acked"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{topic} partition 3: 4 acked")),
        "{}",
        run.stderr
    );

    let consumed = consume(gateway.bootstrap_servers(), &topic, 4).await;
    assert_eq!(consumed.len(), 4);
    assert!(consumed.iter().all(|c| c.partition == 3));
    let header = |k: &str, v: &[u8]| (k.to_owned(), v.to_vec());
    assert_eq!(consumed[0].key, bytes("k1"));
    assert_eq!(consumed[0].value, bytes("v1"));
    assert_eq!(
        consumed[0].headers,
        [header("h", b"1"), header("h", b"2")],
        "duplicates kept, in order"
    );
    assert_eq!(consumed[0].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(consumed[1].key, bytes("k2"));
    assert_eq!(consumed[1].value, None, "null is a tombstone");
    assert_eq!(consumed[2].key, None);
    assert_eq!(
        consumed[2].headers,
        [header("z", b"last"), header("a", b"first")],
        "a header object keeps its order"
    );
    assert_eq!(consumed[3].key, Some(vec![0x00, 0xff]));
    assert_eq!(consumed[3].value, Some(vec![0xff]));
    assert_eq!(consumed[3].headers, [header("bin", &[1, 2])]);

    let elsewhere = consume(gateway.bootstrap_servers(), &other, 1).await;
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].partition, 1);
    assert_eq!(elsewhere[0].value, bytes("elsewhere"));
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_exit_1_and_are_listed_in_failed_out() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-failed").await;
    let failed = TempPath::new("cli-failed-out");
    let lines = [
        r#"{"value":"good 1"}"#,
        r#"{"value":"no such partition","partition":99}"#,
        r#"{"value": oops}"#,
        r#"{"vaule":"typo"}"#,
        r#"{"value":"good 2"}"#,
        r#"{"value":"negative","partition":-1}"#,
    ];
    let target = gateway.addr.to_string();
    let run = produce(
        &[
            "--target",
            &target,
            "-t",
            &topic,
            "-f",
            "json",
            "--failed-out",
            failed.as_str(),
        ],
        lines.join("\n"),
    )
    .await;
    assert_eq!(run.code, Some(1), "a failed record exits 1");
    for needle in [
        "line 2: ERROR_CODE_UNKNOWN_PARTITION",
        "line 3: MALFORMED_INPUT: not valid JSON",
        "line 4: MALFORMED_INPUT: not a valid record: unknown field `vaule`",
        "line 6: ERROR_CODE_INVALID_RECORD",
        "6 records: 2 acked, 4 failed",
        "ERROR_CODE_UNKNOWN_PARTITION: 1 failed",
        "MALFORMED_INPUT: 2 failed",
        failed.as_str(),
    ] {
        assert!(run.stderr.contains(needle), "{needle} in {}", run.stderr);
    }

    let listed = failed_out(&failed.0);
    let summary: Vec<_> = listed
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["error_code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (2, "ERROR_CODE_UNKNOWN_PARTITION"),
            (3, "MALFORMED_INPUT"),
            (4, "MALFORMED_INPUT"),
            (6, "ERROR_CODE_INVALID_RECORD"),
        ]
    );
    for failure in &listed {
        let line = failure["line"].as_u64().unwrap() as usize;
        assert_eq!(failure["input"], lines[line - 1], "the input line, as read");
        assert_eq!(failure["retriable"], false);
        assert!(!failure["message"].as_str().unwrap().is_empty());
    }
    assert!(
        listed[0]["message"]
            .as_str()
            .unwrap()
            .contains("_UNKNOWN_PARTITION")
    );

    let consumed = consume(gateway.bootstrap_servers(), &topic, 2).await;
    let values: Vec<_> = consumed.iter().map(|c| c.value.clone()).collect();
    assert_eq!(values.len(), 2, "only the good records were stored");
    assert!(values.contains(&bytes("good 1")) && values.contains(&bytes("good 2")));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_gateway_exits_69_naming_the_fix() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = format!("127.0.0.1:{port}");
    let run = produce(&["--target", &target, "-t", "orders"], "a\n").await;
    assert_eq!(run.code, Some(69));
    for needle in [
        &format!("cannot reach the gateway at http://{target}"),
        "Connection refused",
        "--target",
        "KAFKA_GATEWAY_TARGET",
    ] {
        assert!(run.stderr.contains(needle), "{needle} in {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_exits_69_and_lists_what_was_not_acknowledged() {
    // The gateway refuses batches of over 10 records and ends the stream.
    let gateway = start_gateway(&["--max-batch-records", "10"]).await;
    let topic = gateway.topic("cli-broken").await;
    let failed = TempPath::new("cli-broken-failed");
    let input: String = (1..=25).map(|i| format!("{i}\n")).collect();
    let target = gateway.addr.to_string();
    let run = produce(
        &[
            "--target",
            &target,
            "-t",
            &topic,
            "--batch-records",
            "20",
            "--failed-out",
            failed.as_str(),
        ],
        input,
    )
    .await;
    assert_eq!(run.code, Some(69), "a broken stream exits 69");
    for needle in [
        "error: the stream to the gateway",
        "ResourceExhausted",
        "over the gateway's limit of 10",
        "lower --batch-records",
        "may or may not be stored",
        failed.as_str(),
    ] {
        assert!(run.stderr.contains(needle), "{needle} in {}", run.stderr);
    }
    // Every line read is listed, in order: the refused batch as not
    // acknowledged, and whatever was read after it.
    let last_line: u64 = run
        .stderr
        .split("broke after line ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("the error names the last line read");
    assert!(last_line >= 20, "the first batch was read whole");
    let listed = failed_out(&failed.0);
    let numbers: Vec<u64> = listed.iter().map(|f| f["line"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=last_line).collect::<Vec<_>>());
    for failure in &listed[..20] {
        assert_eq!(failure["error_code"], "NOT_ACKNOWLEDGED");
        assert_eq!(failure["retriable"], true);
    }
    for failure in &listed[20..] {
        let code = failure["error_code"].as_str().unwrap();
        assert!(code == "NOT_ACKNOWLEDGED" || code == "NOT_SENT", "{code}");
    }
    gateway.stop().await.unwrap();
}

/// Waits until the gateway's metrics count `count` records stored in
/// `topic`.
async fn stored(gateway: &TestGateway, topic: &str, count: u64) {
    let series = format!(r#"kafka_gateway_records_total{{topic="{topic}",result="ok"}}"#);
    eventually(&format!("{count} records stored in {topic}"), || async {
        let (_, text) = http_get(gateway.metrics_addr, "/metrics").await;
        (sample(&text, &series) == Some(count as f64)).then_some(())
    })
    .await;
}

/// Writes `text` to the child's stdin, which stays open.
fn type_lines(child: &mut Child, text: &str) {
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_lines_are_acked_at_once_and_ctrl_c_finishes_cleanly() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-typed").await;
    let target = gateway.addr.to_string();
    let mut child = command(&["--target", &target, "-t", &topic, "--progress"], &[])
        .spawn()
        .unwrap();
    type_lines(&mut child, "first\nsecond\n");

    // Stored while stdin is still open: the linger sent the partial batch.
    stored(&gateway, &topic, 2).await;
    type_lines(&mut child, "third\n");
    stored(&gateway, &topic, 3).await;
    let consumed = consume(gateway.bootstrap_servers(), &topic, 3).await;
    let mut values: Vec<_> = consumed.iter().map(|c| c.value.clone()).collect();
    values.sort();
    assert_eq!(values, [bytes("first"), bytes("second"), bytes("third")]);
    // Long enough for a progress line (once a second off a terminal).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Stdin stays open until produce has exited, as in a terminal: closing
    // it here would race the signal with the end of the input.
    let stdin = child.stdin.take();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = wait(child).await;
    drop(stdin);
    assert_eq!(run.code, Some(130), "Ctrl-C exits 130");
    for needle in [
        "3 read, 3 acked, 0 failed",
        "records/s",
        "3 records: 3 acked, 0 failed",
        "interrupted: stopped reading after line 3",
    ] {
        assert!(run.stderr.contains(needle), "{needle} in {}", run.stderr);
    }
    gateway.stop().await.unwrap();
}

/// A gateway that records the batches it is sent and answers only when told
/// to.
struct Silent {
    seen: mpsc::UnboundedSender<ProduceRequest>,
    answers: std::sync::Mutex<Option<mpsc::Receiver<Result<ProduceResponse, Status>>>>,
}

#[tonic::async_trait]
impl Producer for Silent {
    type ProduceStream = ReceiverStream<Result<ProduceResponse, Status>>;

    async fn produce(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let mut inbound = request.into_inner();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let _ = seen.send(batch);
            }
        });
        let answers = self.answers.lock().unwrap().take().expect("one stream");
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn produce_batch(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_batches_are_bounded_and_reading_waits_for_acks() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (answer, answers) = mpsc::channel(16);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProducerServer::new(Silent {
                seen: seen_tx,
                answers: std::sync::Mutex::new(Some(answers)),
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let target = addr.to_string();
    let mut child = command(
        &[
            "--target",
            &target,
            "-t",
            "orders",
            "--batch-records",
            "10",
            "--max-in-flight-batches",
            "3",
        ],
        &[],
    )
    .spawn()
    .unwrap();
    // Far more input than three batches; the writer blocks on the pipe.
    let mut stdin = child.stdin.take().unwrap();
    let lines_written = std::sync::Arc::new(AtomicU64::new(0));
    let writer = std::thread::spawn({
        let lines_written = lines_written.clone();
        move || {
            for i in 0..1_000_000 {
                if writeln!(stdin, "{i}").is_err() {
                    return;
                }
                lines_written.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let next = |seen: &mut mpsc::UnboundedReceiver<ProduceRequest>| seen.try_recv().ok();
    let mut batches = Vec::new();
    while batches.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("three batches arrive")
            .unwrap();
        batches.push(batch);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        next(&mut seen).is_none(),
        "no fourth batch while three are unanswered"
    );
    let ids: Vec<u64> = batches.iter().map(|b| b.batch_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(batches.iter().all(|b| b.records.len() == 10));
    let values: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| r.value.as_deref().unwrap())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(
        values,
        expected.iter().map(|v| v.as_bytes()).collect::<Vec<_>>(),
        "batches hold the lines in order"
    );
    let written = lines_written.load(Ordering::Relaxed);
    assert!(
        written < 1_000_000,
        "the producer stopped reading its input ({written} lines written)"
    );

    // One answer frees one slot: exactly one more batch goes.
    let ack = |batch_id: u64| ProduceResponse {
        batch_id,
        results: (0..10)
            .map(|offset| RecordResult {
                result: Some(kafka_gateway::proto::record_result::Result::Ok(
                    RecordMetadata {
                        topic: "orders".into(),
                        partition: 0,
                        offset,
                        timestamp_ms: -1,
                    },
                )),
            })
            .collect(),
        topic: String::new(),
    };
    answer.send(Ok(ack(1))).await.unwrap();
    let fourth = tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("a fourth batch once the first is answered")
        .unwrap();
    assert_eq!(fourth.batch_id, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(next(&mut seen).is_none(), "still at most three unanswered");

    // The gateway goes away: the stream broke, exit 69.
    answer
        .send(Err(Status::unavailable("going away")))
        .await
        .unwrap();
    let run = wait(child).await;
    assert_eq!(run.code, Some(69));
    assert!(
        run.stderr.contains("Unavailable: going away"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("10 acked"),
        "the answered batch counts: {}",
        run.stderr
    );
    // The writer's pipe is closed now: it stops.
    writer.join().unwrap();
    server.abort();
}

#[test]
fn help_answers_the_usual_questions() {
    let output = Command::new(BIN)
        .args(["produce", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--target",
        "KAFKA_GATEWAY_TARGET",
        "127.0.0.1:50051",
        "--topic",
        "KAFKA_GATEWAY_TOPIC",
        "-K, --key-delimiter",
        "--format",
        "\"headers\"",
        "value_b64",
        "tombstone",
        "--batch-records",
        "[default: 500]",
        "--batch-bytes",
        "--batch-linger-ms",
        "--max-in-flight-batches",
        "--failed-out",
        "--progress",
        "--quiet",
        "MALFORMED_INPUT",
        "Exit status",
        "69",
        "130",
        "Examples",
        "https://HOST:PORT",
        "--tls-ca",
        "KAFKA_GATEWAY_CA",
        "--tls-cert",
        "KAFKA_GATEWAY_CLIENT_CERT",
        "--tls-key",
        "--tls-server-name",
        "--token <TOKEN>",
        "[env: KAFKA_GATEWAY_TOKEN]",
        "--token-file",
        "authorization: Bearer TOKEN",
        "77",
    ] {
        assert!(
            help.contains(needle),
            "produce --help lacks {needle}:\n{help}"
        );
    }
    // The token's variable is named, never its value.
    let output = Command::new(BIN)
        .args(["produce", "--help"])
        .env("KAFKA_GATEWAY_TOKEN", "the-secret-token")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("KAFKA_GATEWAY_TOKEN"), "{help}");
    assert!(!help.contains("the-secret-token"), "{help}");
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("produce"), "{help}");
    assert!(help.contains("serve"), "{help}");
}

#[tokio::test]
async fn bad_usage_exits_64_before_connecting() {
    // Nothing listens here; usage errors come first anyway.
    let target = "127.0.0.1:9";
    for (args, needle) in [
        (vec!["--target", target], "--topic"),
        (vec!["--target", target, "-t", "no spaces"], "' '"),
        (
            vec!["--target", target, "-t", "t", "--tls-ca", "ca.pem"],
            "use --target https://127.0.0.1:9",
        ),
        (
            vec!["-t", "t", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
            "KAFKA_GATEWAY_CLIENT_CERT) needs TLS",
        ),
        (
            vec![
                "--target",
                "https://127.0.0.1:9",
                "-t",
                "t",
                "--tls-cert",
                "c.pem",
            ],
            "--tls-cert needs --tls-key",
        ),
        (
            vec![
                "--target",
                "https://127.0.0.1:9",
                "-t",
                "t",
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "--tls-ca (KAFKA_GATEWAY_CA) /nonexistent/ca.pem: cannot read it",
        ),
        (
            vec![
                "--target",
                target,
                "-t",
                "t",
                "--token-file",
                "/nonexistent/token",
            ],
            "--token-file (KAFKA_GATEWAY_TOKEN_FILE) /nonexistent/token: cannot read it",
        ),
        (
            vec![
                "--target",
                target,
                "-t",
                "t",
                "--token",
                "a",
                "--token-file",
                "f",
            ],
            "--token (KAFKA_GATEWAY_TOKEN) and --token-file (KAFKA_GATEWAY_TOKEN_FILE) are both set",
        ),
        (
            vec!["--target", target, "-t", "t", "-f", "json", "-K", ":"],
            "--format text",
        ),
        (
            vec!["--target", target, "-t", "t", "--batch-records", "0"],
            "--batch-records",
        ),
        (vec!["--target", target, "-t", "t", "-f", "xml"], "xml"),
    ] {
        let run = produce(&args, "").await;
        assert_eq!(run.code, Some(64), "{args:?}");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let run = produce(
        &[
            "--target",
            target,
            "-t",
            "t",
            "--failed-out",
            "/nonexistent/dir/failed.ndjson",
        ],
        "",
    )
    .await;
    assert_eq!(run.code, Some(73));
    assert!(
        run.stderr.contains("cannot create --failed-out"),
        "{}",
        run.stderr
    );
}

/// The gateway binary serving TLS with `pki`'s server certificate and
/// `extra` flags, producing to `kafka`.
fn serve_tls(kafka: &TestKafka, pki: &Pki, extra: &[&str]) -> binary::Served {
    let tls = pki.serve_tls();
    let mut args = vec!["--bootstrap-servers", kafka.bootstrap_servers()];
    args.extend(tls.iter().map(String::as_str));
    args.extend(extra);
    binary::serve(&args, &[])
}

/// Asserts that stderr is one line, starting with `start`.
fn only_line(run: &Run, start: &str) {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with(start),
        "{start} alone in {}",
        run.stderr
    );
}

fn assert_stderr(run: &Run, needles: &[&str]) {
    for needle in needles {
        assert!(run.stderr.contains(needle), "{needle} in {}", run.stderr);
    }
}

/// The values stored in `topic`, sorted.
async fn stored_values(kafka: &TestKafka, topic: &str, count: usize) -> Vec<Option<Vec<u8>>> {
    let mut values: Vec<_> = consume(kafka.bootstrap_servers(), topic, count)
        .await
        .into_iter()
        .map(|c| c.value)
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_the_gateway_with_tls_ca_and_names_what_failed() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("cli-tls").await;
    let pki = Pki::new("cli-tls");
    let served = serve_tls(&kafka, &pki, &[]);
    let target = format!("https://{}", served.grpc);
    let ca = pki.path("ca.pem");

    let run = produce(
        &["--target", &target, "--tls-ca", &ca, "-t", &topic],
        "one\ntwo\nthree\n",
    )
    .await;
    assert_eq!(run.code, Some(0), "over TLS, verified for 127.0.0.1");
    assert_stderr(&run, &["3 records: 3 acked, 0 failed"]);
    // From the environment, verified for another name the certificate holds.
    let run = produce_with(
        &["-t", &topic],
        &[
            ("KAFKA_GATEWAY_TARGET", &target),
            ("KAFKA_GATEWAY_CA", &ca),
            ("KAFKA_GATEWAY_TLS_SERVER_NAME", "localhost"),
        ],
        b"four\n".to_vec(),
    )
    .await;
    assert_eq!(run.code, Some(0), "verified for localhost");
    assert_eq!(
        stored_values(&kafka, &topic, 4).await,
        [bytes("four"), bytes("one"), bytes("three"), bytes("two")]
    );

    // A CA that did not sign the gateway's certificate.
    let other = Pki::new("cli-tls-other");
    let other_ca = other.path("ca.pem");
    let run = produce(
        &["--target", &target, "--tls-ca", &other_ca, "-t", &topic],
        "x\n",
    )
    .await;
    assert_eq!(run.code, Some(69), "a failed handshake exits 69");
    assert_stderr(
        &run,
        &[
            &format!("TLS with the gateway at {target} failed"),
            "UnknownIssuer",
            &format!("certificate is not signed by a CA in --tls-ca {other_ca}"),
            "--tls-ca PATH (KAFKA_GATEWAY_CA)",
        ],
    );
    // A name the certificate does not hold.
    let run = produce(
        &[
            "--target",
            &target,
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "gateway.example",
            "-t",
            &topic,
        ],
        "x\n",
    )
    .await;
    assert_eq!(run.code, Some(69));
    assert_stderr(
        &run,
        &[
            "certificate does not name \"gateway.example\" (--tls-server-name)",
            "--tls-server-name NAME",
        ],
    );
    // Plain HTTP/2 to a gateway that serves TLS.
    let plain = format!("http://{}", served.grpc);
    let run = produce(&["--target", &plain, "-t", &topic], "x\n").await;
    assert_eq!(run.code, Some(69));
    only_line(
        &run,
        &format!(
            "error: the gateway at {plain} answers in TLS, not plain HTTP/2: use --target \
             https://{}, with --tls-ca PATH",
            served.grpc
        ),
    );
    assert_eq!(
        stored_values(&kafka, &topic, 4).await.len(),
        4,
        "nothing stored by the failed runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plaintext_gateway_says_to_use_http() {
    let gateway = start_gateway(&[]).await;
    let target = format!("https://{}", gateway.addr);
    let run = produce(&["--target", &target, "-t", "any"], "x\n").await;
    assert_eq!(run.code, Some(69));
    only_line(
        &run,
        &format!(
            "error: the gateway at {target} answers in plain HTTP/2, not TLS: use --target \
             http://{}",
            gateway.addr
        ),
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_the_client_certificate_and_fails_without_it() {
    let kafka = TestKafka::start();
    let topic = kafka.topic("cli-mtls").await;
    let pki = Pki::new("cli-mtls");
    let ca = pki.path("ca.pem");
    let served = serve_tls(
        &kafka,
        &pki,
        &["--tls-client-ca", &ca, "--principal-header", "x-principal"],
    );
    let target = format!("https://{}", served.grpc);

    let run = produce_with(
        &["--target", &target, "--tls-ca", &ca, "-t", &topic],
        &[
            ("KAFKA_GATEWAY_CLIENT_CERT", &pki.path("client.pem")),
            ("KAFKA_GATEWAY_CLIENT_KEY", &pki.path("client-key.pem")),
        ],
        b"from the client certificate\n".to_vec(),
    )
    .await;
    assert_eq!(run.code, Some(0));
    let consumed = consume(kafka.bootstrap_servers(), &topic, 1).await;
    assert_eq!(consumed[0].value, bytes("from the client certificate"));
    assert_eq!(
        consumed[0].headers,
        [(
            "x-principal".to_owned(),
            CLIENT_PRINCIPAL.as_bytes().to_vec()
        )],
        "the gateway knew the caller by its certificate"
    );

    // Without a client certificate. The gateway's alert may be lost when it
    // closes the connection (TLS 1.3 checks the client after the client is
    // done): either way the message names the flags.
    let run = produce(&["--target", &target, "--tls-ca", &ca, "-t", &topic], "x\n").await;
    assert_eq!(run.code, Some(69));
    assert_stderr(&run, &["--tls-cert and --tls-key", "--tls-client-ca"]);
    // A client certificate from another CA.
    let other = Pki::new("cli-mtls-other");
    let run = produce(
        &[
            "--target",
            &target,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &other.path("client.pem"),
            "--tls-key",
            &other.path("client-key.pem"),
            "-t",
            &topic,
        ],
        "x\n",
    )
    .await;
    assert_eq!(run.code, Some(69));
    assert_stderr(&run, &["client certificate", "--tls-client-ca"]);
    // A key that is not the certificate's.
    let run = produce(
        &[
            "--target",
            &target,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &pki.path("client.pem"),
            "--tls-key",
            &other.path("client-key.pem"),
            "-t",
            &topic,
        ],
        "x\n",
    )
    .await;
    assert_eq!(run.code, Some(64));
    assert_stderr(&run, &["cannot be used together", "the certificate's own"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sent_as_bearer_and_a_refused_one_exits_77() {
    use sha2::{Digest, Sha256};
    const KEY: &str = "cli-api-key-0123456789";
    let kafka = TestKafka::start();
    let topic = kafka.topic("cli-token").await;
    let pki = Pki::new("cli-token");
    let keys = pki.write(
        "api-keys.txt",
        format!("cli:{}\n", hex::encode(Sha256::digest(KEY))),
    );
    let served = serve_tls(&kafka, &pki, &["--api-keys", &keys]);
    let target = format!("https://{}", served.grpc);
    let ca = pki.path("ca.pem");
    let tls = [
        "--target",
        target.as_str(),
        "--tls-ca",
        ca.as_str(),
        "-t",
        topic.as_str(),
    ];
    let with = |extra: &[&'static str]| [&tls[..], extra].concat();

    let token_file = pki.write("token", format!("{KEY}\n"));
    for (args, envs) in [
        (with(&["--token", KEY]), vec![]),
        (tls.to_vec(), vec![("KAFKA_GATEWAY_TOKEN", KEY)]),
        (
            [&tls[..], &["--token-file", token_file.as_str()]].concat(),
            vec![],
        ),
    ] {
        let run = produce_with(&args, &envs, b"with a token\n".to_vec()).await;
        assert_eq!(run.code, Some(0), "{args:?} {envs:?}");
        assert!(!run.stderr.contains(KEY), "the token is never printed");
    }
    assert_eq!(stored_values(&kafka, &topic, 3).await.len(), 3);

    let run = produce(&with(&["--token", "not-the-key-0123456789abcdef"]), "x\n").await;
    assert_eq!(run.code, Some(77), "a refused token exits 77");
    assert_stderr(
        &run,
        &[
            &format!("the gateway at {target} refused the call: Unauthenticated"),
            "unknown API key",
            "check the token from --token (KAFKA_GATEWAY_TOKEN)",
        ],
    );
    assert!(
        !run.stderr.contains("not-the-key-0123456789abcdef"),
        "{}",
        run.stderr
    );
    let run = produce(&tls, "x\n").await;
    assert_eq!(run.code, Some(77));
    assert_stderr(
        &run,
        &["Unauthenticated: no credentials", "--token-file PATH"],
    );
    assert_eq!(
        stored_values(&kafka, &topic, 3).await.len(),
        3,
        "nothing stored by the refused runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_id_commits_every_n_records_and_at_the_end() {
    // Its own embedded broker: tansu has no transactions.
    let gateway = start_gateway_embedded(&[]).await;
    let topic = gateway.topic("cli-txn").await;
    let input: String = (0..25).map(|i| format!("txn-{i:02}\n")).collect();
    let target = gateway.addr.to_string();
    let run = produce(
        &[
            "--target",
            &target,
            "--topic",
            &topic,
            "--batch-records",
            "5",
            "--batch-linger-ms",
            "1000",
            "--transactional-id",
            "cli-loader",
            "--commit-every",
            "10",
        ],
        input,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("25 records: 25 acked, 0 failed"),
        "{}",
        run.stderr
    );
    let (_, metrics) = http_get(gateway.metrics_addr, "/metrics").await;
    // After records 10 and 20, then the rest at the end of the input.
    assert_eq!(
        sample(
            &metrics,
            "kafka_gateway_transactions_total{outcome=\"committed\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    assert!(
        run.stderr.contains("3 transactions committed"),
        "the summary counts the commits: {}",
        run.stderr
    );
    let stored = consume(gateway.bootstrap_servers(), &topic, 25).await;
    assert_eq!(stored.len(), 25);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_acks_says_where_each_line_landed_in_input_order() {
    let kafka = TestKafka::start();
    let dlq = kafka.topic("cli-acks-dlq").await;
    let gateway = start_gateway_on(
        kafka,
        true,
        &["--dead-letter-topic", &dlq, "--max-record-bytes", "1000"],
    )
    .await;
    let topic = gateway.topic("cli-acks").await;
    let target = gateway.addr.to_string();

    // Text: one `topic/partition@offset` per line, where the broker has it.
    let input: String = (0..20).map(|i| format!("ack-{i:02}\n")).collect();
    let run = produce(
        &[
            "--target",
            &target,
            "-t",
            &topic,
            "--batch-records",
            "7",
            "--print-acks",
        ],
        input,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), 20, "one line per record: {}", run.stdout);
    let consumed = consume(gateway.bootstrap_servers(), &topic, 20).await;
    for (i, ack) in printed.iter().enumerate() {
        let (name, place) = ack.rsplit_once('/').expect("topic/partition@offset");
        assert_eq!(name, topic);
        let (partition, offset) = place.split_once('@').unwrap();
        let (partition, offset): (i32, i64) = (partition.parse().unwrap(), offset.parse().unwrap());
        let stored = consumed
            .iter()
            .find(|c| c.partition == partition && c.offset == offset)
            .unwrap_or_else(|| panic!("{ack} is stored"));
        assert_eq!(stored.value, bytes(&format!("ack-{i:02}")), "{ack}");
    }

    // JSON input: JSON acks by default, failures in their place, the
    // dead letters counted.
    let big = "x".repeat(2000);
    let lines = [
        r#"{"value":"first"}"#.to_owned(),
        format!(r#"{{"value":"{big}"}}"#),
        r#"{"value": oops}"#.to_owned(),
        r#"{"value":"last"}"#.to_owned(),
    ];
    let run = produce(
        &[
            "--target",
            &target,
            "-t",
            &topic,
            "-f",
            "json",
            "--print-acks",
        ],
        lines.join("\n"),
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let printed: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON per line"))
        .collect();
    assert_eq!(printed.len(), 4, "{}", run.stdout);
    for (i, ack) in printed.iter().enumerate() {
        assert_eq!(ack["line"], i as u64 + 1, "{ack}");
    }
    assert_eq!(printed[0]["topic"], topic.as_str());
    assert!(printed[0]["offset"].is_i64() && printed[3]["offset"].is_i64());
    assert!(
        printed[1]["error_code"]
            .as_str()
            .unwrap()
            .starts_with("ERROR_CODE_")
    );
    assert_eq!(
        printed[1]["dead_letter"]["topic"],
        dlq.as_str(),
        "{}",
        printed[1]
    );
    assert_eq!(printed[2]["error_code"], "MALFORMED_INPUT");
    assert!(
        run.stderr.contains("1 parked as dead letter"),
        "the summary counts the dead letters: {}",
        run.stderr
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_names_the_input_line_that_failed() {
    let gateway = start_gateway_embedded(&["--max-record-bytes", "1000"]).await;
    let topic = gateway.topic("cli-txn-abort").await;
    // Batches of 5: line 7 is the gateway's "records[1] of the request with
    // batch_id 2", too large, refused before it reaches Kafka: the
    // transaction is aborted.
    let big = "x".repeat(2000);
    let lines: Vec<String> = (1..=8)
        .map(|i| match i {
            7 => format!(r#"{{"value":"{big}"}}"#),
            _ => format!(r#"{{"value":"v{i}"}}"#),
        })
        .collect();
    let target = gateway.addr.to_string();
    let run = produce(
        &[
            "--target",
            &target,
            "-t",
            &topic,
            "-f",
            "json",
            "--batch-records",
            "5",
            "--batch-linger-ms",
            "1000",
            "--transactional-id",
            "cli-abort",
            "--print-acks=text",
        ],
        lines.join("\n"),
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), 8, "{}", run.stdout);
    assert!(
        printed[6].starts_with("line 7: ERROR_CODE_") && !printed[6].contains("ABORTED"),
        "line 7 keeps its own error: {}",
        printed[6]
    );
    for (i, line) in printed.iter().enumerate().filter(|(i, _)| *i != 6) {
        assert!(
            line.starts_with(&format!("line {}: ERROR_CODE_ABORTED", i + 1))
                && line.contains("line 7 failed"),
            "the abort names input line 7: {line}"
        );
    }
    assert!(
        !run.stdout.contains("batch_id") && !run.stderr.contains("batch_id"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("0 transactions committed"),
        "{}",
        run.stderr
    );
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_input_that_looks_like_json_gets_one_warning() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-json-hint").await;
    let target = gateway.addr.to_string();
    let input = "\n{\"key\": \"k\", \"value\": \"v\"}\n{\"key\": \"k2\", \"value\": \"v2\"}\n";
    let run = produce(&["--target", &target, "-t", &topic], input).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("warning:").count(),
        1,
        "once: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 2 is a JSON object") && run.stderr.contains("use --format json"),
        "{}",
        run.stderr
    );
    for args in [
        vec!["--target", &target, "-t", &topic, "-f", "json"],
        vec!["--target", &target, "-t", &topic, "-q"],
    ] {
        let run = produce(&args, input).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(!run.stderr.contains("warning:"), "{args:?}: {}", run.stderr);
    }
    let run = produce(&["--target", &target, "-t", &topic], "plain\n{\"a\": 1}\n").await;
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipe_reports_a_true_rate() {
    let gateway = start_gateway(&[]).await;
    let topic = gateway.topic("cli-slow").await;
    let target = gateway.addr.to_string();
    let mut child = command(&["--target", &target, "-t", &topic], &[])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        stdin.write_all(b"slow\n").unwrap();
        std::thread::sleep(Duration::from_millis(2500));
    });
    let run = wait(child).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("1 record: 1 acked"), "{}", run.stderr);
    assert!(!run.stderr.contains("(0 records/s)"), "{}", run.stderr);
    assert!(run.stderr.contains("(0.4 records/s)"), "{}", run.stderr);
    gateway.stop().await.unwrap();
}
