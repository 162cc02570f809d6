//! `sovereign-runtime`: the governance runtime daemon. It reads the node keys from its standard input (a pipe from PID 1, never
//! a file), prints the node identity's public key and a readiness line, and exits cleanly when
//! PID 1 sends SIGTERM. It serves the signed control API: status, attestation through the TPM,
//! and pipelines (the Iron Path) on the data partition, governed, sandboxed and audited.
//!
//! Must never: write the keys anywhere, execute anything, or answer a request the gate refused.

#![forbid(unsafe_code)]

use std::io::Read as _;
use std::process::ExitCode;

use ed25519_dalek::SigningKey;
use nix::sys::signal::{SigSet, Signal};
use sovereign_runtime::control;
use zeroize::Zeroize as _;

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Starts the control API on the configured virtio-serial port, if the machine has one.
/// The pipeline engine on the data partition PID 1 mounted: audit log, replay store and the
/// encrypted store, under the node keys.
fn open_engine(
    identity: &SigningKey,
    data_key: &[u8; 32],
    config: &sovereign_image::build::RuntimeConfig,
    version: u64,
) -> Result<sovereign_pipeline::Engine, String> {
    let release = RELEASE_KEY
        .ok_or("this runtime was built without SOVEREIGN_RELEASE_PUBKEY")
        .map_err(str::to_string)
        .and_then(|h| key_from_hex(h).ok_or_else(|| "release key is not an Ed25519 key".to_string()))?;
    let admin =
        key_from_hex(&config.admin_root).ok_or("runtime config: admin_root is not an Ed25519 key".to_string())?;
    let identity_hex = hex::encode(identity.verifying_key().as_bytes());
    let measurements = std::collections::BTreeMap::from([
        // PID 1 hands over the keys only after the PCRs matched the signed release policy.
        ("measured_boot".to_string(), serde_json::json!(true)),
        ("image_version".to_string(), serde_json::json!(version)),
    ]);
    sovereign_pipeline::Engine::open(sovereign_pipeline::EngineConfig {
        identity: identity.clone(),
        data_key: sovereign_audit::DataKey(*data_key),
        state_dir: std::path::Path::new(sovereign_image::build::DATA_MOUNT),
        origin: format!("sovereign-appliance/{}", &identity_hex[..16]),
        release,
        admin,
        measurements,
    })
}

const RELEASE_KEY: Option<&str> = option_env!("SOVEREIGN_RELEASE_PUBKEY");

fn key_from_hex(h: &str) -> Option<ed25519_dalek::VerifyingKey> {
    let b = hex::decode(h).ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&<[u8; 32]>::try_from(b.as_slice()).ok()?).ok()
}

fn start_control_api(identity: &SigningKey, data_key: &[u8; 32]) {
    let config: Option<sovereign_image::build::RuntimeConfig> =
        std::fs::read(sovereign_image::build::CONFIG_PATH).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let Some(config) = config else {
        println!("sovereign-runtime: control API off: runtime configuration unreadable");
        return;
    };
    let manifest = std::fs::read(sovereign_image::build::MANIFEST_PATH).unwrap_or_default();
    let version =
        serde_json::from_slice::<serde_json::Value>(&manifest).ok().and_then(|v| v["version"].as_u64()).unwrap_or(0);
    let admins: Vec<ed25519_dalek::VerifyingKey> = config
        .admins
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .filter_map(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .collect();
    let Some(port) = control::find_port(&config.control_port) else {
        println!("sovereign-runtime: control API off: no virtio-serial port named {}", config.control_port);
        return;
    };
    println!("sovereign-runtime: control API on {} ({} authorized operator keys)", port.display(), admins.len());
    let manifest_signature = std::fs::read(sovereign_image::build::MANIFEST_SIG_PATH).unwrap_or_default();
    let engine = open_engine(identity, data_key, &config, version);
    match &engine {
        Ok(e) => println!("sovereign-runtime: pipelines ready (audit log of {} entries)", e.audit().size()),
        Err(why) => println!("sovereign-runtime: pipelines unavailable: {why}"),
    }
    let node = control::Node {
        engine,
        identity: identity.clone(),
        version,
        manifest,
        manifest_signature,
        attestor: control::Attestor::appliance(),
    };
    std::thread::spawn(move || control::serve(node, admins, port));
}

fn main() -> ExitCode {
    sovereign_confine::abort_on_panic();
    // Confined before a byte of input is read: seccomp allow-list and kill-list on every
    // thread. PID 1 already made this process unprivileged; the runtime refuses to go on unless
    // the kernel reports all of it.
    if let Err(e) = sovereign_confine::confine_self() {
        println!("sovereign-runtime: FATAL: confinement: {e}");
        return ExitCode::from(2);
    }
    match sovereign_confine::read() {
        Ok(c) if c.shortfalls().is_empty() => println!(
            "sovereign-runtime: confined: uid {} gid {}, no capabilities, no_new_privs, seccomp filter ({} stacked), lockdown {}",
            c.uids[0], c.gids[0], c.seccomp_filters, c.lockdown
        ),
        Ok(c) => {
            println!("sovereign-runtime: FATAL: confinement: {}", c.shortfalls().join("; "));
            return ExitCode::from(2);
        }
        Err(e) => {
            println!("sovereign-runtime: FATAL: confinement: {e}");
            return ExitCode::from(2);
        }
    }
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
    start_control_api(&identity, &data_key);
    println!("sovereign-runtime: ready (uptime {})", uptime());
    let signal = term.wait();
    println!("sovereign-runtime: {} received, shutting down", signal.map(|s| s.as_str()).unwrap_or("signal"));
    data_key.zeroize();
    drop(identity);
    ExitCode::SUCCESS
}
