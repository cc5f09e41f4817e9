//! The `kafka_gateway.v1.Producer` gRPC service: a thin shell that gives each
//! stream a task running [`produce::drive`] and returns its responses;
//! [`listener`], which accepts the connections it is served on; and the
//! layers a call passes through first: [`trace`] (its span) and [`auth`]
//! (who is calling). Each stream's reading is guarded by [`revocation`], so
//! that a reload that revokes its credential or grant ends it.

pub mod auth;
pub mod listener;
pub mod revocation;
pub mod trace;

use std::sync::Arc;

use tokio_stream::StreamExt;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StreamError;
use crate::limits::Reservations;
use crate::metrics::Metrics;
use crate::produce::transactions::Transactions;
use crate::produce::{
    self, Callers, Observers, ResponseStream, Stop, StreamLimits, Summary, kafka::KafkaSender,
};
use crate::proto::producer_server::{Producer, ProducerServer};
use crate::proto::{ProduceRequest, ProduceResponse};
use crate::shutdown;
use crate::telemetry::Tracing;

use listener::ConnInfo;
use revocation::Revocation;

/// Responses buffered per stream before the driver waits for the client to
/// read: small, because each one is a whole batch's acks.
const RESPONSE_BUFFER: usize = 16;

/// Shared by every stream.
pub struct ProducerService {
    /// The process's one producer.
    sender: Arc<KafkaSender>,
    limits: StreamLimits,
    /// Tells streams to stop reading and finish.
    shutdown: shutdown::Signal,
    /// Every stream's task, so shutdown can wait for the last in-flight
    /// record, even of a stream whose client already left.
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    tracing: Arc<Tracing>,
    /// What each caller is held to: policy, quotas, principal header.
    callers: Callers,
    /// The producers of transactional streams.
    transactions: Arc<Transactions>,
    /// Ends streams whose credential or grant a reload revoked.
    revocation: Option<Arc<Revocation>>,
}

impl ProducerService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sender: Arc<KafkaSender>,
        limits: StreamLimits,
        shutdown: shutdown::Signal,
        tasks: TaskTracker,
        metrics: Arc<Metrics>,
        tracing: Arc<Tracing>,
        callers: Callers,
        transactions: Arc<Transactions>,
    ) -> Self {
        Self {
            sender,
            limits,
            shutdown,
            tasks,
            metrics,
            tracing,
            callers,
            transactions,
            revocation: None,
        }
    }

    /// Ends open streams whose credential or transactional-id grant a
    /// reload revoked, and streams whose token expires.
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(Arc::new(revocation));
        self
    }

    /// The tonic server for this service, accepting batches of up to
    /// `max_batch_bytes` bytes, as sent or, when compressed (gzip or zstd),
    /// once decompressed: a small compressed message cannot expand past the
    /// limit (decompression stops there and the stream ends with
    /// RESOURCE_EXHAUSTED).
    pub fn into_server(self, max_batch_bytes: usize) -> ProducerServer<Self> {
        use tonic::codec::CompressionEncoding;
        ProducerServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(max_batch_bytes)
    }

    /// Starts a task driving one stream; its responses arrive on the returned
    /// stream. Its batches' spans are children of the call's span
    /// ([`trace::CallContext`] in `extensions`), or, without one, of the
    /// caller's context in `metadata`; `extensions` also carry the
    /// connection's facts and the reservations of the budget made for its
    /// messages.
    fn spawn_stream<In>(
        &self,
        kind: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
        inbound: In,
    ) -> Result<ResponseStream, Status>
    where
        In: tokio_stream::Stream<Item = Result<ProduceRequest, Status>> + Unpin + Send + 'static,
    {
        if self.shutdown.is_requested() {
            return Err(StreamError::ShuttingDown.into());
        }
        let age_deadline = extensions
            .get::<ConnInfo>()
            .and_then(|info| info.age_deadline);
        if age_deadline.is_some_and(|deadline| deadline <= tokio::time::Instant::now()) {
            return Err(StreamError::ConnectionAgeReached.into());
        }
        let reservations = extensions
            .get::<Reservations>()
            .cloned()
            .unwrap_or_default();
        let credential = extensions.get::<crate::auth::Credential>().cloned();
        let caller = self.callers.caller(auth::principal(extensions));
        let principal = caller.principal.as_ref().map(|p| p.name().to_owned());
        let (responder, responses) = produce::respond::channel(RESPONSE_BUFFER);
        let sender = self.sender.clone();
        let limits = self.limits.clone();
        let stop = Stop::new(self.shutdown.clone(), age_deadline);
        let observers = Observers {
            metrics: self.metrics.clone(),
            tracing: self.tracing.clone(),
            parent: match extensions.get::<trace::CallContext>() {
                Some(call) => call.context.clone(),
                None => self.tracing.extract(metadata),
            },
        };
        let (callers, transactions) = (self.callers.clone(), self.transactions.clone());
        let revocation = self.revocation.clone();
        let mut shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            // The first request says whether the stream is transactional.
            let mut inbound = inbound;
            let first = tokio::select! {
                first = inbound.next() => first,
                () = shutdown.requested() => {
                    responder.end(Some(StreamError::ShuttingDown.into()));
                    return;
                }
            };
            let id = match &first {
                Some(Ok(request)) if !request.transactional_id.is_empty() => {
                    Some(request.transactional_id.clone())
                }
                _ => None,
            };
            let inbound = tokio_stream::iter(first).chain(inbound);
            let inbound = match &revocation {
                Some(revocation) => {
                    revocation.guard(inbound, caller.principal.clone(), credential, id.clone())
                }
                None => Revocation::unguarded(inbound),
            };
            let summary = match id {
                None => {
                    produce::drive(
                        &*sender,
                        &limits,
                        inbound,
                        reservations,
                        responder,
                        stop,
                        caller,
                        &observers,
                    )
                    .await
                }
                Some(id) => {
                    if !callers.allows_transactional_id(caller.principal.as_ref(), &id) {
                        let who = caller.describe();
                        responder.end(Some(Status::permission_denied(format!(
                            "{who} may not use transactional id {id:?}: the gateway's \
                             --authz-policy grants it no such transactional_ids"
                        ))));
                        return;
                    }
                    let claim = match transactions.claim(&id).await {
                        Ok(claim) => claim,
                        Err(status) => {
                            responder.end(Some(status));
                            return;
                        }
                    };
                    let stop = stop.with_fence(claim.fenced.clone());
                    let summary = produce::drive(
                        &*claim.sender,
                        &limits,
                        inbound,
                        reservations,
                        responder,
                        stop,
                        caller,
                        &observers,
                    )
                    .await;
                    drop(claim);
                    summary
                }
            };
            log_summary(kind, principal.as_deref(), &summary);
        });
        Ok(responses)
    }
}

fn log_summary(kind: &'static str, principal: Option<&str>, summary: &Summary) {
    if summary.stalled {
        tracing::info!(
            kind,
            principal,
            batches = summary.batches,
            records_ok = summary.records_ok,
            records_failed = summary.records_failed,
            records_abandoned = summary.records_abandoned,
            "client stopped reading its responses: its in-flight records completed, unsent ones were dropped"
        );
        return;
    }
    if summary.client_gone {
        tracing::info!(
            kind,
            principal,
            batches = summary.batches,
            records_ok = summary.records_ok,
            records_failed = summary.records_failed,
            records_abandoned = summary.records_abandoned,
            "client left mid-stream: its in-flight records completed, unsent ones were dropped"
        );
        return;
    }
    tracing::debug!(
        kind,
        principal,
        batches = summary.batches,
        records_ok = summary.records_ok,
        records_failed = summary.records_failed,
        "stream ended"
    );
}

#[tonic::async_trait]
impl Producer for ProducerService {
    type ProduceStream = ResponseStream;

    async fn produce(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let (metadata, extensions, inbound) = request.into_parts();
        let responses = self.spawn_stream("stream", &metadata, &extensions, inbound)?;
        Ok(Response::new(responses))
    }

    async fn produce_batch(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        let inbound = tokio_stream::once(Ok(request));
        let mut responses = self.spawn_stream("unary", &metadata, &extensions, inbound)?;
        match responses.recv().await {
            Some(Ok(response)) => Ok(Response::new(response)),
            Some(Err(status)) => Err(status),
            None => Err(StreamError::ShuttingDown.into()),
        }
    }
}
