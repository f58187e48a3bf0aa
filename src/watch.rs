//! Watches the directories of the config and credential files (not the files: Kubernetes swaps a `..data` symlink) and turns any event into a reload nudge.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;

/// The directories whose changes may change the config or a credential.
pub fn watched_dirs(config_path: &Path, config: &Config) -> BTreeSet<PathBuf> {
    let mut files: Vec<&Path> = vec![config_path];
    for t in &config.tokens {
        files.extend(t.auth.files());
        files.extend(t.grant.files());
    }
    files
        .into_iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
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
pub struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
}

impl DirWatch {
    /// Starts watching; events arrive as `()` on `tx`. Failure to watch is logged, not fatal: the slow poll still runs.
    pub fn new(tx: mpsc::UnboundedSender<()>) -> DirWatch {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own temporary and state files must not wake us, or a failing write would feed itself.
            if let Ok(ev) = res {
                if is_change(&ev.kind)
                    && (!ev.paths.iter().all(|p| is_own_file(p)) || ev.paths.is_empty())
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
        }
    }

    /// Makes the watched set equal to `dirs`.
    pub fn set(&mut self, dirs: BTreeSet<PathBuf>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for old in self.dirs.difference(&dirs) {
            let _ = w.unwatch(old);
        }
        let mut watching = BTreeSet::new();
        for d in &dirs {
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
