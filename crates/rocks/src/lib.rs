//! Checkpoints in RocksDB.
//!
//! The state directory holds a live database, `db/`, and the complete
//! checkpoints, `checkpoints/chk-<id>/`. A checkpoint writes its changes to
//! the live database in one synced write batch, then asks RocksDB for a
//! checkpoint of it: a directory of hard links to its (immutable) table files,
//! so a checkpoint costs what changed, not the whole state. This is how
//! Flink's incremental RocksDB checkpoints work too. RocksDB builds the
//! directory under a temporary name and renames it when complete, so a crash
//! part-way leaves no directory that looks complete.
//!
//! On start the newest checkpoint that reads back intact is restored and the
//! live database is rebuilt from it (whatever the live database held after
//! that checkpoint belongs to work that will be redone). Damaged checkpoints
//! are renamed `*.damaged` and skipped with a warning.
//!
//! Keys: `m` the meta; `k` + key id (4 bytes, big-endian) a key's JSON;
//! `s` + `SlotKey::encode` a window; `r` + aggregation a retiring plugin
//! version. What a checkpoint holds is `sluice_core::state`'s to say; this
//! crate only keeps it.

#![warn(missing_docs)]

pub mod inspect;
mod lock;

pub use lock::{LOCK_FILE, LockError, StateLock};

use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use sluice_core::state::{
    CheckpointDelta, CheckpointInfo, Meta, Restored, StateBackend, StateError, assemble,
    decode_record, encode_record,
};

const META: &[u8] = b"m";
const KEY_PREFIX: u8 = b'k';
const SLOT_PREFIX: u8 = b's';
/// Retiring plugin versions, by aggregation index (see `RetiringState`).
const RETIRING_PREFIX: u8 = b'r';
/// How many bytes of records one write to the live database carries.
const BATCH_BYTES: usize = 4 << 20;

/// A state directory with a live RocksDB database and its last checkpoints.
pub struct RocksBackend {
    dir: PathBuf,
    db: Option<DB>,
    keep: usize,
    /// The run's lock on the directory (none for a read-only view).
    _lock: Option<StateLock>,
}

impl RocksBackend {
    /// Opens (creating if need be) the state directory `dir`, keeping the
    /// last `keep` checkpoints; `lock` is this process's lock on it, held
    /// as long as the backend. The live database is opened by
    /// [`StateBackend::restore`], which must be called first.
    pub fn open(dir: &Path, keep: usize, lock: StateLock) -> Result<Self, StateError> {
        let backend = Self {
            dir: dir.to_path_buf(),
            db: None,
            keep: keep.max(1),
            _lock: Some(lock),
        };
        std::fs::create_dir_all(backend.checkpoints_dir())
            .map_err(|e| backend.error(format!("cannot create the state directory: {e}")))?;
        Ok(backend)
    }

    /// A view of `dir` for reading its checkpoints, with no live database.
    fn reader(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            db: None,
            keep: 1,
            _lock: None,
        }
    }

    fn checkpoints_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    fn live_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    fn error(&self, message: String) -> StateError {
        StateError {
            location: self.dir.display().to_string(),
            message,
        }
    }

    /// Complete checkpoints in `dir`, newest first.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, StateError> {
        let entries = std::fs::read_dir(self.checkpoints_dir())
            .map_err(|e| self.error(format!("cannot list checkpoints: {e}")))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((id, entry.path()));
        }
        found.sort_by_key(|c| std::cmp::Reverse(c.0));
        Ok(found)
    }

    /// Every stored checkpoint, newest first, with its meta and size: for
    /// `sluice state inspect`. Does not change the directory.
    pub fn inspect(dir: &Path) -> Result<Vec<CheckpointInfo>, StateError> {
        let backend = Self::reader(dir);
        if !backend.checkpoints_dir().is_dir() {
            return Err(backend.error("is not a sluice state directory (no checkpoints/)".into()));
        }
        Ok(backend
            .list()?
            .into_iter()
            .map(|(id, path)| CheckpointInfo {
                id,
                meta: read_meta(&path).map_err(|m| backend.error(m)),
                disk_bytes: dir_size(&path),
            })
            .collect())
    }

    /// The newest checkpoint of `dir` in full (keys and windows), read only.
    pub fn read_newest(dir: &Path) -> Result<Option<Restored>, StateError> {
        let backend = Self::reader(dir);
        for (_, path) in backend.list()? {
            if let Ok(restored) = read_checkpoint(&path) {
                return Ok(Some(restored));
            }
        }
        Ok(None)
    }

    /// Replaces the live database by a copy of checkpoint `from` (hard links
    /// for table files, which RocksDB never modifies; copies for the rest).
    fn rebuild_live(&self, from: Option<&Path>) -> Result<(), StateError> {
        let live = self.live_dir();
        if live.exists() {
            std::fs::remove_dir_all(&live)
                .map_err(|e| self.error(format!("cannot clear {}: {e}", live.display())))?;
        }
        let Some(from) = from else {
            return Ok(());
        };
        std::fs::create_dir_all(&live)
            .map_err(|e| self.error(format!("cannot create {}: {e}", live.display())))?;
        let entries = std::fs::read_dir(from)
            .map_err(|e| self.error(format!("cannot read {}: {e}", from.display())))?;
        for entry in entries.flatten() {
            let source = entry.path();
            let target = live.join(entry.file_name());
            let is_table = source.extension().is_some_and(|x| x == "sst");
            let copied = if is_table {
                std::fs::hard_link(&source, &target)
                    .or_else(|_| std::fs::copy(&source, &target).map(|_| ()))
            } else {
                std::fs::copy(&source, &target).map(|_| ())
            };
            copied.map_err(|e| {
                self.error(format!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    target.display()
                ))
            })?;
        }
        Ok(())
    }

    fn open_live(&mut self) -> Result<(), StateError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, self.live_dir())
            .map_err(|e| self.error(format!("cannot open the live database: {e}")))?;
        self.db = Some(db);
        Ok(())
    }

    fn prune(&self) -> Result<(), StateError> {
        for (_, path) in self.list()?.into_iter().skip(self.keep) {
            std::fs::remove_dir_all(&path).map_err(|e| {
                self.error(format!("cannot prune checkpoint {}: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

impl StateBackend for RocksBackend {
    fn restore(&mut self) -> Result<Option<Restored>, StateError> {
        self.db = None;
        let mut restored = None;
        for (id, path) in self.list()? {
            match read_checkpoint(&path) {
                Ok(r) => {
                    restored = Some((r, path));
                    break;
                }
                Err(why) => {
                    tracing::warn!(
                        checkpoint = id,
                        "checkpoint {} is damaged ({why}); falling back to the one before it",
                        path.display()
                    );
                    let aside = path.with_extension("damaged");
                    let _ = std::fs::remove_dir_all(&aside);
                    std::fs::rename(&path, &aside).map_err(|e| {
                        self.error(format!("cannot set aside damaged {}: {e}", path.display()))
                    })?;
                }
            }
        }
        self.rebuild_live(restored.as_ref().map(|(_, p)| p.as_path()))?;
        self.open_live()?;
        Ok(restored.map(|(r, _)| r))
    }

    fn commit(&mut self, delta: CheckpointDelta) -> Result<(), StateError> {
        let meta = delta
            .meta
            .as_ref()
            .ok_or_else(|| self.error("a checkpoint without meta".into()))?;
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| self.error("commit before restore".into()))?;
        // The live database is rebuilt from the newest checkpoint directory
        // at every start, so a checkpoint is committed only by the directory
        // below: the writes before it need neither one atomic batch nor the
        // write-ahead log (the checkpoint flushes the memtable first). They
        // go in batches of a few MB, each flushed to disk and each record
        // freed once written, so a full checkpoint does not hold its records
        // three times over in memory.
        let mut unlogged = WriteOptions::default();
        unlogged.disable_wal(true);
        let write = |batch: WriteBatch| {
            db.write_opt(batch, &unlogged)
                .map_err(|e| self.error(format!("cannot write checkpoint {}: {e}", meta.id)))
        };
        let mut batch = WriteBatch::default();
        for (id, key) in &delta.new_keys {
            let mut k = vec![KEY_PREFIX];
            k.extend_from_slice(&id.to_be_bytes());
            batch.put(k, encode_record(key)?.0);
        }
        for slot in &delta.windows.delete {
            let mut k = vec![SLOT_PREFIX];
            k.extend_from_slice(&slot.encode());
            batch.delete(k);
        }
        for a in &delta.windows.retiring_delete {
            let mut k = vec![RETIRING_PREFIX];
            k.extend_from_slice(&a.to_be_bytes());
            batch.delete(k);
        }
        for (a, bytes) in &delta.windows.retiring_put {
            let mut k = vec![RETIRING_PREFIX];
            k.extend_from_slice(&a.to_be_bytes());
            batch.put(k, bytes);
        }
        let meta_record = encode_record(meta)?.0;
        let id = meta.id;
        for (slot, bytes) in delta.windows.put {
            let mut k = vec![SLOT_PREFIX];
            k.extend_from_slice(&slot.encode());
            batch.put(k, &bytes);
            if batch.size_in_bytes() >= BATCH_BYTES {
                write(std::mem::take(&mut batch))?;
                // Flushed now rather than by the checkpoint below, the
                // memtable never holds more than one batch of records.
                db.flush()
                    .map_err(|e| self.error(format!("cannot flush checkpoint {id}: {e}")))?;
            }
        }
        batch.put(META, meta_record);
        write(batch)?;
        let target = self.checkpoints_dir().join(format!("chk-{id:012}"));
        if target.exists() {
            // Left by a run that crashed after this id's checkpoint and was
            // restored from an older one: it describes other work.
            std::fs::remove_dir_all(&target)
                .map_err(|e| self.error(format!("cannot replace {}: {e}", target.display())))?;
        }
        Checkpoint::new(db)
            .and_then(|c| c.create_checkpoint(&target))
            .map_err(|e| self.error(format!("cannot create checkpoint {id}: {e}")))?;
        sync_dir(&self.checkpoints_dir());
        self.prune()
    }

    /// The live database's SST files: every checkpoint flushes the
    /// memtable, so after a commit they hold the whole state (the
    /// checkpoint directories share them through hard links).
    fn size_bytes(&self) -> Option<u64> {
        self.db
            .as_ref()?
            .property_int_value("rocksdb.live-sst-files-size")
            .ok()
            .flatten()
    }
}

/// Reads one checkpoint directory in full and verifies it.
fn read_checkpoint(path: &Path) -> Result<Restored, String> {
    let db = open_read_only(path)?;
    let meta = meta_record(&db)?;
    let keys = prefixed(&db, KEY_PREFIX)?;
    let slots = prefixed(&db, SLOT_PREFIX)?;
    let retiring = prefixed(&db, RETIRING_PREFIX)?;
    assemble(
        &meta,
        keys.iter().map(Vec::as_slice),
        slots.iter().map(Vec::as_slice),
        retiring.iter().map(Vec::as_slice),
    )
}

fn read_meta(path: &Path) -> Result<Meta, String> {
    let meta = meta_record(&open_read_only(path)?)?;
    decode_record::<Meta>(&meta).map(|(m, _)| m)
}

fn meta_record(db: &DB) -> Result<Vec<u8>, String> {
    db.get(META)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no meta record".to_string())
}

fn open_read_only(path: &Path) -> Result<DB, String> {
    let mut options = Options::default();
    options.set_paranoid_checks(true);
    DB::open_for_read_only(&options, path, false).map_err(|e| format!("cannot open: {e}"))
}

/// The values of every key starting with `prefix`, in key order.
fn prefixed(db: &DB, prefix: u8) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(&[prefix], Direction::Forward)) {
        let (key, value) = item.map_err(|e| e.to_string())?;
        if key.first() != Some(&prefix) {
            break;
        }
        out.push(value.into_vec());
    }
    Ok(out)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Makes a rename inside `dir` durable; failure only weakens durability of
/// the newest checkpoint, which a restart then does not find.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
