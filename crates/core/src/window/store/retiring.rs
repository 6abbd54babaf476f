//! Two versions of a plugin side by side, after a hot reload.
//!
//! A hot reload to a version with the same state format moves every open
//! window into the new instance (snapshot there, restore here). One with
//! another state format cannot take those windows, so the old instance stays
//! on as the *retiring* version: the windows open at the swap finish there,
//! windows opened later start in the new one, and once the last retiring
//! window closes the old instance is dropped. At most one version retires at
//! a time per aggregation; a reload to yet another format waits until then.
//!
//! Sliding panes and sessions merge with their neighbours, and states of two
//! formats cannot merge. So in those shapes a slot opened while its key still
//! has a retiring slot also takes its values in the retiring version, as a
//! *shadow* accumulator: a window (or session) holding any retiring slot
//! finishes in the retiring version, from the retiring slots and the shadows
//! of the others; one made only of new slots finishes in the new version.
//! The shadow costs one more plugin call per batch, for the keys and the
//! time (a window's length, or a session's life) that the transition lasts.
//! A retiring window reports the outputs the new version declares: each
//! output the old version also declares carries its value, the others null.

use super::*;

impl WindowStore {
    /// Whether any open slot of `key` holds aggregation `a` in the retiring version.
    pub(super) fn key_retires(&self, a: usize, key: KeyId) -> bool {
        self.by_key.get(&key).is_some_and(|map| {
            map.values().any(|&id| {
                self.slots
                    .get(id)
                    .and_then(|s| s.lanes.get(a))
                    .is_some_and(|l| l.version == Version::Retiring)
            })
        })
    }

    /// A current lane that took in a retiring part continues as its shadow,
    /// in the retiring version; its own accumulator is given back.
    pub(super) fn convert_to_retiring(&mut self, a: usize, id: usize) {
        let lane = &mut self.slots[id].lanes[a];
        let Some(shadow) = lane.shadow.take() else {
            return;
        };
        let old = std::mem::replace(&mut lane.acc, shadow.acc);
        lane.snapshot = shadow.snapshot;
        lane.version = Version::Retiring;
        if let Some(r) = &mut self.plugins[a].retiring {
            r.lanes += 1;
        }
        if let Ok(old) = old {
            self.release(a, Version::Current, old);
        }
    }

    /// Drops aggregation `a`'s retiring version once it holds no window.
    pub(super) fn retire_if_done(&mut self, a: usize) {
        if self.plugins[a]
            .retiring
            .as_ref()
            .is_none_or(|r| r.lanes != 0)
        {
            return;
        }
        let Some(retired) = self.plugins[a].retiring.take() else {
            return;
        };
        // Shadows lived in the dropped instance; no window needs them now.
        for (_, slot) in self.slots.iter_mut() {
            if let Some(lane) = slot.lanes.get_mut(a)
                && lane.shadow.take().is_some()
            {
                slot.changed = true;
            }
        }
        tracing::info!(
            aggregation = %self.name(a),
            "aggregation `{}`: {} retired: the last window it held has closed; {} serves alone",
            self.name(a),
            retired.instance.label(),
            self.plugins[a].instance.label()
        );
    }

    /// Swaps aggregation `a`'s plugin for `new`, a new version of it.
    ///
    /// With the same state format every open window's accumulator moves
    /// across: buffered values are handed to the old instance first, each
    /// accumulator is snapshotted there and restored in `new`. All or
    /// nothing: if any snapshot or restore fails, `new` is dropped and the
    /// old instance keeps serving, with every window as it was. A window
    /// that had already failed for this aggregation keeps its error; a
    /// quarantine ends, since the new version has not failed yet.
    ///
    /// With another state format the old instance retires (see the module
    /// doc): `component` is its code, kept for checkpoints. Refused while an
    /// older version still retires.
    pub fn replace_plugin(
        &mut self,
        a: usize,
        new: Box<dyn GroupedAggregation>,
        component: Arc<[u8]>,
    ) -> Result<Swap, String> {
        if a >= self.plugins.len() {
            return Err(format!("no aggregation {a}"));
        }
        self.flush_all();
        let mut new = Instance::new(new);
        let state_version = new.info().state_version;
        if state_version != self.plugins[a].instance.info().state_version {
            return self.retire_plugin(a, new, component);
        }
        let old_label = self.plugins[a].instance.label().to_string();
        let mut moved = Vec::new();
        let ids: Vec<usize> = self.slots.iter().map(|(id, _)| id).collect();
        for id in ids {
            let lane = &self.slots[id].lanes[a];
            let (Ok(acc), Version::Current) = (&lane.acc, lane.version) else {
                continue;
            };
            let bytes = match self.plugins[a].instance.snapshot(*acc) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let why = format!("snapshotting an open window in {old_label} failed: {e}");
                    // The old instance's failure is handled as any other.
                    self.fail(a, Version::Current, Some(id), e);
                    return Err(why);
                }
            };
            match new.restore(&bytes, state_version) {
                Ok(restored) => moved.push((id, restored, bytes)),
                Err(e) => {
                    return Err(format!(
                        "{} could not restore an open window's state from {old_label}: {e}",
                        new.label()
                    ));
                }
            }
        }
        let count = moved.len();
        for (id, restored, bytes) in moved {
            // The replay log is dropped below.
            self.snapshot_shadow(a, id);
            let slot = &mut self.slots[id];
            slot.changed = true;
            let lane = &mut slot.lanes[a];
            lane.acc = Ok(restored);
            // Nothing is pending after the flush above.
            lane.snapshotted(bytes);
        }
        // Partials belong to the old instance, dropped here with it.
        self.forget_partials(Some(a));
        let plugin = &mut self.plugins[a];
        plugin.instance = new;
        plugin.consecutive_failures = 0;
        plugin.quarantined = None;
        Ok(Swap::Moved(count))
    }

    /// The swap to a version of another state format: the open windows stay
    /// with the old instance, which retires.
    pub(super) fn retire_plugin(
        &mut self,
        a: usize,
        new: Instance,
        component: Arc<[u8]>,
    ) -> Result<Swap, String> {
        if let Some(r) = &self.plugins[a].retiring {
            return Err(format!(
                "{} still finishes {} open window(s) from before the last reload; a version with \
                 yet another state format can go live once they have closed",
                r.instance.label(),
                r.lanes
            ));
        }
        let outputs = new
            .outputs()
            .iter()
            .map(|o| {
                self.plugins[a]
                    .instance
                    .outputs()
                    .iter()
                    .position(|x| x.name == o.name)
            })
            .collect();
        self.forget_partials(Some(a));
        let plugin = &mut self.plugins[a];
        let old = std::mem::replace(&mut plugin.instance, new);
        plugin.consecutive_failures = 0;
        // A quarantined version's windows have already failed: nothing to finish.
        if plugin.quarantined.take().is_some() {
            return Ok(Swap::SideBySide(0));
        }
        let mut lanes = 0;
        for (_, slot) in self.slots.iter_mut() {
            slot.lanes[a].version = Version::Retiring;
            slot.changed = true;
            lanes += 1;
        }
        if lanes > 0 {
            self.plugins[a].retiring = Some(Retiring {
                instance: old,
                component,
                outputs,
                lanes,
            });
        }
        Ok(Swap::SideBySide(lanes))
    }

    /// Aggregation `a`'s retiring version, if one finishes windows now:
    /// its label and how many windows it holds.
    pub fn retiring(&self, a: usize) -> Option<(&str, usize)> {
        self.plugins[a]
            .retiring
            .as_ref()
            .map(|r| (r.instance.label(), r.lanes))
    }
}
