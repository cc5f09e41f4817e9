//! The producers of transactional streams: one librdkafka producer per
//! transactional id ([`TxnSender`]), built with its transactions
//! initialized, whose records go in the transactions the stream's driver
//! begins, commits and aborts.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use crate::proto;

use super::super::{Completions, OutboundRecord, Sender, TrySendError, TxnError};
use super::{GatewayContext, GenerationState, KafkaSender, classify, enqueue, rejected};

impl KafkaSender {
    /// A producer of its own for the transactional id `id`, its
    /// transactions initialized: any transaction a previous producer with
    /// this id left open (a gateway that crashed, an older stream) is
    /// aborted, and that producer fenced. Blocks for up to `timeout`.
    pub fn transactional(
        self: &Arc<Self>,
        id: &str,
        timeout: Duration,
    ) -> Result<TxnSender, TxnError> {
        let mut config = self.config.clone();
        config
            .set("transactional.id", id)
            // The process-wide librdkafka metrics are the shared producer's.
            .set("statistics.interval.ms", "0");
        let state = Arc::new(GenerationState::default());
        let producer: ThreadedProducer<GatewayContext> = config
            .create_with_context(GatewayContext {
                metrics: self.metrics.clone(),
                check: Arc::new(Notify::new()),
                state: state.clone(),
            })
            .map_err(|err| txn_error(&err))?;
        producer
            .init_transactions(timeout)
            .map_err(|err| txn_error(&err))?;
        self.metrics.transactional_producers(1);
        Ok(TxnSender {
            id: id.to_owned(),
            producer: Arc::new(producer),
            state,
            main: self.clone(),
            timeout,
        })
    }
}

/// The producer of one transactional id: records go in its transactions.
/// librdkafka runs one transaction at a time per producer, so each
/// transactional stream has one of its own.
pub struct TxnSender {
    id: String,
    producer: Arc<ThreadedProducer<GatewayContext>>,
    state: Arc<GenerationState>,
    /// The shared producer's sender, which makes sure of topics.
    main: Arc<KafkaSender>,
    /// How long a commit or an abort may take.
    timeout: Duration,
}

impl TxnSender {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The producer failed for good (fenced, or a fatal error): it cannot
    /// run another transaction.
    pub fn is_dead(&self) -> bool {
        self.producer.client().fatal_error().is_some()
            || self.state.broken.get().is_some()
            || self.state.fatal.get().is_some()
    }

    /// Ends the producer, off the runtime (its destruction waits for its
    /// threads).
    pub fn close(self: Arc<Self>) {
        tokio::task::spawn_blocking(move || drop(self));
    }
}

impl Drop for TxnSender {
    fn drop(&mut self) {
        self.main.metrics.transactional_producers(-1);
    }
}

impl Sender for TxnSender {
    fn try_send(
        &self,
        record: &OutboundRecord,
        completions: &Arc<Completions>,
        seq: u64,
    ) -> Result<(), TrySendError> {
        match enqueue(&self.producer, record, completions, seq) {
            Ok(()) => Ok(()),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                Err(TrySendError::QueueFull)
            }
            Err(err) => Err(rejected(&err, record)),
        }
    }

    async fn ensure_topic(&self, topic: &str) -> Result<(), proto::RecordError> {
        self.main.ensure_topic(topic).await
    }

    fn transactional_id(&self) -> Option<&str> {
        Some(&self.id)
    }

    fn begin(&self) -> Result<(), TxnError> {
        self.producer
            .begin_transaction()
            .map_err(|err| txn_error(&err))
    }

    async fn commit(&self) -> Result<(), TxnError> {
        let (producer, timeout) = (self.producer.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            let Err(err) = producer.commit_transaction(timeout) else {
                return Ok(());
            };
            let mut error = txn_error(&err);
            if !error.fatal {
                // Not committed: abort, so that the producer can run the
                // next transaction. If even that fails, it cannot.
                if let Err(abort) = producer.abort_transaction(timeout) {
                    error.message = format!(
                        "{}; aborting it failed too: {}",
                        error.message,
                        txn_error(&abort).message
                    );
                    error.fatal = true;
                }
            }
            Err(error)
        })
        .await
        .unwrap_or_else(|err| Err(txn_panicked(&err)))
    }

    async fn abort(&self) -> Result<(), TxnError> {
        let (producer, timeout) = (self.producer.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            producer.abort_transaction(timeout).map_err(|err| {
                let mut error = txn_error(&err);
                // A producer that cannot abort cannot go on.
                error.fatal = true;
                error
            })
        })
        .await
        .unwrap_or_else(|err| Err(txn_panicked(&err)))
    }
}

/// A transaction call's error from librdkafka's.
fn txn_error(err: &KafkaError) -> TxnError {
    match err {
        KafkaError::Transaction(err) => TxnError {
            message: format!("{} ({})", err.string(), err.name()),
            retriable: err.is_retriable() || err.txn_requires_abort() || err.is_fatal(),
            fatal: err.is_fatal(),
        },
        other => TxnError {
            message: other.to_string(),
            retriable: true,
            fatal: other.rdkafka_error_code().is_some_and(classify::is_fatal),
        },
    }
}

fn txn_panicked(err: &tokio::task::JoinError) -> TxnError {
    TxnError {
        message: format!("the transaction call failed: {err}"),
        retriable: true,
        fatal: true,
    }
}
