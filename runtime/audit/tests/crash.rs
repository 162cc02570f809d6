//! kill -9 a writer process mid-batch, in a loop: every acknowledged entry survives, the log
//! recovers and verifies, and writing continues.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sovereign_audit::{AuditLog, DataKey};

const KEY: [u8; 32] = [0x5a; 32];

#[test]
fn no_acknowledged_entry_is_lost_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let rounds = 20;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sovereign-audit-torture"))
            .arg(&path)
            .arg(hex::encode(KEY))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a varying number of acknowledgements (and so mid-batch at varying points).
        let kill_after = 20 + (round * 37) % 150;
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len > 0 && start.elapsed() > Duration::from_millis(kill_after as u64) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "writer made no progress");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let mut parts = line.split(' ');
            assert_eq!(parts.next(), Some("ACK"), "unexpected output {line:?}");
            let index: u64 = parts.next().unwrap().parse().unwrap();
            let hash = parts.next().unwrap().to_string();
            if let Some(previous) = acked.insert(index, hash.clone()) {
                panic!(
                    "index {index} acknowledged twice ({previous} then {hash}): an acknowledged entry was overwritten"
                );
            }
        }
        let (log, _recovery) = AuditLog::open(&path, &DataKey(KEY)).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let entries = sovereign_audit::logfile::decode_entries(&std::fs::read(&path).unwrap(), &DataKey(KEY)).unwrap();
        for (index, hash) in &acked {
            let entry = entries
                .get(*index as usize)
                .unwrap_or_else(|| panic!("round {round}: acknowledged entry {index} lost"));
            assert_eq!(&hex::encode(entry.hash()), hash, "round {round}: acknowledged entry {index} changed");
        }
        log.verify_integrity(&DataKey(KEY), None).unwrap_or_else(|p| panic!("round {round}: {p:?}"));
    }
    assert!(acked.len() > rounds * 10, "too few acknowledgements ({}) to mean anything", acked.len());
}
