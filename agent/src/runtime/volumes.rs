//! configMap and secret volumes: the files the control plane resolved,
//! written into the pod's directory so that a change reaches running
//! containers whole or not at all.
//!
//! Layout, as kubelet's atomic writer makes it, in
//! `DATA_DIR/pods/<uid>/volumes/<volume>/` (the directory containers
//! bind-mount, read-only):
//! - `..<timestamp>/` holds one version of the files;
//! - `..data` is a symlink to the current version;
//! - each top-level name (`key`, or the first part of an item's path) is a
//!   symlink `key -> ..data/key`.
//!
//! Ordering rules for an update: the new version is written completely
//! first; then `..data` is switched with one rename of a new symlink over
//! it (the only step a reader can observe); then top-level symlinks for
//! new names are added and those of names gone are removed; old versions
//! are removed last. A container that mounted a single file with
//! `subPath` keeps the version it started with, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

/// The symlink to the current version.
const DATA_LINK: &str = "..data";
const DATA_LINK_NEW: &str = "..data_tmp";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: file path {path:?} must be relative, without '..'")]
    UnsafePath { volume: String, path: String },
    #[error("volume {volume}: cannot write {path}: {source}")]
    Io {
        volume: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files of one configMap or secret volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFiles {
    /// Relative path → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Relative path → file mode.
    pub modes: BTreeMap<String, u32>,
}

/// A reference the control plane could not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The container whose env refers to it; empty for a volume.
    pub container: String,
    /// The volume whose source it is; empty for env.
    pub volume: String,
    pub message: String,
}

/// Kubernetes' default mode for these files.
pub const DEFAULT_MODE: u32 = 0o644;

/// Whether `path` stays inside the volume.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl VolumeFiles {
    /// Checks every path; the node API is trusted, but a path that
    /// escaped the volume would write anywhere on the host.
    pub fn validate(&self, volume: &str) -> Result<(), VolumeError> {
        match self.files.keys().find(|path| !is_safe_relative(path)) {
            Some(path) => Err(VolumeError::UnsafePath {
                volume: volume.to_owned(),
                path: path.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The names at the top of the volume.
    fn top_level(&self) -> BTreeSet<String> {
        self.files
            .keys()
            .filter_map(|path| path.split('/').next())
            .map(str::to_owned)
            .collect()
    }
}

/// Writes `files` as the current version of the volume at `dir`.
pub fn write_volume(
    dir: &Path,
    volume: &str,
    files: &VolumeFiles,
    version: &str,
) -> Result<(), VolumeError> {
    files.validate(volume)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| VolumeError::Io {
            volume: volume.to_owned(),
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;

    // 1. The new version, complete.
    let version_name = format!("..{version}");
    let version_dir = dir.join(&version_name);
    if version_dir.exists() {
        fs::remove_dir_all(&version_dir).map_err(io(&version_dir))?;
    }
    fs::create_dir(&version_dir).map_err(io(&version_dir))?;
    for (path, contents) in &files.files {
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&target, contents).map_err(io(&target))?;
        let mode = files.modes.get(path).copied().unwrap_or(DEFAULT_MODE) & 0o7777;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io(&target))?;
    }

    // 2. The switch: one rename.
    let new_link = dir.join(DATA_LINK_NEW);
    match fs::remove_file(&new_link) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&new_link)(error))
        }
        _ => {}
    }
    symlink(&version_name, &new_link).map_err(io(&new_link))?;
    fs::rename(&new_link, dir.join(DATA_LINK)).map_err(io(&new_link))?;

    // 3. Top-level names: add the new, drop the gone.
    let wanted = files.top_level();
    for name in &wanted {
        let link = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if fs::read_link(&link).is_ok_and(|current| current == target) {
            continue;
        }
        let staged = dir.join(format!("..{name}.tmp"));
        let _ = fs::remove_file(&staged);
        symlink(&target, &staged).map_err(io(&staged))?;
        fs::rename(&staged, &link).map_err(io(&link))?;
    }
    let entries = fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("..") {
            // 4. Old versions, last.
            if name != DATA_LINK && name != version_name {
                let removed = if path.is_symlink() || path.is_file() {
                    fs::remove_file(&path)
                } else {
                    fs::remove_dir_all(&path)
                };
                removed.map_err(io(&path))?;
            }
        } else if !wanted.contains(&name) {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str, u32)]) -> VolumeFiles {
        VolumeFiles {
            files: pairs
                .iter()
                .map(|(p, c, _)| ((*p).to_owned(), c.as_bytes().to_vec()))
                .collect(),
            modes: pairs
                .iter()
                .map(|(p, _, m)| ((*p).to_owned(), *m))
                .collect(),
        }
    }

    fn read(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).expect("readable")
    }

    #[test]
    fn files_appear_through_data_links_with_their_modes() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cfg");
        write_volume(
            &dir,
            "cfg",
            &files(&[("mode", "fast", 0o644), ("conf/level", "3", 0o600)]),
            "v1",
        )
        .expect("written");
        assert_eq!(read(&dir, "mode"), "fast");
        assert_eq!(read(&dir, "conf/level"), "3");
        assert_eq!(
            fs::read_link(dir.join("mode")).expect("link"),
            Path::new("..data/mode")
        );
        assert_eq!(
            fs::read_link(dir.join("..data")).expect("link"),
            Path::new("..v1")
        );
        let mode = fs::metadata(dir.join("..v1/conf/level"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_update_swaps_the_version_and_removes_what_is_gone() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("cfg");
        write_volume(
            &dir,
            "cfg",
            &files(&[("mode", "fast", 0o644), ("old", "x", 0o644)]),
            "v1",
        )
        .expect("written");
        write_volume(
            &dir,
            "cfg",
            &files(&[("mode", "slow", 0o644), ("new", "y", 0o644)]),
            "v2",
        )
        .expect("updated");
        assert_eq!(read(&dir, "mode"), "slow");
        assert_eq!(read(&dir, "new"), "y");
        assert!(!dir.join("old").exists() && !dir.join("old").is_symlink());
        assert!(!dir.join("..v1").exists(), "the old version is removed");
        let names: BTreeSet<String> = fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = ["..data", "..v2", "mode", "new"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, expected);

        // Writing the same version name again replaces it cleanly.
        write_volume(&dir, "cfg", &files(&[("mode", "again", 0o644)]), "v2").expect("rewritten");
        assert_eq!(read(&dir, "mode"), "again");
    }

    #[test]
    fn paths_outside_the_volume_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        for path in ["../escape", "/etc/passwd", "a/../../b", ""] {
            let error = write_volume(
                &root.path().join("v"),
                "v",
                &files(&[(path, "x", 0o644)]),
                "v1",
            )
            .expect_err("refused");
            assert!(matches!(error, VolumeError::UnsafePath { .. }), "{path}");
        }
        assert!(!root.path().join("escape").exists());
        assert!(is_safe_relative("conf/a.yaml"));
    }
}
