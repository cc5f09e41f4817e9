//! A TCP proxy that misbehaves on demand, between the gateway and a broker,
//! for the faults a network makes and a mock broker cannot: connections
//! reset mid-request, latency, a blackhole, refused connections.
//!
//! Point the broker's advertised listener at the proxy, so that every
//! connection the producer makes goes through it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything.
    Pass,
    /// Forwards everything, each chunk after this delay.
    Latency(Duration),
    /// Forwards nothing and reads nothing: connections hang.
    Blackhole,
    /// Resets each connection once it has carried this many bytes towards
    /// the broker (so mid-request, for requests larger than that); new
    /// connections too.
    ResetAfter(u64),
    /// Resets every new connection at once.
    Refuse,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Cancels every open connection (a reset).
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    /// Connections reset so far, by any mode.
    pub resets: Arc<AtomicU64>,
    /// Bytes forwarded towards the target so far, over every connection.
    pub forwarded: Arc<AtomicU64>,
}

impl FaultProxy {
    /// A proxy on `listener` towards `target`.
    pub fn start(listener: TcpListener, target: SocketAddr) -> Self {
        let addr = listener.local_addr().unwrap();
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let connections = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let resets = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        tokio::spawn(accept(
            listener,
            target,
            mode_rx,
            connections.clone(),
            stop.clone(),
            Counters {
                resets: resets.clone(),
                forwarded: forwarded.clone(),
            },
        ));
        Self {
            addr,
            mode,
            connections,
            stop,
            resets,
            forwarded,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Resets every open connection now.
    pub fn reset_all(&self) {
        let mut token = self.connections.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.connections.lock().unwrap().cancel();
    }
}

/// What the proxy counts.
#[derive(Clone)]
struct Counters {
    resets: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    connections: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    counters: Counters,
) {
    let Counters { resets, forwarded } = counters;
    loop {
        let (client, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let current = *mode.borrow();
        if matches!(current, Mode::Refuse) {
            reset(client);
            resets.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let cancel = connections.lock().unwrap().clone();
        let (mode, resets, forwarded) = (mode.clone(), resets.clone(), forwarded.clone());
        tokio::spawn(async move {
            let Ok(broker) = TcpStream::connect(target).await else {
                reset(client);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = broker.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (broker_read, broker_write) = broker.into_split();
            let carried = Arc::new(AtomicU64::new(0));
            let up = pump(
                client_read,
                broker_write,
                mode.clone(),
                Some((carried.clone(), forwarded)),
            );
            let down = pump(broker_read, client_write, mode, None);
            tokio::select! {
                result = up => if result.is_err() { resets.fetch_add(1, Ordering::Relaxed); },
                _ = down => {}
                () = cancel.cancelled() => { resets.fetch_add(1, Ordering::Relaxed); }
            }
            // The halves drop here; with linger 0 set on both sockets the
            // peers see a reset, not an orderly close.
        });
    }
}

/// Closes a socket with a reset.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Copies `from` to `to` as the mode says; towards the target, counts
/// what this connection and all connections carried. Errs when it resets
/// the connection on purpose.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    counted: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>,
) -> io::Result<()> {
    let (carried, forwarded) = counted.unzip();
    let _ = socket2::SockRef::from(from.as_ref()).set_linger(Some(Duration::ZERO));
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // In a blackhole nothing is read, so nothing moves either way.
        while *mode.borrow() == Mode::Blackhole {
            if mode.changed().await.is_err() {
                return Ok(());
            }
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => n?,
            changed = mode.changed() => {
                if changed.is_err() { return Ok(()) }
                continue;
            }
        };
        if n == 0 {
            return Ok(());
        }
        let current = *mode.borrow();
        match current {
            Mode::Latency(delay) => tokio::time::sleep(delay).await,
            Mode::ResetAfter(limit) => {
                if let Some(carried) = &carried {
                    let before = carried.fetch_add(n as u64, Ordering::Relaxed);
                    if before + n as u64 > limit {
                        // Forward part of the request, then cut it.
                        let part = (limit.saturating_sub(before) as usize).min(n);
                        to.write_all(&buf[..part]).await?;
                        return Err(io::Error::other("reset by the fault proxy"));
                    }
                }
            }
            Mode::Refuse if carried.is_some() => {
                return Err(io::Error::other("reset by the fault proxy"));
            }
            _ => {}
        }
        to.write_all(&buf[..n]).await?;
        if let Some(forwarded) = &forwarded {
            forwarded.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
