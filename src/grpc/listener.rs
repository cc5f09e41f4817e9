//! Accepting and serving connections: TCP options, the connection cap, each
//! connection's age, and what every call can learn about its connection
//! ([`ConnInfo`], in the request's extensions).
//!
//! Each connection is served by hyper's HTTP/2 server in a task of its own,
//! which also retires it:
//! - at `--max-connection-age` (give or take 10%, so that connections opened
//!   together do not all reconnect together), HTTP/2 GOAWAY tells the client
//!   to open its next streams elsewhere, and the connection's streams stop
//!   reading, answer what they read and end with UNAVAILABLE (see
//!   [`crate::produce::Stop`]); after `--max-connection-age-grace` the
//!   connection is closed, whatever is left on it;
//! - at shutdown, every connection gets GOAWAY and closes once its streams
//!   have drained, or when the server gives up waiting.
//!
//! A connection over `--max-connections` is still served, but only so that
//! each of its calls gets `RESOURCE_EXHAUSTED` naming the flag (a reset
//! connection would tell the client nothing); it is retired after
//! [`REFUSED_LINGER`], and at most [`MAX_REFUSED_ALIVE`] such connections are
//! kept at once: beyond that they are closed at once.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tower_service::Service;

use crate::auth::{Principal, TlsState};
use crate::limits::{Admission, Slot};

/// How long a connection over the cap stays open to refuse its calls.
pub const REFUSED_LINGER: Duration = Duration::from_secs(5);
/// Connections over the cap kept open at once to refuse their calls.
pub const MAX_REFUSED_ALIVE: usize = 64;
/// How much a connection's maximum age varies either way, as a fraction.
const AGE_JITTER: f64 = 0.1;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// TCP keepalive: finds peers that vanished without closing.
    pub tcp_keepalive: Duration,
    /// HTTP/2 PING interval and timeout.
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams_per_connection: u32,
    /// When a connection is retired, if ever (before jitter).
    pub max_age: Option<Duration>,
    /// How long a retired connection may stay open.
    pub max_age_grace: Duration,
}

/// What a call can learn about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Unique in this process, for logs.
    pub id: u64,
    pub remote: Option<SocketAddr>,
    /// When the connection is retired: its streams stop reading then and
    /// end with UNAVAILABLE.
    pub age_deadline: Option<Instant>,
    /// Set on a connection over `--max-connections`: every call on it is
    /// refused with this message.
    pub refused: Option<Arc<str>>,
    /// The principal of the client certificate verified in the TLS
    /// handshake, with `--tls-client-ca`.
    pub peer: Option<Principal>,
}

/// The two signals that end serving: `drain` retires every connection
/// gracefully, `force` closes them at once.
#[derive(Clone, Default)]
pub struct Stopping {
    pub drain: CancellationToken,
    pub force: CancellationToken,
}

/// Accepts connections on `listener` and serves `service` on each (over
/// TLS when `tls` is given: the handshake runs in the connection's own task,
/// bounded in time, so a client that stalls in it holds up nobody) until
/// `stopping.drain` fires; then stops accepting (closing the socket),
/// retires every connection and returns once all are closed (or at once
/// when `stopping.force` fires).
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsState>,
    service: S,
    admission: Arc<Admission>,
    options: ConnOptions,
    stopping: Stopping,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_streams_per_connection)
        .keep_alive_interval(options.http2_keepalive_interval)
        .keep_alive_timeout(options.http2_keepalive_timeout);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let refused_alive = Arc::new(AtomicUsize::new(0));
    // The second of the last handshake failure logged.
    let last_logged = Arc::new(AtomicU64::new(0));
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping.drain.cancelled() => break,
        };
        let (io, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather
                // than spin.
                tracing::warn!(%err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(err) = configure(&io, options.tcp_keepalive) {
            tracing::debug!(%err, %remote, "cannot set TCP options");
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let (slot, refused, retire_at) = match admission.connections.try_take() {
            Ok(slot) => {
                let age = options.max_age.map(|age| now + jittered(age, id));
                (Some(slot), None, age)
            }
            Err(message) => {
                let Some(guard) = RefusedGuard::take(&refused_alive) else {
                    tracing::debug!(%remote, "over --max-connections: closed at once");
                    continue;
                };
                tracing::debug!(%remote, "over --max-connections: refusing its calls");
                (None, Some((guard, message)), Some(now + REFUSED_LINGER))
            }
        };
        let (refused_guard, refused_message) = match refused {
            Some((guard, message)) => (Some(guard), Some(Arc::from(message))),
            None => (None, None),
        };
        let mut info = ConnInfo {
            id,
            remote: Some(remote),
            age_deadline: retire_at,
            refused: refused_message,
            peer: None,
        };
        let conn = Conn {
            io,
            _slot: slot,
            _refused: refused_guard,
        };
        let grace = if info.refused.is_some() {
            Duration::from_secs(1)
        } else {
            options.max_age_grace
        };
        let (service, builder, stopping, tls) = (
            service.clone(),
            builder.clone(),
            stopping.clone(),
            tls.clone(),
        );
        let (tls_failures, last_logged) = (admission.tls_failures.clone(), last_logged.clone());
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(conn, info, service, builder, grace, stopping).await;
            };
            let accepted = tokio::select! {
                accepted = tls.accept(conn) => accepted,
                () = stopping.force.cancelled() => return,
            };
            match accepted {
                Ok(stream) => {
                    info.peer = stream.principal().cloned();
                    serve_connection(stream, info, service, builder, grace, stopping).await;
                }
                Err(err) => {
                    tls_failures.inc();
                    // At most one a second: a scan must not flood the log.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    if last_logged.swap(now, Ordering::Relaxed) != now {
                        tracing::info!(
                            %err,
                            %remote,
                            "TLS handshake failed (further failures this second are only counted)"
                        );
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = stopping.force.cancelled() => {}
    }
}

/// Serves one connection until it closes, is retired, or the server stops.
async fn serve_connection<IO, S>(
    conn: IO,
    info: ConnInfo,
    service: S,
    builder: Arc<http2::Builder<TokioExecutor>>,
    grace: Duration,
    stopping: Stopping,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let id = info.id;
    let retire_at = info.age_deadline;
    let service = ConnService {
        inner: service,
        info,
    };
    let mut connection = pin!(builder.serve_connection(TokioIo::new(conn), service));
    let mut retiring = false;
    let mut close_at: Option<Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(connection = id, %err, "connection ended with an error");
                }
                return;
            }
            () = async { tokio::time::sleep_until(retire_at.expect("set")).await },
                if retire_at.is_some() && !retiring =>
            {
                tracing::debug!(connection = id, "maximum age reached: GOAWAY");
                connection.as_mut().graceful_shutdown();
                retiring = true;
                close_at = Some(Instant::now() + grace);
            }
            () = async { tokio::time::sleep_until(close_at.expect("set")).await },
                if close_at.is_some() =>
            {
                tracing::debug!(connection = id, "grace period over: closing the connection");
                return;
            }
            () = stopping.drain.cancelled(), if !retiring => {
                connection.as_mut().graceful_shutdown();
                retiring = true;
            }
            () = stopping.force.cancelled() => return,
        }
    }
}

/// `age` varied by up to [`AGE_JITTER`] either way, decided by the
/// connection's id and the clock.
fn jittered(age: Duration, id: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // splitmix64: well spread even for consecutive ids.
    let mut x = id ^ (u64::from(nanos) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let unit = (x >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    age.mul_f64(1.0 - AGE_JITTER + 2.0 * AGE_JITTER * unit)
}

fn configure(io: &TcpStream, keepalive: Duration) -> io::Result<()> {
    // No Nagle: acks are small and latency-sensitive.
    io.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive);
    socket2::SockRef::from(io).set_tcp_keepalive(&keepalive)
}

/// The gateway's service on one connection: every request learns the
/// connection's [`ConnInfo`].
struct ConnService<S> {
    inner: S,
    info: ConnInfo,
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.info.clone());
        let request = request.map(Body::new);
        let mut inner = self.inner.clone();
        Box::pin(async move {
            poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
    }
}

/// Counts a connection kept open only to refuse its calls.
struct RefusedGuard(Arc<AtomicUsize>);

impl RefusedGuard {
    fn take(alive: &Arc<AtomicUsize>) -> Option<Self> {
        alive
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_REFUSED_ALIVE).then_some(n + 1)
            })
            .ok()
            .map(|_| RefusedGuard(alive.clone()))
    }
}

impl Drop for RefusedGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One accepted connection's socket, holding its place under the caps
/// until it closes.
struct Conn {
    io: TcpStream,
    /// Counts against `--max-connections`.
    _slot: Option<Slot>,
    /// Counts against [`MAX_REFUSED_ALIVE`].
    _refused: Option<RefusedGuard>,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_spread_by_a_tenth_either_way() {
        let age = Duration::from_secs(600);
        let ages: Vec<Duration> = (0..1_000).map(|id| jittered(age, id)).collect();
        assert!(
            ages.iter()
                .all(|a| *a >= age.mul_f64(0.9) && *a < age.mul_f64(1.1))
        );
        let early = ages.iter().filter(|a| **a < age).count();
        assert!((350..650).contains(&early), "{early} of 1000 below the age");
    }
}
