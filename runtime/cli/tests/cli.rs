//! The README's audit workflow through the real `sovereign` binary: init, append, checkpoint,
//! cosign, export, verify (text and JSON), verify-log, and the failure exit codes.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

fn sovereign(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovereign")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = sovereign(args);
    assert!(
        out.status.success(),
        "sovereign {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn export_and_verify_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    ok(&["audit", "init", &s(""), "--origin", "sovereign.test/cli"]);
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(d.join("node.key")).unwrap());
    assert_eq!(mode & 0o777, 0o600, "secret keys must not be world-readable");
    for (kind, payload) in [("boot_measurement", "pcr15"), ("artifact", "model-v1"), ("refusal", "bad signature")] {
        ok(&[
            "audit",
            "append",
            "--log",
            &s("audit.log"),
            "--data-key",
            &s("data.key"),
            "--kind",
            kind,
            "--payload",
            payload,
        ]);
    }
    ok(&[
        "audit",
        "append",
        "--log",
        &s("audit.log"),
        "--data-key",
        &s("data.key"),
        "--kind",
        "approval",
        "--sign-with",
        &s("witness.key"),
    ]);
    let bad =
        sovereign(&["audit", "append", "--log", &s("audit.log"), "--data-key", &s("data.key"), "--kind", "shell"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown entry kind \"shell\""));

    ok(&[
        "audit",
        "checkpoint",
        "--log",
        &s("audit.log"),
        "--data-key",
        &s("data.key"),
        "--node-key-file",
        &s("node.key"),
    ]);
    ok(&[
        "audit",
        "cosign",
        "--log",
        &s("audit.log"),
        "--data-key",
        &s("data.key"),
        "--name",
        "witness.test/w1",
        "--key-file",
        &s("witness.key"),
    ]);
    let node_pub = read(&d.join("node.pub"));
    let witness = format!("witness.test/w1={}", read(&d.join("witness.pub")));
    ok(&[
        "audit",
        "export",
        "--log",
        &s("audit.log"),
        "--data-key",
        &s("data.key"),
        "--node-key-file",
        &s("node.key"),
        "--out",
        &s("bundle.tar"),
        "--witness",
        &witness,
    ]);

    let text = ok(&["verify", &s("bundle.tar"), "--node-key", &node_pub, "--witness", &witness]);
    assert!(text.contains(": PASS"), "{text}");
    assert!(text.contains("checkpoint.cosignatures"), "{text}");
    let json = ok(&["verify", &s("bundle.tar"), "--node-key", &s("node.pub"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["verdict"], "PASS");
    assert!(v["report"]["checks"].as_array().unwrap().len() >= 10);

    // One flipped bit: FAIL, exit 1, the place named.
    let mut bytes = std::fs::read(d.join("bundle.tar")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(d.join("flipped.tar"), &bytes).unwrap();
    let out = sovereign(&["verify", &s("flipped.tar"), "--node-key", &node_pub]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": FAIL") && text.contains("- "), "{text}");

    // No pinned key: FAIL, not PASS.
    assert_eq!(sovereign(&["verify", &s("bundle.tar")]).status.code(), Some(1));

    let log = ok(&["verify-log", &s("audit.log"), "--data-key", &s("data.key"), "--node-key", &node_pub]);
    assert!(log.contains(": PASS") && log.contains("checkpoint.root"), "{log}");
    let wrong = sovereign(&["verify-log", &s("audit.log"), "--data-key", &s("node.key")]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("wrong data key"));
}
