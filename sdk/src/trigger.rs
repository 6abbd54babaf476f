//! Triggers: when a window emits, written as a Rust type.
//!
//! A trigger implements [`Trigger`] and is exported with
//! [`crate::export_trigger!`]. The host keeps the windows; a trigger keeps a
//! small [`Trigger::State`] per window and answers each call with a
//! [`Decision`]: what to do now ([`Action`]), when to hear of elements again
//! ([`Interest`]) and which timers to set.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use serde::{Serialize, de::DeserializeOwned};

use crate::Info;
use crate::bindings::sluice::plugin::types::PluginInfo;
use crate::trigger_bindings::exports::sluice::plugin::trigger as wit;

/// A window's bounds `[start, end)` in event-time milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
}

/// Elements that entered a window since the trigger last heard of any.
#[derive(Debug, Clone, PartialEq)]
pub struct Elements {
    /// How many.
    pub count: u32,
    /// Their earliest event time.
    pub min_time: i64,
    /// Their latest event time.
    pub max_time: i64,
    /// Current values of the watched outputs ([`Trigger::watches`]), in order.
    pub preview: Vec<Option<f64>>,
}

/// What the host does with the window now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Continue,
    /// Emit the result so far, keep the state.
    Fire,
    /// Emit the result, then empty the window's state.
    FireAndPurge,
    /// Empty the window's state without emitting.
    Purge,
}

/// When the host next calls [`Trigger::on_elements`] for a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// After this many more elements (1: every element); counts are met exactly.
    After(u32),
    /// Only for late elements (watermark past the window's end), one call each.
    Late,
    /// Never.
    None,
}

/// A trigger's answer to any call.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do now.
    pub action: Action,
    /// When to hear of elements again.
    pub interest: Interest,
    /// Event times at which to call [`Trigger::on_event_time`] (the window's
    /// end is always delivered).
    pub event_timers: Vec<i64>,
    /// Wall-clock delays (ms from now) after which to call
    /// [`Trigger::on_processing_time`]; plugins have no clock of their own.
    pub processing_delays: Vec<u64>,
}

impl Decision {
    /// Do nothing now; hear of elements as `interest` says.
    pub fn wait(interest: Interest) -> Self {
        Self {
            action: Action::Continue,
            interest,
            event_timers: Vec::new(),
            processing_delays: Vec::new(),
        }
    }

    /// Emit now; hear of elements as `interest` says.
    pub fn fire(interest: Interest) -> Self {
        Self {
            action: Action::Fire,
            ..Self::wait(interest)
        }
    }

    /// The same decision with another action.
    pub fn with_action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// The same decision, also asking for a call `ms` of wall-clock time from now.
    pub fn with_processing_delay(mut self, ms: u64) -> Self {
        self.processing_delays.push(ms);
        self
    }

    /// The same decision, also asking for a call when the watermark reaches `at`.
    pub fn with_event_timer(mut self, at: i64) -> Self {
        self.event_timers.push(at);
        self
    }
}

/// Firing logic for windows, written as a type built from its configuration.
///
/// `Self` is one configured trigger, shared by every window of a pipeline;
/// [`Trigger::State`] is what one window keeps. A state equal to its
/// `Default` is "as new" and costs nothing in checkpoints.
pub trait Trigger: Sized + 'static {
    /// The JSON configuration; use `#[serde(deny_unknown_fields)]` so typos are errors.
    type Config: DeserializeOwned;
    /// The state of one window.
    type State: Serialize + DeserializeOwned + Default + PartialEq;

    /// The trigger's self-description (`mergeable`: whether session windows may use it).
    const INFO: Info;

    /// Validates a parsed configuration; the error should name the bad key.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Result columns (`latency.p99`) to preview in [`Elements::preview`].
    fn watches(&self) -> Vec<String> {
        Vec::new()
    }

    /// Elements arrived under `watermark`.
    fn on_elements(
        &self,
        state: &mut Self::State,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Decision;

    /// The watermark reached `time` (a timer asked for, or the window's end).
    fn on_event_time(
        &self,
        state: &mut Self::State,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Decision;

    /// A processing-time delay asked for has passed; `time` is when it fell due.
    fn on_processing_time(
        &self,
        state: &mut Self::State,
        window: Window,
        time: i64,
        watermark: i64,
    ) -> Decision {
        let _ = (state, window, time, watermark);
        Decision::wait(Interest::None)
    }

    /// Folds `other` into `state` as two sessions merge into `window`.
    fn merge(&self, state: &mut Self::State, other: &Self::State, window: Window) -> Decision;
}

/// The component that exports `T`; named by [`crate::export_trigger!`].
pub struct TriggerComponent<T>(PhantomData<T>);

/// One configured trigger, shared by its windows.
pub struct PolicyOf<T> {
    trigger: Rc<T>,
}

/// One window's trigger state.
pub struct WindowTriggerOf<T: Trigger> {
    trigger: Rc<T>,
    state: RefCell<T::State>,
}

fn to_window(w: wit::Window) -> Window {
    Window {
        start: w.start,
        end: w.end,
    }
}

fn to_wit(d: Decision) -> wit::Decision {
    wit::Decision {
        action: match d.action {
            Action::Continue => wit::Action::Continue,
            Action::Fire => wit::Action::Fire,
            Action::FireAndPurge => wit::Action::FireAndPurge,
            Action::Purge => wit::Action::Purge,
        },
        interest: match d.interest {
            Interest::After(n) => wit::ElementInterest::After(n),
            Interest::Late => wit::ElementInterest::Late,
            Interest::None => wit::ElementInterest::None,
        },
        event_timers: d.event_timers,
        processing_delays: d.processing_delays,
    }
}

impl<T: Trigger> wit::Guest for TriggerComponent<T> {
    type Policy = PolicyOf<T>;
    type WindowTrigger = WindowTriggerOf<T>;

    fn info() -> PluginInfo {
        crate::adapter::plugin_info(T::INFO)
    }
}

impl<T: Trigger> PolicyOf<T> {
    fn window_trigger(&self, state: T::State) -> wit::WindowTrigger {
        wit::WindowTrigger::new(WindowTriggerOf::<T> {
            trigger: Rc::clone(&self.trigger),
            state: RefCell::new(state),
        })
    }
}

impl<T: Trigger> wit::GuestPolicy for PolicyOf<T> {
    fn open(config: String) -> Result<wit::Policy, String> {
        let parsed: T::Config = serde_json::from_str(&config)
            .map_err(|e| format!("invalid config for trigger {}: {e}", T::INFO.name))?;
        Ok(wit::Policy::new(PolicyOf {
            trigger: Rc::new(T::new(parsed)?),
        }))
    }

    fn watches(&self) -> Vec<String> {
        self.trigger.watches()
    }

    fn create(&self, _window: wit::Window) -> wit::WindowTrigger {
        self.window_trigger(T::State::default())
    }

    fn restore(&self, state: Vec<u8>, state_version: u32) -> Result<wit::WindowTrigger, String> {
        if state.is_empty() {
            return Ok(self.window_trigger(T::State::default()));
        }
        if state_version != T::INFO.state_version {
            return Err(format!(
                "trigger {} reads state format {}, not {state_version}",
                T::INFO.name,
                T::INFO.state_version
            ));
        }
        let state = postcard::from_bytes(&state)
            .map_err(|e| format!("corrupt {} state: {e}", T::INFO.name))?;
        Ok(self.window_trigger(state))
    }
}

impl<T: Trigger> wit::GuestWindowTrigger for WindowTriggerOf<T> {
    fn on_elements(
        &self,
        window: wit::Window,
        batch: wit::Elements,
        watermark: i64,
    ) -> wit::Decision {
        let batch = Elements {
            count: batch.count,
            min_time: batch.min_time,
            max_time: batch.max_time,
            preview: batch.preview,
        };
        to_wit(self.trigger.on_elements(
            &mut self.state.borrow_mut(),
            to_window(window),
            &batch,
            watermark,
        ))
    }

    fn on_event_time(&self, window: wit::Window, time: i64, watermark: i64) -> wit::Decision {
        to_wit(self.trigger.on_event_time(
            &mut self.state.borrow_mut(),
            to_window(window),
            time,
            watermark,
        ))
    }

    fn on_processing_time(&self, window: wit::Window, time: i64, watermark: i64) -> wit::Decision {
        to_wit(self.trigger.on_processing_time(
            &mut self.state.borrow_mut(),
            to_window(window),
            time,
            watermark,
        ))
    }

    fn merge(&self, other: wit::WindowTriggerBorrow<'_>, window: wit::Window) -> wit::Decision {
        let other: &WindowTriggerOf<T> = other.get();
        if std::ptr::eq(self, other) {
            return to_wit(Decision::wait(Interest::None));
        }
        let other = other.state.borrow();
        to_wit(
            self.trigger
                .merge(&mut self.state.borrow_mut(), &other, to_window(window)),
        )
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.state.borrow();
        if *state == T::State::default() {
            return Vec::new();
        }
        postcard::to_allocvec(&*state).unwrap_or_default()
    }
}
