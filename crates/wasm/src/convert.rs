//! The one place where WIT types (generated in [`crate::bindings`]) become
//! core's types and back: the engine and the window code never see a
//! generated type.

use sluice_core::plugin as core;

use crate::bindings::trigger_v0_1 as trigger;
use crate::bindings::v0_1::sluice::plugin::types as wit;

impl From<wit::PluginInfo> for core::PluginInfo {
    fn from(i: wit::PluginInfo) -> Self {
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
