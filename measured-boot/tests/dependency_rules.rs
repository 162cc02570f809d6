//! Dependency rules, as tests: the verifier side of this crate must build without the TPM
//! stack (tss-esapi and the C tpm2-tss libraries), so an operator's laptop or an auditor's
//! machine can verify evidence with no TPM and no C library.

use std::process::Command;

fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "--prefix", "none", "-e", "normal", "-p", "sovereign-measured-boot"])
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verifier_needs_no_tpm_stack() {
    let tree = cargo_tree(&["--no-default-features"]);
    for banned in ["tss-esapi", "tss-esapi-sys", "bindgen", "pkg-config"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} "))),
            "{banned} is in the verifier's dependency tree:\n{tree}"
        );
    }
}

#[test]
fn tpm_edge_uses_the_pinned_tss_esapi() {
    let tree = cargo_tree(&[]);
    assert!(tree.lines().any(|l| l.starts_with("tss-esapi v7.7.0")), "tss-esapi 7.7.0 missing:\n{tree}");
}
