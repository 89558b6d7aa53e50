//! Compiles the demo plugins in `plugins/` to wasm32-wasip2 components and
//! embeds them in the plugin host (and so in the `oms` binary), so `cargo build`
//! is the only build step the platform needs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: &[&str] = &[
    "guardrail-limits",
    "guardrail-strict",
    "fraud-rules",
    "payment-sandbox",
    "compensation-default",
    "loyalty-points",
];
/// Built and copied to OUT_DIR for the containment tests, not embedded.
const HOSTILE: &[&str] = &[
    "hostile-guardrail",
    "hostile-fraud",
    "hostile-clock",
    "hostile-fs",
    "hostile-net",
    "hostile-step",
];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/plugin-host/ sits two levels below the workspace root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        plugins.join("Cargo.lock").display()
    );
    for plugin in PLUGINS.iter().chain(HOSTILE) {
        println!("cargo:rerun-if-changed={}", plugins.join(plugin).display());
    }

    ensure_target();

    // A target directory of its own beside the host's (OUT_DIR is
    // <target>/<profile>/build/oms-*/out), so the nested cargo never waits on
    // the outer one's lock and its output survives between builds.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out_dir.join("wasm-plugins"));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host, not the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    if env::var("OMS_PLUGINS_LOCKED").is_ok_and(|v| v == "1") {
        cmd.arg("--locked");
    }
    let status = cmd.status().expect("run cargo to build the demo plugins");
    if !status.success() {
        panic!("building the demo plugins in {} failed", plugins.display());
    }

    for plugin in PLUGINS.iter().chain(HOSTILE) {
        let file = format!("{}.wasm", plugin.replace('-', "_"));
        let built = target_dir.join(TARGET).join("release").join(&file);
        copy(&built, &out_dir.join(&file));
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("copy {} to {}: {e}", from.display(), to.display());
    }
}

/// Installs the wasm32-wasip2 standard library through rustup when missing.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).exists())
        .unwrap_or(false);
    if !installed {
        let ok = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            panic!(
                "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it by hand"
            );
        }
    }
}
