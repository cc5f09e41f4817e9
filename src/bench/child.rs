//! The child process: runs one strategy and reports on stdout, one line at a
//! time: `P <records answered>` every 200 ms for the progress bar, then
//! `R <json>` with what it measured.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

use super::workload::Workload;
use super::{failure, rss, strategies};

/// How often the child reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Runs the strategy described by `spec` (a [`Workload`] as JSON).
pub async fn main(spec: &str) -> Result<(), Error> {
    let workload: Workload = serde_json::from_str(spec)
        .map_err(|err| Error::Config(format!("--child takes a workload as JSON: {err}")))?;
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tick.tick().await;
                emit(&format!("P {}", progress.load(Ordering::Relaxed)));
            }
        }
    });
    let measured = strategies::run(&workload, progress).await;
    reporter.abort();
    let mut measured = measured.map_err(failure)?;
    measured.peak_rss_bytes = rss::peak_bytes();
    let json = serde_json::to_string(&measured).map_err(|err| failure(err.to_string()))?;
    emit(&format!("R {json}"));
    Ok(())
}

/// Writes one line to stdout, now.
fn emit(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
