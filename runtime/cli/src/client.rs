//! The control-API client: signs a request for one node, sends it with its payloads as checked
//! chunks, and reads the response with its payloads, each chunk checked against the manifest the
//! response carries. The response's signature (which covers that manifest) is the caller's to
//! verify, against a pinned identity or the one [`discover`] learned.
//!
//! Sending runs on its own thread while this one reads, so a refusal the appliance sends early
//! (say, a request over its limits) is seen at once, and the upload stops.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use sovereign_protocol::stream::chunks;
use sovereign_protocol::{
    ANY_NODE, Assembly, Attachment, Frame, Request, Response, SignedRequest, SignedResponse, decode, frame, frame_len,
};

/// Signs `request` for the node `node` as `operator` (fresh nonce, current time), with the
/// manifests of `payloads`.
pub fn sign(request: Request, node: &VerifyingKey, payloads: &[Vec<u8>], operator: &SigningKey) -> SignedRequest {
    sign_addressed(request, node.to_bytes(), payloads, operator)
}

/// [`sign`] for an address given as bytes ([`ANY_NODE`] for a status to whichever node
/// answers).
pub fn sign_addressed(request: Request, node: [u8; 32], payloads: &[Vec<u8>], operator: &SigningKey) -> SignedRequest {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    SignedRequest::sign(request, node, Attachment::describe_all(payloads), operator, nonce, now)
}

/// Where a transfer stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// `true` while sending the request's payloads, `false` while receiving the response's.
    pub sending: bool,
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// The response to one request, with the payloads that followed it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response, its signature not yet verified.
    pub response: SignedResponse,
    /// The response's payloads, each chunk checked against the response's manifest.
    pub payloads: Vec<Vec<u8>>,
}

/// Sends `request` with `payloads` (the ones its attachment manifests describe, in order) over
/// the control socket and reads the response and its payloads. `timeout` bounds each read and
/// write.
pub fn exchange(
    socket: &Path,
    request: &SignedRequest,
    payloads: &[Vec<u8>],
    timeout: Duration,
    progress: &mut dyn FnMut(Transfer),
) -> anyhow::Result<Answer> {
    let stream =
        UnixStream::connect(socket).with_context(|| format!("connecting to the control port {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone().context("cloning the control socket")?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stream);
    let digest = request.digest();
    let stop = AtomicBool::new(false);
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<u64>();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| -> anyhow::Result<()> {
            writer.write_all(&frame(&Frame::Request(Box::new(request.clone())))).context("sending the request")?;
            let mut sent = 0u64;
            for chunk in chunks(digest, payloads) {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Frame::Chunk(c) = &chunk {
                    sent += c.bytes.len() as u64;
                }
                writer.write_all(&frame(&chunk)).context("sending a chunk of the request's payloads")?;
                let _ = sent_tx.send(sent);
            }
            Ok(())
        });
        let answer = receive(&mut reader, digest, &mut |t| {
            // Report upload progress seen so far before each received frame.
            while let Ok(sent) = sent_rx.try_recv() {
                progress(Transfer { sending: true, done: sent, total });
            }
            if let Some(t) = t {
                progress(t);
            }
        });
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().map_err(|_| anyhow!("the sending thread panicked"))?;
        match (answer, sent) {
            (Ok(a), _) => Ok(a),
            // The appliance's answer explains a failed upload better than the broken pipe.
            (Err(e), Err(send)) => Err(e.context(format!("{send:#}"))),
            (Err(e), Ok(())) => Err(e),
        }
    })
}

fn read_one(reader: &mut impl Read) -> anyhow::Result<Frame> {
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).context("reading the response (no answer from the appliance)")?;
    let len = frame_len(prefix).map_err(|e| anyhow!("{e}"))?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).context("reading the response")?;
    decode(&body).map_err(|e| anyhow!("{e}"))
}

fn receive(
    reader: &mut impl Read,
    digest: [u8; 32],
    progress: &mut dyn FnMut(Option<Transfer>),
) -> anyhow::Result<Answer> {
    let response = loop {
        progress(None);
        match read_one(reader)? {
            Frame::Response(r) if r.request_digest == digest => break *r,
            // An answer to an earlier client's request, or chunks of one: not ours.
            Frame::Response(_) | Frame::Chunk(_) => continue,
            Frame::Refused(why) => bail!("the appliance refused the frame: {why}"),
            other => bail!("unexpected frame from the appliance: {other:?}"),
        }
    };
    let mut assembly = Assembly::new(digest, &response.attachments).map_err(|e| anyhow!("the response's {e}"))?;
    let total = assembly.remaining();
    while !assembly.is_complete() {
        match read_one(reader)? {
            Frame::Chunk(c) if c.message == digest => {
                assembly.accept(&c).map_err(|e| anyhow!("the response's {e}"))?;
                progress(Some(Transfer { sending: false, done: total - assembly.remaining(), total }));
            }
            Frame::Refused(why) => bail!("the appliance refused the frame: {why}"),
            _ => continue,
        }
    }
    let payloads = assembly.finish_in_order().map_err(|e| anyhow!("the response's {e}"))?;
    Ok(Answer { response, payloads })
}

/// Sends a request without payloads and returns its (unverified) response.
pub fn send(socket: &Path, request: &SignedRequest, timeout: Duration) -> anyhow::Result<SignedResponse> {
    exchange(socket, request, &[], timeout, &mut |_| {}).map(|a| a.response)
}

/// Learns the identity of the node on `socket` (trust on first use: a `status` addressed to
/// any node, whose answer is signed by the identity it names). Pin the identity instead
/// wherever it is known.
pub fn discover(socket: &Path, operator: &SigningKey, timeout: Duration) -> anyhow::Result<VerifyingKey> {
    let request = sign_addressed(Request::Status, ANY_NODE, &[], operator);
    let response = send(socket, &request, timeout)?;
    let claimed = VerifyingKey::from_bytes(&response.identity).map_err(|e| anyhow!("node identity: {e}"))?;
    match response.verify(&request, &claimed).map_err(|e| anyhow!("status response: {e}"))? {
        Response::Status(st) if st.identity == claimed.to_bytes() => Ok(claimed),
        Response::Status(_) => bail!("the node's status names another identity than the key that signed it"),
        Response::Refused(why) => bail!("the appliance refused: {why}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// The identity to address: `pinned`, or else the one [`discover`] learns.
pub fn node_identity(
    socket: &Path,
    operator: &SigningKey,
    pinned: Option<&VerifyingKey>,
    timeout: Duration,
) -> anyhow::Result<VerifyingKey> {
    match pinned {
        Some(k) => Ok(*k),
        None => discover(socket, operator, timeout),
    }
}

/// Prints transfer progress on standard error when it is a terminal (one line, rewritten).
pub fn progress_on_terminal() -> impl FnMut(Transfer) {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let mut last = (false, u64::MAX);
    move |t: Transfer| {
        const MIB: u64 = 1024 * 1024;
        if !terminal || t.total < 4 * MIB || (t.sending, t.done / MIB) == last {
            return;
        }
        last = (t.sending, t.done / MIB);
        let verb = if t.sending { "sending" } else { "receiving" };
        eprint!("\r{verb} {} / {} MiB", t.done / MIB, t.total.div_ceil(MIB));
        if t.done == t.total {
            eprintln!();
        }
    }
}
