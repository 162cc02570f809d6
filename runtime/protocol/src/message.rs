//! The messages: what an operator asks ([`Request`], signed as a [`SignedRequest`] for one
//! node) and what the node answers ([`Response`], signed as a [`SignedResponse`] bound to the
//! request), with the facts they carry.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::gate::Refusal;
use crate::pipeline::{Command, Reply};
use crate::stream::Attachment;

const REQUEST_CONTEXT: &[u8] = b"sovereign-request/v2\n";
const RESPONSE_CONTEXT: &[u8] = b"sovereign-response/v2\n";

/// The node a [`Request::Status`] may name when the operator has not pinned the node's
/// identity yet: any node answers it (and says who it is, signed). Every other request names
/// one node.
pub const ANY_NODE: [u8; 32] = [0; 32];

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
    /// A pipeline command: start, status, approve, resume, fetch an artifact, export a
    /// compliance bundle, list runs.
    Pipeline(Command),
    /// Keep this certificate of the node's attestation key (issued by the operator's
    /// attestation CA after a passing attestation); every compliance bundle carries it. The
    /// node refuses a certificate for another AK, EK or identity.
    CertifyAk(Box<crate::akcert::AkCertificate>),
    /// The runtime's metrics in the Prometheus text exposition format (version 0.0.4): governed
    /// decisions by verdict and policy, audit log size and append latency, sandbox terminations
    /// by kind, attestations, mesh peers, GPU gauges. Served only to admitted operators, over
    /// the control port or the mesh's control protocol — never on a port of its own.
    Metrics,
}

/// A request with its operator signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The operator's Ed25519 public key.
    pub operator: [u8; 32],
    /// The identity public key of the node the request is meant for: any other node refuses
    /// it. [`ANY_NODE`] only for [`Request::Status`] (how an operator without a pinned
    /// identity learns it).
    pub node: [u8; 32],
    /// Random per request: a request is accepted once.
    pub nonce: [u8; 16],
    /// Milliseconds since the Unix epoch on the operator's clock.
    pub timestamp_ms: u64,
    /// The request.
    pub request: Request,
    /// The payloads the request carries, as chunk manifests: the chunks follow the request
    /// frame, each checked against its signed digest ([`crate::stream`]).
    pub attachments: Vec<Attachment>,
    /// Signature over [`SignedRequest::signing_bytes`].
    pub signature: Vec<u8>,
}

impl SignedRequest {
    /// Signs `request` for `node` as `operator`, with the manifests of `attachments` (see
    /// [`Attachment::describe`]).
    pub fn sign(
        request: Request,
        node: [u8; 32],
        attachments: Vec<Attachment>,
        operator: &SigningKey,
        nonce: [u8; 16],
        timestamp_ms: u64,
    ) -> Self {
        let mut r = SignedRequest {
            operator: operator.verifying_key().to_bytes(),
            node,
            nonce,
            timestamp_ms,
            request,
            attachments,
            signature: vec![],
        };
        r.signature = operator.sign(&r.signing_bytes()).to_bytes().to_vec();
        r
    }

    /// `"sovereign-request/v2\n" || postcard(operator, node, nonce, timestamp, request,
    /// attachments)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = REQUEST_CONTEXT.to_vec();
        out.extend(
            postcard::to_allocvec(&(
                &self.operator,
                &self.node,
                &self.nonce,
                self.timestamp_ms,
                &self.request,
                &self.attachments,
            ))
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
    /// Why the runtime refuses every governed action, when it does (the state on the data
    /// partition is not the anchored one, or the engine could not start): one line.
    pub refused: Option<String>,
    /// The GPUs, one line: `no GPU: <reason>`, or the devices (and an engaged emergency stop).
    pub gpu: String,
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
    /// Answer to [`Request::CertifyAk`]: the certificate (by serial) is stored durably.
    AkCertified {
        /// The certificate's serial.
        serial: String,
    },
    /// Answer to [`Request::Pipeline`].
    Pipeline(Reply),
    /// The request was refused; the reason is one line.
    Refused(String),
    /// Answer to [`Request::Metrics`]: the Prometheus text exposition.
    Metrics(String),
}

/// A response signed by the node identity, bound to the request it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResponse {
    /// [`SignedRequest::digest`] of the request answered.
    pub request_digest: [u8; 32],
    /// The response.
    pub response: Response,
    /// The payloads the response carries (chunks follow the response frame).
    pub attachments: Vec<Attachment>,
    /// Node identity public key.
    pub identity: [u8; 32],
    /// Signature over `"sovereign-response/v2\n" || postcard(request_digest, response,
    /// attachments)`.
    pub signature: Vec<u8>,
}

fn response_bytes(request_digest: &[u8; 32], response: &Response, attachments: &[Attachment]) -> Vec<u8> {
    let mut out = RESPONSE_CONTEXT.to_vec();
    out.extend(
        postcard::to_allocvec(&(request_digest, response, attachments)).expect("encoding in memory cannot fail"),
    );
    out
}

impl SignedResponse {
    /// Signs `response` to the request whose digest is `request_digest`, with the manifests of
    /// the payloads that follow it, with the node identity.
    pub fn sign(
        request_digest: [u8; 32],
        response: Response,
        attachments: Vec<Attachment>,
        identity: &SigningKey,
    ) -> Self {
        let signature = identity.sign(&response_bytes(&request_digest, &response, &attachments)).to_bytes().to_vec();
        SignedResponse {
            request_digest,
            response,
            attachments,
            identity: identity.verifying_key().to_bytes(),
            signature,
        }
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
            .verify_strict(&response_bytes(&self.request_digest, &self.response, &self.attachments), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        Ok(&self.response)
    }
}
