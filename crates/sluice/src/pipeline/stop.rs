//! SIGINT and SIGTERM as a request to stop, checked by the run's loops.
//!
//! A signal only sets a flag: the loops look at it between two batches (a
//! file, stdin) or two polls (Kafka), where nothing is half done, and then
//! flush every output, take a checkpoint when a state backend keeps them,
//! and return the summary. A second signal while that is under way ends the
//! process at once, for an operator who will not wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::SigId;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::IoError;

/// A stop request from SIGINT or SIGTERM, installed for one run.
pub(super) struct Stop {
    asked: Arc<AtomicBool>,
    /// The signal that asked (the last one, if several).
    signal: Arc<AtomicUsize>,
    handlers: Vec<SigId>,
}

impl Stop {
    /// Installs the handlers; they are removed when the value is dropped.
    pub fn install() -> Result<Self, IoError> {
        let asked = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        let mut handlers = Vec::new();
        let fail = |source| IoError {
            action: "installing a handler for",
            path: "SIGINT/SIGTERM".into(),
            source,
        };
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so that it sees the flag as the previous
            // signal left it: the first signal asks, the second ends the
            // process (with the shell's status for that signal).
            handlers.push(
                signal_hook::flag::register_conditional_shutdown(
                    sig,
                    128 + sig,
                    Arc::clone(&asked),
                )
                .map_err(fail)?,
            );
            handlers.push(
                signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)
                    .map_err(fail)?,
            );
            handlers.push(signal_hook::flag::register(sig, Arc::clone(&asked)).map_err(fail)?);
        }
        Ok(Self {
            asked,
            signal,
            handlers,
        })
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// The signal that asked for the stop, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::Relaxed) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
