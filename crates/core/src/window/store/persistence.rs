//! Checkpoints of the open windows and restoring them, with the plugins'
//! health and the retiring versions.

use super::*;

impl WindowStore {
    /// Writes into `delta` every slot changed since the last checkpoint and
    /// every record of a slot closed since; returns the number of window
    /// records and the sum of their CRCs once `delta` is committed.
    ///
    /// Every changed accumulator is snapshotted, which also empties its
    /// replay log: the checkpoint and the failure-recovery snapshot are the
    /// same bytes.
    pub fn checkpoint_into(&mut self, delta: &mut WindowDelta) -> Result<(u64, u32), StateError> {
        self.flush_all();
        for (key, crc) in self.persisted.removed.drain(..) {
            delta.delete.push(key);
            self.persisted.count -= 1;
            self.persisted.crc_sum = self.persisted.crc_sum.wrapping_sub(crc);
        }
        let changed: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| s.changed)
            .map(|(id, _)| id)
            .collect();
        let mut snapshot = Vec::new();
        for a in 0..self.plugins.len() {
            snapshot.clear();
            snapshot.extend(
                changed
                    .iter()
                    .copied()
                    .filter(|&id| self.slots[id].lanes[a].handed() > 0),
            );
            self.checkpoint_all(a, &snapshot);
        }
        for id in changed {
            let slot = &mut self.slots[id];
            let state = SlotState {
                key: slot.key,
                start: slot.bounds.start,
                end: slot.bounds.end,
                lanes: slot.lanes.iter().map(Lane::state).collect(),
            };
            let (bytes, crc) = encode_record(&state)?;
            if let Some((start, old_crc)) = slot.stored {
                if start != slot.bounds.start {
                    delta.delete.push(SlotKey {
                        key: slot.key,
                        start,
                    });
                }
                self.persisted.count -= 1;
                self.persisted.crc_sum = self.persisted.crc_sum.wrapping_sub(old_crc);
            }
            let key = SlotKey {
                key: slot.key,
                start: slot.bounds.start,
            };
            delta.put.push((key, bytes));
            self.persisted.count += 1;
            self.persisted.crc_sum = self.persisted.crc_sum.wrapping_add(crc);
            slot.stored = Some((slot.bounds.start, crc));
            slot.changed = false;
        }
        self.retiring_into(delta)?;
        Ok((self.persisted.count, self.persisted.crc_sum))
    }

    /// Writes a record for each retiring version the stored checkpoint does
    /// not hold yet, and deletes those of versions retired since.
    pub(super) fn retiring_into(&mut self, delta: &mut WindowDelta) -> Result<(), StateError> {
        for (a, plugin) in self.plugins.iter().enumerate() {
            let now = plugin.retiring.as_ref().map(|r| (r, hash(&r.component)));
            let stored = self.persisted.retiring.get(&a).copied();
            match now {
                Some((r, h)) if stored != Some(h) => {
                    let info = r.instance.info();
                    let record = RetiringState {
                        aggregation: a as u32,
                        plugin: info.name.clone(),
                        version: info.version.clone(),
                        state_version: info.state_version,
                        component: r.component.to_vec(),
                    };
                    delta
                        .retiring_put
                        .push((a as u32, encode_record(&record)?.0));
                    self.persisted.retiring.insert(a, h);
                }
                None if stored.is_some() => {
                    delta.retiring_delete.push(a as u32);
                    self.persisted.retiring.remove(&a);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes up a checkpoint's retiring version of aggregation `a` (before
    /// any slot is restored), or, with `Err`, why it cannot be run: the
    /// windows that need it then report that.
    pub fn restore_retiring(
        &mut self,
        a: usize,
        instance: Result<Box<dyn GroupedAggregation>, String>,
        component: Arc<[u8]>,
    ) {
        let Some(plugin) = self.plugins.get_mut(a) else {
            return;
        };
        self.persisted.retiring.insert(a, hash(&component));
        match instance {
            Ok(instance) => {
                let instance = Instance::new(instance);
                let outputs = plugin
                    .instance
                    .outputs()
                    .iter()
                    .map(|o| instance.outputs().iter().position(|x| x.name == o.name))
                    .collect();
                plugin.retiring = Some(Retiring {
                    instance,
                    component,
                    outputs,
                    lanes: 0,
                });
            }
            Err(why) => {
                self.unrunnable_retiring.insert(a, Arc::from(why));
            }
        }
    }

    /// After the slots of a checkpoint are restored: a retiring version that
    /// holds none of them goes.
    pub fn restored(&mut self) {
        for a in 0..self.plugins.len() {
            self.retire_if_done(a);
        }
        self.unrunnable_retiring.clear();
    }

    /// Reopens a slot from a checkpoint. `crc` is its record's checksum.
    /// A lane whose plugin cannot restore its bytes reports that error
    /// for the window instead of a result.
    pub fn restore_slot(&mut self, state: &SlotState, crc: u32) -> usize {
        let bounds = Window {
            start: state.start,
            end: state.end,
        };
        let id = self.slots.insert(Slot {
            key: state.key,
            bounds,
            lanes: Vec::with_capacity(self.plugins.len()),
            pending_len: 0,
            changed: false,
            stored: Some((state.start, crc)),
        });
        self.by_key.entry(state.key).insert(bounds.start, id);
        self.persisted.count += 1;
        self.persisted.crc_sum = self.persisted.crc_sum.wrapping_add(crc);
        for a in 0..self.plugins.len() {
            let lane = state.lanes.get(a).unwrap_or(&LaneState::Fresh);
            let (own, mut version, shadow) = match lane {
                LaneState::Retiring(own) => (own.as_ref(), Version::Retiring, None),
                LaneState::Shadowed(own, shadow) => {
                    (own.as_ref(), Version::Current, Some(shadow.as_ref()))
                }
                own => (own, Version::Current, None),
            };
            let outcome = self.restore_acc(a, version, own);
            match (version, &mut self.plugins[a].retiring) {
                (Version::Retiring, Some(r)) => r.lanes += 1,
                // Failed above: no instance to route it to.
                (Version::Retiring, None) => version = Version::Current,
                _ => {}
            }
            let mut lane = Lane::new(Err(Arc::from("")));
            lane.version = version;
            self.slots[id].lanes.push(lane);
            match outcome {
                Restoring::Done(acc, snapshot) => {
                    let lane = &mut self.slots[id].lanes[a];
                    lane.acc = Ok(acc);
                    lane.snapshot = snapshot;
                }
                Restoring::Failed(why) => self.slots[id].lanes[a].acc = Err(why),
                Restoring::CallFailed(e) => {
                    self.fail(a, version, Some(id), e);
                    continue;
                }
            }
            let Some(shadow) = shadow else { continue };
            if self.slots[id].lanes[a].acc.is_err() || self.plugins[a].retiring.is_none() {
                continue;
            }
            match self.restore_acc(a, Version::Retiring, shadow) {
                Restoring::Done(acc, snapshot) => {
                    self.slots[id].lanes[a].shadow = Some(Box::new(Shadow {
                        acc: Ok(acc),
                        snapshot,
                    }));
                }
                Restoring::Failed(why) => {
                    self.slots[id].lanes[a].shadow = Some(Box::new(Shadow {
                        acc: Err(why),
                        snapshot: None,
                    }));
                }
                Restoring::CallFailed(e) => self.shadow_failed(a, id, e),
            }
        }
        id
    }

    /// One accumulator of aggregation `a` in `version`, from a checkpoint's `state`.
    pub(super) fn restore_acc(
        &mut self,
        a: usize,
        version: Version,
        state: &LaneState,
    ) -> Restoring {
        if let LaneState::Failed(why) = state {
            return Restoring::Failed(Arc::from(why.as_str()));
        }
        let plugin = &mut self.plugins[a];
        if let Some(why) = &plugin.quarantined {
            return Restoring::Failed(Arc::clone(why));
        }
        if version == Version::Retiring && plugin.retiring.is_none() {
            return Restoring::Failed(self.unrunnable_retiring.get(&a).cloned().unwrap_or_else(
                || Arc::from("the checkpoint holds this window in a retiring plugin version it did not keep"),
            ));
        }
        let instance = plugin.of(version);
        let state_version = instance.info().state_version;
        let called = match state {
            LaneState::Fresh => instance.create().map(|acc| (acc, None)),
            LaneState::Snapshot(bytes) => instance
                .restore(bytes, state_version)
                .map(|acc| (acc, Some(Box::from(bytes.as_slice())))),
            LaneState::Failed(_) | LaneState::Retiring(_) | LaneState::Shadowed(..) => {
                return Restoring::Failed(Arc::from(
                    "the checkpoint record nests one retiring state in another",
                ));
            }
        };
        match called {
            Ok((acc, snapshot)) => Restoring::Done(acc, snapshot),
            Err(e) => Restoring::CallFailed(e),
        }
    }

    /// Each aggregation's failure record, for a checkpoint.
    pub fn health_state(&self) -> Vec<HealthState> {
        self.plugins
            .iter()
            .map(|p| HealthState {
                failures: p.failures,
                consecutive_failures: p.consecutive_failures,
                quarantined: p.quarantined.as_deref().map(str::to_string),
            })
            .collect()
    }

    /// Takes back the failure records of a checkpoint (before any slot is restored).
    pub fn restore_health(&mut self, health: &[HealthState]) {
        for (plugin, h) in self.plugins.iter_mut().zip(health) {
            plugin.failures = h.failures;
            plugin.consecutive_failures = h.consecutive_failures;
            plugin.quarantined = h.quarantined.as_deref().map(Arc::from);
        }
    }

    /// Each aggregation's plugin identity, for a checkpoint's meta.
    pub fn plugin_infos(&self) -> impl Iterator<Item = (&str, &str, u32)> {
        self.plugins.iter().map(|p| {
            let info = p.instance.info();
            (
                info.name.as_str(),
                info.version.as_str(),
                info.state_version,
            )
        })
    }

    /// Every open slot's key and bounds, for re-creating timers after a restore.
    pub fn slot_bounds(&self) -> Vec<(KeyId, Window)> {
        self.slots.iter().map(|(_, s)| (s.key, s.bounds)).collect()
    }

    /// The pending trigger timers, per (key, window start): for checkpoints.
    pub fn trigger_timers(&self) -> HashMap<(KeyId, i64), Vec<i64>> {
        let mut timers: HashMap<(KeyId, i64), Vec<i64>> = HashMap::new();
        for t in self.timers.iter().filter(|t| t.kind == TimerKind::Trigger) {
            timers.entry((t.key, t.start)).or_default().push(t.time);
        }
        timers
    }
}
