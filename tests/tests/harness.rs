//! The test cluster harness itself: reproducible images, a private containerd
//! in a node namespace that runs the web app, and teardown that leaves no
//! mount, namespace, link, cgroup or process behind.
//!
//! Needs root, containerd, runc, busybox-static, containernetworking-plugins,
//! iproute2, iptables and gcc with libc6-dev (`scripts/install-deps.sh`).
//! The tests that start containerd run one at a time (they compare machine
//! state before and after), and no other containerd-starting tests should run
//! on the machine meanwhile.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skiff_e2e::containerd::{mountinfo, PrivateContainerd};
use skiff_e2e::images::{self, parse_webapp_reply, ImageTarball, PAUSE_IMAGE};
use skiff_e2e::netns::{self, NodeNetns, Underlay};
use skiff_e2e::{run_command, wait_until, Background, Output};

/// Serialises the tests that compare machine state before and after.
static MACHINE: Mutex<()> = Mutex::new(());

fn machine_lock() -> std::sync::MutexGuard<'static, ()> {
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

fn require_root() {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    assert_eq!(uid.as_deref(), Some("0"), "these tests need root");
}

/// A short temporary directory: socket paths inside must stay short.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("skh")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    println!("timing: {what}: {}", ms(t.elapsed()));
    v
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

fn tar_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = fs::File::open(path).expect("open tarball");
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = entry.path().expect("entry path").display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
        out.push((name, data));
    }
    out
}

#[test]
fn images_are_reproducible() {
    let a = tempdir();
    let b = tempdir();
    let c = tempdir();
    // Two builds from scratch, and one through the cache.
    let build = |dir: &Path, cached: bool| -> (ImageTarball, ImageTarball, ImageTarball) {
        let write = |what: &str, builder: images::ImageBuilder| {
            timed(
                &format!(
                    "build {what}{}",
                    if cached { " (cache allowed)" } else { "" }
                ),
                || {
                    if cached {
                        builder.write(dir)
                    } else {
                        builder.write_uncached(dir)
                    }
                    .expect("image build")
                },
            )
        };
        (
            write("pause", images::pause_builder().expect("pause builder")),
            write(
                "webapp:1.0",
                images::webapp_builder("1.0").expect("webapp builder"),
            ),
            write(
                "webapp:2.0",
                images::webapp_builder("2.0").expect("webapp builder"),
            ),
        )
    };
    let (pause_a, web_a, web2_a) = build(a.path(), false);
    let (pause_b, web_b, web2_b) = build(b.path(), false);
    images::webapp_image(c.path(), "1.0").expect("fills the cache");
    let (pause_c, web_c, web2_c) = build(c.path(), true);

    assert_eq!(pause_a.name, PAUSE_IMAGE);
    assert_eq!(web_a.name, "skiff.local/webapp:1.0");
    for (x, y) in [
        (&pause_a, &pause_b),
        (&web_a, &web_b),
        (&web2_a, &web2_b),
        (&pause_a, &pause_c),
        (&web_a, &web_c),
        (&web2_a, &web2_c),
    ] {
        assert_eq!(
            x.digest, y.digest,
            "{} digests differ between builds",
            x.name
        );
        assert_eq!(
            fs::read(&x.path).expect("read"),
            fs::read(&y.path).expect("read"),
            "{} tarballs differ between builds",
            x.name
        );
    }
    assert_ne!(web_a.digest, web2_a.digest, "versions must differ");

    // The layout: oci-layout, index.json naming the image, three blobs whose
    // names are their digests.
    let entries = tar_entries(&web_a.path);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
    );
    let index: serde_json::Value = serde_json::from_slice(
        &entries
            .iter()
            .find(|(n, _)| n == "index.json")
            .expect("index")
            .1,
    )
    .expect("json");
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "skiff.local/webapp:1.0"
    );
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1.0");
    assert_eq!(m["platform"]["os"], "linux");
    assert_eq!(m["digest"], web_a.digest.as_str());
    for (name, data) in &entries {
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            use sha2::Digest as _;
            let got: String = sha2::Sha256::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, hex, "blob {name} is not addressed by its digest");
        }
    }
    println!(
        "sizes: pause {} KiB, webapp {} KiB",
        fs::metadata(&pause_a.path).expect("size").len() / 1024,
        fs::metadata(&web_a.path).expect("size").len() / 1024
    );
}

#[test]
fn webapp_reply_parses() {
    assert_eq!(
        parse_webapp_reply("Version 1.0 on web-1\n"),
        Some(("1.0".into(), "web-1".into()))
    );
    assert_eq!(
        parse_webapp_reply("Version 2.0 on a: exiting\n"),
        Some(("2.0".into(), "a".into()))
    );
    assert_eq!(parse_webapp_reply("hello"), None);
}

// ---------------------------------------------------------------------------
// Machine state, for the before/after comparisons
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct MachineState {
    mounts: BTreeSet<String>,
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    processes: BTreeSet<String>,
    shim_sockets: BTreeSet<String>,
    ctr_fifos: BTreeSet<String>,
    cni_cache: BTreeSet<String>,
}

fn list_dir(dir: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Cgroup directories down to three levels (pods and containers sit at two).
fn cgroup_dirs() -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
        if depth == 0 {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let p = e.path();
                out.insert(
                    p.strip_prefix(root)
                        .map(|r| format!("{}:{}", root.display(), r.display()))
                        .unwrap_or_default(),
                );
                walk(root, &p, depth - 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for m in mountinfo()
        .into_iter()
        .filter(|m| m.fstype.starts_with("cgroup"))
    {
        walk(&m.mount_point, &m.mount_point, 3, &mut out);
    }
    out
}

/// Live processes of the kinds a container runtime leaves behind.
fn runtime_processes() -> BTreeSet<String> {
    // Command names are cut to 15 bytes ("containerd-shim"); the web app's
    // main process is its script, "webapp".
    const KINDS: &[&str] = &[
        "containerd",
        "containerd-shim",
        "runc",
        "pause",
        "httpd",
        "webapp",
        "ctr",
        "nsenter",
    ];
    let mut out = BTreeSet::new();
    for e in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
        if state != "Z" && KINDS.contains(&comm) {
            out.insert(format!("{pid} {comm}"));
        }
    }
    out
}

fn machine_state() -> MachineState {
    MachineState {
        mounts: mountinfo()
            .into_iter()
            .map(|m| format!("{} {}", m.mount_point.display(), m.fstype))
            .collect(),
        netns: netns::list_netns().into_iter().collect(),
        links: netns::list_links().into_iter().collect(),
        cgroups: cgroup_dirs(),
        processes: runtime_processes(),
        shim_sockets: list_dir("/run/containerd/s"),
        ctr_fifos: list_dir("/run/containerd/fifo"),
        cni_cache: list_dir("/var/lib/cni/results"),
    }
}

/// Asserts that `after` holds nothing that `before` lacks (things that were
/// there before may have gone: other tests' objects, our own temp dirs).
fn assert_nothing_left(before: &MachineState, after: &MachineState) {
    let new =
        |b: &BTreeSet<String>, a: &BTreeSet<String>| a.difference(b).cloned().collect::<Vec<_>>();
    let leftovers = [
        ("mounts", new(&before.mounts, &after.mounts)),
        ("network namespaces", new(&before.netns, &after.netns)),
        ("links", new(&before.links, &after.links)),
        ("cgroups", new(&before.cgroups, &after.cgroups)),
        ("processes", new(&before.processes, &after.processes)),
        (
            "shim sockets",
            new(&before.shim_sockets, &after.shim_sockets),
        ),
        (
            "ctr FIFO directories",
            new(&before.ctr_fifos, &after.ctr_fifos),
        ),
        (
            "CNI cache entries",
            new(&before.cni_cache, &after.cni_cache),
        ),
    ];
    let report: Vec<String> = leftovers
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| format!("{what}: {v:?}"))
        .collect();
    assert!(
        report.is_empty(),
        "left behind after teardown:\n{}",
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Running containers with ctr
// ---------------------------------------------------------------------------

/// Makes a UTS namespace handle (under the instance's state directory, so
/// teardown unmounts it) whose hostname is `hostname`: `ctr run` has no
/// `--hostname`, but joins it with `--with-ns uts:PATH`.
fn uts_with_hostname(cd: &PrivateContainerd, hostname: &str) -> PathBuf {
    let path = cd.dir().join("state").join(format!("uts-{hostname}"));
    fs::File::create(&path).expect("uts handle file");
    let out = run_command(
        {
            let mut c = Command::new("unshare");
            c.arg(format!("--uts={}", path.display()))
                .args(["hostname", hostname]);
            c
        },
        None,
    );
    out.assert_success();
    path
}

/// `ctr run --rm` in the foreground (so its exit code is the container's),
/// left running in the background.
fn ctr_run(cd: &PrivateContainerd, id: &str, image: &str, extra: &[String]) -> Background {
    let mut cmd = cd.ctr();
    cmd.args(["run", "--rm"])
        .args(cd.ctr_run_args(id))
        .args(extra)
        .arg(image)
        .arg(id);
    Background::spawn(cmd, None)
}

fn task_status(cd: &PrivateContainerd, id: &str) -> Option<String> {
    let mut cmd = cd.ctr();
    cmd.args(["tasks", "list"]);
    let out = run_command(cmd, None);
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
}

fn wait_running(cd: &PrivateContainerd, id: &str, bg: &Background) {
    assert!(
        wait_until(Duration::from_secs(30), || task_status(cd, id).as_deref()
            == Some("RUNNING")),
        "task {id} is not running: {}\n{}",
        bg.stderr(),
        cd.log()
    );
}

/// `busybox wget` inside `node`. Its own `-T` timeout crashes Debian's
/// busybox-static 1.35 (SIGSEGV), hence `timeout`.
fn wget(node: &NodeNetns, url: &str) -> Output {
    let mut cmd = node.command("timeout");
    cmd.args(["5", "busybox", "wget", "-q", "-O", "-", url]);
    run_command(cmd, None)
}

fn kill_task(cd: &PrivateContainerd, id: &str, signal: &str) {
    let mut cmd = cd.ctr();
    cmd.args(["tasks", "kill", "--signal", signal, id]);
    run_command(cmd, None).assert_success();
}

// ---------------------------------------------------------------------------
// The web app on a private containerd
// ---------------------------------------------------------------------------

#[test]
fn webapp_serves_version_and_hostname_and_exits_on_kill() {
    require_root();
    let _machine = machine_lock();
    let before = machine_state();
    let images_dir = tempdir();
    let pause = timed("build pause image", || {
        images::pause_image(images_dir.path()).expect("pause image")
    });
    let webapp = timed("build webapp image", || {
        images::webapp_image(images_dir.path(), "1.0").expect("webapp")
    });

    let underlay = timed("underlay with 2 nodes", || {
        Underlay::with_free_subnet("hx", 2).expect("underlay")
    });
    let node = underlay.node(0).clone();
    // The nodes reach each other and the host over the bridge.
    let ping = underlay.node(1).exec(
        "busybox",
        &["ping", "-c", "1", "-W", "2", &node.ip.to_string()],
    );
    assert!(ping.is_ok(), "node 1 cannot reach node 0: {ping:?}");
    let ping = node.exec(
        "busybox",
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &underlay.gateway().to_string(),
        ],
    );
    assert!(ping.is_ok(), "node 0 cannot reach the host: {ping:?}");

    let dir = tempdir();
    let cd =
        PrivateContainerd::start(Some(&node), &dir.path().join("cd")).expect("containerd starts");
    println!(
        "timing: containerd start (until the socket answers): {}",
        ms(cd.start_time())
    );
    timed("import pause", || cd.import(&pause).expect("import pause"));
    timed("import webapp", || {
        cd.import(&webapp).expect("import webapp")
    });
    let listed = cd.images().expect("images");
    assert!(
        listed.contains(&PAUSE_IMAGE.to_owned()) && listed.contains(&webapp.name),
        "images: {listed:?}"
    );

    // The pause image: runs, and exits 0 on SIGTERM.
    let pause_run = ctr_run(&cd, "pause1", PAUSE_IMAGE, &[]);
    wait_running(&cd, "pause1", &pause_run);
    kill_task(&cd, "pause1", "SIGTERM");
    let out = pause_run.wait(Duration::from_secs(30));
    assert_eq!(out.code, Some(0), "pause must exit 0 on SIGTERM\n{out}");

    // The web app in its own pod network namespace, on the CNI bridge.
    let pod_ns = cd.pod_netns("web1").expect("pod netns");
    let ip = timed("CNI add", || cd.cni_add(&pod_ns, "web1").expect("CNI add"));
    assert!(
        cd.pod_subnet().contains(ip),
        "{ip} is not in {}",
        cd.pod_subnet()
    );
    let uts = uts_with_hostname(&cd, "web-1");
    let ns_args = vec![
        "--with-ns".to_owned(),
        format!("network:{}", pod_ns.display()),
        "--with-ns".to_owned(),
        format!("uts:{}", uts.display()),
    ];
    let t = Instant::now();
    let web = ctr_run(&cd, "web1", &webapp.name, &ns_args);
    let url = format!("http://{ip}/");
    assert!(
        wait_until(Duration::from_secs(30), || wget(&node, &url).success()),
        "the web app does not answer at {url}: {}\n{}",
        wget(&node, &url),
        web.stderr()
    );
    println!(
        "timing: ctr run until the web app answers: {}",
        ms(t.elapsed())
    );
    let reply = wget(&node, &url);
    reply.assert_success();
    assert_eq!(
        parse_webapp_reply(&reply.stdout),
        Some(("1.0".to_owned(), "web-1".to_owned())),
        "reply: {:?}",
        reply.stdout
    );
    // The environment CGI.
    wget(&node, &format!("http://{ip}/cgi-bin/env")).assert_stdout_contains("PATH=/bin");

    // /kill: the answer arrives, then the main process exits 1.
    let killed = wget(&node, &format!("http://{ip}/kill"));
    killed
        .assert_success()
        .assert_stdout_contains("Version 1.0 on web-1: exiting");
    let out = web.wait(Duration::from_secs(30));
    assert_eq!(
        out.code,
        Some(1),
        "the web app must exit 1 after /kill\n{out}"
    );
    assert!(
        out.stderr.contains("exiting on /kill") || out.stdout.contains("exiting on /kill"),
        "{out}"
    );
    assert!(
        !wget(&node, &url).success(),
        "the web app still answers after /kill"
    );

    // Started again, it stops at once (exit 0) on SIGTERM.
    let web = ctr_run(&cd, "web1", &webapp.name, &ns_args);
    assert!(
        wait_until(Duration::from_secs(30), || wget(&node, &url).success()),
        "restart: {}",
        web.stderr()
    );
    let t = Instant::now();
    kill_task(&cd, "web1", "SIGTERM");
    let out = web.wait(Duration::from_secs(30));
    assert_eq!(
        out.code,
        Some(0),
        "the web app must exit 0 on SIGTERM\n{out}"
    );
    println!("timing: web app stop on SIGTERM: {}", ms(t.elapsed()));

    cd.cni_del(&pod_ns, "web1").expect("CNI del");
    timed("containerd teardown", || cd.shutdown().expect("teardown"));
    timed("underlay teardown", || {
        underlay.delete().expect("underlay teardown")
    });
    assert_nothing_left(&before, &machine_state());
}

#[test]
fn teardown_with_running_containers_leaves_nothing_behind() {
    require_root();
    let _machine = machine_lock();
    let before = machine_state();
    let images_dir = tempdir();
    let pause = images::pause_image(images_dir.path()).expect("pause image");
    let webapp = images::webapp_image(images_dir.path(), "1.0").expect("webapp");
    {
        let underlay = Underlay::with_free_subnet("td", 1).expect("underlay");
        let dirs = tempdir();
        // One in a node namespace, one in the root namespace.
        let in_node = PrivateContainerd::start(Some(underlay.node(0)), &dirs.path().join("a"))
            .expect("containerd a");
        let in_root = PrivateContainerd::start(None, &dirs.path().join("b")).expect("containerd b");
        let mut running = Vec::new();
        for cd in [&in_node, &in_root] {
            cd.import(&pause).expect("import pause");
            cd.import(&webapp).expect("import webapp");
            let pod_ns = cd.pod_netns("w").expect("pod netns");
            let ip = cd.cni_add(&pod_ns, "w").expect("CNI add");
            let p = ctr_run(cd, "p", PAUSE_IMAGE, &[]);
            wait_running(cd, "p", &p);
            let w = ctr_run(
                cd,
                "w",
                &webapp.name,
                &["--with-ns".into(), format!("network:{}", pod_ns.display())],
            );
            wait_running(cd, "w", &w);
            running.push((p, w, ip));
        }
        // The root-namespace instance's CNI bridge is visible here.
        assert!(netns::list_links().contains(&in_root.cni_bridge().to_owned()));
        let node = underlay.node(0).clone();
        let url = format!("http://{}/", running[0].2);
        assert!(
            wait_until(Duration::from_secs(30), || wget(&node, &url).success()),
            "web app in the node"
        );
        let mounts_a = skiff_e2e::containerd::mounts_under(in_node.dir());
        assert!(
            !mounts_a.is_empty(),
            "expected rootfs and netns mounts under the instance"
        );

        // Everything is dropped as it is, containers running: containerds
        // first, then the underlay.
        let t = Instant::now();
        drop(in_node);
        drop(in_root);
        println!(
            "timing: teardown of two containerds with 2 running containers each: {}",
            ms(t.elapsed())
        );
        drop(running);
    }
    assert_nothing_left(&before, &machine_state());
}

/// Run only by [`crashed_test_process_is_swept`], in a child process that is
/// then SIGKILLed: sets up an underlay and a containerd with a running
/// container, prints `READY`, and waits.
#[test]
#[ignore = "helper for crashed_test_process_is_swept"]
fn crash_helper() {
    let Some(dir) = std::env::var_os("SKIFF_E2E_CRASH_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let pause = images::pause_image(&dir).expect("pause image");
    let underlay = Underlay::with_free_subnet("cr", 1).expect("underlay");
    let cd = PrivateContainerd::start(Some(underlay.node(0)), &dir.join("cd")).expect("containerd");
    cd.import(&pause).expect("import");
    let p = ctr_run(&cd, "p", PAUSE_IMAGE, &[]);
    wait_running(&cd, "p", &p);
    println!("READY");
    std::thread::sleep(Duration::from_secs(120));
    drop((p, cd, underlay));
}

#[test]
fn crashed_test_process_is_swept() {
    require_root();
    let _machine = machine_lock();
    let before = machine_state();
    let dir = tempdir();
    let exe = std::env::current_exe().expect("test executable");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        "crash_helper",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SKIFF_E2E_CRASH_DIR", dir.path());
    let helper = Background::spawn(cmd, None);
    assert!(
        helper.wait_for_stdout(Duration::from_secs(60), |s| s.contains("READY")),
        "helper did not get ready: {}\n{}",
        helper.stdout(),
        helper.stderr()
    );
    assert!(
        !netns::list_netns().iter().all(|n| before.netns.contains(n)),
        "helper made a namespace"
    );
    // Killed: no destructor runs.
    let out = helper.kill();
    assert_eq!(out.code, None);
    let t = Instant::now();
    netns::sweep_stale();
    println!(
        "timing: sweep after a killed test process: {}",
        ms(t.elapsed())
    );
    assert_nothing_left(&before, &machine_state());
}
