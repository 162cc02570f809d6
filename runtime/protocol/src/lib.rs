//! `sovereign-protocol`: the control API's wire format — typed requests and responses
//! (serde + postcard), pipeline commands included ([`pipeline`]); each request signed by an
//! operator key for one node, with a nonce and a timestamp; each response signed by the node
//! identity and bound to the request it answers — plus the [`Gate`] that refuses unsigned,
//! wrongly signed, misaddressed, unauthorized, stale and replayed requests with a one-line
//! reason, and the framing of any byte stream with payloads of any size as checked chunks
//! ([`stream`]).
//!
//! Pure: no IO and no clock (callers pass `now`). Transport-independent: the same frames go
//! over a virtio-serial port, a TCP stream or the mesh.
//!
//! Must never: accept a request whose signature it did not verify, a request signed for another
//! node, or the same signed request twice within its freshness window; keep a chunk that does
//! not match its signed digest; allocate more than [`MAX_FRAME`] for a frame.

#![forbid(unsafe_code)]

pub mod akcert;
pub mod deployment;
mod gate;
mod message;
pub mod pipeline;
pub mod stream;

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

pub use gate::{Gate, Refusal};
pub use message::{ANY_NODE, Confinement, Evidence, Request, Response, SignedRequest, SignedResponse, Status};
pub use stream::{
    Assembly, Attachment, Blob, CHUNK_SIZE, Chunk, Frame, MAX_FRAME, MAX_MESSAGE_PAYLOAD, Payloads, decode, frame,
    frame_len,
};

const ATTEST_CONTEXT: &[u8] = b"sovereign-attest/v1\n";

/// The PCRs every attestation quotes: the firmware (0–7), the load options and initrd the
/// Linux EFI stub measured (9), the UKI sections (11), the boot-path command line, credentials
/// and extensions the systemd stub would measure (12, 13: zero in a genuine boot) and the
/// project PCR (15).
pub const ATTESTED_PCRS: [u8; 13] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 15];

/// The quote's qualifying data: `SHA-256("sovereign-attest/v1\n" || nonce || identity)`. It
/// binds the verifier's nonce and the node's Ed25519 identity public key into the TPM quote.
pub fn attest_qualifying_data(nonce: &[u8; 32], identity: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ATTEST_CONTEXT);
    h.update(nonce);
    h.update(identity);
    h.finalize().into()
}

/// Fuzz entry point: arbitrary bytes as a frame body, a request through the gate and its
/// attachments through an assembly fed with the same bytes as a chunk.
pub fn fuzz_request(data: &[u8]) {
    let node = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    match decode(data) {
        Ok(Frame::Request(req)) => {
            let mut gate = Gate::new(node, vec![SigningKey::from_bytes(&[1; 32]).verifying_key()], 30_000);
            let _ = gate.admit(&req, req.timestamp_ms);
            if let Ok(mut assembly) = Assembly::new(req.digest(), &req.attachments) {
                let chunk = Chunk { message: req.digest(), attachment: 0, index: 0, bytes: data.to_vec() };
                let _ = assembly.accept(&chunk);
                let _ = assembly.remaining();
                let _ = assembly.finish();
            }
        }
        Ok(Frame::Response(resp)) => {
            let _ = stream::check_manifests(&resp.attachments);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn node() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn gate() -> Gate {
        Gate::new(node().verifying_key().to_bytes(), vec![admin().verifying_key()], 30_000)
    }

    fn sign(request: Request, key: &SigningKey, nonce: u8, at: u64) -> SignedRequest {
        SignedRequest::sign(request, node().verifying_key().to_bytes(), vec![], key, [nonce; 16], at)
    }

    #[test]
    fn admits_a_fresh_signed_request_once() {
        let mut g = gate();
        let r = sign(Request::Status, &admin(), 7, 1_000_000);
        g.admit(&r, 1_000_500).unwrap();
        assert_eq!(g.admit(&r, 1_000_600), Err(Refusal::Replayed));
    }

    #[test]
    fn a_request_from_before_a_restart_is_never_admitted_again() {
        // Admitted by the runtime that ran before...
        let r = sign(Request::Status, &admin(), 9, 1_000_000);
        gate().admitting_from(900_000).admit(&r, 1_000_100).unwrap();
        // ...and replayed, within its freshness window, to the runtime restarted at 1_005_000:
        // its nonce was only in the old runtime's memory; its timestamp refuses it.
        let mut restarted = gate().admitting_from(1_005_000);
        let refusal = restarted.admit(&r, 1_005_500).unwrap_err();
        assert_eq!(refusal, Refusal::BeforeStart { signed_ms: 1_000_000, started_ms: 1_005_000 });
        assert!(refusal.to_string().contains("before this runtime started"), "{refusal}");
        // A request signed anew is admitted.
        restarted.admit(&sign(Request::Status, &admin(), 10, 1_005_400), 1_005_500).unwrap();
    }

    #[test]
    fn refuses_every_bad_request_with_a_reason() {
        let mut g = gate();
        let now = 5_000_000;
        let stranger = SigningKey::from_bytes(&[2; 32]);
        assert!(matches!(g.admit(&sign(Request::Status, &stranger, 1, now), now), Err(Refusal::NotAuthorized(_))));
        let mut forged = sign(Request::Status, &admin(), 2, now);
        forged.request = Request::Attest { nonce: [0; 32] };
        assert_eq!(g.admit(&forged, now), Err(Refusal::BadSignature));
        let mut unsigned = sign(Request::Status, &admin(), 3, now);
        unsigned.signature.clear();
        assert_eq!(g.admit(&unsigned, now), Err(Refusal::BadSignature));
        assert!(matches!(g.admit(&sign(Request::Status, &admin(), 4, now - 60_000), now), Err(Refusal::Stale { .. })));
        assert!(matches!(g.admit(&sign(Request::Status, &admin(), 5, now + 60_000), now), Err(Refusal::Stale { .. })));
        let mut readdressed = sign(Request::Status, &admin(), 6, now);
        readdressed.node = [7; 32];
        assert_eq!(g.admit(&readdressed, now), Err(Refusal::BadSignature), "the node is signed");
        assert_eq!(Refusal::Replayed.to_string(), "request nonce already used (replay)");
    }

    #[test]
    fn a_request_signed_for_another_node_is_refused_and_only_status_may_name_any_node() {
        let mut g = gate();
        let now = 5_000_000;
        let other_node = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        let meant_elsewhere =
            SignedRequest::sign(Request::Attest { nonce: [1; 32] }, other_node, vec![], &admin(), [1; 16], now);
        let refusal = g.admit(&meant_elsewhere, now).unwrap_err();
        assert!(matches!(refusal, Refusal::WrongNode { .. }));
        assert_eq!(
            refusal.to_string(),
            format!(
                "request is addressed to node {}, not to this node {}",
                hex_of(&other_node),
                hex_of(&node().verifying_key().to_bytes())
            )
        );
        let discovery = SignedRequest::sign(Request::Status, ANY_NODE, vec![], &admin(), [2; 16], now);
        g.admit(&discovery, now).unwrap();
        let wildcard_attest =
            SignedRequest::sign(Request::Attest { nonce: [1; 32] }, ANY_NODE, vec![], &admin(), [3; 16], now);
        assert!(matches!(g.admit(&wildcard_attest, now), Err(Refusal::WrongNode { .. })));
    }

    #[test]
    fn responses_are_signed_and_bound_to_their_request() {
        let node = node();
        let req = sign(Request::Attest { nonce: [4; 32] }, &admin(), 1, 1);
        let other = sign(Request::Attest { nonce: [5; 32] }, &admin(), 2, 1);
        let resp = SignedResponse::sign(req.digest(), Response::Refused("no".into()), vec![], &node);
        assert_eq!(resp.verify(&req, &node.verifying_key()).unwrap(), &Response::Refused("no".into()));
        assert_eq!(resp.verify(&other, &node.verifying_key()), Err(Refusal::WrongRequest));
        assert_eq!(resp.verify(&req, &admin().verifying_key()), Err(Refusal::BadSignature));
        let mut tampered = resp.clone();
        tampered.response = Response::Refused("yes".into());
        assert_eq!(tampered.verify(&req, &node.verifying_key()), Err(Refusal::BadSignature));
        let mut swapped = resp.clone();
        swapped.attachments = vec![Attachment::describe(b"other bytes")];
        assert_eq!(swapped.verify(&req, &node.verifying_key()), Err(Refusal::BadSignature));
    }

    /// The update state carries PID 1's boot-slot report (a type shared with PID 1's JSON):
    /// it must survive postcard, which has no flattened or internally tagged serde forms.
    #[test]
    fn an_update_state_with_boot_slots_is_signed_and_framed() {
        use crate::pipeline::{Reply, UpdateState};
        use sovereign_boot_contract::slots::{BootSlots, survey};
        let names = ["sovereign-v1.efi", "sovereign-v2+0-1.efi", "sovereign-v3+1-0.efi"].map(String::from);
        let boot = BootSlots::of(&survey(names), 1).unwrap();
        let state = UpdateState {
            running_version: 1,
            floor: 1,
            staged: None,
            boot: Some(boot),
            applying: true,
            approvals_required: 2,
        };
        let node = SigningKey::from_bytes(&[3; 32]);
        let req = sign(Request::Status, &admin(), 1, 1);
        let response = Response::Pipeline(Reply::Update(state));
        let resp = SignedResponse::sign(req.digest(), response.clone(), vec![], &node);
        let f = frame(&Frame::Response(Box::new(resp.clone())));
        let len = frame_len([f[0], f[1], f[2], f[3]]).unwrap();
        let Frame::Response(decoded) = decode(&f[4..4 + len]).unwrap() else { panic!("not a response") };
        assert_eq!(decoded.verify(&req, &node.verifying_key()).unwrap(), &response);
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let req = sign(Request::Status, &admin(), 1, 1);
        let f = frame(&Frame::Request(Box::new(req.clone())));
        let len = frame_len([f[0], f[1], f[2], f[3]]).unwrap();
        assert_eq!(decode(&f[4..4 + len]).unwrap(), Frame::Request(Box::new(req)));
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
        let chunk =
            frame(&Frame::Chunk(Chunk { message: [0; 32], attachment: 0, index: 0, bytes: vec![7; CHUNK_SIZE] }));
        assert!(chunk.len() - 4 <= MAX_FRAME, "a full chunk fits in a frame");
    }

    fn payloads() -> Vec<Vec<u8>> {
        vec![(0..CHUNK_SIZE * 2 + 17).map(|i| (i % 251) as u8).collect(), vec![], b"module".to_vec()]
    }

    #[test]
    fn attachments_travel_as_chunks_checked_against_the_signed_manifest() {
        let payloads = payloads();
        let manifests = Attachment::describe_all(&payloads);
        assert_eq!(manifests[0].chunks.len(), 3);
        let req = SignedRequest::sign(Request::Status, [1; 32], manifests.clone(), &admin(), [1; 16], 1);
        let mut assembly = Assembly::new(req.digest(), &req.attachments).unwrap();
        assert_eq!(assembly.remaining(), (CHUNK_SIZE * 2 + 17 + 6) as u64);
        for f in stream::chunks(req.digest(), &payloads) {
            let Frame::Chunk(c) = f else { panic!("not a chunk") };
            assembly.accept(&c).unwrap();
        }
        assert!(assembly.is_complete());
        let got = assembly.finish().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got.get(&Blob::of(&payloads[0]), "dataset").unwrap(), &payloads[0][..]);
        assert_eq!(got.get(&Blob::of(b""), "empty").unwrap(), b"");
        let missing = got.get(&Blob::of(b"never sent"), "dataset").unwrap_err();
        assert!(missing.to_string().starts_with("payload refused: dataset: no attachment with SHA-256"), "{missing}");
    }

    #[test]
    fn a_changed_reordered_foreign_or_missing_chunk_is_refused() {
        let payloads = payloads();
        let digest = [3; 32];
        let frames: Vec<Chunk> = stream::chunks(digest, &payloads)
            .map(|f| match f {
                Frame::Chunk(c) => c,
                _ => panic!("not a chunk"),
            })
            .collect();
        let manifests = Attachment::describe_all(&payloads);
        let fresh = || Assembly::new(digest, &manifests).unwrap();

        let mut changed = frames[0].clone();
        changed.bytes[5] ^= 1;
        assert!(fresh().accept(&changed).unwrap_err().to_string().contains("does not match its signed digest"));
        assert!(fresh().accept(&frames[1]).unwrap_err().to_string().contains("where chunk 0 of attachment 0 was due"));
        let mut foreign = frames[0].clone();
        foreign.message = [4; 32];
        assert!(fresh().accept(&foreign).unwrap_err().to_string().contains("another message"));
        let mut short = frames[0].clone();
        short.bytes.pop();
        assert!(fresh().accept(&short).unwrap_err().to_string().contains("the manifest says"));
        let mut partial = fresh();
        partial.accept(&frames[0]).unwrap();
        assert!(partial.finish().unwrap_err().to_string().contains("never arrived"));
        let mut done = fresh();
        for c in &frames {
            done.accept(c).unwrap();
        }
        assert!(done.accept(&frames[0]).unwrap_err().to_string().contains("after the last attachment"));
    }

    #[test]
    fn manifests_over_the_limits_are_refused_before_any_chunk() {
        let huge = Attachment { len: MAX_MESSAGE_PAYLOAD + 1, sha256: [0; 32], chunks: vec![] };
        assert!(stream::check_manifests(&[huge]).unwrap_err().to_string().contains("a message may carry"));
        let lying = Attachment { len: 10, sha256: [0; 32], chunks: vec![[0; 32]; 2] };
        assert!(stream::check_manifests(&[lying]).unwrap_err().to_string().contains("2 chunk digests for 10 bytes"));
        let many = vec![Attachment::describe(b""); 65];
        assert!(stream::check_manifests(&many).unwrap_err().to_string().contains("65 attachments"));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            fuzz_request(&bytes);
        }
    }
}
