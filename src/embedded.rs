//! The embedded broker: librdkafka's mock cluster, a real Kafka-protocol
//! broker on loopback TCP that keeps everything in memory.
//!
//! It lets `kafka-gateway serve` run with no Kafka at all, and gives the
//! tests a broker they can inject errors into. The mock cluster is `!Send`,
//! so it lives on a thread of its own and is driven through a job queue.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;

use crate::error::Error;

/// The mock cluster type the jobs receive.
pub type Cluster = MockCluster<'static, DefaultProducerContext>;

type Job = Box<dyn FnOnce(&Cluster) + Send>;

/// A running embedded broker. Dropping it stops the broker.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    /// Partition count of topics created on first use.
    default_partitions: i32,
    /// Replication factor of created topics: at most the broker count.
    replication_factor: i32,
    /// Feeds the broker thread; `None` once dropping.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers whose topics, when created
    /// through [`EmbeddedBroker::ensure_topic`], get `default_partitions`
    /// partitions.
    pub fn start(brokers: i32, default_partitions: i32) -> Result<Self, Error> {
        let (ready_tx, ready_rx) = mpsc::channel::<KafkaResult<String>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(job) = jobs_rx.recv() {
                    job(&cluster);
                }
            })?;
        let bootstrap_servers = match ready_rx.recv() {
            Ok(Ok(servers)) => servers,
            Ok(Err(err)) => return Err(Error::EmbeddedBroker(err.to_string())),
            Err(_) => return Err(Error::EmbeddedBroker("the broker thread died".into())),
        };
        Ok(Self {
            bootstrap_servers,
            default_partitions,
            replication_factor: brokers.min(3),
            jobs: Some(jobs_tx),
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` list for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Runs `job` on the broker thread and returns its result: the way to
    /// create topics, inject errors or take brokers down.
    pub async fn with<R, F>(&self, job: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&Cluster) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .as_ref()
            .expect("the broker is running")
            .send(Box::new(move |cluster| {
                let _ = tx.send(job(cluster));
            }))
            .expect("the broker thread is running");
        rx.await.expect("the broker thread runs every job")
    }

    /// Creates a topic; fails if it exists.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> KafkaResult<()> {
        let topic = topic.to_owned();
        let replication_factor = self.replication_factor;
        self.with(move |cluster| cluster.create_topic(&topic, partitions, replication_factor))
            .await
    }

    /// Creates a topic with the default partition count unless it exists.
    pub async fn ensure_topic(&self, topic: &str) -> KafkaResult<()> {
        match self.create_topic(topic, self.default_partitions).await {
            Err(KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists)) => Ok(()),
            other => other,
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop, which drops the cluster.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
