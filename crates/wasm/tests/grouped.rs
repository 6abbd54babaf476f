//! Components of interface 0.2 under the sandbox: a weighted mean written
//! against the WIT directly (`tests/plugins/grouped-weighted-mean`), called
//! for batches of groups, and the same plugin breaking each promise of the
//! interface, which the host must catch without losing the instance.

use sluice_core::plugin::grouped::OutputValue::{Float, Integer};
use sluice_core::plugin::grouped::{Column, GroupId, GroupedAggregation, InputKind, Rows, Value};
use sluice_core::plugin::{OutputKind, PluginError};
use sluice_wasm::{GroupedInstance, PluginEngine, PluginLimits};

fn engine() -> PluginEngine {
    PluginEngine::new(PluginLimits {
        snapshot_limit: 1 << 20,
        ..PluginLimits::default()
    })
    .expect("engine")
}

fn open(config: &str) -> Result<GroupedInstance, PluginError> {
    let engine = engine();
    let bytes = std::fs::read(sluice_test_plugins::GROUPED_WEIGHTED_MEAN).expect("the plugin");
    let plugin = engine.compile_grouped("grouped-weighted-mean", &bytes)?;
    engine.open_grouped(&plugin, config)
}

/// Rows of (group, value, weight), times counting up.
fn batch(rows: &[(u32, f64, f64)]) -> Rows {
    let mut batch = Rows {
        groups: Vec::new(),
        times: Vec::new(),
        columns: vec![Column::new(InputKind::Float), Column::new(InputKind::Float)],
    };
    for (i, (group, value, weight)) in rows.iter().enumerate() {
        batch.groups.push(GroupId(*group));
        batch.times.push(i as i64);
        assert!(batch.columns[0].push(Some(Value::Float(*value))));
        assert!(batch.columns[1].push(Some(Value::Float(*weight))));
    }
    batch
}

fn groups(ids: &[u32]) -> Vec<GroupId> {
    ids.iter().copied().map(GroupId).collect()
}

#[test]
fn a_grouped_component_declares_typed_inputs_and_computes_per_group() {
    let mut mean = open("{}").expect("opens");
    let inputs: Vec<(&str, InputKind)> = mean
        .inputs()
        .iter()
        .map(|i| (i.name.as_str(), i.kind))
        .collect();
    assert_eq!(
        inputs,
        [("value", InputKind::Float), ("weight", InputKind::Float)]
    );
    let kinds: Vec<OutputKind> = mean.outputs().iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [OutputKind::Float, OutputKind::Float, OutputKind::Integer]
    );

    // Interleaved groups, in two batches; the expected values are computed
    // here from the same rows.
    let rows: Vec<(u32, f64, f64)> = (0..200)
        .map(|i| (i % 3, f64::from(i * 7 % 50), f64::from(1 + i % 4)))
        .collect();
    mean.update(&batch(&rows[..120])).expect("update");
    mean.update(&batch(&rows[120..])).expect("update");
    let got = mean.evaluate(&groups(&[2, 0, 1, 9])).expect("evaluate");
    for (g, values) in [2u32, 0, 1].iter().zip(&got) {
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == *g).collect();
        let weight: f64 = mine.iter().map(|r| r.2).sum();
        let sum: f64 = mine.iter().map(|r| r.1 * r.2).sum();
        assert_eq!(
            values,
            &vec![
                Some(Float(sum / weight)),
                Some(Float(weight)),
                Some(Integer(mine.len() as i64))
            ],
            "group {g}"
        );
    }
    assert_eq!(
        got[3],
        vec![None, Some(Float(0.0)), Some(Integer(0))],
        "a group never seen is empty"
    );

    // Merge 1 into 0, move group 0 to another instance as bytes, release.
    mean.merge(&groups(&[0]), &groups(&[1])).expect("merge");
    let merged = mean.evaluate(&groups(&[0])).expect("evaluate");
    let states = mean.snapshot(&groups(&[0, 2])).expect("snapshot");
    let mut other = open("{}").expect("opens");
    let version = other.info().state_version;
    let refused = other
        .restore(&groups(&[5, 6]), &[&states[0], b"not a state"], version)
        .expect("restore");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].group, GroupId(6));
    assert!(
        refused[0].message.contains("not a state of format 1"),
        "{}",
        refused[0].message
    );
    assert_eq!(other.evaluate(&groups(&[5])).expect("evaluate"), merged);
    mean.release(&groups(&[0])).expect("release");
    let released = mean.evaluate(&groups(&[0])).expect("evaluate");
    assert_eq!(
        released[0][2],
        Some(Integer(0)),
        "a released group is empty"
    );
    assert!(!mean.is_poisoned());
}

/// Each broken promise is an error naming the plugin and what it did; the
/// instance is not poisoned (its states are intact), so the next call works.
#[test]
fn outputs_of_another_kind_count_or_length_are_refused() {
    let cases = [
        ("kind", "returned text values for float output `mean`"),
        ("rows", "returned 1 values of output `mean` for 2 groups"),
        (
            "outputs",
            "returned 2 output columns from evaluate but declares 3 outputs",
        ),
    ];
    for (misbehave, expected) in cases {
        let mut plugin = open(&format!(r#"{{"misbehave": "{misbehave}"}}"#)).expect("opens");
        plugin
            .update(&batch(&[(0, 1.0, 1.0), (1, 2.0, 1.0)]))
            .expect("update");
        let err = plugin
            .evaluate(&groups(&[0, 1]))
            .expect_err(misbehave)
            .to_string();
        assert!(err.contains(expected), "{misbehave}: {err}");
        assert!(err.contains("grouped-weighted-mean"), "{err}");
        assert!(!plugin.is_poisoned(), "{misbehave}");
        plugin
            .update(&batch(&[(0, 1.0, 1.0)]))
            .expect("still callable");
    }
}

#[test]
fn a_snapshot_over_the_limit_is_refused() {
    let mut plugin = open(r#"{"misbehave": "snapshot"}"#).expect("opens");
    plugin.update(&batch(&[(0, 1.0, 1.0)])).expect("update");
    let err = plugin
        .snapshot(&groups(&[0]))
        .expect_err("2 MiB")
        .to_string();
    assert!(err.contains("over the snapshot limit of 1 MiB"), "{err}");
}

#[test]
fn a_trap_in_a_grouped_call_poisons_the_instance_until_it_is_reopened() {
    let mut plugin = open(r#"{"misbehave": "trap"}"#).expect("opens");
    plugin.update(&batch(&[(0, 1.0, 1.0)])).expect("update");
    let err = plugin
        .update(&batch(&[(1, 2.0, 1.0), (0, -1.0, 1.0)]))
        .expect_err("panics")
        .to_string();
    assert!(err.contains("panicked: negative value -1"), "{err}");
    assert!(plugin.is_poisoned());
    assert!(
        plugin.evaluate(&groups(&[0])).is_err(),
        "not callable until reopened"
    );
    plugin.reopen().expect("reopens");
    let fresh = plugin.evaluate(&groups(&[0])).expect("evaluate");
    assert_eq!(fresh[0][2], Some(Integer(0)), "every group was lost");
}

#[test]
fn declared_names_and_interface_versions_are_checked_at_load() {
    let err = open(r#"{"misbehave": "name"}"#)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains(r#"output name "no good" is not a plain name"#),
        "{err}"
    );

    let engine = engine();
    let grouped = std::fs::read(sluice_test_plugins::GROUPED_WEIGHTED_MEAN).expect("plugin");
    let err = engine
        .compile("v0.2", &grouped)
        .err()
        .expect("not 0.1")
        .to_string();
    assert!(
        err.contains("does not export sluice:plugin/aggregator@0.1.0"),
        "{err}"
    );
    // A 0.1 component (the built-ins are 0.2 components).
    let count = std::fs::read(sluice_test_plugins::COUNT_V2).expect("count-v2");
    let err = engine
        .compile_grouped("v0.1", &count)
        .err()
        .expect("not 0.2")
        .to_string();
    assert!(
        err.contains("does not export sluice:plugin/aggregator@0.2.0"),
        "{err}"
    );
}

/// A 0.1 component behind the grouped trait through core's `PerWindow`:
/// one grouped call over interleaved windows gives each window what the
/// component gives when its values are added to that window's accumulator
/// alone.
#[test]
fn a_0_1_component_serves_grouped_calls_through_the_adapter() {
    use sluice_core::plugin::Aggregation;
    use sluice_core::plugin::grouped::{PerWindow, single_value_input};

    let engine = engine();
    // A 0.1 component: `count` and a constant `generation`.
    let count = std::fs::read(sluice_test_plugins::COUNT_V2).expect("count-v2");
    let compiled = engine.compile("count-v2", &count).expect("compiles");
    let mut grouped = PerWindow::new(Box::new(
        engine.open_aggregation(&compiled, "{}").expect("opens"),
    ));
    let mut alone = engine.open_aggregation(&compiled, "{}").expect("opens");

    let mut rows = Rows::for_inputs(&[single_value_input()]);
    let input: Vec<(u32, i64, f64)> = (0..500)
        .map(|i| (i % 7, i64::from(i), f64::from(i * 13 % 97)))
        .collect();
    for (group, time, value) in &input {
        rows.groups.push(GroupId(*group));
        rows.times.push(*time);
        assert!(rows.columns[0].push(Some(Value::Float(*value))));
    }
    let (opening, _) = grouped.call_stats();
    grouped.update(&rows).expect("update");
    let got = grouped
        .evaluate(&groups(&[0, 1, 2, 3, 4, 5, 6]))
        .expect("evaluate");
    let (calls, _) = grouped.call_stats();
    for (g, outputs) in got.iter().enumerate() {
        let acc = alone.create().expect("create");
        let (values, times): (Vec<f64>, Vec<i64>) = input
            .iter()
            .filter(|r| r.0 == g as u32)
            .map(|r| (r.2, r.1))
            .unzip();
        alone.add(acc, &values, &times).expect("add");
        let want: Vec<Option<f64>> = alone.finish(acc).expect("finish");
        let got: Vec<Option<f64>> = outputs
            .iter()
            .map(|v| v.as_ref().and_then(|v| v.number()))
            .collect();
        assert_eq!(got, want, "window {g}");
        assert_eq!(
            outputs[0],
            Some(Integer(values.len() as i64)),
            "count is an integer"
        );
    }
    // One create, one add and one finish per window, whatever the
    // interleaving of 500 rows.
    assert_eq!(
        calls - opening,
        7 + 7 + 7,
        "create, add and finish per window"
    );
}
