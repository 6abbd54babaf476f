//! Values buffered per slot and handed to the plugins in batches, and the
//! snapshots that bound what a failure makes the store replay.

use super::*;

impl WindowStore {
    /// Buffers one event's values (`None` skips that aggregation).
    pub fn push<'a>(&mut self, id: usize, row: impl Into<Row<'a>>, time: i64) {
        let row = row.into();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.pending_len == 0 {
            self.dirty.push(id);
            // The pane's first value since its last flush: partials that
            // cover it are out of date from here on (any partial built later
            // flushes it first).
            let (key, start) = (slot.key, slot.bounds.start);
            self.pane_changed(None, key, start);
        }
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        slot.changed = true;
        for ((lane, value), plugin) in slot.lanes.iter_mut().zip(row.values).zip(&self.plugins) {
            // A window that failed for this aggregation reports that instead
            // of a result, so it needs no more values.
            let (Some(v), Ok(_)) = (value, &lane.acc) else {
                continue;
            };
            match plugin.cells {
                None => lane.values.push(*v),
                Some((first, n)) => {
                    if lane.columns.len() != n {
                        let inputs = plugin.instance.grouped().inputs();
                        lane.columns = inputs.iter().map(|i| Column::new(i.kind)).collect();
                    }
                    for (i, column) in lane.columns.iter_mut().enumerate() {
                        // The decoder gives each cell its input's kind.
                        column.push(row.cell(first + i));
                    }
                }
            }
            lane.times.push(time);
        }
        slot.pending_len += 1;
        self.pending_total += 1;
        if self.pending_total >= self.batch_size {
            self.flush_all();
        }
    }

    /// Hands one slot's buffered values to the plugins.
    pub fn flush(&mut self, id: usize) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.pending_len == 0 {
            return;
        }
        self.pending_total -= slot.pending_len;
        slot.pending_len = 0;
        for a in 0..self.plugins.len() {
            let lane = &self.slots[id].lanes[a];
            if lane.acc.is_err() || lane.all_handed() {
                continue;
            }
            let shadow = lane
                .shadow
                .as_ref()
                .and_then(|s| s.acc.as_ref().ok().copied());
            if let Some(shadow) = shadow {
                let added = self.plugins[a]
                    .of(Version::Retiring)
                    .add(shadow, lane.unhanded());
                if let Err(e) = added {
                    self.shadow_failed(a, id, e);
                }
            }
            // Looked up again: the shadow's failure may have quarantined the plugin.
            let mut added = self.hand_over(a, id);
            if let Err((version, e)) = &added
                && self.recover_memory(a, *version, e)
            {
                // The lane was rebuilt with what it had taken in; the rest
                // is still to be handed over.
                added = self.hand_over(a, id);
            }
            if let Err((version, e)) = added {
                self.fail(a, version, Some(id), e);
            }
        }
    }

    /// Hands slot `id`'s buffered values of aggregation `a` to its
    /// accumulator (nothing if the lane has failed); on failure, the
    /// version whose call failed.
    pub(super) fn hand_over(&mut self, a: usize, id: usize) -> Result<(), (Version, PluginError)> {
        let lane = &self.slots[id].lanes[a];
        let (Ok(acc), version) = (&lane.acc, lane.version) else {
            return Ok(());
        };
        if lane.all_handed() {
            return Ok(());
        }
        self.plugins[a]
            .of(version)
            .add(*acc, lane.unhanded())
            .map_err(|e| (version, e))?;
        self.plugins[a].consecutive_failures = 0;
        let lane = &mut self.slots[id].lanes[a];
        lane.hand_all();
        if lane.handed() >= REPLAY_LIMIT {
            self.checkpoint(a, id);
        }
        Ok(())
    }

    /// Snapshots one accumulator so that its replay log can be dropped.
    pub(super) fn checkpoint(&mut self, a: usize, id: usize) {
        let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
            return;
        };
        let (Ok(acc), version) = (lane.acc.clone(), lane.version) else {
            return;
        };
        let bytes = match self.plugins[a].of(version).snapshot(acc) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.recover_memory(a, version, &e) {
                    // Rebuilt in a fresh instance (the same state): snapshot it there.
                    let acc = self.slots.get(id).and_then(|s| s.lanes[a].acc.clone().ok());
                    let again = acc.map(|acc| self.plugins[a].of(version).snapshot(acc));
                    match again {
                        Some(Ok(bytes)) => bytes,
                        Some(Err(e)) => {
                            self.fail(a, version, Some(id), e);
                            return;
                        }
                        None => return,
                    }
                } else {
                    self.fail(a, version, Some(id), e);
                    return;
                }
            }
        };
        self.snapshot_shadow(a, id);
        let Some(lane) = self.slots.get_mut(id).map(|s| &mut s.lanes[a]) else {
            return;
        };
        if lane.acc.is_ok() {
            lane.snapshotted(bytes);
        }
    }

    /// Snapshots slot `id`'s shadow of aggregation `a`, if it has a live
    /// one, at the replay log's current point: whenever the lane's own
    /// snapshot moves (and the log is cut), since the two share the log.
    pub(super) fn snapshot_shadow(&mut self, a: usize, id: usize) {
        let shadow = self
            .slots
            .get(id)
            .and_then(|s| s.lanes[a].shadow.as_ref())
            .and_then(|s| s.acc.as_ref().ok().copied());
        let Some(shadow) = shadow else {
            return;
        };
        match self.plugins[a].of(Version::Retiring).snapshot(shadow) {
            Ok(bytes) => {
                if let Some(s) = &mut self.slots[id].lanes[a].shadow {
                    s.snapshot = Some(bytes.into_boxed_slice());
                }
            }
            Err(e) => self.shadow_failed(a, id, e),
        }
    }

    /// Hands every buffered value to the plugins: per aggregation, the
    /// values of every window in one call, then what that call did not
    /// take window by window.
    pub fn flush_all(&mut self) {
        self.release_given_back();
        let mut dirty = std::mem::take(&mut self.dirty);
        if dirty.len() > 1 {
            // A slot flushed on its own (read, merged) and filled again is
            // listed twice, and a closed slot's id may be listed again for
            // the slot that reuses it: its values must go in once.
            let mut seen: foldhash::HashSet<usize> = foldhash::HashSet::default();
            dirty.retain(|id| seen.insert(*id));
            for a in 0..self.plugins.len() {
                self.hand_over_all(a, &dirty);
            }
        }
        for &id in &dirty {
            self.flush(id);
        }
        // Keep the list's capacity for the next round.
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Hands the buffered values of aggregation `a` in the slots `dirty`
    /// to its current instance in one call. Lanes that also feed a
    /// retiring version (shadows) or live in it are left to [`Self::flush`].
    ///
    /// If the call fails, which window's values caused it is unknown: the
    /// instance is rebuilt with what the windows held before the call (a
    /// call may have changed some of them), the values stay buffered, and
    /// [`Self::flush`] hands them over window by window, so that a window
    /// whose values fail fails alone and only its call counts towards
    /// quarantine, as without batching.
    pub(super) fn hand_over_all(&mut self, a: usize, dirty: &[usize]) {
        if self.plugins[a].quarantined.is_some() {
            return;
        }
        let mut handed = Vec::new();
        for &id in dirty {
            let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
                continue;
            };
            let (Ok(acc), Version::Current, None) = (&lane.acc, lane.version, &lane.shadow) else {
                continue;
            };
            if lane.all_handed() {
                continue;
            }
            let queued = self.plugins[a].instance.queue(*acc, lane.unhanded());
            if queued.is_err() {
                // Not a plugin that takes one number per row: the window by
                // window path reports that.
                self.plugins[a].instance.clear_queue();
                return;
            }
            handed.push(id);
        }
        if self.plugins[a].instance.queued() == 0 {
            return;
        }
        match self.plugins[a].instance.update_queued() {
            Ok(()) => {
                self.plugins[a].consecutive_failures = 0;
                let mut due = false;
                for &id in &handed {
                    let lane = &mut self.slots[id].lanes[a];
                    lane.hand_all();
                    due |= lane.handed() >= REPLAY_LIMIT;
                }
                if due {
                    // The call made for the lanes past the limit also takes
                    // those a quarter of the way there: lanes filling at
                    // the same pace then reach it together, and the
                    // snapshots are one call every few batches rather than
                    // one in nearly every batch.
                    handed.retain(|&id| self.slots[id].lanes[a].handed() >= REPLAY_LIMIT / 4);
                    self.checkpoint_all(a, &handed);
                }
            }
            Err(e) => {
                if !self.recover_memory(a, Version::Current, &e) {
                    self.rebuild(a, Version::Current, &e.to_string());
                }
            }
        }
    }

    /// Snapshots aggregation `a`'s lanes in the slots `ids` as
    /// [`Self::checkpoint`] does, those of the current version in one call.
    /// Lanes with a shadow, of the retiring version, or all of them when
    /// the call fails, go through [`Self::checkpoint`] one by one, which
    /// handles a failure as for any single call (a snapshot changes no
    /// state, so a failed batched one only needs the instance rebuilt if
    /// it went down).
    pub(super) fn checkpoint_all(&mut self, a: usize, ids: &[usize]) {
        let mut groups = Vec::new();
        let mut batched = Vec::new();
        let mut alone = Vec::new();
        for &id in ids {
            let Some(lane) = self.slots.get(id).map(|s| &s.lanes[a]) else {
                continue;
            };
            match (&lane.acc, lane.version, &lane.shadow) {
                (Ok(acc), Version::Current, None) => {
                    groups.push(*acc);
                    batched.push(id);
                }
                (Ok(_), _, _) => alone.push(id),
                (Err(_), _, _) => {}
            }
        }
        if groups.len() > 1 && self.plugins[a].quarantined.is_none() {
            match self.plugins[a].instance.snapshot_many(&groups) {
                Ok(states) => {
                    for (id, bytes) in batched.drain(..).zip(states) {
                        self.slots[id].lanes[a].snapshotted(bytes);
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
        for id in batched.into_iter().chain(alone) {
            self.checkpoint(a, id);
        }
    }

    /// Frees, in one call per instance, the groups the store gave back
    /// since the last flush (closed windows, purged lanes, partials,
    /// scratch groups of merges).
    pub(super) fn release_given_back(&mut self) {
        for a in 0..self.plugins.len() {
            for version in [Version::Current, Version::Retiring] {
                let plugin = &mut self.plugins[a];
                if !plugin.serves(version) || plugin.of(version).is_poisoned() {
                    continue;
                }
                if let Err(e) = plugin.of(version).release_given_back() {
                    self.fail(a, version, None, e);
                }
            }
        }
    }
}
