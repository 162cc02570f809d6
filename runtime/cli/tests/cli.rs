//! The README's audit workflow through the real `sovereign` binary: init, append, checkpoint,
//! cosign, export, verify (text and JSON), verify-log, and the failure exit codes; then the
//! bundle's checkpoint anchored: `anchor prepare` writes the unfunded PSBT, a wallet's funding
//! of it is mined on a regtest chain (`sovereign_ledger::regtest`), and `anchor verify` checks
//! the anchor file offline (too shallow, and another bundle's checkpoint, fail); a later bundle
//! of the same log verifies with that anchor (`verify --anchor`: an earlier checkpoint its
//! entries are consistent with), and an anchor of a checkpoint that is not the log's fails.

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

    // Anchoring the bundle's checkpoint.
    use base64::Engine as _;
    use sovereign_ledger::bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness, psbt::Psbt};
    let prepared = ok(&["anchor", "prepare", &s("bundle.tar"), "--out", &s("anchor.psbt"), "--json"]);
    let prepared: serde_json::Value = serde_json::from_str(&prepared).unwrap();
    let psbt = base64::engine::general_purpose::STANDARD.decode(read(&d.join("anchor.psbt"))).unwrap();
    let mut funded = Psbt::deserialize(&psbt).unwrap().unsigned_tx;
    assert!(funded.input.is_empty() && funded.output.len() == 1, "{funded:?}");
    let commitment = hex::decode(prepared["commitment"].as_str().unwrap()).unwrap();
    assert_eq!(funded.output[0].script_pubkey, ScriptBuf::new_op_return(<[u8; 32]>::try_from(commitment).unwrap()));
    // What a wallet adds: an input and change.
    funded.input.push(TxIn {
        previous_output: OutPoint::null(),
        script_sig: ScriptBuf::new(),
        sequence: Sequence::MAX,
        witness: Witness::new(),
    });
    funded.output.push(TxOut { value: Amount::from_sat(90_000), script_pubkey: ScriptBuf::new() });
    // The anchor file: the checkpoint's body beside the proof (what `anchor check` writes).
    let members = sovereign_audit::bundle::read_tar(&std::fs::read(d.join("bundle.tar")).unwrap()).unwrap();
    let checkpoint_text = members.iter().find(|(name, _)| name.ends_with("checkpoint.txt")).unwrap().1.clone();
    let body = sovereign_audit::note::SignedNote::parse(std::str::from_utf8(&checkpoint_text).unwrap()).unwrap().body;
    let anchor_file = |body: &str, tx: &sovereign_ledger::bitcoin::Transaction| {
        serde_json::to_vec(&sovereign_ledger::anchor::AnchorFile {
            checkpoint: body.to_string(),
            proof: sovereign_ledger::regtest::proof_of(tx, 5),
        })
        .unwrap()
    };
    std::fs::write(d.join("anchor.json"), anchor_file(&body, &funded)).unwrap();
    let anchor_verify = |bundle: &str, depth: &str| {
        sovereign(&[
            "anchor",
            "verify",
            &s("anchor.json"),
            "--bundle",
            &s(bundle),
            "--network",
            "regtest",
            "--depth",
            depth,
        ])
    };
    let out = anchor_verify("bundle.tar", "6");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the checkpoint existed by block 1"));
    let out = anchor_verify("bundle.tar", "7");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 confirmations, 7 needed"));
    // A later bundle of the same log has another checkpoint: this anchor is not its.
    let (log, data_key, node_key) = (s("audit.log"), s("data.key"), s("node.key"));
    let on_log = |command: &str, more: &[&str]| {
        let mut args = vec!["audit", command, "--log", &log, "--data-key", &data_key];
        args.extend_from_slice(more);
        ok(&args)
    };
    on_log("append", &["--kind", "artifact", "--payload", "later"]);
    on_log("checkpoint", &["--node-key-file", &node_key]);
    on_log("export", &["--node-key-file", &node_key, "--out", &s("later.tar")]);
    let out = anchor_verify("later.tar", "6");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("it anchors another checkpoint"));
    // ... but the later bundle's log is consistent with the anchored checkpoint: the full
    // verification accepts the anchor for it, naming the anchored size.
    let verify_anchored = |anchor: &str, depth: &str| {
        sovereign(&[
            "verify",
            &s("later.tar"),
            "--node-key",
            &node_pub,
            "--anchor",
            &s(anchor),
            "--anchor-network",
            "regtest",
            "--anchor-depth",
            depth,
            "--json",
        ])
    };
    let out = verify_anchored("anchor.json", "6");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let anchor_check =
        report["report"]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "anchors").unwrap().clone();
    let size = body.lines().nth(1).unwrap();
    assert!(
        anchor_check["detail"].as_str().unwrap().starts_with(&format!(
            "checkpoint of size {size} (consistent with the bundle's entries) anchored by block 1"
        )),
        "{anchor_check}"
    );
    assert_eq!(verify_anchored("anchor.json", "7").status.code(), Some(1), "too shallow");
    // A checkpoint of the same log and size with another root (a second history), anchored
    // for real: not this log's.
    let forged_body = {
        let mut lines: Vec<String> = body.lines().map(String::from).collect();
        lines[2] = base64::engine::general_purpose::STANDARD.encode([0x42u8; 32]);
        lines.join("\n") + "\n"
    };
    let commitment = sovereign_ledger::anchor::commitment(&forged_body);
    let mut forged_tx = sovereign_ledger::anchor::transaction(&commitment);
    forged_tx.input.push(funded.input[0].clone());
    std::fs::write(d.join("forged-anchor.json"), anchor_file(&forged_body, &forged_tx)).unwrap();
    let out = verify_anchored("forged-anchor.json", "6");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("its root differs"), "{text}");
}
