//! A slot's (or merged slots') outputs, and merging slots: sliding panes
//! into a window, sessions into one.

use super::*;

impl WindowStore {
    /// Evaluates the slots `ids`, about to fire, in one `evaluate` call per
    /// aggregation, for their `finish` to take: a watermark step that fires
    /// many windows makes one call per aggregation rather than one per
    /// window. Lanes of a retiring version or with a shadow are left to
    /// `finish`; so is every lane of an aggregation whose call fails (the
    /// instance rebuilt if the call took it down), so that a window whose
    /// outputs fail fails alone, as without batching. The outputs hold until
    /// the slot is purged or closed, or [`Self::drop_prefetched`]; nothing
    /// else changes a slot while timers fire.
    pub fn prefetch(&mut self, ids: &[usize]) {
        self.prefetched.clear();
        if ids.len() < 2 {
            return;
        }
        for &id in ids {
            self.flush(id);
        }
        for a in 0..self.plugins.len() {
            if self.plugins[a].quarantined.is_some() {
                continue;
            }
            let mut groups = Vec::with_capacity(ids.len());
            let mut slots = Vec::with_capacity(ids.len());
            for &id in ids {
                let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
                    continue;
                };
                if let (Ok(acc), Version::Current, None) = (&lane.acc, lane.version, &lane.shadow) {
                    groups.push(*acc);
                    slots.push(id);
                }
            }
            if groups.len() < 2 {
                continue;
            }
            match self.plugins[a].instance.finish_many(&groups) {
                Ok(values) => {
                    self.plugins[a].consecutive_failures = 0;
                    for (id, v) in slots.into_iter().zip(values) {
                        self.prefetched.insert((id, a), v);
                    }
                }
                Err(e) => {
                    if self.plugins[a].instance.is_poisoned()
                        && !self.recover_memory(a, Version::Current, &e)
                    {
                        self.rebuild(a, Version::Current, &e.to_string());
                    }
                }
            }
        }
    }

    /// Forgets the outputs evaluated ahead (at the end of a watermark step).
    pub fn drop_prefetched(&mut self) {
        self.prefetched.clear();
    }

    /// Forgets the outputs evaluated ahead for slot `id`, which changed.
    /// One removal per aggregation: a step that fires and closes many
    /// windows would otherwise scan every prefetched output once per
    /// window closed.
    pub(super) fn forget_prefetched(&mut self, id: usize) {
        if !self.prefetched.is_empty() {
            for a in 0..self.plugins.len() {
                self.prefetched.remove(&(id, a));
            }
        }
    }

    /// The current outputs of one slot, per aggregation.
    pub fn finish(&mut self, id: usize) -> Outputs {
        self.flush(id);
        let mut out = Outputs {
            values: Vec::with_capacity(self.plugins.len()),
            errors: Vec::new(),
        };
        for a in 0..self.plugins.len() {
            let mut recovered = false;
            let values = loop {
                let (acc, version) = match self.slots.get(id).map(|s| &s.lanes[a]) {
                    Some(lane) => (lane.acc.clone(), lane.version),
                    None => (Err(Arc::from("window state missing")), Version::Current),
                };
                let acc = match acc {
                    Ok(acc) => acc,
                    Err(why) => break Err(why),
                };
                // Kept for a second finish of the same state (a trigger's
                // preview, then the emission).
                if version == Version::Current
                    && let Some(values) = self.prefetched.get(&(id, a))
                {
                    break Ok(values.clone());
                }
                match self.plugins[a].of(version).finish(acc) {
                    Ok(values) => {
                        self.plugins[a].consecutive_failures = 0;
                        break Ok(self.present(a, version, values));
                    }
                    Err(e) if !recovered && self.recover_memory(a, version, &e) => {
                        // Rebuilt in a fresh instance: finish it there.
                        recovered = true;
                    }
                    Err(e) => {
                        // A refused result leaves the state intact; a trap
                        // does not, and the window cannot be restored from it.
                        let mark = self.plugins[a].of(version).is_poisoned().then_some(id);
                        break Err(self.fail(a, version, mark, e));
                    }
                }
            };
            self.push_outputs(&mut out, a, values);
        }
        out
    }

    /// Outputs of aggregation `a` finished in `version`, laid out as the
    /// current version declares them.
    pub(super) fn present(
        &self,
        a: usize,
        version: Version,
        values: Vec<Option<OutputValue>>,
    ) -> Vec<Option<OutputValue>> {
        match (version, &self.plugins[a].retiring) {
            (Version::Retiring, Some(r)) => r
                .outputs
                .iter()
                .map(|at| at.and_then(|i| values.get(i).cloned().flatten()))
                .collect(),
            _ => values,
        }
    }

    pub(super) fn push_outputs(
        &self,
        out: &mut Outputs,
        a: usize,
        values: Result<Vec<Option<OutputValue>>, Arc<str>>,
    ) {
        match values {
            Ok(values) => out.values.push(values),
            Err(why) => {
                out.values.push(vec![None; self.output_count(a)]);
                out.errors.push((a, why));
            }
        }
    }

    /// The outputs of the union of several slots (a sliding window's panes),
    /// merged in the given order into a scratch accumulator.
    pub fn finish_merged(&mut self, ids: &[usize]) -> Outputs {
        for &id in ids {
            self.flush(id);
        }
        let mut out = Outputs {
            values: Vec::with_capacity(self.plugins.len()),
            errors: Vec::new(),
        };
        for a in 0..self.plugins.len() {
            let values = self.merge_panes(a, ids);
            self.push_outputs(&mut out, a, values);
        }
        out
    }

    /// Aggregation `a`'s result over the (flushed) slots `ids`, merged in
    /// that order; the first slot that failed for `a` gives its error instead.
    ///
    /// A window holding any pane of the retiring version finishes there,
    /// from the other panes' shadows.
    pub(super) fn merge_panes(
        &mut self,
        a: usize,
        ids: &[usize],
    ) -> Result<Vec<Option<OutputValue>>, Arc<str>> {
        match self.merge_panes_once(a, ids) {
            Err((version, e)) if self.recover_memory(a, version, &e) => {
                // The panes were rebuilt in a fresh instance: merge them there.
                match self.merge_panes_once(a, ids) {
                    Ok(values) => values,
                    Err((version, e)) => Err(self.fail(a, version, None, e)),
                }
            }
            Err((version, e)) => Err(self.fail(a, version, None, e)),
            Ok(values) => values,
        }
    }

    /// One attempt at [`Self::merge_panes`]; the outer error is a failed
    /// call, with the version it was made in.
    #[allow(clippy::type_complexity)] // a result inside the result of one attempt
    pub(super) fn merge_panes_once(
        &mut self,
        a: usize,
        ids: &[usize],
    ) -> Result<Result<Vec<Option<OutputValue>>, Arc<str>>, (Version, PluginError)> {
        let retiring = ids.iter().any(|&id| {
            self.slots
                .get(id)
                .is_some_and(|s| s.lanes[a].version == Version::Retiring)
        });
        let version = if retiring {
            Version::Retiring
        } else {
            Version::Current
        };
        let mut panes = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
                continue;
            };
            let acc = if retiring {
                lane.retiring_acc()
            } else {
                lane.acc.clone()
            };
            match acc {
                Ok(acc) => panes.push(acc),
                Err(why) => return Ok(Err(why)),
            }
        }
        self.merge_and_finish(a, version, &panes)
    }

    /// Merges `panes` into a scratch accumulator of aggregation `a` and
    /// finishes it. A failure fails this emission only: merging leaves the
    /// panes unchanged, and if the instance was lost they are rebuilt.
    #[allow(clippy::type_complexity)] // as `merge_panes_once`
    pub(super) fn merge_and_finish(
        &mut self,
        a: usize,
        version: Version,
        panes: &[Accumulator],
    ) -> Result<Result<Vec<Option<OutputValue>>, Arc<str>>, (Version, PluginError)> {
        if let Some(why) = &self.plugins[a].quarantined {
            return Ok(Err(Arc::clone(why)));
        }
        let instance = self.plugins[a].of(version);
        let result = instance.create().and_then(|scratch| {
            let mut merged = Ok(());
            for &pane in panes {
                merged = instance.merge(scratch, pane);
                if merged.is_err() {
                    break;
                }
            }
            let values = merged.and_then(|()| instance.finish(scratch));
            if instance.is_poisoned() {
                return values;
            }
            let released = instance.release(scratch);
            values.and_then(|values| released.map(|()| values))
        });
        match result {
            Ok(values) => {
                self.plugins[a].consecutive_failures = 0;
                Ok(Ok(self.present(a, version, values)))
            }
            Err(e) => Err((version, e)),
        }
    }

    /// Folds slot `from` into slot `into` and closes `from` (session merges).
    pub fn merge_into(&mut self, into: usize, from: usize) {
        self.flush(into);
        self.flush(from);
        if let Some(slot) = self.slots.get_mut(into) {
            slot.changed = true;
        }
        if self.slots.contains(into) && self.slots.contains(from) {
            for a in 0..self.plugins.len() {
                self.merge_lane(a, into, from);
            }
        }
        self.close(from);
    }

    /// Folds aggregation `a`'s state of slot `from` into slot `into`.
    ///
    /// If either holds the retiring version, so does the result (see the
    /// module doc): a current `into` then continues as its shadow.
    pub(super) fn merge_lane(&mut self, a: usize, into: usize, from: usize) {
        self.merge_lane_try(a, into, from, true);
    }

    /// [`Self::merge_lane`], made once more after the instance was reopened
    /// for memory if `retry` (both lanes are rebuilt as they were before).
    pub(super) fn merge_lane_try(&mut self, a: usize, into: usize, from: usize, retry: bool) {
        let (target, source) = (&self.slots[into].lanes[a], &self.slots[from].lanes[a]);
        if target.acc.is_err() {
            return;
        }
        if let Err(why) = &source.acc {
            // Half a session has no result: neither has the whole.
            let why = Arc::clone(why);
            let released = self.slots[into].lanes[a].fail(why);
            self.release_parts(a, released);
            return;
        }
        let merged = match (target.version, source.version) {
            (Version::Current, Version::Current) => {
                let (Ok(t), Ok(f)) = (&target.acc, &source.acc) else {
                    return;
                };
                let shadows = (
                    target
                        .shadow
                        .as_ref()
                        .and_then(|s| s.acc.as_ref().ok().copied()),
                    source.shadow.as_ref().map(|s| s.acc.clone()),
                );
                let (t, f) = (*t, *f);
                match self.plugins[a].instance.merge(t, f) {
                    Ok(()) => {
                        match shadows {
                            (Some(ts), Some(Ok(fs))) => {
                                if let Err(e) = self.plugins[a].of(Version::Retiring).merge(ts, fs)
                                {
                                    self.shadow_failed(a, into, e);
                                }
                            }
                            (Some(ts), other) => {
                                // The merged session lacks part of its values
                                // in the retiring version: its shadow is void.
                                let why = match other {
                                    Some(Err(why)) => why,
                                    _ => Arc::from(
                                        "merged with a part that has no state in the retiring \
                                         plugin version",
                                    ),
                                };
                                if let Some(s) = &mut self.slots[into].lanes[a].shadow {
                                    s.acc = Err(why);
                                }
                                self.release(a, Version::Retiring, ts);
                            }
                            (None, _) => {}
                        }
                        Ok(())
                    }
                    Err(e) => Err((Version::Current, e)),
                }
            }
            (Version::Retiring, _) | (Version::Current, Version::Retiring) => {
                let (t, f) = (target.retiring_acc(), source.retiring_acc());
                let convert = target.version == Version::Current;
                match (t, f) {
                    (Err(why), _) | (_, Err(why)) => {
                        let released = self.slots[into].lanes[a].fail(why);
                        self.release_parts(a, released);
                        return;
                    }
                    (Ok(t), Ok(f)) => match self.plugins[a].of(Version::Retiring).merge(t, f) {
                        Ok(()) => {
                            if convert {
                                self.convert_to_retiring(a, into);
                            }
                            Ok(())
                        }
                        Err(e) => Err((Version::Retiring, e)),
                    },
                }
            }
        };
        match merged {
            Ok(()) => {
                self.plugins[a].consecutive_failures = 0;
                // A merge is not a replay of values: start the replay log
                // afresh from a snapshot of the result.
                let lane = &mut self.slots[into].lanes[a];
                lane.hand_all();
                self.checkpoint(a, into);
            }
            Err((version, e)) => {
                if retry && self.recover_memory(a, version, &e) {
                    self.merge_lane_try(a, into, from, false);
                    return;
                }
                self.fail(a, version, Some(into), e);
            }
        }
    }
}
