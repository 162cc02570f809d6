//! The control API server on the host, with the real parts: the runtime's server code on a unix
//! socket (one session per connection, as QEMU serves the virtio-serial port), its TPM side on
//! a private swtpm, the pipeline engine on a temporary data directory, and the operator's
//! client from `sovereign-cli`.
//!
//! - `status` and `attest` are answered while the engine is busy with a long command (an
//!   export of a large log), on the same connection, before that command's answer.
//! - A 1,000,000-entry audit log is exported through the CLI's client as checked chunks and
//!   verifies offline.
//! - A frame over the limit, a frame that does not decode, a changed chunk and a request over
//!   the payload limit each get a one-line refusal, and the connection stays usable.
//! - Sessions at once (as over the mesh) share one gate and one engine: a request admitted on
//!   one is refused as a replay on another, and the engine's answer goes to the session that
//!   asked, while the other is served.
//!
//! - The metrics, read by an independent parser (Python's `prometheus_client`), count what the
//!   test did: attestations, audit entries by kind, a GPU emergency stop, no GPU.
//!
//! The appliance in QEMU runs the same server (`tests/tests/stream.rs` sends a 100 MiB dataset
//! through the real `sovereign` binary); a log of a million entries cannot be made there
//! without an operator command that floods the audit log, which the runtime must not have.

#![allow(clippy::unwrap_used, missing_docs)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sovereign_audit::bundle::{TrustedKeys, verify_bundle_with};
use sovereign_audit::{DataKey, Entry, EntryKind, Severity};
use sovereign_canonical::now_ms;
use sovereign_measured_boot::tpm::{STATE_ANCHOR_INDEX, SharedTpm};
use sovereign_pipeline::anchor::TpmCounter;
use sovereign_pipeline::{Engine, EngineConfig};
use sovereign_protocol::pipeline::Command;
use sovereign_protocol::{
    Attachment, Frame, Gate, MAX_FRAME, MAX_MESSAGE_PAYLOAD, Request, Response, SignedRequest, SignedResponse, decode,
    frame, frame_len,
};
use sovereign_qemu::Swtpm;
use sovereign_runtime::control::{Attestor, ControlServer, Node};

const OPERATOR: [u8; 32] = [0x22; 32];
const IDENTITY: [u8; 32] = [0x33; 32];

/// A runtime serving on a unix socket in `dir`, its audit log pre-filled with `entries`
/// entries. Returns the socket path and the node identity.
fn runtime(dir: &Path, swtpm: &Swtpm, entries: u64) -> (PathBuf, VerifyingKey) {
    let identity = SigningKey::from_bytes(&IDENTITY);
    // One TPM session for the engine's state anchor and the attestor, as in the runtime.
    let tpm = SharedTpm::new(&swtpm.tcti());
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let engine = Engine::open(EngineConfig {
        identity: identity.clone(),
        data_key: DataKey([8; 32]),
        state_dir: &state,
        origin: "sovereign-test/control".into(),
        release: SigningKey::from_bytes(&[1; 32]).verifying_key(),
        admin: SigningKey::from_bytes(&[2; 32]).verifying_key(),
        measurements: BTreeMap::from([("measured_boot".to_string(), serde_json::json!(true))]),
        counter: Box::new(TpmCounter::new(tpm.clone(), STATE_ANCHOR_INDEX)),
        reference_values: None,
        update: None,
        licence: None,
        gpu: Default::default(),
        nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
    })
    .unwrap();
    let audit = engine.audit().clone();
    let batch = 50_000;
    let mut written = 0;
    while written < entries {
        let n = batch.min(entries - written);
        let rows = (written..written + n)
            .map(|i| {
                let payload = format!("{{\"event\":\"sensor reading\",\"seq\":{i}}}").into_bytes();
                Entry::new(EntryKind::Artifact, 1_800_000_000_000 + i, Severity::Info, vec![], payload)
            })
            .collect();
        audit.append_batch(rows).unwrap();
        written += n;
    }
    let (firmware, measurements) = (dir.join("firmware.log"), dir.join("measurement.log"));
    std::fs::write(&firmware, b"firmware event log").unwrap();
    std::fs::write(&measurements, b"measurement log").unwrap();
    let node = Node {
        identity: identity.clone(),
        version: 1,
        manifest: b"{\"version\":1}".to_vec(),
        manifest_signature: vec![0; 64],
        attestor: std::sync::Mutex::new(Attestor::new(tpm, &firmware, &measurements)),
        refused: None,
        observed: Default::default(),
    };
    node.observed.watch_engine(&engine);
    let operator = SigningKey::from_bytes(&OPERATOR).verifying_key();
    let gate = Gate::new(identity.verifying_key().to_bytes(), vec![operator], 120_000);
    let socket = dir.join("control.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Sessions at once, each on a thread of its own, as the runtime serves control streams over
    // the mesh (the virtio-serial port's are one after another: `serve`).
    let server = ControlServer::start(std::sync::Arc::new(node), Some(engine), gate).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let server = server.clone();
            std::thread::spawn(move || server.session(&mut stream.try_clone().unwrap(), Box::new(stream)));
        }
    });
    (socket, identity.verifying_key())
}

fn signed(request: Request, node: &VerifyingKey, payloads: &[Vec<u8>]) -> SignedRequest {
    sovereign_cli::sign(request, node, payloads, &SigningKey::from_bytes(&OPERATOR))
}

/// A raw connection: frames written and read by hand.
struct Raw(UnixStream);

impl Raw {
    fn connect(socket: &Path) -> Self {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        Raw(s)
    }

    fn send(&mut self, f: &Frame) {
        self.0.write_all(&frame(f)).unwrap();
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    fn read(&mut self) -> Frame {
        let mut prefix = [0u8; 4];
        self.0.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; frame_len(prefix).unwrap()];
        self.0.read_exact(&mut body).unwrap();
        decode(&body).unwrap()
    }

    /// The next response, skipping chunk frames (of responses this test does not look into).
    fn response(&mut self) -> SignedResponse {
        loop {
            match self.read() {
                Frame::Response(r) => return *r,
                Frame::Chunk(_) => continue,
                other => panic!("expected a response, got {other:?}"),
            }
        }
    }

    fn refused_frame(&mut self) -> String {
        match self.read() {
            Frame::Refused(why) => why,
            other => panic!("expected a frame refusal, got {other:?}"),
        }
    }

    /// Asks `status` and expects it answered, signed: the connection is usable.
    fn still_answers(&mut self, node: &VerifyingKey) {
        let status = signed(Request::Status, node, &[]);
        self.send(&Frame::Request(Box::new(status.clone())));
        let response = self.response();
        assert!(matches!(response.verify(&status, node).unwrap(), Response::Status(_)), "{response:?}");
    }
}

#[test]
fn status_and_attest_are_answered_while_the_engine_exports_a_large_log() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    let (socket, node) = runtime(dir.path(), &swtpm, 200_000);
    let mut raw = Raw::connect(&socket);
    let export = signed(Request::Pipeline(Command::ExportBundle), &node, &[]);
    let status = signed(Request::Status, &node, &[]);
    let attest = signed(Request::Attest { nonce: [7; 32] }, &node, &[]);
    let started = Instant::now();
    for r in [&export, &status, &attest] {
        raw.send(&Frame::Request(Box::new(r.clone())));
    }
    let mut order = vec![];
    while order.len() < 3 {
        let response = raw.response();
        let (name, request) = [("export", &export), ("status", &status), ("attest", &attest)]
            .into_iter()
            .find(|(_, r)| r.digest() == response.request_digest)
            .expect("a response to one of the three requests");
        let answer = response.verify(request, &node).unwrap();
        match (name, answer) {
            ("export", Response::Pipeline(_)) | ("status", Response::Status(_)) | ("attest", Response::Evidence(_)) => {
            }
            other => panic!("unexpected answer {other:?}"),
        }
        order.push((name, started.elapsed()));
    }
    let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.last(), Some(&"export"), "status and attest waited for the export: {order:?}");
}

#[test]
fn sessions_at_once_share_one_gate_and_each_gets_its_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    let (socket, node) = runtime(dir.path(), &swtpm, 200_000);
    let (mut first, mut second) = (Raw::connect(&socket), Raw::connect(&socket));
    let export = signed(Request::Pipeline(Command::ExportBundle), &node, &[]);
    first.send(&Frame::Request(Box::new(export.clone())));
    // While the engine exports for the first session, the second is answered.
    let status = signed(Request::Status, &node, &[]);
    second.send(&Frame::Request(Box::new(status.clone())));
    let answer = second.response();
    assert!(matches!(answer.verify(&status, &node).unwrap(), Response::Status(_)), "{answer:?}");
    // The same signed request again, on the other session: one gate, one replay store.
    first.send(&Frame::Request(Box::new(status.clone())));
    let mut refused = None;
    let mut exported = false;
    while refused.is_none() || !exported {
        let response = first.response();
        if response.request_digest == status.digest() {
            refused = Some(response.verify(&status, &node).unwrap().clone());
        } else {
            assert_eq!(response.request_digest, export.digest(), "an answer to a request this session did not send");
            assert!(matches!(response.verify(&export, &node).unwrap(), Response::Pipeline(_)));
            exported = true;
        }
    }
    match refused {
        Some(Response::Refused(why)) => assert!(why.contains("replay"), "{why}"),
        other => panic!("a replayed request was answered: {other:?}"),
    }
    // Nothing of the export reached the second session: its next answer is its own.
    second.still_answers(&node);
}

#[test]
fn a_million_entry_log_is_exported_through_the_cli_client_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    let (socket, node) = runtime(dir.path(), &swtpm, 1_000_000);
    let operator = SigningKey::from_bytes(&OPERATOR);
    let (reply, payloads) = sovereign_cli::pipeline::command(
        &sovereign_cli::Endpoint::from(&socket),
        &operator,
        None,
        &Command::ExportBundle,
        &[],
    )
    .unwrap();
    let bundle = sovereign_cli::pipeline::blob_payload(&reply, payloads).unwrap();
    assert!(bundle.len() > 4 * MAX_FRAME, "the export ({} bytes) is larger than several frames", bundle.len());
    let report = verify_bundle_with(&bundle, &TrustedKeys { node: Some(node), witnesses: vec![] }, None);
    // Everything passes but the attestation section's content, which takes an attestation
    // checker and a real boot behind the quote (the QEMU tests check it): this swtpm has none.
    let failed: Vec<_> = report.checks.iter().filter(|c| !c.failures.is_empty()).collect();
    assert_eq!(failed.len(), 1, "{}", report.render("export"));
    assert_eq!(failed[0].name, "sections");
    let reasons: Vec<String> = failed[0].failures.iter().map(|f| format!("{}: {}", f.place, f.reason)).collect();
    assert_eq!(reasons, ["attestation/evidence.json: this verifier version cannot check this section's content yet"]);
    let tree = report.checks.iter().find(|c| c.name == "tree").expect("tree check");
    assert_eq!(tree.checked, 1_000_000, "{}", report.render("export"));
}

#[test]
fn bad_frames_and_payloads_are_refused_in_one_line_and_the_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    let (socket, node) = runtime(dir.path(), &swtpm, 0);
    let mut raw = Raw::connect(&socket);

    // A length prefix over the limit: refused, its declared bytes skipped.
    let oversized = MAX_FRAME + 10;
    raw.bytes(&(oversized as u32).to_be_bytes());
    raw.bytes(&vec![0xAB; oversized]);
    let why = raw.refused_frame();
    assert!(why.starts_with(&format!("frame refused: {oversized} bytes exceed")), "{why}");
    raw.still_answers(&node);

    // Bytes that are no frame at all.
    raw.bytes(&[0, 0, 0, 3, 0xFF, 0xFF, 0xFF]);
    assert!(raw.refused_frame().starts_with("frame refused: "));
    raw.still_answers(&node);

    // A chunk changed after signing: refused by name; the rest of the upload is dropped.
    let payload: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 253) as u8).collect();
    let start = start_with_dataset(&node, &payload);
    raw.send(&Frame::Request(Box::new(start.clone())));
    let mut chunks: Vec<Frame> = sovereign_protocol::stream::chunks(start.digest(), &[payload]).collect();
    if let Frame::Chunk(c) = &mut chunks[1] {
        c.bytes[100] ^= 1;
    }
    for c in &chunks {
        raw.send(c);
    }
    let response = raw.response();
    let Response::Refused(why) = response.verify(&start, &node).unwrap() else { panic!("{response:?}") };
    assert_eq!(why, "payload refused: attachment 0 chunk 1 does not match its signed digest");
    raw.still_answers(&node);

    // A request declaring more than a message may carry: refused before any chunk is read.
    let mut huge = Attachment::describe(b"");
    huge.len = MAX_MESSAGE_PAYLOAD + 1;
    huge.chunks = vec![[0; 32]; (MAX_MESSAGE_PAYLOAD + 1).div_ceil(1024 * 1024) as usize];
    let operator = SigningKey::from_bytes(&OPERATOR);
    let over = SignedRequest::sign(
        Request::Pipeline(Command::ExportBundle),
        node.to_bytes(),
        vec![huge],
        &operator,
        [9; 16],
        now_ms(),
    );
    raw.send(&Frame::Request(Box::new(over.clone())));
    let response = raw.response();
    let Response::Refused(why) = response.verify(&over, &node).unwrap() else { panic!("{response:?}") };
    assert_eq!(why, "payload refused: this request takes no attachments");
    raw.still_answers(&node);
    let Request::Pipeline(Command::Start(start)) = start_with_dataset(&node, b"x").request else { unreachable!() };
    let over_start = SignedRequest::sign(
        Request::Pipeline(Command::Start(start)),
        node.to_bytes(),
        over.attachments.clone(),
        &operator,
        [10; 16],
        now_ms(),
    );
    raw.send(&Frame::Request(Box::new(over_start.clone())));
    let response = raw.response();
    let Response::Refused(why) = response.verify(&over_start, &node).unwrap() else { panic!("{response:?}") };
    assert!(why.starts_with("payload refused: attachments of over "), "{why}");
    assert!(why.ends_with("a message may carry 201326592"), "{why}");
    raw.still_answers(&node);
}

/// A start request whose dataset is `dataset` (the rest of it need not be valid: the upload is
/// judged before the engine sees it).
fn start_with_dataset(node: &VerifyingKey, dataset: &[u8]) -> SignedRequest {
    let admin = SigningKey::from_bytes(&[2; 32]);
    let operator = SigningKey::from_bytes(&OPERATOR);
    let start = sovereign_protocol::pipeline::StartRun {
        pipeline_yaml: b"not a pipeline".to_vec(),
        dataset: sovereign_protocol::Blob::of(dataset),
        modules: vec![],
        policy: sovereign_governance::policy::PolicyBundle::sign("p", 1, "allow[\"x\"] <- [[1]]", &admin),
        certificate: sovereign_governance::signed::RoleCertificate::issue(
            &operator.verifying_key(),
            &["pipeline-operator"],
            1,
            now_ms() + 60_000,
            &admin,
        ),
        role_signatures: vec![],
        revocations: sovereign_governance::signed::RevocationList::issue(1, vec![], vec![], &admin),
    };
    signed(Request::Pipeline(Command::Start(Box::new(start))), node, &[dataset.to_vec()])
}

/// The Python that has `prometheus_client` (`cargo xtask setup` installs it into this venv).
const PYTHON: &str = "/var/cache/sovereign/venv/bin/python";

/// `(name, labels, value)` of every sample in `text`, as Python's `prometheus_client` parser
/// reads it.
fn parsed_by_prometheus_client(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let mut child = std::process::Command::new(PYTHON)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON} (cargo xtask setup installs it with prometheus-client): {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the exposition: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_read_by_an_independent_parser_count_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start().unwrap();
    let (socket, node) = runtime(dir.path(), &swtpm, 25);
    let mut raw = Raw::connect(&socket);
    let mut ask = |request: Request| {
        let r = signed(request, &node, &[]);
        raw.send(&Frame::Request(Box::new(r.clone())));
        raw.response().verify(&r, &node).unwrap().clone()
    };
    for nonce in [[1; 32], [2; 32], [3; 32]] {
        assert!(matches!(ask(Request::Attest { nonce }), Response::Evidence(_)));
    }
    let stop = ask(Request::Pipeline(Command::GpuStop { reason: "maintenance window".into() }));
    assert!(
        matches!(&stop, Response::Pipeline(sovereign_protocol::pipeline::Reply::Gpu(s)) if s.emergency_stop.is_some()),
        "{stop:?}"
    );
    let Response::Status(status) = ask(Request::Status) else { panic!("status") };
    assert!(status.gpu.starts_with("no GPU: the NVIDIA driver is not loaded"), "{}", status.gpu);
    assert!(status.gpu.contains("GPU emergency stop 1 engaged"), "{}", status.gpu);
    let Response::Metrics(text) = ask(Request::Metrics) else { panic!("metrics") };
    let samples = parsed_by_prometheus_client(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<f64> = samples.iter().filter(|(n, l, _)| n == name && *l == want).map(|(_, _, v)| *v).collect();
        assert_eq!(found.len(), 1, "{name}{labels:?} in:\n{text}");
        found[0]
    };
    assert_eq!(value("sovereign_attestations_total", &[("outcome", "evidence")]), 3.0);
    assert_eq!(value("sovereign_attestations_total", &[("outcome", "failed")]), 0.0);
    // The 25 entries the test wrote, and the stop's one GPU entry (the engine wrote no others).
    assert_eq!(value("sovereign_audit_entries_total", &[("kind", "artifact")]), 25.0);
    assert_eq!(value("sovereign_audit_entries_total", &[("kind", "gpu")]), 1.0);
    let durable = value("sovereign_audit_log_entries", &[]);
    assert!(durable >= 26.0, "{durable}");
    let file = std::fs::metadata(dir.path().join("state/audit.log")).unwrap().len() as f64;
    assert_eq!(value("sovereign_audit_log_bytes", &[]), file);
    let appends = value("sovereign_audit_append_seconds_count", &[]);
    assert!(appends >= 2.0, "one batch and the stop's entry at least: {appends}");
    assert_eq!(value("sovereign_audit_append_seconds_bucket", &[("le", "+Inf")]), appends);
    assert!(value("sovereign_audit_append_seconds_sum", &[]) > 0.0);
    assert_eq!(value("sovereign_gpu_available", &[]), 0.0);
    assert_eq!(value("sovereign_gpu_emergency_stop", &[]), 1.0);
    assert_eq!(value("sovereign_gpu_kernel_launches_total", &[("outcome", "completed")]), 0.0);
    assert_eq!(value("sovereign_sandbox_terminations_total", &[("kind", "fuel")]), 0.0);
    assert_eq!(value("sovereign_runtime_info", &[("version", "1"), ("refusing", "false")]), 1.0);
    // No mesh in this runtime: no mesh family at all, rather than a made-up zero.
    assert!(!text.contains("sovereign_mesh_peers"), "{text}");
}
