//! Opening, re-bounding, purging and closing slots, and giving their
//! accumulators back to the plugins.

use super::*;

impl WindowStore {
    /// Opens a slot with a new accumulator per aggregation.
    pub fn open(&mut self, key: KeyId, bounds: Window) -> usize {
        let id = self.slots.insert(Slot {
            key,
            bounds,
            lanes: Vec::with_capacity(self.plugins.len()),
            pending_len: 0,
            changed: true,
            stored: None,
        });
        self.by_key.entry(key).insert(bounds.start, id);
        self.fill_lanes(id);
        self.pane_changed(None, key, bounds.start);
        id
    }

    /// Empties a slot (a trigger's purge): its accumulators are given back
    /// and new ones created, so the next emission covers only what comes next.
    pub fn purge(&mut self, id: usize) {
        self.forget_prefetched(id);
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        self.pending_total -= slot.pending_len;
        slot.pending_len = 0;
        slot.changed = true;
        let (key, start) = (slot.key, slot.bounds.start);
        let lanes = std::mem::take(&mut slot.lanes);
        // An emptied window has nothing to finish in a retiring version:
        // it starts afresh in the current one, like any new window.
        for (a, lane) in lanes.into_iter().enumerate() {
            self.drop_lane(a, lane);
        }
        self.fill_lanes(id);
        self.pane_changed(None, key, start);
    }

    /// Gives an empty slot a new accumulator per aggregation.
    pub(super) fn fill_lanes(&mut self, id: usize) {
        for a in 0..self.plugins.len() {
            let plugin = &mut self.plugins[a];
            let acc = match &plugin.quarantined {
                Some(why) => Err(Arc::clone(why)),
                None => match plugin.instance.create() {
                    Ok(acc) => Ok(acc),
                    Err(e) => {
                        // The lane must exist for the failure to be recorded
                        // in it (and for a rebuild to pass it over).
                        self.slots[id].lanes.push(Lane::new(Err(Arc::from(""))));
                        let created = if self.recover_memory(a, Version::Current, &e) {
                            self.plugins[a].instance.create()
                        } else {
                            Err(e)
                        };
                        match created {
                            Ok(acc) => self.slots[id].lanes[a].acc = Ok(acc),
                            Err(e) => {
                                self.fail(a, Version::Current, Some(id), e);
                                continue;
                            }
                        }
                        self.add_shadow(a, id);
                        continue;
                    }
                },
            };
            self.slots[id].lanes.push(Lane::new(acc));
            self.add_shadow(a, id);
        }
    }

    /// Gives slot `id`'s new lane of aggregation `a` a shadow in the
    /// retiring version, if it may merge into a retiring window.
    pub(super) fn add_shadow(&mut self, a: usize, id: usize) {
        let key = self.slots[id].key;
        if self.merges_slots
            && self.plugins[a].retiring.is_some()
            && self.slots[id].lanes[a].acc.is_ok()
            && self.key_retires(a, key)
        {
            match self.plugins[a].of(Version::Retiring).create() {
                Ok(acc) => {
                    self.slots[id].lanes[a].shadow = Some(Box::new(Shadow {
                        acc: Ok(acc),
                        snapshot: None,
                    }));
                }
                Err(e) => self.shadow_failed(a, id, e),
            }
        }
    }

    /// Moves a slot to new bounds (a session that grew), re-indexing it by its new start.
    pub fn set_bounds(&mut self, id: usize, bounds: Window) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.bounds.start != bounds.start
            && let Some(map) = self.by_key.get_mut(&slot.key)
        {
            map.remove(&slot.bounds.start);
            map.insert(bounds.start, id);
        }
        slot.bounds = bounds;
        slot.changed = true;
    }

    /// Drops a slot and gives its accumulators back to the plugins.
    pub fn close(&mut self, id: usize) {
        self.forget_prefetched(id);
        let Some(slot) = self.slots.try_remove(id) else {
            return;
        };
        self.pending_total -= slot.pending_len;
        if let Some((start, crc)) = slot.stored {
            let key = SlotKey {
                key: slot.key,
                start,
            };
            self.persisted.removed.push((key, crc));
        }
        if let Some(map) = self.by_key.get_mut(&slot.key) {
            map.remove(&slot.bounds.start);
            if map.is_empty() {
                self.by_key.remove(&slot.key);
            }
        }
        self.pane_closed(slot.key, slot.bounds.start);
        for (a, lane) in slot.lanes.into_iter().enumerate() {
            self.drop_lane(a, lane);
        }
    }

    /// Gives the accumulators of a lane that leaves the store back to their
    /// instances, and retires the old version when this was its last lane.
    pub(super) fn drop_lane(&mut self, a: usize, mut lane: Lane) {
        let retiring = lane.version == Version::Retiring;
        let shadow = lane.take_shadow();
        if let Ok(acc) = lane.acc {
            self.release(a, lane.version, acc);
        }
        if let Some(acc) = shadow {
            self.release(a, Version::Retiring, acc);
        }
        if retiring {
            if let Some(r) = &mut self.plugins[a].retiring {
                r.lanes = r.lanes.saturating_sub(1);
            }
            self.retire_if_done(a);
        }
    }

    /// Gives what a failed lane held back to the instances.
    pub(super) fn release_parts(&mut self, a: usize, released: Released) {
        if let Some((version, acc)) = released.main {
            self.release(a, version, acc);
        }
        if let Some(acc) = released.shadow {
            self.release(a, Version::Retiring, acc);
        }
    }

    /// Gives one accumulator back to the instance of `version`.
    pub(super) fn release(&mut self, a: usize, version: Version, acc: Accumulator) {
        let plugin = &mut self.plugins[a];
        if !plugin.serves(version) || plugin.of(version).is_poisoned() {
            return;
        }
        if let Err(e) = plugin.of(version).release(acc) {
            self.fail(a, version, None, e);
        }
    }
}
