//! Shared by `tests/net.rs` and `benches/mesh.rs`: a node on a private swtpm whose PCR 15
//! holds a release, attesting with quotes over the admission binding and verifying its peers'
//! quotes with `verify_quote` against the reference PCR and the AKs the mesh trusts; event
//! collection; signed checkpoints.

#![allow(dead_code, clippy::unwrap_used)] // each user takes what it needs; test code

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use sovereign_audit::note::{Checkpoint, NoteVerifier, SignedNote, sign_note};
use sovereign_audit::witness::{Seen, Witness};
use sovereign_measured_boot::pcr::{PcrSelection, PcrValues, Sha256Digest};
use sovereign_measured_boot::structures::EccPublic;
use sovereign_measured_boot::tpm::{AttestationKey, SharedTpm, Tpm, TpmError};
use sovereign_measured_boot::verify::{Expectations, QuoteEvidence, verify_quote};
use sovereign_mesh::admission::Policy;
use sovereign_mesh::node::{MeshConfig, MeshEvent, MeshHandle, spawn};
use sovereign_mesh::swarm_key::SwarmKey;
use sovereign_qemu::Swtpm;

pub const WAIT: Duration = Duration::from_secs(60);

/// The quote evidence on the wire (the test's encoding).
#[derive(Serialize, Deserialize)]
struct Evidence {
    attest: Vec<u8>,
    signature: Vec<u8>,
    ak_public: Vec<u8>,
    ek_public: Vec<u8>,
    pcr15: [u8; 32],
}

/// A node's platform: its TPM (PCR 15 extended with `release`) and its attestation key.
pub struct Platform {
    pub swtpm: Swtpm,
    pub ak_stored: Vec<u8>,
    pub ak_public: Vec<u8>,
}

pub fn platform(release: &str) -> Platform {
    let swtpm = Swtpm::start().unwrap();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    tpm.pcr_extend(15, &Sha256Digest::of(release.as_bytes())).unwrap();
    let (ak, stored) = tpm.attestation_key(None).unwrap();
    let ak_public = ak.public.clone();
    tpm.release_attestation_key(ak);
    Platform { swtpm, ak_stored: stored, ak_public }
}

/// PCR 15 after a boot of `release`.
pub fn reference(release: &str) -> [u8; 32] {
    Sha256Digest::of_parts(&[&[0u8; 32], &Sha256Digest::of(release.as_bytes()).0]).0
}

pub fn node(
    name: &str,
    platform: &Platform,
    key: &SwarmKey,
    dial: Vec<Multiaddr>,
    trusted_aks: Vec<Vec<u8>>,
    logs: Vec<(String, NoteVerifier)>,
) -> (MeshHandle, SigningKey) {
    let identity = SigningKey::from_bytes(&sovereign_measured_boot::pcr::Sha256Digest::of(name.as_bytes()).0);
    // As the runtime's attestor does: one TPM session for the node's life, the AK loaded once.
    let tpm = SharedTpm::new(&platform.swtpm.tcti());
    let stored = platform.ak_stored.clone();
    let mut loaded: Option<AttestationKey> = None;
    let attest = Box::new(move |binding: &[u8; 32]| -> Result<Vec<u8>, String> {
        let selection = PcrSelection::new([15]).map_err(|e| e.to_string())?;
        let q = tpm
            .with(|t| {
                if loaded.is_none() {
                    loaded = Some(t.attestation_key(Some(&stored))?.0);
                }
                match &loaded {
                    Some(ak) => t.quote(ak, binding, &selection),
                    None => Err(TpmError::Invalid("no attestation key".into())),
                }
            })
            .map_err(|e| e.to_string())?;
        let pcr15 = q.pcr_values.get(15).ok_or("no PCR 15")?.0;
        let e = Evidence {
            attest: q.attest,
            signature: q.signature,
            ak_public: q.ak_public,
            ek_public: q.ek_public,
            pcr15,
        };
        serde_json::to_vec(&e).map_err(|e| e.to_string())
    });
    let expected = reference("release v1");
    let verify = Box::new(move |binding: &[u8; 32], _identity: &[u8; 32], bytes: &[u8]| -> Result<[u8; 32], String> {
        let e: Evidence = serde_json::from_slice(bytes).map_err(|e| format!("evidence: {e}"))?;
        if !trusted_aks.contains(&e.ak_public) {
            return Err("its attestation key is not one this mesh trusts".into());
        }
        let ak = EccPublic::parse(&e.ak_public).map_err(|e| e.to_string()).and_then(|p| p.verifying_key())?;
        let mut claimed = PcrValues::new();
        claimed.set(15, Sha256Digest(e.pcr15));
        let mut reference = PcrValues::new();
        reference.set(15, Sha256Digest(expected));
        let evidence = QuoteEvidence {
            attest: e.attest,
            signature: e.signature,
            ak_public: e.ak_public,
            ek_public: e.ek_public,
            pcr_values: claimed,
        };
        let selection = PcrSelection::new([15]).map_err(|e| e.to_string())?;
        let report = verify_quote(
            &evidence,
            &Expectations {
                ak: &ak,
                qualifying_data: binding,
                selection: &selection,
                reference: &reference,
                firmware_log: None,
                measurement_log: None,
            },
        );
        if report.passed() {
            Ok(e.pcr15)
        } else {
            Err(report.failures().map(|c| c.detail.clone()).collect::<Vec<_>>().join("; "))
        }
    });
    let witness = Witness::new(format!("witness-{name}"), identity.clone(), logs, Seen::default());
    let config = MeshConfig {
        keypair: libp2p::identity::Keypair::generate_ed25519(),
        node_identity: identity.verifying_key().to_bytes(),
        swarm_key: SwarmKey::from_bytes(*key.bytes()),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        dial,
        handshake_timeout: Duration::from_secs(5),
        // As in the appliance: a challenge not answered in time (a TPM slowed by a loaded host:
        // the first quote loads the AK) is a refusal, and the peer is challenged again.
        request_timeout: Duration::from_secs(20),
        admission: Policy { ttl_ms: 600_000, challenge_ms: 20_000 },
        follow_admitted: None,
        rechallenge_refused: Some(Duration::from_secs(3)),
        redial: None,
    };
    (spawn(config, attest, verify, witness).unwrap(), identity)
}

/// Collects `handle`'s events until `done` says so (or fails after [`WAIT`]).
pub fn until(handle: &MeshHandle, seen: &mut Vec<MeshEvent>, what: &str, done: impl Fn(&[MeshEvent]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}; events: {seen:#?}");
        if let Some(e) = handle.next_event(left.min(Duration::from_millis(200))) {
            seen.push(e);
        }
    }
}

pub fn listening(handle: &MeshHandle) -> Multiaddr {
    let mut seen = Vec::new();
    until(handle, &mut seen, "a listen address", |s| s.iter().any(|e| matches!(e, MeshEvent::Listening(_))));
    seen.into_iter()
        .find_map(|e| match e {
            MeshEvent::Listening(a) => Some(a),
            _ => None,
        })
        .unwrap()
}

pub fn admitted(seen: &[MeshEvent], peer: &PeerId) -> bool {
    seen.iter().any(|e| matches!(e, MeshEvent::Admitted { peer: p, .. } if p == peer))
}

pub fn checkpoint(origin: &str, key: &SigningKey, size: u64, root: [u8; 32]) -> String {
    let body = Checkpoint { origin: origin.into(), size, root, extensions: vec![] }.body();
    let mut note = SignedNote::new(body);
    sign_note(&mut note, origin, key);
    note.to_text()
}
