//! The strategies, each run in a child process: one task per stream, each
//! producing its share of the workload in order and tallying its acks.
//!
//! - `direct` and `gateway` share everything but the transport: the same
//!   paced request stream (batches of `--batch` records) goes into the
//!   gateway's stream driver [`drive`] in process, or over gRPC into a
//!   gateway, and the same reader times each batch's response;
//! - the seeds call `FutureProducer::send` per record, as most code starts:
//!   awaited one by one (`seed-sync`), spawned (`seed-spawn`), or pushed
//!   into a bounded `FuturesOrdered` (`seed-futures-ordered`).
//!
//! Every strategy connects its producer with one warm-up record to a topic
//! of its own before the clock starts.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::stream::{self, FuturesOrdered, Stream, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::health::Health;
use crate::limits::Reservations;
use crate::metrics::Metrics;
use crate::produce::kafka::KafkaSender;
use crate::produce::{
    Caller, Completions, Observers, OutboundRecord, Sender, Stop, drive, respond,
};
use crate::proto::producer_client::ProducerClient;
use crate::proto::{ProduceRequest, ProduceResponse, Record, record_result};
use crate::{Listeners, Tracing};

use super::measure::{Measured, Run, Tally};
use super::rss;
use super::workload::{self, Slot, Source, Workload};
use super::{Strategy, native};

/// How long `FutureProducer::send` retries a full queue before it fails the
/// record: long, as the seeds' authors would set it, so a full queue slows
/// them down instead of failing records.
const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);
/// Responses the in-process driver buffers per stream, as the gRPC service
/// does.
const RESPONSE_BUFFER: usize = 16;
/// Largest response a gateway stream may send the client.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Runs `workload` and measures it. `progress` counts answered records.
pub async fn run(workload: &Workload, progress: Arc<AtomicU64>) -> Result<Measured, String> {
    let config = gateway_config(workload)?;
    let run = Run::new(workload, progress);
    match workload.strategy {
        Strategy::Native => native::run(run, &config).await,
        Strategy::Direct => direct(run, &config).await,
        Strategy::Gateway => gateway(run, config).await,
        Strategy::SeedSync | Strategy::SeedSpawn | Strategy::SeedFuturesOrdered => {
            seed(run, &config).await
        }
    }
}

/// The gateway's options for this workload: the producer settings every
/// strategy shares.
fn gateway_args(workload: &Workload) -> Vec<String> {
    let mut args = vec![
        "--listen=127.0.0.1:0".to_owned(),
        format!("--bootstrap-servers={}", workload.bootstrap_servers),
        format!("--max-in-flight-records={}", workload.window),
        format!("--linger-ms={}", workload.linger_ms),
        format!("--compression={}", workload.compression),
    ];
    for option in &workload.librdkafka_options {
        args.push(format!("--librdkafka-option={option}"));
    }
    args
}

/// The gateway's configuration for this workload: also how the parent
/// checks the options before the first run.
pub(super) fn gateway_config(workload: &Workload) -> Result<Config, String> {
    let args = std::iter::once("kafka-gateway".to_owned()).chain(gateway_args(workload));
    let config = Config::try_parse_from(args).map_err(|err| err.to_string())?;
    config.validate().map_err(|err| match err {
        crate::Error::Config(message) => message,
        other => other.to_string(),
    })?;
    Ok(config)
}

/// Hand-offs of one stream's batches whose responses have not come yet.
type Sent = Arc<Mutex<VecDeque<Slot>>>;

/// One stream's requests, paced: each batch is built when the transport
/// asks for it, and its hand-off recorded in `sent`.
fn requests(
    run: &Run,
    source: Source,
    sent: Sent,
) -> impl Stream<Item = ProduceRequest> + Send + 'static {
    let (topic, value) = (run.topic.clone(), run.value.clone());
    stream::unfold(
        (source, sent, topic, value),
        |(mut source, sent, topic, value)| async move {
            let slot = source.next().await?;
            let request = workload::request(source.stream, &slot, &topic, &value);
            sent.lock().expect("not poisoned").push_back(slot);
            Some((request, (source, sent, topic, value)))
        },
    )
}

/// Reads one stream's responses, in order, timing each batch from its
/// hand-off and checking the acked offsets.
async fn read_responses<In>(run: &Run, mut responses: In, sent: Sent) -> Tally
where
    In: Stream<Item = Result<ProduceResponse, Status>> + Unpin,
{
    let mut tally = Tally::new();
    while let Some(response) = responses.next().await {
        let now = Instant::now();
        let response = match response {
            Ok(response) => response,
            Err(status) => {
                let lost: u64 = sent
                    .lock()
                    .expect("not poisoned")
                    .drain(..)
                    .map(|s| s.len as u64)
                    .sum();
                tally.failed(lost, || format!("stream ended: {status}"));
                run.answered(lost);
                break;
            }
        };
        let Some(slot) = sent.lock().expect("not poisoned").pop_front() else {
            tally.failed(response.results.len() as u64, || {
                format!(
                    "a response to batch {} that was never sent",
                    response.batch_id
                )
            });
            continue;
        };
        tally.handed += slot.len as u64;
        if response.batch_id != slot.first_seq || response.results.len() != slot.len {
            tally.failed(slot.len as u64, || {
                format!(
                    "response {} ({} results) where batch {} ({} records) was due",
                    response.batch_id,
                    response.results.len(),
                    slot.first_seq,
                    slot.len
                )
            });
            run.answered(slot.len as u64);
            continue;
        }
        let mut ok = 0;
        for result in &response.results {
            match &result.result {
                Some(record_result::Result::Ok(meta)) => {
                    ok += 1;
                    tally.ack(meta.partition, meta.offset);
                }
                Some(record_result::Result::Error(error)) => {
                    tally.failed(1, || format!("{:?}: {}", error.code(), error.message));
                }
                None => tally.failed(1, || "an empty result".to_owned()),
            }
        }
        tally.latency(now - slot.handoff, ok);
        run.answered(slot.len as u64);
    }
    let unanswered: Vec<Slot> = sent.lock().expect("not poisoned").drain(..).collect();
    for slot in unanswered {
        tally.handed += slot.len as u64;
        tally.failed(slot.len as u64, || {
            "the stream ended without answering".to_owned()
        });
        run.answered(slot.len as u64);
    }
    tally
}

/// `direct`: the gateway's stream driver over the shared producer, fed in
/// process.
async fn direct(run: Run, config: &Config) -> Result<Measured, String> {
    let sender = Arc::new(
        KafkaSender::new(
            &config.client_config(&run.workload.bootstrap_servers),
            None,
            Arc::new(Metrics::new()),
            Health::new(),
        )
        .map_err(|err| err.to_string())?,
    );
    let warmup = OutboundRecord {
        topic: Arc::from(run.workload.warmup_topic.as_str()),
        key: None,
        value: Some(Bytes::from_static(b"warm-up")),
        headers: Vec::new(),
        partition: Some(0),
        timestamp_ms: None,
        size: 7,
        trace_headers: None,
        stamp: None,
    };
    let completions = Arc::new(Completions::new());
    if let Err(err) = sender.try_send(&warmup, &completions, 0) {
        return Err(format!("warm-up record refused: {err:?}"));
    }
    for (_, outcome) in completions.next().await {
        outcome.map_err(|err| format!("warm-up record failed: {}", err.message))?;
    }
    let limits = config.stream_limits();
    run.streams(|stream, start| {
        let (run, sender, limits) = (run.clone(), sender.clone(), limits.clone());
        async move {
            let sent = Sent::default();
            let inbound = Box::pin(requests(&run, run.source(stream, start), sent.clone()).map(Ok));
            let (responder, responses) = respond::channel(RESPONSE_BUFFER);
            let observers = Observers::none();
            let driver = drive(
                &*sender,
                &limits,
                inbound,
                Reservations::default(),
                responder,
                Stop::never(),
                Caller::anonymous(),
                &observers,
            );
            let reader = read_responses(&run, responses, sent);
            let (_, tally) = tokio::join!(driver, reader);
            tally
        }
    })
    .await
}

/// `gateway`: gRPC streams into a gateway, in process unless `--target`.
async fn gateway(run: Run, config: Config) -> Result<Measured, String> {
    let (server, addr) = match &run.workload.target {
        Some(target) => (Server::Elsewhere, target.clone()),
        None if run.workload.gateway_process => {
            let (child, addr) = spawn_gateway(&gateway_args(&run.workload))?;
            (Server::Process(child), addr)
        }
        None => {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|err| format!("cannot listen on loopback: {err}"))?;
            let addr = listener.local_addr().map_err(|err| err.to_string())?;
            let listeners = Listeners {
                grpc: listener,
                metrics: None,
            };
            let (stop, stopped) = oneshot::channel::<()>();
            let stopped = async move {
                let _ = stopped.await;
            };
            let task = tokio::spawn(crate::run(
                listeners,
                config,
                None,
                Tracing::disabled(),
                stopped,
            ));
            (Server::InProcess(stop, task), addr.to_string())
        }
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| format!("bad gateway address {addr}: {err}"))?
        .tcp_nodelay(true);
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..run.workload.connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|err| format!("cannot connect to the gateway at {addr}: {err}"))?,
        );
    }
    let client = |stream: usize| {
        ProducerClient::new(channels[stream % channels.len()].clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    };
    let warmup = ProduceRequest {
        batch_id: 0,
        topic: run.workload.warmup_topic.clone(),
        records: vec![Record {
            value: Some(Bytes::from_static(b"warm-up")),
            partition: Some(0),
            ..Record::default()
        }],
        compact_acks: false,
        skip_dead_letter: false,
        transactional_id: String::new(),
        commit: false,
    };
    let response = client(0)
        .produce_batch(warmup)
        .await
        .map_err(|status| format!("warm-up batch failed: {status}"))?
        .into_inner();
    if let Some(record_result::Result::Error(error)) =
        response.results.first().and_then(|r| r.result.as_ref())
    {
        return Err(format!("warm-up record failed: {}", error.message));
    }

    let gateway_pid = match &server {
        Server::Process(child) => Some(child.id()),
        _ => None,
    };
    let measured = run
        .streams_watching(gateway_pid, |stream, start| {
            let (run, mut client) = (run.clone(), client(stream));
            async move {
                let sent = Sent::default();
                let requests = requests(&run, run.source(stream, start), sent.clone());
                match client.produce(requests).await {
                    Ok(response) => read_responses(&run, response.into_inner(), sent).await,
                    Err(status) => {
                        let stream_failed = stream::iter([Err(status)]);
                        read_responses(&run, stream_failed, sent).await
                    }
                }
            }
        })
        .await;
    drop(channels);
    let mut measured = measured?;
    match server {
        Server::Elsewhere => {}
        Server::InProcess(stop, task) => {
            let _ = stop.send(());
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(format!("the in-process gateway failed: {err}")),
                Err(err) => return Err(format!("the in-process gateway panicked: {err}")),
            }
        }
        Server::Process(mut child) => {
            // Every record was answered: nothing is lost by not draining.
            measured.gateway_peak_rss_bytes = rss::peak_bytes_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    Ok(measured)
}

/// Where the `gateway` strategy's gateway runs.
enum Server {
    /// `--target`: someone else's.
    Elsewhere,
    /// In this process, stopped through the sender.
    InProcess(
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), crate::Error>>,
    ),
    /// `--gateway-process`: `kafka-gateway serve`, a child of this process.
    Process(std::process::Child),
}

/// Starts `kafka-gateway serve ARGS` and returns it with the address it
/// logged.
pub fn spawn_gateway(args: &[String]) -> Result<(std::process::Child, String), String> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().map_err(|err| format!("cannot find this binary: {err}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start a gateway process: {err}"))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("gRPC server listening") {
                let _ = tx.send(line);
            } else if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("gateway process: {line}");
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the gateway process did not start serving within 30 s".into());
        }
    };
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .ok_or_else(|| format!("no address in the gateway's log line {line:?}"))?;
    Ok((child, addr.to_owned()))
}

/// The seeds: `FutureProducer::send` per record.
async fn seed(run: Run, config: &Config) -> Result<Measured, String> {
    let producer: FutureProducer = config
        .client_config(&run.workload.bootstrap_servers)
        .create()
        .map_err(|err| format!("cannot create the producer: {err}"))?;
    let warmup = FutureRecord::<(), _>::to(&run.workload.warmup_topic)
        .payload("warm-up")
        .partition(0);
    producer
        .send(warmup, SEND_QUEUE_TIMEOUT)
        .await
        .map_err(|(err, _)| format!("warm-up record failed: {err}"))?;
    let producer = Arc::new(producer);
    let strategy = run.workload.strategy;
    run.streams(|stream, start| {
        let (run, producer) = (run.clone(), producer.clone());
        let source = run.source(stream, start);
        async move {
            match strategy {
                Strategy::SeedSync => seed_sync(&run, &producer, source).await,
                Strategy::SeedSpawn => seed_spawn(&run, &producer, source).await,
                _ => seed_futures_ordered(&run, &producer, source).await,
            }
        }
    })
    .await
}

/// Sends one record with `FutureProducer::send`: enqueued when first polled,
/// retried every 100 ms while librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    stream: u32,
    seq: u64,
    value: &[u8],
) -> SendResult {
    let key = workload::key(stream, seq);
    producer
        .send(
            FutureRecord::to(topic).key(&key[..]).payload(value),
            SEND_QUEUE_TIMEOUT,
        )
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(err, _)| err.to_string())
}

impl Tally {
    /// One record's outcome, in send order.
    fn record(&mut self, run: &Run, handoff: Instant, done: Instant, result: SendResult) {
        match result {
            Ok((partition, offset)) => {
                self.latency(done - handoff, 1);
                self.ack(partition, offset);
            }
            Err(err) => self.failed(1, || err),
        }
        run.answered(1);
    }
}

/// Where Kafka stored a record, or why not.
type SendResult = Result<(i32, i64), String>;
/// A spawned send: its hand-off, when it completed, and its outcome.
type SendTask = tokio::task::JoinHandle<(Instant, Instant, SendResult)>;

/// `seed-sync`: one record at a time.
async fn seed_sync(run: &Run, producer: &FutureProducer, mut source: Source) -> Tally {
    let mut tally = Tally::new();
    while let Some(slot) = source.next().await {
        tally.handed += slot.len as u64;
        for seq in slot.first_seq..slot.first_seq + slot.len as u64 {
            let start = run.handoff(&slot);
            let result = send(producer, &run.topic, source.stream, seq, &run.value).await;
            tally.record(run, start, Instant::now(), result);
        }
    }
    tally
}

/// `seed-spawn`: a task per record; results read in send order.
async fn seed_spawn(run: &Run, producer: &Arc<FutureProducer>, mut source: Source) -> Tally {
    let mut tally = Tally::new();
    let mut tasks = VecDeque::new();
    let stream = source.stream;
    while let Some(slot) = source.next().await {
        tally.handed += slot.len as u64;
        for seq in slot.first_seq..slot.first_seq + slot.len as u64 {
            let start = run.handoff(&slot);
            let (producer, topic, value) = (producer.clone(), run.topic.clone(), run.value.clone());
            tasks.push_back(tokio::spawn(async move {
                let result = send(&producer, &topic, stream, seq, &value).await;
                (start, Instant::now(), result)
            }));
        }
        while tasks
            .front()
            .is_some_and(|task: &SendTask| task.is_finished())
        {
            let task = tasks.pop_front().expect("a front task");
            collect(run, &mut tally, task).await;
        }
    }
    while let Some(task) = tasks.pop_front() {
        collect(run, &mut tally, task).await;
    }
    tally
}

async fn collect(run: &Run, tally: &mut Tally, task: SendTask) {
    match task.await {
        Ok((start, done, result)) => tally.record(run, start, done, result),
        Err(err) => {
            tally.failed(1, || format!("send task failed: {err}"));
            run.answered(1);
        }
    }
}

/// `seed-futures-ordered`: at most `--window` send futures per stream in a
/// `FuturesOrdered`, results taken in order.
async fn seed_futures_ordered(run: &Run, producer: &FutureProducer, mut source: Source) -> Tally {
    let mut tally = Tally::new();
    let mut in_flight = FuturesOrdered::new();
    let stream = source.stream;
    let window = run.workload.window;
    let send_one = |seq: u64, start: Instant| async move {
        let result = send(producer, &run.topic, stream, seq, &run.value).await;
        (start, result)
    };
    loop {
        let due = source.due();
        if due.is_none() && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((start, result)) = in_flight.next(), if !in_flight.is_empty() => {
                tally.record(run, start, Instant::now(), result);
            }
            () = until(due), if due.is_some() && in_flight.len() < window => {
                let slot = source.take(due.expect("due"));
                tally.handed += slot.len as u64;
                for seq in slot.first_seq..slot.first_seq + slot.len as u64 {
                    while in_flight.len() >= window {
                        let (start, result) = in_flight.next().await.expect("not empty");
                        tally.record(run, start, Instant::now(), result);
                    }
                    in_flight.push_back(send_one(seq, run.handoff(&slot)));
                }
            }
        }
    }
    tally
}

/// Sleeps until `due`, if it is later than now.
async fn until(due: Option<Instant>) {
    if let Some(due) = due
        && due > Instant::now()
    {
        tokio::time::sleep_until(due.into()).await;
    }
}
