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
pub async fn os_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
