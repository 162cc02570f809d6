//! The state anchor's cost (issue 14; SPEC §9 sets no budget for it, so the numbers are here
//! to be read beside the work they follow: one advance per pipeline command that changed the
//! state). On a private swtpm over TCP and the machine's disk:
//!
//! - an advance: the next record made durable in its slot (write + fsync + directory fsync),
//!   then `TPM2_NV_Increment`; and its two parts;
//! - the start check of a partition whose replay store holds 100,000 records;
//! - baseline: the naive advance that re-hashes the whole replay store from its file each time
//!   (what the running hash chain in the store avoids).
//!
//! Run: `cargo bench -p sovereign-pipeline --bench anchor` (prints a Markdown table).

use sovereign_audit::anchor::{MonotonicCounter as _, ReplayHead, StateHead};
use sovereign_audit::{AuditLog, DataKey};
use sovereign_bench::{TABLE_HEADER, time};
use sovereign_governance::replay::{ReplayStore, prefix_chain};
use sovereign_measured_boot::tpm::{STATE_ANCHOR_INDEX, SharedTpm};
use sovereign_pipeline::anchor::{StateAnchor, TpmCounter, head_of};

const REPLAY_RECORDS: u64 = 100_000;

/// A new partition in `dir` anchored to `tpm`'s counter, with a replay store of `records`
/// identifiers claimed in batches of 1,000.
fn filled(
    dir: &std::path::Path,
    tpm: &SharedTpm,
    records: u64,
) -> Result<(StateAnchor, ReplayStore, AuditLog), Box<dyn std::error::Error>> {
    let counter = Box::new(TpmCounter::new(tpm.clone(), STATE_ANCHOR_INDEX));
    let (anchor, opened) = StateAnchor::open(dir, &DataKey([8; 32]), "sovereign-bench/anchor", counter)?;
    let (mut replay, _) = ReplayStore::open_existing(&dir.join("replay.store"))?;
    for batch in 0..records / 1000 {
        let ids: Vec<[u8; 32]> = (0..1000u64)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(batch * 1000 + i).to_be_bytes());
                id
            })
            .collect();
        let claims: Vec<(&str, [u8; 32])> = ids.iter().map(|id| ("id", *id)).collect();
        replay.claim_all(&claims)?;
    }
    Ok((anchor, replay, opened.audit))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records = if sovereign_bench::measuring() { REPLAY_RECORDS } else { 1_000 };
    let swtpm = sovereign_qemu::Swtpm::start()?;
    let tpm = SharedTpm::new(&swtpm.tcti());
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let (mut anchor, replay, _audit) = filled(dir.path(), &tpm, records)?;
    let mut step = 0u64;
    let mut next_head = |replay: ReplayHead| -> StateHead {
        step += 1;
        StateHead { log_size: step, log_root: [step as u8; 32], checkpoint_size: 0, replay }
    };
    let head = replay.head();
    // A row whose operation failed is no measurement: the first failure ends the benchmark.
    let failure = std::cell::RefCell::new(None::<String>);
    let check = |r: Result<(), String>| {
        if let Err(e) = r {
            failure.borrow_mut().get_or_insert(e);
        }
    };
    let failed = || failure.borrow().clone().map_or(Ok(()), Err);
    println!("{TABLE_HEADER}");
    let advance = time("advance: slot write + fsync + dir fsync, then NV_Increment", 200, || {
        check(anchor.advance(next_head(head)).map(drop))
    });
    failed()?;
    println!("{}", advance.row());
    let naive =
        time(&format!("baseline: advance re-hashing the {records}-record replay store from its file"), 50, || {
            let chain = prefix_chain(&dir.path().join("replay.store"), records).map_err(|e| e.to_string());
            check(
                chain
                    .and_then(|c| c.ok_or_else(|| "short store".to_string()))
                    .and_then(|chain| anchor.advance(next_head(ReplayHead { records, chain })).map(drop)),
            )
        });
    failed()?;
    println!("{}", naive.row());
    // Incrementing the counter under the anchor: from here on the anchor cannot advance.
    let mut nv = TpmCounter::new(tpm.clone(), STATE_ANCHOR_INDEX);
    let increment = time("part: NV_Increment + NV_Read on swtpm", 200, || check(nv.increment().map(drop)));
    failed()?;
    println!("{}", increment.row());
    let slot = dir.path().join("bench.slot");
    let write = time("part: one slot written durably (write + fsync + dir fsync)", 200, || {
        use std::io::Write as _;
        let written = std::fs::File::create(&slot)
            .and_then(|mut f| f.write_all(&[7; 169]).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::File::open(dir.path())?.sync_all());
        check(written.map_err(|e| e.to_string()))
    });
    failed()?;
    println!("{}", write.row());
    drop((anchor, replay, nv));

    // The start check on a partition whose state is really what its anchor binds.
    let second = sovereign_qemu::Swtpm::start()?;
    let second_tpm = SharedTpm::new(&second.tcti());
    let fresh = tempfile::tempdir_in(std::env::current_dir()?)?;
    let (mut anchor, replay, audit) = filled(fresh.path(), &second_tpm, records)?;
    anchor.advance(head_of(&audit, replay.head())?)?;
    drop((anchor, replay, audit));
    let start = time(&format!("start check: slots, counter, log, {records}-record replay store"), 20, || {
        let counter = Box::new(TpmCounter::new(second_tpm.clone(), STATE_ANCHOR_INDEX));
        check(StateAnchor::open(fresh.path(), &DataKey([8; 32]), "sovereign-bench/anchor", counter).map(drop))
    });
    failed()?;
    println!("{}", start.row());
    Ok(())
}
