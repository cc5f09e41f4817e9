//! What happened on one stream: counted by its driver and by its dead
//! letters, logged by the service when the stream ends.

/// What happened on one stream, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Batches read from the client.
    pub batches: u64,
    /// Records Kafka acknowledged.
    pub records_ok: u64,
    /// Records that got an error result (validation, enqueue or delivery).
    pub records_failed: u64,
    /// Of those, records parked in the dead-letter topic.
    pub records_dead_lettered: u64,
    /// Records read but never handed to Kafka because nobody was left to
    /// answer.
    pub records_abandoned: u64,
    /// The client went away before the stream ended.
    pub client_gone: bool,
    /// The client stopped reading its responses and the stream was ended.
    pub stalled: bool,
}
