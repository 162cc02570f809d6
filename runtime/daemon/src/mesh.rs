//! The runtime's side of the private mesh (`sovereign-mesh`), when the signed configuration
//! names one: a libp2p node on the mesh port (its libp2p key derived from the node identity, so
//! its PeerId is stable across boots), which answers peers' challenges with this node's TPM
//! evidence and AK certificate, admits a peer only when the shared verifier
//! (`sovereign-verifier`) passes its evidence against this release's signed reference values,
//! the configured platform profile, EK roots and attestation CA, and witnesses admitted peers'
//! logs. Every admission and refusal (by this node, or of it) is audited with its reason; this
//! node's newest checkpoint goes to every admitted peer each interval, and the cosigned
//! checkpoint is kept beside the audit log (`<log>.witnessed`).
//!
//! The control API is served over the mesh too ([`Mesh::serve_control`]): a control stream from
//! any peer that holds the swarm key goes to the same server (gate, engine) as the
//! virtio-serial port. Update bundles travel between nodes ([`Mesh::serve_updates`],
//! [`BundlePuller`]): a node serves its staged bundle, asked for by digest, to admitted peers
//! only; a node told to pull (a signed `UpdatePull`) fetches it from the admitted peer named and
//! hands it to its engine, which verifies it as a push.
//!
//! Must never: admit a peer its evidence did not earn, cosign for a peer not admitted, serve
//! an update bundle to a peer not admitted, pull one from a peer not admitted, send a
//! cosignature before the witness state is stored, answer a control request the control API's
//! gate did not admit, or open any socket but the mesh's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use sovereign_audit::AuditLog;
use sovereign_audit::entry::{EntryKind, Severity};
use sovereign_audit::note::{Checkpoint, NoteVerifier, SignedNote, sign_note};
use sovereign_audit::witness::{Seen, Witness};
use sovereign_boot_contract::network::{MeshSettings, parse_cidr, parse_mac, peer_address};
use sovereign_mesh::admission::Policy;
use sovereign_mesh::libp2p::{Multiaddr, PeerId, identity};
use sovereign_mesh::node::{MeshCommand, MeshConfig, MeshEvent, MeshHandle, spawn_keeping};
use sovereign_mesh::swarm_key::SwarmKey;
use sovereign_protocol::Evidence;
use sovereign_protocol::akcert::AkCertificate;

use crate::control;

/// What a node sends as its evidence: the quote with its logs and manifest, and the AK's
/// certificate (the offline proof of the credential activation the attestation CA ran).
#[derive(serde::Serialize, serde::Deserialize)]
struct MeshEvidence {
    evidence: Evidence,
    ak_certificate: Option<AkCertificate>,
}

/// The origin of the audit log of the node with this identity (as the engine names it).
pub fn log_origin(identity: &[u8; 32]) -> String {
    format!("sovereign-appliance/{}", &hex::encode(identity)[..16])
}

/// The witness name of the node with this identity (its cosignature lines carry it).
pub fn witness_name(identity: &[u8; 32]) -> String {
    format!("sovereign-witness/{}", &hex::encode(identity)[..16])
}

fn log_of(identity: &[u8; 32]) -> Option<(String, NoteVerifier)> {
    let key = VerifyingKey::from_bytes(identity).ok()?;
    let origin = log_origin(identity);
    Some((origin.clone(), NoteVerifier::new(origin, key)))
}

fn now_unix() -> u64 {
    sovereign_canonical::now_ms() / 1000
}

/// What this node, as a witness, cosigned before: none when the file does not exist yet; a file
/// that cannot be read or parsed is a refusal (starting afresh would let the witness cosign a
/// log's rollback or second history).
fn read_seen(path: &std::path::Path) -> Result<Seen, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("the witness state {} does not parse: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Seen::default()),
        Err(e) => Err(format!("reading the witness state {}: {e}", path.display())),
    }
}

/// The checks of a peer's evidence: this release's reference values, the platform profile, the
/// EK roots and the attestation CA.
struct PeerTrust {
    release: VerifyingKey,
    reference: Vec<u8>,
    reference_signature: Vec<u8>,
    platform_profile: Vec<u8>,
    ek_roots: Vec<x509_cert::Certificate>,
    ak_ca: VerifyingKey,
}

impl PeerTrust {
    /// The peer's boot (its TPM's reset and restart counts), or why its evidence fails.
    fn judge(&self, binding: &[u8; 32], node_identity: &[u8; 32], bytes: &[u8]) -> Result<[u8; 32], String> {
        let sent: MeshEvidence = postcard::from_bytes(bytes).map_err(|e| format!("evidence does not decode: {e}"))?;
        let identity = VerifyingKey::from_bytes(node_identity).map_err(|_| "its node identity is not a key")?;
        let trust = sovereign_verifier::Trust {
            release_key: self.release,
            reference_values: self.reference.clone(),
            reference_signature: self.reference_signature.clone(),
            platform_profile: self.platform_profile.clone(),
            ek_roots: self.ek_roots.clone(),
            node_identity: Some(identity),
        };
        let now = now_unix();
        sovereign_verifier::verify_certified(
            binding,
            &sent.evidence,
            sent.ak_certificate.as_ref(),
            &self.ak_ca,
            &trust,
            now,
            now,
        )?;
        let quote = sovereign_measured_boot::structures::Quote::parse(&sent.evidence.attest)
            .map_err(|e| format!("quote: {e}"))?;
        let mut boot = Sha256::new();
        boot.update(quote.clock_info.reset_count.to_be_bytes());
        boot.update(quote.clock_info.restart_count.to_be_bytes());
        Ok(boot.finalize().into())
    }
}

/// The node's own addresses (the configured interfaces whose MAC it has): peers at them are not
/// dialled.
fn own_addresses(settings: &MeshSettings) -> Vec<std::net::Ipv4Addr> {
    let macs: Vec<[u8; 6]> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
                .filter_map(|m| parse_mac(&m).ok())
                .collect()
        })
        .unwrap_or_default();
    settings
        .interfaces
        .iter()
        .filter(|i| parse_mac(&i.mac).is_ok_and(|m| macs.contains(&m)))
        .filter_map(|i| parse_cidr(&i.address).ok().map(|(a, _)| a))
        .collect()
}

/// The running mesh.
pub struct Mesh {
    handle: MeshHandle,
    identity: SigningKey,
    audit: Option<Arc<AuditLog>>,
    interval: Duration,
    /// The size each witness last cosigned (learnt from its answers).
    cosigned: BTreeMap<PeerId, u64>,
    /// Witnesses asked and not answered yet (asked again only once they answer).
    asked: std::collections::BTreeSet<PeerId>,
    admitted: BTreeMap<PeerId, [u8; 32]>,
    /// `admitted`, for the threads that serve and pull update bundles.
    admitted_now: Admitted,
    /// The last refusal audited per peer (a peer refused again for the same reason is said on
    /// the console, not audited again).
    refusals: BTreeMap<PeerId, String>,
    /// The checkpoint being witnessed, with the cosignatures collected so far.
    witnessed: Option<SignedNote>,
    requests: std::sync::mpsc::Receiver<CosignRequest>,
    wanted: Option<Wanted>,
}

/// Starts the mesh. `reference` is this release's signed reference values (PID 1's), which
/// peers must match; without them no peer can be admitted, so the mesh does not start.
pub fn start(
    settings: &MeshSettings,
    identity: &SigningKey,
    node: Arc<control::Node>,
    audit: Option<Arc<AuditLog>>,
    release: VerifyingKey,
    reference: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<(Mesh, Cosigner), String> {
    settings.check()?;
    let (reference, reference_signature) =
        reference.ok_or("no release reference values from PID 1: no peer could be judged")?;
    let swarm_key = SwarmKey::parse(settings.swarm_key.as_bytes()).map_err(|e| format!("swarm key: {e}"))?;
    let ak_ca =
        sovereign_canonical::ed25519_public_key(&settings.ak_ca).map_err(|e| format!("the attestation CA key: {e}"))?;
    let ek_roots = sovereign_measured_boot::ekcert::trust_store_from_pem(settings.ek_roots.as_bytes())
        .map_err(|e| format!("EK roots: {e}"))?;
    let trust = PeerTrust {
        release,
        reference,
        reference_signature,
        platform_profile: settings.platform_profile.as_bytes().to_vec(),
        ek_roots,
        ak_ca,
    };
    let seed = Sha256::new().chain_update(b"sovereign-mesh-libp2p/v1\n").chain_update(identity.to_bytes()).finalize();
    let keypair =
        identity::Keypair::ed25519_from_bytes(<[u8; 32]>::from(seed)).map_err(|e| format!("libp2p key: {e}"))?;
    let own = own_addresses(settings);
    let dial: Vec<Multiaddr> = settings
        .peers
        .iter()
        .filter(|p| peer_address(p).is_ok_and(|(a, _)| !own.contains(&a)))
        .filter_map(|p| p.parse().ok())
        .collect();
    // On the node's own addresses, not 0.0.0.0: listening on the unspecified address would have
    // libp2p watch the interfaces through netlink, which the runtime may not open.
    if own.is_empty() {
        return Err("none of the configured interfaces is this node's".into());
    }
    let listen = own
        .iter()
        .map(|address| format!("/ip4/{address}/tcp/{}", settings.port).parse::<Multiaddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("listen address: {e}"))?;
    let node_identity = identity.verifying_key().to_bytes();
    let config = MeshConfig {
        keypair,
        node_identity,
        swarm_key,
        listen,
        dial,
        handshake_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        admission: Policy { ttl_ms: settings.admission_ttl_secs * 1000, challenge_ms: 30_000 },
        follow_admitted: Some(log_of),
        rechallenge_refused: Some(Duration::from_secs(10)),
        redial: Some(Duration::from_secs(5)),
    };
    let attest_node = node.clone();
    let attest = Box::new(move |binding: &[u8; 32]| -> Result<Vec<u8>, String> {
        let evidence = attest_node.evidence(binding)?;
        let ak_certificate = attest_node.attestor.lock().ok().and_then(|mut a| a.certificate());
        postcard::to_allocvec(&MeshEvidence { evidence, ak_certificate }).map_err(|e| e.to_string())
    });
    let verify = Box::new(move |binding: &[u8; 32], identity: &[u8; 32], evidence: &[u8]| {
        trust.judge(binding, identity, evidence)
    });
    let seen_path = audit.as_ref().map(|a| sovereign_audit::store::witness_seen_path(a.path()));
    let seen = match &seen_path {
        None => Seen::default(),
        Some(path) => read_seen(path)?,
    };
    let witness = Witness::new(witness_name(&node_identity), identity.clone(), Vec::new(), seen);
    let keep_seen: Option<sovereign_mesh::node::KeepSeen> = Some(Box::new(move |seen: &Seen| match &seen_path {
        None => Err("no data partition to keep the witness state on".into()),
        Some(path) => {
            let bytes = serde_json::to_vec(seen).map_err(|e| e.to_string())?;
            crate::attestor::write_durably(path, &bytes)
        }
    }));
    let fingerprint = config.swarm_key.fingerprint();
    let handle = spawn_keeping(config, attest, verify, witness, keep_seen)
        .map_err(|e| e.to_string().trim_start_matches("mesh: ").to_string())?;
    println!(
        "sovereign-runtime: mesh: peer {} listening on port {} (swarm key {}), dialling {} peers",
        handle.peer_id,
        settings.port,
        fingerprint,
        settings.peers.len()
    );
    let (request_tx, requests) = std::sync::mpsc::channel();
    Ok((
        Mesh {
            handle,
            identity: identity.clone(),
            audit,
            interval: Duration::from_secs(settings.witness_interval_secs),
            cosigned: BTreeMap::new(),
            asked: std::collections::BTreeSet::new(),
            admitted: BTreeMap::new(),
            admitted_now: Admitted::default(),
            refusals: BTreeMap::new(),
            witnessed: None,
            requests,
            wanted: None,
        },
        Cosigner { requests: request_tx },
    ))
}

/// Most control sessions over the mesh at once; a stream over it is answered with a one-line
/// refusal and closed.
pub const MAX_CONTROL_SESSIONS: usize = 8;
/// A control stream over the mesh: each read and write is bounded by this (a session whose
/// client sends nothing this long ends; answers the engine still owes it are still written).
pub const CONTROL_STREAM_TIMEOUT: Duration = Duration::from_secs(60);

impl Mesh {
    /// Serves the control API (`server`, the same gate and engine as the virtio-serial port's)
    /// to control streams over the mesh: any peer that completed the handshake (it holds the
    /// swarm key) may send requests; only those the gate admits are answered with more than a
    /// refusal. At most [`MAX_CONTROL_SESSIONS`] at once, each on a thread of its own.
    pub fn serve_control(&self, server: control::ControlServer) -> Result<(), String> {
        use std::io::Write as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut listener = self.handle.accept_control().map_err(|e| e.to_string())?;
        let active = Arc::new(AtomicUsize::new(0));
        let accept = move || {
            while let Some((peer, stream)) = listener.accept() {
                let (mut reader, mut writer) =
                    sovereign_mesh::control::blocking(stream, listener.runtime(), Some(CONTROL_STREAM_TIMEOUT));
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONTROL_SESSIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    println!(
                        "sovereign-runtime: mesh: refused a control session from {peer}: {MAX_CONTROL_SESSIONS} open"
                    );
                    let busy =
                        format!("busy: {MAX_CONTROL_SESSIONS} control sessions over the mesh are open; try again");
                    let _ = writer.write_all(&sovereign_protocol::frame(&sovereign_protocol::Frame::Refused(busy)));
                    continue;
                }
                println!("sovereign-runtime: mesh: control session from {peer}");
                let (server, active) = (server.clone(), active.clone());
                let session = move || {
                    server.session(&mut reader, Box::new(writer));
                    active.fetch_sub(1, Ordering::SeqCst);
                    println!("sovereign-runtime: mesh: control session from {peer} ended");
                };
                if let Err(e) = std::thread::Builder::new().name("mesh-session".into()).spawn(session) {
                    println!("sovereign-runtime: mesh: could not start a control session: {e}");
                }
            }
            println!("sovereign-runtime: mesh: control streams stopped (the mesh node stopped)");
        };
        std::thread::Builder::new()
            .name("mesh-control".into())
            .spawn(accept)
            .map(|_| ())
            .map_err(|e| format!("starting the mesh's control thread: {e}"))
    }

    /// Serves update bundles to admitted peers: each stream asks for one by SHA-256 and gets
    /// `staged(sha256)` (the bundle staged on this node, if it is that one) or a one-line
    /// refusal; a peer not admitted gets only the refusal. At most
    /// [`MAX_UPDATE_TRANSFERS`] at once; each served bundle is audited.
    pub fn serve_updates(
        &self,
        staged: impl Fn(&[u8; 32]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> Result<(), String> {
        use sovereign_mesh::transfer::{read_request, write_bundle, write_refusal};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut listener = self.handle.accept_updates().map_err(|e| e.to_string())?;
        let (admitted, audit) = (self.admitted_now.clone(), self.audit.clone());
        let staged = Arc::new(staged);
        let active = Arc::new(AtomicUsize::new(0));
        let accept = move || {
            while let Some((peer, stream)) = listener.accept() {
                let (mut reader, mut writer) =
                    sovereign_mesh::control::blocking(stream, listener.runtime(), Some(UPDATE_STREAM_TIMEOUT));
                let Some(node) = admitted.node_of(&peer) else {
                    println!("sovereign-runtime: mesh: refused an update transfer to {peer}: not admitted");
                    let _ = write_refusal(&mut writer, "not admitted here: attest first");
                    continue;
                };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_UPDATE_TRANSFERS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let _ = write_refusal(&mut writer, "busy: other transfers are running; try again");
                    continue;
                }
                let (staged, audit, active) = (staged.clone(), audit.clone(), active.clone());
                let serve = move || {
                    let node16 = &hex::encode(node)[..16];
                    let served =
                        read_request(&mut reader).map_err(|e| e.to_string()).and_then(|sha256| match staged(&sha256) {
                            Ok(bundle) => write_bundle(&mut writer, &bundle)
                                .map(|()| (sha256, bundle.len()))
                                .map_err(|e| e.to_string()),
                            Err(why) => {
                                let _ = write_refusal(&mut writer, &why);
                                Err(why)
                            }
                        });
                    match served {
                        Ok((sha256, len)) => {
                            let line = format!(
                                "update bundle {} ({len} bytes) served to node {node16} over the mesh",
                                hex::encode(sha256)
                            );
                            println!("sovereign-runtime: mesh: {line}");
                            if let Some(audit) = audit
                                && let Err(e) = audit.append(EntryKind::Update, line.as_bytes(), Severity::Info)
                            {
                                println!("sovereign-runtime: mesh: could not audit {line}: {e}");
                            }
                        }
                        Err(why) => println!("sovereign-runtime: mesh: no update bundle for node {node16}: {why}"),
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                };
                if let Err(e) = std::thread::Builder::new().name("mesh-update".into()).spawn(serve) {
                    println!("sovereign-runtime: mesh: could not start an update transfer: {e}");
                }
            }
            println!("sovereign-runtime: mesh: update streams stopped (the mesh node stopped)");
        };
        std::thread::Builder::new()
            .name("mesh-updates".into())
            .spawn(accept)
            .map(|_| ())
            .map_err(|e| format!("starting the mesh's update thread: {e}"))
    }

    /// How many peers are admitted now (for the metrics).
    pub fn admitted_count(&self) -> std::sync::Arc<dyn Fn() -> usize + Send + Sync> {
        let admitted = self.admitted_now.clone();
        std::sync::Arc::new(move || admitted.0.lock().map(|m| m.len()).unwrap_or(0))
    }

    /// What the engine holds to pull update bundles from admitted peers.
    pub fn puller(&self) -> BundlePuller {
        BundlePuller { opener: self.handle.opener(), admitted: self.admitted_now.clone() }
    }

    fn publish_admitted(&self) {
        if let Ok(mut now) = self.admitted_now.0.lock() {
            now.clone_from(&self.admitted);
        }
    }

    fn record(&self, kind: EntryKind, severity: Severity, what: serde_json::Value) {
        if let Some(audit) = &self.audit {
            let payload = serde_json::to_vec(&what).unwrap_or_default();
            if let Err(e) = audit.append(kind, &payload, severity) {
                println!("sovereign-runtime: mesh: could not audit {what}: {e}");
            }
        }
    }

    /// Runs the mesh's duties for ever: events audited and said, checkpoints witnessed.
    pub fn run(mut self) {
        let mut next_round = Instant::now() + self.interval;
        loop {
            let wait = next_round.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            match self.handle.events.recv_timeout(wait) {
                Ok(event) => self.on_event(event),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    println!("sovereign-runtime: mesh: FATAL: the mesh node stopped");
                    std::process::exit(2);
                }
            }
            while let Ok(request) = self.requests.try_recv() {
                self.on_cosign_request(request);
            }
            if self.wanted.as_ref().is_some_and(|w| Instant::now() >= w.deadline) {
                self.answer_wanted();
            }
            if Instant::now() >= next_round {
                // A round would replace the checkpoint an export is waiting on.
                if self.wanted.is_none() {
                    self.witness_round();
                }
                next_round = Instant::now() + self.interval;
            }
        }
    }

    /// An export's checkpoint: sent to every admitted witness now; answered once all of them
    /// cosigned it, or at the deadline with the cosignatures there are.
    fn on_cosign_request(&mut self, request: CosignRequest) {
        if let Some(w) = self.wanted.take() {
            let _ = w.reply.send(w.note);
        }
        if self.admitted.is_empty() {
            let _ = request.reply.send(request.note);
            return;
        }
        // The cosignatures already collected for this very checkpoint are kept.
        if self.witnessed.as_ref().is_none_or(|w| w.body != request.note.body) {
            self.witnessed = Some(request.note.clone());
        }
        self.wanted = Some(Wanted {
            note: request.note.clone(),
            reply: request.reply,
            deadline: Instant::now() + request.within,
            reasked: std::collections::BTreeSet::new(),
        });
        let missing = self.not_cosigned(&request.note);
        if missing.is_empty() {
            self.answer_wanted();
            return;
        }
        // Asked one by one: a witness is asked even if it cosigned this size already (it
        // cosigns the same checkpoint again).
        for peer in missing {
            self.ask(&request.note, Some(peer));
        }
    }

    /// The admitted peers whose cosignature of `note` has not been collected.
    fn not_cosigned(&self, note: &SignedNote) -> Vec<PeerId> {
        let collected = self.witnessed.as_ref().filter(|w| w.body == note.body);
        self.admitted
            .iter()
            .filter(|(_, id)| {
                let name = witness_name(id);
                !collected.is_some_and(|w| w.signatures.iter().any(|s| s.name == name))
            })
            .map(|(peer, _)| *peer)
            .collect()
    }

    fn answer_wanted(&mut self) {
        if let Some(w) = self.wanted.take() {
            let note = self.witnessed.clone().filter(|n| n.body == w.note.body).unwrap_or(w.note);
            let _ = w.reply.send(note);
        }
    }

    /// A witness answered while an export waits: asked again (once) if it has not cosigned the
    /// export's checkpoint; the export answered when every admitted witness has.
    fn after_answer(&mut self, peer: PeerId) {
        let Some(note) = self.wanted.as_ref().map(|w| w.note.clone()) else { return };
        let missing = self.not_cosigned(&note);
        if missing.is_empty() {
            self.answer_wanted();
            return;
        }
        if missing.contains(&peer) && self.wanted.as_mut().is_some_and(|w| w.reasked.insert(peer)) {
            self.ask(&note, Some(peer));
        }
    }

    fn on_event(&mut self, event: MeshEvent) {
        match event {
            MeshEvent::Listening(addr) => println!("sovereign-runtime: mesh: listening on {addr}"),
            MeshEvent::Connected(peer) => println!("sovereign-runtime: mesh: connected to {peer}, challenged it"),
            MeshEvent::Client(peer) => {
                println!("sovereign-runtime: mesh: {peer} speaks no mesh protocol: a client (control API only)")
            }
            MeshEvent::Disconnected(peer) => {
                self.admitted.remove(&peer);
                self.publish_admitted();
                self.asked.remove(&peer);
                println!("sovereign-runtime: mesh: {peer} disconnected")
            }
            MeshEvent::HandshakeFailed { peer, reason } => println!(
                "sovereign-runtime: mesh: a connection failed before its handshake completed ({}): {reason}",
                peer.map(|p| p.to_string()).unwrap_or_else(|| "peer unknown".into())
            ),
            MeshEvent::Admitted { peer, node_identity } => {
                self.refusals.remove(&peer);
                let first = self.admitted.insert(peer, node_identity).is_none();
                self.publish_admitted();
                if first {
                    println!("sovereign-runtime: mesh: admitted {peer} (node {})", &hex::encode(node_identity)[..16]);
                    self.record(
                        EntryKind::Attestation,
                        Severity::Info,
                        serde_json::json!({"mesh": "admitted", "peer": peer.to_string(), "node": hex::encode(node_identity)}),
                    );
                    self.witness_round();
                }
            }
            MeshEvent::Refused { peer, reason } => {
                self.admitted.remove(&peer);
                self.publish_admitted();
                println!("sovereign-runtime: mesh: refused admission to {peer}: {reason}");
                if self.refusals.get(&peer) == Some(&reason) {
                    return;
                }
                self.refusals.insert(peer, reason.clone());
                self.record(
                    EntryKind::Refusal,
                    Severity::Warning,
                    serde_json::json!({"mesh": "admission refused", "peer": peer.to_string(), "reason": reason}),
                );
            }
            MeshEvent::RefusedToWitness { peer, reason } => {
                println!("sovereign-runtime: mesh: refused to witness for {peer}: {reason}");
                // A proof from another size than this witness's is the peer catching up (it
                // resumes from the size named), not a fault: said, not audited.
                if reason.starts_with("the proof is from size") {
                    return;
                }
                let split = reason.starts_with("split view");
                self.record(
                    EntryKind::Refusal,
                    if split { Severity::Critical } else { Severity::Warning },
                    serde_json::json!({"mesh": "witnessing refused", "peer": peer.to_string(), "reason": reason}),
                );
            }
            MeshEvent::WitnessRefused { peer, reason } => {
                self.asked.remove(&peer);
                println!("sovereign-runtime: mesh: {peer} did not cosign: {reason}");
                // "the proof is from size A; this witness last cosigned size B": resume from B.
                if let Some(size) = reason.rsplit("last cosigned size ").next().and_then(|s| s.trim().parse().ok()) {
                    self.cosigned.insert(peer, size);
                }
                self.after_answer(peer);
            }
            MeshEvent::Cosigned { peer, note } => {
                self.on_cosigned(peer, &note);
                self.after_answer(peer);
            }
        }
    }

    fn on_cosigned(&mut self, peer: PeerId, text: &str) {
        self.asked.remove(&peer);
        let Ok(note) = SignedNote::parse(text) else { return };
        let Ok(cp) = Checkpoint::parse_body(&note.body) else { return };
        let Some(node_identity) = self.admitted.get(&peer) else { return };
        let Ok(key) = VerifyingKey::from_bytes(node_identity) else { return };
        let name = witness_name(node_identity);
        if NoteVerifier::new(name.clone(), key).verify_cosignature(&note).is_err() {
            println!("sovereign-runtime: mesh: {peer}'s cosignature does not verify: ignored");
            return;
        }
        self.cosigned.insert(peer, cp.size);
        let Some(witnessed) = self.witnessed.as_mut().filter(|w| w.body == note.body) else { return };
        for line in note.signatures.into_iter().filter(|s| s.name == name) {
            witnessed.signatures.retain(|s| s.name != name);
            witnessed.signatures.push(line);
        }
        let count = witnessed.signatures.len().saturating_sub(1);
        println!("sovereign-runtime: mesh: checkpoint {} cosigned by {name} ({count} cosignatures)", cp.size);
        // The note itself, on one line, for an auditor reading the console.
        println!(
            "sovereign-runtime: mesh: witnessed note {}",
            serde_json::to_string(&witnessed.to_text()).unwrap_or_default()
        );
        if let Some(audit) = &self.audit
            && let Err(e) = crate::attestor::write_durably(
                &sovereign_audit::store::witnessed_path(audit.path()),
                witnessed.to_text().as_bytes(),
            )
        {
            println!("sovereign-runtime: mesh: could not keep the cosigned checkpoint: {e}");
        }
    }

    /// Signs a checkpoint of the log as it stands and sends it to every admitted peer, with a
    /// consistency proof from the size that peer last cosigned.
    fn witness_round(&mut self) {
        let Some(audit) = &self.audit else { return };
        let body = audit.checkpoint_body();
        if body.size == 0 {
            return;
        }
        let mut note = SignedNote::new(body.body());
        sign_note(&mut note, audit.origin(), &self.identity);
        if self.witnessed.as_ref().is_none_or(|w| w.body != note.body) {
            self.witnessed = Some(note.clone());
        }
        self.ask(&note, None);
    }

    /// Sends `note` to every admitted peer not already asked (or to `only`), with a consistency
    /// proof from the size that peer last cosigned.
    fn ask(&mut self, note: &SignedNote, only: Option<PeerId>) {
        let Some(audit) = &self.audit else { return };
        let Ok(cp) = Checkpoint::parse_body(&note.body) else { return };
        let text = note.to_text();
        let mut asked = Vec::new();
        for peer in self.admitted.keys().filter(|p| only.is_none_or(|o| o == **p)) {
            if self.asked.contains(peer) {
                continue;
            }
            let from = self.cosigned.get(peer).copied().unwrap_or(0);
            if from > cp.size || (from == cp.size && from > 0 && only.is_none()) {
                continue;
            }
            let proof = match audit.consistency_proof(from, cp.size) {
                Ok(p) => p,
                Err(e) => {
                    println!("sovereign-runtime: mesh: no consistency proof {from} → {}: {e}", cp.size);
                    continue;
                }
            };
            self.handle.send(MeshCommand::WitnessTo { peer: *peer, checkpoint: text.clone(), old_size: from, proof });
            asked.push(*peer);
        }
        self.asked.extend(asked);
    }
}

/// Most update bundles served at once.
pub const MAX_UPDATE_TRANSFERS: usize = 2;
/// Each read and write of an update stream is bounded by this.
pub const UPDATE_STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole pull (a bundle of up to `sovereign_update::MAX_BUNDLE_BYTES`) must finish within
/// this.
pub const UPDATE_PULL_DEADLINE: Duration = Duration::from_secs(300);

/// The peers admitted now, by libp2p identity, with their node identities (shared with the
/// threads that serve and pull update bundles).
#[derive(Clone, Default)]
struct Admitted(Arc<std::sync::Mutex<BTreeMap<PeerId, [u8; 32]>>>);

impl Admitted {
    fn node_of(&self, peer: &PeerId) -> Option<[u8; 32]> {
        self.0.lock().ok()?.get(peer).copied()
    }

    fn peer_of(&self, node: &[u8; 32]) -> Option<PeerId> {
        self.0.lock().ok()?.iter().find(|(_, n)| *n == node).map(|(p, _)| *p)
    }
}

/// Pulls update bundles from admitted peers (the engine's `UpdatePull`).
#[derive(Clone)]
pub struct BundlePuller {
    opener: sovereign_mesh::control::StreamOpener,
    admitted: Admitted,
}

impl BundlePuller {
    /// The bundle with `sha256` from the admitted peer whose node identity is `from`: at most
    /// `sovereign_update::MAX_BUNDLE_BYTES`, within [`UPDATE_PULL_DEADLINE`], its digest
    /// checked; progress said on the console each quarter. Why not, in one line.
    pub fn pull(&self, from: &[u8; 32], sha256: &[u8; 32]) -> Result<Vec<u8>, String> {
        use sovereign_mesh::transfer::{UPDATE_PROTOCOL, read_bundle, write_request};
        let node16 = &hex::encode(from)[..16];
        let peer =
            self.admitted.peer_of(from).ok_or_else(|| format!("node {node16} is not a peer this node has admitted"))?;
        let (mut reader, mut writer) = self.opener.open(peer, UPDATE_PROTOCOL, UPDATE_STREAM_TIMEOUT)?;
        write_request(&mut writer, sha256).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + UPDATE_PULL_DEADLINE;
        let mut said = 0;
        let limit = sovereign_update::MAX_BUNDLE_BYTES as u64;
        let bundle = read_bundle(&mut reader, sha256, limit, deadline, &mut |received, total| {
            let quarter = received.saturating_mul(4) / total.max(1);
            if quarter > said {
                said = quarter;
                println!(
                    "sovereign-runtime: mesh: pulling update {}: {received} of {total} bytes",
                    &hex::encode(sha256)[..16]
                );
            }
        })
        .map_err(|e| e.to_string())?;
        Ok(bundle)
    }
}

/// An export's request to have its checkpoint cosigned.
pub struct CosignRequest {
    note: SignedNote,
    within: Duration,
    reply: std::sync::mpsc::Sender<SignedNote>,
}

/// An export waiting on its cosignatures.
struct Wanted {
    note: SignedNote,
    reply: std::sync::mpsc::Sender<SignedNote>,
    deadline: Instant,
    reasked: std::collections::BTreeSet<PeerId>,
}

/// What the engine holds to have an export's checkpoint cosigned by the mesh's witnesses.
#[derive(Clone)]
pub struct Cosigner {
    requests: std::sync::mpsc::Sender<CosignRequest>,
}

impl Cosigner {
    /// `note` with the cosignatures the admitted witnesses give within `within` (as it was,
    /// when none do or the mesh has stopped).
    pub fn cosign(&self, note: &SignedNote, within: Duration) -> SignedNote {
        let (reply, answer) = std::sync::mpsc::channel();
        if self.requests.send(CosignRequest { note: note.clone(), within, reply }).is_err() {
            return note.clone();
        }
        answer.recv_timeout(within + Duration::from_secs(1)).unwrap_or_else(|_| note.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_state_missing_is_fresh_and_unreadable_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.log.witness-seen");
        assert_eq!(read_seen(&path), Ok(Seen::default()));
        let mut seen = Seen::default();
        seen.0.insert("sovereign-appliance/0123456789abcdef".into(), (7, [3; 32]));
        std::fs::write(&path, serde_json::to_vec(&seen).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_seen(&path), Ok(seen));
        std::fs::write(&path, b"{ torn").unwrap_or_else(|e| panic!("{e}"));
        let refused = read_seen(&path).unwrap_err();
        assert!(refused.contains("witness state") && refused.contains("does not parse"), "{refused}");
    }
}
