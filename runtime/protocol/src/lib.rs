//! `sovereign-protocol`: the control API's wire format — typed requests and responses
//! (serde + postcard), each request signed by an operator key with a nonce and a timestamp,
//! each response signed by the node identity and bound to the request it answers — plus the
//! [`Gate`] that refuses unsigned, wrongly signed, unauthorized, stale and replayed requests
//! with a one-line reason, and length-prefixed framing for any byte stream.
//!
//! Pure: no IO and no clock (callers pass `now`). Transport-independent: the same frames go
//! over a virtio-serial port, a TCP stream or the mesh.
//!
//! Must never: accept a request whose signature it did not verify, or the same signed request
//! twice within its freshness window; allocate more than [`MAX_FRAME`] for a frame.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Largest frame accepted (evidence with event logs fits comfortably).
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
const REQUEST_CONTEXT: &[u8] = b"sovereign-request/v1\n";
const RESPONSE_CONTEXT: &[u8] = b"sovereign-response/v1\n";
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

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Version, manifest digest, uptime, identity.
    Status,
    /// A TPM quote binding `nonce` and the node identity, with the evidence to check it.
    Attest {
        /// The verifier's fresh nonce.
        nonce: [u8; 32],
    },
    /// Proves the attestation key lives in the same TPM as the endorsement key: the TPM
    /// releases `secret` from a credential made for the AK's name under the EK only if both
    /// keys are loaded in it (TPM2_ActivateCredential).
    ActivateCredential {
        /// `TPM2B_ID_OBJECT` contents (integrity HMAC and encrypted credential).
        credential_blob: Vec<u8>,
        /// `TPM2B_ENCRYPTED_SECRET` contents (the seed, RSA-OAEP encrypted to the EK).
        encrypted_secret: Vec<u8>,
    },
    /// A pipeline command (`sovereign_pipeline::Command`, postcard-encoded): start, status,
    /// approve, resume, fetch an artifact, export a compliance bundle.
    Pipeline(Vec<u8>),
}

/// A request with its operator signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The operator's Ed25519 public key.
    pub operator: [u8; 32],
    /// Random per request: a request is accepted once.
    pub nonce: [u8; 16],
    /// Milliseconds since the Unix epoch on the operator's clock.
    pub timestamp_ms: u64,
    /// The request.
    pub request: Request,
    /// Signature over [`SignedRequest::signing_bytes`].
    pub signature: Vec<u8>,
}

impl SignedRequest {
    /// Signs `request` as `operator`.
    pub fn sign(request: Request, operator: &SigningKey, nonce: [u8; 16], timestamp_ms: u64) -> Self {
        let mut r = SignedRequest {
            operator: operator.verifying_key().to_bytes(),
            nonce,
            timestamp_ms,
            request,
            signature: vec![],
        };
        r.signature = operator.sign(&r.signing_bytes()).to_bytes().to_vec();
        r
    }

    /// `"sovereign-request/v1\n" || postcard(operator, nonce, timestamp, request)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = REQUEST_CONTEXT.to_vec();
        out.extend(
            postcard::to_allocvec(&(&self.operator, &self.nonce, self.timestamp_ms, &self.request))
                .expect("encoding in memory cannot fail"),
        );
        out
    }

    /// SHA-256 of the whole signed request (what the response is bound to).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(postcard::to_allocvec(self).expect("encoding in memory cannot fail")).into()
    }
}

/// Facts about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Image version.
    pub version: u64,
    /// SHA-256 of the signed manifest the node booted.
    pub manifest_sha256: [u8; 32],
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Node identity public key.
    pub identity: [u8; 32],
    /// What confines the runtime that answered, as the kernel reports it.
    pub confinement: Confinement,
}

/// The runtime's confinement as the kernel reports it (`/proc/self/status`,
/// `/sys/kernel/security/lockdown`), read when the request is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Real, effective, saved and file-system user IDs.
    pub uids: [u32; 4],
    /// Real, effective, saved and file-system group IDs.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Capability sets as bit masks: inheritable, permitted, effective, bounding, ambient.
    pub cap_inh: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Capability bounding set.
    pub cap_bnd: u64,
    /// Ambient capabilities.
    pub cap_amb: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
    /// `Seccomp`: 0 off, 1 strict, 2 filter.
    pub seccomp_mode: u8,
    /// `Seccomp_filters`: how many filters are stacked.
    pub seccomp_filters: u32,
    /// The kernel lockdown mode in force (`none`, `integrity`, `confidentiality`), or why it
    /// could not be read.
    pub lockdown: String,
}

impl Confinement {
    /// Every way this falls short of the confinement the runtime must run under (an
    /// unprivileged uid and gid, no supplementary groups, no capabilities in any set,
    /// `no_new_privs`, a seccomp filter, kernel lockdown); empty when it is confined.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.uids.contains(&0) {
            out.push(format!("runs with uid 0 (uids {:?})", self.uids));
        }
        if self.gids.contains(&0) {
            out.push(format!("runs with gid 0 (gids {:?})", self.gids));
        }
        if !self.groups.is_empty() {
            out.push(format!("has supplementary groups {:?}", self.groups));
        }
        for (name, set) in [
            ("inheritable", self.cap_inh),
            ("permitted", self.cap_prm),
            ("effective", self.cap_eff),
            ("bounding", self.cap_bnd),
            ("ambient", self.cap_amb),
        ] {
            if set != 0 {
                out.push(format!("{name} capabilities {set:#018x} are not empty"));
            }
        }
        if !self.no_new_privs {
            out.push("no_new_privs is off".into());
        }
        if self.seccomp_mode != 2 {
            out.push(format!("seccomp mode is {}, not 2 (filter)", self.seccomp_mode));
        }
        if self.lockdown != "integrity" && self.lockdown != "confidentiality" {
            out.push(format!("kernel lockdown is {:?}, not integrity or confidentiality", self.lockdown));
        }
        out
    }
}

/// Attestation evidence, in standard TPM encodings where TPM structures are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Marshalled `TPMS_ATTEST`.
    pub attest: Vec<u8>,
    /// Marshalled `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the AK.
    pub ak_public: Vec<u8>,
    /// Marshalled `TPMT_PUBLIC` of the EK.
    pub ek_public: Vec<u8>,
    /// DER EK certificate, if the TPM has one.
    pub ek_certificate: Option<Vec<u8>>,
    /// Quoted PCR values: (index, value).
    pub pcrs: Vec<(u8, [u8; 32])>,
    /// The firmware's TCG event log.
    pub firmware_log: Vec<u8>,
    /// PID 1's measurement log.
    pub measurement_log: Vec<u8>,
    /// The signed manifest the node booted (canonical bytes).
    pub manifest: Vec<u8>,
    /// The manifest signature.
    pub manifest_signature: Vec<u8>,
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Status),
    /// Answer to [`Request::Attest`].
    Evidence(Box<Evidence>),
    /// Answer to [`Request::ActivateCredential`]: the credential the TPM released.
    Credential(Vec<u8>),
    /// Answer to [`Request::Pipeline`] (`sovereign_pipeline::Reply`, postcard-encoded).
    Pipeline(Vec<u8>),
    /// The request was refused; the reason is one line.
    Refused(String),
}

/// A response signed by the node identity, bound to the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResponse {
    /// [`SignedRequest::digest`] of the request answered.
    pub request_digest: [u8; 32],
    /// The response.
    pub response: Response,
    /// Node identity public key.
    pub identity: [u8; 32],
    /// Signature over `"sovereign-response/v1\n" || postcard(request_digest, response)`.
    pub signature: Vec<u8>,
}

fn response_bytes(request_digest: &[u8; 32], response: &Response) -> Vec<u8> {
    let mut out = RESPONSE_CONTEXT.to_vec();
    out.extend(postcard::to_allocvec(&(request_digest, response)).expect("encoding in memory cannot fail"));
    out
}

impl SignedResponse {
    /// Signs `response` to `request` with the node identity.
    pub fn sign(request: &SignedRequest, response: Response, identity: &SigningKey) -> Self {
        let request_digest = request.digest();
        let signature = identity.sign(&response_bytes(&request_digest, &response)).to_bytes().to_vec();
        SignedResponse { request_digest, response, identity: identity.verifying_key().to_bytes(), signature }
    }

    /// Verifies the signature with `identity` and the binding to `request`.
    pub fn verify(&self, request: &SignedRequest, identity: &VerifyingKey) -> Result<&Response, Refusal> {
        if self.request_digest != request.digest() {
            return Err(Refusal::WrongRequest);
        }
        if &self.identity != identity.as_bytes() {
            return Err(Refusal::BadSignature);
        }
        let sig = Signature::from_slice(&self.signature).map_err(|_| Refusal::BadSignature)?;
        identity
            .verify_strict(&response_bytes(&self.request_digest, &self.response), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(&self.response)
    }
}

/// Why a request or response was refused (each is one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Not decodable.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Signature missing or wrong.
    #[error("signature does not verify")]
    BadSignature,
    /// Signed by a key that holds no role here.
    #[error("operator key {0} is not authorized")]
    NotAuthorized(String),
    /// Timestamp outside the freshness window.
    #[error("request timestamp is {skew_ms} ms away from the node's clock (window ±{window_ms} ms)")]
    Stale {
        /// Signed difference, ms.
        skew_ms: i128,
        /// Allowed window, ms.
        window_ms: u64,
    },
    /// The same request was seen before.
    #[error("request nonce already used (replay)")]
    Replayed,
    /// A response answers another request.
    #[error("response is bound to another request")]
    WrongRequest,
}

/// Admits requests: authorized operator, valid signature, fresh, not replayed.
#[derive(Debug, Clone)]
pub struct Gate {
    operators: Vec<VerifyingKey>,
    window_ms: u64,
    seen: BTreeMap<[u8; 16], u64>,
    max_seen: usize,
}

impl Gate {
    /// A gate admitting `operators` with a freshness window of ±`window_ms`.
    pub fn new(operators: Vec<VerifyingKey>, window_ms: u64) -> Self {
        Gate { operators, window_ms, seen: BTreeMap::new(), max_seen: 100_000 }
    }

    /// Checks a request at `now_ms`; on success records its nonce until it expires.
    pub fn admit(&mut self, request: &SignedRequest, now_ms: u64) -> Result<(), Refusal> {
        let key = VerifyingKey::from_bytes(&request.operator).map_err(|_| Refusal::BadSignature)?;
        let sig = Signature::from_slice(&request.signature).map_err(|_| Refusal::BadSignature)?;
        key.verify_strict(&request.signing_bytes(), &sig).map_err(|_| Refusal::BadSignature)?;
        if !self.operators.contains(&key) {
            return Err(Refusal::NotAuthorized(hex(&request.operator)));
        }
        let skew = i128::from(request.timestamp_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.window_ms) {
            return Err(Refusal::Stale { skew_ms: skew, window_ms: self.window_ms });
        }
        self.seen.retain(|_, expiry| *expiry >= now_ms);
        if self.seen.contains_key(&request.nonce) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.max_seen {
            // Fail closed: refuse rather than forget a nonce that is still fresh.
            return Err(Refusal::Replayed);
        }
        self.seen.insert(request.nonce, request.timestamp_ms.saturating_add(self.window_ms));
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Encodes a message as a frame: `u32 big-endian length || postcard bytes`.
pub fn frame<T: Serialize>(message: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(message).expect("encoding in memory cannot fail");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads the length prefix of a frame; refuses frames over [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, Refusal> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(Refusal::Malformed(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Refusal> {
    postcard::from_bytes(body).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// Fuzz entry point: arbitrary bytes as a request frame body, through the gate.
pub fn fuzz_request(data: &[u8]) {
    if let Ok(req) = decode::<SignedRequest>(data) {
        let mut gate = Gate::new(vec![SigningKey::from_bytes(&[1; 32]).verifying_key()], 30_000);
        let _ = gate.admit(&req, req.timestamp_ms);
        let _ = req.digest();
    }
    let _ = decode::<SignedResponse>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn gate() -> Gate {
        Gate::new(vec![admin().verifying_key()], 30_000)
    }

    #[test]
    fn admits_a_fresh_signed_request_once() {
        let mut g = gate();
        let r = SignedRequest::sign(Request::Status, &admin(), [7; 16], 1_000_000);
        g.admit(&r, 1_000_500).unwrap();
        assert_eq!(g.admit(&r, 1_000_600), Err(Refusal::Replayed));
    }

    #[test]
    fn refuses_every_bad_request_with_a_reason() {
        let mut g = gate();
        let now = 5_000_000;
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let r = SignedRequest::sign(Request::Status, &stranger, [1; 16], now);
        assert!(matches!(g.admit(&r, now), Err(Refusal::NotAuthorized(_))));
        let mut forged = SignedRequest::sign(Request::Status, &admin(), [2; 16], now);
        forged.request = Request::Attest { nonce: [0; 32] };
        assert_eq!(g.admit(&forged, now), Err(Refusal::BadSignature));
        let mut unsigned = SignedRequest::sign(Request::Status, &admin(), [3; 16], now);
        unsigned.signature.clear();
        assert_eq!(g.admit(&unsigned, now), Err(Refusal::BadSignature));
        let old = SignedRequest::sign(Request::Status, &admin(), [4; 16], now - 60_000);
        assert!(matches!(g.admit(&old, now), Err(Refusal::Stale { .. })));
        let future = SignedRequest::sign(Request::Status, &admin(), [5; 16], now + 60_000);
        assert!(matches!(g.admit(&future, now), Err(Refusal::Stale { .. })));
        assert_eq!(Refusal::Replayed.to_string(), "request nonce already used (replay)");
    }

    #[test]
    fn responses_are_signed_and_bound_to_their_request() {
        let node = SigningKey::from_bytes(&[9; 32]);
        let req = SignedRequest::sign(Request::Attest { nonce: [4; 32] }, &admin(), [1; 16], 1);
        let other = SignedRequest::sign(Request::Attest { nonce: [5; 32] }, &admin(), [2; 16], 1);
        let resp = SignedResponse::sign(&req, Response::Refused("no".into()), &node);
        assert_eq!(resp.verify(&req, &node.verifying_key()).unwrap(), &Response::Refused("no".into()));
        assert_eq!(resp.verify(&other, &node.verifying_key()), Err(Refusal::WrongRequest));
        assert_eq!(resp.verify(&req, &admin().verifying_key()), Err(Refusal::BadSignature));
        let mut tampered = resp.clone();
        tampered.response = Response::Refused("yes".into());
        assert_eq!(tampered.verify(&req, &node.verifying_key()), Err(Refusal::BadSignature));
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let req = SignedRequest::sign(Request::Status, &admin(), [1; 16], 1);
        let f = frame(&req);
        let len = frame_len([f[0], f[1], f[2], f[3]]).unwrap();
        assert_eq!(decode::<SignedRequest>(&f[4..4 + len]).unwrap(), req);
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode::<SignedRequest>(&bytes);
            let _ = decode::<SignedResponse>(&bytes);
        }
    }
}
