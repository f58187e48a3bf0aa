//! Watches the directories of the config, credential and TLS files (not the files: Kubernetes swaps a `..data` symlink) and turns a change of one of those files into a reload nudge.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;

/// Every file the daemon reads while it runs: the config, the credential and key files of the client authentication
/// and grant, and the TLS files of each token's HTTP client.
fn served_files<'a>(config_path: &'a Path, config: &'a Config) -> Vec<&'a Path> {
    let mut files: Vec<&Path> = vec![config_path];
    for t in &config.tokens {
        files.extend(t.auth.files());
        files.extend(t.grant.files());
        for f in [
            &t.http.ca_file,
            &t.http.client_cert_file,
            &t.http.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            files.push(f);
        }
    }
    files
}

/// The directories to watch and, in each, the names of the files served from it.
pub(crate) fn watched_dirs(
    config_path: &Path,
    config: &Config,
) -> BTreeMap<PathBuf, BTreeSet<OsString>> {
    let mut dirs: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
    for f in served_files(config_path, config) {
        let dir = match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let entry = dirs.entry(dir).or_default();
        if let Some(n) = f.file_name() {
            entry.insert(n.to_os_string());
        }
    }
    dirs
}

/// Whether an event on `p` may change a served file: the file itself, or a Kubernetes volume's `..data` / `..<ts>`
/// entries, through which every file of the volume changes at once. Anything else (a log file, an editor's backup,
/// our own temporary files) is not our business: reacting to it would let a log file in a watched directory feed
/// its own events back into the log.
fn is_served(p: &Path, served: &BTreeMap<PathBuf, BTreeSet<OsString>>) -> bool {
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return true;
    };
    if is_own_file(p) {
        return false;
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let names = served.get(dir).or_else(|| {
        // Events name the path as watched; a relative config path is watched relative to the working directory.
        served
            .iter()
            .find(|(d, _)| d.canonicalize().ok() == dir.canonicalize().ok())
            .map(|(_, n)| n)
    });
    match names {
        Some(names) => names.contains(name) || name.to_string_lossy().starts_with(".."),
        // A path outside the watched set (a rename's other half, say): let the re-read decide.
        None => true,
    }
}

fn is_own_file(p: &Path) -> bool {
    p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
        n.contains(crate::output::TMP_MARK) || n.ends_with(crate::refresh::sink::STATE_SUFFIX)
    })
}

/// Whether an event can mean new content. Opening or reading a file is not a change: the re-read that a reload does
/// would otherwise report itself and reload again, every 200 ms, forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// A live watch; dropping it stops the events.
pub(crate) struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
    /// The served files per directory, shared with the watcher's callback.
    served: Arc<Mutex<BTreeMap<PathBuf, BTreeSet<OsString>>>>,
}

impl DirWatch {
    /// Starts watching; events arrive as `()` on `tx`. Failure to watch is logged, not fatal: the slow poll still runs.
    pub(crate) fn new(tx: mpsc::UnboundedSender<()>) -> DirWatch {
        let served: Arc<Mutex<BTreeMap<PathBuf, BTreeSet<OsString>>>> = Arc::default();
        let filter = served.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                let served = filter.lock().unwrap_or_else(|p| p.into_inner());
                if is_change(&ev.kind)
                    && (ev.paths.is_empty() || ev.paths.iter().any(|p| is_served(p, &served)))
                {
                    let _ = tx.send(());
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file watching is unavailable; relying on the periodic re-read");
                None
            }
        };
        DirWatch {
            watcher,
            dirs: BTreeSet::new(),
            served,
        }
    }

    /// Makes the watched set equal to `dirs` (from [`watched_dirs`]).
    pub(crate) fn set(&mut self, dirs: BTreeMap<PathBuf, BTreeSet<OsString>>) {
        let wanted: BTreeSet<PathBuf> = dirs.keys().cloned().collect();
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = dirs;
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for old in self.dirs.difference(&wanted) {
            let _ = w.unwatch(old);
        }
        let mut watching = BTreeSet::new();
        for d in &wanted {
            if self.dirs.contains(d) {
                watching.insert(d.clone());
                continue;
            }
            match w.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(d.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; changes there are seen by the periodic re-read")
                }
            }
        }
        self.dirs = watching;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};

    #[test]
    fn only_served_files_and_volume_swaps_count() {
        let mut served = BTreeMap::new();
        served.insert(
            PathBuf::from("/etc/tv"),
            BTreeSet::from([OsString::from("config.yaml"), OsString::from("secret")]),
        );
        for (p, want) in [
            ("/etc/tv/config.yaml", true),
            ("/etc/tv/secret", true),
            ("/etc/tv/..data", true),
            ("/etc/tv/..2026_11_28", true),
            ("/etc/tv/tv.log", false),
            ("/etc/tv/.token.tv-state", false),
            ("/etc/tv/config.yaml.swp", false),
        ] {
            assert_eq!(is_served(Path::new(p), &served), want, "{p}");
        }
    }

    #[test]
    fn reading_a_watched_file_is_not_a_change() {
        for k in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!is_change(&k), "{k:?}");
        }
        for k in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::Any),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Any,
        ] {
            assert!(is_change(&k), "{k:?}");
        }
    }
}
