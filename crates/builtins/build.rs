//! Builds the default plugins in `plugins/` as WebAssembly components for
//! this crate to embed, so that `builtin/NAME` needs no files beside the
//! binary and the plugins are always built from this source.

use std::fmt::Write as _;

include!("components.rs");

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let workspace = workspace_root()?;
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    for watched in ["plugins", "sdk", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let plugins = crate_dirs(&workspace.join("plugins"))?;
    let mut code = String::from("pub static BUILTINS: &[(&str, &[u8])] = &[\n");
    if plugins.is_empty() {
        println!("cargo:warning=no plugin crates under plugins/: the binary has no built-ins");
    } else {
        let packages: Vec<String> = plugins
            .iter()
            .map(|name| format!("sluice-plugin-{name}"))
            .collect();
        let files = build_components(&workspace, &out_dir, &packages, "the default plugins")?;
        for (name, file) in plugins.iter().zip(files) {
            let _ = writeln!(
                code,
                "    ({name:?}, include_bytes!({:?})),",
                file.display().to_string()
            );
        }
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), code)
        .map_err(|e| format!("cannot write builtins.rs: {e}"))
}
