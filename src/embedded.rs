//! The embedded broker: librdkafka's mock cluster, a real Kafka-protocol
//! broker on loopback TCP that keeps everything in memory.
//!
//! It lets `kafka-gateway serve` run with no Kafka at all, and gives the
//! tests a broker they can inject errors into. The mock cluster is `!Send`,
//! so it lives on a thread of its own and is driven through a job queue.
//!
//! librdkafka binds the mock brokers to free ports, a new one on every
//! start. [`EmbeddedBroker::forward`] gives it a fixed address as well
//! (`serve` asks for `127.0.0.1:9092`): connections there are relayed to the
//! first broker, so a client bootstraps at an address that survives
//! restarts (the metadata it gets names the brokers' own loopback ports,
//! which it then reaches directly).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
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
    /// The fixed address's relay, when [`EmbeddedBroker::forward`] set one:
    /// its address and its stop flag.
    relay: Option<(SocketAddr, Arc<AtomicBool>)>,
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
            relay: None,
        })
    }

    /// Makes the broker reachable at `addr` too, and the bootstrap address
    /// `addr`: connections there are relayed to the first broker. Fails,
    /// changing nothing, when `addr` cannot be bound (taken, say). Port 0
    /// keeps the broker's own address.
    pub fn forward(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        if addr.port() == 0 {
            return self.first_broker();
        }
        let target = self.first_broker()?;
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("embedded-relay".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let _ = relay(client, target);
                }
            })?;
        self.relay = Some((bound, stop));
        self.bootstrap_servers = bound.to_string();
        Ok(bound)
    }

    /// The first broker's own address.
    fn first_broker(&self) -> io::Result<SocketAddr> {
        let first = self.bootstrap_servers.split(',').next().unwrap_or_default();
        first
            .parse()
            .map_err(|_| io::Error::other(format!("not an address: {first}")))
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
        if let Some((addr, stop)) = self.relay.take() {
            stop.store(true, Ordering::Relaxed);
            // Wakes the relay's accept so that it sees the flag.
            let _ = TcpStream::connect(addr);
        }
        // Closing the queue ends the thread's loop, which drops the cluster.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Relays one connection to `target`, a thread per direction.
fn relay(client: TcpStream, target: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(target)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        std::thread::Builder::new()
            .name("embedded-relay-io".into())
            .spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
                let _ = from.shutdown(Shutdown::Read);
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_taken_address_is_refused_and_changes_nothing() {
        let mut broker = EmbeddedBroker::start(1, 1).unwrap();
        let own = broker.bootstrap_servers().to_owned();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(broker.forward(taken.local_addr().unwrap()).is_err());
        assert_eq!(broker.bootstrap_servers(), own);
        // Port 0: the broker's own address.
        assert_eq!(
            broker
                .forward("127.0.0.1:0".parse().unwrap())
                .unwrap()
                .to_string(),
            own
        );
    }

    #[test]
    fn the_fixed_address_relays_to_the_broker() {
        let mut broker = EmbeddedBroker::start(1, 1).unwrap();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let addr = broker.forward(free).unwrap();
        assert_eq!(broker.bootstrap_servers(), addr.to_string());
        // An ApiVersions request (v0, correlation id 7): the broker answers
        // through the relay with the same correlation id.
        let mut conn = TcpStream::connect(addr).unwrap();
        let request: &[u8] = &[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0];
        conn.write_all(request).unwrap();
        let mut head = [0u8; 8];
        conn.read_exact(&mut head).unwrap();
        assert_eq!(&head[4..8], &[0, 0, 0, 7], "{head:?}");
    }
}
