//! Builds the hostile and versioned test plugins (`tests/plugins/*`) and the
//! Rust example plugins (`examples/plugins/*` with a Cargo.toml) as
//! WebAssembly components, and writes a constant with each one's path, so
//! that tests name a plugin by constant rather than by a path string.

use std::fmt::Write as _;

include!("../builtins/components.rs");

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let workspace = workspace_root()?;
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    for watched in [
        "tests/plugins",
        "examples/plugins",
        "sdk",
        "wit",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let groups = [
        ("tests/plugins", "sluice-zoo-", "A test plugin"),
        ("examples/plugins", "sluice-example-", "An example plugin"),
    ];
    let mut code = String::new();
    for (dir, prefix, doc) in groups {
        let names = crate_dirs(&workspace.join(dir))?;
        let packages: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
        let files = build_components(&workspace, &out_dir, &packages, dir)?;
        for (name, file) in names.iter().zip(files) {
            let _ = writeln!(
                code,
                "/// {doc}: `{dir}/{name}`, as a component.\npub const {}: &str = {:?};",
                name.to_uppercase().replace('-', "_"),
                file.display().to_string()
            );
        }
    }
    std::fs::write(out_dir.join("plugins.rs"), code)
        .map_err(|e| format!("cannot write plugins.rs: {e}"))
}
