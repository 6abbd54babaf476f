//! Golden-file tests: each directory under `tests/golden/` holds a pipeline,
//! its input, and the exact results, late records and dead letters it must
//! produce. The `sluice` binary runs each one through the real WASM plugins.
//!
//! The expected files are written by hand from the window semantics (each
//! case's README.md says what it shows). To see a diff, run with
//! `GOLDEN_DIFF=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs one case with outputs redirected into a temp dir through the
/// `SLUICE_` environment overrides; returns (results, late, dead, stderr).
fn run_case(case: &Path, batch_size: usize) -> (String, String, String, String) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = |name: &str| tmp.path().join(name);
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(case.join("pipeline.yaml"))
        .arg("--batch-size")
        .arg(batch_size.to_string())
        .env("SLUICE_SINK__FILE", out("results.jsonl"))
        .env("SLUICE_LATE_OUTPUT__FILE", out("late.jsonl"))
        .env("SLUICE_DEAD_LETTER__FILE", out("dead.jsonl"))
        .output()
        .expect("running sluice");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{}: sluice failed: {stderr}",
        case.display()
    );
    (
        read(&out("results.jsonl")),
        read(&out("late.jsonl")),
        read(&out("dead.jsonl")),
        stderr,
    )
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("pipeline.yaml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "golden cases missing: {cases:?}");
    cases
}

fn check(case: &Path, what: &str, got: &str) -> Option<String> {
    let want = read(&case.join(format!("expected-{what}.jsonl")));
    if got == want {
        return None;
    }
    let mut msg = format!("{}: {what} differ\n", case.display());
    if std::env::var_os("GOLDEN_DIFF").is_some() {
        msg.push_str(&format!("--- want\n{want}--- got\n{got}"));
    } else {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        msg.push_str(&format!(
            "first difference at line {}:\n want: {}\n  got: {}\n",
            first + 1,
            want.lines().nth(first).unwrap_or("<none>"),
            got.lines().nth(first).unwrap_or("<none>")
        ));
    }
    Some(msg)
}

#[test]
fn golden_cases_match() {
    let mut failures = Vec::new();
    for case in cases() {
        let (results, late, dead, stderr) = run_case(&case, 1024);
        for (what, got) in [("results", &results), ("late", &late), ("dead", &dead)] {
            failures.extend(check(&case, what, got));
        }
        // The summary line agrees with what was written.
        let summary = format!(
            "{} windows emitted, {} late, {} dead-lettered",
            results.lines().count(),
            late.lines().count(),
            dead.lines().count()
        );
        if !stderr.contains(&summary) {
            failures.push(format!(
                "{}: summary {stderr:?} lacks {summary:?}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_cases_do_not_depend_on_batch_size() {
    for case in cases() {
        let reference = run_case(&case, 1024);
        for batch_size in [1, 2, 3] {
            let got = run_case(&case, batch_size);
            assert_eq!(
                (&got.0, &got.1, &got.2),
                (&reference.0, &reference.1, &reference.2),
                "{} with batch size {batch_size}",
                case.display()
            );
        }
    }
}
