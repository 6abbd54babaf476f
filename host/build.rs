//! Builds the default plugins in `plugins/` as WebAssembly components and
//! embeds them in the `sluice` binary, so that `builtin/NAME` needs no files
//! beside the binary and the plugins are always built from this source.
//!
//! Runs a nested `cargo build --target wasm32-wasip2` with its own target
//! directory (so it does not wait on the lock of the build that runs this script).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("host/ has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    for watched in ["plugins", "sdk", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let plugins = plugin_names(&workspace.join("plugins"))?;
    let target_dir = target_root(&out_dir)?.join("plugins");
    if plugins.is_empty() {
        println!("cargo:warning=no plugin crates under plugins/: the binary has no built-ins");
        return std::fs::write(
            out_dir.join("builtins.rs"),
            "pub static BUILTINS: &[(&str, &[u8])] = &[];\n",
        )
        .map_err(|e| format!("cannot write builtins.rs: {e}"));
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--target", WASM_TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for name in &plugins {
        cmd.args(["-p", &format!("sluice-plugin-{name}")]);
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
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the default plugins for {WASM_TARGET} failed ({status}). \
             Is the target installed? `rustup target add {WASM_TARGET}` \
             (scripts/setup.sh does this)."
        ));
    }

    let artifacts = target_dir.join(WASM_TARGET).join(PROFILE);
    let mut code = String::from("pub static BUILTINS: &[(&str, &[u8])] = &[\n");
    for name in &plugins {
        let file = artifacts.join(format!("sluice_plugin_{}.wasm", name.replace('-', "_")));
        if !file.is_file() {
            return Err(format!("expected plugin artifact {}", file.display()));
        }
        println!("cargo:rerun-if-changed={}", file.display());
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            file.display().to_string()
        );
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), code)
        .map_err(|e| format!("cannot write builtins.rs: {e}"))
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set"))
}

/// The plugin crates: every directory under `plugins/` with a Cargo.toml,
/// sorted so the generated table is stable.
fn plugin_names(dir: &Path) -> Result<Vec<String>, String> {
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
