//! Helpers shared by the end-to-end test binaries (each includes this file
//! with `mod common;` and uses what it needs).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `sluice` binary, with no `SLUICE_` override from the environment:
/// only a test's own overrides apply.
pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Only this test's overrides apply.
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Deterministic pseudo-random events: 5 services, ~10 events/s, 10% out of
/// order by up to 3 s, 1% late by 30 s, 1% malformed lines.
pub fn generate(n: usize) -> String {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut out = String::new();
    let mut t: i64 = 1_700_000_000_000;
    for i in 0..n {
        t += (next() % 200) as i64;
        let r = next() % 100;
        let ts = match r {
            0 => t - 30_000,
            1..=10 => t - (next() % 3_000) as i64,
            _ => t,
        };
        if r == 99 {
            let _ = writeln!(
                out,
                r#"{{"ts":{ts},"service":"svc-{}","latency_ms":"#,
                i % 5
            );
            continue;
        }
        let latency = 50.0 + (next() % 400_000) as f64 / 100.0;
        let _ = writeln!(
            out,
            r#"{{"ts":{ts},"service":"svc-{}","latency_ms":{latency},"error":{}}}"#,
            next() % 5,
            next().is_multiple_of(20)
        );
    }
    out
}

/// A deterministic pseudo-random sequence (xorshift64) from a non-zero
/// seed: test data that is the same on every run and machine.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A file the test script builds under the repository root (`out/...`),
/// with a message naming the step that makes it when it is missing.
pub fn out_file(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh, which builds it (scripts/common.sh)",
        path.display()
    );
    path
}

/// A hostile or test plugin of the zoo (`tests/plugins/NAME`), built into `out/zoo/`.
pub fn zoo_path(name: &str) -> PathBuf {
    out_file(&format!("out/zoo/{name}.wasm"))
}
