//! The IO edge of the state anchor (`sovereign_audit::anchor`): the two anchor slots on the
//! data partition, the TPM NV counter they are bound to, and the checks the engine runs on
//! start and the advances it makes after every command that changed its state.
//!
//! Must never: increment the counter before the record for the new value is durable, accept
//! state the anchor refuses, or recreate a missing store outside genesis.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sovereign_audit::anchor::{Found, Judgement, MonotonicCounter, Record, ReplayHead, StateHead, judge, slot_for};
use sovereign_audit::{AuditLog, DataKey};
use sovereign_governance::replay::{ReplayStore, prefix_chain};
use sovereign_measured_boot::tpm::SharedTpm;

/// The TPM's NV counter at `index` through a session shared with the rest of the process.
#[derive(Debug, Clone)]
pub struct TpmCounter {
    tpm: SharedTpm,
    index: u32,
}

impl TpmCounter {
    /// The counter at `index` of the TPM behind `tpm`.
    pub fn new(tpm: SharedTpm, index: u32) -> Self {
        TpmCounter { tpm, index }
    }
}

impl MonotonicCounter for TpmCounter {
    fn read(&mut self) -> Result<Option<u64>, String> {
        self.tpm.with(|t| t.counter_value(self.index)).map_err(|e| format!("reading the TPM anchor counter: {e}"))
    }

    fn define(&mut self) -> Result<(), String> {
        self.tpm.with(|t| t.counter_define(self.index)).map_err(|e| format!("defining the TPM anchor counter: {e}"))
    }

    fn increment(&mut self) -> Result<u64, String> {
        self.tpm
            .with(|t| t.counter_increment(self.index))
            .map_err(|e| format!("incrementing the TPM anchor counter: {e}"))
    }
}

/// The anchor slots' file names on the data partition.
pub const SLOTS: [&str; 2] = ["anchor.0", "anchor.1"];

/// The state anchor of one data partition: where its slots are, the counter, and the last
/// record written.
pub struct StateAnchor {
    dir: PathBuf,
    key: DataKey,
    counter: Box<dyn MonotonicCounter>,
    current: Record,
}

impl std::fmt::Debug for StateAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateAnchor").field("dir", &self.dir).field("current", &self.current).finish_non_exhaustive()
    }
}

/// The stores the engine opened once the anchor accepted them.
pub struct Opened {
    /// The audit log.
    pub audit: AuditLog,
    /// The replay store's head.
    pub replay: ReplayHead,
    /// What start found and did, for the runtime's log (one line).
    pub summary: String,
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let written = File::create(path).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    written.map_err(|e| format!("writing the anchor slot {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("syncing {}: {e}", dir.display()))
}

fn read_slot(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading the anchor slot {}: {e}", path.display())),
    }
}

fn checkpoint_size(log: &Path) -> Result<Option<u64>, String> {
    let note = sovereign_audit::store::read_checkpoint(log).map_err(|e| format!("state anchor: {e}"))?;
    note.map(|n| {
        sovereign_audit::note::Checkpoint::parse_body(&n.body)
            .map(|cp| cp.size)
            .map_err(|e| format!("state anchor: the stored checkpoint does not parse: {e}"))
    })
    .transpose()
}

/// The head of `audit` now, with the stored checkpoint's size and the replay store's `replay`.
pub fn head_of(audit: &AuditLog, replay: ReplayHead) -> Result<StateHead, String> {
    let body = audit.checkpoint_body();
    Ok(StateHead {
        log_size: body.size,
        log_root: body.root,
        checkpoint_size: checkpoint_size(audit.path())?.unwrap_or(0),
        replay,
    })
}

impl StateAnchor {
    /// Checks the data partition in `dir` against the anchor and the counter, and opens the
    /// audit log (log file `audit.log`, replay store `replay.store`). A new partition on a TPM
    /// that never anchored one goes through genesis, creating both stores. Any refusal is one
    /// line and leaves the partition as it was.
    pub fn open(
        dir: &Path,
        key: &DataKey,
        origin: &str,
        mut counter: Box<dyn MonotonicCounter>,
    ) -> Result<(StateAnchor, Opened), String> {
        let log_path = dir.join("audit.log");
        let replay_path = dir.join("replay.store");
        let slots = [read_slot(&dir.join(SLOTS[0]))?, read_slot(&dir.join(SLOTS[1]))?];
        let value = counter.read()?;
        let present = log_path.exists() || replay_path.exists();
        let judgement = judge([slots[0].as_deref(), slots[1].as_deref()], key, value, present)?;
        let mut anchor = StateAnchor {
            dir: dir.to_path_buf(),
            key: key.clone(),
            counter,
            current: Record { counter: None, head: StateHead::empty() },
        };
        match judgement {
            Judgement::Fresh | Judgement::UnfinishedGenesis => {
                let genesis = Record { counter: None, head: StateHead::empty() };
                anchor.counter.define()?;
                if matches!(judgement, Judgement::Fresh) {
                    anchor.write_both(&genesis)?;
                }
                // An interrupted genesis may have created the stores; they must still be empty.
                // A log a cut left without a complete header never held an entry (no command
                // runs before genesis is finished): it is made again rather than brick the node.
                if log_path.exists()
                    && matches!(judgement, Judgement::UnfinishedGenesis)
                    && let Err(e) = AuditLog::open(&log_path, key)
                {
                    println!(
                        "sovereign-runtime: state anchor: an interrupted genesis left an unusable audit log ({e}); making it again"
                    );
                    std::fs::remove_file(&log_path).map_err(|e| format!("removing {}: {e}", log_path.display()))?;
                }
                let audit = if log_path.exists() {
                    let (log, _) = AuditLog::open(&log_path, key).map_err(|e| format!("audit log: {e}"))?;
                    if log.size() > 0 {
                        return Err(format!(
                            "state anchor: genesis was not finished but the audit log holds {} entries",
                            log.size()
                        ));
                    }
                    log
                } else {
                    AuditLog::create(&log_path, origin, key).map_err(|e| format!("audit log: {e}"))?
                };
                let (replay, _) = ReplayStore::open(&replay_path).map_err(|e| e.to_string())?;
                if !replay.is_empty() {
                    return Err(format!(
                        "state anchor: genesis was not finished but the replay store holds {} records",
                        replay.len()
                    ));
                }
                let value = match anchor.counter.read()? {
                    Some(v) => v,
                    None => anchor.counter.increment()?,
                };
                let first = Record { counter: Some(value), head: head_of(&audit, replay.head())? };
                anchor.write_both(&first)?;
                anchor.current = first;
                let summary = format!("state anchor: a new data partition, anchored at TPM counter {value}");
                Ok((anchor, Opened { audit, replay: replay.head(), summary }))
            }
            Judgement::Anchored(accepted) => {
                let head = accepted.record.head;
                let audit = if log_path.exists() {
                    Some(AuditLog::open(&log_path, key).map_err(|e| format!("audit log: {e}"))?.0)
                } else {
                    None
                };
                let replay_records = if replay_path.exists() {
                    Some(ReplayStore::open_existing(&replay_path).map_err(|e| e.to_string())?.0.head())
                } else {
                    None
                };
                let found = Found {
                    log_size: audit.as_ref().map(AuditLog::size),
                    log_root_at_anchor: audit.as_ref().and_then(|a| a.root_at(head.log_size).ok()),
                    checkpoint_size: checkpoint_size(&log_path)?,
                    replay_records: replay_records.map(|r| r.records),
                    replay_chain_at_anchor: if replay_path.exists() {
                        prefix_chain(&replay_path, head.replay.records).map_err(|e| e.to_string())?
                    } else {
                        None
                    },
                };
                accepted.check(&found)?;
                let (Some(audit), Some(replay)) = (audit, replay_records) else {
                    return Err("state anchor: a store vanished during the check".into());
                };
                if accepted.finish_increment {
                    let now = anchor.counter.increment()?;
                    if now != accepted.counter {
                        return Err(format!(
                            "state anchor: finishing the interrupted advance moved the TPM counter to {now}, not {}",
                            accepted.counter
                        ));
                    }
                }
                anchor.current = accepted.record;
                let summary = format!(
                    "state anchor: counter {}{}; audit log {} entries (anchored {}), replay store {} records (anchored {})",
                    accepted.counter,
                    if accepted.finish_increment { " (an advance cut by a power loss, finished)" } else { "" },
                    audit.size(),
                    head.log_size,
                    replay.records,
                    head.replay.records
                );
                Ok((anchor, Opened { audit, replay, summary }))
            }
        }
    }

    /// Factory provisioning: anchors the state a provisioning station put in `dir` (an audit
    /// log, and a replay store or none) to a TPM that has never anchored one. Refused when the
    /// counter was ever written or a slot exists. The runtime never calls this: on the
    /// appliance, state without an anchor is refused ([`StateAnchor::open`]).
    pub fn adopt(dir: &Path, key: &DataKey, mut counter: Box<dyn MonotonicCounter>) -> Result<Record, String> {
        if let Some(v) = counter.read()? {
            return Err(format!("state anchor: this TPM already anchors a partition (counter {v})"));
        }
        if SLOTS.iter().any(|s| dir.join(s).exists()) {
            return Err("state anchor: the partition already has anchor slots".into());
        }
        let (audit, _) = AuditLog::open(&dir.join("audit.log"), key).map_err(|e| format!("audit log: {e}"))?;
        let (replay, _) = ReplayStore::open(&dir.join("replay.store")).map_err(|e| e.to_string())?;
        let head = head_of(&audit, replay.head())?;
        counter.define()?;
        let value = counter.increment()?;
        let record = Record { counter: Some(value), head };
        let anchor = StateAnchor { dir: dir.to_path_buf(), key: key.clone(), counter, current: record };
        anchor.write_both(&record)?;
        Ok(record)
    }

    fn write_both(&self, record: &Record) -> Result<(), String> {
        let bytes = record.encode(&self.key);
        for name in SLOTS {
            write_durably(&self.dir.join(name), &bytes)?;
        }
        Ok(())
    }

    /// Anchors `head` if it differs from the anchored one: the record for the next counter
    /// value is made durable in the slot the current record does not occupy, then the TPM
    /// counter is incremented. Returns whether it advanced.
    pub fn advance(&mut self, head: StateHead) -> Result<bool, String> {
        if head == self.current.head {
            return Ok(false);
        }
        if !head.grew_from(&self.current.head) {
            return Err(format!(
                "state anchor: the state went backwards since the last anchor ({:?} after {:?})",
                (head.log_size, head.checkpoint_size, head.replay.records),
                (self.current.head.log_size, self.current.head.checkpoint_size, self.current.head.replay.records)
            ));
        }
        let current = self.current.counter.ok_or("state anchor: no counted record to advance from")?;
        let next = current.checked_add(1).ok_or("state anchor: the counter is exhausted")?;
        let record = Record { counter: Some(next), head };
        write_durably(&self.dir.join(SLOTS[slot_for(next)]), &record.encode(&self.key))?;
        let now = self.counter.increment()?;
        if now != next {
            return Err(format!(
                "state anchor: the TPM counter moved to {now}, not {next}: something else increments it"
            ));
        }
        self.current = record;
        Ok(true)
    }

    /// The anchored record.
    pub fn current(&self) -> &Record {
        &self.current
    }
}
