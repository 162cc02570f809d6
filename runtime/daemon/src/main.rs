//! `sovereign-runtime`: the governance runtime daemon. For now a skeleton that proves the hand
//! over from PID 1: it reads the node keys from its standard input (a pipe from PID 1, never
//! a file), prints the node identity's public key and a readiness line, and exits cleanly when
//! PID 1 sends SIGTERM. The control API, audit log and sandbox arrive with their issues.
//!
//! Must never: write the keys anywhere, or execute anything.

#![forbid(unsafe_code)]

use std::io::Read as _;
use std::process::ExitCode;

use ed25519_dalek::SigningKey;
use nix::sys::signal::{SigSet, Signal};
use zeroize::Zeroize as _;

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() -> ExitCode {
    // Block SIGTERM first so it is delivered to sigwait, not the default handler.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    if let Err(e) = term.thread_block() {
        eprintln!("sovereign-runtime: cannot block SIGTERM: {e}");
        return ExitCode::from(2);
    }
    let mut keys = [0u8; 64];
    if let Err(e) = std::io::stdin().read_exact(&mut keys) {
        eprintln!("sovereign-runtime: FATAL: did not receive the node keys from PID 1: {e}");
        return ExitCode::from(2);
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&keys[..32]);
    let identity = SigningKey::from_bytes(&seed);
    seed.zeroize();
    let mut data_key = [0u8; 32];
    data_key.copy_from_slice(&keys[32..]);
    keys.zeroize();
    println!("sovereign-runtime: node identity {}", hex::encode(identity.verifying_key().as_bytes()));
    println!("sovereign-runtime: ready (uptime {})", uptime());
    let signal = term.wait();
    println!("sovereign-runtime: {} received, shutting down", signal.map(|s| s.as_str()).unwrap_or("signal"));
    data_key.zeroize();
    drop(identity);
    ExitCode::SUCCESS
}
