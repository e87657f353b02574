//! Container images for the tests, built locally: there is no registry.
//!
//! An image is written as an OCI image-layout tarball (`oci-layout`,
//! `index.json`, `blobs/sha256/...`: one gzip layer, the config and the
//! manifest, all addressed by their sha256), which `ctr images import` and
//! Skiff's agent load as is. The index entry carries the
//! `io.containerd.image.name` annotation (the full name, which containerd
//! uses) and `org.opencontainers.image.ref.name` (the tag), and the host's
//! platform.
//!
//! Output is deterministic: entries are sorted, owned by root, with a fixed
//! mtime, and gzip carries no timestamp or name, so building the same image
//! twice gives the same bytes and the same digests (and a cached tarball can
//! be reused as is).
//!
//! Images:
//! * [`pause_image`]: `skiff.local/pause:3.9`, the sandbox process from
//!   `packaging/pause/pause.c`, compiled static with gcc once per source
//!   version into [`cache_dir`].
//! * [`webapp_image`]: `skiff.local/webapp:<version>`, Debian's static busybox
//!   running `httpd -f -p 80 -h /www` under a small shell init. See
//!   [`webapp_image`] for what it answers.
//! * [`ImageBuilder`] for anything else.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The name the pause image is imported under, and the `sandbox_image` of
/// every private containerd.
pub const PAUSE_IMAGE: &str = "skiff.local/pause:3.9";

/// The mtime of every file in every layer: 2024-01-01T00:00:00Z. Fixed so that
/// builds are reproducible; not 0, which some tools show as "missing".
const FIXED_MTIME: u64 = 1_704_067_200;

/// Part of every cache key: bump it when the tarball format changes.
const FORMAT_VERSION: &str = "skiff-e2e-oci-1";

/// An image tarball on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTarball {
    pub path: PathBuf,
    /// The full image name, e.g. `skiff.local/webapp:1.0`.
    pub name: String,
    /// The manifest digest, `sha256:...`, which names the image in content.
    pub digest: String,
}

/// The name of the web app image of `version`.
pub fn webapp_image_name(version: &str) -> String {
    format!("skiff.local/webapp:{version}")
}

/// Where built artefacts are cached between runs: `$SKIFF_E2E_CACHE`, else
/// `e2e-cache` in the cargo target directory of the running test.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("SKIFF_E2E_CACHE") {
        return PathBuf::from(dir);
    }
    // Test executables live in <target>/<profile>/deps/.
    if let Ok(exe) = env::current_exe() {
        if let Some(deps) = exe.parent().filter(|d| d.ends_with("deps")) {
            if let Some(target) = deps.parent().and_then(Path::parent) {
                return target.join("e2e-cache");
            }
        }
    }
    crate::workspace_root().join("target").join("e2e-cache")
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Writes `data` to `path` through a temporary file and a rename, so that a
/// parallel reader never sees a partial file.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        crate::netns::unique_suffix()
    ));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------
// The generic builder
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// A single-layer image assembled from in-memory files.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    name: String,
    entries: BTreeMap<String, Node>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    ports: Vec<u16>,
    working_dir: String,
}

impl ImageBuilder {
    /// `name` is the full reference, `host/repo:tag`.
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

    fn key(path: &str) -> String {
        path.trim_matches('/').to_owned()
    }

    /// Adds the missing parent directories of `path` (mode 0755).
    fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.entries
                .entry(parent.to_owned())
                .or_insert(Node::Dir { mode: 0o755 });
            p = parent;
        }
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let k = Self::key(path);
        self.parents(&k);
        self.entries.insert(k, Node::Dir { mode });
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        let k = Self::key(path);
        self.parents(&k);
        self.entries.insert(
            k,
            Node::File {
                mode,
                data: data.into(),
            },
        );
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let k = Self::key(path);
        self.parents(&k);
        self.entries.insert(
            k,
            Node::Symlink {
                target: target.to_owned(),
            },
        );
        self
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

    /// The uncompressed layer tar: sorted paths (a directory sorts before
    /// its contents), root-owned, fixed mtime.
    fn layer_tar(&self) -> io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, node) in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(FIXED_MTIME);
            match node {
                Node::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())?;
                }
                Node::File { mode, data } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Node::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
            }
        }
        tar.into_inner()
    }

    /// Writes the image tarball into `out_dir` (as `<repo>-<tag>.tar`) and
    /// returns it. A tarball built before from the same content is copied from
    /// [`cache_dir`] instead (compressing the layer is the slow part).
    pub fn write(&self, out_dir: &Path) -> io::Result<ImageTarball> {
        let (repo, tag) = split_name(&self.name)?;
        let file = format!("{}-{tag}.tar", repo.rsplit('/').next().unwrap_or(repo));
        let layer = self.layer_tar()?;
        let mut key = Sha256::new();
        key.update(FORMAT_VERSION.as_bytes());
        key.update(self.name.as_bytes());
        key.update([0]);
        key.update(self.config_json(&layer)?);
        key.update(&layer);
        let key: String = key
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let cached = cache_dir().join("images").join(&key);
        let path = out_dir.join(&file);
        if let Ok(digest) = fs::read_to_string(cached.join("digest")) {
            let tmp = out_dir.join(format!(".{file}.{}", crate::netns::unique_suffix()));
            if fs::copy(cached.join("image.tar"), &tmp).is_ok() {
                fs::rename(&tmp, &path)?;
                return Ok(ImageTarball {
                    path,
                    name: self.name.clone(),
                    digest: digest.trim().to_owned(),
                });
            }
            let _ = fs::remove_file(&tmp);
        }
        let image = self.write_uncached(out_dir)?;
        // The tarball first, then the digest file that marks the entry
        // complete; a failed write only costs the next build its shortcut.
        let _ = fs::read(&image.path)
            .and_then(|data| write_atomic(&cached.join("image.tar"), &data))
            .and_then(|()| write_atomic(&cached.join("digest"), image.digest.as_bytes()));
        Ok(image)
    }

    /// The image config for a layer with this uncompressed content.
    fn config_json(&self, layer: &[u8]) -> io::Result<Vec<u8>> {
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
            "history": [{"created_by": "skiff-e2e image builder"}],
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
        serde_json::to_vec(&config).map_err(io::Error::other)
    }

    /// [`ImageBuilder::write`] without the cache: always builds.
    pub fn write_uncached(&self, out_dir: &Path) -> io::Result<ImageTarball> {
        let (repo, tag) = split_name(&self.name)?;
        let (arch, os) = platform();

        let layer = self.layer_tar()?;
        let mut gz = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::default());
        gz.write_all(&layer)?;
        let layer_gz = gz.finish()?;

        let config = self.config_json(&layer)?;

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
        });
        let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));

        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": {"architecture": arch, "os": os},
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        let index = serde_json::to_vec(&index).map_err(io::Error::other)?;

        let mut blobs: BTreeMap<String, &[u8]> = BTreeMap::new();
        for blob in [&layer_gz[..], &config[..], &manifest[..]] {
            blobs.insert(sha256_hex(blob), blob);
        }
        let mut out = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], dir: bool| -> io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(FIXED_MTIME);
            h.set_size(data.len() as u64);
            if dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
            }
            out.append_data(&mut h, path, data)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, false)?;
        add("index.json", &index, false)?;
        add("blobs/", &[], true)?;
        add("blobs/sha256/", &[], true)?;
        for (hex, data) in &blobs {
            add(&format!("blobs/sha256/{hex}"), data, false)?;
        }
        let tarball = out.into_inner()?;

        let file = format!("{}-{tag}.tar", repo.rsplit('/').next().unwrap_or(repo));
        let path = out_dir.join(file);
        write_atomic(&path, &tarball)?;
        Ok(ImageTarball {
            path,
            name: self.name.clone(),
            digest: manifest_digest,
        })
    }
}

/// Splits `host/repo:tag` into (`host/repo`, `tag`), checking that both are
/// plain enough for a file name and a reference.
fn split_name(name: &str) -> io::Result<(&str, &str)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an image name with a tag: {name:?}"),
        )
    };
    let (repo, tag) = name.rsplit_once(':').ok_or_else(bad)?;
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !tag.starts_with(['.', '-']);
    let repo_ok = !repo.is_empty()
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
    if tag_ok && repo_ok {
        Ok((repo, tag))
    } else {
        Err(bad())
    }
}

/// The OCI (architecture, os) of the machine, whose binaries go into images.
fn platform() -> (&'static str, &'static str) {
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    (arch, "linux")
}

// ---------------------------------------------------------------------------
// The pause image
// ---------------------------------------------------------------------------

/// `packaging/pause/pause.c` of this workspace.
pub fn pause_source() -> PathBuf {
    crate::workspace_root()
        .join("packaging")
        .join("pause")
        .join("pause.c")
}

const PAUSE_CFLAGS: &[&str] = &["-static", "-Os", "-s", "-Wall"];

/// The static pause binary, compiled with gcc on first use and cached in
/// [`cache_dir`] under a hash of the source and flags.
pub fn pause_binary() -> io::Result<PathBuf> {
    let src_path = pause_source();
    let src = fs::read(&src_path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot read {}: {e}", src_path.display()))
    })?;
    let mut key = src.clone();
    key.extend_from_slice(PAUSE_CFLAGS.join(" ").as_bytes());
    let dir = cache_dir().join("pause").join(&sha256_hex(&key)[..16]);
    let bin = dir.join("pause");
    if bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        "pause.{}.{}",
        std::process::id(),
        crate::netns::unique_suffix()
    ));
    crate::netns::run(
        Command::new("gcc")
            .args(PAUSE_CFLAGS)
            .arg("-o")
            .arg(&tmp)
            .arg(&src_path),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("{e} (is libc6-dev installed?)")))?;
    fs::rename(&tmp, &bin)?;
    Ok(bin)
}

/// Builds [`PAUSE_IMAGE`] into `out_dir`: `/pause` alone, as the entrypoint.
pub fn pause_image(out_dir: &Path) -> io::Result<ImageTarball> {
    pause_builder()?.write(out_dir)
}

/// The builder behind [`pause_image`].
pub fn pause_builder() -> io::Result<ImageBuilder> {
    let bin = fs::read(pause_binary()?)?;
    Ok(ImageBuilder::new(PAUSE_IMAGE)
        .file("pause", 0o755, bin)
        .entrypoint(&["/pause"])
        .env(&[]))
}

// ---------------------------------------------------------------------------
// The web app image
// ---------------------------------------------------------------------------

/// The busybox applets linked in `/bin` of the web app image.
pub const WEBAPP_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "httpd",
    "nc",
    "wget",
    "cat",
    "hostname",
    "sleep",
    "ls",
    "echo",
    "env",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ps",
    "kill",
    "grep",
    "sed",
    "awk",
    "head",
    "tail",
    "printf",
    "test",
    "[",
    "true",
    "false",
    "id",
    "ip",
    "ifconfig",
    "netstat",
    "nslookup",
    "ping",
    "date",
    "touch",
    "wc",
    "sort",
    "uname",
    "mount",
    "df",
    "free",
    "top",
    "vi",
    "dd",
    "tr",
    "cut",
    "xargs",
    "seq",
    "timeout",
    "usleep",
    "du",
    "stat",
    "find",
    "readlink",
    "basename",
    "dirname",
    "chmod",
    "ln",
    "pidof",
    "killall",
    "tee",
    "md5sum",
    "sha256sum",
    "base64",
    "nproc",
    "uptime",
    "whoami",
];

/// Where Debian's busybox-static puts its binary; `$SKIFF_BUSYBOX` overrides.
fn static_busybox() -> io::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match env::var_os("SKIFF_BUSYBOX") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    for path in candidates {
        let Ok(data) = fs::read(&path) else { continue };
        match elf_is_static(&data) {
            Some(true) => return Ok(path),
            Some(false) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} is dynamically linked; install busybox-static",
                        path.display()
                    ),
                ))
            }
            None => continue,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no static busybox found; install busybox-static",
    ))
}

/// Whether a 64-bit little-endian ELF file has no program interpreter
/// (`PT_INTERP`), i.e. runs without a dynamic loader. `None` if it is not
/// such an ELF file.
fn elf_is_static(data: &[u8]) -> Option<bool> {
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        const PT_INTERP: u32 = 3;
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// The web app's main process (PID 1 of its container). httpd is not PID 1,
/// because PID 1 ignores signals it has no handler for: this script traps
/// them. SIGTERM/SIGINT (a stop) end httpd and exit 0; SIGUSR1 (sent by
/// `/kill`) exits 1 after a moment, so the `/kill` answer gets out first.
const WEBAPP_INIT: &str = r#"#!/bin/sh
# Main process of the Skiff test web app: runs busybox httpd on /www.
# SIGTERM/SIGINT: stop and exit 0. SIGUSR1 (from /kill): exit 1.
echo $$ > /run/webapp.pid
code=
trap 'code=0' TERM INT
trap 'code=1' USR1
httpd -f -p "${WEBAPP_PORT:-80}" -h /www &
child=$!
[ -n "$code" ] || wait "$child"
status=$?
if [ -z "$code" ]; then
    echo "webapp: httpd exited with status $status" >&2
    exit "$status"
fi
if [ "$code" = 1 ]; then
    echo "webapp: exiting on /kill" >&2
    sleep 0.2
fi
kill "$child" 2>/dev/null
wait "$child" 2>/dev/null
exit "$code"
"#;

/// The CGI behind every directory URL (busybox httpd runs
/// `/cgi-bin/index.cgi` for a directory without `index.html`) and behind
/// `/cgi-bin/kill`.
fn webapp_cgi(version: &str) -> String {
    format!(
        r#"#!/bin/sh
# "/" answers the version and hostname; "/kill/" (where httpd redirects
# "/kill") and "/cgi-bin/kill" also make the app exit.
printf 'Content-Type: text/plain\r\n\r\n'
case "$REQUEST_URI" in
/kill/*|/cgi-bin/kill*)
    echo "Version {version} on $(hostname): exiting"
    kill -USR1 "$(cat /run/webapp.pid)"
    ;;
*)
    echo "Version {version} on $(hostname)"
    ;;
esac
"#
    )
}

const WEBAPP_ENV_CGI: &str = r#"#!/bin/sh
# The environment of the app, one VAR=value a line, sorted.
printf 'Content-Type: text/plain\r\n\r\n'
env | sort
"#;

/// Builds `skiff.local/webapp:<version>` into `out_dir`.
///
/// Its main process runs `httpd -f -p 80 -h /www` (the port can be changed
/// with `WEBAPP_PORT`, for several in one pod). It answers:
/// * `/`: `Version <version> on <hostname>` (one line, see
///   [`parse_webapp_reply`]);
/// * `/kill/` and `/cgi-bin/kill`: `Version <version> on <hostname>:
///   exiting`, then the main process exits with status 1. A plain `/kill`
///   gets a 302 to `/kill/` (busybox httpd only runs `index.cgi` for
///   directories), so a client must follow redirects (`wget` does, `curl`
///   needs `-L`) or use one of the other two URLs;
/// * `/cgi-bin/env`: the container's environment, sorted.
///
/// SIGTERM makes it exit 0 at once. `version` may hold letters, digits, `.`,
/// `_` and `-`.
pub fn webapp_image(out_dir: &Path, version: &str) -> io::Result<ImageTarball> {
    webapp_builder(version)?.write(out_dir)
}

/// The builder behind [`webapp_image`].
pub fn webapp_builder(version: &str) -> io::Result<ImageBuilder> {
    let name = webapp_image_name(version);
    split_name(&name)?;
    let busybox = fs::read(static_busybox()?)?;
    let mut b = ImageBuilder::new(&name)
        .file("bin/busybox", 0o755, busybox)
        .file("bin/webapp", 0o755, WEBAPP_INIT)
        .dir("www/kill", 0o755)
        .file("www/cgi-bin/index.cgi", 0o755, webapp_cgi(version))
        .symlink("www/cgi-bin/kill", "index.cgi")
        .file("www/cgi-bin/env", 0o755, WEBAPP_ENV_CGI)
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .file("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n")
        .dir("tmp", 0o1777)
        .dir("run", 0o755)
        .dir("root", 0o700)
        .dir("proc", 0o755)
        .dir("sys", 0o755)
        .dir("dev", 0o755)
        .entrypoint(&["/bin/webapp"])
        .env(&["PATH=/bin"])
        .expose(80);
    for applet in WEBAPP_APPLETS {
        b = b.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(b)
}

/// Splits a web app answer `Version 1.0 on web-1` into (`1.0`, `web-1`).
pub fn parse_webapp_reply(body: &str) -> Option<(String, String)> {
    let line = body.lines().next()?.trim();
    let rest = line.strip_prefix("Version ")?;
    let (version, host) = rest.split_once(" on ")?;
    let host = host.strip_suffix(": exiting").unwrap_or(host);
    Some((version.to_owned(), host.to_owned()))
}
