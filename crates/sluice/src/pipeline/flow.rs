//! The [`Flow`] of events through one run: decode, dedup, watermark,
//! windows, outputs, dead letters and their guards, hot reloads.

use super::*;

impl Flow {
    /// Swaps in the plugin versions the reloader has checked since the last
    /// call. Called between batches only, so that a batch is processed by
    /// one version throughout.
    pub(super) fn apply_reloads(&mut self) -> Result<(), Error> {
        let staged = match &self.reloader {
            Some(reloader) => reloader.take_staged(),
            None => return Ok(()),
        };
        if !staged.is_empty() {
            // Every event before the swap is processed by the old version.
            self.settle()?;
        }
        let shards = self.shard_count();
        let Some(reloader) = &self.reloader else {
            return Ok(());
        };
        'staged: for staged in staged {
            let a = staged.aggregation;
            let name = reloader.aggregation_name(a).to_string();
            // One instance per shard, all opened before any goes live.
            let mut instances = Vec::with_capacity(shards);
            for _ in 0..shards {
                match reloader.open(&staged) {
                    Ok(instance) => instances.push(instance),
                    Err(why) => {
                        tracing::warn!(aggregation = %name, "reload of `{name}` failed: {why}; the running version keeps serving");
                        reloader.swapped(&staged, None);
                        continue 'staged;
                    }
                }
            }
            let mut instances = instances.into_iter();
            let Some(instance) = instances.next() else {
                continue;
            };
            let label = instance.label().to_string();
            let old_label = self.operator.plugin_live(a).label().to_string();
            let old_outputs = self.operator.plugin_outputs(a).to_vec();
            let started = Instant::now();
            let component = reloader.running_component(a);
            let swapped = self
                .operator
                .replace_plugin(a, instance, component.clone())
                .map(|first| {
                    // The other shards swap too: the check that could refuse
                    // passed on the first, with the same columns.
                    let mut swap = first;
                    for (mut op, instance) in
                        self.shards.iter().flat_map(|s| s.others()).zip(instances)
                    {
                        if let Ok(more) = op.replace_plugin(a, instance, component.clone()) {
                            swap = match (swap, more) {
                                (Swap::Moved(x), Swap::Moved(y)) => Swap::Moved(x + y),
                                (Swap::SideBySide(x), Swap::SideBySide(y)) => {
                                    Swap::SideBySide(x + y)
                                }
                                (first, _) => first,
                            };
                        }
                    }
                    swap
                });
            match swapped {
                Ok(swap) => {
                    let outputs = self.operator.plugin_outputs(a);
                    let same = outputs.len() == old_outputs.len()
                        && outputs
                            .iter()
                            .zip(&old_outputs)
                            .all(|(n, o)| n.name == o.name && n.kind == o.kind);
                    if !same {
                        self.names.replace(a, &self.agg_names[a], outputs);
                        // The status page's columns follow.
                        if self.status.is_some() {
                            let columns = self.output_columns();
                            if let Some(feed) = &mut self.status {
                                feed.set_columns(columns);
                            }
                        }
                    }
                    let took = started.elapsed();
                    match swap {
                        Swap::Moved(moved) => tracing::info!(
                            aggregation = %name,
                            moved,
                            micros = took.as_micros() as u64,
                            "reloaded `{name}`: {label} is live ({moved} open windows moved to it \
                             by snapshot and restore in {took:?})"
                        ),
                        Swap::SideBySide(held) => {
                            tracing::info!(
                                aggregation = %name,
                                held,
                                "reloaded `{name}`: {label} is live for new windows; it keeps \
                                 another state format, so the {held} open windows finish on \
                                 {old_label}, which retires once they have closed"
                            );
                            // The last checkpoint names the old state format,
                            // which the new file no longer reads.
                            if let Some(c) = &mut self.checkpoints {
                                c.soon = true;
                            }
                        }
                    }
                    // The instance is in the store now; the reloader needs
                    // its description only.
                    let live = self.operator.plugin_live(a);
                    reloader.swapped(&staged, Some(live));
                }
                Err(why) => {
                    tracing::warn!(aggregation = %name, "reload of `{name}` to {label} refused: {why}; the running version keeps serving");
                    reloader.swapped(&staged, None);
                }
            }
        }
        // Tell the reloader when a retiring version comes (a swap, a restored
        // checkpoint) or goes, so it refuses a third state format meanwhile.
        // Called between every two Kafka messages: the label is copied
        // only when the state changes.
        for a in 0..self.retiring_told.len() {
            let retiring = self.retiring_anywhere(a);
            if retiring != self.retiring_told[a] {
                self.retiring_told[a] = retiring;
                let label = self
                    .read_operators(|op| op.retiring(a).map(|(label, _)| label.to_string()))
                    .into_iter()
                    .flatten()
                    .next();
                reloader.set_retiring(a, label);
            }
        }
        Ok(())
    }

    /// Processes one raw event from `partition`. Returns its event time, or
    /// `i64::MIN` when it left no window state (a dead letter, a duplicate).
    ///
    /// A `replayed` event was processed before by a previous owner of its
    /// partition: it rebuilds window state, but if it is late now its effect
    /// was already written, so it is skipped rather than reported again.
    pub(super) fn on_record(
        &mut self,
        origin: Origin<'_>,
        partition: usize,
        raw: &[u8],
        message_time: Option<i64>,
        replayed: bool,
    ) -> Result<i64, Error> {
        let decoded = self.decoder.decode_at(raw, message_time, &mut self.event);
        self.on_decoded(origin, partition, raw, message_time, replayed, decoded)
    }

    /// [`Flow::on_record`] for an event already decoded into `self.event`
    /// (`decoded` says whether it could be).
    pub(super) fn on_decoded(
        &mut self,
        origin: Origin<'_>,
        partition: usize,
        raw: &[u8],
        message_time: Option<i64>,
        replayed: bool,
        decoded: Result<(), String>,
    ) -> Result<i64, Error> {
        if self.batch.is_none() && self.metrics.is_some() {
            self.batch = Some((Instant::now(), self.summary.windows_emitted));
        }
        self.summary.events_read += 1;
        let watermark = self.watermarks.current();
        let decoded = decoded.and_then(|()| self.too_far_ahead(watermark));
        if let Err(reason) = decoded {
            if replayed {
                self.summary.replayed_skipped += 1;
                return Ok(i64::MIN);
            }
            return self.dead_letter(&origin, &reason, raw).map(|()| i64::MIN);
        }
        self.times
            .observe(self.event.time, &origin, self.max_future.is_some());
        if let Some(dedup) = &mut self.dedup
            && dedup.check(raw, message_time, watermark) == Sighting::Duplicate
        {
            // Dropped before windowing: no window state, no watermark move
            // (the first copy already moved it).
            if replayed {
                self.summary.replayed_skipped += 1;
                return Ok(i64::MIN);
            }
            self.summary.duplicates += 1;
            if let Some(out) = &mut self.dedup_out {
                sink::write_duplicate(&mut self.line, &origin, dedup.key(), self.event.time, raw);
                out.write(Some(&self.event.key), &self.line, Some("duplicate"))?;
            }
            return Ok(i64::MIN);
        }
        let key = self.keys.intern(&self.event.key);
        let time = self.event.time;
        if let Some(shards) = &mut self.shards {
            // The event's windows are its shard's: what they emit is
            // written when the round is replayed (see `shards`).
            shards.push_event(key, &self.event, watermark, &origin, raw, replayed);
            let advanced = self.watermarks.observe(partition, time);
            shards.push_advance(advanced);
            if shards.full() {
                self.turn()?;
            }
            return Ok(time);
        }
        let outcome =
            self.operator
                .on_event(key, time, self.event.row(), watermark, &mut self.emitted)?;
        if let EventOutcome::Late(window) = outcome {
            if replayed {
                self.summary.replayed_skipped += 1;
            } else {
                sink::write_late(
                    &mut self.line,
                    &origin,
                    &self.event.key,
                    time,
                    window,
                    watermark,
                    self.lateness,
                    raw,
                );
                let reason = sink::late_reason(window, watermark, self.lateness);
                self.late_out
                    .write(Some(&self.event.key), &self.line, Some(&reason))?;
                self.summary.late += 1;
            }
        }
        let advanced = self.watermarks.observe(partition, time);
        self.advance(advanced)?;
        Ok(time)
    }

    /// Writes a dead letter for `raw`, which cannot be used because of
    /// `reason`, and counts it against the rate limit.
    pub(super) fn dead_letter(
        &mut self,
        origin: &Origin<'_>,
        reason: &str,
        raw: &[u8],
    ) -> Result<(), Error> {
        sink::write_dead_letter(&mut self.line, origin, reason, raw, self.guard.max_raw());
        self.dead_out.write(None, &self.line, Some(reason))?;
        self.summary.dead_lettered += 1;
        self.guard
            .on_dead_letter(reason, self.summary.dead_lettered)
            .map_err(Error::from)
    }

    /// Why the decoded event is refused under `watermark.max_future`: its
    /// time is that far ahead of the watermark. Before the first event
    /// there is no watermark to be ahead of.
    pub(super) fn too_far_ahead(&self, watermark: i64) -> Result<(), String> {
        match self.max_future {
            Some(limit)
                if watermark != sluice_core::watermark::MIN_WATERMARK
                    && self.event.time > watermark.saturating_add(limit) =>
            {
                Err(format!(
                    "event time {} is {} ms ahead of the watermark {watermark}, more than \
                     watermark.max_future ({limit} ms) allows",
                    self.event.time,
                    self.event.time - watermark
                ))
            }
            _ => Ok(()),
        }
    }

    /// Judges the share of dead letters so far (see [`guard`]); `at_end`
    /// at the end of the input.
    pub(super) fn judge_dead_letters(&mut self, at_end: bool) -> Result<(), Error> {
        self.guard.judge(&self.summary, at_end).map_err(Error::from)
    }

    /// Fires what a new watermark (if any) completes and writes what was emitted.
    pub(super) fn advance(&mut self, watermark: Option<i64>) -> Result<(), Error> {
        if let Some(shards) = &mut self.shards {
            shards.push_advance(watermark);
            return self.settle();
        }
        if let Some(w) = watermark {
            self.operator.on_watermark(w, &mut self.emitted)?;
        }
        self.emit(watermark)
    }

    /// Writes what was emitted, gap filling first (`watermark` is the step
    /// just taken, if any).
    pub(super) fn emit(&mut self, watermark: Option<i64>) -> Result<(), Error> {
        match &mut self.fill {
            Some(fill) => fill.apply(watermark, &mut self.emitted, &mut self.emissions),
            None => self
                .emissions
                .extend(self.emitted.drain(..).map(|r| (r, false))),
        }
        for (result, filled) in self.emissions.drain(..) {
            let key = self.keys.render(result.key);
            sink::write_result_marked(&mut self.line, key, &result, &self.names, filled);
            self.results.write(Some(key), &self.line, None)?;
            if let Some(feed) = &mut self.status {
                feed.result(key, &result, filled, &self.agg_names);
            }
            self.summary.windows_emitted += 1;
            self.summary.filled += u64::from(filled);
        }
        Ok(())
    }

    /// Runs the triggers' processing-time timers that the wall clock has
    /// reached, and writes what they emit.
    pub(super) fn on_processing_time(&mut self) -> Result<(), Error> {
        let watermark = self.watermarks.current();
        if let Some(shards) = &mut self.shards {
            // Called after every batch: the round turns, and what it
            // emitted is written one batch later (or at the next settle).
            shards.push_processing(watermark);
            return self.turn();
        }
        self.operator
            .on_processing_time(now_ms(), watermark, &mut self.emitted);
        if self.emitted.is_empty() {
            return Ok(());
        }
        self.advance(None)
    }

    /// End of input: the watermark goes to +infinity and every window fires.
    pub(super) fn finish(&mut self) -> Result<(), Error> {
        let end = self.watermarks.finish();
        self.advance(Some(end))?;
        self.flush()
    }

    /// The summary so far, with the plugins' failure counts.
    pub(super) fn summary(&self) -> RunSummary {
        let health = self.plugin_health();
        RunSummary {
            plugin_failures: health.iter().map(|h| h.failures).sum::<u64>()
                + self.trigger_failures(),
            quarantined: health.iter().filter(|h| h.quarantined.is_some()).count() as u64,
            ..self.summary
        }
    }

    /// Moves on what Kafka outputs kept while their queues were full;
    /// returns whether any output is still backlogged.
    pub(super) fn drain_outputs(&mut self) -> Result<bool, Error> {
        let mut backlogged = self.results.drain()?;
        backlogged |= self.late_out.drain()?;
        backlogged |= self.dead_out.drain()?;
        if let Some(out) = &mut self.dedup_out {
            backlogged |= out.drain()?;
        }
        Ok(backlogged)
    }

    /// Ends a file or stdin run that a signal asked to stop before the end
    /// of its input, at `position`: nothing is fired early (a window cut
    /// short would look complete); every output is flushed, and with a
    /// state backend a checkpoint is taken, from which the same command
    /// carries on as if the run had never stopped.
    pub(super) fn stop_early(
        mut self,
        position: SourcePosition,
        signal: Option<i32>,
    ) -> Result<RunSummary, Error> {
        let checkpointed = self.checkpoints.is_some();
        tracing::info!(
            "stop requested: flushing the outputs{}",
            if checkpointed {
                " and checkpointing"
            } else {
                ""
            }
        );
        self.flush()?;
        self.checkpoint(position)?;
        let mut summary = self.summary();
        summary.stopped_by = Some(signal.unwrap_or(signal_hook::consts::SIGTERM));
        summary.left_open = self.open_windows() as u64;
        summary.stop_checkpointed = checkpointed;
        Ok(summary)
    }

    /// Ends a batch of events: when the run serves metrics and the batch
    /// wrote results, records how long after its first event was taken.
    pub(super) fn batch_done(&mut self) -> Result<(), Error> {
        // Window shards take what the batch gathered, unless processing
        // time already sent it on (file runs): one turn a batch.
        if self.shards.as_ref().is_some_and(Shards::pending) {
            self.turn()?;
        }
        if let (Some((started, results)), Some(metrics)) = (self.batch.take(), &self.metrics)
            && self.summary.windows_emitted > results
        {
            metrics.record_latency(started.elapsed());
        }
        Ok(())
    }

    /// Makes every record written so far durable.
    pub(super) fn flush(&mut self) -> Result<(), Error> {
        self.settle()?;
        self.results.flush()?;
        self.late_out.flush()?;
        if let Some(out) = &mut self.dedup_out {
            out.flush()?;
        }
        self.dead_out.flush()
    }
}
