//! Crash-test writer for the audit log (used by `tests/crash.rs`, not shipped in the image).
//!
//! `sovereign-audit-torture LOG KEY_HEX` opens (or creates) the log and appends forever from
//! three threads sharing group commits; after each append is durable it prints
//! `ACK <index> <entry hash hex>` on stdout. The test kills it with SIGKILL at a random moment
//! and checks that every acknowledged entry survived.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use sovereign_audit::{AuditLog, DataKey, Entry, EntryKind, Severity};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: sovereign-audit-torture LOG KEY_HEX");
        std::process::exit(2);
    }
    let path = PathBuf::from(&args[1]);
    let mut key = [0u8; 32];
    if hex::decode_to_slice(&args[2], &mut key).is_err() {
        eprintln!("KEY_HEX must be 64 hex characters");
        std::process::exit(2);
    }
    let key = DataKey(key);
    let log = if path.exists() {
        match AuditLog::open(&path, &key) {
            Ok((log, _)) => log,
            Err(e) => {
                eprintln!("open: {e}");
                std::process::exit(1);
            }
        }
    } else {
        match AuditLog::create(&path, "torture.test/log", &key) {
            Ok(log) => log,
            Err(e) => {
                eprintln!("create: {e}");
                std::process::exit(1);
            }
        }
    };
    let log = Arc::new(log);
    let threads: Vec<_> = (0..3u8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let payload = format!("thread {t} entry {i} {}", "x".repeat((i % 97) as usize)).into_bytes();
                    let entry = Entry::new(EntryKind::Artifact, i, Severity::Info, vec![], payload);
                    match log.append_entry(entry) {
                        Ok((index, hash)) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "ACK {index} {}", hex::encode(hash));
                            let _ = out.flush();
                        }
                        Err(e) => {
                            eprintln!("append: {e}");
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
