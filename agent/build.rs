//! Compiles the pod sandbox's pause program (`packaging/pause/pause.c`)
//! into a static, stripped binary in OUT_DIR, which the agent embeds
//! (`pause.rs`) so that it can provide containerd's sandbox image on a node
//! without a registry.
//!
//! Static, because the image holds nothing but this one file. `CC` overrides
//! the compiler (default `gcc`); the static C library comes from `libc6-dev`
//! on Debian.

use std::path::PathBuf;
use std::process::Command;

const FLAGS: &[&str] = &["-static", "-Os", "-s", "-Wall"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let source = manifest_dir.join("../packaging/pause/pause.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CC");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        fail("OUT_DIR is not set; build the agent with cargo");
    };
    let output = out_dir.join("pause");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let result = Command::new(&compiler)
        .args(FLAGS)
        .arg("-o")
        .arg(&output)
        .arg(&source)
        .output();
    match result {
        Err(error) => fail(&format!(
            "cannot run the C compiler `{compiler}` ({error}); install gcc \
             (Debian: apt-get install gcc libc6-dev), or set CC"
        )),
        Ok(out) if !out.status.success() => fail(&format!(
            "`{compiler} {} -o {} {}` failed; a static build needs the static C \
             library (Debian: apt-get install libc6-dev)\n{}",
            FLAGS.join(" "),
            output.display(),
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {}
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: cannot build the embedded pause program: {message}");
    std::process::exit(1);
}
