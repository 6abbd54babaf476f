//! The one place where WIT types (generated in [`crate::bindings`]) become
//! core's types and back: the engine and the window code never see a
//! generated type.

use sluice_core::plugin as core;

use crate::bindings::trigger_v0_1 as trigger;
use crate::bindings::v0_1::sluice::plugin::types as wit;

/// `plugin-info` is the same record in every interface version, generated
/// once per version's package.
macro_rules! plugin_info_from {
    ($wit:ty) => {
        impl From<$wit> for core::PluginInfo {
            fn from(i: $wit) -> Self {
                Self {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                    state_version: i.state_version,
                    mergeable: i.mergeable,
                    commutative: i.commutative,
                    config_help: i.config_help,
                }
            }
        }
    };
}

plugin_info_from!(wit::PluginInfo);

impl From<wit::OutputKind> for core::OutputKind {
    fn from(kind: wit::OutputKind) -> Self {
        match kind {
            wit::OutputKind::Integer => Self::Integer,
            wit::OutputKind::Float => Self::Float,
        }
    }
}

impl From<wit::OutputSpec> for core::OutputSpec {
    fn from(o: wit::OutputSpec) -> Self {
        Self {
            name: o.name,
            kind: o.kind.into(),
            description: o.description,
        }
    }
}

/// A window as the trigger interface passes it.
pub(crate) fn window(w: core::Window) -> trigger::TriggerWindow {
    trigger::TriggerWindow {
        start: w.start,
        end: w.end,
    }
}

/// Elements as the trigger interface passes them.
pub(crate) fn elements(e: &core::Elements) -> trigger::Elements {
    trigger::Elements {
        count: e.count,
        min_time: e.min_time,
        max_time: e.max_time,
        preview: e.preview.clone(),
    }
}

impl From<trigger::Decision> for core::Decision {
    fn from(d: trigger::Decision) -> Self {
        Self {
            action: match d.action {
                trigger::Action::Continue => core::Action::Continue,
                trigger::Action::Fire => core::Action::Fire,
                trigger::Action::FireAndPurge => core::Action::FireAndPurge,
                trigger::Action::Purge => core::Action::Purge,
            },
            interest: match d.interest {
                trigger::ElementInterest::After(n) => core::ElementInterest::After(n),
                trigger::ElementInterest::Late => core::ElementInterest::Late,
                trigger::ElementInterest::None => core::ElementInterest::None,
            },
            event_timers: d.event_timers,
            processing_delays: d.processing_delays,
        }
    }
}

// Interface 0.2: the grouped aggregator. Its `types` are a package of their
// own, so the records that look like 0.1's are converted again here.

use sluice_core::plugin::grouped;
use sluice_core::plugin::untrusted::bounded;

use crate::bindings::v0_2 as v2;

plugin_info_from!(v2::PluginInfo);

/// A declared input, its texts escaped and cut at `limit` bytes.
pub(crate) fn input_spec(i: v2::InputSpec, limit: usize) -> grouped::InputSpec {
    grouped::InputSpec {
        name: bounded(&i.name, limit).into_owned(),
        kind: match i.kind {
            v2::InputKind::Float => grouped::InputKind::Float,
            v2::InputKind::Integer => grouped::InputKind::Integer,
            v2::InputKind::Text => grouped::InputKind::Text,
            v2::InputKind::Boolean => grouped::InputKind::Boolean,
            v2::InputKind::Timestamp => grouped::InputKind::Timestamp,
        },
        optional: i.optional,
        description: bounded(&i.description, limit).into_owned(),
    }
}

/// A declared output, its texts escaped and cut at `limit` bytes.
pub(crate) fn output_spec_v0_2(o: v2::OutputSpec, limit: usize) -> core::OutputSpec {
    core::OutputSpec {
        name: bounded(&o.name, limit).into_owned(),
        kind: match o.kind {
            v2::OutputKind::Integer => core::OutputKind::Integer,
            v2::OutputKind::Float => core::OutputKind::Float,
            v2::OutputKind::Text => core::OutputKind::Text,
            v2::OutputKind::Boolean => core::OutputKind::Boolean,
            v2::OutputKind::Ranked => core::OutputKind::Ranked,
        },
        description: bounded(&o.description, limit).into_owned(),
    }
}

/// Group indices as the interface passes them.
pub(crate) fn groups(groups: &[grouped::GroupId]) -> Vec<u32> {
    groups.iter().map(|g| g.0).collect()
}

/// A batch as the interface passes it. The columns are copied once here
/// and once more into the plugin's memory by the canonical ABI.
pub(crate) fn rows(rows: &grouped::Rows) -> v2::Rows {
    v2::Rows {
        groups: groups(&rows.groups),
        times: rows.times.clone(),
        columns: rows
            .columns
            .iter()
            .map(|c| v2::Column {
                values: match &c.values {
                    grouped::ColumnValues::Float(v) => v2::ColumnValues::Float(v.clone()),
                    grouped::ColumnValues::Integer(v) => v2::ColumnValues::Integer(v.clone()),
                    grouped::ColumnValues::Boolean { bits, .. } => {
                        v2::ColumnValues::Boolean(bits.clone())
                    }
                    grouped::ColumnValues::Timestamp(v) => v2::ColumnValues::Timestamp(v.clone()),
                    grouped::ColumnValues::Text(t) => v2::ColumnValues::Text(v2::TextValues {
                        offsets: t.offsets.clone(),
                        bytes: t.bytes.clone(),
                    }),
                },
                validity: c.validity.clone(),
            })
            .collect(),
    }
}

/// The kind of a column of outputs.
fn output_kind(values: &v2::OutputValues) -> (core::OutputKind, usize) {
    match values {
        v2::OutputValues::Integer(v) => (core::OutputKind::Integer, v.len()),
        v2::OutputValues::Float(v) => (core::OutputKind::Float, v.len()),
        v2::OutputValues::Text(v) => (core::OutputKind::Text, v.len()),
        v2::OutputValues::Boolean(v) => (core::OutputKind::Boolean, v.len()),
        v2::OutputValues::Ranked(v) => (core::OutputKind::Ranked, v.len()),
    }
}

/// What `evaluate` returned, as one row of values per group, checked
/// against the declared `outputs`: one column per output, of its kind, one
/// value per group, floats finite. Text and labels are escaped and cut at
/// `limit` bytes, as every plugin string is before it reaches a record.
pub(crate) fn output_values(
    columns: Vec<v2::OutputValues>,
    outputs: &[core::OutputSpec],
    groups: usize,
    limit: usize,
) -> Result<Vec<Vec<Option<grouped::OutputValue>>>, String> {
    use grouped::OutputValue as V;
    if columns.len() != outputs.len() {
        return Err(format!(
            "returned {} output columns from evaluate but declares {} outputs",
            columns.len(),
            outputs.len()
        ));
    }
    let mut per_group: Vec<Vec<Option<V>>> = (0..groups)
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for (column, spec) in columns.into_iter().zip(outputs) {
        let (kind, len) = output_kind(&column);
        if kind != spec.kind {
            return Err(format!(
                "returned {} values for {} output `{}`",
                kind.name(),
                spec.kind.name(),
                spec.name
            ));
        }
        if len != groups {
            return Err(format!(
                "returned {len} values of output `{}` for {groups} groups",
                spec.name
            ));
        }
        let text = |s: String| bounded(&s, limit).into_owned();
        let values: Vec<Option<V>> = match column {
            v2::OutputValues::Integer(v) => v.into_iter().map(|v| v.map(V::Integer)).collect(),
            v2::OutputValues::Float(v) => {
                if let Some(bad) = v.iter().flatten().find(|v| !v.is_finite()) {
                    return Err(format!(
                        "returned {bad} for float output `{}`, which must be finite",
                        spec.name
                    ));
                }
                v.into_iter().map(|v| v.map(V::Float)).collect()
            }
            v2::OutputValues::Text(v) => {
                v.into_iter().map(|v| v.map(|s| V::Text(text(s)))).collect()
            }
            v2::OutputValues::Boolean(v) => v.into_iter().map(|v| v.map(V::Boolean)).collect(),
            v2::OutputValues::Ranked(v) => {
                let mut out = Vec::with_capacity(v.len());
                for list in v {
                    let Some(list) = list else {
                        out.push(None);
                        continue;
                    };
                    if let Some(bad) = list.iter().find(|e| !e.value.is_finite()) {
                        return Err(format!(
                            "returned {} for an entry of ranked output `{}`, which must be finite",
                            bad.value, spec.name
                        ));
                    }
                    out.push(Some(V::Ranked(
                        list.into_iter()
                            .map(|e| grouped::RankedEntry {
                                label: text(e.label),
                                value: e.value,
                            })
                            .collect(),
                    )));
                }
                out
            }
        };
        for (group, value) in per_group.iter_mut().zip(values) {
            group.push(value);
        }
    }
    Ok(per_group)
}
