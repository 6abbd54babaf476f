//! One run per state directory.
//!
//! A run rebuilds the live database from its newest checkpoint at start and
//! prunes old checkpoints as it goes; a second run on the same directory
//! would delete the first one's live database under it, and each would
//! then restore the other's checkpoints into outputs it did not write. So
//! a run holds an exclusive lock on `sluice.lock` in the directory for as
//! long as it lives; the operating system releases it when the process
//! ends, however it ends (a `kill -9` leaves no stale lock behind). The
//! file holds the owner's process id, for the message a second run gives.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside a state directory.
pub const LOCK_FILE: &str = "sluice.lock";

/// The lock on a state directory, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    // Never read: holding the open file is holding the lock.
    _file: File,
}

/// Why a state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "state directory {} is in use by {} (another sluice run holds its lock); two runs \
         on one state directory would destroy each other's checkpoints: stop the other run, \
         or give this one its own `state.path`",
        dir.display(),
        pid.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The state directory.
        dir: PathBuf,
        /// The process holding it, if its id could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock state directory {}: {source}", dir.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl StateLock {
    /// Locks `dir` (creating it if need be) for this process.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = StateLock::acquire(dir.path()).expect("first lock");
        // Another open file description, as another process would have.
        match StateLock::acquire(dir.path()) {
            Err(LockError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path()).expect("free again");
    }
}
