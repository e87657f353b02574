//! The images directory, for nodes without a registry: every image tarball
//! (`*.tar`, an OCI layout or `docker save` archive) placed there is
//! imported into containerd's `k8s.io` namespace, where CRI finds it.
//!
//! Mechanism: the directory is scanned at start and then every few
//! seconds. [`pending_imports`] (pure) compares the listing with what was
//! imported, by name, size and modification time, so a file is imported
//! once, again when it is replaced, and not while it is still growing (its
//! size must hold still for one scan). Imports go through an
//! [`ImageImporter`]; [`CtrImporter`] runs containerd's `ctr`, which unpacks
//! the layers into the snapshotter CRI uses. A failed import is retried
//! when the file changes, or after [`RETRY_AFTER`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the directory is scanned.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);
/// When a failed import is tried again even if its file did not change.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ImageImportError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("importing {path} failed: {message}")]
    Failed { path: PathBuf, message: String },
}

/// One file in the images directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// What happened to a file the last time it was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Seen once with this state; imported when it holds still.
    Seen(FileState),
    Imported(FileState),
    Failed(FileState, Instant),
}

/// The files to import now, by name.
pub fn pending_imports(
    listing: &BTreeMap<String, FileState>,
    known: &BTreeMap<String, Outcome>,
    now: Instant,
) -> Vec<String> {
    listing
        .iter()
        .filter(|(name, state)| match known.get(*name) {
            None => false,
            Some(Outcome::Seen(seen)) => seen == *state,
            Some(Outcome::Imported(_)) => false,
            Some(Outcome::Failed(failed, at)) => {
                failed == *state && now.duration_since(*at) >= RETRY_AFTER
            }
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Updates `known` with a scan: new or changed files become `Seen`, files
/// that are gone are forgotten.
pub fn note_scan(listing: &BTreeMap<String, FileState>, known: &mut BTreeMap<String, Outcome>) {
    known.retain(|name, _| listing.contains_key(name));
    for (name, state) in listing {
        let unchanged = match known.get(name) {
            Some(Outcome::Seen(s)) | Some(Outcome::Imported(s)) | Some(Outcome::Failed(s, _)) => {
                s == state
            }
            None => false,
        };
        if !unchanged {
            known.insert(name.clone(), Outcome::Seen(*state));
        }
    }
}

/// Imports one image tarball into the runtime.
pub trait ImageImporter: Send + Sync + 'static {
    fn import(&self, path: &Path) -> impl Future<Output = Result<(), ImageImportError>> + Send;
}

/// Imports with `ctr images import`, into namespace `k8s.io`.
#[derive(Clone, Debug)]
pub struct CtrImporter {
    pub ctr: PathBuf,
    pub socket: PathBuf,
}

impl ImageImporter for CtrImporter {
    async fn import(&self, path: &Path) -> Result<(), ImageImportError> {
        let output = tokio::process::Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(path)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| ImageImportError::Spawn {
                program: self.ctr.display().to_string(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ImageImportError::Failed {
                path: path.to_owned(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// The image tarballs in `dir`; a missing directory is an empty one.
pub fn scan(dir: &Path) -> BTreeMap<String, FileState> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !name.ends_with(".tar") || name.starts_with('.') {
                return None;
            }
            let metadata = entry.metadata().ok().filter(|m| m.is_file())?;
            Some((
                name,
                FileState {
                    len: metadata.len(),
                    modified: metadata.modified().ok(),
                },
            ))
        })
        .collect()
}

/// Watches `dir` forever, importing what appears.
pub async fn watch<I: ImageImporter>(dir: PathBuf, importer: I) {
    let mut known = BTreeMap::new();
    loop {
        let listing = scan(&dir);
        let now = Instant::now();
        // Imports first (their files held still since the last scan), then
        // the new scan is noted for the next round.
        for name in pending_imports(&listing, &known, now) {
            let path = dir.join(&name);
            let Some(state) = listing.get(&name).copied() else {
                continue;
            };
            let started = Instant::now();
            match importer.import(&path).await {
                Ok(()) => {
                    tracing::info!(file = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "imported an image");
                    known.insert(name, Outcome::Imported(state));
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot import an image; retrying when the file changes");
                    known.insert(name, Outcome::Failed(state, Instant::now()));
                }
            }
        }
        note_scan(&listing, &mut known);
        tokio::time::sleep(SCAN_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(len: u64) -> FileState {
        FileState {
            len,
            modified: None,
        }
    }

    fn listing(files: &[(&str, u64)]) -> BTreeMap<String, FileState> {
        files
            .iter()
            .map(|(name, len)| ((*name).to_owned(), state(*len)))
            .collect()
    }

    #[test]
    fn files_are_imported_once_they_hold_still() {
        let now = Instant::now();
        let mut known = BTreeMap::new();
        let growing = listing(&[("app.tar", 10)]);
        assert!(
            pending_imports(&growing, &known, now).is_empty(),
            "first sight"
        );
        note_scan(&growing, &mut known);
        let grown = listing(&[("app.tar", 20)]);
        assert!(
            pending_imports(&grown, &known, now).is_empty(),
            "still growing"
        );
        note_scan(&grown, &mut known);
        assert_eq!(pending_imports(&grown, &known, now), ["app.tar"]);
        known.insert("app.tar".into(), Outcome::Imported(state(20)));
        note_scan(&grown, &mut known);
        assert!(
            pending_imports(&grown, &known, now).is_empty(),
            "imported once"
        );

        // Replaced: seen again, imported again once it holds still.
        let replaced = listing(&[("app.tar", 30)]);
        note_scan(&replaced, &mut known);
        assert_eq!(pending_imports(&replaced, &known, now), ["app.tar"]);

        // Removed: forgotten.
        note_scan(&BTreeMap::new(), &mut known);
        assert!(known.is_empty());
    }

    #[test]
    fn failures_wait_for_a_change_or_the_retry_delay() {
        let now = Instant::now();
        let files = listing(&[("bad.tar", 5)]);
        let mut known: BTreeMap<String, Outcome> =
            [("bad.tar".to_owned(), Outcome::Failed(state(5), now))]
                .into_iter()
                .collect();
        note_scan(&files, &mut known);
        assert!(pending_imports(&files, &known, now).is_empty());
        assert_eq!(
            pending_imports(&files, &known, now + RETRY_AFTER),
            ["bad.tar"]
        );
        let fixed = listing(&[("bad.tar", 6)]);
        note_scan(&fixed, &mut known);
        assert_eq!(pending_imports(&fixed, &known, now), ["bad.tar"]);
    }

    #[test]
    fn only_tarballs_are_scanned() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.tar"), b"x").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        std::fs::write(dir.path().join(".partial.tar"), b"x").expect("write");
        std::fs::create_dir(dir.path().join("dir.tar")).expect("mkdir");
        let found: Vec<String> = scan(dir.path()).into_keys().collect();
        assert_eq!(found, ["app.tar"]);
        assert!(scan(&dir.path().join("missing")).is_empty());
    }
}
