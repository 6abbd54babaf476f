//! The operations files in `deploy/`, checked by the real tools and a real
//! `sluice`: the Prometheus alert rules by `promtool` (syntax, and their
//! unit tests), a real Prometheus scraping a running pipeline and
//! evaluating the rules and the dashboard's queries, every metric name in
//! the Grafana dashboard and the rules against a running pipeline's
//! `/metrics`, and the Kubernetes manifests against `sluice validate`, the
//! pipeline they carry and the endpoints a running pipeline serves.
//!
//! Prometheus and `promtool` are Debian's `prometheus` package, installed by
//! `scripts/setup-tests.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_yaml::Value as Yaml;

use crate::common::{free_port, generate, http_get, metric_value, run_fed, sluice};

/// How many events the running pipelines are fed.
const EVENTS: usize = 3_000;

/// A file of the repository's `deploy/` directory.
fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML document of a file.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn yaml(path: &Path) -> Yaml {
    let mut docs = yaml_documents(path);
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

/// Percent-encoding of a URL query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Calls `probe` every 50 ms until it gives `Some`, for at most `limit`.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sluice run` that goes on until its input is closed: a Kafka pipeline
/// on the embedded broker, fed from this test's pipe to its stdin (held
/// open), with RocksDB checkpoints and `metrics.listen`, so that every kind
/// of series it exports exists: the counters, each aggregation's plugin
/// series, the per-partition series and the state's.
struct LiveSluice {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    /// The metrics port.
    port: u16,
    _dir: tempfile::TempDir,
}

impl LiveSluice {
    /// Starts the run and feeds it [`EVENTS`] events.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("pipeline.yaml");
        std::fs::write(
            &config,
            format!(
                "source: {{ kafka: {{ brokers: embedded, topics: [events], feed: '-', idle_timeout: 200ms }} }}\n\
                 event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
                 watermark: {{ max_out_of_orderness: 2s }}\n\
                 window: {{ tumbling: {{ size: 10s }} }}\n\
                 allowed_lateness: 1s\n\
                 aggregations:\n\
                 \x20 - {{ name: latency, plugin: builtin/stats, field: latency_ms }}\n\
                 \x20 - {{ name: pct, plugin: builtin/percentiles, field: latency_ms, config: {{ quantiles: [0.5, 0.99] }} }}\n\
                 \x20 - {{ name: errors, plugin: builtin/mean, field: error }}\n\
                 sink: {{ file: results.jsonl }}\n\
                 late_output: {{ file: late.jsonl }}\n\
                 dead_letter: {{ file: dead.jsonl }}\n\
                 state: {{ backend: rocksdb, path: state, checkpoint_interval: 500ms }}\n\
                 metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
            ),
        )
        .unwrap();
        let mut child = run_fed(&config);
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(generate(EVENTS).as_bytes()).unwrap();
        stdin.flush().unwrap();
        Self {
            child: Some(child),
            stdin: Some(stdin),
            stderr: Some(stderr),
            port,
            _dir: dir,
        }
    }

    /// The `/metrics` body once every event fed has been read.
    fn metrics_after_all_events(&mut self) -> String {
        let want = format!("sluice_events_in_total {EVENTS}\n");
        let mut last = String::new();
        let found = wait_for(Duration::from_secs(90), || {
            let (status, body) = http_get(self.port, "/metrics")?;
            last = body.clone();
            (status == 200 && body.contains(&want)).then_some(body)
        });
        match found {
            Some(body) => body,
            None => panic!(
                "no `{}` on /metrics within 90 s; the last body:\n{last}\nsluice's stderr:\n{}",
                want.trim(),
                self.finish().1
            ),
        }
    }

    /// Closes the input and waits for the run to end: its exit status and
    /// stderr.
    fn finish(&mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("the run was finished before");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for LiveSluice {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The names of the samples in a Prometheus or OpenMetrics exposition
/// (`sluice_events_in_total`, `sluice_commit_duration_seconds_bucket`, ...).
fn exposed_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// PromQL aggregation operators: keywords that may stand before a `by` or
/// `without` clause instead of their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// PromQL keywords that are neither functions nor metric names.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// PromQL keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the first `close` at or after `from` that is not in
/// a string.
fn skip_past(chars: &[char], mut from: usize, close: char) -> usize {
    while from < chars.len() {
        match chars[from] {
            c if c == close => return from + 1,
            q @ ('"' | '\'') => from = skip_string(chars, from + 1, q),
            _ => from += 1,
        }
    }
    from
}

/// The index just past a string's closing quote; `from` is past its
/// opening one.
fn skip_string(chars: &[char], mut from: usize, quote: char) -> usize {
    while from < chars.len() {
        match chars[from] {
            '\\' => from += 2,
            c if c == quote => return from + 1,
            _ => from += 1,
        }
    }
    from
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: its identifiers, less
/// functions (a name before `(`), aggregation operators, keywords, label
/// names and values (in `{...}`, and in `by (...)` and the like), ranges
/// (`[5m]`), strings, numbers and Grafana's `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i + 1, c),
            '{' => i = skip_past(&chars, i + 1, '}'),
            '[' => i = skip_past(&chars, i + 1, ']'),
            '$' if chars.get(i + 1) == Some(&'{') => i = skip_past(&chars, i + 2, '}'),
            '$' => {
                i += 1;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations: 0.99, 10e9, 5m, 1h30m.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let before_paren = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if before_paren {
                        i = skip_past(&chars, next + 1, ')');
                    }
                } else if !before_paren
                    && !AGGREGATIONS.contains(&lower.as_str())
                    && !KEYWORDS.contains(&lower.as_str())
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_parsed_out_of_promql() {
    let names = metric_names;
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{instance=~"$instance", x="}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum without (partition) (b) > 10e9 and on (job) rate(c_total[5m] offset 1h) > 0"),
        ["b", "c_total"]
    );
    assert_eq!(
        names("time() - max by (i) (d{i=~\"${i}\"} > 0) unless ignoring(x) e"),
        ["d", "e"]
    );
    assert_eq!(names("up{job=\"sluice\"} == 0"), ["up"]);
    assert!(names("vector(1) + 2").is_empty());
}

/// Every PromQL expression of the dashboard, with where it is: the panels'
/// queries (at any depth) and the template variables' queries
/// (`label_values(METRIC, LABEL)` gives `METRIC`).
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push((format!("dashboard panel `{title}`"), expr.to_string()));
                }
                for (key, v) in map {
                    if key != "templating" {
                        walk(v, title, out);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    walk(v, title, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .expect("a query variable's query");
        let expr = match query.strip_prefix("label_values(") {
            Some(args) => args.split(',').next().unwrap().trim().to_string(),
            None => query.to_string(),
        };
        out.push((format!("dashboard variable `{}`", variable["name"]), expr));
    }
    out
}

fn dashboard() -> serde_json::Value {
    let path = deploy("grafana/sluice-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn alert_rules() -> Yaml {
    yaml(&deploy("prometheus/sluice-alerts.yml"))
}

/// Every alerting rule: its name and expression.
fn alerts(rules: &Yaml) -> Vec<(String, String)> {
    let groups = rules["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .map(|r| {
            let name = r["alert"].as_str().expect("alert name").to_string();
            let expr = r["expr"].as_str().expect("alert expr").to_string();
            (name, expr)
        })
        .collect()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool (Debian package `prometheus`) is missing: run scripts/setup-tests.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `promtool check rules` accepts the alert rules.
#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, out) = promtool(&["check", "rules", "sluice-alerts.yml"]);
    assert!(ok, "{out}");
    let count = alerts(&alert_rules()).len();
    assert!(
        out.contains(&format!("SUCCESS: {count} rules found")),
        "{out}"
    );
}

/// `promtool test rules` passes the rules' unit tests, and those test every
/// alert both firing and not firing.
#[test]
fn alert_rules_pass_their_unit_tests() {
    let tests = yaml(&deploy("prometheus/sluice-alerts.test.yml"));
    let cases: Vec<&Yaml> = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().expect("alert_rule_test"))
        .collect();
    for (alert, _) in alerts(&alert_rules()) {
        let of_alert = || {
            cases
                .iter()
                .filter(|c| c["alertname"].as_str() == Some(&alert))
        };
        let fires = |c: &&&Yaml| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
        assert!(
            of_alert().any(|c| fires(&c)),
            "no test of {alert} expects it to fire"
        );
        assert!(
            of_alert().any(|c| !fires(&c)),
            "no test of {alert} expects it not to fire"
        );
    }
    let (ok, out) = promtool(&["test", "rules", "sluice-alerts.test.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every metric name in the dashboard and the alert rules is one that a
/// running pipeline exports, and they cover what an operator needs to see.
#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    // Each metric name, with where it is used.
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut names_of = |expressions: Vec<(String, String)>| {
        let mut names = BTreeSet::new();
        for (place, expr) in expressions {
            let found = metric_names(&expr);
            assert!(!found.is_empty(), "{place}: no metric in `{expr}`");
            for name in found {
                uses.entry(name.clone()).or_default().insert(place.clone());
                names.insert(name);
            }
        }
        names
    };
    let panels = dashboard_expressions(&dashboard());
    assert!(panels.len() >= 20, "{panels:?}");
    let on_dashboard = names_of(panels);
    let alerted = names_of(
        alerts(&alert_rules())
            .into_iter()
            .map(|(name, expr)| (format!("alert {name}"), expr))
            .collect(),
    );
    // What each must show or watch.
    for name in [
        "sluice_events_in_total",
        "sluice_results_out_total",
        "sluice_windows_open",
        "sluice_state_bytes",
        "sluice_dead_lettered_total",
        "sluice_plugin_failures_total",
        "sluice_plugin_quarantined",
        "sluice_consumer_lag_messages",
        "sluice_watermark_lag_seconds",
        "sluice_processing_latency_seconds_bucket",
    ] {
        assert!(on_dashboard.contains(name), "the dashboard has no {name}");
    }
    for name in [
        "sluice_consumer_lag_messages",
        "sluice_processing_latency_seconds_bucket",
        "sluice_dead_lettered_total",
        "sluice_plugin_failures_total",
        "sluice_state_bytes",
        "sluice_plugin_quarantined",
        "sluice_watermark_seconds",
    ] {
        assert!(alerted.contains(name), "no alert on {name}");
    }

    let mut live = LiveSluice::start();
    live.metrics_after_all_events();
    // Some series come with the first commit or checkpoint after the
    // events: wait for every name used, within a bound.
    let mut exported = BTreeSet::new();
    wait_for(Duration::from_secs(20), || {
        let (_, body) = http_get(live.port, "/metrics")?;
        exported = exposed_names(&body);
        uses.keys()
            .all(|n| n == "up" || exported.contains(n))
            .then_some(())
    });
    // The checkpoint series carry real values: a checkpoint was taken (it
    // made state of the open windows), with its duration observed.
    let checkpointed = wait_for(Duration::from_secs(20), || {
        let (_, body) = http_get(live.port, "/metrics")?;
        let value = |name: &str| metric_value(&body, name);
        (value("sluice_last_checkpoint_timestamp_seconds")? > 1.7e9
            && value("sluice_state_bytes")? > 0.0
            && value("sluice_checkpoint_duration_seconds_count")? >= 1.0)
            .then_some(())
    });
    let (status, stderr) = live.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        checkpointed.is_some(),
        "no checkpoint with state in the metrics of a run that keeps them"
    );
    // `up` is Prometheus' own series about each scrape.
    let missing: Vec<String> = uses
        .iter()
        .filter(|(name, _)| *name != "up" && !exported.contains(*name))
        .map(|(name, places)| {
            let places: Vec<&str> = places.iter().map(String::as_str).collect();
            format!("{name} (in {})", places.join(", "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported by a running sluice:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

/// A Prometheus run by the test, on a free port with its own storage,
/// scraping one target every second and evaluating the alert rules every
/// second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 rule_files: [{:?}]\n\
                 scrape_configs:\n\
                 \x20 - job_name: sluice\n\
                 \x20   static_configs: [{{ targets: [\"127.0.0.1:{target_port}\"] }}]\n",
                deploy("prometheus/sluice-alerts.yml")
                    .canonicalize()
                    .unwrap()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "prometheus (Debian package `prometheus`) is missing: run scripts/setup-tests.sh",
            );
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        wait_for(Duration::from_secs(30), || {
            http_get(port, "/-/ready").filter(|(s, _)| *s == 200)
        })
        .expect("Prometheus not ready within 30 s");
        prometheus
    }

    /// The answer of the HTTP API at `path` (`status` is `success` or
    /// `error`).
    fn api(&self, path: &str) -> serde_json::Value {
        let (_, body) = http_get(self.port, path).expect("Prometheus does not answer");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// An instant query.
    fn query(&self, expr: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// The value of a query whose answer is one sample.
    fn value(&self, expr: &str) -> Option<String> {
        let answer = self.query(expr);
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str().map(str::to_string),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus scrapes a running sluice: the query API gives the
/// events fed, the alert rules evaluate without error on its series, and
/// every dashboard query is accepted.
#[test]
fn prometheus_scrapes_a_running_sluice() {
    let mut live = LiveSluice::start();
    let prometheus = Prometheus::start(live.port);
    let up = wait_for(Duration::from_secs(30), || {
        prometheus.value("up{job=\"sluice\"}").filter(|v| v == "1")
    });
    assert!(
        up.is_some(),
        "the target is not up: {}",
        prometheus.api("/api/v1/targets")
    );
    live.metrics_after_all_events();
    let fed = EVENTS.to_string();
    let mut last = None;
    let seen = wait_for(Duration::from_secs(30), || {
        last = prometheus.value("sluice_events_in_total{job=\"sluice\"}");
        last.as_ref().filter(|v| **v == fed).cloned()
    });
    assert!(
        seen.is_some(),
        "sluice_events_in_total in Prometheus is {last:?}, not {fed}"
    );
    let calls = prometheus.value("sum(sluice_plugin_calls_total)");
    assert!(
        calls
            .as_deref()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0),
        "no plugin calls in Prometheus: {calls:?}"
    );

    // Each rule has been evaluated (health leaves `unknown`), and none failed.
    let mut rules = Vec::new();
    wait_for(Duration::from_secs(30), || {
        let answer = prometheus.api("/api/v1/rules");
        rules = answer["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")).then_some(())
    });
    assert_eq!(rules.len(), alerts(&alert_rules()).len(), "{rules:?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Grafana's variables, as Grafana would fill them in.
    for (place, expr) in dashboard_expressions(&dashboard()) {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".+");
        let answer = prometheus.query(&expr);
        assert_eq!(answer["status"], "success", "{place}: `{expr}`: {answer}");
    }
    drop(prometheus);
    let (status, stderr) = live.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{EVENTS} events read")),
        "{stderr}"
    );
}

/// The Kubernetes resources of `deploy/k8s/`, by kind.
fn k8s_resources() -> BTreeMap<String, Yaml> {
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    let mut by_kind = BTreeMap::new();
    for file in kustomization["resources"].as_sequence().expect("resources") {
        let file = file.as_str().expect("a resource file");
        for doc in yaml_documents(&deploy(&format!("k8s/{file}"))) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            assert!(
                by_kind.insert(kind.clone(), doc).is_none(),
                "two {kind}s in deploy/k8s"
            );
        }
    }
    by_kind
}

fn str_of<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {value:?}"))
}

/// A container port given by number or by name, as a number.
fn port_number(port: &Yaml, container: &Yaml) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port");
    container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Whether every label of `subset` is in `labels`.
fn labels_within(subset: &Yaml, labels: &Yaml) -> bool {
    let subset = subset.as_mapping().expect("labels");
    !subset.is_empty() && subset.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The manifests fit sluice: the ConfigMap's pipeline passes `sluice
/// validate`, the command is a real subcommand with real flags and reads
/// the mounted pipeline, the probes and ports are the pipeline's metrics
/// port and paths a running sluice answers, the state and plugin cache lie
/// on writable volumes (the state on the claim template's), and the
/// Service selects the pods.
#[test]
fn kubernetes_manifests_match_sluice() {
    let resources = k8s_resources();
    let config_map = &resources["ConfigMap"];
    let set = &resources["StatefulSet"];
    let service = &resources["Service"];
    let pod = &set["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let containers = pod["spec"]["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // The Service: headless, the StatefulSet's, selecting its pods.
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(set["spec"]["serviceName"], service["metadata"]["name"]);
    assert!(labels_within(&service["spec"]["selector"], pod_labels));
    assert!(labels_within(
        &set["spec"]["selector"]["matchLabels"],
        pod_labels
    ));

    // The command: `sluice SUBCOMMAND --flag value ...` with flags that
    // subcommand has.
    let argv: Vec<&str> = container["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .chain(container["args"].as_sequence().into_iter().flatten())
        .map(|a| str_of(a, "command"))
        .collect();
    assert_eq!(argv.first(), Some(&"sluice"), "{argv:?}");
    let subcommand = argv[1];
    let help = sluice().args([subcommand, "--help"]).output().unwrap();
    assert!(
        help.status.success() && subcommand != "help" && !subcommand.starts_with('-'),
        "`sluice {subcommand}` is not a subcommand: {}",
        String::from_utf8_lossy(&help.stderr)
    );
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in argv.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag),
            "`sluice {subcommand}` has no {flag}: {help}"
        );
    }
    assert_eq!(subcommand, "run", "the container runs the pipeline");
    let config_path = argv
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "-c")
        .map(|w| w[1])
        .expect("--config");

    // The pipeline: the ConfigMap key mounted where --config reads it.
    let mounts = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts");
    let volumes = pod["spec"]["volumes"].as_sequence().expect("volumes");
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("no volume of the ConfigMap");
    let config_mount = mounts
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .expect("the ConfigMap's volume is not mounted");
    let key = Path::new(config_path)
        .strip_prefix(str_of(&config_mount["mountPath"], "mountPath"))
        .unwrap_or_else(|_| panic!("{config_path} is not in the ConfigMap's mount"));
    let pipeline_text = str_of(
        &config_map["data"][key.to_str().unwrap()],
        "the ConfigMap's pipeline",
    );

    // `sluice validate` accepts it. Adapted: the plugin compile cache goes
    // to a temp dir, not to the pod volume's path on this machine.
    let dir = tempfile::tempdir().unwrap();
    let pipeline_file = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline_file, pipeline_text).unwrap();
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&pipeline_file)
        .env("SLUICE_PLUGIN_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice validate refuses the ConfigMap's pipeline: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pipeline: Yaml = serde_yaml::from_str(pipeline_text).unwrap();
    assert!(
        pipeline["source"]["kafka"].is_mapping(),
        "not a Kafka pipeline"
    );

    // Ports: the probes, the declared port and the Service's target are
    // the pipeline's metrics port, listened on beyond loopback.
    let listen = str_of(&pipeline["metrics"]["listen"], "metrics.listen");
    let (host, port) = listen.rsplit_once(':').expect("metrics.listen host:port");
    let port: u64 = port.parse().expect("metrics.listen port");
    assert!(
        !["127.0.0.1", "localhost", "[::1]"].contains(&host),
        "metrics.listen {listen} is out of the kubelet's reach"
    );
    let declared: Vec<u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert!(
        declared.contains(&port),
        "container ports {declared:?}, metrics at {port}"
    );
    let service_ports = service["spec"]["ports"]
        .as_sequence()
        .expect("Service ports");
    assert!(
        service_ports
            .iter()
            .any(|p| port_number(&p["targetPort"], container) == port),
        "the Service does not reach port {port}"
    );
    let mut probe_paths = Vec::new();
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(port_number(&get["port"], container), port, "{probe}");
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        probe_paths.push(path);
    }
    if let Some(path) = pod["metadata"]["annotations"]["prometheus.io/path"].as_str() {
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str())
        );
        probe_paths.push(path);
    }

    // The state directory on the claim template's volume, the compile
    // cache on a writable one (the root file system is read-only).
    assert_eq!(pipeline["state"]["backend"].as_str(), Some("rocksdb"));
    let claims: Vec<&Yaml> = set["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|c| &c["metadata"]["name"])
        .collect();
    let mount_of = |path: &str, pred: &dyn Fn(&Yaml) -> bool| {
        mounts.iter().any(|m| {
            pred(m)
                && Path::new(path).is_absolute()
                && Path::new(path).starts_with(str_of(&m["mountPath"], "mountPath"))
        })
    };
    let state = str_of(&pipeline["state"]["path"], "state.path");
    assert!(
        mount_of(state, &|m: &Yaml| claims.contains(&&m["name"])),
        "state.path {state} is not on a volumeClaimTemplate's mount"
    );
    let writable = |m: &Yaml| m["readOnly"].as_bool() != Some(true);
    if container["securityContext"]["readOnlyRootFilesystem"].as_bool() == Some(true) {
        let cache = str_of(&pipeline["plugin_cache"], "plugin_cache");
        assert!(
            cache == "off" || mount_of(cache, &writable),
            "plugin_cache {cache} is on the read-only root file system"
        );
        for output in ["sink", "late_output", "dead_letter", "dedup_output"] {
            if let Some(file) = pipeline[output]["file"].as_str() {
                assert!(
                    mount_of(file, &writable),
                    "{output}.file {file} is on the read-only root file system"
                );
            }
        }
    }
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][what].as_str().is_some(),
                "no resources.{kind}.{what}"
            );
        }
    }

    // The probes' paths are ones a running sluice answers with 200.
    let mut live = LiveSluice::start();
    for path in probe_paths {
        let answer = wait_for(Duration::from_secs(30), || {
            http_get(live.port, path).filter(|(s, _)| *s == 200)
        });
        assert!(
            answer.is_some(),
            "a running sluice answers {path} with {:?}",
            http_get(live.port, path)
        );
    }
    let (status, stderr) = live.finish();
    assert!(status.success(), "{stderr}");
}

/// A Kafka run's `/readyz` answers 503 until the consumer has partitions
/// assigned (joining the group takes the embedded broker a few seconds),
/// then 200; `/healthz` is 200 throughout.
#[test]
fn a_kafka_run_is_ready_only_once_partitions_are_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        format!(
            "source: {{ kafka: {{ brokers: embedded, topics: [events], feed: '-' }} }}\n\
             event: {{ key: [service], time: {{ field: ts, format: epoch_millis }} }}\n\
             window: {{ tumbling: {{ size: 10s }} }}\n\
             aggregations: [ {{ name: n, plugin: builtin/count }} ]\n\
             sink: {{ file: results.jsonl }}\n\
             metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    let mut child = run_fed(&config);
    let stdin = child.stdin.take().unwrap();
    let first = wait_for(Duration::from_secs(30), || http_get(port, "/readyz"));
    let ready = wait_for(Duration::from_secs(60), || {
        http_get(port, "/readyz").filter(|(status, _)| *status == 200)
    });
    let health = http_get(port, "/healthz");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(first.map(|(s, _)| s), Some(503), "{stderr}");
    assert!(ready.is_some(), "never ready: {stderr}");
    assert_eq!(health.map(|(s, _)| s), Some(200));
}
