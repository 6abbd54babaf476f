//! One aggregation's plugin as the store calls it: a [`GroupedAggregation`]
//! and the group numbers handed out in it.
//!
//! The store keeps one group per lane (a window's, pane's or session's state
//! for one aggregation), one per partial aggregate of a sliding window and
//! one per scratch state of a merge. [`Instance`] gives those numbers out
//! and takes them back, and offers the calls the store makes on one group at
//! a time; each is one call of the grouped plugin with one group. A 0.1
//! plugin serves behind [`crate::plugin::grouped::PerWindow`], so both
//! interface versions take the same path through the store.

use std::time::Duration;

use super::Log;
use crate::plugin::grouped::{
    Column, ColumnValues, GroupId, GroupedAggregation, OutputValue, Rows, takes_one_number,
};
use crate::plugin::{OutputSpec, PluginError, PluginInfo};

/// How many groups given back wait for one `release` call at most: states
/// a plugin still holds count against its memory limit, and a sliding
/// window's firing gives back a few scratch and partial groups each.
const RELEASE_BATCH: usize = 64;

/// A [`GroupedAggregation`] with the group numbers the store holds in it.
pub(crate) struct Instance {
    plugin: Box<dyn GroupedAggregation>,
    /// The lowest number never handed out since the plugin was opened.
    next: u32,
    /// Numbers whose groups are freed, handed out again before new ones.
    free: Vec<GroupId>,
    /// Groups given back whose state the plugin still holds.
    given_back: Vec<GroupId>,
    /// The rows of one `add`, reused from call to call.
    rows: Rows,
}

impl Instance {
    /// Serves `plugin`, holding no group yet.
    pub fn new(plugin: Box<dyn GroupedAggregation>) -> Self {
        let rows = Rows::for_inputs(plugin.inputs());
        Self {
            plugin,
            next: 0,
            free: Vec::new(),
            given_back: Vec::new(),
            rows,
        }
    }

    /// The grouped plugin itself.
    pub fn grouped(&self) -> &dyn GroupedAggregation {
        self.plugin.as_ref()
    }

    /// `source (name version)`, the name errors use.
    pub fn label(&self) -> &str {
        self.plugin.label()
    }

    /// The plugin's self-description.
    pub fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }

    /// The outputs [`Self::finish`] returns, in order.
    pub fn outputs(&self) -> &[OutputSpec] {
        self.plugin.outputs()
    }

    /// Whether a call failed so that every group is lost.
    pub fn is_poisoned(&self) -> bool {
        self.plugin.is_poisoned()
    }

    /// The memory limit a growth hit, when that is what poisoned it.
    pub fn out_of_memory(&self) -> Option<u64> {
        self.plugin.out_of_memory()
    }

    /// Calls made and the time spent in them.
    pub fn call_stats(&self) -> (u64, Duration) {
        self.plugin.call_stats()
    }

    /// A fresh instance of the same plugin and config. Numbers handed out
    /// before are not handed out again, so a group the store still names
    /// by mistake cannot alias a new one.
    pub fn reopen(&mut self) -> Result<(), PluginError> {
        self.free.clear();
        self.given_back.clear();
        self.plugin.reopen()
    }

    /// A new, empty group: no call is made (a group the plugin has not
    /// seen is empty).
    pub fn create(&mut self) -> Result<GroupId, PluginError> {
        if let Some(group) = self.free.pop() {
            return Ok(group);
        }
        if self.next == u32::MAX {
            return Err(self.misuse("holds more groups than the host can number"));
        }
        self.next += 1;
        Ok(GroupId(self.next - 1))
    }

    /// Folds the rows of `log` into `group`.
    pub fn add(&mut self, group: GroupId, log: Log<'_>) -> Result<(), PluginError> {
        self.rows.clear();
        self.queue(group, log)?;
        self.update_queued()
    }

    /// Appends the rows of `log` for `group` to the rows of the next
    /// [`Self::update_queued`]. Fails, queueing nothing, when the log's
    /// columns are not the plugin's inputs.
    pub fn queue(&mut self, group: GroupId, log: Log<'_>) -> Result<(), PluginError> {
        let rows = self.rows.len();
        let fits = if log.columns.is_empty() && takes_one_number(self.plugin.inputs()) {
            match self.rows.columns.as_mut_slice() {
                [
                    Column {
                        values: ColumnValues::Float(column),
                        ..
                    },
                ] if log.values.len() == log.times.len() => {
                    column.extend_from_slice(log.values);
                    true
                }
                _ => false,
            }
        } else {
            log.columns.len() == self.rows.columns.len()
                && self
                    .rows
                    .columns
                    .iter_mut()
                    .zip(log.columns)
                    .all(|(to, from)| to.extend_from(from, log.range.clone()))
        };
        if !fits {
            self.rows.truncate(rows);
            return Err(self.misuse("was given rows of other inputs than it takes"));
        }
        self.rows.times.extend_from_slice(log.times);
        let rows = self.rows.times.len();
        self.rows.groups.resize(rows, group);
        Ok(())
    }

    /// Drops the queued rows.
    pub fn clear_queue(&mut self) {
        self.rows.clear();
    }

    /// How many rows are queued.
    pub fn queued(&self) -> usize {
        self.rows.len()
    }

    /// Folds the queued rows into their groups in one call, and empties
    /// the queue whatever the outcome.
    pub fn update_queued(&mut self) -> Result<(), PluginError> {
        let updated = self.plugin.update(&self.rows);
        self.rows.clear();
        updated
    }

    /// Folds `from` into `into`; `from` is unchanged.
    pub fn merge(&mut self, into: GroupId, from: GroupId) -> Result<(), PluginError> {
        self.plugin.merge(&[into], &[from])
    }

    /// The group's outputs, one per declared output.
    pub fn finish(&mut self, group: GroupId) -> Result<Vec<Option<OutputValue>>, PluginError> {
        let mut outputs = self.plugin.evaluate(&[group])?;
        match outputs.pop() {
            Some(values) if outputs.is_empty() => Ok(values),
            _ => Err(self.misuse("did not give one group's outputs")),
        }
    }

    /// The outputs of each group of `groups`, in one call.
    pub fn finish_many(
        &mut self,
        groups: &[GroupId],
    ) -> Result<Vec<Vec<Option<OutputValue>>>, PluginError> {
        let outputs = self.plugin.evaluate(groups)?;
        if outputs.len() != groups.len() {
            return Err(self.misuse("did not give one set of outputs per group"));
        }
        Ok(outputs)
    }

    /// The group's state as bytes.
    pub fn snapshot(&mut self, group: GroupId) -> Result<Vec<u8>, PluginError> {
        // One state for the one group: `snapshot_many` checks the count.
        let states = self.snapshot_many(&[group])?;
        Ok(states.into_iter().next().unwrap_or_default())
    }

    /// The states of `groups` as bytes, in that order.
    pub fn snapshot_many(&mut self, groups: &[GroupId]) -> Result<Vec<Vec<u8>>, PluginError> {
        let states = self.plugin.snapshot(groups)?;
        if states.len() != groups.len() {
            return Err(self.misuse("did not give one state per group"));
        }
        Ok(states)
    }

    /// A new group holding `state`, of format `state_version`. A state the
    /// plugin refuses is an error that leaves the instance usable.
    pub fn restore(&mut self, state: &[u8], state_version: u32) -> Result<GroupId, PluginError> {
        let group = self.create()?;
        match self.plugin.restore(&[group], &[state], state_version) {
            Ok(refused) => match refused.into_iter().next() {
                None => Ok(group),
                Some(refusal) => {
                    self.free.push(group);
                    Err(self.misuse(&refusal.message))
                }
            },
            Err(e) => {
                if !self.plugin.is_poisoned() {
                    self.free.push(group);
                }
                Err(e)
            }
        }
    }

    /// Gives the group back. Its state is freed by the next
    /// [`Self::release_given_back`], one call for every group given back
    /// meanwhile, made here once [`RELEASE_BATCH`] are waiting; until then
    /// its number is not handed out again.
    pub fn release(&mut self, group: GroupId) -> Result<(), PluginError> {
        self.given_back.push(group);
        if self.given_back.len() >= RELEASE_BATCH {
            return self.release_given_back();
        }
        Ok(())
    }

    /// Frees the state of every group given back since the last call, in
    /// one call; their numbers are handed out again after it.
    pub fn release_given_back(&mut self) -> Result<(), PluginError> {
        if self.given_back.is_empty() {
            return Ok(());
        }
        let released = self.plugin.release(&self.given_back);
        if self.plugin.is_poisoned() {
            // The groups went with the instance; `reopen` starts afresh.
            self.given_back.clear();
        } else {
            self.free.append(&mut self.given_back);
        }
        released
    }

    fn misuse(&self, message: &str) -> PluginError {
        PluginError::Call {
            plugin: self.plugin.label().to_string(),
            message: message.to_string(),
        }
    }
}
