//! The on-disk cache of compiled plugins: a restart loads the machine code
//! compiled last time instead of compiling the component again (tens of
//! milliseconds for a Rust plugin, seconds to tens of seconds for a Python
//! or JavaScript one).
//!
//! An entry is named by the SHA-256 of the component's bytes and a hash of
//! what makes compiled code compatible with this engine (wasmtime's version
//! and the settings that change code generation, such as fuel), so a new
//! plugin version, a new sluice or other limits never pick up stale code.
//!
//! Loading compiled code is trusted: wasmtime runs it as it is. So an entry
//! is only ever read from the cache directory sluice writes (created
//! private to the user), it starts with our own header holding the SHA-256
//! of the code that follows, and an entry whose checksum does not match is
//! deleted and compiled again, never loaded. Entries are written to a
//! temporary file and renamed into place, so a reader never sees half of one,
//! even with several sluice processes sharing the directory.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The environment variable that names the cache directory, or `off`.
pub const CACHE_ENV: &str = "SLUICE_PLUGIN_CACHE";

/// The first bytes of every entry: format marker and version.
const MAGIC: &[u8; 16] = b"sluice-cwasm-v1\n";
/// Header: magic, SHA-256 of the payload, payload length (u64 little-endian).
const HEADER_LEN: usize = MAGIC.len() + 32 + 8;

/// Where compiled plugins are kept, or that they are not kept at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSetting {
    /// Compile every time.
    Off,
    /// Keep compiled plugins in this directory.
    Dir(PathBuf),
}

impl CacheSetting {
    /// `off` (or an empty value) disables the cache; anything else is a
    /// directory, taken from `base` when relative.
    pub fn parse(value: &str, base: &Path) -> Self {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("off") {
            Self::Off
        } else {
            Self::Dir(base.join(value))
        }
    }

    /// The default: `$XDG_CACHE_HOME/sluice/components`, else
    /// `~/.cache/sluice/components`; off when neither is known.
    pub fn default_dir() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache"))
            });
        match base {
            Some(base) => Self::Dir(base.join("sluice").join("components")),
            None => Self::Off,
        }
    }

    /// [`CACHE_ENV`] when set, else the default: for the commands that have
    /// no pipeline config (`plugin inspect`, `plugin test`).
    pub fn from_env() -> Self {
        match std::env::var(CACHE_ENV) {
            Ok(value) => Self::parse(&value, Path::new(".")),
            Err(_) => Self::default_dir(),
        }
    }
}

/// What the cache did for one plugin, for `plugin inspect` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The cache is off: compiled.
    Off,
    /// Loaded the compiled code from this entry; nothing was compiled.
    Hit(PathBuf),
    /// Compiled and stored in this entry for next time.
    Stored(PathBuf),
    /// Compiled; the entry could not be written (the cache is best effort).
    NotStored(String),
    /// The entry was damaged or unusable (why), so it was deleted and the
    /// plugin compiled and stored again.
    Replaced(PathBuf, String),
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => write!(f, "off (compiled)"),
            Self::Hit(path) => write!(f, "hit: loaded {} (not compiled)", path.display()),
            Self::Stored(path) => write!(f, "miss: compiled and stored {}", path.display()),
            Self::NotStored(why) => write!(f, "miss: compiled, not stored ({why})"),
            Self::Replaced(path, why) => write!(
                f,
                "damaged entry ({why}): compiled again and stored {}",
                path.display()
            ),
        }
    }
}

/// The compiled-plugin cache of one engine.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: part of every entry's name.
    engine_tag: String,
}

impl ComponentCache {
    /// A cache in `dir` for code compiled by `engine`. The directory is made
    /// when the first entry is written.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        // `DefaultHasher::new` hashes alike in every run of one build of
        // sluice, which is all an entry name needs (a new build may only miss).
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for a component with these bytes.
    pub fn entry_path(&self, bytes: &[u8]) -> PathBuf {
        let digest = Sha256::digest(bytes);
        self.dir
            .join(format!("{}-{}.cwasm", hex(&digest), self.engine_tag))
    }

    /// The compiled component for `bytes`: from the cache when a sound entry
    /// is there, else compiled (and stored). Fails only when the bytes do not
    /// compile.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(bytes);
        let damaged = match std::fs::read(&path) {
            Ok(entry) => match verified_payload(&entry) {
                // SAFETY: the payload is code this cache's engine configuration
                // wrote for exactly these component bytes (the entry is named
                // by their hash and the engine's compatibility hash, in a
                // directory only sluice writes), and its checksum matches what
                // was written, so it is that code, unchanged.
                Ok(payload) => match unsafe { Component::deserialize(engine, payload) } {
                    Ok(component) => {
                        // Marks the entry used, for pruning (best effort).
                        let _ = std::fs::File::options()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                        return Ok((component, CacheOutcome::Hit(path)));
                    }
                    Err(e) => Some(format!("wasmtime refused it: {e}")),
                },
                Err(why) => Some(why),
            },
            Err(_) => None,
        };
        if let Some(why) = &damaged {
            tracing::warn!(
                entry = %path.display(),
                "plugin cache entry {} is unusable ({why}); compiling again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
        }
        let code = engine.precompile_component(bytes)?;
        // SAFETY: `code` was just produced by this engine from `bytes`.
        let component = unsafe { Component::deserialize(engine, &code)? };
        let outcome = match self.store(&path, &code) {
            Ok(()) => {
                prune(&self.dir, CACHE_BUDGET, &path);
                match damaged {
                    Some(why) => CacheOutcome::Replaced(path, why),
                    None => CacheOutcome::Stored(path),
                }
            }
            Err(e) => {
                tracing::warn!("cannot write plugin cache entry {}: {e}", path.display());
                CacheOutcome::NotStored(e.to_string())
            }
        };
        Ok((component, outcome))
    }

    /// Writes an entry atomically: a temporary file in the same directory,
    /// synced, then renamed over the entry's name.
    fn store(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".entry-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        let digest = Sha256::digest(code);
        tmp.write_all(MAGIC)?;
        tmp.write_all(&digest)?;
        tmp.write_all(&(code.len() as u64).to_le_bytes())?;
        tmp.write_all(code)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The most bytes of entries a cache directory keeps. An entry is 0.3-1.5
/// MB for a Rust plugin and about 35 MB for a Python or JavaScript one, and
/// every new build of sluice or version of a plugin adds entries; past the
/// budget the least recently used go.
pub const CACHE_BUDGET: u64 = 2 << 30;

/// Deletes the least recently used entries of `dir` (by modification time,
/// which a load refreshes) until they take at most `budget` bytes, never
/// `keep` (the entry just written). Best effort: an entry another process
/// is loading stays readable to it, and one it then misses it compiles.
pub fn prune(dir: &Path, budget: u64, keep: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= budget {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            tracing::debug!("plugin cache: removed {} (over budget)", path.display());
            total -= len;
        }
    }
}

/// The compiled code inside an entry, if its header and checksum hold.
fn verified_payload(entry: &[u8]) -> Result<&[u8], String> {
    if entry.len() < HEADER_LEN || &entry[..MAGIC.len()] != MAGIC {
        return Err("not a sluice cache entry".into());
    }
    let digest = &entry[MAGIC.len()..MAGIC.len() + 32];
    let mut len = [0u8; 8];
    len.copy_from_slice(&entry[MAGIC.len() + 32..HEADER_LEN]);
    let payload = &entry[HEADER_LEN..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err(format!(
            "truncated: {} bytes of compiled code, the header says {}",
            payload.len(),
            u64::from_le_bytes(len)
        ));
    }
    if Sha256::digest(payload).as_slice() != digest {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// Creates `dir` (and its parents); on Unix the directory itself is made
/// readable and writable by its owner only, as its contents are run as code.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the budget the least recently used entries go, oldest first,
    /// never the one just written; other files stay.
    #[test]
    fn prune_keeps_the_newest_entries_within_the_budget() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let mut paths = Vec::new();
        for i in 0..5u64 {
            let path = dir.path().join(format!("{i}-tag.cwasm"));
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(t0 + Duration::from_secs(i * 60)).unwrap();
            paths.push(path);
        }
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 1000]).unwrap();
        // The oldest is the one just written: it stays; the next two go.
        prune(dir.path(), 300, &paths[0]);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [true, false, false, true, true]);
        assert!(dir.path().join("other.txt").exists());
        prune(dir.path(), 1000, &paths[0]);
        assert_eq!(paths.iter().filter(|p| p.exists()).count(), 3);
    }

    #[test]
    fn payload_checks_catch_damage() {
        let code = b"compiled code".to_vec();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(&code));
        entry.extend_from_slice(&(code.len() as u64).to_le_bytes());
        entry.extend_from_slice(&code);
        assert_eq!(verified_payload(&entry), Ok(&code[..]));
        let mut flipped = entry.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            verified_payload(&flipped),
            Err("checksum mismatch".to_string())
        );
        assert!(verified_payload(&entry[..entry.len() - 1]).is_err());
        assert!(verified_payload(b"garbage").is_err());
    }

    #[test]
    fn off_and_paths() {
        let base = Path::new("/cfg");
        assert_eq!(CacheSetting::parse("off", base), CacheSetting::Off);
        assert_eq!(CacheSetting::parse(" ", base), CacheSetting::Off);
        assert_eq!(
            CacheSetting::parse("c", base),
            CacheSetting::Dir(PathBuf::from("/cfg/c"))
        );
        assert_eq!(
            CacheSetting::parse("/abs", base),
            CacheSetting::Dir(PathBuf::from("/abs"))
        );
    }
}
