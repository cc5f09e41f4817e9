//! Reloading what can change under a running gateway: the TLS certificate,
//! key and client CAs, the API keys, a JWKS file and the policy, plus the
//! periodic refresh of a JWKS URL.
//!
//! Files are polled every `--reload-interval` by fingerprint (length, mtime
//! and a SHA-256 of the content, read through symlinks), not watched with
//! inotify: Kubernetes updates a mounted Secret or ConfigMap by swapping a
//! symlink to a new directory, which watches on the file often miss, while
//! a changed hash is never missed. SIGHUP reloads everything at once.
//!
//! A reload that fails keeps what was loaded before and logs why (the error
//! names the file); it is tried again when one of its files changes, or on
//! the next SIGHUP. A success is logged at info, and announced to open
//! streams ([`Reloader::subscribe`]), which check their credentials and
//! grants again.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::jwt::{JwtVerifier, KeySet};

/// What a file looked like when last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    /// Size in bytes.
    len: u64,
    /// Modification time, where the filesystem keeps one.
    modified: Option<SystemTime>,
    /// SHA-256 of the content: catches a change that keeps size and mtime.
    hash: [u8; 32],
}

/// The fingerprint of `path`, or `None` when it cannot be read (a reload
/// will then say why).
fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let content = std::fs::read(path).ok()?;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: content.len() as u64,
        modified: metadata.modified().ok(),
        hash: Sha256::digest(&content).into(),
    })
}

type ReloadFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One reloadable thing and the files it is read from.
struct Piece {
    /// What it is, for logs: "TLS certificate", "policy", ...
    name: &'static str,
    /// The files whose change triggers the reload.
    files: Vec<PathBuf>,
    /// Loads everything anew and swaps it in, or changes nothing.
    reload: ReloadFn,
}

/// Reloads the security state on file changes and on SIGHUP.
pub struct Reloader {
    /// `--reload-interval`.
    interval: Duration,
    /// Everything file-backed.
    pieces: Vec<Piece>,
    /// JWKS URLs, refreshed when due, and the key set last seen of each.
    remote: Vec<(Arc<JwtVerifier>, Mutex<Arc<KeySet>>)>,
    /// The last fingerprint of each watched file.
    seen: Mutex<HashMap<PathBuf, Option<Fingerprint>>>,
    /// Counts the reloads that changed something.
    changes: watch::Sender<u64>,
}

/// The outcome of one reload: what was reloaded, and whether it worked.
pub type ReloadResult = (&'static str, Result<(), String>);

impl Reloader {
    /// A reloader polling every `interval`, with nothing to watch yet.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pieces: Vec::new(),
            remote: Vec::new(),
            seen: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
        }
    }

    /// Changes each time a reload (of any file, or of a JWKS URL's keys)
    /// succeeds: what open streams wait on to check their credentials and
    /// grants again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells the subscribers when any of `results` is a success.
    fn announce(&self, results: &[ReloadResult]) {
        if results.iter().any(|(_, result)| result.is_ok()) {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Watches `files`; when one changes (or on SIGHUP), `reload` runs.
    /// Their fingerprints are taken now, so register right after loading.
    pub fn watch(
        &mut self,
        name: &'static str,
        files: Vec<PathBuf>,
        reload: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for file in &files {
            seen.insert(file.clone(), fingerprint(file));
        }
        drop(seen);
        self.pieces.push(Piece {
            name,
            files,
            reload: Box::new(reload),
        });
    }

    /// Refreshes `jwt`'s JWKS URL when due (and on SIGHUP).
    pub fn refresh_remote(&mut self, jwt: Arc<JwtVerifier>) {
        let keys = Mutex::new(jwt.key_set());
        self.remote.push((jwt, keys));
    }

    /// Whether there is nothing to reload, so no task is needed.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.remote.is_empty()
    }

    /// Reloads every file-backed piece now, as SIGHUP does; blocking file
    /// I/O, so call from a blocking context in async code.
    pub fn reload_all(&self) -> Vec<ReloadResult> {
        let current = self.fingerprints();
        let results: Vec<_> = self.pieces.iter().map(|piece| run(piece)).collect();
        self.remember(current);
        self.announce(&results);
        results
    }

    /// Reloads the pieces whose files changed since last seen.
    pub fn reload_changed(&self) -> Vec<ReloadResult> {
        let current = self.fingerprints();
        let results = {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            self.pieces
                .iter()
                .filter(|piece| {
                    piece
                        .files
                        .iter()
                        .any(|file| seen.get(file) != current.get(file))
                })
                .map(run)
                .collect::<Vec<_>>()
        };
        self.remember(current);
        self.announce(&results);
        results
    }

    /// Refreshes each JWKS URL whose refresh is due; `force` fetches them
    /// all now.
    pub async fn refresh_remote_keys(&self, force: bool) {
        for (jwt, seen) in &self.remote {
            let result = if force {
                jwt.refresh().await
            } else {
                jwt.refresh_if_due().await
            };
            if let Err(err) = result {
                tracing::warn!(%err, "JWKS refresh failed; keeping the keys already loaded");
            }
            // Fetched here or for a token with an unknown key id: either
            // way, open streams check their tokens against the new keys.
            let keys = jwt.key_set();
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            if !Arc::ptr_eq(&keys, &seen) {
                *seen = keys;
                self.changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// Polls and listens for SIGHUP until `shutdown` resolves.
    pub fn spawn<F>(self: Arc<Self>, shutdown: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Registered before returning, so a SIGHUP from now on reloads
        // rather than ending the process.
        let mut hangup = hangup_signal();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            tokio::pin!(shutdown);
            loop {
                let forced = tokio::select! {
                    () = &mut shutdown => break,
                    _ = tick.tick() => false,
                    () = next_hangup(&mut hangup) => true,
                };
                if forced {
                    tracing::info!("SIGHUP: reloading certificates, keys and policy");
                }
                let this = self.clone();
                let reloaded = tokio::task::spawn_blocking(move || {
                    if forced {
                        this.reload_all()
                    } else {
                        this.reload_changed()
                    }
                })
                .await;
                if let Err(err) = reloaded {
                    tracing::warn!(%err, "a reload panicked; keeping the previous state");
                }
                self.refresh_remote_keys(forced).await;
            }
        })
    }

    fn fingerprints(&self) -> HashMap<PathBuf, Option<Fingerprint>> {
        self.pieces
            .iter()
            .flat_map(|piece| &piece.files)
            .map(|file| (file.clone(), fingerprint(file)))
            .collect()
    }

    fn remember(&self, current: HashMap<PathBuf, Option<Fingerprint>>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(current);
    }
}

/// Runs one reload and logs how it went.
fn run(piece: &Piece) -> ReloadResult {
    let files: Vec<_> = piece
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let result = (piece.reload)();
    match &result {
        Ok(()) => tracing::info!(what = piece.name, files = ?files, "reloaded"),
        Err(err) => tracing::warn!(
            what = piece.name,
            files = ?files,
            %err,
            "reload failed; keeping the previous one"
        ),
    }
    (piece.name, result)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGHUP; files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// The next SIGHUP; never, where there is none.
#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    if let Some(signal) = hangup
        && signal.recv().await.is_some()
    {
        return;
    }
    // No SIGHUP handler, or the stream of signals ended.
    *hangup = None;
    std::future::pending().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::PolicyStore;
    use crate::auth::testing::TempDir;
    use crate::auth::{AuthMethod, Principal};

    fn grant(topic: &str) -> String {
        format!("[[grant]]\nprincipals = [\"app\"]\ntopics = [\"{topic}\"]\n")
    }

    fn app() -> Principal {
        Principal::new("app", AuthMethod::ApiKey)
    }

    fn watching(path: &Path) -> (Arc<PolicyStore>, Reloader) {
        let store = Arc::new(PolicyStore::load(Some(path)).unwrap());
        let mut reloader = Reloader::new(Duration::from_millis(100));
        let watched = store.clone();
        reloader.watch("policy", vec![path.to_owned()], move || watched.reload());
        (store, reloader)
    }

    #[test]
    fn a_changed_policy_is_reloaded_and_changes_answers() {
        let dir = TempDir::new();
        let path = dir.write("policy.toml", grant("one"));
        let (store, reloader) = watching(&path);
        assert!(reloader.reload_changed().is_empty(), "nothing changed yet");

        // Same length, and likely the same mtime: the hash tells.
        std::fs::write(&path, grant("two")).unwrap();
        let results = reloader.reload_changed();
        assert_eq!(results, vec![("policy", Ok(()))]);
        assert!(!store.allows_topic(Some(&app()), "one"));
        assert!(store.allows_topic(Some(&app()), "two"));
        assert!(reloader.reload_changed().is_empty());
    }

    #[test]
    fn subscribers_hear_of_successful_reloads_only() {
        let dir = TempDir::new();
        let path = dir.write("policy.toml", grant("one"));
        let (_store, reloader) = watching(&path);
        let mut changes = reloader.subscribe();
        assert!(!changes.has_changed().unwrap());
        reloader.reload_changed();
        assert!(!changes.has_changed().unwrap(), "nothing changed");
        std::fs::write(&path, "[[grant]]\n").unwrap();
        assert!(reloader.reload_changed()[0].1.is_err());
        assert!(
            !changes.has_changed().unwrap(),
            "a failed reload changes nothing"
        );
        std::fs::write(&path, grant("two")).unwrap();
        reloader.reload_changed();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        reloader.reload_all();
        assert!(changes.has_changed().unwrap(), "SIGHUP");
    }

    #[test]
    fn a_broken_policy_keeps_the_old_one_until_fixed() {
        let dir = TempDir::new();
        let path = dir.write("policy.toml", grant("one"));
        let (store, reloader) = watching(&path);

        std::fs::write(
            &path,
            "[[grant]]\nprincipals = [\"app\"]\ntopics = [\"t*o\"]\n",
        )
        .unwrap();
        let results = reloader.reload_changed();
        let (name, Err(err)) = &results[0] else {
            panic!("{results:?}")
        };
        assert_eq!(*name, "policy");
        assert!(err.contains("policy.toml: line 3"), "{err}");
        assert!(
            store.allows_topic(Some(&app()), "one"),
            "the old policy stays"
        );
        // Not retried until the file changes again...
        assert!(reloader.reload_changed().is_empty());
        // ...or a SIGHUP asks.
        assert!(reloader.reload_all()[0].1.is_err());

        std::fs::remove_file(&path).unwrap();
        let results = reloader.reload_changed();
        assert!(results[0].1.as_ref().unwrap_err().contains("cannot read"));
        assert!(store.allows_topic(Some(&app()), "one"));

        std::fs::write(&path, grant("fixed")).unwrap();
        assert_eq!(reloader.reload_changed(), vec![("policy", Ok(()))]);
        assert!(store.allows_topic(Some(&app()), "fixed"));
    }

    #[cfg(unix)]
    #[test]
    fn a_kubernetes_style_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        // How the kubelet lays out a mounted ConfigMap: policy.toml ->
        // ..data/policy.toml, ..data -> ..2024_01_01, swapped by renaming a
        // new ..data link over the old one.
        let dir = TempDir::new();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/policy.toml"), grant("one")).unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/policy.toml", root.join("policy.toml")).unwrap();
        let (store, reloader) = watching(&root.join("policy.toml"));

        std::fs::create_dir(root.join("..v2")).unwrap();
        std::fs::write(root.join("..v2/policy.toml"), grant("two")).unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..v1")).unwrap();

        assert_eq!(reloader.reload_changed(), vec![("policy", Ok(()))]);
        assert!(store.allows_topic(Some(&app()), "two"));
    }

    #[tokio::test]
    async fn the_spawned_task_polls_and_stops_on_shutdown() {
        let dir = TempDir::new();
        let path = dir.write("policy.toml", grant("one"));
        let (store, reloader) = watching(&path);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = Arc::new(reloader).spawn(async move {
            let _ = stopped.await;
        });

        std::fs::write(&path, grant("two")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !store.allows_topic(Some(&app()), "two") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not reloaded in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends on shutdown")
            .unwrap();
    }
}
