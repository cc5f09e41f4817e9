//! Shutdown: the signal every stream watches, and the OS signals that pull
//! it.
//!
//! When shutdown is requested, streams stop reading new batches, finish the
//! batches they already read (produced and acked), and end with UNAVAILABLE;
//! then the producer is flushed. See [`crate::run`] for the whole sequence.

use tokio::sync::watch;

/// Pulls the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// Watched by every stream: cheap to clone, cheap to check.
#[derive(Debug, Clone)]
pub struct Signal(Option<watch::Receiver<bool>>);

impl Signal {
    /// A signal that never fires, for a driver that runs without a server.
    pub fn never() -> Self {
        Signal(None)
    }

    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once shutdown is requested. Cancel-safe. If the trigger is
    /// dropped without firing, never resolves.
    pub async fn requested(&mut self) {
        if let Some(rx) = &mut self.0
            && rx.wait_for(|&requested| requested).await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(Some(rx)))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, the signal Kubernetes and most
/// supervisors send to ask for a graceful stop.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a signal that arrives once the gateway says it listens
/// always drains it instead of killing it. Call it inside the runtime.
pub fn os_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |stream: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match stream {
                    Ok(mut stream) => {
                        stream.recv().await;
                    }
                    Err(err) => {
                        tracing::error!(%err, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "SIGINT") => tracing::info!("received SIGINT, shutting down"),
                () = wait(terminate, "SIGTERM") => tracing::info!("received SIGTERM, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("received Ctrl-C, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    }
}
