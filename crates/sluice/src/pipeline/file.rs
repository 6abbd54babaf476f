//! A file or stdin run: lines read ahead and decoded on other threads, fed
//! to the [`Flow`] in batches, with stops on a signal and the metrics
//! endpoint served between batches.

use super::*;
use crate::progress::Progress;
use crate::status::StatusBoard;

/// How often a live stream's loop looks for a stop request while no line comes.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Runs a pipeline whose source is a file or stdin (`-`): a live stream for
/// stdin or a FIFO, a replay with read-ahead for a regular file.
pub(super) fn run_file_source(
    loaded: &LoadedConfig,
    engine: &Arc<PluginEngine>,
    path: &Path,
    batch_size: usize,
    parallelism: usize,
    stop: &stop::Stop,
) -> Result<RunSummary, Error> {
    let path = loaded.resolve(path);
    // The input first: a typo in its path is reported while the previous
    // run's outputs are still whole.
    let input = InputFile::open(&path)?;
    // An address it cannot listen on is reported before any output is touched.
    let mut metrics = FileMetrics::start(loaded)?;
    // Plugins and outputs next: a bad plugin is reported before the input is read.
    let mut flow = Flow::open(loaded, engine, (batch_size, parallelism), 1, None)?;
    flow.metrics = metrics.as_ref().map(|m| Arc::clone(&m.metrics));
    if let Some(m) = &metrics {
        flow.attach_status(Arc::clone(&m.status));
    }
    let (offset, line) = match flow.resume.take() {
        Some(SourcePosition::File { offset, line }) => (offset, line),
        Some(SourcePosition::Kafka { .. }) => {
            return Err(Error::Config(ConfigError(
                "key `state.path`: its checkpoints were taken from a Kafka source; this \
                 pipeline reads a file: use another state directory"
                    .into(),
            )));
        }
        None => (0, 0),
    };
    // Stdin or a FIFO is a live stream, not a replay: results are flushed
    // after every batch, so they come out as windows fire rather than when
    // a buffer fills.
    let live = input.is_live();
    let source = LineSource::start(input, offset, line)?;
    if let Some(m) = &mut metrics {
        m.metrics.source_opened();
    }
    let total = (!live)
        .then(|| std::fs::metadata(&path).ok().map(|m| m.len()))
        .flatten();
    let bar = loaded.pipeline.log.format == sluice_config::LogFormat::Text;
    let progress = Progress::start(total, offset, flow.summary.events_read, bar);
    if !live {
        return replay_file(flow, &path, source, batch_size, stop, metrics, progress);
    }
    live_stream(flow, &path, source, batch_size, stop, metrics, progress)
}

/// The `/metrics`, `/healthz` and `/readyz` endpoints of a file or stdin run
/// (`metrics:`): the run's counters and plugin health, published between
/// batches (a file has no partitions or consumer lag).
struct FileMetrics {
    metrics: Arc<Metrics>,
    /// The status page served beside them.
    status: Arc<StatusBoard>,
    _server: MetricsServer,
}

impl FileMetrics {
    /// Serves the endpoints if the config asks for them.
    fn start(loaded: &LoadedConfig) -> Result<Option<Self>, Error> {
        let Some(m) = &loaded.pipeline.metrics else {
            return Ok(None);
        };
        let metrics = Arc::new(Metrics::new());
        let status = StatusBoard::new(loaded);
        let server = MetricsServer::start_with_status(
            &m.listen,
            Arc::clone(&metrics),
            Some(Arc::clone(&status)),
        )?;
        Ok(Some(Self {
            metrics,
            status,
            _server: server,
        }))
    }
}

/// Publishes `flow`'s counters and plugin health to `metrics`, and to the
/// status page, if served.
fn publish_flow(metrics: Option<&FileMetrics>, flow: &mut Flow) {
    if let Some(m) = metrics {
        publish_counters(&m.metrics, flow);
        flow.publish_status(Vec::new);
    }
}

/// A live stream's run (stdin, a FIFO): lines are read on a thread of their
/// own, so that a stop request is seen while no line comes.
fn live_stream(
    mut flow: Flow,
    path: &Path,
    mut source: LineSource,
    batch_size: usize,
    stop: &stop::Stop,
    metrics: Option<FileMetrics>,
    mut progress: Progress,
) -> Result<RunSummary, Error> {
    let mut position = file_position(source.position());
    let (to_loop, batches) =
        std::sync::mpsc::sync_channel::<Result<(LineBatch, (u64, u64)), crate::error::IoError>>(1);
    // Batches done with go back to be filled again, as in `read_ahead`:
    // the channel above holds one, the reader fills one, this loop holds one.
    let (recycle, spare) = std::sync::mpsc::sync_channel::<LineBatch>(3);
    std::thread::Builder::new()
        .name("sluice-read".into())
        .spawn(move || {
            loop {
                let mut batch = spare.try_recv().unwrap_or_default();
                let read = match source.next_batch(&mut batch, batch_size) {
                    Ok(true) => Ok((batch, source.position())),
                    Ok(false) => return,
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if to_loop.send(read).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| crate::error::IoError {
            action: "starting a thread to read",
            path: path.to_path_buf(),
            source: e,
        })?;
    loop {
        if stop.requested() {
            return flow.stop_early(position, stop.signal());
        }
        let batch = match batches.recv_timeout(STOP_CHECK) {
            Ok(read) => read?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A quiet stream is checkpointed too: what it sent is safe
                // before the next line comes.
                flow.maybe_checkpoint(|| position.clone())?;
                // And the status page gets what the last publish left.
                publish_flow(metrics.as_ref(), &mut flow);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (batch, at) = batch;
        flow.apply_reloads()?;
        for (line_no, raw) in batch.iter() {
            flow.on_record(Origin::Line(line_no), 0, raw, None, false)?;
        }
        flow.on_processing_time()?;
        flow.flush()?;
        flow.batch_done()?;
        position = file_position(at);
        progress.update(at.0, flow.summary.events_read, flow.watermarks.known());
        publish_flow(metrics.as_ref(), &mut flow);
        flow.judge_dead_letters(false)?;
        flow.maybe_checkpoint(|| position.clone())?;
        // Dropped instead if the reader has spares enough or has stopped.
        let _ = recycle.try_send(batch);
    }
    // The end of a file is where a later run over a longer file would carry
    // on, so the last checkpoint is taken before the end-of-input watermark:
    // a restart after a finished run fires the same last windows again, into
    // outputs cut back to where they were.
    progress.finish();
    flow.checkpoint(position)?;
    flow.judge_dead_letters(true)?;
    flow.finish()?;
    Ok(flow.summary())
}

/// A regular file's run: lines are decoded ahead on other threads
/// ([`read_ahead`]); windows, plugins and outputs stay on this one.
fn replay_file(
    mut flow: Flow,
    path: &Path,
    source: LineSource,
    batch_size: usize,
    stop: &stop::Stop,
    metrics: Option<FileMetrics>,
    mut progress: Progress,
) -> Result<RunSummary, Error> {
    let mut position = file_position(source.position());
    // One decoder more than cores: on 2 cores, 3 decoders ran 7% faster than
    // 2 (this thread's share of the work leaves gaps that a spare fills).
    let decoders = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) + 1;
    let mut ahead =
        read_ahead::ReadAhead::start(path, source, batch_size, &flow.decoder, decoders)?;
    loop {
        if stop.requested() {
            return flow.stop_early(position, stop.signal());
        }
        let Some(batch) = ahead.next_batch()? else {
            break;
        };
        flow.apply_reloads()?;
        for (i, (line_no, raw)) in batch.lines().enumerate() {
            let decoded = batch.load(i, &mut flow.event);
            flow.on_decoded(Origin::Line(line_no), 0, raw, None, false, decoded)?;
        }
        flow.on_processing_time()?;
        flow.batch_done()?;
        position = file_position(batch.position);
        progress.update(
            batch.position.0,
            flow.summary.events_read,
            flow.watermarks.known(),
        );
        publish_flow(metrics.as_ref(), &mut flow);
        flow.judge_dead_letters(false)?;
        flow.maybe_checkpoint(|| position.clone())?;
        ahead.recycle(batch);
    }
    progress.finish();
    // As in `live_stream`: the last checkpoint precedes the end of input.
    flow.checkpoint(position)?;
    flow.judge_dead_letters(true)?;
    flow.finish()?;
    Ok(flow.summary())
}

/// A checkpoint's position `(bytes, lines)` into a file.
fn file_position((offset, line): (u64, u64)) -> SourcePosition {
    SourcePosition::File { offset, line }
}
