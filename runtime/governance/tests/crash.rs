//! The replay store under SIGKILL: a writer claims identifiers as fast as it can and is killed
//! at varying moments, 20 times over the same file. After every kill the store opens, holds
//! every identifier whose claim was acknowledged, and keeps accepting new ones.

#![allow(clippy::unwrap_used)] // test code

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sovereign_governance::replay::ReplayStore;

fn id(k: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&k.to_be_bytes());
    b
}

#[test]
fn no_acknowledged_claim_is_lost_and_the_store_always_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay");
    let mut acked_max: Option<u64> = None;
    for round in 0..20u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replay-torture"))
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse::<u64>().ok()) {
                    let _ = tx.send(n);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_millis(20 + round * 7);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        while let Ok(n) = rx.try_recv() {
            acked_max = Some(acked_max.map_or(n, |m| m.max(n)));
        }
        let (store, _) = ReplayStore::open(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if let Some(max) = acked_max {
            for k in 0..=2 * max + 1 {
                assert!(store.contains(&id(k)), "round {round}: acknowledged identifier {k} lost");
            }
        }
    }
    assert!(acked_max.unwrap_or(0) > 20, "the writer barely ran: {acked_max:?}");
}
