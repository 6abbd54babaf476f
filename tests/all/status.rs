//! The live status page (`/` on `metrics.listen`), loaded in a real headless
//! Chromium: after its script has polled `/status.json`, what the page shows
//! must be what `/metrics` says for the same run, and its latest-results
//! table must hold the keys fed, with each key's last result.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, generate, http_get, metric_value, sluice};

/// Events fed: about 1000 s of event time, so about 100 windows per key.
const EVENTS: usize = 5000;

/// A stdin run, fed through a pipe this test holds open so that the run
/// stays up with stable numbers, shown in Chromium; the page's counters,
/// plugin calls and latest results are checked against `/metrics` and the
/// results file, and a screenshot is kept.
#[test]
fn the_status_page_shows_what_the_metrics_say() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ file: '-' }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             watermark: {{ max_out_of_orderness: 2s }}\n\
             window: {{ tumbling: {{ size: 10s }} }}\n\
             aggregations:\n\
             \x20 - {{ name: n, plugin: builtin/count }}\n\
             \x20 - {{ name: latency, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.5, 0.99] }} }}\n\
             sink: {{ file: results.jsonl }}\n\
             late_output: {{ file: late.jsonl }}\n\
             dead_letter: {{ file: dead.jsonl }}\n\
             metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let mut child = KillOnDrop(
        sluice()
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(generate(EVENTS).as_bytes()).unwrap();
    stdin.flush().unwrap();

    // Every event read, and the numbers settled: nothing more comes, so
    // no window fires until the pipe closes.
    let started = Instant::now();
    let mut metrics = String::new();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not read all {EVENTS} events; /metrics says:\n{metrics}\nstderr:\n{}",
            std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = ok_body(port, "/metrics") else {
            continue;
        };
        if metric_value(&now, "sluice_events_in_total") == Some(EVENTS as f64) && now == metrics {
            break;
        }
        metrics = now;
    }
    // The page's last publish comes at most 100 ms after the last batch,
    // and while the stream is quiet.
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("http://127.0.0.1:{port}/");

    let browsing = Instant::now();
    let dom = chromium.dump_dom(&url);
    let took = browsing.elapsed();
    let after = ok_body(port, "/metrics").expect("/metrics after the page");
    assert_eq!(
        after, metrics,
        "the run's numbers moved while the page was read"
    );

    // The counters, as /metrics has them.
    for (series, shown) in [
        ("sluice_events_in_total", "events_in"),
        ("sluice_results_out_total", "results_out"),
        ("sluice_late_events_total", "late"),
        ("sluice_dead_lettered_total", "dead_lettered"),
        ("sluice_windows_open", "windows_open"),
    ] {
        let expected = metric_value(&metrics, series).unwrap_or_else(|| panic!("no {series}"));
        let text = text_after(&dom, &format!(r#"data-metric="{shown}""#))
            .unwrap_or_else(|| panic!("no data-metric={shown} in the page:\n{dom}"));
        assert_eq!(
            count(&text),
            Some(expected),
            "the page shows {shown} = {text:?}, /metrics says {series} = {expected}"
        );
    }
    // The generator's late and malformed lines made it to both.
    assert!(metric_value(&metrics, "sluice_late_events_total").unwrap() > 0.0);
    assert!(metric_value(&metrics, "sluice_dead_lettered_total").unwrap() > 0.0);

    // Plugin calls per aggregation.
    for agg in ["n", "latency"] {
        let series = format!(r#"sluice_plugin_calls_total{{aggregation="{agg}"}}"#);
        let expected = metric_value(&metrics, &series).unwrap_or_else(|| panic!("no {series}"));
        assert!(expected > 0.0, "{series} is 0");
        let row = &dom[dom
            .find(&format!(r#"data-aggregation="{agg}""#))
            .unwrap_or_else(|| panic!("no row for aggregation {agg}:\n{dom}"))..];
        let calls = text_after(row, r#"data-col="calls""#).unwrap();
        assert_eq!(count(&calls), Some(expected), "calls of {agg}");
        assert_eq!(text_after(row, r#"data-col="quarantined""#).unwrap(), "no");
    }

    // The latest results: every key fed, with its last result's count.
    let results = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap();
    let mut last: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for line in results.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let service = r["key"]["service"].as_str().unwrap().to_string();
        let end = r["window"]["end"].as_i64().unwrap();
        let n = r["results"]["n.count"].as_f64().unwrap();
        last.insert(service, (end, n));
    }
    assert_eq!(last.len(), 5, "{results}");
    for (service, (_, n)) in &last {
        let label = format!("service={service}");
        let at = dom
            .find(&format!(r#"<span class="key">{label}</span>"#))
            .unwrap_or_else(|| panic!("no row for key {label} in the latest results:\n{dom}"));
        let shown = text_after(&dom[at..], r#"data-col="n.count""#).unwrap();
        assert_eq!(count(&shown), Some(*n), "n.count of {label}");
    }
    // The chart of the chosen output has a line per key.
    let chart = &dom[dom.find(r#"id="chart-output""#).unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert_eq!(chart.matches("<path").count(), 5, "{chart}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    chromium.screenshot(&url, &shot);
    println!(
        "status page: read in {took:?}; screenshot {}",
        shot.display()
    );

    drop(stdin);
    let status = child.0.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default()
    );
}

/// Headless Chromium as this machine runs it (as root, in a container: no
/// sandbox, no GPU), with a profile of its own.
struct Chromium {
    binary: PathBuf,
    profile: tempfile::TempDir,
}

/// The Chromium that `scripts/setup-tests.sh` installs.
fn chromium() -> Chromium {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("no chromium: scripts/setup-tests.sh installs it (apt-get install chromium)");
    Chromium {
        binary,
        profile: tempfile::tempdir().unwrap(),
    }
}

impl Chromium {
    fn command(&self, url: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            // Enough virtual time for the script's first polls.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .args(args)
        .arg(url);
        cmd
    }

    /// The DOM of `url` once its script has run.
    fn dump_dom(&self, url: &str) -> String {
        let (stdout, stderr) = bounded(self.command(url, &["--dump-dom"]));
        assert!(
            stdout.contains("</html>"),
            "chromium gave no DOM for {url}; its stderr:\n{stderr}"
        );
        stdout
    }

    /// A screenshot of `url` into `path`.
    fn screenshot(&self, url: &str, path: &Path) {
        let _ = std::fs::remove_file(path);
        let arg = format!("--screenshot={}", path.display());
        let (_, stderr) = bounded(self.command(url, &[&arg]));
        assert!(path.exists(), "no screenshot; chromium's stderr:\n{stderr}");
    }
}

/// Runs `cmd` for at most a minute; its stdout and stderr.
fn bounded(mut cmd: Command) -> (String, String) {
    let mut child = KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium"),
    );
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.0.stdout.take().unwrap()));
    let stderr = read(Box::new(child.0.stderr.take().unwrap()));
    let started = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "chromium still running after a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (stdout.join().unwrap(), stderr.join().unwrap())
}

/// A child process that is killed if still running when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text of the element whose start tag holds `attribute`.
fn text_after(html: &str, attribute: &str) -> Option<String> {
    let at = html.find(attribute)?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim().to_string())
}

/// A number as the page writes counts (`12,345`).
fn count(text: &str) -> Option<f64> {
    text.replace(',', "").parse().ok()
}

/// The body of a 200 answer to a GET of `path`; `None` otherwise.
fn ok_body(port: u16, path: &str) -> Option<String> {
    http_get(port, path)
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
}
