//! Key-sharded window workers (`parallelism: N`).
//!
//! With N > 1 the window state is split by key over N window operators,
//! each with its own plugin instances and trigger: key `k` belongs to shard
//! `k mod N` (key ids are given in order of first sight, so the keys spread
//! evenly). Shard 0 runs on the pipeline thread, the others on threads of
//! their own.
//!
//! The pipeline thread keeps everything that is decided in input order:
//! decoding, dedup, the watermark, dead letters and all writing. For each
//! event it appends a command to its shard's batch and an entry to the
//! *journal*; each watermark step goes to every shard. A *round* hands the
//! batches to the shards, which run them in parallel; its journal is
//! replayed when the shards are done, while they run the next (see
//! `Flow::turn`): each event's late record and early firings come from
//! its shard's reply, and each watermark step's results are merged from
//! all shards by [`FiringTag`], the timer that fired them. One operator
//! holding every key would have fired them in that very order, so the
//! outputs are byte-identical for every N.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use sluice_core::decode::{Cell, Event, KeyId, Row};
use sluice_core::plugin::PluginError;
use sluice_core::sink;
use sluice_core::source::Origin;
use sluice_core::window::PluginHealth;
use sluice_core::window::persist::HealthState;
use sluice_core::window::{EventOutcome, FiringTag, Window, WindowOperator, WindowResult, now_ms};

use crate::error::Error;

/// The events a round takes at most before it runs, whatever the source's
/// batches: bounds the journal and the copies of raw lines it holds.
const ROUND_EVENTS: usize = 16_384;

/// The rounds sent and not yet replayed, at most: with two, a shard
/// thread has the next round queued while it runs one, so neither it nor
/// the pipeline thread waits for the other when a round's work is uneven
/// between them; the pipeline thread still writes in round order.
const IN_FLIGHT: usize = 2;

/// What a shard does, in order.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// The next event of the batch's columns, under this watermark.
    Event(i64),
    /// The watermark moved here.
    Watermark(i64),
    /// Processing-time timers due at `now` run, under `watermark`.
    Processing { now: i64, watermark: i64 },
}

/// One shard's commands for one round, with the events' rows in columns.
#[derive(Debug, Default)]
pub(super) struct Batch {
    commands: Vec<Command>,
    keys: Vec<KeyId>,
    times: Vec<i64>,
    values: Vec<Option<f64>>,
    cells: Vec<Cell>,
    text: String,
    /// Per event, where its values, cells and text end.
    ends: Vec<(u32, u32, u32)>,
}

impl Batch {
    fn push_event(&mut self, key: KeyId, event: &Event, watermark: i64) {
        self.commands.push(Command::Event(watermark));
        self.keys.push(key);
        self.times.push(event.time);
        self.values.extend_from_slice(&event.values);
        self.cells.extend_from_slice(&event.cells);
        self.text.push_str(&event.text);
        self.ends.push((
            self.values.len() as u32,
            self.cells.len() as u32,
            self.text.len() as u32,
        ));
    }

    fn clear(&mut self) {
        self.commands.clear();
        self.keys.clear();
        self.times.clear();
        self.values.clear();
        self.cells.clear();
        self.text.clear();
        self.ends.clear();
    }

    /// Runs the batch's commands on `op`, into `reply`.
    fn run(&self, op: &mut WindowOperator, reply: &mut Reply) {
        let mut event = 0;
        let mut from = (0u32, 0u32, 0u32);
        for command in &self.commands {
            match *command {
                Command::Event(watermark) => {
                    let to = self.ends[event];
                    let row = Row {
                        values: &self.values[from.0 as usize..to.0 as usize],
                        cells: &self.cells[from.1 as usize..to.1 as usize],
                        text: &self.text[from.2 as usize..to.2 as usize],
                    };
                    let before = reply.results.len();
                    let outcome = op.on_event(
                        self.keys[event],
                        self.times[event],
                        row,
                        watermark,
                        &mut reply.results,
                    );
                    let emitted = (reply.results.len() - before) as u32;
                    match outcome {
                        Ok(EventOutcome::Accepted) => reply.outcomes.push((None, emitted)),
                        Ok(EventOutcome::Late(window)) => {
                            reply.outcomes.push((Some(window), emitted));
                        }
                        Err(e) => {
                            reply.error = Some(e);
                            return;
                        }
                    }
                    from = to;
                    event += 1;
                }
                Command::Watermark(watermark) => {
                    if let Err(e) =
                        op.on_watermark_tagged(watermark, &mut reply.results, &mut reply.tags)
                    {
                        reply.error = Some(e);
                        return;
                    }
                    reply.steps.push(reply.tags.len() as u32);
                }
                Command::Processing { now, watermark } => {
                    op.on_processing_time_tagged(
                        now,
                        watermark,
                        &mut reply.results,
                        &mut reply.tags,
                    );
                    reply.steps.push(reply.tags.len() as u32);
                }
            }
        }
    }
}

/// What a shard's round gave back.
#[derive(Debug, Default)]
pub(super) struct Reply {
    /// Per event: the window it was too late for, and how many results
    /// (early firings) it emitted.
    outcomes: Vec<(Option<Window>, u32)>,
    /// Every result of the round, in order.
    results: Vec<WindowResult>,
    /// Per run of results from watermark steps and processing time: the
    /// timer that fired it and its length.
    tags: Vec<(FiringTag, u32)>,
    /// Per step, where its runs end in `tags`.
    steps: Vec<u32>,
    /// The plugin error that stopped the round, if one did.
    error: Option<PluginError>,
    /// The batch, handed back to be filled again.
    batch: Batch,
}

/// Where an event came from, kept for its late record.
#[derive(Debug, Clone, Copy)]
pub(super) enum Place {
    Line(u64),
    Kafka {
        topic: u32,
        partition: i32,
        offset: i64,
    },
}

/// One step of the pipeline thread's work, replayed after the round.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    /// An event went to `shard`.
    Event {
        shard: u32,
        key: KeyId,
        time: i64,
        watermark: i64,
        place: Place,
        /// Its raw line in `raws`, kept when it could be late.
        raw: Option<(usize, usize)>,
        replayed: bool,
    },
    /// What `Flow::advance` does after an event, or alone; `Some` is a
    /// watermark step every shard took.
    Advance(Option<i64>),
    /// Every shard ran its processing-time timers.
    Processing,
}

/// A thread running one shard.
struct Worker {
    op: Arc<Mutex<WindowOperator>>,
    to: Option<SyncSender<Batch>>,
    from: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

/// The shards of a run with `parallelism` above 1 (see the module doc).
pub(super) struct Shards {
    /// Per shard, the commands of the round being gathered.
    batches: Vec<Batch>,
    /// Shards 1.. (shard 0 is the flow's own operator).
    workers: Vec<Worker>,
    /// Per shard 1.., the batches its replies handed back, empty, to
    /// gather later rounds in.
    returned: Vec<Vec<Batch>>,
    /// The pipeline thread's steps since the last round.
    pub(super) journal: Vec<Entry>,
    /// The raw lines of the journal's events.
    pub(super) raws: Vec<u8>,
    /// Kafka topic names the journal's places point to.
    pub(super) topics: Vec<String>,
    events: usize,
    /// The rounds sent and not replayed yet, oldest first.
    in_flight: VecDeque<Round>,
    /// A replayed round's journal and raw-line buffers, for the next.
    spare: (Vec<Entry>, Vec<u8>),
    /// The latest an event's windows end after it, plus the allowed
    /// lateness: an event earlier than the watermark less this cannot be
    /// late, and its raw line is not kept.
    reach: i64,
}

impl Shards {
    /// Shards for `ops` (shards 1 and up; shard 0 stays with the caller),
    /// each started on a thread of its own.
    /// `reach` is the window size (a session's gap) plus the allowed
    /// lateness.
    pub(super) fn start(ops: Vec<WindowOperator>, reach: i64) -> Result<Self, Error> {
        let mut workers = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let op = Arc::new(Mutex::new(op));
            let (to, batches) = sync_channel::<Batch>(IN_FLIGHT);
            let (reply_to, from) = sync_channel::<Reply>(IN_FLIGHT);
            let mine = Arc::clone(&op);
            let thread = std::thread::Builder::new()
                .name(format!("sluice-shard-{}", i + 1))
                .spawn(move || {
                    while let Ok(batch) = batches.recv() {
                        let mut reply = Reply::default();
                        batch.run(&mut lock(&mine), &mut reply);
                        reply.batch = batch;
                        if reply_to.send(reply).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Worker(format!("starting window shard {}: {e}", i + 1)))?;
            workers.push(Worker {
                op,
                to: Some(to),
                from,
                thread: Some(thread),
            });
        }
        Ok(Self {
            batches: (0..=workers.len()).map(|_| Batch::default()).collect(),
            returned: (0..workers.len()).map(|_| Vec::new()).collect(),
            workers,
            journal: Vec::new(),
            raws: Vec::new(),
            topics: Vec::new(),
            events: 0,
            in_flight: VecDeque::with_capacity(IN_FLIGHT),
            spare: (Vec::new(), Vec::new()),
            reach,
        })
    }

    /// How many shards there are, the caller's included.
    pub(super) fn count(&self) -> usize {
        self.batches.len()
    }

    /// The shard holding `key`'s windows.
    pub(super) fn shard_of(&self, key: KeyId) -> usize {
        key as usize % self.batches.len()
    }

    /// The operators of shards 1 and up, each locked: only between rounds,
    /// when no shard is running.
    pub(super) fn others(&self) -> impl Iterator<Item = MutexGuard<'_, WindowOperator>> {
        self.workers.iter().map(|w| lock(&w.op))
    }

    /// Whether the round gathered holds anything to run or replay.
    pub(super) fn pending(&self) -> bool {
        !self.journal.is_empty()
    }

    /// Whether the round gathered is as large as a round gets.
    pub(super) fn full(&self) -> bool {
        self.events >= ROUND_EVENTS
    }

    /// Adds `event` (key `key`, from `origin`, line `raw`) to its shard's
    /// batch and to the journal.
    pub(super) fn push_event(
        &mut self,
        key: KeyId,
        event: &Event,
        watermark: i64,
        origin: &Origin<'_>,
        raw: &[u8],
        replayed: bool,
    ) {
        let shard = self.shard_of(key);
        self.batches[shard].push_event(key, event, watermark);
        let place = match *origin {
            Origin::Line(n) => Place::Line(n),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                let at = match self.topics.iter().position(|t| t == topic) {
                    Some(at) => at,
                    None => {
                        self.topics.push(topic.to_string());
                        self.topics.len() - 1
                    }
                };
                Place::Kafka {
                    topic: at as u32,
                    partition,
                    offset,
                }
            }
        };
        // Late means every window of the event ended `lateness` before the
        // watermark; none ends later than `time + size`.
        let raw = (event.time.saturating_add(self.reach) <= watermark).then(|| {
            let start = self.raws.len();
            self.raws.extend_from_slice(raw);
            (start, raw.len())
        });
        self.journal.push(Entry::Event {
            shard: shard as u32,
            key,
            time: event.time,
            watermark,
            place,
            raw,
            replayed,
        });
        self.events += 1;
    }

    /// Adds what `Flow::advance(watermark)` does: a step on every shard
    /// when the watermark moved.
    pub(super) fn push_advance(&mut self, watermark: Option<i64>) {
        if let Some(w) = watermark {
            for batch in &mut self.batches {
                batch.commands.push(Command::Watermark(w));
            }
        }
        self.journal.push(Entry::Advance(watermark));
    }

    /// Adds a run of the processing-time timers due now on every shard.
    pub(super) fn push_processing(&mut self, watermark: i64) {
        let now = now_ms();
        for batch in &mut self.batches {
            batch.commands.push(Command::Processing { now, watermark });
        }
        self.journal.push(Entry::Processing);
    }

    /// How many rounds were sent and are not collected yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends the gathered round to shards 1.. and runs shard 0's part on
    /// `own` meanwhile; the round is in flight until [`Shards::collect`].
    pub(super) fn dispatch(&mut self, own: &mut WindowOperator) -> Result<(), Error> {
        for (i, worker) in self.workers.iter().enumerate() {
            let next = self.returned[i].pop().unwrap_or_default();
            let batch = std::mem::replace(&mut self.batches[i + 1], next);
            let sent = worker.to.as_ref().is_some_and(|to| to.send(batch).is_ok());
            if !sent {
                return Err(Error::Worker(format!("window shard {} has stopped", i + 1)));
            }
        }
        let mut first = Reply::default();
        self.batches[0].run(own, &mut first);
        self.batches[0].clear();
        self.events = 0;
        self.in_flight.push_back(Round {
            journal: std::mem::replace(&mut self.journal, std::mem::take(&mut self.spare.0)),
            raws: std::mem::replace(&mut self.raws, std::mem::take(&mut self.spare.1)),
            topics: std::mem::take(&mut self.topics),
            first,
        });
        Ok(())
    }

    /// Waits for the oldest round in flight, if any: its journal and every
    /// shard's reply, to replay; a plugin error of any shard fails it.
    pub(super) fn collect(&mut self) -> Result<Option<(Round, Replies)>, Error> {
        let Some(mut round) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let mut replies = Vec::with_capacity(self.batches.len());
        replies.push(std::mem::take(&mut round.first));
        for (i, worker) in self.workers.iter().enumerate() {
            let mut reply = worker
                .from
                .recv()
                .map_err(|_| Error::Worker(format!("window shard {} has stopped", i + 1)))?;
            // The batch comes back for a later round.
            let mut batch = std::mem::take(&mut reply.batch);
            batch.clear();
            self.returned[i].push(batch);
            replies.push(reply);
        }
        for reply in &mut replies {
            if let Some(e) = reply.error.take() {
                return Err(Error::Plugin(e));
            }
        }
        Ok(Some((round, Replies::new(replies))))
    }

    /// Takes back a replayed round's buffers for the next one.
    pub(super) fn recycle(&mut self, mut round: Round) {
        round.journal.clear();
        round.raws.clear();
        self.spare = (round.journal, round.raws);
    }
}

/// A round sent to the shards: what the pipeline thread replays once the
/// replies are in.
pub(super) struct Round {
    pub(super) journal: Vec<Entry>,
    pub(super) raws: Vec<u8>,
    pub(super) topics: Vec<String>,
    /// Shard 0's reply, run on the pipeline thread at dispatch.
    first: Reply,
}

impl Drop for Shards {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing the channel ends the thread's loop.
            worker.to = None;
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Locks a shard's operator. A shard thread that panicked leaves it
/// poisoned; its state is taken as it is (the round reports the stop).
fn lock(op: &Mutex<WindowOperator>) -> MutexGuard<'_, WindowOperator> {
    op.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shards' replies to one round, read back in journal order.
pub(super) struct Replies {
    shards: Vec<Cursor>,
}

/// How far the replay has read one shard's reply.
struct Cursor {
    outcomes: std::vec::IntoIter<(Option<Window>, u32)>,
    results: std::vec::IntoIter<WindowResult>,
    tags: Vec<(FiringTag, u32)>,
    steps: std::vec::IntoIter<u32>,
    /// Where the next step's runs start in `tags`.
    at: usize,
}

impl Replies {
    fn new(replies: Vec<Reply>) -> Self {
        Self {
            shards: replies
                .into_iter()
                .map(|r| Cursor {
                    outcomes: r.outcomes.into_iter(),
                    results: r.results.into_iter(),
                    tags: r.tags,
                    steps: r.steps.into_iter(),
                    at: 0,
                })
                .collect(),
        }
    }

    /// The next event of `shard`: the window it was late for, if any; its
    /// early firings are appended to `out`.
    pub(super) fn event(&mut self, shard: usize, out: &mut Vec<WindowResult>) -> Option<Window> {
        let cursor = &mut self.shards[shard];
        let (late, emitted) = cursor.outcomes.next().unwrap_or((None, 0));
        out.extend(cursor.results.by_ref().take(emitted as usize));
        late
    }

    /// The next step every shard took: their results appended to `out` in
    /// the order of their tags. A run's place is the largest tag up to it
    /// in its shard, as a timer set in the past during a step runs at once.
    pub(super) fn step(&mut self, out: &mut Vec<WindowResult>) {
        // Per shard: its runs of this step, and the next one to take.
        let mut runs: Vec<(usize, usize, FiringTag)> = Vec::with_capacity(self.shards.len());
        for cursor in &mut self.shards {
            let end = cursor.steps.next().map_or(cursor.at, |e| e as usize);
            runs.push((cursor.at, end, FiringTag::default()));
            cursor.at = end;
        }
        loop {
            let mut best: Option<(usize, FiringTag)> = None;
            for (s, (next, end, high)) in runs.iter().enumerate() {
                if next < end {
                    let tag = self.shards[s].tags[*next].0.max(*high);
                    if best.is_none_or(|(_, b)| tag < b) {
                        best = Some((s, tag));
                    }
                }
            }
            let Some((s, tag)) = best else {
                return;
            };
            let run = &mut runs[s];
            let count = self.shards[s].tags[run.0].1;
            run.0 += 1;
            run.2 = tag;
            out.extend(self.shards[s].results.by_ref().take(count as usize));
        }
    }
}

impl super::Flow {
    /// Runs every round gathered so far and writes what they emitted in
    /// input order (see the module doc). Every use of window state outside
    /// the event path, and every flush, comes after this.
    pub(super) fn settle(&mut self) -> Result<(), Error> {
        // The first turn sends what was gathered; each turn writes one
        // round, the oldest.
        while self
            .shards
            .as_ref()
            .is_some_and(|s| s.pending() || s.in_flight() > 0)
        {
            self.turn()?;
        }
        Ok(())
    }

    /// One turn of the pipelined rounds, at the end of a batch: sends the
    /// round gathered since the last turn (shard 0's part runs here
    /// meanwhile), then, once [`IN_FLIGHT`] rounds are out or nothing new
    /// was sent, collects the oldest and writes it while the other shards
    /// work on the newer ones. Output lags by at most `IN_FLIGHT` rounds.
    pub(super) fn turn(&mut self) -> Result<(), Error> {
        let Some(shards) = self.shards.as_mut() else {
            return Ok(());
        };
        let sent = shards.pending();
        if sent {
            shards.dispatch(&mut self.operator)?;
        }
        if sent && shards.in_flight() < IN_FLIGHT {
            return Ok(());
        }
        let Some((round, mut replies)) = shards.collect()? else {
            return Ok(());
        };
        let replayed = self.replay(&round.journal, &round.raws, &round.topics, &mut replies);
        if let Some(shards) = self.shards.as_mut() {
            shards.recycle(round);
        }
        replayed
    }

    /// Writes what a round's `journal` of events and steps emitted, from
    /// the shards' `replies`, as a single operator's run would have.
    fn replay(
        &mut self,
        journal: &[Entry],
        raws: &[u8],
        topics: &[String],
        replies: &mut Replies,
    ) -> Result<(), Error> {
        for entry in journal {
            match *entry {
                Entry::Event {
                    shard,
                    key,
                    time,
                    watermark,
                    place,
                    raw,
                    replayed,
                } => {
                    let Some(window) = replies.event(shard as usize, &mut self.emitted) else {
                        continue;
                    };
                    if replayed {
                        self.summary.replayed_skipped += 1;
                        continue;
                    }
                    let origin = match place {
                        Place::Line(n) => Origin::Line(n),
                        Place::Kafka {
                            topic,
                            partition,
                            offset,
                        } => Origin::Kafka {
                            topic: topics.get(topic as usize).map_or("", String::as_str),
                            partition,
                            offset,
                        },
                    };
                    let rendered = self.keys.render(key);
                    sink::write_late(
                        &mut self.line,
                        &origin,
                        rendered,
                        time,
                        window,
                        watermark,
                        self.lateness,
                        raw.map_or(&[][..], |(at, len)| &raws[at..at + len]),
                    );
                    let reason = sink::late_reason(window, watermark, self.lateness);
                    self.late_out
                        .write(Some(rendered), &self.line, Some(&reason))?;
                    self.summary.late += 1;
                }
                Entry::Advance(watermark) => {
                    if watermark.is_some() {
                        replies.step(&mut self.emitted);
                    }
                    self.emit(watermark)?;
                }
                Entry::Processing => {
                    replies.step(&mut self.emitted);
                    if !self.emitted.is_empty() {
                        self.emit(None)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `f` on every shard's operator, the flow's own first, after
    /// settling the round gathered.
    pub(super) fn each_operator<R>(
        &mut self,
        mut f: impl FnMut(usize, &mut WindowOperator) -> R,
    ) -> Result<Vec<R>, Error> {
        self.settle()?;
        let mut out = vec![f(0, &mut self.operator)];
        if let Some(shards) = &self.shards {
            for (i, mut op) in shards.others().enumerate() {
                out.push(f(i + 1, &mut op));
            }
        }
        Ok(out)
    }

    /// `f` of every shard's operator, the flow's own first. Between rounds
    /// only (the event path settles before anything asks).
    pub(super) fn read_operators<R>(&self, mut f: impl FnMut(&WindowOperator) -> R) -> Vec<R> {
        let mut out = vec![f(&self.operator)];
        if let Some(shards) = &self.shards {
            out.extend(shards.others().map(|op| f(&op)));
        }
        out
    }

    /// How many windows (panes, sessions) hold state, over all shards.
    pub(super) fn open_windows(&self) -> usize {
        self.read_operators(WindowOperator::open_windows)
            .into_iter()
            .sum()
    }

    /// The earliest start of any open window over all shards.
    pub(super) fn oldest_open_start(&self) -> Option<i64> {
        self.read_operators(WindowOperator::oldest_open_start)
            .into_iter()
            .flatten()
            .min()
    }

    /// Failed trigger calls over the run, over all shards.
    pub(super) fn trigger_failures(&self) -> u64 {
        self.read_operators(WindowOperator::trigger_failures)
            .into_iter()
            .sum()
    }

    /// Each aggregation's plugin health over all shards: calls, failures
    /// and time added up; quarantined when any shard's instance is.
    pub(super) fn plugin_health(&self) -> Vec<PluginHealth> {
        fold_shards(
            self.read_operators(WindowOperator::plugin_health),
            |h, s| {
                h.failures += s.failures;
                h.calls += s.calls;
                h.call_time += s.call_time;
                h.quarantined = h.quarantined.take().or(s.quarantined);
            },
        )
    }

    /// Each aggregation's failure record for a checkpoint, over all shards
    /// (split again on restore by [`shard_health`]).
    pub(super) fn health_state(&self) -> Vec<HealthState> {
        fold_shards(self.read_operators(WindowOperator::health_state), |h, s| {
            h.failures += s.failures;
            h.consecutive_failures = h.consecutive_failures.max(s.consecutive_failures);
            h.quarantined = h.quarantined.take().or(s.quarantined);
        })
    }

    /// Whether any shard still finishes windows of aggregation `a` on a
    /// retiring plugin version.
    pub(super) fn retiring_anywhere(&self, a: usize) -> bool {
        self.operator.retiring(a).is_some()
            || self
                .shards
                .as_ref()
                .is_some_and(|s| s.others().any(|op| op.retiring(a).is_some()))
    }

    /// Whether the pipeline runs more than one shard.
    pub(super) fn sharded(&self) -> bool {
        self.shards.is_some()
    }

    /// How many shards the pipeline runs.
    pub(super) fn shard_count(&self) -> usize {
        self.shards.as_ref().map_or(1, Shards::count)
    }
}

/// One record per aggregation from every shard's (the first shard's
/// first), folded by `add`.
fn fold_shards<T>(per_shard: Vec<Vec<T>>, mut add: impl FnMut(&mut T, T)) -> Vec<T> {
    let mut shards = per_shard.into_iter();
    let mut folded = shards.next().unwrap_or_default();
    for shard in shards {
        for (f, s) in folded.iter_mut().zip(shard) {
            add(f, s);
        }
    }
    folded
}

/// A shard's part of a checkpoint's failure records: all of the failure
/// count goes to shard 0 (so that totals stay totals), the quarantines and
/// runs of failures to every shard.
pub(super) fn shard_health(health: &[HealthState], shard: usize) -> Vec<HealthState> {
    health
        .iter()
        .map(|h| HealthState {
            failures: if shard == 0 { h.failures } else { 0 },
            ..h.clone()
        })
        .collect()
}
