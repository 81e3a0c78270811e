//! Opening the disk tier: creates the directory layout, takes the directory
//! lock, clears `tmp/`, rebuilds the index by reading every object's header
//! (dropping files that fail a check), verifies every block of the objects
//! that an unclean shutdown may have left incomplete (the others are checked
//! block by block when first read), discards version 1 objects too large to
//! check that way, attaches meta sidecars, and records a fresh (unclean)
//! checkpoint before any write.

use super::format::{
    blocks, decode_sidecar, Checkpoint, Layout, CHECKPOINT_FILE, LOCK_FILE, META_SUFFIX,
    OBJECT_VERSION_1, V1_MAX_BODY, V1_TOO_LARGE,
};
use super::index::{Check, Entry, Index};
use super::reader::{read_head, ReadError};
use super::verify::check_all;
use super::{remove_quietly, DiskTier};
use crate::config::DiskConfig;
use crate::error::StoreError;
use crate::key::Key;
use crate::stats::OpenProgress;
use crate::sync::Signal;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Progress is reported every this many files scanned.
const PROGRESS_EVERY: u64 = 256;

/// Takes the exclusive lock on `dir/lock`.
fn take_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io("open lock file", &path, e))?;
    // SAFETY: flock only reads the descriptor, which `f` keeps open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            StoreError::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            StoreError::io("lock", &path, e)
        });
    }
    Ok(f)
}

/// The last checkpoint, if one can be read.
fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let b = fs::read(&path).ok()?;
    match Checkpoint::decode(&b) {
        Ok(c) => Some(c),
        Err(why) => {
            tracing::warn!(path = %path.display(), why, "ignoring bad checkpoint: verifying every object");
            None
        }
    }
}

/// Empties a directory of files (and stray subdirectories).
fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    for ent in fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
        let ent = ent.map_err(|e| StoreError::io("list", dir, e))?;
        let p = ent.path();
        let res = if ent.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        res.map_err(|e| StoreError::io("remove", &p, e))?;
    }
    Ok(())
}

/// Checks one object file, every block of its body too when its publish
/// sequence is at least `verify_from` (counted in `verified`); returns the
/// sequence and the file length. A version 1 object over [`V1_MAX_BODY`]
/// fails with [`V1_TOO_LARGE`].
pub(crate) fn check_object(
    path: &Path,
    key: Key,
    verify_from: u64,
    verified: &mut u64,
) -> Result<(u64, u64), ReadError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (h, _, _) = read_head(&file, key)?;
    if len != h.file_len() {
        return Err(ReadError::Corrupt(if len < h.file_len() {
            "file shorter than its header says"
        } else {
            "file longer than its header says"
        }));
    }
    if h.version == OBJECT_VERSION_1 && h.body_len > V1_MAX_BODY {
        return Err(ReadError::Corrupt(V1_TOO_LARGE));
    }
    if h.seq >= verify_from {
        *verified += 1;
        check_all(&file, &h)?;
    }
    Ok((h.seq, len))
}

impl DiskTier {
    /// Opens (or creates) the disk tier described by `cfg`.
    pub(crate) fn open(
        cfg: &DiskConfig,
        index: Arc<Index>,
        progress: &mut dyn FnMut(OpenProgress),
    ) -> Result<Arc<DiskTier>, StoreError> {
        let layout = Layout::new(&cfg.dir);
        fs::create_dir_all(&layout.dir).map_err(|e| StoreError::io("create", &layout.dir, e))?;
        let lock = take_lock(&layout.dir)?;
        let dir_file =
            File::open(&layout.dir).map_err(|e| StoreError::io("open", &layout.dir, e))?;
        for d in [&layout.tmp, &layout.objects] {
            fs::create_dir_all(d).map_err(|e| StoreError::io("create", d, e))?;
        }
        clear_dir(&layout.tmp)?;
        let checkpoint = read_checkpoint(&layout.dir);
        let tier = Arc::new(DiskTier {
            layout,
            cfg: cfg.clone(),
            index,
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            clock: AtomicU64::new(1),
            run_start: AtomicU64::new(u64::MAX),
            publishes: AtomicU64::new(0),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
            checkpointing: Mutex::new(()),
            temp_names: AtomicU64::new(0),
            dir_file,
            _lock: lock,
            evict_signal: Signal::default(),
            sync_signal: Signal::default(),
            evictions: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (max_seq, verified) = tier.scan(checkpoint, progress)?;
        tier.clock.store(max_seq + 1, Ordering::Relaxed);
        tier.run_start.store(max_seq + 1, Ordering::Relaxed);
        if tier.used() > tier.cfg.max_bytes {
            tier.evict_to(tier.cfg.max_bytes);
        }
        // Objects verified after an unclean stop may still be only in the
        // page cache (a killed process): make them durable before the
        // checkpoint says so. Everything else kept is durable already.
        if verified > 0 {
            tier.syncfs()?;
        }
        // From here on the directory is "in use" (not clean) until a clean
        // close.
        tier.write_checkpoint(Checkpoint {
            clean: false,
            synced_below: max_seq + 1,
        })?;
        Ok(tier)
    }

    /// Rebuilds the index; returns the highest publish sequence found and
    /// the number of bodies verified.
    fn scan(
        &self,
        checkpoint: Option<Checkpoint>,
        progress: &mut dyn FnMut(OpenProgress),
    ) -> Result<(u64, u64), StoreError> {
        // Objects published after the last sync of an unclean run may be
        // missing data blocks after a power loss: verify those bodies.
        let verify_from = match checkpoint {
            Some(c) if c.clean => u64::MAX,
            Some(c) => c.synced_below,
            None => 0,
        };
        let mut p = OpenProgress::default();
        let mut max_seq = 0;
        let mut sidecars = Vec::new();
        let objects = &self.layout.objects;
        let mut subdirs = Vec::new();
        for ent in fs::read_dir(objects).map_err(|e| StoreError::io("list", objects, e))? {
            let ent = ent.map_err(|e| StoreError::io("list", objects, e))?;
            let name = ent.file_name();
            let byte = name
                .to_str()
                .filter(|n| {
                    n.len() == 2
                        && n.bytes()
                            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                })
                .and_then(|n| u8::from_str_radix(n, 16).ok());
            match byte {
                Some(b) if ent.file_type().is_ok_and(|t| t.is_dir()) => subdirs.push(b),
                _ => self.drop_file(&ent.path(), "unexpected file", &mut p),
            }
        }
        subdirs.sort_unstable();
        for b in subdirs {
            let dir = self.layout.subdir(b);
            for ent in fs::read_dir(&dir).map_err(|e| StoreError::io("list", &dir, e))? {
                let ent = ent.map_err(|e| StoreError::io("list", &dir, e))?;
                let path = ent.path();
                let name = ent.file_name();
                let name = name.to_str().unwrap_or("");
                if let Some(k) = name.strip_suffix(META_SUFFIX) {
                    match Key::parse_hex(k) {
                        Some(key) if key.dir_byte() == b => sidecars.push(key),
                        _ => self.drop_file(&path, "unexpected file", &mut p),
                    }
                    continue;
                }
                let Some(key) = Key::parse_hex(name).filter(|k| k.dir_byte() == b) else {
                    self.drop_file(&path, "unexpected file", &mut p);
                    continue;
                };
                p.scanned += 1;
                match check_object(&path, key, verify_from, &mut p.verified) {
                    Ok((seq, len)) => {
                        let bytes = blocks(len);
                        self.index.lock(key).insert(
                            key,
                            Entry {
                                seq,
                                obj_bytes: bytes,
                                meta_bytes: 0,
                                access: seq,
                                // Verified now, or to be checked when read.
                                check: if seq >= verify_from {
                                    Check::Sound
                                } else {
                                    Check::Unchecked
                                },
                            },
                        );
                        self.add_used(bytes);
                        max_seq = max_seq.max(seq);
                        p.objects += 1;
                        p.bytes += len;
                    }
                    Err(ReadError::Corrupt(V1_TOO_LARGE)) => {
                        remove_quietly(&path);
                        p.outdated += 1;
                    }
                    Err(ReadError::Corrupt(why)) => self.drop_file(&path, why, &mut p),
                    Err(ReadError::Io(e)) => return Err(StoreError::io("read", &path, e)),
                }
                if p.scanned % PROGRESS_EVERY == 0 {
                    progress(p);
                }
            }
        }
        for key in sidecars {
            self.attach_sidecar(key, &mut p);
        }
        if p.outdated > 0 {
            tracing::warn!(
                objects = p.outdated,
                "discarded objects of the older disk format (version 1) over 8 MiB: their one body checksum cannot be checked block by block; they will be fetched again"
            );
        }
        p.done = true;
        progress(p);
        Ok((max_seq, p.verified))
    }

    fn drop_file(&self, path: &Path, why: &str, p: &mut OpenProgress) {
        tracing::warn!(path = %path.display(), why, "dropping file from the disk cache");
        remove_quietly(path);
        p.dropped += 1;
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps a sidecar that is sound and belongs to the object's current
    /// version; deletes it otherwise (a stale one is not counted as corrupt).
    fn attach_sidecar(&self, key: Key, p: &mut OpenProgress) {
        let path = self.layout.sidecar(key);
        let seq = self.index.lock(key).get(key).map(|e| e.seq);
        let decoded = fs::read(&path)
            .map_err(|_| "unreadable sidecar")
            .and_then(|b| decode_sidecar(&b).map(|(k, s, _)| (k, s, b.len())));
        match decoded {
            Ok((k, s, len)) if k == key && Some(s) == seq => {
                let bytes = blocks(len as u64);
                self.index.lock(key).set_meta_bytes(key, bytes);
                self.add_used(bytes);
            }
            Ok(_) => remove_quietly(&path),
            Err(why) => self.drop_file(&path, why, p),
        }
    }
}
