//! The admission options that keep callers who prove nothing, or one
//! principal, from taking what everyone else needs: how long a new
//! connection may stay silent, how many connections may wait unproven, how
//! many health and reflection streams may be open and for how long without
//! credentials, and each principal's share of the stream and connection
//! caps.
//!
//! Flattened into [`crate::config::Config`]; every option is a flag and a
//! `KAFKA_GATEWAY_*` variable.

use std::time::Duration;

use clap::Args;

use crate::units::parse_duration;

/// How long a new connection has to finish its handshakes (TLS, when on,
/// then the HTTP/2 preface): ample over any real network, and what a
/// silent socket can hold at most.
pub const DEFAULT_HANDSHAKE_TIMEOUT: &str = "10s";
/// Connections that have not yet made a Produce or ProduceBatch call (with
/// authentication on, an authenticated one). A new connection beyond this
/// closes the oldest of them, so idle sockets cannot keep a client out.
pub const DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS: usize = 256;
/// Concurrent gRPC health `Watch` and reflection streams: tools and probes
/// need a handful; they never take a `--max-streams` slot.
pub const DEFAULT_MAX_PROBE_STREAMS: usize = 100;
/// How long a health `Watch` or reflection stream made without credentials
/// may stay open: enough for any tool, too short to hoard.
pub const DEFAULT_UNAUTHENTICATED_STREAM_TIMEOUT: &str = "30s";
/// Concurrent calls of one principal: half of the default `--max-streams`,
/// so one principal can never take every slot.
pub const DEFAULT_MAX_STREAMS_PER_PRINCIPAL: usize = 5_000;
/// Connections of one principal: half of the default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_PRINCIPAL: usize = 512;

/// Admission: what an unauthenticated caller, and each principal, may hold.
#[derive(Debug, Clone, Copy, Args)]
#[command(next_help_heading = "Admission")]
pub struct AdmissionArgs {
    /// How long a new connection may take to finish its TLS handshake (when
    /// TLS is on) and send the HTTP/2 preface; a connection silent for
    /// longer is closed. Applies to plaintext listeners too.
    #[arg(long, env = "KAFKA_GATEWAY_HANDSHAKE_TIMEOUT", value_name = "DURATION",
          default_value = DEFAULT_HANDSHAKE_TIMEOUT, value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Connections that have not yet made a Produce or ProduceBatch call
    /// (an authenticated one, with authentication on). They do not count
    /// against --max-connections; over this cap the oldest of them is
    /// closed to make room, so idle or unauthenticated sockets cannot keep
    /// a client out, even from one address.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_UNAUTHENTICATED_CONNECTIONS",
          default_value_t = DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS, value_parser = parse_positive)]
    pub max_unauthenticated_connections: usize,

    /// Concurrent gRPC health Watch and reflection streams. They never
    /// count against --max-streams; one more gets RESOURCE_EXHAUSTED
    /// naming this option. Health Check (unary) is never refused.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_PROBE_STREAMS",
          default_value_t = DEFAULT_MAX_PROBE_STREAMS, value_parser = parse_positive)]
    pub max_probe_streams: usize,

    /// How long a health Watch or reflection stream without credentials
    /// may last; it then ends UNAVAILABLE and may be made again.
    #[arg(long, env = "KAFKA_GATEWAY_UNAUTHENTICATED_STREAM_TIMEOUT", value_name = "DURATION",
          default_value = DEFAULT_UNAUTHENTICATED_STREAM_TIMEOUT, value_parser = parse_duration)]
    pub unauthenticated_stream_timeout: Duration,

    /// Concurrent calls of one authenticated principal, over all its
    /// connections; one more gets RESOURCE_EXHAUSTED naming this option.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_STREAMS_PER_PRINCIPAL",
          default_value_t = DEFAULT_MAX_STREAMS_PER_PRINCIPAL, value_parser = parse_positive)]
    pub max_streams_per_principal: usize,

    /// Connections of one authenticated principal (a connection counts for
    /// the principal of its first Produce or ProduceBatch call); a call
    /// that would open one more gets RESOURCE_EXHAUSTED naming this option.
    #[arg(long, env = "KAFKA_GATEWAY_MAX_CONNECTIONS_PER_PRINCIPAL",
          default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PRINCIPAL, value_parser = parse_positive)]
    pub max_connections_per_principal: usize,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        admission: AdmissionArgs,
    }

    #[test]
    fn defaults_and_bounds() {
        let args = Cli::try_parse_from(["serve"]).unwrap().admission;
        assert_eq!(args.handshake_timeout, Duration::from_secs(10));
        assert_eq!(args.max_unauthenticated_connections, 256);
        assert_eq!(args.max_probe_streams, 100);
        assert_eq!(args.unauthenticated_stream_timeout, Duration::from_secs(30));
        assert_eq!(args.max_streams_per_principal, 5_000);
        assert_eq!(args.max_connections_per_principal, 512);
        assert!(Cli::try_parse_from(["serve", "--max-streams-per-principal", "0"]).is_err());
        let set = Cli::try_parse_from(["serve", "--handshake-timeout", "2s"])
            .unwrap()
            .admission;
        assert_eq!(set.handshake_timeout, Duration::from_secs(2));
    }
}
