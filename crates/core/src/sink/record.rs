//! The JSON shapes of sluice's records, written by hand into a reused buffer
//! because they are on the per-window (and per-bad-event) path.
//!
//! Result: `{"key":{..},"window":{"start":S,"end":E},"emit":"on_time","results":{"agg.out":V,..}}`
//! (with `"filled":true` after `emit` for a window made up by gap filling)
//!
//! A result for a window in which an aggregation's plugin failed keeps that
//! aggregation's outputs, as `null`, and adds an `errors` object after
//! `results`, keyed by aggregation name, with why:
//! `..,"results":{"requests.count":3,"latency.mean":null},"errors":{"latency":"plugin builtin/stats (stats 0.1.0) timed out after 1s"}}`.
//! A trigger that failed for the window is reported under the key `"trigger"`.
//! A record without failures has no `errors` key.
//! Late:   `{"line":N,"reason":"..","key":{..},"event_time":T,"window":{..},"watermark":W,"event":{..}}`
//! Dead:   `{"line":N,"reason":"..","raw":".."}` (with `"raw_truncated":true,"raw_bytes":N`
//! after `raw` when the line was longer than the bytes kept)
//! Duplicate: `{"line":N,"reason":"duplicate","dedup_key":{..},"event_time":T,"event":{..}}`

use std::fmt::Write as _;

use crate::decode::write_json_string;
use crate::plugin::grouped::OutputValue;
use crate::plugin::{OutputKind, OutputSpec};
use crate::source::Origin;
use crate::window::{Window, WindowResult};

/// The result keys of every aggregation (`"latency.p99"`), JSON-quoted once.
#[derive(Debug, Clone)]
pub struct OutputNames {
    per_agg: Vec<Vec<(String, OutputKind)>>,
    /// Aggregation names, JSON-quoted, for the `errors` object.
    aggs: Vec<String>,
}

impl OutputNames {
    /// Names for aggregations called `names`, with the outputs their plugins declare.
    pub fn new<'a>(aggs: impl IntoIterator<Item = (&'a str, &'a [OutputSpec])>) -> Self {
        let mut names = Self {
            per_agg: Vec::new(),
            aggs: Vec::new(),
        };
        for (name, outputs) in aggs {
            names.per_agg.push(
                outputs
                    .iter()
                    .map(|o| {
                        let mut quoted = String::new();
                        write_json_string(&mut quoted, &format!("{name}.{}", o.name));
                        (quoted, o.kind)
                    })
                    .collect(),
            );
            let mut quoted = String::new();
            write_json_string(&mut quoted, name);
            names.aggs.push(quoted);
        }
        names
    }

    /// Renames aggregation `a`'s outputs after a hot reload gave it a
    /// version with other outputs.
    pub fn replace(&mut self, a: usize, name: &str, outputs: &[OutputSpec]) {
        if let Some(per_agg) = self.per_agg.get_mut(a) {
            *per_agg = Self::new([(name, outputs)]).per_agg.swap_remove(0);
        }
    }
}

fn write_window(out: &mut String, w: Window) {
    let _ = write!(out, r#"{{"start":{},"end":{}}}"#, w.start, w.end);
}

/// Renders one output value: integers and booleans as JSON has them, text
/// as a JSON string, a ranked list as an array of `{"label", "value"}`; a
/// missing value, or a number that is not finite, as `null`.
fn write_value(out: &mut String, value: Option<&OutputValue>, kind: OutputKind) {
    match value {
        None => out.push_str("null"),
        Some(OutputValue::Integer(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(OutputValue::Float(v)) => write_number(out, Some(*v), kind),
        Some(OutputValue::Text(text)) => write_json_string(out, text),
        Some(OutputValue::Boolean(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(OutputValue::Ranked(entries)) => {
            out.push('[');
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"label":"#);
                write_json_string(out, &entry.label);
                out.push_str(r#","value":"#);
                write_number(out, Some(entry.value), OutputKind::Float);
                out.push('}');
            }
            out.push(']');
        }
    }
}

/// A float as a result record carries it: integral values of an integer
/// output without a fraction (0.1 plugins give integers as floats).
fn write_number(out: &mut String, value: Option<f64>, kind: OutputKind) {
    match value {
        Some(v) if v.is_finite() => {
            if kind == OutputKind::Integer && v.fract() == 0.0 && v.abs() < 9.0e15 {
                let _ = write!(out, "{}", v as i64);
            } else {
                out.push_str(ryu::Buffer::new().format_finite(v));
            }
        }
        _ => out.push_str("null"),
    }
}

/// Renders one window result into `out` (cleared first).
pub fn write_result(out: &mut String, key: &str, result: &WindowResult, names: &OutputNames) {
    write_result_marked(out, key, result, names, false);
}

/// Renders one window result, with `"filled":true` after `emit` when gap
/// filling made it up (see [`crate::fill`]); real results have no such key.
pub fn write_result_marked(
    out: &mut String,
    key: &str,
    result: &WindowResult,
    names: &OutputNames,
    filled: bool,
) {
    out.clear();
    out.push_str(r#"{"key":"#);
    out.push_str(key);
    out.push_str(r#","window":"#);
    write_window(out, result.window);
    out.push_str(r#","emit":""#);
    out.push_str(result.emit.as_str());
    out.push('"');
    if filled {
        out.push_str(r#","filled":true"#);
    }
    out.push_str(r#","results":{"#);
    let mut first = true;
    for (values, names) in result.outputs.iter().zip(&names.per_agg) {
        for (value, (name, kind)) in values.iter().zip(names) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(name);
            out.push(':');
            write_value(out, value.as_ref(), *kind);
        }
    }
    out.push('}');
    if !result.errors.is_empty() {
        out.push_str(r#","errors":{"#);
        for (i, (agg, why)) in result.errors.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match names.aggs.get(*agg) {
                Some(name) => out.push_str(name),
                None if *agg == crate::window::TRIGGER_ERROR => out.push_str(r#""trigger""#),
                None => write_json_string(out, &agg.to_string()),
            }
            out.push(':');
            write_json_string(out, why);
        }
        out.push('}');
    }
    out.push('}');
}

/// Why an event is late, in words: the late record's `reason` and the
/// `reason` header of a late record on Kafka.
pub fn late_reason(window: Window, watermark: i64, lateness_ms: i64) -> String {
    format!(
        "late: watermark {watermark} has passed window end {} plus allowed lateness {lateness_ms}ms",
        window.end
    )
}

/// Renders a late event: where it came from, where it would have gone and why
/// it did not.
// Each argument is one field of the record it writes.
#[allow(clippy::too_many_arguments)]
pub fn write_late(
    out: &mut String,
    origin: &Origin<'_>,
    key: &str,
    event_time: i64,
    window: Window,
    watermark: i64,
    lateness_ms: i64,
    raw: &[u8],
) {
    out.clear();
    let _ = write!(out, r#"{{{origin},"reason":"#);
    write_json_string(out, &late_reason(window, watermark, lateness_ms));
    let _ = write!(out, r#","key":{key},"event_time":{event_time},"window":"#);
    write_window(out, window);
    let _ = write!(out, r#","watermark":{watermark},"event":"#);
    // The raw line decoded successfully, so it is one valid JSON value.
    out.push_str(&String::from_utf8_lossy(raw));
    out.push('}');
}

/// Renders an event dropped by dedup: where it came from, its dedup key and
/// event time, and the event.
pub fn write_duplicate(
    out: &mut String,
    origin: &Origin<'_>,
    dedup_key: &str,
    event_time: i64,
    raw: &[u8],
) {
    out.clear();
    let _ = write!(
        out,
        r#"{{{origin},"reason":"duplicate","dedup_key":{dedup_key},"event_time":{event_time},"event":"#
    );
    // The raw line decoded successfully, so it is one valid JSON value.
    out.push_str(&String::from_utf8_lossy(raw));
    out.push('}');
}

/// Renders an event that could not be decoded, with where it came from.
/// At most `max_raw` bytes of it are kept (cut before a UTF-8 character
/// that would not fit); a cut record says so with `"raw_truncated":true`
/// and the line's whole length in `"raw_bytes"`.
pub fn write_dead_letter(
    out: &mut String,
    origin: &Origin<'_>,
    reason: &str,
    raw: &[u8],
    max_raw: usize,
) {
    out.clear();
    let _ = write!(out, r#"{{{origin},"reason":"#);
    write_json_string(out, reason);
    out.push_str(r#","raw":"#);
    let mut kept = raw.len().min(max_raw);
    // Back off continuation bytes, so that a character is kept whole or not at all.
    while kept < raw.len() && kept > 0 && raw[kept] & 0xC0 == 0x80 {
        kept -= 1;
    }
    write_json_string(out, &String::from_utf8_lossy(&raw[..kept]));
    if kept < raw.len() {
        let _ = write!(out, r#","raw_truncated":true,"raw_bytes":{}"#, raw.len());
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::EmitKind;

    fn spec(name: &str, kind: OutputKind) -> OutputSpec {
        OutputSpec {
            name: name.into(),
            kind,
            description: String::new(),
        }
    }

    #[test]
    fn a_long_dead_letter_is_cut_and_says_so() {
        let mut out = String::new();
        write_dead_letter(&mut out, &Origin::Line(3), "malformed JSON", b"abc", 8);
        assert_eq!(out, r#"{"line":3,"reason":"malformed JSON","raw":"abc"}"#);
        // "é" is two bytes: cut before it rather than through it.
        write_dead_letter(&mut out, &Origin::Line(4), "bad", "abcé0123".as_bytes(), 4);
        assert_eq!(
            out,
            r#"{"line":4,"reason":"bad","raw":"abc","raw_truncated":true,"raw_bytes":9}"#
        );
    }

    #[test]
    fn a_failed_aggregation_keeps_its_columns_as_null_and_says_why() {
        let count = [spec("count", OutputKind::Integer)];
        let stats = [
            spec("mean", OutputKind::Float),
            spec("p99", OutputKind::Float),
        ];
        let names = OutputNames::new([("requests", &count[..]), ("latency", &stats[..])]);
        let mut result = WindowResult {
            key: 0,
            window: Window { start: 0, end: 10 },
            emit: EmitKind::OnTime,
            outputs: vec![vec![Some(OutputValue::Float(3.0))], vec![None, None]],
            errors: vec![(
                1,
                "plugin builtin/stats (stats 0.1.0) timed out after 1s".into(),
            )],
        };
        let mut out = String::new();
        write_result(&mut out, r#"{"service":"a"}"#, &result, &names);
        assert_eq!(
            out,
            r#"{"key":{"service":"a"},"window":{"start":0,"end":10},"emit":"on_time","results":{"requests.count":3,"latency.mean":null,"latency.p99":null},"errors":{"latency":"plugin builtin/stats (stats 0.1.0) timed out after 1s"}}"#
        );
        // Without failures the record has no `errors` key at all.
        result.errors.clear();
        write_result(&mut out, r#"{"service":"a"}"#, &result, &names);
        assert!(out.ends_with(r#""latency.p99":null}}"#), "{out}");
    }

    #[test]
    fn structured_outputs_render_as_natural_json() {
        let outputs = [
            spec("n", OutputKind::Integer),
            spec("big", OutputKind::Integer),
            spec("model", OutputKind::Text),
            spec("slow", OutputKind::Boolean),
            spec("top", OutputKind::Ranked),
            spec("rate", OutputKind::Float),
        ];
        let names = OutputNames::new([("a", &outputs[..])]);
        let result = WindowResult {
            key: 0,
            window: Window { start: 0, end: 10 },
            emit: EmitKind::OnTime,
            outputs: vec![vec![
                Some(OutputValue::Integer(-12)),
                Some(OutputValue::Integer(i64::MAX)),
                Some(OutputValue::Text("gpt-\"4\"\n".into())),
                Some(OutputValue::Boolean(false)),
                Some(OutputValue::Ranked(vec![
                    crate::plugin::grouped::RankedEntry {
                        label: "llama".into(),
                        value: 3.0,
                    },
                    crate::plugin::grouped::RankedEntry {
                        label: "x".into(),
                        value: f64::NAN,
                    },
                ])),
                Some(OutputValue::Float(f64::INFINITY)),
            ]],
            errors: Vec::new(),
        };
        let mut out = String::new();
        write_result(&mut out, "{}", &result, &names);
        assert_eq!(
            out,
            r#"{"key":{},"window":{"start":0,"end":10},"emit":"on_time","results":{"a.n":-12,"a.big":9223372036854775807,"a.model":"gpt-\"4\"\n","a.slow":false,"a.top":[{"label":"llama","value":3.0},{"label":"x","value":null}],"a.rate":null}}"#
        );
    }
}
