//! The private mesh between appliances in QEMU (OVMF + swtpm each), on a private Ethernet
//! segment whose only host side is unix datagram sockets (`sovereign_qemu::hub`): one image
//! whose signed configuration names four nodes by MAC, their addresses, the swarm key, the
//! attestation CA and the EK roots.
//!
//! Three appliances bring up their interfaces (PID 1; a probe on the segment finds only the mesh
//! port open among all 65,535), connect through pnet + Noise, attest to
//! each other with their TPMs (AK certified by the attestation CA), are admitted, and cosign
//! each other's checkpoints; a checkpoint cosigned by two witnesses is verified here, offline,
//! with the witnesses' keys. A fourth appliance, same image and swarm key but another platform
//! (a second disk the firmware may boot from, so PCR 1 differs from the platform profile),
//! connects and is refused admission by every node, naming PCR 1 — and the refusal is in the
//! audit log a compliance bundle exported from a node carries. A fifth, with another swarm key,
//! dials them all and never completes a handshake: no node learns its peer ID.
//!
//! The operator reaches node 1 over the mesh (`sovereign status|audit export --mesh
//! /ip4/127.0.0.1/tcp/P --swarm-key F`): its second interface is QEMU's restricted user-mode
//! network whose one way in is a forward from 127.0.0.1 to the mesh port. The status and the
//! exported bundle verify; another swarm key gets no handshake. Node 1 is also licensed over
//! the mesh: a Bitcoin licence proof (mined on a regtest chain for its identity) imported and
//! kept, another node's refused by name, and a checkpoint of its log anchored in that chain (its
//! PSBT prepared by the node, the mined anchor imported and carried by its next bundle, checked
//! offline). An update bundle (release v2) pushed to node 0 is
//! pulled over the mesh by node 1 from node 0 and by node 2 from node 1, each verifying it
//! before writing a byte; pulls before it is there, or from a node not admitted, are refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use sovereign_audit::note::{NoteVerifier, SignedNote};
use sovereign_boot_contract::network::{Interface, MeshSettings};
use sovereign_e2e::{PLATFORM_PROFILE, attestation_ca, base_input, dev_keys, image, now_unix, root, variant};
use sovereign_image::build::Tamper;
use sovereign_mesh::swarm_key::SwarmKey;
use sovereign_qemu::Appliance;
use sovereign_qemu::guest::Guest;
use sovereign_qemu::hub::Hub;

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Three nodes of the platform, one of another platform, one with another swarm key.
const NODES: usize = 5;
const MESH_WAIT: Duration = Duration::from_secs(420);

/// The node the operator reaches over the mesh, and its second interface: QEMU's user-mode
/// network, restricted (no guest packet leaves it), whose only way in is a forward from
/// 127.0.0.1 on the host to the node's mesh port.
const OPERATOR_NODE: usize = 1;
const OPERATOR_MAC: &str = "52:54:00:5e:01:02";

fn mac(i: usize) -> String {
    format!("52:54:00:5e:00:{:02x}", i + 1)
}

/// Waits until `guest`'s console has `count` lines containing every one of `needles`.
fn wait_lines(guest: &mut Guest, needles: &[&str], count: usize, deadline: Instant) -> Vec<String> {
    loop {
        let console = guest.console();
        let lines: Vec<String> =
            console.lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline && !guest.finished(),
            "waiting for {count} console lines with {needles:?}; console:\n{console}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Attests the appliance on `socket` against the mesh image's reference values and has the
/// attestation CA certify its AK (what the operator does once per node). The node of another
/// platform fails attestation (PCR 1); its AK is certified all the same — the certificate says
/// only where the AK lives, and each quote is judged on its own.
fn certify(appliance: &Appliance, socket: &Path, image_dir: &Path, must_pass: bool) {
    let read = |name: &str| std::fs::read(image_dir.join(name)).unwrap();
    let ca = appliance.ek_ca_pem().unwrap();
    let trust = sovereign_cli::attest::Trust {
        release_key: dev_keys().release.verifying_key(),
        reference_values: read("reference-values.json"),
        reference_signature: read("reference-values.sig"),
        platform_profile: std::fs::read(root().join(PLATFORM_PROFILE)).unwrap(),
        ek_roots: sovereign_measured_boot::ekcert::trust_store_from_pem(ca.as_bytes()).unwrap(),
        node_identity: None,
    };
    let admin = dev_keys().admin;
    let timeout = Duration::from_secs(120);
    let (exchange, report) =
        sovereign_cli::attest::attest(&sovereign_cli::Endpoint::from(socket), &admin, &trust, now_unix(), timeout)
            .unwrap();
    assert_eq!(report.passed(), must_pass, "{}", report.render());
    // `SOVEREIGN_RECORD_EVIDENCE=DIR`: keep a real appliance's evidence and what it is judged
    // against, for the verifier's benchmark (runtime/verifier/benches/fixtures).
    if let (Some(dir), true, Some(exchange)) = (std::env::var_os("SOVEREIGN_RECORD_EVIDENCE"), must_pass, &exchange) {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let record = serde_json::json!({
            "nonce": hex::encode(exchange.nonce),
            "identity": hex::encode(exchange.identity),
            "evidence": exchange.evidence,
            "release_key": hex::encode(dev_keys().release.verifying_key().as_bytes()),
        });
        std::fs::write(dir.join("evidence.json"), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        std::fs::write(dir.join("reference-values.json"), &trust.reference_values).unwrap();
        std::fs::write(dir.join("reference-values.sig"), &trust.reference_signature).unwrap();
        std::fs::write(dir.join("platform.json"), &trust.platform_profile).unwrap();
        std::fs::write(dir.join("ek-ca.pem"), &ca).unwrap();
    }
    sovereign_cli::attest::certify(
        &sovereign_cli::Endpoint::from(socket),
        &admin,
        &exchange.unwrap(),
        &attestation_ca().0,
        now_unix(),
        86_400,
        timeout,
    )
    .unwrap();
}

#[test]
fn attested_appliances_form_a_mesh_cosign_each_other_and_keep_another_platform_and_another_key_out() {
    let hub = Hub::new(NODES).unwrap();
    let (odd, stranger) = (3, 4);
    let mut appliances: Vec<Appliance> = (0..NODES).map(|_| Appliance::new(image()).unwrap()).collect();
    let ek_roots: String = appliances.iter().map(|a| a.ek_ca_pem().unwrap()).collect();

    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let mut input = base_input();
    input.config.mesh = Some(MeshSettings {
        interfaces: (0..stranger)
            .map(|i| Interface { mac: mac(i), address: format!("10.77.0.{}/24", i + 1) })
            .chain([Interface { mac: OPERATOR_MAC.into(), address: "10.0.2.15/24".into() }])
            .collect(),
        routes: Vec::new(),
        port: 4001,
        swarm_key: SwarmKey::from_bytes(key).to_file().to_string(),
        peers: (0..stranger).map(|i| format!("/ip4/10.77.0.{}/tcp/4001", i + 1)).collect(),
        ak_ca: attestation_ca().1,
        ek_roots,
        platform_profile: std::fs::read_to_string(root().join(PLATFORM_PROFILE)).unwrap(),
        admission_ttl_secs: 600,
        witness_interval_secs: 5,
    });
    // The nodes take Bitcoin licences (regtest, from genesis, 3 confirmations): node 1 gets one
    // over the mesh below.
    input.config.licence = Some(sovereign_boot_contract::LicenceSettings {
        network: "regtest".into(),
        checkpoint_height: 0,
        checkpoint_header: None,
        script: format!("0014{}", "d3".repeat(20)),
        amount_sat: 50_000,
        depth: 3,
    });
    let out = tempfile::tempdir().unwrap();
    let built = variant(&input, &dev_keys(), out.path(), &Tamper::default());
    // The stranger: the same release and mesh but another swarm key, and its own address.
    let mut other_key = [0u8; 32];
    OsRng.fill_bytes(&mut other_key);
    let mut stranger_input = input.clone();
    if let Some(mesh) = stranger_input.config.mesh.as_mut() {
        mesh.swarm_key = SwarmKey::from_bytes(other_key).to_file().to_string();
        mesh.interfaces.push(Interface { mac: mac(stranger), address: "10.77.0.5/24".into() });
    }
    let stranger_out = tempfile::tempdir().unwrap();
    let stranger_built = variant(&stranger_input, &dev_keys(), stranger_out.path(), &Tamper::default());
    let operator_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra_disk = tempfile::NamedTempFile::new().unwrap();
    extra_disk.as_file().set_len(4 << 20).unwrap();
    for (i, appliance) in appliances.iter_mut().enumerate() {
        let disk = if i == stranger { &stranger_built.disk } else { &built.disk };
        appliance.replace_disk_keeping(disk, &[]).unwrap();
        if i == odd {
            // Another platform: a second disk the firmware may boot from (a boot option more,
            // measured into PCR 1).
            appliance.add_qemu_args([
                "-drive".to_string(),
                format!("file={},format=raw,if=none,id=extra", extra_disk.path().display()),
                "-device".to_string(),
                "virtio-blk-pci,drive=extra,addr=0x10,bootindex=2".to_string(),
            ]);
        }
        appliance.add_qemu_args(hub.qemu_args(i, &mac(i)));
        if i == OPERATOR_NODE {
            appliance.add_qemu_args([
                "-netdev".to_string(),
                format!(
                    "user,id=operator,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:{operator_port}-10.0.2.15:4001"
                ),
                "-device".to_string(),
                format!("virtio-net-pci,netdev=operator,mac={OPERATOR_MAC},romfile="),
            ]);
        }
    }

    // The three nodes of the platform, then the other one once they are admitted.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut guests: Vec<Guest> = appliances[..odd].iter_mut().map(|a| a.boot(BOOT_TIMEOUT).unwrap()).collect();
    let mut identities = Vec::new();
    for (i, guest) in guests.iter_mut().enumerate() {
        let up = wait_lines(guest, &["network: ", &format!("up with 10.77.0.{}/24", i + 1)], 1, deadline);
        assert!(up[0].contains(&mac(i)), "{up:?}");
        wait_lines(guest, &["sovereign-runtime: control: attestation key ready"], 1, deadline);
        let line = wait_lines(guest, &["sovereign-runtime: node identity "], 1, deadline).remove(0);
        identities.push(line.rsplit(' ').next().unwrap().trim().to_string());
        wait_lines(guest, &["sovereign-runtime: mesh: listening on /ip4/10.77.0."], 1, deadline);
    }
    for (i, appliance) in appliances[..odd].iter().enumerate() {
        certify(appliance, &appliance.control_socket(), out.path(), true);
        println!("node {i} certified");
    }

    // Every node admits the two others (their refusals for an uncertified AK are retried), and
    // each node's checkpoint gets cosigned by both others.
    let mesh_deadline = Instant::now() + MESH_WAIT;
    for guest in guests.iter_mut() {
        wait_lines(guest, &["sovereign-runtime: mesh: admitted "], 2, mesh_deadline);
    }
    for (i, guest) in guests.iter_mut().enumerate() {
        let notes = wait_lines(guest, &["sovereign-runtime: mesh: witnessed note "], 1, mesh_deadline);
        let full = loop {
            let notes = wait_lines(guest, &["sovereign-runtime: mesh: witnessed note "], 1, mesh_deadline);
            let last: String =
                serde_json::from_str(notes.last().unwrap().split("witnessed note ").nth(1).unwrap()).unwrap();
            let note = SignedNote::parse(&last).unwrap();
            if note.signatures.len() >= 3 {
                break note;
            }
            assert!(Instant::now() < mesh_deadline, "node {i}: no checkpoint with two cosignatures: {notes:?}");
            std::thread::sleep(Duration::from_secs(1));
        };
        let _ = notes;
        // Offline: the node's own signature and both witnesses' cosignatures, by their keys.
        let key = |hex_key: &str| {
            ed25519_dalek::VerifyingKey::from_bytes(&<[u8; 32]>::try_from(hex::decode(hex_key).unwrap()).unwrap())
                .unwrap()
        };
        let origin = format!("sovereign-appliance/{}", &identities[i][..16]);
        NoteVerifier::new(origin, key(&identities[i])).verify_signature(&full).unwrap();
        for (j, witness) in identities.iter().enumerate().filter(|(j, _)| *j != i) {
            let name = format!("sovereign-witness/{}", &witness[..16]);
            NoteVerifier::new(name, key(witness))
                .verify_cosignature(&full)
                .unwrap_or_else(|e| panic!("node {i}'s checkpoint, witness {j}: {e}"));
        }
        // A forged cosignature line does not pass: another key under a witness's name.
        let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert!(
            NoteVerifier::new(format!("sovereign-witness/{}", &identities[(i + 1) % odd][..16]), other)
                .verify_cosignature(&full)
                .is_err()
        );
    }

    // From outside, on the segment: of node 0's 65,535 TCP ports only the mesh's answers
    // SYN-ACK; every other one answers RST (so each was reached, and is closed).
    let mac0 = sovereign_boot_contract::network::parse_mac(&mac(0)).unwrap();
    let (open, answered) = hub.scan_tcp(0, mac0, "10.77.0.1".parse().unwrap(), Duration::from_secs(120));
    assert_eq!(open.into_iter().collect::<Vec<_>>(), vec![4001], "open TCP ports on node 0");
    assert_eq!(answered, usize::from(u16::MAX), "ports that answered the probe at all");

    // A compliance bundle exported from node 0 carries its checkpoint cosigned by both other
    // nodes: `sovereign verify --witness NAME=KEY` checks them offline, with every trust root
    // pinned (the mesh image's reference values, platform, EK CA, attestation CA).
    let bundle = out.path().join("node0-witnessed.bundle");
    sovereign_e2e::export_from(&appliances[0].control_socket(), &bundle);
    let ek_ca = |i: usize| {
        let path = out.path().join(format!("ek-ca-{i}.pem"));
        std::fs::write(&path, appliances[i].ek_ca_pem().unwrap()).unwrap();
        path
    };
    let witness_arg = |j: usize, key: &str| format!("sovereign-witness/{}={key}", &identities[j][..16]);
    let verify_from = |bundle: &Path, node: usize, witnesses: &[String]| {
        let keys = sovereign_e2e::build_dir().join("keys");
        let mut args: Vec<std::ffi::OsString> = vec![
            "verify".into(),
            bundle.into(),
            "--node-key".into(),
            identities[node].clone().into(),
            "--policy-key".into(),
            keys.join("release.pub").into(),
            "--admin-key".into(),
            keys.join("admin.pub").into(),
            "--release-key".into(),
            keys.join("release.pub").into(),
            "--reference".into(),
            out.path().join("reference-values.json").into(),
            "--platform".into(),
            root().join(PLATFORM_PROFILE).into(),
            "--ek-ca".into(),
            ek_ca(node).into(),
            "--ak-ca".into(),
            attestation_ca().1.into(),
            "--json".into(),
        ];
        for w in witnesses {
            args.push("--witness".into());
            args.push(w.into());
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        sovereign_e2e::sovereign(&refs)
    };
    let verify = |witnesses: &[String]| verify_from(&bundle, 0, witnesses);
    let both = [witness_arg(1, &identities[1]), witness_arg(2, &identities[2])];
    let (code, stdout, stderr) = verify(&both);
    assert_eq!(code, 0, "the bundle with both witnesses pinned did not verify:\n{stdout}\n{stderr}");
    let forged = [witness_arg(1, &identities[1]), witness_arg(2, &identities[0])];
    let (code, stdout, _) = verify(&forged);
    assert_ne!(code, 0, "a witness pinned with another key passed:\n{stdout}");
    assert!(stdout.contains("checkpoint.cosignatures"), "{stdout}");

    // The operator over the mesh: node 1's mesh port, reached from 127.0.0.1 through the
    // forward of its restricted user-mode network, with the swarm key — the same signed
    // requests as over its serial port. Its status, then a compliance bundle that verifies
    // offline with both other nodes' cosignatures.
    let os = |s: &str| std::ffi::OsString::from(s);
    let swarm_key_file = out.path().join("swarm.key");
    std::fs::write(&swarm_key_file, SwarmKey::from_bytes(key).to_file().as_bytes()).unwrap();
    let other_key_file = out.path().join("other-swarm.key");
    std::fs::write(&other_key_file, SwarmKey::from_bytes(other_key).to_file().as_bytes()).unwrap();
    let admin_key = sovereign_e2e::build_dir().join("keys/admin.key");
    let over_mesh = |command: &[&str], swarm_key: &Path| {
        let mut args: Vec<std::ffi::OsString> = command.iter().map(|a| os(a)).collect();
        for (flag, value) in [
            ("--mesh", os(&format!("/ip4/127.0.0.1/tcp/{operator_port}"))),
            ("--swarm-key", swarm_key.into()),
            ("--key", admin_key.clone().into()),
        ] {
            args.push(os(flag));
            args.push(value);
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        sovereign_e2e::sovereign(&refs)
    };
    let (code, stdout, stderr) =
        over_mesh(&["status", "--json", "--node-key", &identities[OPERATOR_NODE]], &swarm_key_file);
    assert_eq!(code, 0, "status over the mesh:\n{stdout}\n{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["identity"], identities[OPERATOR_NODE], "{stdout}");
    assert_eq!(status["response_signature"], "verified", "{stdout}");
    let mesh_bundle = out.path().join("node1-over-the-mesh.bundle");
    let (code, stdout, stderr) =
        over_mesh(&["audit", "export", "--out", mesh_bundle.to_str().unwrap()], &swarm_key_file);
    assert_eq!(code, 0, "audit export over the mesh:\n{stdout}\n{stderr}");
    let (code, stdout, stderr) =
        verify_from(&mesh_bundle, OPERATOR_NODE, &[witness_arg(0, &identities[0]), witness_arg(2, &identities[2])]);
    assert_eq!(code, 0, "the bundle exported over the mesh did not verify:\n{stdout}\n{stderr}");
    let seen_deadline = Instant::now() + Duration::from_secs(60);
    wait_lines(&mut guests[OPERATOR_NODE], &["sovereign-runtime: mesh: control session from "], 2, seen_deadline);
    // A licence for node 1, carried to it over the mesh as to an air-gapped node: a proof mined
    // on a regtest chain for its identity, verified by the node against its own rule and kept.
    // Another node's proof is refused by name.
    let rule = input.config.licence.as_ref().unwrap();
    let terms =
        sovereign_ledger::rule::parse(&rule.network, 0, None, &rule.script, rule.amount_sat, rule.depth).unwrap().terms;
    let proof_for = |node: usize, name: &str| {
        let machine_id = hex::decode(&identities[node]).unwrap();
        let tx = sovereign_ledger::regtest::licence_transaction(
            &terms,
            sovereign_ledger::bitcoin::Amount::from_sat(50_000),
            &machine_id,
        );
        let path = out.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&sovereign_ledger::regtest::proof_of(&tx, 2)).unwrap()).unwrap();
        path
    };
    let (code, stdout, _) = over_mesh(&["license", "status", "--json"], &swarm_key_file);
    assert_eq!(code, 1, "an unlicensed node's status: {stdout}");
    assert!(stdout.contains("no licence proof imported"), "{stdout}");
    let foreign = proof_for(0, "licence-node0.json");
    let (code, stdout, stderr) = over_mesh(&["license", "import", foreign.to_str().unwrap()], &swarm_key_file);
    assert_eq!(code, 1, "node 0's licence was imported by node 1: {stdout}");
    assert!(stderr.contains("no OP_RETURN output carries"), "{stderr}");
    let own = proof_for(OPERATOR_NODE, "licence-node1.json");
    let (code, stdout, stderr) = over_mesh(&["license", "import", own.to_str().unwrap(), "--json"], &swarm_key_file);
    assert_eq!(code, 0, "node 1's own licence:\n{stdout}\n{stderr}");
    let (code, stdout, _) = over_mesh(&["license", "status", "--json"], &swarm_key_file);
    assert_eq!(code, 0, "{stdout}");
    let state: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((state["licensed"].as_bool(), state["confirmations"].as_u64()), (Some(true), Some(3)), "{stdout}");
    // Node 1 anchors a checkpoint of its log in its licence's chain: it signs one and answers
    // the unfunded PSBT; what a wallet makes of it is mined (a regtest chain in memory); the
    // anchor file is imported, and the next bundle carries it — checked offline by `sovereign
    // verify --anchor-network regtest`, and not evaluated without it.
    let (psbt_file, checkpoint_file) = (out.path().join("anchor.psbt"), out.path().join("anchored-checkpoint.txt"));
    let (code, stdout, stderr) = over_mesh(
        &[
            "anchor",
            "request",
            "--out",
            psbt_file.to_str().unwrap(),
            "--checkpoint-out",
            checkpoint_file.to_str().unwrap(),
        ],
        &swarm_key_file,
    );
    assert_eq!(code, 0, "anchor request over the mesh:\n{stdout}\n{stderr}");
    let psbt = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read_to_string(&psbt_file).unwrap().trim(),
    )
    .unwrap();
    let mut funded = sovereign_ledger::bitcoin::psbt::Psbt::deserialize(&psbt).unwrap().unsigned_tx;
    funded.input.push(sovereign_ledger::bitcoin::TxIn::default());
    let anchored = SignedNote::parse(&std::fs::read_to_string(&checkpoint_file).unwrap()).unwrap();
    let anchor_file = out.path().join("anchor.json");
    let file = sovereign_ledger::anchor::AnchorFile {
        checkpoint: anchored.body.clone(),
        proof: sovereign_ledger::regtest::proof_of(&funded, 2),
    };
    std::fs::write(&anchor_file, serde_json::to_vec(&file).unwrap()).unwrap();
    let (code, stdout, stderr) =
        over_mesh(&["anchor", "import", anchor_file.to_str().unwrap(), "--json"], &swarm_key_file);
    assert_eq!(code, 0, "anchor import over the mesh:\n{stdout}\n{stderr}");
    let anchored_bundle = out.path().join("node1-anchored.bundle");
    let (code, stdout, stderr) =
        over_mesh(&["audit", "export", "--out", anchored_bundle.to_str().unwrap()], &swarm_key_file);
    assert_eq!(code, 0, "audit export after the anchor:\n{stdout}\n{stderr}");
    let verify_anchors = |network: Option<&str>| {
        let node_key = identities[OPERATOR_NODE].clone();
        let mut args =
            vec![os("verify"), anchored_bundle.clone().into(), os("--node-key"), os(&node_key), os("--json")];
        if let Some(network) = network {
            args.extend([os("--anchor-network"), os(network), os("--anchor-depth"), os("3")]);
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (_, stdout, _) = sovereign_e2e::sovereign(&refs);
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let checks = report["report"]["checks"].as_array().cloned().unwrap_or_default();
        checks.into_iter().find(|c| c["name"] == "anchors").unwrap_or_else(|| panic!("no anchors check: {stdout}"))
    };
    let anchors = verify_anchors(Some("regtest"));
    assert!(anchors["failures"].as_array().is_some_and(|f| f.is_empty()), "{anchors}");
    assert!(anchors["detail"].as_str().unwrap_or_default().contains("anchored by block 1"), "{anchors}");
    let unchecked = verify_anchors(None);
    assert!(unchecked["detail"] == "not evaluated", "{unchecked}");
    // Update distribution over the mesh: release v2 of this configuration, pushed to node 0
    // over its serial port, pulled by node 1 from node 0 (the operator asking over the mesh) and
    // by node 2 from node 1 — each node verifying it completely before writing a byte. Before
    // node 0 has it, and from a node it has not admitted, a pull is refused by name.
    let mut v2_input = input.clone();
    v2_input.version = 2;
    let v2_out = tempfile::tempdir().unwrap();
    variant(&v2_input, &dev_keys(), v2_out.path(), &Tamper::default());
    let (v2, _) =
        sovereign_image::update::bundle(v2_out.path(), &dev_keys(), 2, sovereign_update::PLATFORM_QEMU_X86_64).unwrap();
    let v2_file = out.path().join("v2.bundle");
    std::fs::write(&v2_file, &v2).unwrap();
    let v2_sha = hex::encode(sovereign_protocol::Blob::of(&v2).sha256);
    let over_socket = |node: usize, command: &[&str]| {
        let socket = appliances[node].control_socket();
        let mut args: Vec<std::ffi::OsString> = command.iter().map(|a| os(a)).collect();
        args.extend([os("--socket"), socket.into(), os("--key"), admin_key.clone().into()]);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        sovereign_e2e::sovereign(&refs)
    };
    let pull_from =
        |from: usize| ["update", "pull", "--from", &identities[from], "--sha256", &v2_sha, "--json"].map(String::from);
    fn as_strs(v: &[String; 7]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let (code, stdout, _) = over_mesh(&as_strs(&pull_from(0)), &swarm_key_file);
    assert_eq!(code, 1, "node 1 pulled from node 0 before it had anything: {stdout}");
    assert!(stdout.contains("no update is staged here"), "{stdout}");
    let stranger_identity = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().as_bytes());
    let (code, stdout, _) =
        over_mesh(&["update", "pull", "--from", &stranger_identity, "--sha256", &v2_sha, "--json"], &swarm_key_file);
    assert_eq!(code, 1, "a pull from a node not admitted: {stdout}");
    assert!(stdout.contains("is not a peer this node has admitted"), "{stdout}");
    let (code, stdout, stderr) = over_socket(0, &["update", "push", v2_file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "pushing v2 to node 0:\n{stdout}\n{stderr}");
    let staged_sha = |stdout: &str| {
        let state: serde_json::Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let sha: Vec<u8> = serde_json::from_value(state["staged"]["sha256"].clone()).unwrap_or_default();
        (state["staged"]["release_version"].as_u64(), hex::encode(sha))
    };
    assert_eq!(staged_sha(&stdout), (Some(2), v2_sha.clone()));
    let pulled = Instant::now();
    let (code, stdout, stderr) = over_mesh(&as_strs(&pull_from(0)), &swarm_key_file);
    assert_eq!(code, 0, "node 1 pulling v2 from node 0:\n{stdout}\n{stderr}");
    assert_eq!(staged_sha(&stdout), (Some(2), v2_sha.clone()));
    println!("node 1 pulled {} bytes from node 0 in {:.1} s", v2.len(), pulled.elapsed().as_secs_f64());
    let (code, stdout, stderr) = over_socket(2, &as_strs(&pull_from(OPERATOR_NODE)));
    assert_eq!(code, 0, "node 2 pulling v2 from node 1:\n{stdout}\n{stderr}");
    assert_eq!(staged_sha(&stdout), (Some(2), v2_sha.clone()));
    let served = format!("update bundle {v2_sha} ({} bytes) served to node ", v2.len());
    let served_deadline = Instant::now() + Duration::from_secs(30);
    wait_lines(&mut guests[0], &[&served, &identities[OPERATOR_NODE][..16]], 1, served_deadline);
    wait_lines(&mut guests[OPERATOR_NODE], &[&served, &identities[2][..16]], 1, served_deadline);
    // With another swarm key the operator gets no handshake, and says so.
    let (code, stdout, stderr) = over_mesh(&["status", "--json"], &other_key_file);
    assert_ne!(code, 0, "status over the mesh with another swarm key:\n{stdout}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    // An operator is not a mesh node: node 1 admitted no more than the two others.
    let admitted = guests[OPERATOR_NODE].console().matches("sovereign-runtime: mesh: admitted ").count();
    assert_eq!(admitted, 2, "the operator's client was admitted to the mesh");

    // The other platform: same image, same swarm key: it connects, and every node refuses it
    // admission naming PCR 1 (audited), even with its AK certified. Beside it, the stranger with
    // another swarm key: its dials never complete a handshake.
    let mut odd_guest = appliances[odd].boot(BOOT_TIMEOUT).unwrap();
    let mut stranger_guest = appliances[stranger].boot(BOOT_TIMEOUT).unwrap();
    let odd_deadline = Instant::now() + BOOT_TIMEOUT;
    wait_lines(&mut odd_guest, &["sovereign-runtime: control: attestation key ready"], 1, odd_deadline);
    certify(&appliances[odd], &appliances[odd].control_socket(), out.path(), false);
    for guest in guests.iter_mut() {
        let refused = wait_lines(guest, &["sovereign-runtime: mesh: refused admission to ", "PCR 1 "], 1, odd_deadline);
        assert!(!refused[0].contains("PCR 0 "), "only the platform's PCR differs: {refused:?}");
    }
    // And it admitted no node... nor was admitted by any: the three nodes still have two each.
    for guest in guests.iter_mut() {
        let admitted = guest.console().lines().filter(|l| l.contains("sovereign-runtime: mesh: admitted ")).count();
        assert_eq!(admitted, 2, "a node admitted the other platform");
    }
    // The stranger tried every node, again and again, and never got past pnet: no node ever
    // saw it connected, and it saw no node.
    let stranger_deadline = Instant::now() + BOOT_TIMEOUT;
    let line = wait_lines(
        &mut stranger_guest,
        &["sovereign-runtime: mesh: peer ", " listening on port 4001"],
        1,
        stranger_deadline,
    )
    .remove(0);
    let stranger_peer = line.split("mesh: peer ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    wait_lines(
        &mut stranger_guest,
        &["sovereign-runtime: mesh: a connection failed before its handshake completed"],
        6,
        stranger_deadline,
    );
    assert!(
        !stranger_guest.console().contains("sovereign-runtime: mesh: connected to"),
        "the node with another swarm key connected:\n{}",
        stranger_guest.console()
    );
    for (i, guest) in guests.iter_mut().enumerate() {
        assert!(!guest.console().contains(&stranger_peer), "node {i} learnt the stranger's peer ID");
    }
    drop(stranger_guest);
    // Audited: the refusal, with its reason, is an entry of node 0's log.
    let bundle = out.path().join("node0.bundle");
    sovereign_e2e::export_from(&appliances[0].control_socket(), &bundle);
    let bytes = std::fs::read(&bundle).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("\"mesh\":\"admission refused\"") && has("PCR 1 differs"), "the refusal is not in node 0's audit log");
    assert!(has("\"mesh\":\"admitted\""), "the admissions are not in node 0's audit log");
    drop(odd_guest);
    for guest in &guests {
        guest.powerdown().unwrap();
    }
}
