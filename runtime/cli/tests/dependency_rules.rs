//! The operator CLI stays an operator's tool: it speaks the protocol and verifies evidence, it
//! does not carry the appliance's WASM engine, nor the image builder. CozoDB stays: `sovereign
//! verify` re-evaluates every decision a bundle records with the same policy engine the
//! appliance decided with (a different engine would prove nothing about those decisions).

use std::process::Command;

#[test]
fn the_cli_has_no_wasm_engine_and_no_image_builder() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--prefix", "none", "-e", "normal", "-p", "sovereign-cli"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let has = |name: &str| tree.lines().any(|l| l.starts_with(&format!("{name} ")));
    assert!(has("sovereign-protocol"), "expected the protocol in the CLI's tree:\n{tree}");
    assert!(has("cozo"), "expected the policy engine for offline re-evaluation in the CLI's tree");
    for banned in ["wasmtime", "cranelift-codegen", "wasmparser", "sovereign-image"] {
        assert!(!has(banned), "{banned} is in the CLI's dependency tree");
    }
}
