//! Helpers shared by the end-to-end test modules.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

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

/// `sluice run --config CONFIG`, to the end.
pub fn run_config(config: &Path) -> Output {
    sluice()
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// Runs `cmd` to the end with `input` on its stdin (closed once written),
/// capturing stdout and stderr.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A finished command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// `input` with every `every`th line (the first included) sent a second
/// time right after itself: an at-least-once redelivery, for dedup.
pub fn with_copies(input: &str, every: usize) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / every + 1);
    for (i, line) in input.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i % every == 0 {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
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

/// The name of the test plugin behind a `sluice_test_plugins` constant
/// (`tests/plugins/NAME`), for labels and messages: cargo names the
/// component of the package `sluice-zoo-NAME` `sluice_zoo_NAME.wasm`, with
/// `_` for `-`, and every test plugin's directory name uses `-`.
pub fn zoo_name(plugin: &str) -> String {
    let stem = Path::new(plugin)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(plugin);
    stem.strip_prefix("sluice_zoo_")
        .unwrap_or(stem)
        .replace('_', "-")
}

/// How a bounded run of a command ended (see [`run_bounded`]).
pub struct Bounded {
    /// Its exit code (-1: killed by a signal).
    pub code: i32,
    /// What it wrote to stderr (its stdout is read and dropped, so that a
    /// full pipe cannot stall it).
    pub stderr: String,
    /// How long it ran.
    pub took: std::time::Duration,
    /// Its peak resident memory, in bytes.
    pub peak_rss: u64,
}

/// Runs `cmd` to its end, with stdout and stderr captured, and fails the
/// test if it is still running after `limit` (it is killed first, so that a
/// hang fails the test rather than holding it for ever). Also measures the
/// process's peak resident memory, from its `VmHWM` sampled every 10 ms
/// while it runs: not from `wait4`'s `ru_maxrss`, because a child spawned
/// from this test process inherits, at its exec, this process's high-water
/// mark, and with every area's tests in one binary that is often larger
/// than the child's own peak.
// The child is reaped by `waitpid`, not by `Child::wait`.
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
    let mut killed = false;
    let mut peak_rss = 0;
    loop {
        if let Some(hwm) = high_water_mark(pid) {
            peak_rss = hwm;
        }
        // SAFETY: pid is our own child, not yet reaped; the pointer is valid.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            break;
        }
        assert_eq!(reaped, 0, "waitpid failed");
        if !killed && started.elapsed() > limit {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let took = started.elapsed();
    let _ = stdout.join();
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
        stderr,
        took,
        peak_rss,
    }
}

/// The peak resident memory of the running process `pid` so far (its
/// `VmHWM`), in bytes; `None` once it has exited.
fn high_water_mark(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The value of one line of the next steps `sluice plugin new` prints
/// (`  component:  PATH` gives `PATH` for `what` = `component`).
pub fn next_step(steps: &str, what: &str) -> String {
    let prefix = format!("{what}:");
    steps
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{what}:` line in {steps}"))
        .trim()
        .to_string()
}

/// A port nothing listens on now (the kernel's pick of a free one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.0 GET to `127.0.0.1:port`, waiting at most 10 s for the
/// answer: the whole response, status line and headers included; `None`
/// while nothing answers.
pub fn http_response(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// [`http_response`] split: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = http_response(port, path)?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the series `name` (with its labels, if any) in a
/// Prometheus or OpenMetrics exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `sluice run --config CONFIG` started with its stdin a pipe the test
/// writes events into (and holds open to keep a stdin or `feed: '-'` run
/// going), stderr piped for its messages, stdout dropped.
pub fn run_fed(config: &Path) -> Child {
    sluice()
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sluice")
}
