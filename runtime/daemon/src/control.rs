//! The control API server: signed requests in, node-signed responses out, over the
//! virtio-serial port named in the runtime configuration. Every request passes the gate
//! (authorized operator key, valid signature, fresh timestamp, unused nonce); a refused request
//! is answered with its one-line reason, signed like any other response.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use sovereign_protocol::{Gate, Request, Response, SignedRequest, SignedResponse, Status, decode, frame, frame_len};

/// Freshness window for request timestamps.
pub const WINDOW_MS: u64 = 120_000;

/// What the server needs to answer.
pub struct Node {
    /// The node identity.
    pub identity: SigningKey,
    /// Image version.
    pub version: u64,
    /// SHA-256 of the signed manifest.
    pub manifest_sha256: [u8; 32],
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn uptime_s() -> u64 {
    fs::read_to_string("/proc/uptime").ok().and_then(|s| s.split('.').next().and_then(|v| v.parse().ok())).unwrap_or(0)
}

/// Answers one request.
pub fn answer(node: &Node, gate: &mut Gate, request: &SignedRequest, now_ms: u64) -> SignedResponse {
    let response = match gate.admit(request, now_ms) {
        Err(refusal) => Response::Refused(refusal.to_string()),
        Ok(()) => match &request.request {
            Request::Status => Response::Status(Status {
                version: node.version,
                manifest_sha256: node.manifest_sha256,
                uptime_s: uptime_s(),
                identity: node.identity.verifying_key().to_bytes(),
            }),
            _ => Response::Refused("request not supported by this runtime version".into()),
        },
    };
    SignedResponse::sign(request, response, &node.identity)
}

/// Serves the port forever. The port stays open: while no host is connected a read returns
/// end-of-file at once, so the loop waits a little and reads again.
pub fn serve(node: Node, admins: Vec<VerifyingKey>, port: PathBuf) {
    let mut gate = Gate::new(admins, WINDOW_MS);
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
            Ok(request) => frame(&answer(&node, &mut gate, &request, now_ms())),
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
