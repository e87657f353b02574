//! Shared harness for the end-to-end tests.
//!
//! The tests treat Skiff as a user would: they run the real
//! `skiff-controlplane` binary, talk to it with unmodified kubectl releases,
//! raw HTTPS through curl, and the official Python client. Nothing here links
//! against the control plane's crates, so the tests check the wire behaviour
//! and not the implementation.
//!
//! * [`ControlPlane`] starts a private control plane (own port, own data
//!   directory) and can SIGKILL and restart it on the same data.
//! * [`Kubectl`] runs one kubectl release against it; [`ControlPlane::kubectls`]
//!   gives one per release found on the machine.
//! * [`Http`] sends raw requests with the admin credentials, or none.
//! * [`Output`] carries a finished command and assertion helpers that print the
//!   whole command and its output when they fail.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// How long a fresh or restarted control plane gets to answer `/readyz`.
/// Generous because CI machines are shared; a healthy start takes well under
/// a second.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound for any single command, so that a hung kubectl (a watch the
/// server never ends, a deletion wait that never sees its event) fails the test
/// with its output instead of stalling the whole suite.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (the workspace that contains this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_path_buf()
}

/// The control plane binary: `$SKIFF_CONTROLPLANE_BIN`, else the one cargo
/// built next to this test executable (`target/<profile>/`), else
/// `target/debug/` of the workspace.
pub fn controlplane_bin() -> PathBuf {
    if let Some(bin) = env::var_os("SKIFF_CONTROLPLANE_BIN") {
        return PathBuf::from(bin);
    }
    // Test executables live in target/<profile>/deps/.
    if let Ok(exe) = env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join("skiff-controlplane");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    workspace_root().join("target/debug/skiff-controlplane")
}

/// Environment variables removed from every child process. A proxy from the
/// surrounding environment would otherwise swallow requests to 127.0.0.1, and a
/// stray KUBECONFIG could point kubectl somewhere else.
const SCRUBBED_ENV: &[&str] = &[
    "KUBECONFIG",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn scrub_env(cmd: &mut Command) {
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
}

/// Writes straight to the process's stderr, past the test harness's output
/// capture, for facts that belong in every log (which kubectl releases ran).
fn announce(msg: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{msg}");
}

// ---------------------------------------------------------------------------
// Running processes
// ---------------------------------------------------------------------------

/// A finished command: how it was invoked, how it ended, what it printed.
#[derive(Clone)]
pub struct Output {
    pub command: String,
    /// Exit code; `None` if killed by a signal (including our own timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        match (self.timed_out, self.code) {
            (true, _) => writeln!(f, "result: killed after {COMMAND_TIMEOUT:?} timeout")?,
            (false, Some(code)) => writeln!(f, "exit code: {code}")?,
            (false, None) => writeln!(f, "result: killed by a signal")?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(
            f,
            "--- stderr ---\n{}\n--------------",
            self.stderr.trim_end()
        )
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "expected the command to succeed\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.timed_out && self.code.is_some() && !self.success(),
            "expected the command to fail with an error\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle),
            "expected stdout not to contain {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}\n{self}"
        );
        self
    }

    /// kubectl reports a server's `Status` error as `Error from server
    /// (Reason): message`, but newer releases print the `create <generator>`
    /// commands' errors as `error: failed to create <kind>: message`. Accept
    /// either form; the reason must be right wherever kubectl shows it.
    #[track_caller]
    pub fn assert_server_error(&self, reason: &str, message_part: &str) -> &Self {
        self.assert_failure();
        if self.stderr.contains("Error from server (") {
            self.assert_stderr_contains(&format!("Error from server ({reason})"));
        }
        self.assert_stderr_contains(message_part)
    }

    /// stdout, trimmed, must be exactly `expected`.
    #[track_caller]
    pub fn assert_stdout_is(&self, expected: &str) -> &Self {
        assert_eq!(self.stdout.trim(), expected, "unexpected stdout\n{self}");
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }

    /// Non-empty lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The table row (of stdout) whose first cell is `first_cell`, split into
    /// whitespace-separated cells.
    #[track_caller]
    pub fn row(&self, first_cell: &str) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|cells| cells.first().map(String::as_str) == Some(first_cell))
            .unwrap_or_else(|| panic!("no table row starting with {first_cell:?}\n{self}"))
    }
}

/// A running child process whose stdout and stderr are collected by threads,
/// so it can be inspected while it runs (watches) and never blocks on a full
/// pipe.
pub struct Background {
    command: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect<R: Read + Send + 'static>(
    mut src: R,
    into: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Background {
    /// Starts `cmd` with piped output and, if given, feeds `input` to stdin
    /// (then closes it, as a pipe into the command would).
    pub fn spawn(mut cmd: Command, input: Option<Vec<u8>>) -> Background {
        let command = describe_command(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            // A writer thread, because a large input can fill the pipe before
            // the child starts reading while we'd be waiting on its output.
            readers.push(thread::spawn(move || {
                let _ = stdin.write_all(&input);
            }));
        }
        Background {
            command,
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Polls stdout until `pred` holds or `timeout` passes; returns whether it
    /// held.
    pub fn wait_for_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stdout()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to end, killing it after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        self.finish(status.and_then(|s| s.code()), timed_out)
    }

    /// Kills the process (SIGKILL) and returns what it printed so far.
    pub fn kill(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.finish(status.and_then(|s| s.code()), false)
    }

    fn finish(self, code: Option<i32>, timed_out: bool) -> Output {
        // The pipes close when the process exits, unless a grandchild it left
        // behind still holds them; don't wait for such a one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        Output {
            command: self.command.clone(),
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Never leave a watcher behind when a test panics half-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn describe_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"(){}$*".contains(c)) {
            s.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&arg);
        }
    }
    s
}

/// Runs `cmd` to completion (bounded by [`COMMAND_TIMEOUT`]).
pub fn run_command(cmd: Command, input: Option<Vec<u8>>) -> Output {
    Background::spawn(cmd, input).wait(COMMAND_TIMEOUT)
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// The control plane
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    // The port is released before the control plane binds it; another process
    // could grab it in between, which start() handles by retrying.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free local port")
}

/// One private control plane: its own port, data directory and log, all in a
/// temporary directory that also holds the kubectl caches and scratch files of
/// the test. Killed when dropped; its log is printed if the test is failing.
pub struct ControlPlane {
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    /// The node API's port; every control plane serves one.
    node_api_port: u16,
    child: Option<Child>,
    starts: u32,
    http: OnceLock<Http>,
    scratch_counter: AtomicU64,
}

impl ControlPlane {
    /// Starts a control plane on a free port with an empty data directory and
    /// waits until it is ready.
    #[track_caller]
    pub fn start() -> ControlPlane {
        let bin = controlplane_bin();
        assert!(
            bin.is_file(),
            "control plane binary not found at {} (build it with `cargo build -p skiff-controlplane`, \
             or set SKIFF_CONTROLPLANE_BIN)",
            bin.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join("data")).unwrap();
        let mut cp = ControlPlane {
            tmp: Some(tmp),
            root,
            port: 0,
            node_api_port: 0,
            child: None,
            starts: 0,
            http: OnceLock::new(),
            scratch_counter: AtomicU64::new(0),
        };
        // A port picked by free_port() can be taken by a parallel test before
        // we bind it; only then is a fresh port worth another try.
        let mut last_err = String::new();
        for _ in 0..3 {
            cp.port = free_port();
            cp.node_api_port = free_port();
            match cp.spawn_and_wait() {
                Ok(()) => return cp,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "control plane did not start: {last_err}\n{}",
            cp.log_excerpt()
        );
    }

    /// The temporary directory that holds everything of this control plane.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn node_api_port(&self) -> u16 {
        self.node_api_port
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("controlplane.log")
    }

    /// The whole control plane log (all starts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_excerpt(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(300);
        format!(
            "--- control plane log ({}{}) ---\n{}\n--- end of control plane log ---",
            self.log_path().display(),
            if skip > 0 {
                format!(", last 300 of {} lines", lines.len())
            } else {
                String::new()
            },
            lines[skip..].join("\n")
        )
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the control plane log");
        let _ = writeln!(
            log,
            "===== e2e harness: start #{} on port {} =====",
            self.starts, self.port
        );
        let mut cmd = Command::new(controlplane_bin());
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(["--bind-address", "127.0.0.1", "--secure-port"])
            .arg(self.port.to_string())
            .arg("--node-api-port")
            .arg(self.node_api_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        scrub_env(&mut cmd);
        // Error chains (anyhow) print a backtrace when RUST_BACKTRACE is set,
        // which would bury the log excerpt; panics still get theirs.
        if env::var_os("RUST_LIB_BACKTRACE").is_none() {
            cmd.env("RUST_LIB_BACKTRACE", "0");
        }
        if env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", controlplane_bin().display()))?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                self.child = None;
                return Err(format!(
                    "the control plane exited during start-up ({status})"
                ));
            }
            let (code, _) = anonymous_get(&self.base_url(), "/readyz");
            if code == 200 && self.kubeconfig().is_file() {
                return Ok(());
            }
            let last = if code == 200 {
                "/readyz is 200 but admin.kubeconfig is missing".into()
            } else {
                format!("/readyz answered {code}")
            };
            if Instant::now() >= deadline {
                self.kill9();
                return Err(format!("not ready after {READY_TIMEOUT:?}: {last}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the control plane: no shutdown path runs, as in a crash or
    /// power loss.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the control plane if it runs, then starts it again on the same
    /// port and data directory, and waits until it is ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill9();
        // The old listening socket may linger briefly; give the new process a
        // few chances on the same port, since the kubeconfig names it.
        let mut last_err = String::new();
        for _ in 0..5 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "control plane did not restart: {last_err}\n{}",
            self.log_excerpt()
        );
    }

    /// Writes `content` to a new file in the test's directory and returns its
    /// path. The name keeps its extension, which kubectl uses to pick a
    /// decoder.
    pub fn file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let n = self.scratch_counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join("files").join(n.to_string());
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    /// One [`Kubectl`] per kubectl release found on this machine, each with its
    /// own discovery cache under this control plane's directory.
    pub fn kubectls(&self) -> Vec<Kubectl> {
        kubectl_releases()
            .iter()
            .map(|rel| {
                let base = self.root.join(format!("kubectl-{}", rel.tag));
                fs::create_dir_all(base.join("home")).unwrap();
                Kubectl {
                    release: rel.clone(),
                    kubeconfig: self.kubeconfig(),
                    cache_dir: base.join("cache"),
                    home: base.join("home"),
                }
            })
            .collect()
    }

    /// Runs `body` once with every kubectl release, announcing each. A
    /// failure with one release doesn't stop the others, so one run shows
    /// which releases break; the test then fails naming all of them.
    pub fn each_kubectl(&self, mut body: impl FnMut(&Kubectl)) {
        let mut failed = Vec::new();
        for k in self.kubectls() {
            section(&k);
            if panic::catch_unwind(AssertUnwindSafe(|| body(&k))).is_err() {
                failed.push(k.version().to_owned());
            }
        }
        assert!(
            failed.is_empty(),
            "failed with kubectl {} (details above)",
            failed.join(", ")
        );
    }

    /// kubectl 1.20, the release that is always present.
    pub fn kubectl(&self) -> Kubectl {
        self.kubectls().into_iter().next().unwrap()
    }

    /// Raw HTTPS access with the admin credentials from the kubeconfig.
    pub fn http(&self) -> &Http {
        self.http.get_or_init(|| {
            Http::from_kubeconfig(
                &self.kubeconfig(),
                &self.root.join("curl"),
                &self.base_url(),
            )
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("{}", self.log_excerpt());
            if env::var_os("SKIFF_E2E_KEEP").is_some() {
                if let Some(tmp) = self.tmp.take() {
                    let kept = tmp.keep();
                    eprintln!("kept the test directory {}", kept.display());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// kubectl
// ---------------------------------------------------------------------------

/// A kubectl release available on this machine.
#[derive(Clone, Debug)]
pub struct KubectlRelease {
    pub path: PathBuf,
    /// Full version, e.g. `v1.27.16`.
    pub git_version: String,
    pub minor: u32,
    /// Short name usable in object names, e.g. `k127`.
    pub tag: String,
}

/// Finds `name` on PATH, or beside the real file of the `kubectl` on PATH
/// (some installations keep their versioned kubectl binaries next to the
/// default one without putting that directory on PATH).
fn find_kubectl(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    for dir in &dirs {
        if let Ok(real) = fs::canonicalize(dir.join("kubectl")) {
            if let Some(candidate) = real.parent().map(|d| d.join(name)) {
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
    }
    None
}

fn probe_release(path: PathBuf) -> Result<KubectlRelease, String> {
    let mut cmd = Command::new(&path);
    cmd.args(["version", "--client", "-o", "json"]);
    scrub_env(&mut cmd);
    let out = run_command(cmd, None);
    if !out.success() {
        return Err(format!("`kubectl version` failed\n{out}"));
    }
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}\n{out}"))?;
    let info = &v["clientVersion"];
    let git_version = info["gitVersion"].as_str().unwrap_or_default().to_owned();
    let minor: u32 = info["minor"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('+')
        .parse()
        .map_err(|_| format!("cannot read the minor version\n{out}"))?;
    Ok(KubectlRelease {
        path,
        git_version,
        minor,
        tag: format!("k1{minor:02}"),
    })
}

/// The kubectl releases the tests run, oldest first: Debian's 1.20 (required;
/// `scripts/install-deps.sh` unpacks it under `target/tools/`), then
/// `kubectl.1.27` and `kubectl.1.33` where the machine has them. Printed once
/// per test binary so that every log says which releases ran.
pub fn kubectl_releases() -> &'static [KubectlRelease] {
    static RELEASES: OnceLock<Vec<KubectlRelease>> = OnceLock::new();
    RELEASES.get_or_init(|| {
        let debian = workspace_root().join("target/tools/kubectl-1.20/usr/bin/kubectl");
        assert!(
            debian.is_file(),
            "kubectl 1.20 is missing at {}; run scripts/install-deps.sh",
            debian.display()
        );
        let mut releases =
            vec![probe_release(debian).unwrap_or_else(|e| panic!("kubectl 1.20 is unusable: {e}"))];
        let mut missing = Vec::new();
        for name in ["kubectl.1.27", "kubectl.1.33"] {
            match find_kubectl(name).map(probe_release) {
                Some(Ok(rel)) => releases.push(rel),
                Some(Err(e)) => missing.push(format!("{name} (unusable: {e})")),
                None => missing.push(name.to_owned()),
            }
        }
        let ran: Vec<String> = releases
            .iter()
            .map(|r| format!("{} ({})", r.git_version, r.path.display()))
            .collect();
        announce(&format!(
            "e2e: kubectl releases under test: {}",
            ran.join(", ")
        ));
        if !missing.is_empty() {
            announce(&format!(
                "e2e: kubectl releases not found, skipped: {}",
                missing.join(", ")
            ));
        }
        releases
    })
}

static KUBECONFIG_VARIANTS: AtomicU64 = AtomicU64::new(0);

/// Runs one kubectl release against one control plane.
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub release: KubectlRelease,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    pub fn minor(&self) -> u32 {
        self.release.minor
    }

    /// Short tag (e.g. `k120`) for object names, so that the releases can share
    /// one control plane without colliding.
    pub fn tag(&self) -> &str {
        &self.release.tag
    }

    pub fn version(&self) -> &str {
        &self.release.git_version
    }

    /// The same release pointed at another kubeconfig (with a cache of its
    /// own, since discovery results depend on who asks).
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Kubectl {
        let n = KUBECONFIG_VARIANTS.fetch_add(1, Ordering::Relaxed);
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache_dir: self.cache_dir.with_file_name(format!("cache-variant-{n}")),
            ..self.clone()
        }
    }

    /// The command with its connection flags, ready for more arguments.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.release.path);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--cache-dir={}", self.cache_dir.display()))
            .args(args)
            // kubectl keeps other state under $HOME; keep it per test.
            .env("HOME", &self.home);
        scrub_env(&mut cmd);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_command(self.command(args), None)
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        run_command(self.command(args), Some(input.as_bytes().to_vec()))
    }

    /// Runs and asserts success.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        out.assert_success();
        out
    }

    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], input: &str) -> Output {
        let out = self.run_stdin(args, input);
        out.assert_success();
        out
    }

    /// Runs and asserts that kubectl reports an error.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        out.assert_failure();
        out
    }

    /// Starts a long-running kubectl (such as `get -w`).
    pub fn spawn(&self, args: &[&str]) -> Background {
        Background::spawn(self.command(args), None)
    }

    /// `kubectl get <args> -o json`, parsed.
    #[track_caller]
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        self.ok(&all).json()
    }

    /// Whether `kubectl get <kind> <name>` finds the object; any answer other
    /// than found or not found fails the test.
    #[track_caller]
    pub fn exists(&self, kind: &str, name: &str) -> bool {
        let out = self.ok(&["get", kind, name, "--ignore-not-found", "-o", "name"]);
        !out.stdout.trim().is_empty()
    }
}

// ---------------------------------------------------------------------------
// Raw HTTPS through curl
// ---------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Clone)]
pub struct Response {
    pub request: String,
    /// 0 when no HTTP answer came back (connection refused, reset, ...).
    pub status: u16,
    pub body: String,
    pub curl_stderr: String,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body: String = self.body.chars().take(4000).collect();
        write!(
            f,
            "request: {}\nstatus: {}\n--- body ---\n{}\n--- curl stderr ---\n{}\n-------------",
            self.request,
            self.status,
            body,
            self.curl_stderr.trim_end()
        )
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Response {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e})\n{self}"))
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected HTTP status\n{self}");
        self
    }

    /// The answer must be a Kubernetes `Status` failure with this HTTP code
    /// and reason, as kubectl and client libraries expect.
    #[track_caller]
    pub fn assert_k8s_status(&self, code: u16, reason: &str) -> &Self {
        self.assert_status(code);
        let v = self.json();
        assert_eq!(v["kind"], "Status", "body is not a Status\n{self}");
        assert_eq!(v["status"], "Failure", "Status is not a Failure\n{self}");
        assert_eq!(
            v["code"], code,
            "Status.code differs from the HTTP status\n{self}"
        );
        assert_eq!(v["reason"], reason, "unexpected Status.reason\n{self}");
        self
    }
}

fn curl_base() -> Command {
    let mut cmd = Command::new("curl");
    // -sS: quiet but keep errors; -w: the status code after the body, on its
    // own line, so one pipe carries both.
    cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
    scrub_env(&mut cmd);
    cmd
}

fn parse_curl(request: String, out: Output) -> Response {
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .unwrap_or(("", out.stdout.as_str()));
    Response {
        request,
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        curl_stderr: out.stderr,
    }
}

/// GET without any credentials or CA (used for readiness, where only the
/// status matters and the CA may not exist yet).
pub fn anonymous_get(base_url: &str, path: &str) -> (u16, String) {
    let mut cmd = curl_base();
    cmd.args(["-k", "--max-time", "3"])
        .arg(format!("{base_url}{path}"));
    let r = parse_curl(format!("GET {path}"), run_command(cmd, None));
    (r.status, r.body)
}

/// Raw HTTPS requests to one control plane, with the CA and client
/// certificate taken from its admin kubeconfig.
#[derive(Clone, Debug)]
pub struct Http {
    base_url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Http {
    fn from_kubeconfig(kubeconfig: &Path, dir: &Path, base_url: &str) -> Http {
        // Let kubectl parse the kubeconfig (YAML or JSON, inline data or file
        // references alike) and hand it back as JSON.
        let release = &kubectl_releases()[0];
        let mut cmd = Command::new(&release.path);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["config", "view", "--raw", "--minify", "-o", "json"]);
        scrub_env(&mut cmd);
        let out = run_command(cmd, None);
        out.assert_success();
        let cfg = out.json();
        let cluster = &cfg["clusters"][0]["cluster"];
        let user = &cfg["users"][0]["user"];
        fs::create_dir_all(dir).unwrap();
        let material = |obj: &Value, key: &str, file: &str| -> PathBuf {
            let dest = dir.join(file);
            if let Some(data) = obj[format!("{key}-data")].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .unwrap_or_else(|e| panic!("{key}-data in the kubeconfig is not base64: {e}"));
                fs::write(&dest, bytes).unwrap();
            } else if let Some(path) = obj[key].as_str() {
                let path = kubeconfig.parent().unwrap().join(path);
                fs::copy(&path, &dest)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            } else {
                panic!("the kubeconfig has neither {key} nor {key}-data\n{out}");
            }
            dest
        };
        Http {
            base_url: base_url.to_owned(),
            ca: material(cluster, "certificate-authority", "ca.crt"),
            cert: material(user, "client-certificate", "client.crt"),
            key: material(user, "client-key", "client.key"),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn ca(&self) -> &Path {
        &self.ca
    }

    fn request_inner(
        &self,
        with_cert: bool,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        let mut cmd = curl_base();
        cmd.arg("--cacert").arg(&self.ca);
        if with_cert {
            cmd.arg("--cert")
                .arg(&self.cert)
                .arg("--key")
                .arg(&self.key);
        }
        cmd.args(["-X", method, "-H", "Accept: application/json"]);
        if let Some(ct) = content_type {
            cmd.arg("-H").arg(format!("Content-Type: {ct}"));
        }
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.arg(format!("{}{path}", self.base_url));
        let request = format!(
            "{method} {path}{}{}",
            if with_cert { "" } else { " (anonymous)" },
            body.map(|b| {
                let shown: String = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
                format!(" body ({} bytes): {shown}", b.len())
            })
            .unwrap_or_default()
        );
        parse_curl(request, run_command(cmd, body.map(<[u8]>::to_vec)))
    }

    /// A request with the admin client certificate.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        self.request_inner(true, method, path, content_type, body)
    }

    /// A request that presents no client certificate (but does verify the
    /// server against the cluster CA).
    pub fn anonymous(&self, method: &str, path: &str) -> Response {
        self.request_inner(false, method, path, None, None)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, None)
    }

    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Some(body.as_bytes()),
        )
    }
}

// ---------------------------------------------------------------------------
// Small helpers for tests
// ---------------------------------------------------------------------------

/// Names of the items of a list object.
pub fn item_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.labels` as a sorted map, for readable comparisons.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints, into the test's captured output, which kubectl is about to run the
/// following steps, so that a failure says which release it was.
pub fn section(k: &Kubectl) {
    println!(
        "=== with kubectl {} ({})",
        k.version(),
        k.release.path.display()
    );
}

pub mod containerd;
pub mod fakenode;
pub mod images;
pub mod netns;

// ---------------------------------------------------------------------------
// Node agents
// ---------------------------------------------------------------------------

/// The agent binary: `$SKIFF_AGENT_BIN`, else the one cargo built next to
/// this test executable, else `target/debug/` of the workspace.
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = env::var_os("SKIFF_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    if let Ok(exe) = env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join("skiff-agent");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    workspace_root().join("target/debug/skiff-agent")
}

impl ControlPlane {
    /// `skiff-controlplane token create` on this control plane's data.
    #[track_caller]
    pub fn create_token(&self) -> String {
        let mut cmd = Command::new(controlplane_bin());
        cmd.args(["token", "create", "--data-dir"])
            .arg(self.data_dir());
        scrub_env(&mut cmd);
        let out = run_command(cmd, None);
        out.assert_success();
        out.stdout.trim().to_owned()
    }

    /// A `skiff-agent` command joining or connecting to this control plane
    /// as `node_name`, keeping its credentials in `data_dir`. `token` may be
    /// left out for an agent that has joined before.
    pub fn agent_command(&self, token: Option<&str>, node_name: &str, data_dir: &Path) -> Command {
        let bin = agent_bin();
        assert!(
            bin.is_file(),
            "agent binary not found at {} (build it with `cargo build -p skiff-agent`, or set SKIFF_AGENT_BIN)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--server")
            .arg(self.base_url())
            .arg("--node-api-port")
            .arg(self.node_api_port().to_string())
            .arg("--node-name")
            .arg(node_name)
            .arg("--data-dir")
            .arg(data_dir)
            // This agent runs in the host's own network namespace, whose
            // interfaces and CNI configuration are not the test's to touch.
            .arg("--pod-network=false");
        if let Some(token) = token {
            cmd.arg("--token").arg(token);
        }
        scrub_env(&mut cmd);
        cmd.env_remove("SKIFF_TOKEN");
        if env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd
    }

    /// Starts an agent in the background (see [`ControlPlane::agent_command`]).
    pub fn spawn_agent(&self, token: Option<&str>, node_name: &str, data_dir: &Path) -> Background {
        Background::spawn(self.agent_command(token, node_name, data_dir), None)
    }
}

impl Background {
    /// Polls stderr (where the agent and control plane log) until `pred`
    /// holds or `timeout` passes; returns whether it held.
    pub fn wait_for_stderr(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || pred(&self.stderr()))
    }
}

// ---------------------------------------------------------------------------
// Pod runtime: a control plane that node namespaces reach, agents inside them
// ---------------------------------------------------------------------------

impl ControlPlane {
    /// Starts a control plane like [`ControlPlane::start`], but listening on
    /// every address and with `san` (the underlay gateway) in its serving
    /// certificate, so that agents inside node namespaces reach it at `san`.
    /// kubectl still uses 127.0.0.1. Restart it with
    /// [`ControlPlane::restart_reachable_at`]; [`ControlPlane::restart`]
    /// binds loopback again.
    #[track_caller]
    pub fn start_reachable_at(san: &str) -> ControlPlane {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join("data")).unwrap();
        let mut cp = ControlPlane {
            tmp: Some(tmp),
            root,
            port: 0,
            node_api_port: 0,
            child: None,
            starts: 0,
            http: OnceLock::new(),
            scratch_counter: AtomicU64::new(0),
        };
        let mut last_err = String::new();
        for _ in 0..3 {
            cp.port = free_port();
            cp.node_api_port = free_port();
            match cp.spawn_reachable_at(san) {
                Ok(()) => return cp,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "control plane did not start: {last_err}\n{}",
            cp.log_excerpt()
        );
    }

    /// Kills a control plane started with
    /// [`ControlPlane::start_reachable_at`] if it runs, and starts it again
    /// on the same ports and data.
    #[track_caller]
    pub fn restart_reachable_at(&mut self, san: &str) {
        self.kill9();
        let mut last_err = String::new();
        for _ in 0..5 {
            match self.spawn_reachable_at(san) {
                Ok(()) => return,
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "control plane did not restart: {last_err}\n{}",
            self.log_excerpt()
        );
    }

    fn spawn_reachable_at(&mut self, san: &str) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the control plane log: {e}"))?;
        let mut cmd = Command::new(controlplane_bin());
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(["--bind-address", "0.0.0.0", "--tls-san", san])
            .arg("--secure-port")
            .arg(self.port.to_string())
            .arg("--node-api-port")
            .arg(self.node_api_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        scrub_env(&mut cmd);
        cmd.env("RUST_LIB_BACKTRACE", "0");
        if env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        self.starts += 1;
        self.child = Some(
            cmd.spawn()
                .map_err(|e| format!("cannot run the control plane: {e}"))?,
        );
        let ready = wait_until(READY_TIMEOUT, || {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            exited
                || (anonymous_get(&self.base_url(), "/readyz").0 == 200
                    && self.kubeconfig().is_file())
        });
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if ready && alive {
            return Ok(());
        }
        self.kill9();
        Err("did not become ready (or exited)".into())
    }

    /// A `skiff-agent` command for a node that reaches this control plane
    /// at `server_host` (see [`ControlPlane::start_reachable_at`]); wrap it
    /// in a namespace with [`pod_runtime_agent_in`].
    pub fn agent_args_at(
        &self,
        server_host: &str,
        token: Option<&str>,
        node_name: &str,
        data_dir: &Path,
    ) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--server".into(),
            format!("https://{server_host}:{}", self.port).into(),
            "--node-api-port".into(),
            self.node_api_port.to_string().into(),
            "--node-name".into(),
            node_name.into(),
            "--data-dir".into(),
            data_dir.into(),
        ];
        if let Some(token) = token {
            args.push("--token".into());
            args.push(token.into());
        }
        args
    }
}

/// Starts the agent binary inside `node` (network namespace only) with
/// `args`, its environment scrubbed like every child of the harness.
pub fn pod_runtime_agent_in(node: &netns::NodeNetns, args: &[std::ffi::OsString]) -> Background {
    let bin = agent_bin();
    assert!(
        bin.is_file(),
        "agent binary not found at {} (build it with `cargo build -p skiff-agent`)",
        bin.display()
    );
    let mut cmd = node.command(bin);
    cmd.args(args);
    scrub_env(&mut cmd);
    cmd.env_remove("SKIFF_TOKEN");
    if env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    Background::spawn(cmd, None)
}
