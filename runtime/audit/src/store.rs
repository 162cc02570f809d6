//! The durable edge: an append-only encrypted log file with group commit.
//!
//! An append returns only after its record is on stable storage (`fdatasync`). Concurrent
//! appenders share fsyncs: the first caller to find no sync in progress writes every pending
//! record and syncs once; the others wait for that sync (group commit). A failed write or sync
//! poisons the log (every later append fails) — nothing is acknowledged that is not durable.
//! On open, a torn tail (an unacknowledged, partially written last batch) is truncated; a
//! damaged record anywhere else makes open fail, naming the record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_canonical::now_ms;

use crate::entry::{Entry, EntryKind, Severity};
use crate::logfile::{self, DataKey, FileCipher, LogFileError, Tail};
use crate::merkle::{Hash, MerkleTree, ProofError};
use crate::note::{Checkpoint, NoteVerifier, SignedNote, sign_note};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a usable log.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: LogFileError,
    },
    /// A record in the middle is damaged; the log is refused rather than silently shortened.
    #[error("{path}: record {index} at byte {offset} is damaged ({reason}); refusing to open (nothing was truncated)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Record index.
        index: u64,
        /// Byte offset.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or sync failed; the log accepts nothing more until reopened.
    #[error("audit log is poisoned by an earlier write failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// Invalid argument.
    #[error("{0}")]
    Invalid(String),
    /// A proof could not be produced.
    #[error(transparent)]
    Proof(#[from] ProofError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries in the log.
    pub entries: u64,
    /// Bytes of a torn tail that were truncated (0 when the file was clean).
    pub dropped_bytes: usize,
    /// Why the tail was dropped.
    pub reason: Option<String>,
}

struct State {
    file: Arc<File>,
    cipher: Arc<FileCipher>,
    pending: Vec<u8>,
    next_index: u64,
    durable: u64,
    syncing: bool,
    tree: MerkleTree,
    prev_tag: [u8; 16],
    session_seed: [u8; 32],
    poisoned: Option<String>,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    origin: String,
    state: Mutex<State>,
    synced: Condvar,
    stats: crate::stats::AppendStats,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).field("origin", &self.origin).finish()
    }
}

/// Replaces the file at `path` with `bytes` so that a crash or a concurrent reader sees either
/// the old contents or the new, never a mixture: written to `<file name>.tmp` beside it, synced,
/// renamed into place, the directory synced. The temporary name keeps the whole file name, so
/// two files of one directory (`audit.log.witnessed`, `audit.log.witness-seen`) written at
/// once by two threads never share one.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = temporary_path(path);
    let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    sync_dir(path)
}

/// Where [`replace_durably`] writes before the rename: `<file name>.tmp` in the same directory.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing directory of", path))
}

impl AuditLog {
    /// Creates a new, empty log at `path` (which must not exist).
    pub fn create(path: &Path, origin: &str, key: &DataKey) -> Result<Self, StoreError> {
        if origin.is_empty() || origin.len() > 255 || origin.contains(['\n', ' ']) {
            return Err(StoreError::Invalid(format!(
                "origin {origin:?} must be 1–255 bytes without spaces or newlines"
            )));
        }
        let mut log_id = [0u8; 16];
        OsRng.fill_bytes(&mut log_id);
        let cipher = FileCipher::new(key, &log_id);
        let (header, tag) = logfile::encode_header(&cipher, origin, &log_id);
        let mut file = OpenOptions::new().write(true).create_new(true).open(path).map_err(io("creating", path))?;
        file.write_all(&header).map_err(io("writing header of", path))?;
        file.sync_all().map_err(io("syncing", path))?;
        sync_dir(path)?;
        drop(file);
        Self::finish_open(path, origin.to_string(), cipher, tag, MerkleTree::new(), 0)
    }

    /// Opens an existing log, recovering from a torn tail.
    pub fn open(path: &Path, key: &DataKey) -> Result<(Self, Recovery), StoreError> {
        let bytes = fs::read(path).map_err(io("reading", path))?;
        let decoded =
            logfile::decode(&bytes, key).map_err(|source| StoreError::Format { path: path.into(), source })?;
        let (dropped_bytes, reason) = match &decoded.tail {
            Tail::Clean => (0, None),
            Tail::Torn { offset, bytes, reason } => {
                let file = OpenOptions::new().write(true).open(path).map_err(io("opening for recovery", path))?;
                file.set_len(*offset as u64).map_err(io("truncating torn tail of", path))?;
                file.sync_all().map_err(io("syncing", path))?;
                tracing::warn!(path = %path.display(), bytes, "audit log: dropped an unacknowledged torn tail: {reason}");
                (*bytes, Some(reason.clone()))
            }
            Tail::Corrupt { index, offset, reason } => {
                return Err(StoreError::Corrupt {
                    path: path.into(),
                    index: *index,
                    offset: *offset,
                    reason: reason.clone(),
                });
            }
        };
        let mut tree = MerkleTree::new();
        for e in &decoded.entries {
            tree.push(crate::merkle::leaf_hash(e));
        }
        let n = decoded.entries.len() as u64;
        let cipher = FileCipher::new(key, &decoded.header.log_id);
        let log = Self::finish_open(path, decoded.header.origin.clone(), cipher, decoded.last_tag, tree, n)?;
        Ok((log, Recovery { entries: n, dropped_bytes, reason }))
    }

    fn finish_open(
        path: &Path,
        origin: String,
        cipher: FileCipher,
        prev_tag: [u8; 16],
        tree: MerkleTree,
        n: u64,
    ) -> Result<Self, StoreError> {
        let file = OpenOptions::new().append(true).open(path).map_err(io("opening for append", path))?;
        let mut session_seed = [0u8; 32];
        OsRng.fill_bytes(&mut session_seed);
        Ok(AuditLog {
            path: path.to_path_buf(),
            origin,
            state: Mutex::new(State {
                file: Arc::new(file),
                cipher: Arc::new(cipher),
                pending: Vec::new(),
                next_index: n,
                durable: n,
                syncing: false,
                tree,
                prev_tag,
                session_seed,
                poisoned: None,
            }),
            synced: Condvar::new(),
            stats: crate::stats::AppendStats::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied state that matters:
        // durability is decided by `durable`, which only moves after a successful sync.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seed-000 API: appends `(kind, payload, severity)` now; returns the entry hash once durable.
    pub fn append(&self, kind: EntryKind, payload: &[u8], severity: Severity) -> Result<Hash, StoreError> {
        let entry = Entry::new(kind, now_ms(), severity, Vec::new(), payload.to_vec());
        Ok(self.append_entry(entry)?.1)
    }

    /// Appends one entry; returns `(index, entry hash)` once durable.
    pub fn append_entry(&self, entry: Entry) -> Result<(u64, Hash), StoreError> {
        let mut out = self.append_batch(vec![entry])?;
        out.pop().ok_or_else(|| StoreError::Invalid("empty batch".into()))
    }

    /// Appends entries with one sync (shared with concurrent callers); returns each
    /// `(index, entry hash)` once all are durable.
    pub fn append_batch(&self, entries: Vec<Entry>) -> Result<Vec<(u64, Hash)>, StoreError> {
        let started = std::time::Instant::now();
        let decisions = crate::stats::AppendStats::decision_labels(&entries);
        let out = self.append_batch_untimed(entries)?;
        self.stats.latency(started.elapsed().as_micros() as u64);
        self.stats.decisions(decisions);
        Ok(out)
    }

    /// What the log has counted since it was opened (for the runtime's metrics).
    pub fn stats(&self) -> crate::stats::StatsSnapshot {
        self.stats.snapshot()
    }

    fn append_batch_untimed(&self, entries: Vec<Entry>) -> Result<Vec<(u64, Hash)>, StoreError> {
        let mut st = self.lock();
        if let Some(p) = &st.poisoned {
            return Err(StoreError::Poisoned(p.clone()));
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let bytes = entry.encode();
            if bytes.len() > crate::entry::MAX_ENTRY_BYTES {
                return Err(StoreError::Invalid(format!("entry of {} bytes exceeds the limit", bytes.len())));
            }
            self.stats.entry(entry.kind, bytes.len());
            let index = st.next_index;
            let nonce = logfile::record_nonce(&st.session_seed, index);
            let (record, tag) = st.cipher.seal_record(index, &st.prev_tag, &nonce, &bytes);
            st.pending.extend_from_slice(&record);
            st.prev_tag = tag;
            let hash = crate::merkle::leaf_hash(&bytes);
            st.tree.push(hash);
            st.next_index += 1;
            out.push((index, hash));
        }
        let target = st.next_index;
        loop {
            if st.durable >= target {
                return Ok(out);
            }
            if let Some(p) = &st.poisoned {
                return Err(StoreError::Poisoned(p.clone()));
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the leader: write and sync everything pending, outside the lock.
            st.syncing = true;
            let batch = std::mem::take(&mut st.pending);
            let upto = st.next_index;
            let file = Arc::clone(&st.file);
            drop(st);
            let result = (&*file).write_all(&batch).and_then(|()| file.sync_data());
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(()) => st.durable = upto,
                Err(e) => st.poisoned = Some(format!("writing {}: {e}", self.path.display())),
            }
            self.synced.notify_all();
        }
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        self.lock().durable
    }

    /// Tree head over the durable entries.
    pub fn root(&self) -> Hash {
        let st = self.lock();
        st.tree.root_at(st.durable).unwrap_or_else(|_| crate::merkle::empty_root())
    }

    /// The unsigned checkpoint of the durable tree.
    pub fn checkpoint_body(&self) -> Checkpoint {
        let st = self.lock();
        Checkpoint {
            origin: self.origin.clone(),
            size: st.durable,
            root: st.tree.root_at(st.durable).unwrap_or_else(|_| crate::merkle::empty_root()),
            extensions: Vec::new(),
        }
    }

    /// Signs a checkpoint of the durable tree with the node identity (key name = origin),
    /// stores it atomically beside the log (`<log>.checkpoint`) and returns it.
    pub fn checkpoint(&self, node_key: &SigningKey) -> Result<SignedNote, StoreError> {
        let mut note = SignedNote::new(self.checkpoint_body().body());
        sign_note(&mut note, &self.origin, node_key);
        self.store_checkpoint(&note)?;
        Ok(note)
    }

    /// Stores a (possibly cosigned) checkpoint atomically as the latest one.
    pub fn store_checkpoint(&self, note: &SignedNote) -> Result<(), StoreError> {
        replace_durably(&checkpoint_path(&self.path), note.to_text().as_bytes())
    }

    /// The latest stored checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedNote>, StoreError> {
        read_checkpoint(&self.path)
    }

    /// Inclusion proof of entry `index` in the tree of `size` (both within the durable log).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        let st = self.lock();
        if size > st.durable {
            return Err(StoreError::Invalid(format!("tree size {size} exceeds the durable log size {}", st.durable)));
        }
        Ok(st.tree.inclusion_proof(index, size)?)
    }

    /// Consistency proof between two durable tree sizes.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let st = self.lock();
        if new > st.durable {
            return Err(StoreError::Invalid(format!("tree size {new} exceeds the durable log size {}", st.durable)));
        }
        Ok(st.tree.consistency_proof(old, new)?)
    }

    /// Tree head at a durable size.
    pub fn root_at(&self, size: u64) -> Result<Hash, StoreError> {
        let st = self.lock();
        if size > st.durable {
            return Err(StoreError::Invalid(format!("tree size {size} exceeds the durable log size {}", st.durable)));
        }
        Ok(st.tree.root_at(size)?)
    }

    /// Seed-000 API: re-reads the file and checks it end to end — every record authenticates
    /// in order, every entry decodes and its own signatures verify, the recomputed tree equals
    /// the in-memory one, and the stored checkpoint (if any) is signed by `node` and matches.
    /// Returns every problem found, not only the first.
    pub fn verify_integrity(&self, key: &DataKey, node: Option<&NoteVerifier>) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let (durable, memory_root) = {
            let st = self.lock();
            (st.durable, st.tree.root_at(st.durable).unwrap_or_else(|_| crate::merkle::empty_root()))
        };
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => return Err(vec![format!("reading {}: {e}", self.path.display())]),
        };
        let report =
            crate::verify::verify_log_bytes(&bytes, key, node, read_checkpoint(&self.path).ok().flatten().as_ref());
        problems.extend(report.failures().map(|c| format!("{}: {}", c.name, c.detail)));
        if report.entries < durable {
            problems.push(format!("file holds {} entries but {durable} were acknowledged", report.entries));
        } else if report.root_at(durable) != Some(memory_root) {
            problems
                .push(format!("tree head over the first {durable} entries on disk differs from the acknowledged one"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// `<log>.checkpoint`.
pub fn checkpoint_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".checkpoint");
    log.with_file_name(name)
}

/// `<log>.witnessed`: the newest checkpoint with the cosignatures the node's witnesses
/// returned (kept by the runtime's mesh).
pub fn witnessed_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".witnessed");
    log.with_file_name(name)
}

/// `<log>.witness-seen`: what this node, as a witness, has cosigned for other logs (kept by the
/// runtime's mesh, written before each cosignature leaves).
pub fn witness_seen_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".witness-seen");
    log.with_file_name(name)
}

/// Reads `<log>.witnessed` if it exists.
pub fn read_witnessed(log: &Path) -> Result<Option<SignedNote>, StoreError> {
    read_note(&witnessed_path(log))
}

/// Reads `<log>.checkpoint` if it exists.
pub fn read_checkpoint(log: &Path) -> Result<Option<SignedNote>, StoreError> {
    read_note(&checkpoint_path(log))
}

fn read_note(path: &Path) -> Result<Option<SignedNote>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            SignedNote::parse(&text).map(Some).map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}
