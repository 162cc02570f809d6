//! The image tool's side of the mesh: `sovereign-image swarm-key` writes a key libp2p's pnet
//! reads (owner-only, never over an existing file), and a build refuses mesh settings (and a
//! licence rule) that do not check before it reads a single input.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

use sovereign_boot_contract::RuntimeConfig;
use sovereign_boot_contract::network::{Interface, MeshSettings};
use sovereign_image::build::{self, BuildInput, Kernel, Tamper};
use sovereign_mesh::swarm_key::SwarmKey;

#[test]
fn swarm_key_writes_an_owner_only_ipfs_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swarm.key");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sovereign-image")).arg("swarm-key").arg("--out").arg(&path).output().unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let text = std::fs::read(&path).unwrap();
    let key = SwarmKey::parse(&text).unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains(&key.fingerprint()), "{stdout}");
    assert!(!stdout.contains(&hex::encode(key.bytes())), "the key itself was printed");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let second = run();
    assert!(!second.status.success(), "overwrote an existing key");
    assert_eq!(std::fs::read(&path).unwrap(), text, "the existing key changed");
}

fn settings() -> MeshSettings {
    MeshSettings {
        interfaces: vec![Interface { mac: "52:54:00:00:00:01".into(), address: "10.77.0.1/24".into() }],
        routes: Vec::new(),
        port: 4001,
        swarm_key: SwarmKey::from_bytes([9; 32]).to_file().to_string(),
        peers: vec!["/ip4/10.77.0.2/tcp/4001".into()],
        ak_ca: String::new(),
        ek_roots: String::new(),
        platform_profile: String::new(),
        admission_ttl_secs: 600,
        witness_interval_secs: 30,
    }
}

#[test]
fn a_build_refuses_mesh_settings_that_do_not_check_naming_the_field() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = sovereign_image::keys::generate(&keys_dir.path().join("keys")).unwrap();
    // Every input file is one that does not exist (binaries, kernel, the EFI stub, the boot
    // loader): the mesh settings must be refused before any of them is read.
    let missing = PathBuf::from("/nonexistent");
    let input = |mesh: MeshSettings| BuildInput {
        init: missing.clone(),
        runtime: missing.clone(),
        kernel: Kernel { image: missing.clone(), root: missing.clone(), release: "none".into() },
        version: 1,
        cmdline: build::DEFAULT_CMDLINE.into(),
        config: RuntimeConfig { mesh: Some(mesh), ..RuntimeConfig::default() },
        gpu_driver: None,
        update_policy: build::DEFAULT_UPDATE_POLICY.into(),
        stub: missing.clone(),
        loader: missing.clone(),
        secure_boot: None,
    };
    let out = tempfile::tempdir().unwrap();
    let refusal = |mesh: MeshSettings| {
        format!("{:#}", build::build_with(&input(mesh), &keys, out.path(), &Tamper::default()).unwrap_err())
    };
    let e = refusal(MeshSettings { swarm_key: "not a key".into(), ..settings() });
    assert!(e.contains("the mesh settings: swarm key"), "{e}");
    let e = refusal(MeshSettings {
        interfaces: vec![Interface { mac: "52:54".into(), address: "10.77.0.1/24".into() }],
        ..settings()
    });
    assert!(e.contains("the mesh settings") && e.contains("not a MAC address"), "{e}");
    let e = refusal(MeshSettings { peers: vec!["/dns/peer/tcp/1".into()], ..settings() });
    assert!(e.contains("the mesh settings") && e.contains("/ip4/ADDRESS/tcp/PORT"), "{e}");
    // Settings that check get past that point (and fail on the missing binaries instead).
    let e = refusal(settings());
    assert!(!e.contains("the mesh settings"), "{e}");

    // A licence rule that does not parse is refused the same way, by what is wrong with it.
    let licence = |network: &str, script: &str, depth: u32| sovereign_boot_contract::LicenceSettings {
        network: network.into(),
        checkpoint_height: 0,
        checkpoint_header: None,
        script: script.into(),
        amount_sat: 50_000,
        depth,
    };
    let refusal = |l| {
        let mut with = input(settings());
        with.config.licence = Some(l);
        format!("{:#}", build::build_with(&with, &keys, out.path(), &Tamper::default()).unwrap_err())
    };
    let e = refusal(licence("testnet", "0014", 6));
    assert!(e.contains("the licence rule: network \"testnet\""), "{e}");
    let e = refusal(licence("bitcoin", "zz", 6));
    assert!(e.contains("the licence rule: the developer's script is not hex"), "{e}");
    let e = refusal(licence("bitcoin", "0014", 0));
    assert!(e.contains("the licence rule: a licence needs at least one confirmation"), "{e}");
    let e = refusal(licence("regtest", "0014", 6));
    assert!(!e.contains("the licence rule"), "{e}");
}
