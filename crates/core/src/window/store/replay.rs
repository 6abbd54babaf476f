//! When a plugin fails, and how the store rebuilds what it lost.
//!
//! A failed call never leaves this module as an error: the window whose call
//! failed reports it for that aggregation (an `errors` entry in its result)
//! and the run goes on. A call that traps, times out or runs out of memory
//! takes the whole instance with it, and with it every accumulator of that
//! aggregation, in every open window. Those are rebuilt in a fresh instance.
//!
//! To rebuild them the store keeps, per accumulator, the state as of its last
//! snapshot (none: a fresh `create`) and the values handed to it since, and
//! replays those values after restoring the snapshot: the rebuilt state is
//! exactly the lost one, so a failure in one window changes no other window's
//! result. The alternatives cost more or lose more: a snapshot after every
//! batch doubles the calls on the hot path; snapshots taken after the failure
//! are impossible (a trapped instance cannot be entered); failing every open
//! window of the aggregation turns one bad window into many. Here a snapshot
//! is taken only after [`REPLAY_LIMIT`](super::REPLAY_LIMIT) values (one extra call per that many
//! values, and a bound on the replay buffer's memory) and after a session
//! merge, which values cannot replay.
//!
//! The window whose call failed is not retried: a plugin that fails on some
//! input fails on it again, and retrying would make a window's result depend
//! on how often that was tried. After `quarantine_after` consecutive failures
//! the aggregation is quarantined: its plugin is no longer called and every
//! window reports the error.

use sluice_config::limits::bytes_text;

use super::*;

/// Whether `n` is 1, 10, 100, ...: when a repeated event is logged again.
fn tenfold(mut n: u64) -> bool {
    while n > 1 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

impl WindowStore {
    /// After a call of aggregation `a`'s instance of `version` failed with
    /// `e`: if it ran out of memory, reopens the instance with only the open
    /// windows' accumulators (rebuilt exactly from their snapshots and
    /// replay logs, in a heap that holds nothing else) and halves the
    /// partial aggregates it may keep, so that the call can be made again.
    /// Returns whether it can: false when `e` is another failure, or the
    /// reopened instance is not usable.
    ///
    /// Memory is not the input's doing: how full a heap is depends on what
    /// the instance held before (partials, freed space), which a restart
    /// from a checkpoint does not reproduce. Failing the window would make
    /// the output depend on that; a window fails for memory only when its
    /// call fails again in an instance holding nothing but the open windows.
    pub(super) fn recover_memory(&mut self, a: usize, version: Version, e: &PluginError) -> bool {
        let plugin = &mut self.plugins[a];
        if !plugin.serves(version) {
            return false;
        }
        let Some(limit) = plugin.of(version).out_of_memory().map(bytes_text) else {
            return false;
        };
        let label = plugin.of(version).label().to_string();
        let budget = match version {
            Version::Current => self.halve_partials(a),
            Version::Retiring => None,
        };
        self.memory_recoveries[a] += 1;
        let n = self.memory_recoveries[a];
        // Every time would flood the log; the first and each tenfold after.
        if tenfold(n) {
            let partials = match budget {
                Some(b) => format!(
                    "; it keeps at most {b} partial aggregates of sliding windows from now on \
                     (windows beyond them are computed afresh: the same results, slower)"
                ),
                None => String::new(),
            };
            tracing::warn!(
                aggregation = %self.name(a),
                recoveries = n,
                "aggregation `{}`: plugin {label} reached its memory limit ({limit}) \
                 ({n} time(s) so far): its instance was reopened holding only the open \
                 windows, and the call is made again{partials}. Raise `plugins.memory_limit` \
                 to give it room",
                self.name(a)
            );
        }
        self.rebuild(a, version, &e.to_string());
        let plugin = &mut self.plugins[a];
        plugin.quarantined.is_none()
            && (version == Version::Current || plugin.retiring.is_some())
            && !plugin.of(version).is_poisoned()
    }

    /// Handles a failed call of aggregation `a` in `version`: marks slot
    /// `failed` (the window whose call it was, if its state is lost or
    /// suspect), rebuilds the instance if the call took it down, quarantines
    /// the aggregation after too many failures in a row. Returns what to report.
    pub(super) fn fail(
        &mut self,
        a: usize,
        version: Version,
        failed: Option<usize>,
        error: PluginError,
    ) -> Arc<str> {
        let why: Arc<str> = Arc::from(error.to_string());
        let plugin = &self.plugins[a];
        let limit = (version == Version::Current || plugin.retiring.is_some())
            .then(|| plugin.of_ref(version).out_of_memory())
            .flatten()
            .filter(|_| plugin.quarantined.is_none());
        let hint = limit.map_or(String::new(), |l| {
            format!(
                "; raise `plugins.memory_limit` (now {}) to give it room",
                bytes_text(l)
            )
        });
        tracing::warn!(
            aggregation = %self.name(a),
            "aggregation `{}`: {why}{hint}",
            self.name(a)
        );
        if let Some((key, start)) = failed
            .and_then(|id| self.slots.get(id))
            .map(|s| (s.key, s.bounds.start))
        {
            self.pane_changed(Some(a), key, start);
        }
        if let Some(released) = failed.and_then(|id| self.slots.get_mut(id)).map(|slot| {
            slot.changed = true;
            slot.lanes[a].fail(Arc::clone(&why))
        }) {
            self.release_parts(a, released);
        }
        self.count_failure(a, version, &why);
        why
    }

    /// A call on slot `id`'s shadow in the retiring version failed: the shadow
    /// is void (a retiring window it joins reports this), the lane itself is not.
    pub(super) fn shadow_failed(&mut self, a: usize, id: usize, error: PluginError) {
        let why: Arc<str> = Arc::from(error.to_string());
        tracing::warn!(
            aggregation = %self.name(a),
            "aggregation `{}` (retiring version): {why}",
            self.name(a)
        );
        let old = self
            .slots
            .get_mut(id)
            .and_then(|slot| {
                slot.changed = true;
                slot.lanes[a].shadow.replace(Box::new(Shadow {
                    acc: Err(Arc::clone(&why)),
                    snapshot: None,
                }))
            })
            .and_then(|s| s.acc.ok());
        if let Some(acc) = old {
            self.release(a, Version::Retiring, acc);
        }
        self.count_failure(a, Version::Retiring, &why);
    }

    /// Counts a failed call in `version`; quarantines the aggregation after
    /// too many in a row, or rebuilds the instance if the call took it down.
    pub(super) fn count_failure(&mut self, a: usize, version: Version, why: &str) {
        let plugin = &mut self.plugins[a];
        plugin.failures += 1;
        plugin.consecutive_failures += 1;
        if self.quarantine_after > 0 && plugin.consecutive_failures >= self.quarantine_after {
            self.quarantine(a, why);
        } else if (version == Version::Current || plugin.retiring.is_some())
            && plugin.of(version).is_poisoned()
        {
            self.rebuild(a, version, why);
        }
    }

    /// Stops calling aggregation `a`'s plugin (both versions, if one
    /// retires) for the rest of the run.
    pub(super) fn quarantine(&mut self, a: usize, last: &str) {
        let name = self.name(a).to_string();
        let plugin = &mut self.plugins[a];
        let why: Arc<str> = Arc::from(format!(
            "{last} (failure {} in a row: plugin {} is quarantined for the rest of the run)",
            plugin.consecutive_failures,
            plugin.instance.label()
        ));
        tracing::warn!(
            aggregation = %name,
            plugin = plugin.instance.label(),
            failures = plugin.consecutive_failures,
            "aggregation `{name}`: quarantined plugin {} after {} consecutive failures",
            plugin.instance.label(),
            plugin.consecutive_failures
        );
        plugin.quarantined = Some(Arc::clone(&why));
        // No window can finish in the retiring version any more either.
        plugin.retiring = None;
        self.forget_partials(Some(a));
        for (_, slot) in self.slots.iter_mut() {
            let lane = &mut slot.lanes[a];
            lane.version = Version::Current;
            if lane.shadow.take().is_some() {
                slot.changed = true;
            }
            // A window that failed already keeps its own cause. Accumulators
            // are not released: the plugin is not called again.
            if lane.acc.is_ok() {
                let _ = lane.fail(Arc::clone(&why));
                slot.changed = true;
            }
        }
    }

    /// Replaces aggregation `a`'s lost instance of `version` with a fresh
    /// one and rebuilds every open window's accumulator in it (shadows too,
    /// for the retiring version) from its snapshot and replay log.
    ///
    /// A window whose rebuild fails is marked failed; if that failure takes
    /// the new instance down too, the rebuild starts over in another one,
    /// without that window. Each round fails one window more (and counts
    /// towards quarantine), so this ends.
    pub(super) fn rebuild(&mut self, a: usize, version: Version, cause: &str) {
        // Partials lived in the lost instance; they are rebuilt when needed.
        if version == Version::Current {
            self.forget_partials(Some(a));
        }
        let name = self.name(a).to_string();
        loop {
            let plugin = &mut self.plugins[a];
            if let Err(e) = plugin.of(version).reopen() {
                plugin.failures += 1;
                plugin.consecutive_failures += 1;
                self.quarantine(a, &format!("{e} (restarting it after: {cause})"));
                return;
            }
            let state_version = plugin.of(version).info().state_version;
            let mut lost_instance = None;
            for (_, slot) in self.slots.iter_mut() {
                // A slot being filled has no lane for `a` yet.
                let Some(lane) = slot.lanes.get_mut(a) else {
                    continue;
                };
                let shadow = version == Version::Retiring
                    && lane.version == Version::Current
                    && lane.shadow.as_ref().is_some_and(|s| s.acc.is_ok());
                if !(shadow || (lane.version == version && lane.acc.is_ok())) {
                    continue;
                }
                let snapshot = if shadow {
                    lane.shadow.as_ref().and_then(|s| s.snapshot.as_deref())
                } else {
                    lane.snapshot.as_deref()
                };
                let instance = self.plugins[a].of(version);
                let rebuilt = match snapshot {
                    Some(bytes) => instance.restore(bytes, state_version),
                    None => instance.create(),
                }
                .and_then(|acc| {
                    if lane.handed() > 0 {
                        instance.add(acc, lane.log(0..lane.handed()))?;
                    }
                    Ok(acc)
                });
                match (rebuilt, shadow) {
                    (Ok(acc), false) => lane.acc = Ok(acc),
                    (Ok(acc), true) => {
                        if let Some(s) = &mut lane.shadow {
                            s.acc = Ok(acc);
                        }
                    }
                    (Err(e), _) => {
                        let why: Arc<str> = Arc::from(format!(
                            "{e} (rebuilding this window's state after: {cause})"
                        ));
                        tracing::warn!(aggregation = %name, "aggregation `{name}`: {why}");
                        if shadow {
                            if let Some(s) = &mut lane.shadow {
                                s.acc = Err(why);
                            }
                        } else {
                            // The lane's shadow (if any) lives in the retiring
                            // instance, which is not being rebuilt: it leaks
                            // there until that instance goes.
                            let _ = lane.fail(why);
                        }
                        slot.changed = true;
                        let plugin = &mut self.plugins[a];
                        plugin.failures += 1;
                        plugin.consecutive_failures += 1;
                        if plugin.of(version).is_poisoned() {
                            lost_instance = Some(e);
                            break;
                        }
                    }
                }
            }
            let Some(e) = lost_instance else {
                return;
            };
            let plugin = &self.plugins[a];
            if self.quarantine_after > 0 && plugin.consecutive_failures >= self.quarantine_after {
                self.quarantine(a, &e.to_string());
                return;
            }
        }
    }
}
