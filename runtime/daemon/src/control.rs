//! The control API server: signed requests in, node-signed responses out, over the
//! virtio-serial port named in the runtime configuration. Attestation answers come from the
//! TPM: a quote over [`ATTESTED_PCRS`] whose qualifying data binds the operator's nonce and the
//! node identity, with the logs and the signed manifest, and credential activation for the AK. Every request passes the gate
//! (authorized operator key, valid signature, fresh timestamp, unused nonce); a refused request
//! is answered with its one-line reason, signed like any other response.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use sovereign_measured_boot::PcrSelection;
use sovereign_measured_boot::tpm::{AttestationKey, Tpm};
use sovereign_protocol::{
    ATTESTED_PCRS, Evidence, Gate, Request, Response, SignedRequest, SignedResponse, Status, attest_qualifying_data,
    decode, frame, frame_len,
};

/// Freshness window for request timestamps.
pub const WINDOW_MS: u64 = 120_000;

/// The appliance's TPM through the kernel's resource manager.
/// The kernel's TPM resource manager, the only TPM device the runtime may open.
pub const TCTI: &str = "device:/dev/tpmrm0";
/// The firmware's TCG event log: PID 1's copy of securityfs's root-only
/// `binary_bios_measurements` (the quote proves it: the log must replay to the quoted PCRs).
const FIRMWARE_LOG: &str = "/run/sovereign/firmware-eventlog.bin";
/// PID 1's measurement log.
const MEASUREMENT_LOG: &str = "/run/sovereign/measurement.log";

/// What the server needs to answer.
pub struct Node {
    /// The node identity.
    pub identity: SigningKey,
    /// Image version.
    pub version: u64,
    /// The signed manifest the node booted, and its signature.
    pub manifest: Vec<u8>,
    /// The manifest's detached signature.
    pub manifest_signature: Vec<u8>,
    /// The TPM session that answers attestation requests.
    pub attestor: Attestor,
    /// The pipeline engine, when the data partition and governance came up.
    pub engine: Result<sovereign_pipeline::Engine, String>,
}

/// Holds the TPM open with one attestation key for the life of the runtime: the AK is
/// created once (tens of milliseconds) and every quote and credential activation reuses it.
pub struct Attestor {
    tcti: String,
    firmware_log: PathBuf,
    measurement_log: PathBuf,
    state: Option<(Tpm, AttestationKey, Option<Vec<u8>>)>,
}

impl Attestor {
    /// The appliance's attestor: its TPM through the kernel's resource manager, the firmware
    /// log from securityfs, PID 1's measurement log from /run.
    pub fn appliance() -> Self {
        Self::new(TCTI, FIRMWARE_LOG.as_ref(), MEASUREMENT_LOG.as_ref())
    }

    /// An attestor for another TPM and log location (benchmarks and tests on swtpm).
    pub fn new(tcti: &str, firmware_log: &std::path::Path, measurement_log: &std::path::Path) -> Self {
        Attestor {
            tcti: tcti.into(),
            firmware_log: firmware_log.into(),
            measurement_log: measurement_log.into(),
            state: None,
        }
    }

    fn ready(&mut self) -> Result<&mut (Tpm, AttestationKey, Option<Vec<u8>>), String> {
        if self.state.is_none() {
            let mut tpm = Tpm::open(&self.tcti).map_err(|e| e.to_string())?;
            let ak = tpm.create_attestation_key().map_err(|e| e.to_string())?;
            let ek_certificate = tpm.ek_certificate().map_err(|e| e.to_string())?;
            self.state = Some((tpm, ak, ek_certificate));
        }
        self.state.as_mut().ok_or_else(|| "TPM not open".to_string())
    }

    /// Opens the TPM and creates the AK now, so the first request does not pay for it.
    pub fn warm_up(&mut self) -> Result<(), String> {
        self.ready().map(|_| ())
    }

    fn evidence(&mut self, nonce: &[u8; 32], identity: &[u8; 32], node: &NodeFiles<'_>) -> Result<Evidence, String> {
        let selection = PcrSelection::new(ATTESTED_PCRS).map_err(|e| e.to_string())?;
        let read = |p: &PathBuf| fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let (firmware_log, measurement_log) = (read(&self.firmware_log)?, read(&self.measurement_log)?);
        let (tpm, ak, ek_certificate) = self.ready()?;
        let quote = tpm.quote(ak, &attest_qualifying_data(nonce, identity), &selection).map_err(|e| e.to_string())?;
        Ok(Evidence {
            attest: quote.attest,
            signature: quote.signature,
            ak_public: quote.ak_public,
            ek_public: quote.ek_public,
            ek_certificate: ek_certificate.clone(),
            pcrs: quote.pcr_values.0.iter().map(|(i, v)| (*i, v.0)).collect(),
            firmware_log,
            measurement_log,
            manifest: node.manifest.to_vec(),
            manifest_signature: node.manifest_signature.to_vec(),
        })
    }

    fn activate(&mut self, credential_blob: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, String> {
        let (tpm, ak, _) = self.ready()?;
        tpm.activate_credential(ak, credential_blob, encrypted_secret).map_err(|e| e.to_string())
    }
}

impl Drop for Attestor {
    /// Flushes the AK and EK: without a resource manager (swtpm over TCP) they would stay
    /// loaded in the TPM after the connection closes.
    fn drop(&mut self) {
        if let Some((mut tpm, ak, _)) = self.state.take() {
            tpm.release_attestation_key(ak);
        }
    }
}

struct NodeFiles<'a> {
    manifest: &'a [u8],
    manifest_signature: &'a [u8],
}

/// Finds `/dev/vportNpM` for the virtio-serial port called `name`.
pub fn find_port(name: &str) -> Option<PathBuf> {
    let entries = fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in entries.flatten() {
        let port_name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Some(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    None
}

/// A status whose confinement could not be read says so in every field it could not fill:
/// no capability reported absent, no filter reported present.
fn unreadable_confinement(why: &str) -> sovereign_protocol::Confinement {
    sovereign_protocol::Confinement {
        uids: [u32::MAX; 4],
        gids: [u32::MAX; 4],
        groups: Vec::new(),
        cap_inh: u64::MAX,
        cap_prm: u64::MAX,
        cap_eff: u64::MAX,
        cap_bnd: u64::MAX,
        cap_amb: u64::MAX,
        no_new_privs: false,
        seccomp_mode: 0,
        seccomp_filters: 0,
        lockdown: format!("unreadable: {why}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn uptime_s() -> u64 {
    fs::read_to_string("/proc/uptime").ok().and_then(|s| s.split('.').next().and_then(|v| v.parse().ok())).unwrap_or(0)
}

/// Answers one request.
pub fn answer(node: &mut Node, gate: &mut Gate, request: &SignedRequest, now_ms: u64) -> SignedResponse {
    let identity = node.identity.verifying_key().to_bytes();
    let response = match gate.admit(request, now_ms) {
        Err(refusal) => Response::Refused(refusal.to_string()),
        Ok(()) => match &request.request {
            Request::Status => Response::Status(Status {
                version: node.version,
                manifest_sha256: sha256(&node.manifest),
                uptime_s: uptime_s(),
                identity,
                confinement: sovereign_confine::read().unwrap_or_else(|why| unreadable_confinement(&why)),
            }),
            Request::Attest { nonce } => {
                let files = NodeFiles { manifest: &node.manifest, manifest_signature: &node.manifest_signature };
                match node.attestor.evidence(nonce, &identity, &files) {
                    Ok(evidence) => Response::Evidence(Box::new(evidence)),
                    Err(e) => Response::Refused(format!("attestation failed: {e}")),
                }
            }
            Request::ActivateCredential { credential_blob, encrypted_secret } => {
                match node.attestor.activate(credential_blob, encrypted_secret) {
                    Ok(secret) => Response::Credential(secret),
                    Err(e) => Response::Refused(format!("credential activation failed: {e}")),
                }
            }
            Request::Pipeline(bytes) => pipeline(node, bytes, &identity),
            _ => Response::Refused("request not supported by this runtime version".into()),
        },
    };
    SignedResponse::sign(request, response, &node.identity)
}

/// Runs one pipeline command; the engine's attestation evidence comes from this node's TPM.
fn pipeline(node: &mut Node, bytes: &[u8], identity: &[u8; 32]) -> Response {
    let command: sovereign_pipeline::Command = match postcard::from_bytes(bytes) {
        Ok(c) => c,
        Err(e) => return Response::Refused(format!("pipeline command does not decode: {e}")),
    };
    let engine = match &mut node.engine {
        Ok(e) => e,
        Err(why) => return Response::Refused(format!("pipelines unavailable on this node: {why}")),
    };
    let files = NodeFiles { manifest: &node.manifest, manifest_signature: &node.manifest_signature };
    let attestor = &mut node.attestor;
    let mut attest = |nonce: &[u8; 32]| -> Result<Vec<u8>, String> {
        let evidence = attestor.evidence(nonce, identity, &files)?;
        serde_json::to_vec(&evidence).map_err(|e| e.to_string())
    };
    let reply = engine.handle(command, &mut attest);
    match postcard::to_allocvec(&reply) {
        Ok(b) => Response::Pipeline(b),
        Err(e) => Response::Refused(format!("pipeline reply does not encode: {e}")),
    }
}

/// Serves the port forever. The port stays open: while no host is connected a read returns
/// end-of-file at once, so the loop waits a little and reads again.
pub fn serve(mut node: Node, admins: Vec<VerifyingKey>, port: PathBuf) {
    let mut gate = Gate::new(admins, WINDOW_MS);
    match node.attestor.warm_up() {
        Ok(()) => println!("sovereign-runtime: control: attestation key ready"),
        Err(e) => println!("sovereign-runtime: control: attestation unavailable for now: {e}"),
    }
    let mut dev = loop {
        match OpenOptions::new().read(true).write(true).open(&port) {
            Ok(d) => break d,
            Err(e) => {
                println!("sovereign-runtime: control: cannot open {}: {e}; retrying", port.display());
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    loop {
        let body = match read_frame(&mut dev) {
            Incoming::Frame(body) => body,
            Incoming::Nothing => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Incoming::Oversized(len) => {
                // The length cannot be trusted, so neither can anything after it: discard the
                // rest of this host session (until it disconnects) instead of misreading it.
                println!(
                    "sovereign-runtime: control: refused a {len}-byte frame (limit {}); discarding the session",
                    sovereign_protocol::MAX_FRAME
                );
                let mut scratch = [0u8; 65536];
                while matches!(dev.read(&mut scratch), Ok(n) if n > 0) {}
                continue;
            }
        };
        let reply = match decode::<SignedRequest>(&body) {
            Ok(request) => frame(&answer(&mut node, &mut gate, &request, now_ms())),
            // An undecodable request cannot be bound to a response: drop it and say so.
            Err(e) => {
                println!("sovereign-runtime: control: refused a malformed request: {e}");
                continue;
            }
        };
        if let Err(e) = dev.write_all(&reply).and_then(|()| dev.flush()) {
            println!("sovereign-runtime: control: answering failed: {e}");
        }
    }
}

enum Incoming {
    Frame(Vec<u8>),
    /// No host connected, or the host went away mid-frame.
    Nothing,
    /// A length prefix over the limit.
    Oversized(u32),
}

fn read_frame(dev: &mut File) -> Incoming {
    let mut prefix = [0u8; 4];
    if dev.read_exact(&mut prefix).is_err() {
        return Incoming::Nothing;
    }
    let Ok(len) = frame_len(prefix) else { return Incoming::Oversized(u32::from_be_bytes(prefix)) };
    let mut body = vec![0u8; len];
    if dev.read_exact(&mut body).is_err() {
        return Incoming::Nothing;
    }
    Incoming::Frame(body)
}

/// SHA-256 helper.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
