//! Opening the disk tier: creates the directory layout, takes the directory
//! lock, clears `tmp/`, rebuilds the index by reading the log's segments
//! whole (every record checked; a segment is read up to its first bad
//! record) and every object file's header (dropping files that fail a
//! check; the newest version of a key wins, tombstones remove what they
//! name), verifies every block of the objects
//! that an unclean shutdown may have left incomplete (the others are checked
//! block by block when first read), discards version 1 objects too large to
//! check that way, attaches meta sidecars, and records a fresh (unclean)
//! checkpoint before any write.
//!
//! A rebuild that takes longer than [`DiskConfig::progress_interval`] says
//! so in the log ([`RebuildLog`]): what it reads, then its progress at most
//! once per interval (bytes of the log read, directories of object files
//! checked, objects of the log indexed; with a rate and the time left), then
//! what it found.

use super::format::{
    blocks, decode_sidecar, Checkpoint, Layout, CHECKPOINT_FILE, LOCK_FILE, META_SUFFIX,
    OBJECT_VERSION_1, V1_MAX_BODY, V1_TOO_LARGE,
};
use super::index::Spot;
use super::index::{Check, Entry, Index, Place};
use super::log::{segment_name, segment_size, Log, Sealed};
use super::reader::{read_head, ReadError};
use super::segment::{decode_segment_header, walk, End, Kind, SEGMENT_HEADER_LEN};
use super::verify::check_all;
use super::{remove_quietly, DiskTier};
use crate::config::DiskConfig;
use crate::error::StoreError;
use crate::key::Key;
use crate::progress::{Bytes, Count, Eta, Progress, Report};
use crate::stats::OpenProgress;
use crate::sync::Signal;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Progress is reported every this many files scanned (to the caller's
/// callback, and to the log when a line is due).
const PROGRESS_EVERY: u64 = 256;

/// The clock is read for progress every this many log records indexed.
const RECORDS_EVERY: u64 = 4096;

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
        let mut rebuild = RebuildLog::new(&cfg.dir, cfg.progress_interval);
        let layout = Layout::new(&cfg.dir);
        fs::create_dir_all(&layout.dir).map_err(|e| StoreError::io("create", &layout.dir, e))?;
        let lock = take_lock(&layout.dir)?;
        let dir_file =
            File::open(&layout.dir).map_err(|e| StoreError::io("open", &layout.dir, e))?;
        for d in [&layout.tmp, &layout.objects, &layout.log] {
            fs::create_dir_all(d).map_err(|e| StoreError::io("create", d, e))?;
        }
        clear_dir(&layout.tmp)?;
        let checkpoint = read_checkpoint(&layout.dir);
        let log = Log::new(
            layout.log.clone(),
            segment_size(cfg.max_bytes),
            cfg.small_object,
        );
        let tier = Arc::new(DiskTier {
            log,
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
        let (max_seq, found) = tier.scan(checkpoint, &mut rebuild, progress)?;
        tier.clock.store(max_seq + 1, Ordering::Relaxed);
        tier.run_start.store(max_seq + 1, Ordering::Relaxed);
        if tier.used() > tier.cfg.max_bytes {
            tier.evict_to(tier.cfg.max_bytes);
        }
        // Objects verified after an unclean stop may still be only in the
        // page cache (a killed process): make them durable before the
        // checkpoint says so. Everything else kept is durable already.
        if found.verified > 0 {
            tier.syncfs()?;
        }
        // From here on the directory is "in use" (not clean) until a clean
        // close.
        tier.write_checkpoint(Checkpoint {
            clean: false,
            synced_below: max_seq + 1,
        })?;
        rebuild.finish(&found);
        Ok(tier)
    }

    /// Rebuilds the index; returns the highest publish sequence found and
    /// what was found.
    fn scan(
        &self,
        checkpoint: Option<Checkpoint>,
        rebuild: &mut RebuildLog<'_>,
        progress: &mut dyn FnMut(OpenProgress),
    ) -> Result<(u64, OpenProgress), StoreError> {
        // Objects published after the last sync of an unclean run may be
        // missing data blocks after a power loss: verify those bodies.
        let verify_from = match checkpoint {
            Some(c) if c.clean => u64::MAX,
            Some(c) => c.synced_below,
            None => 0,
        };
        let mut p = OpenProgress::default();
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
        rebuild.object_dirs = subdirs.len();
        let found = self.scan_log(verify_from, &mut p, rebuild, progress)?;
        let mut max_seq = found.max_seq;
        let mut sidecars = Vec::new();
        rebuild.start_files();
        let mut files = 0u64;
        for (dirs_done, b) in subdirs.into_iter().enumerate() {
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
                files += 1;
                let verified = p.verified;
                match check_object(&path, key, verify_from, &mut p.verified) {
                    Ok((seq, _)) if found.supersedes(key, seq) => {
                        // A newer record in the log, or a removal.
                        remove_quietly(&path);
                        max_seq = max_seq.max(seq);
                    }
                    Ok((seq, len)) => {
                        let bytes = blocks(len);
                        // Verified now, or to be checked when read.
                        let check = if seq >= verify_from {
                            Check::Sound
                        } else {
                            Check::Unchecked
                        };
                        self.index
                            .lock(key)
                            .insert(key, Entry::file(seq, bytes, check));
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
                if p.scanned.is_multiple_of(PROGRESS_EVERY) {
                    progress(p);
                    rebuild.files_checked(dirs_done, files);
                } else if p.verified > verified {
                    // a whole body read: worth the clock
                    rebuild.files_checked(dirs_done, files);
                }
            }
            rebuild.files_checked(dirs_done + 1, files);
        }
        for key in sidecars {
            self.attach_sidecar(key, &mut p);
        }
        self.install_records(found, &mut p, rebuild);
        if p.outdated > 0 {
            tracing::warn!(
                objects = p.outdated,
                "discarded objects of the older disk format (version 1) over 8 MiB: their one body checksum cannot be checked block by block; they will be fetched again"
            );
        }
        p.done = true;
        progress(p);
        Ok((max_seq, p))
    }

    fn drop_file(&self, path: &Path, why: &str, p: &mut OpenProgress) {
        tracing::warn!(path = %path.display(), why, "dropping file from the disk cache");
        remove_quietly(path);
        p.dropped += 1;
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every segment of the log, checking every record: the newest
    /// record of each key, the tombstones, and the segments themselves
    /// (installed in the log). A segment is read up to its first bad
    /// record; one that runs past the end of the file was cut short by a
    /// stop and is not counted as damage.
    fn scan_log(
        &self,
        verify_from: u64,
        p: &mut OpenProgress,
        rebuild: &mut RebuildLog<'_>,
        progress: &mut dyn FnMut(OpenProgress),
    ) -> Result<LogFound, StoreError> {
        let dir = &self.layout.log;
        let mut ids = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
            let ent = ent.map_err(|e| StoreError::io("list", dir, e))?;
            let name = ent.file_name();
            let id = name
                .to_str()
                .filter(|n| n.len() == 16)
                .and_then(|n| u64::from_str_radix(n, 16).ok())
                .filter(|&id| segment_name(id) == name.to_str().unwrap_or(""));
            match id {
                Some(id) if ent.file_type().is_ok_and(|t| t.is_file()) => {
                    // for progress only: a size that cannot be read counts 0
                    ids.push((id, ent.metadata().map_or(0, |m| m.len())));
                }
                _ => self.drop_file(&ent.path(), "unexpected file", p),
            }
        }
        ids.sort_unstable();
        rebuild.start_log(ids.len(), ids.iter().map(|&(_, len)| len).sum());
        let mut found = LogFound {
            verify_from,
            ..LogFound::default()
        };
        let mut sealed = Vec::new();
        let mut bytes_read = 0;
        for (i, &(id, len)) in ids.iter().enumerate() {
            self.scan_segment(id, &mut found, &mut sealed, p, progress)?;
            bytes_read += len;
            rebuild.log_read(i + 1, bytes_read);
        }
        let next_id = ids.last().map_or(1, |&(id, _)| id + 1);
        self.log.restore(sealed, next_id);
        Ok(found)
    }

    /// Reads log segment `id` into `found` (and `sealed`, unless it holds
    /// nothing or names another segment).
    fn scan_segment(
        &self,
        id: u64,
        found: &mut LogFound,
        sealed: &mut Vec<Sealed>,
        p: &mut OpenProgress,
        progress: &mut dyn FnMut(OpenProgress),
    ) -> Result<(), StoreError> {
        let path = self.log.path(id);
        let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        let b = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        if b.len() < SEGMENT_HEADER_LEN {
            // Created, then stopped before anything reached it.
            tracing::info!(path = %path.display(), "removing an empty disk log segment (a write cut short by a stop)");
            remove_quietly(&path);
            return Ok(());
        }
        if let Err(why) = decode_segment_header(&b).and_then(|named| {
            if named == id {
                Ok(())
            } else {
                Err("segment header names another segment")
            }
        }) {
            self.drop_file(&path, why, p);
            return Ok(());
        }
        let mut seg = Sealed {
            id,
            file: std::sync::Arc::new(file),
            keys: Vec::new(),
            bytes: 0,
            tick: 0,
        };
        let mut records = walk(&b, id);
        for (off, h) in records.by_ref() {
            let len = h.record_len();
            seg.bytes += len;
            seg.tick = seg.tick.max(h.seq);
            found.max_seq = found.max_seq.max(h.seq);
            match h.kind {
                Kind::Tombstone => {
                    let t = found.tombs.entry(h.key).or_insert(0);
                    *t = (*t).max(h.seq);
                }
                Kind::Object => {
                    p.scanned += 1;
                    seg.keys.push(h.key);
                    let spot = Spot {
                        seg: id,
                        off: off as u32,
                        len: len as u32,
                    };
                    // Later in the log wins among equal sequences (a
                    // meta rewrite).
                    let best = found.records.entry(h.key).or_insert((h.seq, spot));
                    if h.seq >= best.0 {
                        *best = (h.seq, spot);
                    }
                    if p.scanned.is_multiple_of(PROGRESS_EVERY) {
                        progress(*p);
                    }
                }
            }
        }
        match records.end() {
            Some(End::CutShort { offset }) => {
                tracing::info!(path = %path.display(), offset, "incomplete record at the end of a disk log segment (a write cut short by a stop): ignored");
            }
            Some(End::Damage { offset, why }) => {
                tracing::warn!(path = %path.display(), offset, why, "bad record in the disk log: the rest of this segment is dropped");
                p.dropped += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(End::Written) | None => {}
        }
        self.add_used(seg.bytes);
        sealed.push(seg);
        Ok(())
    }

    /// Indexes the records found in the log that are the newest version of
    /// their key and not removed.
    fn install_records(&self, found: LogFound, p: &mut OpenProgress, rebuild: &mut RebuildLog<'_>) {
        rebuild.start_records(found.records.len());
        for (i, (key, (seq, spot))) in found.records.into_iter().enumerate() {
            if i > 0 && (i as u64).is_multiple_of(RECORDS_EVERY) {
                rebuild.records_indexed(i);
            }
            if found.tombs.get(&key).is_some_and(|&t| t >= seq) {
                continue;
            }
            let mut g = self.index.lock(key);
            if g.get(key).is_some_and(|e| e.seq > seq) {
                continue; // an object file is newer
            }
            g.insert(
                key,
                Entry {
                    seq,
                    place: Place::Log(spot),
                },
            );
            p.objects += 1;
            p.bytes += u64::from(spot.len);
            // Every record was checked whole; those published after the
            // last checkpoint count as verified, as object files do.
            if seq >= found.verify_from {
                p.verified += 1;
            }
        }
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

/// What the log holds, found at open.
#[derive(Default)]
struct LogFound {
    /// The newest record of each key: its sequence and place.
    records: std::collections::HashMap<Key, (u64, Spot), super::index::KeyBuild>,
    /// The highest sequence each key's tombstones remove.
    tombs: std::collections::HashMap<Key, u64, super::index::KeyBuild>,
    /// The highest sequence in the log.
    max_seq: u64,
    /// Objects from this sequence on count as verified.
    verify_from: u64,
}

impl LogFound {
    /// Whether an object file of `key` version `seq` is superseded by a
    /// newer record or removed by a tombstone.
    fn supersedes(&self, key: Key, seq: u64) -> bool {
        self.tombs.get(&key).is_some_and(|&t| t >= seq)
            || self.records.get(&key).is_some_and(|&(s, _)| s > seq)
    }
}

/// The log lines of an index rebuild. Quiet while the rebuild takes less
/// than one progress interval; after that, one line saying what is read
/// (the first time a progress line is due), an info line per interval with
/// the step in progress (the log: bytes and segments read; then the object
/// files: directories done, files checked; then the objects of the log
/// indexed), percent, rate and the time left in that step, and a summary at the end (at debug level for a quick
/// rebuild). The clock is read once per log segment, once per
/// [`PROGRESS_EVERY`] object files (and after each body verified whole) and
/// once per [`RECORDS_EVERY`] objects of the log indexed.
struct RebuildLog<'a> {
    /// The directory rebuilt.
    dir: &'a Path,
    /// When the open began.
    started: Instant,
    /// The step in progress; its schedule spans the whole rebuild.
    meter: Progress,
    /// Log segments to read.
    segments: usize,
    /// Their bytes.
    log_bytes: u64,
    /// Directories of object files to read (the objects are spread evenly
    /// over them by key).
    object_dirs: usize,
}

impl<'a> RebuildLog<'a> {
    /// The rebuild of `dir`, starting now, with a progress line at most
    /// every `interval`.
    fn new(dir: &'a Path, interval: std::time::Duration) -> Self {
        let started = Instant::now();
        RebuildLog {
            dir,
            started,
            meter: Progress::started_at(started, None, interval),
            segments: 0,
            log_bytes: 0,
            object_dirs: 0,
        }
    }

    /// The log step begins: `segments` segments of `bytes` in all.
    fn start_log(&mut self, segments: usize, bytes: u64) {
        self.segments = segments;
        self.log_bytes = bytes;
        self.meter = self.meter.next_step(Some(bytes));
    }

    /// `segments` segments and `bytes` of the log are read.
    fn log_read(&mut self, segments: usize, bytes: u64) {
        let Some(r) = self.meter.due(bytes) else {
            return;
        };
        self.intro(&r);
        tracing::info!(
            "rebuilding the disk index: log {} of {} read ({}%, {} of {} segments), {}/s{}",
            Bytes(bytes),
            Bytes(self.log_bytes),
            r.percent().unwrap_or(0),
            Count(segments as u64),
            Count(self.segments as u64),
            Bytes(r.rate().unwrap_or(0.0) as u64),
            eta(&r),
        );
    }

    /// The object file step begins.
    fn start_files(&mut self) {
        self.meter = self.meter.next_step(Some(self.object_dirs as u64));
    }

    /// `dirs` directories of object files are done, `files` files checked.
    fn files_checked(&mut self, dirs: usize, files: u64) {
        let Some(r) = self.meter.due(dirs as u64) else {
            return;
        };
        self.intro(&r);
        let secs = r.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { files as f64 / secs } else { 0.0 };
        tracing::info!(
            "rebuilding the disk index: object files: {} of {} directories ({}%), {} files checked, {} files/s{}",
            Count(dirs as u64),
            Count(self.object_dirs as u64),
            r.percent().unwrap_or(0),
            Count(files),
            Count(rate as u64),
            eta(&r),
        );
    }

    /// The last step begins: indexing the newest record of each of `keys`
    /// keys found in the log.
    fn start_records(&mut self, keys: usize) {
        self.meter = self.meter.next_step(Some(keys as u64));
    }

    /// `done` of the keys found in the log are indexed.
    fn records_indexed(&mut self, done: usize) {
        let Some(r) = self.meter.due(done as u64) else {
            return;
        };
        self.intro(&r);
        tracing::info!(
            "rebuilding the disk index: {} of {} objects of the log indexed ({}%), {} objects/s{}",
            Count(done as u64),
            Count(r.total.unwrap_or(0)),
            r.percent().unwrap_or(0),
            Count(r.rate().unwrap_or(0.0) as u64),
            eta(&r),
        );
    }

    /// Before the first progress line: what the rebuild reads.
    fn intro(&self, r: &Report) {
        if r.first {
            tracing::info!(
                "rebuilding the disk index of {}: {} log segments ({}), then the object files in {} directories; progress every {}",
                self.dir.display(),
                Count(self.segments as u64),
                Bytes(self.log_bytes),
                Count(self.object_dirs as u64),
                Eta(self.meter.interval()),
            );
        }
    }

    /// The rebuild is over, having found `p`.
    fn finish(&self, p: &OpenProgress) {
        let secs = self.started.elapsed().as_secs_f64();
        if self.meter.reported() {
            tracing::info!(
                "disk index rebuilt in {secs:.1} s: {} objects, {} ({} dropped as damaged, {} bodies verified)",
                Count(p.objects),
                Bytes(p.bytes),
                Count(p.dropped),
                Count(p.verified),
            );
        } else {
            tracing::debug!(
                "disk index rebuilt in {secs:.3} s: {} objects, {} ({} dropped as damaged, {} bodies verified)",
                Count(p.objects),
                Bytes(p.bytes),
                Count(p.dropped),
                Count(p.verified),
            );
        }
    }
}

/// `, ETA 5 s`, or nothing before there is a rate to go by.
fn eta(r: &Report) -> String {
    r.eta()
        .map_or_else(String::new, |d| format!(", ETA {}", Eta(d)))
}
