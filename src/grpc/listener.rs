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
//! Before it proves anything, a connection is held to little:
//! - it must finish its handshakes (TLS when on, then the HTTP/2 preface)
//!   within `--handshake-timeout`, plaintext or not, or it is closed;
//! - until its first Produce or ProduceBatch call passes authentication it
//!   counts among the unauthenticated connections, not against
//!   `--max-connections`, and is closed when newer ones need its place
//!   ([`crate::limits::Unauthenticated`]); that call counts it against
//!   `--max-connections` or is refused `RESOURCE_EXHAUSTED` naming the flag
//!   ([`crate::limits::ConnAdmission`]).

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use crate::limits::{Admission, ConnAdmission};

/// The HTTP/2 client connection preface: once this many bytes were read,
/// the client has spoken HTTP/2 (RFC 9113, section 3.4).
const HTTP2_PREFACE_LEN: usize = 24;
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
    /// Whether the connection counts against `--max-connections` yet.
    pub admission: Arc<ConnAdmission>,
    /// The principal of the client certificate verified in the TLS
    /// handshake, with `--tls-client-ca`.
    pub peer: Option<Principal>,
    /// That certificate's chain, leaf first, to check again on reloads.
    pub peer_chain: Option<Arc<[rustls_pki_types::CertificateDer<'static>]>>,
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
    // The second of the last handshake failure logged, per address.
    let log_throttle = Arc::new(LogThrottle::default());
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
        let pending = admission.unauthenticated.admit(id);
        let evicted = pending.evicted.clone();
        let handshake_deadline = now + admission.handshake_timeout();
        let mut info = ConnInfo {
            id,
            remote: Some(remote),
            age_deadline: options.max_age.map(|age| now + jittered(age, id)),
            admission: Arc::new(ConnAdmission::new(pending)),
            peer: None,
            peer_chain: None,
        };
        let conn = Conn { io };
        let grace = options.max_age_grace;
        let (service, builder, stopping, tls) = (
            service.clone(),
            builder.clone(),
            stopping.clone(),
            tls.clone(),
        );
        let (tls_failures, log_throttle) = (admission.tls_failures.clone(), log_throttle.clone());
        let watch = Watch {
            evicted,
            handshake_deadline,
        };
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(conn, info, service, builder, grace, stopping, watch)
                    .await;
            };
            let accepted = tokio::select! {
                accepted = tls.accept(conn) => accepted,
                () = tokio::time::sleep_until(watch.handshake_deadline) => {
                    tracing::debug!(%remote, "TLS handshake not finished within --handshake-timeout");
                    return;
                }
                () = watch.evicted.cancelled() => return,
                () = stopping.force.cancelled() => return,
            };
            match accepted {
                Ok(stream) => {
                    info.peer = stream.principal().cloned();
                    info.peer_chain = stream.peer_chain().cloned();
                    serve_connection(stream, info, service, builder, grace, stopping, watch)
                        .await;
                }
                Err(err) => {
                    tls_failures.inc();
                    // At most one a second per address: a scan must not
                    // flood the log, nor hide another client's failures.
                    if log_throttle.allows(remote.ip()) {
                        tracing::info!(
                            %err,
                            %remote,
                            "TLS handshake failed (further failures from this address this second are only counted)"
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

/// What closes a connection before it proved anything.
struct Watch {
    /// Fires when newer unauthenticated connections need its place.
    evicted: CancellationToken,
    /// When its handshakes (TLS, HTTP/2 preface) must be done.
    handshake_deadline: Instant,
}

/// Serves one connection until it closes, is retired, or the server stops;
/// or, before it authenticated, until it is evicted; or, if it has not
/// sent the HTTP/2 preface by its handshake deadline, then.
async fn serve_connection<IO, S>(
    conn: IO,
    info: ConnInfo,
    service: S,
    builder: Arc<http2::Builder<TokioExecutor>>,
    grace: Duration,
    stopping: Stopping,
    watch: Watch,
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
    let admitted = info.admission.clone();
    let service = ConnService {
        inner: service,
        info,
    };
    let conn = Preface::new(conn);
    let spoke = conn.spoke.clone();
    let mut connection = pin!(builder.serve_connection(TokioIo::new(conn), service));
    let mut retiring = false;
    let mut close_at: Option<Instant> = None;
    let mut handshake_deadline = Some(watch.handshake_deadline);
    loop {
        tokio::select! {
            () = async { tokio::time::sleep_until(handshake_deadline.expect("set")).await },
                if handshake_deadline.is_some() =>
            {
                if !spoke.load(Ordering::Acquire) {
                    tracing::debug!(connection = id, "no HTTP/2 preface within --handshake-timeout: closing");
                    return;
                }
                handshake_deadline = None;
            }
            () = watch.evicted.cancelled(), if !admitted.is_admitted() => {
                tracing::debug!(connection = id, "unauthenticated connection closed to make room for a newer one");
                return;
            }
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

/// Remembers, per remote address, the second of the last line logged, so
/// that each address gets at most one line a second: a flood from one
/// address neither fills the log nor hides another's failures. Bounded:
/// forgets everything past [`LogThrottle::MAX_ADDRESSES`].
#[derive(Default)]
pub struct LogThrottle {
    last: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
}

impl LogThrottle {
    const MAX_ADDRESSES: usize = 4_096;

    /// Whether a line about `ip` may be logged now.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.len() >= Self::MAX_ADDRESSES && !last.contains_key(&ip) {
            last.retain(|_, second| *second == now);
            if last.len() >= Self::MAX_ADDRESSES {
                return false;
            }
        }
        last.insert(ip, now) != Some(now)
    }
}

/// One accepted socket.
struct Conn {
    io: TcpStream,
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

/// A connection's transport (after TLS) that notes when the client has
/// sent the HTTP/2 preface, for `--handshake-timeout`.
struct Preface<IO> {
    io: IO,
    /// Bytes read so far, up to the preface's length.
    read: usize,
    spoke: Arc<AtomicBool>,
}

impl<IO> Preface<IO> {
    fn new(io: IO) -> Self {
        Self {
            io,
            read: 0,
            spoke: Arc::default(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Preface<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.read < HTTP2_PREFACE_LEN {
            self.read += buf.filled().len() - before;
            if self.read >= HTTP2_PREFACE_LEN {
                self.spoke.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Preface<IO> {
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
    fn the_log_throttle_lets_each_address_speak_once_a_second() {
        let throttle = LogThrottle::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(throttle.allows(a));
        // A flood from one address does not silence another.
        for _ in 0..100 {
            let _ = throttle.allows(a);
        }
        assert!(throttle.allows(b));
    }

    #[tokio::test]
    async fn the_preface_is_noticed_once_its_bytes_are_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Preface::new(server);
        let mut buf = [0u8; 64];
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(n, 16);
        assert!(!server.spoke.load(Ordering::Acquire));
        client.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        assert!(server.spoke.load(Ordering::Acquire));
    }

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
