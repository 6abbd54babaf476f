// Shared by the build scripts of `sluice-builtins` and `sluice-test-plugins`
// (each `include!`s this file): building workspace crates as WebAssembly
// components with a nested cargo, in a target directory of their own under
// the outer build's, so the nested build never waits on the outer build's
// lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' target.
const WASM_TARGET: &str = "wasm32-wasip2";
/// The guests' cargo profile (the workspace's `[profile.plugin]`).
const PROFILE: &str = "plugin";

/// The workspace root, two levels above this crate's manifest.
fn workspace_root() -> Result<PathBuf, String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    manifest_dir
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not two levels below a workspace", manifest_dir.display()))
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set"))
}

/// The crate directories under `dir` (each with a Cargo.toml), by name,
/// sorted so that generated tables are stable.
fn crate_dirs(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The outer build's target directory: the ancestor of OUT_DIR that cargo
/// marked with CACHEDIR.TAG.
fn target_root(out_dir: &Path) -> Result<PathBuf, String> {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no target directory above {}", out_dir.display()))
}

/// Builds the workspace `packages` for [`WASM_TARGET`] under the outer
/// target directory (found from `out_dir`) and returns each one's
/// component, in the order given; `what` names them in errors.
fn build_components(
    workspace: &Path,
    out_dir: &Path,
    packages: &[String],
    what: &str,
) -> Result<Vec<PathBuf>, String> {
    let target_dir = target_root(out_dir)?.join("plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--target", WASM_TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host,
    // not for the wasm guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build {what}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {what} for {WASM_TARGET} failed ({status}). Is the target \
             installed? `rustup target add {WASM_TARGET}` (scripts/setup.sh does this)."
        ));
    }
    let artifacts = target_dir.join(WASM_TARGET).join(PROFILE);
    packages
        .iter()
        .map(|package| {
            let file = artifacts.join(format!("{}.wasm", package.replace('-', "_")));
            if file.is_file() {
                println!("cargo:rerun-if-changed={}", file.display());
                Ok(file)
            } else {
                Err(format!("expected the component {}", file.display()))
            }
        })
        .collect()
}
