//! Container images for the tests, built locally: there is no registry.
//!
//! An image is an OCI image-layout tarball, written by the agent's
//! [`skiff_agent::oci`] (one gzip layer, the config and the manifest, named
//! by their sha256; the full name and the tag in the index annotations), so
//! the tests load exactly what the agent itself writes. `ctr images import`
//! and Skiff's agent load it as is.
//!
//! Output is deterministic (see [`skiff_agent::oci`]), so building the same
//! image twice gives the same bytes and the same digests, and a cached
//! tarball can be reused as is.
//!
//! Images:
//! * [`pause_image`]: `skiff.local/pause:3.9`, the pause image the agent
//!   carries (`packaging/pause/pause.c`, compiled static by the agent's build
//!   script).
//! * [`webapp_image`]: `skiff.local/webapp:<version>`, Debian's static busybox
//!   running `httpd -f -p 80 -h /www` under a small shell init. See
//!   [`webapp_image`] for what it answers.
//! * [`ImageBuilder`] for anything else.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use skiff_agent::oci;

/// The name the pause image is imported under, and the `sandbox_image` of
/// every private containerd unless a test asks for another.
pub const PAUSE_IMAGE: &str = skiff_agent::pause::DEFAULT_IMAGE_NAME;

/// Part of every cache key: bump it when the tarball format changes.
const FORMAT_VERSION: &str = "skiff-e2e-oci-2";

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

fn io_error(error: oci::OciError) -> io::Error {
    match error {
        oci::OciError::InvalidName(_) => io::Error::new(io::ErrorKind::InvalidInput, error),
        oci::OciError::Write { .. } => io::Error::other(error),
    }
}

// ---------------------------------------------------------------------------
// The generic builder
// ---------------------------------------------------------------------------

/// A single-layer image assembled from in-memory files: the agent's
/// [`oci::ImageBuilder`], written to disk through a cache.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    image: oci::ImageBuilder,
}

impl From<oci::ImageBuilder> for ImageBuilder {
    fn from(image: oci::ImageBuilder) -> ImageBuilder {
        ImageBuilder { image }
    }
}

impl ImageBuilder {
    /// `name` is the full reference, `host/repo:tag`.
    pub fn new(name: &str) -> ImageBuilder {
        oci::ImageBuilder::new(name).into()
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.image.dir(path, mode).into()
    }

    pub fn file(self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        self.image.file(path, mode, data).into()
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.image.symlink(path, target).into()
    }

    pub fn entrypoint(self, argv: &[&str]) -> Self {
        self.image.entrypoint(argv).into()
    }

    pub fn cmd(self, argv: &[&str]) -> Self {
        self.image.cmd(argv).into()
    }

    /// Replaces the environment (default: only a `PATH`).
    pub fn env(self, vars: &[&str]) -> Self {
        self.image.env(vars).into()
    }

    pub fn expose(self, port: u16) -> Self {
        self.image.expose(port).into()
    }

    /// `<repo>-<tag>.tar`, the tarball's file name.
    fn file_name(&self) -> io::Result<String> {
        let (repo, tag) = oci::split_name(self.image.name()).map_err(io_error)?;
        Ok(format!(
            "{}-{tag}.tar",
            repo.rsplit('/').next().unwrap_or(repo)
        ))
    }

    /// Writes the image tarball into `out_dir` (as `<repo>-<tag>.tar`) and
    /// returns it. A tarball built before from the same content is copied from
    /// [`cache_dir`] instead (compressing the layer is the slow part).
    pub fn write(&self, out_dir: &Path) -> io::Result<ImageTarball> {
        let file = self.file_name()?;
        let name = self.image.name().to_owned();
        let layer = self.image.layer_tar().map_err(io_error)?;
        let mut key = Sha256::new();
        key.update(FORMAT_VERSION.as_bytes());
        key.update(name.as_bytes());
        key.update([0]);
        key.update(self.image.config_json(&layer));
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
                    name,
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

    /// [`ImageBuilder::write`] without the cache: always builds.
    pub fn write_uncached(&self, out_dir: &Path) -> io::Result<ImageTarball> {
        let path = out_dir.join(self.file_name()?);
        let image = self.image.build().map_err(io_error)?;
        write_atomic(&path, &image.tarball)?;
        Ok(ImageTarball {
            path,
            name: image.name,
            digest: image.digest,
        })
    }
}

// ---------------------------------------------------------------------------
// The pause image
// ---------------------------------------------------------------------------

/// Builds [`PAUSE_IMAGE`] into `out_dir`: the agent's pause image.
pub fn pause_image(out_dir: &Path) -> io::Result<ImageTarball> {
    pause_builder()?.write(out_dir)
}

/// The builder behind [`pause_image`].
pub fn pause_builder() -> io::Result<ImageBuilder> {
    Ok(skiff_agent::pause::image_builder(PAUSE_IMAGE).into())
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
    oci::split_name(&name).map_err(io_error)?;
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
