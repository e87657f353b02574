//! Single-layer OCI images written in memory, for nodes without a registry.
//!
//! An image comes out as an OCI image-layout tarball (`oci-layout`,
//! `index.json`, `blobs/sha256/...`: one gzip layer, the config and the
//! manifest, each named by its sha256), which `ctr images import` and the
//! agent's images directory load as is. The index entry carries the
//! `io.containerd.image.name` annotation (the full name, which containerd
//! uses), `org.opencontainers.image.ref.name` (the tag) and the platform of
//! the machine that runs this code, whose binaries go into the layer.
//!
//! Pure: files in, tarball bytes out. The output is deterministic (entries
//! sorted, owned by root, with a fixed mtime; gzip without a timestamp or a
//! name), so the same files under the same name always give the same bytes
//! and the same digests.

use std::collections::BTreeMap;
use std::io::{self, Write};

use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The mtime of every file in every layer: 2024-01-01T00:00:00Z. Fixed so
/// that builds are reproducible; not 0, which some tools show as "missing".
pub const FIXED_MTIME: u64 = 1_704_067_200;

/// The image's single history entry.
const CREATED_BY: &str = "skiff image builder";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("not an image name with a tag (host/repository:tag): {0:?}")]
    InvalidName(String),
    #[error("cannot write the image {name}: {source}")]
    Write { name: String, source: io::Error },
}

/// One entry of the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// An image tarball in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciImage {
    /// The full image name, e.g. `skiff.local/pause:3.9`.
    pub name: String,
    /// The manifest digest, `sha256:...`, which names the image in content.
    pub digest: String,
    /// The OCI layout tarball.
    pub tarball: Vec<u8>,
}

/// A single-layer image assembled from in-memory files.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    name: String,
    entries: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    ports: Vec<u16>,
    working_dir: String,
}

impl ImageBuilder {
    /// `name` is the full reference, `host/repo:tag`; it is checked when the
    /// image is built.
    pub fn new(name: &str) -> ImageBuilder {
        ImageBuilder {
            name: name.to_owned(),
            entries: BTreeMap::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            ports: Vec::new(),
            working_dir: "/".into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(path: &str) -> String {
        path.trim_matches('/').to_owned()
    }

    /// Adds the missing parent directories of `path` (mode 0755).
    fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.entries
                .entry(parent.to_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            p = parent;
        }
    }

    fn insert(mut self, path: &str, entry: Entry) -> Self {
        let key = Self::key(path);
        self.parents(&key);
        self.entries.insert(key, entry);
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.insert(path, Entry::Dir { mode })
    }

    pub fn file(self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        let data = data.into();
        self.insert(path, Entry::File { mode, data })
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        let target = target.to_owned();
        self.insert(path, Entry::Symlink { target })
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Replaces the environment (default: only a `PATH`).
    pub fn env(mut self, vars: &[&str]) -> Self {
        self.env = vars.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn expose(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    fn write_error(&self) -> impl Fn(io::Error) -> OciError + '_ {
        move |source| OciError::Write {
            name: self.name.clone(),
            source,
        }
    }

    /// The uncompressed layer tar: sorted paths (a directory sorts before
    /// its contents), root-owned, fixed mtime.
    pub fn layer_tar(&self) -> Result<Vec<u8>, OciError> {
        self.layer_tar_io().map_err(self.write_error())
    }

    fn layer_tar_io(&self) -> io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(FIXED_MTIME);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), io::empty())?;
                }
                Entry::File { mode, data } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)?;
                }
            }
        }
        tar.into_inner()
    }

    /// The image config for a layer with this uncompressed content.
    pub fn config_json(&self, layer: &[u8]) -> Vec<u8> {
        let (arch, os) = platform();
        let diff_id = format!("sha256:{}", sha256_hex(layer));
        let mut config = json!({
            "architecture": arch,
            "os": os,
            "config": {
                "Env": self.env,
                "WorkingDir": self.working_dir,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": CREATED_BY}],
        });
        if !self.entrypoint.is_empty() {
            config["config"]["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            config["config"]["Cmd"] = json!(self.cmd);
        }
        if !self.ports.is_empty() {
            let ports: serde_json::Map<String, Value> = self
                .ports
                .iter()
                .map(|p| (format!("{p}/tcp"), json!({})))
                .collect();
            config["config"]["ExposedPorts"] = Value::Object(ports);
        }
        // A `Value` of strings, numbers and maps always serialises.
        config.to_string().into_bytes()
    }

    /// The image as an OCI layout tarball.
    pub fn build(&self) -> Result<OciImage, OciError> {
        let (_, tag) = split_name(&self.name)?;
        let layer = self.layer_tar()?;
        let layer_gz = gzip(&layer).map_err(self.write_error())?;
        let config = self.config_json(&layer);
        let (arch, os) = platform();

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", sha256_hex(&config)),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{}", sha256_hex(&layer_gz)),
                "size": layer_gz.len(),
            }],
        })
        .to_string()
        .into_bytes();
        let digest = format!("sha256:{}", sha256_hex(&manifest));

        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": manifest.len(),
                "platform": {"architecture": arch, "os": os},
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        })
        .to_string()
        .into_bytes();

        let mut blobs: BTreeMap<String, &[u8]> = BTreeMap::new();
        for blob in [&layer_gz[..], &config[..], &manifest[..]] {
            blobs.insert(sha256_hex(blob), blob);
        }
        let tarball = layout_tar(&index, &blobs).map_err(self.write_error())?;
        Ok(OciImage {
            name: self.name.clone(),
            digest,
            tarball,
        })
    }
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    gz.write_all(data)?;
    gz.finish()
}

/// The outer tarball: `oci-layout`, `index.json`, then the blobs by name.
fn layout_tar(index: &[u8], blobs: &BTreeMap<String, &[u8]>) -> io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], dir: bool| -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        header.set_size(data.len() as u64);
        if dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        out.append_data(&mut header, path, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, false)?;
    add("index.json", index, false)?;
    add("blobs/", &[], true)?;
    add("blobs/sha256/", &[], true)?;
    for (hex, data) in blobs {
        add(&format!("blobs/sha256/{hex}"), data, false)?;
    }
    out.into_inner()
}

/// The lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits `host/repo:tag` into (`host/repo`, `tag`), checking that both are
/// plain enough for a file name and a reference.
pub fn split_name(name: &str) -> Result<(&str, &str), OciError> {
    let bad = || OciError::InvalidName(name.to_owned());
    let (repo, tag) = name.rsplit_once(':').ok_or_else(bad)?;
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !tag.starts_with(['.', '-']);
    // A registry host may carry a port: `registry.example:5000/pause`.
    let path = match repo.split_once('/') {
        Some((host, path)) => match host.split_once(':') {
            Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => {
                format!("{host}/{path}")
            }
            _ => repo.to_owned(),
        },
        None => repo.to_owned(),
    };
    let repo_ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && path
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
    if tag_ok && repo_ok {
        Ok((repo, tag))
    } else {
        Err(bad())
    }
}

/// The OCI (architecture, os) of this machine.
pub fn platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    (arch, "linux")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(tarball: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(tarball);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            out.push((name, data));
        }
        out
    }

    fn sample() -> ImageBuilder {
        ImageBuilder::new("skiff.local/sample:1.0")
            .file("bin/app", 0o755, b"#!/bin/sh\n".to_vec())
            .symlink("bin/sh", "app")
            .entrypoint(&["/bin/app"])
    }

    #[test]
    fn the_same_files_give_the_same_bytes() {
        let a = sample().build().expect("build");
        let b = sample().build().expect("build");
        assert_eq!(a, b);
        let other = sample()
            .file("etc/x", 0o644, b"x".to_vec())
            .build()
            .expect("build");
        assert_ne!(a.digest, other.digest);
    }

    #[test]
    fn the_layout_names_the_image_and_its_blobs_by_digest() {
        let image = sample().build().expect("build");
        let files = entries(&image.tarball);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..4],
            ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
        );
        assert_eq!(names.len(), 7, "three blobs: {names:?}");
        for (name, data) in &files[4..] {
            let hex = name.strip_prefix("blobs/sha256/").expect("a blob");
            assert_eq!(hex, sha256_hex(data));
        }
        let index: Value = serde_json::from_slice(&files[1].1).expect("index json");
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], image.digest);
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "skiff.local/sample:1.0"
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "1.0"
        );
    }

    #[test]
    fn the_layer_holds_parents_before_children() {
        let layer = sample().layer_tar().expect("layer");
        let names: Vec<String> = entries(&layer).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bin/", "bin/app", "bin/sh"]);
    }

    #[test]
    fn names_without_a_tag_are_refused() {
        for bad in ["skiff.local/pause", "Upper/case:1", "x:", "x:-1", "/x:1"] {
            assert!(
                matches!(
                    ImageBuilder::new(bad).build(),
                    Err(OciError::InvalidName(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            split_name("registry.k8s.io/pause:3.6").expect("valid"),
            ("registry.k8s.io/pause", "3.6")
        );
        assert_eq!(
            split_name("registry.example:5000/pause:3.9").expect("valid"),
            ("registry.example:5000/pause", "3.9")
        );
        assert!(split_name("registry.example:x/pause:3.9").is_err());
    }
}
