//! Hot reload: a running pipeline takes a new version of a plugin file
//! without a restart and without losing or double-counting an event.
//!
//! Two things ask for a reload: a change in the directory of a plugin file
//! the pipeline names (watched with `notify`, so inotify on Linux), and
//! `POST /admin/reload` on an HTTP endpoint bound to a loopback address.
//! Either way a worker thread, off the data path, reads every plugin file
//! the pipeline names and, for each one whose bytes changed, compiles the new
//! version (through the compile cache) and checks it before it may go live:
//!
//! - it is a component of the `sluice:plugin` world that imports nothing
//!   sluice does not grant (as at start-up);
//! - it opens with the aggregation's config and declares valid outputs;
//! - it is the same plugin (same `name`);
//! - it merges if the window shape needs merging;
//! - it passes the law checker (`sluice_core::plugin::laws`).
//!
//! A version that fails any of these is refused, with the reason logged and
//! (for an admin request) returned; the running version keeps serving. One
//! that passes is staged, and the pipeline swaps it in between two batches.
//! With the same state format (`state-version`) every open window's
//! accumulator is snapshotted by the old instance and restored into the new
//! one; with another, the open windows finish on the old instance while new
//! windows start on the new one (see `WindowStore::replace_plugin`). Either
//! way each event is counted exactly once, by the version that holds its
//! window. Only one older version retires at a time: a third state format is
//! refused until the windows of the second have closed.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use sluice_config::{ConfigError, ReloadConfig};
use sluice_core::plugin::grouped::{
    GroupedAggregation, InputSpec, describe_inputs, takes_one_number,
};
use sluice_core::plugin::laws::{self, LawOptions};
use sluice_core::plugin::{OutputKind, OutputSpec, check_outputs, grouped_laws};

use crate::engine::{AnyAggregator, PluginEngine};

/// Whether a version declaring `new` inputs can take the place of one
/// declaring `old`, with the pipeline's binding unchanged: one number each
/// (whatever the input's name, which `field` binds), or the same inputs.
fn same_inputs(old: &[InputSpec], new: &[InputSpec]) -> bool {
    let key = |i: &InputSpec| (i.name.clone(), i.kind, i.optional);
    (takes_one_number(old) && takes_one_number(new)) || old.iter().map(key).eq(new.iter().map(key))
}

/// How long the directory must be quiet after a change before the files are
/// read: a copy in progress shows up as many writes.
const SETTLE: Duration = Duration::from_millis(300);

/// One aggregation whose plugin is a file, as the reloader watches it.
#[derive(Debug, Clone)]
pub struct WatchedPlugin {
    /// Index of the aggregation in the pipeline.
    pub aggregation: usize,
    /// The aggregation's name, for messages.
    pub name: String,
    /// The plugin reference as configured.
    pub reference: String,
    /// The file, resolved from the config's directory.
    pub path: PathBuf,
    /// The aggregation's plugin config (JSON).
    pub config: String,
    /// Whether the window shape merges accumulators.
    pub needs_merge: bool,
    /// Whether the outputs must stay as they are (gap filling keeps per
    /// aggregation output kinds).
    pub fixed_outputs: bool,
}

/// What runs now for one watched aggregation, kept up to date by the pipeline.
#[derive(Debug, Clone)]
struct Live {
    hash: [u8; 32],
    name: String,
    version: String,
    state_version: u32,
    outputs: Vec<(String, OutputKind)>,
    /// The inputs it declares, which the pipeline's decoder is bound to.
    inputs: Vec<InputSpec>,
    /// The running version's component, kept by checkpoints if it retires.
    component: Arc<[u8]>,
    /// The label of an older version that still finishes windows.
    retiring: Option<String>,
    /// The hash of a version staged but not yet swapped in.
    pending: Option<[u8; 32]>,
    /// The hash of the last version refused, to say so again without
    /// checking it again.
    refused: Option<([u8; 32], String)>,
}

/// A checked new version, waiting for the pipeline to swap it in.
pub struct Staged {
    /// Index of the aggregation in the pipeline.
    pub aggregation: usize,
    /// The compiled, checked plugin.
    pub plugin: AnyAggregator,
    /// The aggregation's plugin config (JSON).
    pub config: String,
    hash: [u8; 32],
    component: Arc<[u8]>,
}

enum Request {
    /// Something changed in a watched directory.
    Changed,
    /// An asked-for reload; the report goes back on the sender.
    Admin(Sender<(bool, String)>),
    Stop,
}

/// Asks a running [`Reloader`] to check every plugin file now, from any
/// thread (the admin endpoint holds one).
#[derive(Clone)]
pub struct ReloadRequests {
    requests: Sender<Request>,
}

/// Why an asked-for reload has no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReport {
    /// The pipeline is stopping.
    Stopping,
    /// The check took longer than the caller would wait.
    TimedOut,
}

impl ReloadRequests {
    /// Checks every plugin file and waits up to `wait` for the report:
    /// whether every changed version was staged, and what happened to each.
    pub fn reload(&self, wait: Duration) -> Result<(bool, String), NoReport> {
        let (reply, report) = mpsc::channel();
        self.requests
            .send(Request::Admin(reply))
            .map_err(|_| NoReport::Stopping)?;
        report.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => NoReport::TimedOut,
            RecvTimeoutError::Disconnected => NoReport::Stopping,
        })
    }
}

/// The hot-reload machinery of a run: watcher, checking worker, and the
/// staged versions for the pipeline to take. Reloads are asked for by a
/// change in a watched directory or through [`Reloader::requests`].
pub struct Reloader {
    engine: Arc<PluginEngine>,
    live: Arc<Mutex<Vec<Live>>>,
    watched: Vec<WatchedPlugin>,
    staged: Receiver<Staged>,
    requests: Sender<Request>,
    // Dropped in this order: no new requests, then the worker stops.
    watcher: Option<notify::RecommendedWatcher>,
    worker: Option<JoinHandle<()>>,
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn output_names(outputs: &[OutputSpec]) -> Vec<(String, OutputKind)> {
    outputs.iter().map(|o| (o.name.clone(), o.kind)).collect()
}

impl Reloader {
    /// Starts watching and serving for the `watched` aggregations, whose
    /// running instances are `running` (in the same order).
    pub fn start(
        config: &ReloadConfig,
        engine: Arc<PluginEngine>,
        watched: Vec<WatchedPlugin>,
        running: &[&dyn GroupedAggregation],
    ) -> Result<Self, ConfigError> {
        let mut live = Vec::with_capacity(watched.len());
        for (w, instance) in watched.iter().zip(running) {
            // The bytes as they are now: what runs, give or take a change in
            // the moment since it was read, which the next change reloads.
            let bytes = std::fs::read(&w.path).unwrap_or_default();
            let info = instance.info();
            live.push(Live {
                hash: hash(&bytes),
                component: Arc::from(bytes.as_slice()),
                retiring: None,
                name: info.name.clone(),
                version: info.version.clone(),
                state_version: info.state_version,
                outputs: output_names(instance.outputs()),
                inputs: instance.inputs().to_vec(),
                pending: None,
                refused: None,
            });
        }
        let live = Arc::new(Mutex::new(live));
        let (requests, inbox) = mpsc::channel();
        let (stage, staged) = mpsc::channel();
        let watcher = if config.watch {
            Some(watch(&watched, requests.clone())?)
        } else {
            None
        };
        let worker = Worker {
            engine: Arc::clone(&engine),
            live: Arc::clone(&live),
            watched: watched.clone(),
            law_cases: config.law_cases,
            stage,
        };
        let worker = std::thread::Builder::new()
            .name("sluice-reload".into())
            .spawn(move || worker.run(&inbox))
            .map_err(|e| {
                ConfigError(format!("key `reload`: cannot start the reload worker: {e}"))
            })?;
        Ok(Self {
            engine,
            live,
            watched,
            staged,
            requests,
            watcher,
            worker: Some(worker),
        })
    }

    /// A handle that asks for a reload from another thread.
    pub fn requests(&self) -> ReloadRequests {
        ReloadRequests {
            requests: self.requests.clone(),
        }
    }

    /// The versions checked since the last call, in the order they passed.
    pub fn take_staged(&self) -> Vec<Staged> {
        self.staged.try_iter().collect()
    }

    /// Opens a staged version's instance, to be swapped in.
    pub fn open(&self, staged: &Staged) -> Result<Box<dyn GroupedAggregation>, String> {
        self.engine
            .open_any(
                &staged.plugin,
                &staged.config,
                self.aggregation_name(staged.aggregation),
            )
            .map_err(|e| e.to_string())
    }

    /// The pipeline reports how a swap ended: on success `instance` is what
    /// runs now for the staged aggregation.
    pub fn swapped(&self, staged: &Staged, instance: Option<&dyn GroupedAggregation>) {
        let Some(slot) = self
            .watched
            .iter()
            .position(|w| w.aggregation == staged.aggregation)
        else {
            return;
        };
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        let live = &mut live[slot];
        if live.pending == Some(staged.hash) {
            live.pending = None;
        }
        if let Some(instance) = instance {
            let info = instance.info();
            live.hash = staged.hash;
            live.component = Arc::clone(&staged.component);
            live.name = info.name.clone();
            live.version = info.version.clone();
            live.state_version = info.state_version;
            live.outputs = output_names(instance.outputs());
            live.inputs = instance.inputs().to_vec();
        }
    }

    /// The code of what runs now for aggregation `a` (empty for one not watched).
    pub fn running_component(&self, aggregation: usize) -> Arc<[u8]> {
        self.watched
            .iter()
            .position(|w| w.aggregation == aggregation)
            .and_then(|slot| {
                let live = self.live.lock().ok()?;
                Some(Arc::clone(&live[slot].component))
            })
            .unwrap_or_else(|| Arc::from(&[][..]))
    }

    /// The pipeline says whether an older version of aggregation `a` still
    /// finishes windows (`Some(label)`) or not.
    pub fn set_retiring(&self, aggregation: usize, retiring: Option<String>) {
        let Some(slot) = self
            .watched
            .iter()
            .position(|w| w.aggregation == aggregation)
        else {
            return;
        };
        if let Ok(mut live) = self.live.lock() {
            live[slot].retiring = retiring;
        }
    }

    /// The watched aggregation's name, for messages.
    pub fn aggregation_name(&self, aggregation: usize) -> &str {
        self.watched
            .iter()
            .find(|w| w.aggregation == aggregation)
            .map_or("?", |w| w.name.as_str())
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.watcher = None;
        let _ = self.requests.send(Request::Stop);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Watches the directories of the watched files (not the files: an editor
/// or `mv` replaces a file, and a watch on the old one would see nothing).
fn watch(
    watched: &[WatchedPlugin],
    requests: Sender<Request>,
) -> Result<notify::RecommendedWatcher, ConfigError> {
    // Absolute paths: notify may report events under the canonical path of
    // a watched directory, whatever spelling it was given.
    let files: Vec<PathBuf> = watched.iter().map(|w| canonical(&w.path)).collect();
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            f.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        })
        .collect();
    let requests = Mutex::new(requests);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = match event.kind {
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if relevant
            && event
                .paths
                .iter()
                .any(|p| files.iter().any(|f| same_file_name(p, f)))
            && let Ok(requests) = requests.lock()
        {
            let _ = requests.send(Request::Changed);
        }
    })
    .map_err(|e| {
        ConfigError(format!(
            "key `reload.watch`: cannot watch plugin files: {e}"
        ))
    })?;
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| {
                ConfigError(format!(
                    "key `reload.watch`: cannot watch {}: {e}",
                    dir.display()
                ))
            })?;
        tracing::info!(dir = %dir.display(), "watching {} for new plugin versions", dir.display());
    }
    if dirs.is_empty() {
        tracing::warn!(
            "reload.watch is on but no aggregation names a plugin file: nothing to watch"
        );
    }
    Ok(watcher)
}

/// `path` with its directory made absolute and free of links and `..`
/// (the file itself may not exist at the moment); as it is when that fails.
fn canonical(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether `event` (as notify reports it) is the watched file `file`
/// (absolute, see [`canonical`]).
fn same_file_name(event: &Path, file: &Path) -> bool {
    event.file_name() == file.file_name() && canonical(event).parent() == file.parent()
}

/// The thread that checks new versions.
struct Worker {
    engine: Arc<PluginEngine>,
    live: Arc<Mutex<Vec<Live>>>,
    watched: Vec<WatchedPlugin>,
    law_cases: usize,
    stage: Sender<Staged>,
}

impl Worker {
    fn run(&self, inbox: &Receiver<Request>) {
        loop {
            let mut admins = Vec::new();
            match inbox.recv() {
                Err(_) | Ok(Request::Stop) => return,
                Ok(Request::Admin(reply)) => admins.push(reply),
                Ok(Request::Changed) => {
                    // Let a copy in progress finish before reading the file.
                    loop {
                        match inbox.recv_timeout(SETTLE) {
                            Ok(Request::Changed) => {}
                            Ok(Request::Admin(reply)) => admins.push(reply),
                            Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                }
            }
            let (ok, report) = self.check_all();
            for reply in admins {
                let _ = reply.send((ok, report.clone()));
            }
        }
    }

    /// Checks every watched file; returns whether none was refused, and one
    /// line per aggregation.
    fn check_all(&self) -> (bool, String) {
        let mut ok = true;
        let mut report = String::new();
        for (slot, w) in self.watched.iter().enumerate() {
            let (fine, line) = self.check(slot, w);
            ok &= fine;
            if fine {
                tracing::info!(aggregation = %w.name, "{line}");
            } else {
                tracing::warn!(aggregation = %w.name, "{line}");
            }
            report.push_str(&line);
            report.push('\n');
        }
        (ok, report)
    }

    fn check(&self, slot: usize, w: &WatchedPlugin) -> (bool, String) {
        let Some(live) = self.live.lock().ok().map(|l| l[slot].clone()) else {
            return (
                false,
                format!("aggregation `{}`: reload state lost", w.name),
            );
        };
        let running = format!("{} {}", live.name, live.version);
        let bytes = match std::fs::read(&w.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return (
                    false,
                    format!(
                        "aggregation `{}`: refused: cannot read {}: {e}; {running} keeps serving",
                        w.name,
                        w.path.display()
                    ),
                );
            }
        };
        let new_hash = hash(&bytes);
        if new_hash == live.hash {
            return (
                true,
                format!(
                    "aggregation `{}`: {} unchanged ({running})",
                    w.name, w.reference
                ),
            );
        }
        if live.pending == Some(new_hash) {
            return (
                true,
                format!("aggregation `{}`: this version is already staged", w.name),
            );
        }
        if let Some((refused, why)) = &live.refused
            && *refused == new_hash
        {
            return (
                false,
                format!(
                    "aggregation `{}`: refused {} (unchanged since): {why}; {running} keeps serving",
                    w.name, w.reference
                ),
            );
        }
        match self.validate(w, &live, &bytes) {
            Ok((plugin, label, side_by_side)) => {
                let cache = plugin.cache().clone();
                let staged = Staged {
                    aggregation: w.aggregation,
                    plugin,
                    config: w.config.clone(),
                    hash: new_hash,
                    component: Arc::from(bytes.as_slice()),
                };
                if let Ok(mut all) = self.live.lock() {
                    all[slot].pending = Some(new_hash);
                }
                if self.stage.send(staged).is_err() {
                    return (
                        false,
                        format!("aggregation `{}`: the pipeline has ended", w.name),
                    );
                }
                let plan = if side_by_side {
                    format!(
                        "it takes new windows from the next batch on, while the open ones \
                         finish on {running} (another state format)"
                    )
                } else {
                    format!("it replaces {running} before the next batch")
                };
                (
                    true,
                    format!(
                        "aggregation `{}`: staged {label} from {} (compile cache {cache}); {plan}",
                        w.name, w.reference
                    ),
                )
            }
            Err(why) => {
                if let Ok(mut all) = self.live.lock() {
                    all[slot].refused = Some((new_hash, why.clone()));
                }
                (
                    false,
                    format!(
                        "aggregation `{}`: refused {}: {why}; {running} keeps serving",
                        w.name, w.reference
                    ),
                )
            }
        }
    }

    /// Compiles and checks a new version; returns it, its label, and
    /// whether it runs beside the old one (another state format).
    fn validate(
        &self,
        w: &WatchedPlugin,
        live: &Live,
        bytes: &[u8],
    ) -> Result<(AnyAggregator, String, bool), String> {
        let plugin = self
            .engine
            .compile_any(&w.reference, bytes)
            .map_err(|e| e.to_string())?;
        let mut instance = self
            .engine
            .open_any(&plugin, &w.config, &w.name)
            .map_err(|e| e.to_string())?;
        let info = instance.info().clone();
        let label = format!("{} {}", info.name, info.version);
        if info.name != live.name {
            return Err(format!(
                "it is plugin `{}`, not a new version of `{}`; restart the pipeline to change plugins",
                info.name, live.name
            ));
        }
        if info.state_version != live.state_version
            && let Some(retiring) = &live.retiring
        {
            return Err(format!(
                "{label} keeps state format {}, the running {} {} format {}, and {retiring} \
                 still finishes the windows open at the last change of format; reload again \
                 once they have closed",
                info.state_version, live.name, live.version, live.state_version
            ));
        }
        if w.needs_merge && !info.mergeable {
            return Err(format!(
                "{label} cannot merge states, which this window shape needs"
            ));
        }
        check_outputs(instance.outputs()).map_err(|e| format!("{label}: {e}"))?;
        if w.fixed_outputs && output_names(instance.outputs()) != live.outputs {
            return Err(format!(
                "{label} declares other outputs than the running version, which gap filling \
                 does not allow"
            ));
        }
        if !same_inputs(&live.inputs, instance.inputs()) {
            return Err(format!(
                "{label} takes other inputs than the running version ({} instead of {}); \
                 restart the pipeline to bind them",
                describe_inputs(instance.inputs()),
                describe_inputs(&live.inputs)
            ));
        }
        let options = LawOptions {
            cases: self.law_cases.max(1),
            seed: 0,
        };
        let report = match &plugin {
            // The 0.1 laws are stated on its own calls, one window each.
            AnyAggregator::PerWindow(compiled) => {
                let mut own = self
                    .engine
                    .open_aggregation(compiled, &w.config)
                    .map_err(|e| e.to_string())?;
                laws::check(&mut own, &options)
            }
            AnyAggregator::Grouped(_) => grouped_laws::check(instance.as_mut(), &options),
        };
        if !report.passed() {
            let failed: Vec<String> = report
                .results
                .iter()
                .filter(|r| matches!(r.outcome, laws::Outcome::Fail(_)))
                .map(ToString::to_string)
                .collect();
            return Err(format!(
                "{label} fails the law checker: {}",
                failed.join("; ")
            ));
        }
        Ok((plugin, label, info.state_version != live.state_version))
    }
}
