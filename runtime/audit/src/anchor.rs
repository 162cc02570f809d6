//! The state anchor: the audit log's head (size and root), the size of the last checkpoint the
//! node signed and the replay store's head (records and hash chain), bound to a TPM NV
//! monotonic counter so that state at rest cannot be rolled back.
//!
//! An anchor record is MACed with the data key and carries the counter value it belongs to.
//! Two slots hold records on the data partition. An advance writes the next record (counter
//! `C + 1`) into the slot the current one does not occupy, makes it durable, and only then
//! increments the TPM counter to `C + 1`. A power cut before the increment leaves a record one
//! ahead of the counter, which the next start accepts and finishes; a cut while the slot is
//! written leaves a torn slot, which fails its MAC and is ignored, the other slot still
//! matching the counter. Either way nothing acknowledged is lost and the node starts.
//!
//! On start, [`judge`] picks the record that matches the counter (or the one ahead of it) and
//! [`Anchored::check`] compares the state found with it: a log shorter than, or with another
//! root at, the anchored size; a replay store with fewer records or another chain; a missing
//! store; a record older than the counter (an older copy of the data partition) — each is a
//! one-line refusal. State that *grew* past the anchor is accepted: it is what was
//! acknowledged after the last advance.
//!
//! Pure: the slots' bytes, the counter's value and the stores' heads are the caller's.
//!
//! Must never: accept a record the data key did not MAC, a record older than the TPM counter,
//! or state that is shorter than or inconsistent with the record it accepted.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::logfile::DataKey;
use crate::merkle::Hash;

const MAGIC: &[u8; 20] = b"sovereign-anchor/v1\n";
const KIND_GENESIS: u8 = 0;
const KIND_COUNTED: u8 = 1;
/// Bytes of an encoded record: magic, kind, counter, log size and root, checkpoint size,
/// replay records and chain, MAC.
pub const RECORD_LEN: usize = 20 + 1 + 8 + 8 + 32 + 8 + 8 + 32 + 32;

/// A monotonic counter (the TPM's NV counter on the appliance, swtpm in the tests).
pub trait MonotonicCounter: Send {
    /// The counter's value; `None` when it was never defined or never incremented.
    fn read(&mut self) -> Result<Option<u64>, String>;
    /// Defines the counter if it does not exist yet (without incrementing it).
    fn define(&mut self) -> Result<(), String>;
    /// Increments the counter by one; returns the new value.
    fn increment(&mut self) -> Result<u64, String>;
}

/// The head of the replay store: how many records it holds and the hash chain over them
/// (`c₀ = 0³²`, `cᵢ₊₁ = SHA-256(cᵢ ‖ recordᵢ)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayHead {
    /// Records in the store.
    pub records: u64,
    /// The chain value after the last record.
    pub chain: [u8; 32],
}

/// The state an anchor binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateHead {
    /// Entries in the audit log.
    pub log_size: u64,
    /// The log's Merkle root at that size.
    pub log_root: Hash,
    /// Size of the last checkpoint the node signed and stored (0: none yet).
    pub checkpoint_size: u64,
    /// The replay store's head.
    pub replay: ReplayHead,
}

impl StateHead {
    /// The state of a new data partition: empty log, no checkpoint, empty replay store.
    pub fn empty() -> Self {
        StateHead {
            log_size: 0,
            log_root: crate::merkle::empty_root(),
            checkpoint_size: 0,
            replay: ReplayHead::default(),
        }
    }
}

impl StateHead {
    /// Whether this head could have grown from `older` (no store shorter than it was). An
    /// advance to a head that does not is refused: the anchor never binds less than it did.
    pub fn grew_from(&self, older: &StateHead) -> bool {
        self.log_size >= older.log_size
            && self.checkpoint_size >= older.checkpoint_size
            && self.replay.records >= older.replay.records
    }
}

/// One anchor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The counter value it belongs to; `None` for the genesis record written before the
    /// counter's first increment.
    pub counter: Option<u64>,
    /// The anchored state.
    pub head: StateHead,
}

fn mac_of(key: &DataKey, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    m.update(b"sovereign-anchor/v1 mac\n");
    m.update(body);
    m
}

impl Record {
    /// The record's bytes, MACed with `key`.
    pub fn encode(&self, key: &DataKey) -> Vec<u8> {
        let mut b = Vec::with_capacity(RECORD_LEN);
        b.extend_from_slice(MAGIC);
        b.push(if self.counter.is_some() { KIND_COUNTED } else { KIND_GENESIS });
        b.extend_from_slice(&self.counter.unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&self.head.log_size.to_be_bytes());
        b.extend_from_slice(&self.head.log_root);
        b.extend_from_slice(&self.head.checkpoint_size.to_be_bytes());
        b.extend_from_slice(&self.head.replay.records.to_be_bytes());
        b.extend_from_slice(&self.head.replay.chain);
        let tag: [u8; 32] = mac_of(key, &b).finalize().into_bytes().into();
        b.extend_from_slice(&tag);
        b
    }

    /// Reads a record; `None` for anything the data key did not MAC (a torn slot, another
    /// node's record, a forgery).
    pub fn decode(bytes: &[u8], key: &DataKey) -> Option<Record> {
        if bytes.len() != RECORD_LEN || &bytes[..20] != MAGIC {
            return None;
        }
        let (body, tag) = bytes.split_at(RECORD_LEN - 32);
        // Constant-time comparison through the MAC crate.
        mac_of(key, body).verify_slice(tag).ok()?;
        let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
        let hash_at = |at: usize| -> [u8; 32] { body[at..at + 32].try_into().unwrap_or([0; 32]) };
        let counter = match body[20] {
            KIND_GENESIS => None,
            KIND_COUNTED => Some(u64_at(21)),
            _ => return None,
        };
        Some(Record {
            counter,
            head: StateHead {
                log_size: u64_at(29),
                log_root: hash_at(37),
                checkpoint_size: u64_at(69),
                replay: ReplayHead { records: u64_at(77), chain: hash_at(85) },
            },
        })
    }
}

/// What [`judge`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// A new data partition on a TPM that never anchored one: write the genesis record,
    /// increment the counter, write the first counted record.
    Fresh,
    /// A genesis that a power cut interrupted: the state must still be empty; finish it.
    UnfinishedGenesis,
    /// The record to check the state against; `finish_increment` when it is one ahead of
    /// the counter (a cut between the slot write and the increment).
    Anchored(Anchored),
}

/// An accepted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchored {
    /// The record.
    pub record: Record,
    /// The counter value it belongs to.
    pub counter: u64,
    /// Whether the TPM counter is one behind and must be incremented to finish the advance.
    pub finish_increment: bool,
}

/// The state found on the data partition at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Entries in the audit log; `None` when the log file is missing.
    pub log_size: Option<u64>,
    /// The log's root at the anchored size (`None` when the log is shorter or missing).
    pub log_root_at_anchor: Option<Hash>,
    /// Size of the stored checkpoint; `None` when there is none.
    pub checkpoint_size: Option<u64>,
    /// Records in the replay store; `None` when the store is missing.
    pub replay_records: Option<u64>,
    /// The replay chain after the anchored number of records (`None` when fewer).
    pub replay_chain_at_anchor: Option<[u8; 32]>,
}

/// Picks the record the state must be checked against, from the two slots and the TPM
/// counter's value (`None`: never defined or never incremented). `state_present` says
/// whether any of the stores exists. A refusal is one line.
pub fn judge(
    slots: [Option<&[u8]>; 2],
    key: &DataKey,
    counter: Option<u64>,
    state_present: bool,
) -> Result<Judgement, String> {
    let present = slots.iter().filter(|s| s.is_some()).count();
    let records: Vec<Record> = slots.iter().flatten().filter_map(|b| Record::decode(b, key)).collect();
    let newest = records.iter().filter_map(|r| r.counter).max();
    let genesis = records.iter().any(|r| r.counter.is_none());
    match (counter, newest) {
        (None, None) if genesis => Ok(Judgement::UnfinishedGenesis),
        (None, None) if present > 0 => {
            Err(format!("state anchor: {present} anchor slot(s) on the data partition, none MACed by this node's data key"))
        }
        (None, None) if state_present => Err(
            "state anchor: the data partition holds an audit log or replay store but no anchor, and the TPM has no anchor counter (state from elsewhere)"
                .into(),
        ),
        (None, None) => Ok(Judgement::Fresh),
        (None, Some(n)) => Err(format!(
            "state anchor: the data partition is anchored at counter {n} but this TPM has no anchor counter (a cleared TPM, or another machine's disk)"
        )),
        (Some(v), None) if genesis => {
            // The counter's first increment happened; the first counted record did not.
            let _ = v;
            Ok(Judgement::UnfinishedGenesis)
        }
        (Some(v), None) => Err(format!(
            "state anchor: the TPM anchor counter is at {v} but the data partition has no valid anchor record ({present} slot(s) present): it was wiped, replaced or tampered with"
        )),
        (Some(v), Some(n)) => {
            let pick = |c: u64| records.iter().find(|r| r.counter == Some(c)).copied();
            // A record one ahead was made durable before a cut stopped the increment: it
            // anchors more than the counter's own record, so it is the one to check against.
            if let Some(record) = v.checked_add(1).and_then(pick) {
                Ok(Judgement::Anchored(Anchored { record, counter: v + 1, finish_increment: true }))
            } else if let Some(record) = pick(v) {
                Ok(Judgement::Anchored(Anchored { record, counter: v, finish_increment: false }))
            } else if n < v {
                Err(format!(
                    "state anchor: the data partition is an older copy (its newest anchor is counter {n}, the TPM counter is at {v})"
                ))
            } else {
                Err(format!(
                    "state anchor: the data partition's newest anchor (counter {n}) is ahead of the TPM counter ({v}): it was anchored by another TPM"
                ))
            }
        }
    }
}

impl Anchored {
    /// Checks the state found against the record: every store present, none shorter than
    /// or inconsistent with what was anchored. One line on refusal.
    pub fn check(&self, found: &Found) -> Result<(), String> {
        let head = &self.record.head;
        let counter = self.counter;
        let log_size = found.log_size.ok_or(format!(
            "state anchor: audit.log is missing but counter {counter} anchors {} entries",
            head.log_size
        ))?;
        if log_size < head.log_size {
            return Err(format!(
                "state anchor: the audit log holds {log_size} entries, fewer than the {} anchored at counter {counter} (it was cut or rolled back)",
                head.log_size
            ));
        }
        if found.log_root_at_anchor != Some(head.log_root) {
            return Err(format!(
                "state anchor: the audit log's first {} entries are not the ones anchored at counter {counter} (root {} expected)",
                head.log_size,
                hex::encode(head.log_root)
            ));
        }
        if head.checkpoint_size > 0 {
            match found.checkpoint_size {
                None => {
                    return Err(format!(
                        "state anchor: the node's signed checkpoint is missing but counter {counter} anchors one of size {}",
                        head.checkpoint_size
                    ));
                }
                Some(s) if s < head.checkpoint_size => {
                    return Err(format!(
                        "state anchor: the stored checkpoint is of size {s}, older than the one of size {} anchored at counter {counter}",
                        head.checkpoint_size
                    ));
                }
                Some(_) => {}
            }
        }
        let records = found.replay_records.ok_or(format!(
            "state anchor: the replay store is missing but counter {counter} anchors {} records",
            head.replay.records
        ))?;
        if records < head.replay.records {
            return Err(format!(
                "state anchor: the replay store holds {records} records, fewer than the {} anchored at counter {counter} (spent identifiers would be usable again)",
                head.replay.records
            ));
        }
        if found.replay_chain_at_anchor != Some(head.replay.chain) {
            return Err(format!(
                "state anchor: the replay store's first {} records are not the ones anchored at counter {counter}",
                head.replay.records
            ));
        }
        Ok(())
    }
}

/// The slot a record for `counter` goes to (the other one keeps the current record).
pub fn slot_for(counter: u64) -> usize {
    (counter % 2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: DataKey = DataKey([7; 32]);

    fn head(n: u64) -> StateHead {
        StateHead {
            log_size: n,
            log_root: [n as u8; 32],
            checkpoint_size: n / 2,
            replay: ReplayHead { records: n * 2, chain: [n as u8 ^ 0xff; 32] },
        }
    }

    fn counted(c: u64, n: u64) -> Vec<u8> {
        Record { counter: Some(c), head: head(n) }.encode(&KEY)
    }

    fn found(h: &StateHead) -> Found {
        Found {
            log_size: Some(h.log_size),
            log_root_at_anchor: Some(h.log_root),
            checkpoint_size: Some(h.checkpoint_size),
            replay_records: Some(h.replay.records),
            replay_chain_at_anchor: Some(h.replay.chain),
        }
    }

    fn anchored(j: Result<Judgement, String>) -> Anchored {
        match j {
            Ok(Judgement::Anchored(a)) => a,
            other => panic!("not anchored: {other:?}"),
        }
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_or_other_key_is_no_record() {
        let bytes = counted(41, 9);
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(Record::decode(&bytes, &KEY), Some(Record { counter: Some(41), head: head(9) }));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_eq!(Record::decode(&b, &KEY), None, "byte {i} flipped was accepted");
        }
        assert_eq!(Record::decode(&bytes, &DataKey([8; 32])), None);
        assert_eq!(Record::decode(&bytes[..RECORD_LEN - 1], &KEY), None);
        let genesis = Record { counter: None, head: StateHead::empty() }.encode(&KEY);
        assert_eq!(Record::decode(&genesis, &KEY).map(|r| r.counter), Some(None));
    }

    #[test]
    fn the_record_matching_the_counter_is_chosen_and_one_ahead_is_finished() {
        let (a, b) = (counted(10, 5), counted(11, 6));
        let j = anchored(judge([Some(&a), Some(&b)], &KEY, Some(11), true));
        assert_eq!((j.counter, j.finish_increment, j.record.head), (11, false, head(6)));
        // A cut between writing slot 11 and incrementing: the counter is still 10.
        let j = anchored(judge([Some(&a), Some(&b)], &KEY, Some(10), true));
        assert_eq!((j.counter, j.finish_increment, j.record.head), (11, true, head(6)));
        // A torn newer slot: the matching older record still stands.
        let torn = &b[..40];
        let j = anchored(judge([Some(&a), Some(torn)], &KEY, Some(10), true));
        assert_eq!((j.counter, j.finish_increment), (10, false));
    }

    #[test]
    fn an_older_copy_a_wipe_a_foreign_disk_and_a_cleared_tpm_are_refused_by_name() {
        let (a, b) = (counted(10, 5), counted(11, 6));
        let older = judge([Some(&a), Some(&b)], &KEY, Some(14), true).unwrap_err();
        assert!(older.contains("older copy") && older.contains("counter 11") && older.contains("at 14"), "{older}");
        let ahead = judge([Some(&a), Some(&b)], &KEY, Some(3), true).unwrap_err();
        assert!(ahead.contains("another TPM"), "{ahead}");
        let wiped = judge([None, None], &KEY, Some(11), false).unwrap_err();
        assert!(wiped.contains("wiped"), "{wiped}");
        let cleared = judge([Some(&a), Some(&b)], &KEY, None, true).unwrap_err();
        assert!(cleared.contains("no anchor counter"), "{cleared}");
        let foreign = judge([Some(&counted(1, 1)), None], &DataKey([9; 32]), None, true).unwrap_err();
        assert!(foreign.contains("none MACed"), "{foreign}");
        let unanchored = judge([None, None], &KEY, None, true).unwrap_err();
        assert!(unanchored.contains("no anchor"), "{unanchored}");
        assert_eq!(judge([None, None], &KEY, None, false), Ok(Judgement::Fresh));
    }

    #[test]
    fn a_head_grows_only_when_no_store_shrank() {
        assert!(head(5).grew_from(&head(5)) && head(6).grew_from(&head(5)));
        assert!(!head(4).grew_from(&head(5)));
        let fewer_records = StateHead { replay: ReplayHead { records: 1, chain: [0; 32] }, ..head(6) };
        assert!(!fewer_records.grew_from(&head(5)));
    }

    #[test]
    fn a_genesis_cut_before_its_first_counted_record_is_finished() {
        let g = Record { counter: None, head: StateHead::empty() }.encode(&KEY);
        assert_eq!(judge([Some(&g), None], &KEY, None, false), Ok(Judgement::UnfinishedGenesis));
        assert_eq!(judge([Some(&g), Some(&g)], &KEY, Some(1), false), Ok(Judgement::UnfinishedGenesis));
        // Once a counted record exists, a leftover genesis record is never chosen.
        let c = counted(1, 0);
        assert!(matches!(judge([Some(&g), Some(&c)], &KEY, Some(1), true), Ok(Judgement::Anchored(_))));
    }

    #[test]
    fn state_shorter_or_other_than_anchored_is_refused_and_growth_is_accepted() {
        let a = Anchored { record: Record { counter: Some(4), head: head(8) }, counter: 4, finish_increment: false };
        let same = found(&head(8));
        assert_eq!(a.check(&same), Ok(()));
        let grown = Found { log_size: Some(20), replay_records: Some(40), checkpoint_size: Some(12), ..same };
        assert_eq!(a.check(&grown), Ok(()));
        let refusals = [
            (Found { log_size: None, ..same }, "audit.log is missing"),
            (Found { log_size: Some(7), ..same }, "fewer than the 8"),
            (Found { log_root_at_anchor: Some([0; 32]), ..same }, "not the ones anchored"),
            (Found { checkpoint_size: None, ..same }, "checkpoint is missing"),
            (Found { checkpoint_size: Some(3), ..same }, "older than"),
            (Found { replay_records: None, ..same }, "replay store is missing"),
            (Found { replay_records: Some(15), ..same }, "spent identifiers"),
            (Found { replay_chain_at_anchor: None, ..same }, "first 16 records"),
        ];
        for (found, why) in refusals {
            let refusal = a.check(&found).unwrap_err();
            assert!(refusal.contains(why) && !refusal.contains('\n'), "{refusal:?} does not say {why:?}");
        }
    }
}
