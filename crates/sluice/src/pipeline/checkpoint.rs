//! Checkpoints: when one is due, what it writes (window state, watermarks,
//! dedup, output lengths, the source position) and restoring a run from the
//! newest one.

use super::*;

/// A token no other state directory is likely to have: random per start,
/// then kept in the checkpoints.
pub(super) fn fresh_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Compiles and opens a checkpoint's retiring plugin version of aggregation
/// `agg`, checking that it is the version the checkpoint names.
fn open_retiring(
    engine: &PluginEngine,
    agg: &AggregationConfig,
    retiring: &RetiringState,
) -> Result<Box<dyn GroupedAggregation>, String> {
    let source = format!("{} (retiring, from the checkpoint)", agg.plugin);
    let plugin = engine
        .compile_any(&source, &retiring.component)
        .map_err(|e| e.to_string())?;
    let instance = engine
        .open_any(&plugin, &agg.plugin_config(), &agg.name)
        .map_err(|e| e.to_string())?;
    let info = instance.info();
    if info.name != retiring.plugin || info.state_version != retiring.state_version {
        return Err(format!(
            "its code says {} (state format {}), the checkpoint {} (format {})",
            info.name, info.state_version, retiring.plugin, retiring.state_version
        ));
    }
    Ok(instance)
}

impl Flow {
    /// Carries on from a checkpoint: keys, watermarks, windows and counters
    /// as they were, and the source position to resume from.
    pub(super) fn restore(
        &mut self,
        config: &PipelineConfig,
        engine: &PluginEngine,
        restored: Restored,
    ) -> Result<(), Error> {
        let meta = &restored.meta;
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        let refuse = |why: String| {
            Err(Error::Config(ConfigError(format!(
                "key `state.path`: checkpoint {} cannot be restored: {why}; restore the \
                 pipeline it was taken with, or delete the state directory to start over",
                meta.id
            ))))
        };
        if meta.window != checkpoints.window {
            return refuse(format!(
                "it was taken with window {}, the config now says {}",
                meta.window, checkpoints.window
            ));
        }
        let now = self.operator.plugin_infos();
        if meta.aggregations.len() != now.len() {
            return refuse(format!(
                "it holds {} aggregations, the config has {}",
                meta.aggregations.len(),
                now.len()
            ));
        }
        for ((then, (plugin, version, state_version)), agg) in
            meta.aggregations.iter().zip(&now).zip(&config.aggregations)
        {
            if then.name != agg.name || &then.plugin != plugin {
                return refuse(format!(
                    "aggregation `{}` ({}) is now `{}` ({plugin})",
                    then.name, then.plugin, agg.name
                ));
            }
            if then.state_version != *state_version {
                return refuse(format!(
                    "aggregation `{}`: the checkpoint holds state format {} of plugin {} {}, \
                     but the configured {plugin} {version} reads format {state_version}",
                    then.name, then.state_version, then.plugin, then.version
                ));
            }
            if &then.version != version {
                tracing::info!(
                    "aggregation `{}`: restoring state of {} {} into {plugin} {version} \
                     (same state format {state_version})",
                    then.name,
                    then.plugin,
                    then.version
                );
            }
        }
        let (name, version, state_version) = self.operator.trigger_identity();
        if !meta.triggers.is_empty() && meta.trigger.2 != state_version {
            return refuse(format!(
                "its trigger state is format {} of {} {}, but the configured trigger {name} \
                 {version} reads format {state_version}",
                meta.trigger.2, meta.trigger.0, meta.trigger.1
            ));
        }
        for key in &restored.keys {
            self.keys.intern(key);
        }
        for retiring in &restored.retiring {
            let a = retiring.aggregation as usize;
            let Some(agg) = config.aggregations.get(a) else {
                return refuse(format!(
                    "it holds a retiring plugin version for aggregation {a}, which the config lacks"
                ));
            };
            let instance = open_retiring(engine, agg, retiring);
            match &instance {
                Ok(i) => tracing::info!(
                    aggregation = %agg.name,
                    "aggregation `{}`: {} restored from the checkpoint to finish the windows it holds",
                    agg.name,
                    i.label()
                ),
                Err(why) => tracing::warn!(
                    aggregation = %agg.name,
                    "aggregation `{}`: the checkpoint's retiring version {} {} cannot run ({why}); \
                     the windows it holds report that",
                    agg.name,
                    retiring.plugin,
                    retiring.version
                ),
            }
            let component: Arc<[u8]> = Arc::from(retiring.component.as_slice());
            if let Some(shards) = &self.shards {
                for mut op in shards.others() {
                    op.restore_retiring(
                        a,
                        open_retiring(engine, agg, retiring),
                        Arc::clone(&component),
                    );
                }
            }
            self.operator.restore_retiring(a, instance, component);
        }
        self.watermarks.restore(&meta.watermarks);
        let watermark = self.watermarks.current();
        match &self.shards {
            None => self
                .operator
                .restore(&meta.health, &restored.slots, &meta.triggers, watermark),
            Some(shards) => {
                // Each shard takes its keys' windows and triggers.
                let part = |shard: usize| {
                    let slots: Vec<_> = restored
                        .slots
                        .iter()
                        .filter(|(s, _)| shards.shard_of(s.key) == shard)
                        .cloned()
                        .collect();
                    let triggers: Vec<_> = meta
                        .triggers
                        .iter()
                        .filter(|t| shards.shard_of(t.key) == shard)
                        .cloned()
                        .collect();
                    (shards::shard_health(&meta.health, shard), slots, triggers)
                };
                let (health, slots, triggers) = part(0);
                self.operator.restore(&health, &slots, &triggers, watermark);
                for (i, mut op) in shards.others().enumerate() {
                    let (health, slots, triggers) = part(i + 1);
                    op.restore(&health, &slots, &triggers, watermark);
                }
            }
        }
        if let (Some(dedup), Some(state)) = (&mut self.dedup, &meta.dedup)
            && let Err(why) = dedup.restore(state.clone())
        {
            return refuse(why);
        }
        if let (Some(fill), Some(state)) = (&mut self.fill, &meta.fill) {
            fill.restore(state);
        }
        self.summary = meta.summary;
        checkpoints.next_id = meta.id + 1;
        checkpoints.keys_stored = restored.keys.len();
        if let SourcePosition::Kafka { token, .. } = &meta.source {
            checkpoints.token = *token;
        }
        self.resume = Some(meta.source.clone());
        self.resume_watermarks = Some(meta.watermarks.clone());
        tracing::info!(
            checkpoint = meta.id,
            windows = restored.slots.len(),
            "restored checkpoint {} ({} open windows, {} events read before it)",
            meta.id,
            restored.slots.len(),
            meta.summary.events_read
        );
        Ok(())
    }

    /// Whether the state backend keeps checkpoints and the interval has
    /// passed since the last one.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.checkpoints
            .as_ref()
            .is_some_and(|c| c.soon || c.last.elapsed() >= c.interval)
    }

    /// The token naming this run's state directory, when it keeps one.
    pub(super) fn checkpoint_token(&self) -> Option<u64> {
        self.checkpoints.as_ref().map(|c| c.token)
    }

    /// Drops every window, the dedup and fill state, and the watermarks:
    /// the state is rebuilt by replay from committed offsets.
    pub(super) fn clear_state(&mut self, partitions: usize) -> Result<(), Error> {
        for cleared in self.each_operator(|_, op| op.clear())? {
            cleared?;
        }
        if let Some(fill) = &mut self.fill {
            fill.clear();
        }
        if let Some(dedup) = &mut self.dedup {
            dedup.clear();
        }
        self.watermarks = Watermarks::new(self.watermark_delay, partitions);
        Ok(())
    }

    /// Takes a checkpoint if the interval has passed since the last one.
    pub(super) fn maybe_checkpoint(
        &mut self,
        position: impl FnOnce() -> SourcePosition,
    ) -> Result<(), Error> {
        if self.checkpoint_due() {
            self.checkpoint(position())?;
        }
        Ok(())
    }

    /// Takes a checkpoint now, with the source at `position`: the outputs
    /// are made durable first, so the checkpoint never counts on a record
    /// that could still be lost.
    pub(super) fn checkpoint(&mut self, position: SourcePosition) -> Result<(), Error> {
        if self.checkpoints.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        self.settle()?;
        self.results.sync()?;
        self.late_out.sync()?;
        self.dead_out.sync()?;
        if let Some(out) = &mut self.dedup_out {
            out.sync()?;
        }
        let mut delta = CheckpointDelta::default();
        let mut slots = 0;
        let mut slot_crc_sum = 0u32;
        for taken in self.each_operator(|_, op| op.checkpoint_into(&mut delta.windows))? {
            let (count, crc) = taken?;
            slots += count;
            slot_crc_sum = slot_crc_sum.wrapping_add(crc);
        }
        if self.sharded() {
            // Every shard holds the same retiring versions: one record each,
            // gone only once no shard finishes windows on it.
            delta.windows.retiring_put.sort_by_key(|(a, _)| *a);
            delta.windows.retiring_put.dedup_by_key(|(a, _)| *a);
            let still = self.read_operators(|op| {
                (0..self.agg_names.len())
                    .filter(|&a| op.retiring(a).is_some())
                    .collect::<Vec<_>>()
            });
            delta.windows.retiring_delete.sort_unstable();
            delta.windows.retiring_delete.dedup();
            delta
                .windows
                .retiring_delete
                .retain(|a| !still.iter().any(|s| s.contains(&(*a as usize))));
        }
        let names = self
            .checkpoints
            .as_ref()
            .map(|c| c.aggregations.clone())
            .unwrap_or_default();
        let aggregations = self
            .operator
            .plugin_infos()
            .into_iter()
            .zip(names)
            .map(|((plugin, version, state_version), name)| AggregationMeta {
                name,
                plugin,
                version,
                state_version,
            })
            .collect();
        let health = self.health_state();
        let summary = self.summary;
        let sinks = SinkLengths {
            results: self.results.position(),
            late: self.late_out.position(),
            dead: self.dead_out.position(),
            dedup: self.dedup_out.as_ref().and_then(Output::position),
        };
        let dedup = self.dedup.as_ref().map(|d| d.snapshot().clone());
        let fill = self.fill.as_ref().map(GapFiller::snapshot);
        let triggers = self
            .each_operator(|_, op| op.trigger_records())?
            .into_iter()
            .flatten()
            .collect();
        let watermarks = self.watermarks.state();
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        delta.new_keys = self
            .keys
            .since(checkpoints.keys_stored)
            .map(|(id, k)| (id, k.to_string()))
            .collect();
        let id = checkpoints.next_id;
        delta.meta = Some(Meta {
            format: FORMAT_VERSION,
            id,
            taken_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            window: checkpoints.window.clone(),
            aggregations,
            health,
            watermarks,
            source: position,
            sinks,
            summary,
            dedup,
            fill,
            triggers,
            trigger: self.operator.trigger_identity(),
            keys: self.keys.len() as u64,
            slots,
            slot_crc_sum,
        });
        checkpoints.backend.commit(delta)?;
        let pending = self.results.pending()
            + self.late_out.pending()
            + self.dead_out.pending()
            + self.dedup_out.as_ref().map_or(0, Output::pending);
        if pending > 0 {
            tracing::info!(
                checkpoint = id,
                "{pending} records written before the restore have not been emitted again yet"
            );
        }
        let Some(checkpoints) = self.checkpoints.as_mut() else {
            return Ok(());
        };
        checkpoints.next_id += 1;
        checkpoints.keys_stored = self.keys.len();
        checkpoints.last = Instant::now();
        checkpoints.soon = false;
        if let Some(metrics) = &self.metrics {
            metrics.record_checkpoint(started.elapsed(), checkpoints.backend.size_bytes());
        }
        tracing::debug!(
            checkpoint = id,
            windows = slots,
            millis = started.elapsed().as_millis() as u64,
            "checkpoint {id} written"
        );
        Ok(())
    }
}
