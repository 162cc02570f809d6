//! The persistent replay store: single-use identifiers (execution IDs, binding and role-signature
//! nonces) that survive restarts and crashes. A claim is acknowledged only after its record is
//! durable (`fdatasync`); a crash can lose only an unacknowledged claim, which is therefore
//! still unused. Records: `id (32 bytes) ‖ SHA-256("sovereign-replay/v1\n" ‖ id)[..16]`.
//!
//! Recovery truncates a torn tail (a partial record, or a damaged *last* record — it was never
//! acknowledged); damage before the last record fails closed and leaves the file untouched. A
//! crash in the middle of a batch may keep part of the batch: identifiers are then consumed
//! without having been acknowledged — never the other way round. `tests/crash.rs` kills a
//! writer with SIGKILL 20 times and checks that no acknowledged identifier is lost.
//!
//! Must never: acknowledge a claim before it is durable, or accept an identifier twice.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sovereign_audit::anchor::ReplayHead;

use crate::canonical::sha256;
use crate::signed::Refusal;

const RECORD: usize = 48;

fn check(id: &[u8; 32]) -> [u8; 16] {
    let mut b = b"sovereign-replay/v1\n".to_vec();
    b.extend_from_slice(id);
    let d = sha256(&b);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// What opening the store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Identifiers loaded.
    pub entries: usize,
    /// Bytes of a torn tail that were cut off.
    pub truncated_bytes: usize,
}

/// The store.
#[derive(Debug)]
pub struct ReplayStore {
    path: PathBuf,
    file: File,
    seen: HashSet<[u8; 32]>,
    head: ReplayHead,
    poisoned: bool,
}

/// The replay store's head after `records` (`cᵢ₊₁ = SHA-256(cᵢ ‖ recordᵢ)`): what the state
/// anchor binds, so that a store cut short, reordered or swapped for an older copy is seen.
fn extend_chain(head: &mut ReplayHead, records: &[u8]) {
    for record in records.chunks_exact(RECORD) {
        let mut b = head.chain.to_vec();
        b.extend_from_slice(record);
        head.chain = sha256(&b);
        head.records += 1;
    }
}

/// The chain over the first `records` whole records of the store at `path`; `None` when the
/// store holds fewer. A missing store is an error.
pub fn prefix_chain(path: &Path, records: u64) -> Result<Option<[u8; 32]>, ReplayError> {
    let bytes = std::fs::read(path).map_err(|source| ReplayError::Io { path: path.into(), op: "reading", source })?;
    let Some(end) = usize::try_from(records).ok().and_then(|r| r.checked_mul(RECORD)).filter(|&e| e <= bytes.len())
    else {
        return Ok(None);
    };
    let mut head = ReplayHead::default();
    extend_chain(&mut head, &bytes[..end]);
    Ok(Some(head.chain))
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// IO on the file.
    #[error("replay store {path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was done.
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged before its last record.
    #[error("replay store {path} is damaged at byte {offset}; refusing to use it (not modified)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: usize,
    },
}

impl ReplayStore {
    /// Opens (creating if absent) and recovers the store. The appliance's engine creates its
    /// store only at the state anchor's genesis and opens it with [`ReplayStore::open_existing`].
    pub fn open(path: &Path) -> Result<(Self, Recovered), ReplayError> {
        Self::open_with(path, true)
    }

    /// Opens and recovers a store that must exist: a missing store is an error, never an
    /// empty one (which would make every spent identifier usable again).
    pub fn open_existing(path: &Path) -> Result<(Self, Recovered), ReplayError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<(Self, Recovered), ReplayError> {
        let io = |op| move |source| ReplayError::Io { path: path.to_path_buf(), op, source };
        let mut file = OpenOptions::new().read(true).append(true).create(create).open(path).map_err(io("opening"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("reading"))?;
        let full = bytes.len() / RECORD;
        let mut seen = HashSet::with_capacity(full);
        let mut good = 0usize;
        for i in 0..full {
            let rec = &bytes[i * RECORD..(i + 1) * RECORD];
            let mut id = [0u8; 32];
            id.copy_from_slice(&rec[..32]);
            if rec[32..] != check(&id) {
                if i + 1 == full && bytes.len() == full * RECORD {
                    break; // a damaged last record: torn, never acknowledged
                }
                return Err(ReplayError::Damaged { path: path.to_path_buf(), offset: i * RECORD });
            }
            seen.insert(id);
            good = i + 1;
        }
        let keep = good * RECORD;
        let truncated_bytes = bytes.len() - keep;
        if truncated_bytes > 0 {
            file.set_len(keep as u64).map_err(io("truncating a torn tail"))?;
            file.sync_all().map_err(io("syncing"))?;
        }
        let entries = seen.len();
        let mut head = ReplayHead::default();
        extend_chain(&mut head, &bytes[..keep]);
        Ok((
            ReplayStore { path: path.to_path_buf(), file, seen, head, poisoned: false },
            Recovered { entries, truncated_bytes },
        ))
    }

    /// Whether `id` was claimed.
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.seen.contains(id)
    }

    /// Claims `id` once, durably. A second claim, or any claim after a write failure, is refused.
    pub fn claim(&mut self, what: &str, id: [u8; 32]) -> Result<(), Refusal> {
        if self.poisoned {
            return Err(Refusal::new(what, "the replay store failed earlier; refusing everything (fail closed)"));
        }
        if self.seen.contains(&id) {
            return Err(Refusal::new(what, "already used (replay)"));
        }
        let mut rec = id.to_vec();
        rec.extend_from_slice(&check(&id));
        if let Err(e) = self.file.write_all(&rec).and_then(|()| self.file.sync_data()) {
            self.poisoned = true;
            return Err(Refusal::new(what, format!("replay store {} write failed: {e}", self.path.display())));
        }
        self.seen.insert(id);
        extend_chain(&mut self.head, &rec);
        Ok(())
    }

    /// Claims several identifiers at once — all or none — with one write and one `fdatasync`.
    pub fn claim_all(&mut self, claims: &[(&str, [u8; 32])]) -> Result<(), Refusal> {
        if self.poisoned {
            return Err(Refusal::new("replay store", "failed earlier; refusing everything (fail closed)"));
        }
        let mut batch: Vec<[u8; 32]> = Vec::with_capacity(claims.len());
        for (what, id) in claims {
            if self.seen.contains(id) || batch.contains(id) {
                return Err(Refusal::new(what, "already used (replay)"));
            }
            batch.push(*id);
        }
        let mut records = Vec::with_capacity(batch.len() * RECORD);
        for id in &batch {
            records.extend_from_slice(id);
            records.extend_from_slice(&check(id));
        }
        if let Err(e) = self.file.write_all(&records).and_then(|()| self.file.sync_data()) {
            self.poisoned = true;
            return Err(Refusal::new("replay store", format!("{} write failed: {e}", self.path.display())));
        }
        self.seen.extend(batch);
        extend_chain(&mut self.head, &records);
        Ok(())
    }

    /// The store's head: durable records and their chain.
    pub fn head(&self) -> ReplayHead {
        self.head
    }

    /// Number of identifiers held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_survive_reopening_and_are_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (mut s, r) = ReplayStore::open(&path).unwrap();
        assert_eq!(r, Recovered { entries: 0, truncated_bytes: 0 });
        s.claim("execution id", [1; 32]).unwrap();
        s.claim("execution id", [2; 32]).unwrap();
        assert!(s.claim("execution id", [1; 32]).unwrap_err().to_string().contains("replay"));
        drop(s);
        let (mut s, r) = ReplayStore::open(&path).unwrap();
        assert_eq!(r.entries, 2);
        assert!(s.claim("execution id", [2; 32]).is_err());
        s.claim("execution id", [3; 32]).unwrap();
    }

    #[test]
    fn the_head_chains_every_record_and_a_missing_store_is_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        assert!(ReplayStore::open_existing(&path).is_err(), "a missing store was created");
        assert!(!path.exists());
        let (mut s, _) = ReplayStore::open(&path).unwrap();
        s.claim("id", [1; 32]).unwrap();
        let one = s.head();
        s.claim_all(&[("a", [2; 32]), ("b", [3; 32])]).unwrap();
        let three = s.head();
        assert_eq!((one.records, three.records), (1, 3));
        drop(s);
        let (s, _) = ReplayStore::open_existing(&path).unwrap();
        assert_eq!(s.head(), three, "reopening finds the same head");
        assert_eq!(prefix_chain(&path, 1).unwrap(), Some(one.chain));
        assert_eq!(prefix_chain(&path, 3).unwrap(), Some(three.chain));
        assert_eq!(prefix_chain(&path, 4).unwrap(), None);
        // Two records swapped: same count, another chain.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[48..144].rotate_left(48);
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(prefix_chain(&path, 3).unwrap(), Some(three.chain));
    }

    #[test]
    fn batched_claims_are_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (mut s, _) = ReplayStore::open(&path).unwrap();
        s.claim_all(&[("a", [1; 32]), ("b", [2; 32])]).unwrap();
        // One already used: nothing of the batch is claimed.
        assert!(s.claim_all(&[("c", [3; 32]), ("b", [2; 32])]).unwrap_err().to_string().starts_with("b:"));
        assert!(!s.contains(&[3; 32]));
        // A duplicate inside one batch is a replay too.
        assert!(s.claim_all(&[("d", [4; 32]), ("d", [4; 32])]).is_err());
        drop(s);
        let (s, r) = ReplayStore::open(&path).unwrap();
        assert_eq!(r.entries, 2);
        assert!(s.contains(&[1; 32]) && s.contains(&[2; 32]) && !s.contains(&[4; 32]));
    }

    #[test]
    fn torn_tails_are_cut_and_earlier_damage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (mut s, _) = ReplayStore::open(&path).unwrap();
        for i in 0..3u8 {
            s.claim("id", [i; 32]).unwrap();
        }
        drop(s);
        let good = std::fs::read(&path).unwrap();
        // A partial record at the end: cut, the acknowledged ones kept.
        let mut torn = good.clone();
        torn.extend_from_slice(&[9; 20]);
        std::fs::write(&path, &torn).unwrap();
        let (s, r) = ReplayStore::open(&path).unwrap();
        assert_eq!(r, Recovered { entries: 3, truncated_bytes: 20 });
        assert!(s.contains(&[2; 32]));
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), good);
        // Damage in the middle: refused, file untouched.
        let mut damaged = good.clone();
        damaged[50] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(ReplayStore::open(&path), Err(ReplayError::Damaged { offset: 48, .. })));
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }
}
