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
    generate_keys(n, 5)
}

/// [`generate`] over `services` services (`svc-0` ...).
pub fn generate_keys(n: usize, services: u64) -> String {
    generate_with(n, services, 200)
}

/// [`generate_keys`] with `max_step` ms at most between two events (they
/// come every `(max_step - 1) / 2` ms on average).
pub fn generate_with(n: usize, services: u64, max_step: u64) -> String {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut out = String::new();
    let mut t: i64 = 1_700_000_000_000;
    for i in 0..n {
        t += (next() % max_step) as i64;
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
                i as u64 % services
            );
            continue;
        }
        let latency = 50.0 + (next() % 400_000) as f64 / 100.0;
        let _ = writeln!(
            out,
            r#"{{"ts":{ts},"service":"svc-{}","latency_ms":{latency},"error":{}}}"#,
            next() % services,
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

/// How a bounded run of a command ended (see [`run_bounded`]).
pub struct Bounded {
    /// Its exit code (-1: killed by a signal).
    pub code: i32,
    /// What it wrote to stdout and stderr.
    pub stdout: String,
    pub stderr: String,
    /// How long it ran.
    pub took: std::time::Duration,
    /// Its peak resident memory, in bytes.
    pub peak_rss: u64,
}

/// Runs `cmd` to its end, with stdout and stderr captured, and fails the
/// test if it is still running after `limit` (it is killed first, so that a
/// hang fails the test rather than holding it for ever). Also measures the
/// process's peak resident memory, which `wait4` reports for the child.
// The child is reaped by `wait4`, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run_bounded(mut cmd: Command, limit: std::time::Duration) -> Bounded {
    use std::process::Stdio;
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: pid is our own child, not yet reaped; both pointers are valid.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break;
        }
        assert_eq!(reaped, 0, "wait4 failed");
        if !killed && started.elapsed() > limit {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let took = started.elapsed();
    let stderr = stderr.join().expect("stderr reader");
    let tail = stderr.char_indices().rev().nth(4000).map_or(0, |(i, _)| i);
    assert!(
        !killed,
        "still running after {limit:?}, killed; its stderr ends with: {}",
        &stderr[tail..]
    );
    Bounded {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout: stdout.join().expect("stdout reader"),
        stderr,
        took,
        peak_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}
