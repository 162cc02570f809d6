//! Library side of the `sovereign` CLI: the control-API client (used by the CLI and by the
//! end-to-end tests). The transport is a byte stream to the appliance's control port — today
//! the unix socket QEMU exposes for the virtio-serial port.
//!
//! Must never: accept a response it has not verified against the node identity and its own
//! request, send an unsigned request, or treat a check it could not complete as passed.

#![forbid(unsafe_code)]

pub mod attest;
pub mod decisions;
pub mod pipeline;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore as _};
use sovereign_protocol::{Request, SignedRequest, SignedResponse, decode, frame, frame_len};

/// Signs `request` as `operator` (fresh nonce, current time).
pub fn sign(request: Request, operator: &SigningKey) -> SignedRequest {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    SignedRequest::sign(request, operator, nonce, now)
}

/// Sends a signed request over the control socket and reads the (unverified) response.
pub fn send(socket: &Path, request: &SignedRequest, timeout: Duration) -> anyhow::Result<SignedResponse> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connecting to the control port {}", socket.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&frame(request)).context("sending the request")?;
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).context("reading the response length (no answer from the appliance)")?;
    let len = frame_len(prefix).map_err(|e| anyhow!("{e}"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).context("reading the response")?;
    decode(&body).map_err(|e| anyhow!("{e}"))
}
