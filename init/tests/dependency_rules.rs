//! PID 1 stays small: no async runtime, no wasm engine, no network stack, no policy engine, no
//! CLI or error-reporting framework, and not the image builder (what it shares with the builder
//! and the runtime is `sovereign-boot-contract`).

use std::process::Command;

#[test]
fn pid1_has_no_tokio_wasm_or_network_stack() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--prefix", "none", "-e", "normal", "-p", "sovereign-init"])
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("tss-esapi ")), "expected the TPM stack in PID 1's tree:\n{tree}");
    assert!(
        tree.lines().any(|l| l.starts_with("sovereign-boot-contract ")),
        "expected the boot contract in PID 1's tree:\n{tree}"
    );
    for banned in [
        "tokio",
        "async-std",
        "mio",
        "wasmtime",
        "cranelift-codegen",
        "libp2p",
        "hyper",
        "reqwest",
        "cozo",
        "socket2",
        "clap",
        "anyhow",
        "sovereign-image",
    ] {
        assert!(!tree.lines().any(|l| l.starts_with(&format!("{banned} "))), "{banned} is in PID 1's dependency tree");
    }
}
