//! Plugins written with the Rust SDK, run in-process behind [`Aggregation`]
//! and [`TriggerPolicy`]: the same code the built-in components are built
//! from, compiled for the host, with no sandbox around it.
//!
//! For tests and benches of the engine (windows, triggers, checkpoints),
//! which then need no wasm runtime; a pipeline always runs its plugins
//! through `sluice-wasm`. A native plugin never fails the way a component
//! can (a panic is a bug in the test), so it is never poisoned.
//! [`aggregation`] and [`trigger`] open the built-ins by their names.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use slab::Slab;
use sluice_sdk::Aggregator;
use sluice_sdk::trigger::{self as sdk, Trigger};

use super::{
    AccumulatorHandle, Action, Aggregation, Decision, ElementInterest, Elements, OutputKind,
    OutputSpec, PluginError, PluginInfo, TriggerPolicy, Window, WindowTriggerHandle,
};

/// The built-in aggregator `name` (`stats`, as `builtin/stats` names it)
/// opened natively with `config`.
pub fn aggregation(name: &str, config: &str) -> Result<Box<dyn Aggregation>, PluginError> {
    fn open<A>(config: &str) -> Result<Box<dyn Aggregation>, PluginError>
    where
        A: Aggregator + Send,
        A::State: Send,
    {
        Ok(Box::new(NativeAggregation::<A>::open(config)?))
    }
    match name {
        "count" => open::<sluice_plugin_count::Count>(config),
        "ema" => open::<sluice_plugin_ema::Ema>(config),
        "histogram" => open::<sluice_plugin_histogram::Histogram>(config),
        "max" => open::<sluice_plugin_max::Max>(config),
        "mean" => open::<sluice_plugin_mean::Mean>(config),
        "min" => open::<sluice_plugin_min::Min>(config),
        "percentiles" => open::<sluice_plugin_percentiles::Percentiles>(config),
        "rate" => open::<sluice_plugin_rate::Rate>(config),
        "stats" => open::<sluice_plugin_stats::Stats>(config),
        "stddev" => open::<sluice_plugin_stddev::Stddev>(config),
        "sum" => open::<sluice_plugin_sum::Sum>(config),
        "variance" => open::<sluice_plugin_variance::Variance>(config),
        "zscore" => open::<sluice_plugin_zscore::ZScore>(config),
        _ => Err(PluginError::Load {
            plugin: format!("native/{name}"),
            message: "no such built-in aggregator".into(),
        }),
    }
}

/// The built-in trigger `name` (`early`, as `builtin/early` names it)
/// opened natively with `config`.
pub fn trigger(name: &str, config: &str) -> Result<Box<dyn TriggerPolicy>, PluginError> {
    fn open<T>(config: &str) -> Result<Box<dyn TriggerPolicy>, PluginError>
    where
        T: Trigger + Send,
        T::State: Send,
    {
        Ok(Box::new(NativeTrigger::<T>::open(config)?))
    }
    match name {
        "count" => open::<sluice_plugin_trigger_count::Count>(config),
        "early" => open::<sluice_plugin_trigger_early::Early>(config),
        "event-time" => open::<sluice_plugin_trigger_event_time::EventTime>(config),
        _ => Err(PluginError::Load {
            plugin: format!("native/{name}"),
            message: "no such built-in trigger".into(),
        }),
    }
}

fn info(info: sluice_sdk::Info) -> PluginInfo {
    PluginInfo {
        name: info.name.into(),
        version: info.version.into(),
        description: info.description.into(),
        state_version: info.state_version,
        mergeable: info.mergeable,
        commutative: info.commutative,
        config_help: info.config_help.into(),
    }
}

/// Parses a plugin's JSON config as the SDK's component glue does.
fn parse<C: DeserializeOwned>(label: &str, config: &str) -> Result<C, PluginError> {
    serde_json::from_str(config).map_err(|e| PluginError::Config {
        plugin: label.to_string(),
        message: format!("invalid config: {e}"),
    })
}

fn slot(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// An SDK [`Aggregator`] opened with a config, holding its windows' states.
pub struct NativeAggregation<A: Aggregator> {
    label: String,
    config: String,
    aggregator: A,
    info: PluginInfo,
    outputs: Vec<OutputSpec>,
    states: Slab<A::State>,
    calls: u64,
    call_time: Duration,
}

impl<A: Aggregator> NativeAggregation<A> {
    /// `A` opened with `config` (JSON), labelled `native/NAME` in messages.
    pub fn open(config: &str) -> Result<Self, PluginError> {
        let label = format!(
            "native/{} ({} {})",
            A::INFO.name,
            A::INFO.name,
            A::INFO.version
        );
        let aggregator = A::new(parse(&label, config)?).map_err(|message| PluginError::Config {
            plugin: label.clone(),
            message,
        })?;
        let outputs = aggregator
            .outputs()
            .into_iter()
            .map(|o| OutputSpec {
                name: o.name,
                kind: match o.kind {
                    sluice_sdk::OutputKind::Integer => OutputKind::Integer,
                    sluice_sdk::OutputKind::Float => OutputKind::Float,
                    sluice_sdk::OutputKind::Text => OutputKind::Text,
                    sluice_sdk::OutputKind::Boolean => OutputKind::Boolean,
                    sluice_sdk::OutputKind::Ranked => OutputKind::Ranked,
                },
                description: o.description,
            })
            .collect();
        Ok(Self {
            label,
            config: config.to_string(),
            aggregator,
            info: info(A::INFO),
            outputs,
            states: Slab::new(),
            calls: 0,
            call_time: Duration::ZERO,
        })
    }

    fn call_failed(&self, message: String) -> PluginError {
        PluginError::Call {
            plugin: self.label.clone(),
            message,
        }
    }

    fn timed<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let started = Instant::now();
        let result = f(self);
        self.calls += 1;
        self.call_time += started.elapsed();
        result
    }

    fn unknown(&self, acc: AccumulatorHandle) -> PluginError {
        self.call_failed(format!("was given an unknown accumulator {}", acc.0))
    }
}

impl<A> Aggregation for NativeAggregation<A>
where
    A: Aggregator + Send,
    A::State: Send,
{
    fn label(&self) -> &str {
        &self.label
    }

    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    fn is_poisoned(&self) -> bool {
        false
    }

    fn call_stats(&self) -> (u64, Duration) {
        (self.calls, self.call_time)
    }

    fn reopen(&mut self) -> Result<(), PluginError> {
        *self = Self::open(&self.config)?;
        Ok(())
    }

    fn create(&mut self) -> Result<AccumulatorHandle, PluginError> {
        self.timed(|s| {
            let state = s.aggregator.create();
            Ok(AccumulatorHandle(s.states.insert(state) as u64))
        })
    }

    fn add(
        &mut self,
        acc: AccumulatorHandle,
        values: &[f64],
        times: &[i64],
    ) -> Result<(), PluginError> {
        self.timed(|s| {
            let Some(state) = s.states.get_mut(slot(acc.0)) else {
                return Err(s.unknown(acc));
            };
            s.aggregator.add(state, values, times);
            Ok(())
        })
    }

    fn merge(
        &mut self,
        into: AccumulatorHandle,
        from: AccumulatorHandle,
    ) -> Result<(), PluginError> {
        self.timed(|s| {
            let Some((a, b)) = s.states.get2_mut(slot(into.0), slot(from.0)) else {
                return Err(s.call_failed(
                    "merge failed: cannot merge an accumulator into itself or an unknown one"
                        .into(),
                ));
            };
            s.aggregator
                .merge(a, b)
                .map_err(|m| s.call_failed(format!("merge failed: {m}")))
        })
    }

    fn finish(&mut self, acc: AccumulatorHandle) -> Result<Vec<Option<f64>>, PluginError> {
        self.timed(|s| match s.states.get(slot(acc.0)) {
            Some(state) => Ok(s.aggregator.finish(state)),
            None => Err(s.unknown(acc)),
        })
    }

    fn snapshot(&mut self, acc: AccumulatorHandle) -> Result<Vec<u8>, PluginError> {
        self.timed(|s| match s.states.get(slot(acc.0)) {
            Some(state) => Ok(s.aggregator.snapshot(state)),
            None => Err(s.unknown(acc)),
        })
    }

    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<AccumulatorHandle, PluginError> {
        self.timed(|s| {
            let restored = s
                .aggregator
                .restore(state, state_version)
                .map_err(|m| s.call_failed(format!("restore failed: {m}")))?;
            Ok(AccumulatorHandle(s.states.insert(restored) as u64))
        })
    }

    fn release(&mut self, acc: AccumulatorHandle) -> Result<(), PluginError> {
        match self.states.try_remove(slot(acc.0)) {
            Some(_) => Ok(()),
            None => Err(self.unknown(acc)),
        }
    }
}

/// An SDK [`Trigger`] opened with a config, holding its windows' states.
pub struct NativeTrigger<T: Trigger> {
    label: String,
    config: String,
    trigger: T,
    info: PluginInfo,
    watches: Vec<String>,
    states: Slab<T::State>,
}

impl<T: Trigger> NativeTrigger<T> {
    /// `T` opened with `config` (JSON), labelled `native/NAME` in messages.
    pub fn open(config: &str) -> Result<Self, PluginError> {
        let label = format!(
            "native/{} ({} {})",
            T::INFO.name,
            T::INFO.name,
            T::INFO.version
        );
        let trigger = T::new(parse(&label, config)?).map_err(|message| PluginError::Config {
            plugin: label.clone(),
            message,
        })?;
        Ok(Self {
            watches: trigger.watches(),
            label,
            config: config.to_string(),
            trigger,
            info: info(T::INFO),
            states: Slab::new(),
        })
    }
}

fn unknown_trigger(label: &str, t: WindowTriggerHandle) -> PluginError {
    PluginError::Call {
        plugin: label.to_string(),
        message: format!("was given an unknown window trigger {}", t.0),
    }
}

fn sdk_window(w: Window) -> sdk::Window {
    sdk::Window {
        start: w.start,
        end: w.end,
    }
}

fn decision(d: sdk::Decision) -> Decision {
    Decision {
        action: match d.action {
            sdk::Action::Continue => Action::Continue,
            sdk::Action::Fire => Action::Fire,
            sdk::Action::FireAndPurge => Action::FireAndPurge,
            sdk::Action::Purge => Action::Purge,
        },
        interest: match d.interest {
            sdk::Interest::After(n) => ElementInterest::After(n),
            sdk::Interest::Late => ElementInterest::Late,
            sdk::Interest::None => ElementInterest::None,
        },
        event_timers: d.event_timers,
        processing_delays: d.processing_delays,
    }
}

impl<T> TriggerPolicy for NativeTrigger<T>
where
    T: Trigger + Send,
    T::State: Send,
{
    fn label(&self) -> &str {
        &self.label
    }

    fn info(&self) -> Option<&PluginInfo> {
        Some(&self.info)
    }

    fn watches(&self) -> &[String] {
        &self.watches
    }

    fn is_poisoned(&self) -> bool {
        false
    }

    fn reopen(&mut self) -> Result<(), PluginError> {
        *self = Self::open(&self.config)?;
        Ok(())
    }

    fn create(&mut self, _window: Window) -> Result<WindowTriggerHandle, PluginError> {
        Ok(WindowTriggerHandle(
            self.states.insert(T::State::default()) as u64
        ))
    }

    fn restore(
        &mut self,
        state: &[u8],
        state_version: u32,
    ) -> Result<WindowTriggerHandle, PluginError> {
        let restored = if state.is_empty() {
            T::State::default()
        } else if state_version != T::INFO.state_version {
            return Err(PluginError::Call {
                plugin: self.label.clone(),
                message: format!(
                    "restore failed: trigger {} reads state format {}, not {state_version}",
                    T::INFO.name,
                    T::INFO.state_version
                ),
            });
        } else {
            postcard::from_bytes(state).map_err(|e| PluginError::Call {
                plugin: self.label.clone(),
                message: format!("restore failed: corrupt {} state: {e}", T::INFO.name),
            })?
        };
        Ok(WindowTriggerHandle(self.states.insert(restored) as u64))
    }

    fn on_elements(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let batch = sdk::Elements {
            count: batch.count,
            min_time: batch.min_time,
            max_time: batch.max_time,
            preview: batch.preview.clone(),
        };
        let Some(state) = self.states.get_mut(slot(t.0)) else {
            return Err(unknown_trigger(&self.label, t));
        };
        let d = self
            .trigger
            .on_elements(state, sdk_window(window), &batch, watermark);
        Ok(decision(d))
    }

    fn on_event_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let Some(state) = self.states.get_mut(slot(t.0)) else {
            return Err(unknown_trigger(&self.label, t));
        };
        let d = self
            .trigger
            .on_event_time(state, sdk_window(window), time, watermark);
        Ok(decision(d))
    }

    fn on_processing_time(
        &mut self,
        t: WindowTriggerHandle,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Result<Decision, PluginError> {
        let Some(state) = self.states.get_mut(slot(t.0)) else {
            return Err(unknown_trigger(&self.label, t));
        };
        let d = self
            .trigger
            .on_processing_time(state, sdk_window(window), time, watermark);
        Ok(decision(d))
    }

    fn merge(
        &mut self,
        into: WindowTriggerHandle,
        from: WindowTriggerHandle,
        window: Window,
    ) -> Result<Decision, PluginError> {
        if into == from {
            return Ok(decision(sdk::Decision::wait(sdk::Interest::None)));
        }
        let Some((a, b)) = self.states.get2_mut(slot(into.0), slot(from.0)) else {
            return Err(PluginError::Call {
                plugin: self.label.clone(),
                message: "merge failed: unknown window trigger".into(),
            });
        };
        Ok(decision(self.trigger.merge(a, b, sdk_window(window))))
    }

    fn snapshot(&mut self, t: WindowTriggerHandle) -> Result<Vec<u8>, PluginError> {
        let Some(state) = self.states.get(slot(t.0)) else {
            return Err(unknown_trigger(&self.label, t));
        };
        if *state == T::State::default() {
            return Ok(Vec::new());
        }
        Ok(postcard::to_allocvec(state).unwrap_or_default())
    }

    fn release(&mut self, t: WindowTriggerHandle) -> Result<(), PluginError> {
        self.states
            .try_remove(slot(t.0))
            .map(drop)
            .ok_or_else(|| unknown_trigger(&self.label, t))
    }
}
