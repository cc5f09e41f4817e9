//! The producers of transactional streams: one librdkafka producer per
//! transactional id ([`TxnSender`]), built with its transactions
//! initialized, whose records go in the transactions the stream's driver
//! begins, commits and aborts.
//!
//! Every transactional call blocks (`init_transactions`, and even
//! `begin_transaction` waits for librdkafka's own thread), and so does
//! destroying a producer: each runs on the blocking pool, never on a tokio
//! worker. A call reports librdkafka's verdict as it is (retriable,
//! abortable, fatal); what to do next is the driver's decision.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use crate::proto;

use super::super::{Completions, OutboundRecord, Sender, TrySendError, TxnError, TxnErrorKind};
use super::{GatewayContext, GenerationState, KafkaSender, enqueue, rejected};

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
                transactional: true,
            })
            .map_err(|err| txn_error(&err))?;
        let producer = Arc::new(producer);
        // From here on, the producer is destroyed off the runtime whatever
        // happens.
        self.metrics.transactional_producers(1);
        let sender = TxnSender {
            id: id.to_owned(),
            producer: Some(producer.clone()),
            state,
            main: self.clone(),
        };
        producer
            .init_transactions(timeout)
            .map_err(|err| txn_error(&err))?;
        Ok(sender)
    }
}

/// The producer of one transactional id: records go in its transactions.
/// librdkafka runs one transaction at a time per producer, so each
/// transactional stream has one of its own.
pub struct TxnSender {
    id: String,
    /// Always set until dropped, when it is moved to the blocking pool.
    producer: Option<Arc<ThreadedProducer<GatewayContext>>>,
    state: Arc<GenerationState>,
    /// The shared producer's sender, which makes sure of topics.
    main: Arc<KafkaSender>,
}

impl TxnSender {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn producer(&self) -> &Arc<ThreadedProducer<GatewayContext>> {
        self.producer.as_ref().expect("set until dropped")
    }

    /// The producer failed for good (fenced, or a fatal error), or was
    /// retired: it cannot run another transaction.
    pub fn is_dead(&self) -> bool {
        self.producer().client().fatal_error().is_some()
            || self.state.broken.get().is_some()
            || self.state.fatal.get().is_some()
    }

    /// Runs `call` on the producer, on the blocking pool.
    async fn blocking(
        &self,
        call: impl FnOnce(&ThreadedProducer<GatewayContext>) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), TxnError> {
        let producer = self.producer().clone();
        tokio::task::spawn_blocking(move || call(&producer).map_err(|err| txn_error(&err)))
            .await
            .unwrap_or_else(|err| {
                Err(TxnError::new(
                    TxnErrorKind::Fatal,
                    format!("the transaction call failed: {err}"),
                ))
            })
    }
}

impl Drop for TxnSender {
    fn drop(&mut self) {
        self.main.metrics.transactional_producers(-1);
        if let Some(producer) = self.producer.take() {
            // Destroying a producer waits for its threads.
            off_the_runtime(move || drop(producer));
        }
    }
}

/// Runs `f` where blocking is allowed: on the blocking pool when called
/// within the runtime, here otherwise.
fn off_the_runtime(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(f)),
        Err(_) => f(),
    }
}

impl Sender for TxnSender {
    fn try_send(
        &self,
        record: &OutboundRecord,
        completions: &Arc<Completions>,
        seq: u64,
    ) -> Result<(), TrySendError> {
        match enqueue(self.producer(), record, completions, seq) {
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

    async fn begin(&self) -> Result<(), TxnError> {
        self.blocking(|producer| producer.begin_transaction()).await
    }

    async fn commit(&self, timeout: Duration) -> Result<(), TxnError> {
        self.blocking(move |producer| producer.commit_transaction(timeout))
            .await
    }

    async fn abort(&self, timeout: Duration) -> Result<(), TxnError> {
        self.blocking(move |producer| producer.abort_transaction(timeout))
            .await
    }

    fn retire(&self, cause: &str) {
        let _ = self.state.fatal.set(format!("retired: {cause}"));
    }
}

/// A transactional call's error from librdkafka's, sorted by what the
/// caller must do next.
fn txn_error(err: &KafkaError) -> TxnError {
    use RDKafkaErrorCode as K;
    let (message, code, fatal, abortable, retriable) = match err {
        KafkaError::Transaction(err) => (
            format!("{} ({})", err.string(), err.name()),
            Some(err.code()),
            err.is_fatal(),
            err.txn_requires_abort(),
            err.is_retriable(),
        ),
        KafkaError::ClientCreation(reason) => {
            return TxnError::new(
                TxnErrorKind::Misconfigured,
                format!(
                    "librdkafka refused the transactional producer's settings: {reason}; \
                     check the -X/--librdkafka-option settings"
                ),
            );
        }
        other => (
            other.to_string(),
            other.rdkafka_error_code(),
            false,
            false,
            false,
        ),
    };
    let kind = match code {
        Some(K::TransactionalIdAuthorizationFailed | K::ClusterAuthorizationFailed) => {
            TxnErrorKind::NotAuthorized
        }
        Some(
            K::UnsupportedFeature
            | K::UnsupportedVersion
            | K::InvalidTransactionTimeout
            | K::NotConfigured,
        ) => TxnErrorKind::Misconfigured,
        _ if fatal => TxnErrorKind::Fatal,
        _ if abortable => TxnErrorKind::Abortable,
        _ if retriable => TxnErrorKind::Retriable,
        // Anything else (a state librdkafka did not expect): the producer
        // is not where the gateway believes it is.
        _ => TxnErrorKind::Fatal,
    };
    TxnError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_setups_are_told_apart_from_passing_failures() {
        let kind = |err: KafkaError| txn_error(&err).kind;
        assert_eq!(
            kind(KafkaError::ClientCreation("bad".into())),
            TxnErrorKind::Misconfigured
        );
        assert_eq!(
            kind(KafkaError::Flush(
                RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            )),
            TxnErrorKind::NotAuthorized
        );
        assert_eq!(
            kind(KafkaError::Flush(RDKafkaErrorCode::UnsupportedFeature)),
            TxnErrorKind::Misconfigured
        );
        assert_eq!(
            kind(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)),
            TxnErrorKind::Fatal,
            "not a transactional error: nothing says it may be resumed"
        );
    }
}
