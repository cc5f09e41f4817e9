//! kafka-gateway: a gRPC front door to Apache Kafka.
//!
//! A client opens a `kafka_gateway.v1.Producer/Produce` stream and sends
//! batches of records; it gets back one response per batch, in order, with
//! one result per record: where Kafka stored it, or why it did not.
//!
//! The table of contents, in the order a call meets them:
//! - [`server`]: binds, serves, drains ([`run`]);
//! - [`grpc::listener`]: accepts connections; [`limits`]: the caps on
//!   connections, calls and the bytes of unanswered batches;
//! - [`grpc`]: the tonic service; one task per stream;
//! - [`produce::validate`]: a bad record gets its own error and is never sent;
//! - [`produce::stream`], [`produce::window`] and [`produce::respond`]: the
//!   ordered send window. Records are handed to librdkafka strictly in stream
//!   order, at most N records and B bytes per stream in flight, and acks are
//!   released in order. A full window or a full librdkafka queue stops the
//!   reading of the stream, so HTTP/2 flow control pushes back on the client;
//! - [`produce::kafka`]: the one shared librdkafka producer;
//! - [`embedded`]: an in-memory broker for running without Kafka;
//! - [`rdlog`]: librdkafka's log, once per message, outages in one line;
//! - [`shutdown`]: stop reading, answer what was read, flush.
//!
//! Seeing through it: [`telemetry`] (a span per batch), [`metrics`],
//! [`health`], and [`admin`], the HTTP listener serving the last two.
//! Configuration: [`config`] (what is on is logged at start-up by
//! [`frontdoor`]); errors and their gRPC statuses: [`error`].
//!
//! The other side of the wire: `client`, the `produce` command, which
//! streams lines of stdin through a running gateway (cargo feature
//! `client`).
//!
//! Measuring it: `bench`, the `kafka-gateway bench` subcommand (cargo
//! feature `bench`). Both features are on by default; a server built
//! without them links neither.

#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod config;
pub mod embedded;
pub mod error;
pub mod frontdoor;
pub mod grpc;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod produce;
pub mod rdlog;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod units;

/// The generated protobuf and gRPC types of `kafka_gateway.v1`.
pub mod proto {
    tonic::include_proto!("kafka_gateway.v1");

    /// The encoded descriptor set of the proto files, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/kafka_gateway_descriptor.bin"));
}

pub use config::Config;
pub use embedded::EmbeddedBroker;
pub use error::Error;
pub use server::{Listeners, run};
pub use telemetry::Tracing;
