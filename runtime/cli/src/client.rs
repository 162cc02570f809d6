//! The control-API client: signs a request for one node, sends it with its payloads as checked
//! chunks, and reads the response with its payloads, each chunk checked against the manifest the
//! response carries. The response's signature (which covers that manifest) is the caller's to
//! verify, against a pinned identity or the one [`discover`] learned.
//!
//! Sending runs on its own thread while this one reads, so a refusal the appliance sends early
//! (say, a request over its limits) is seen at once, and the upload stops.
//!
//! The appliance is reached at an [`Endpoint`]: the unix socket of its virtio-serial port, or
//! (feature `net`) its mesh address with the swarm key — the same frames either way.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
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

/// Where the appliance's control API is reached.
#[derive(Debug)]
pub enum Endpoint {
    /// The unix socket of its virtio-serial port (QEMU: the appliance directory's
    /// `control.sock`).
    Socket(PathBuf),
    /// Its mesh address (`/ip4/A/tcp/P`), over the mesh's transport with the swarm key.
    #[cfg(feature = "net")]
    Mesh {
        /// The node's mesh address.
        address: sovereign_mesh::libp2p::Multiaddr,
        /// The mesh's swarm key.
        swarm_key: sovereign_mesh::swarm_key::SwarmKey,
    },
}

impl From<&Path> for Endpoint {
    fn from(socket: &Path) -> Self {
        Endpoint::Socket(socket.to_path_buf())
    }
}

impl From<&PathBuf> for Endpoint {
    fn from(socket: &PathBuf) -> Self {
        Endpoint::Socket(socket.clone())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Socket(path) => write!(f, "the control port {}", path.display()),
            #[cfg(feature = "net")]
            Endpoint::Mesh { address, swarm_key } => {
                write!(f, "the mesh address {address} (swarm key {})", swarm_key.fingerprint())
            }
        }
    }
}

/// One open connection to the control API.
enum Connection {
    Socket {
        reader: UnixStream,
        writer: UnixStream,
    },
    #[cfg(feature = "net")]
    Mesh(Box<sovereign_mesh::control::ControlConnection>),
}

impl Connection {
    fn open(endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<Self> {
        match endpoint {
            Endpoint::Socket(path) => {
                let stream = UnixStream::connect(path).with_context(|| format!("connecting to {endpoint}"))?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                let writer = stream.try_clone().context("cloning the control socket")?;
                Ok(Connection::Socket { reader: stream, writer })
            }
            #[cfg(feature = "net")]
            Endpoint::Mesh { address, swarm_key } => {
                let connection = sovereign_mesh::control::dial_control(swarm_key, address, timeout)
                    .with_context(|| format!("connecting to {endpoint}"))?;
                Ok(Connection::Mesh(Box::new(connection)))
            }
        }
    }

    fn halves(&mut self) -> (&mut (dyn Read + Send), &mut (dyn Write + Send)) {
        match self {
            Connection::Socket { reader, writer } => (reader, writer),
            #[cfg(feature = "net")]
            Connection::Mesh(c) => {
                let c = &mut **c;
                (&mut c.reader, &mut c.writer)
            }
        }
    }
}

/// Sends `request` with `payloads` (the ones its attachment manifests describe, in order) to
/// the control API at `endpoint` and reads the response and its payloads. `timeout` bounds each
/// read and write.
pub fn exchange(
    endpoint: &Endpoint,
    request: &SignedRequest,
    payloads: &[Vec<u8>],
    timeout: Duration,
    progress: &mut dyn FnMut(Transfer),
) -> anyhow::Result<Answer> {
    let mut connection = Connection::open(endpoint, timeout)?;
    let (reader, writer) = connection.halves();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
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

/// Signings of one request at most ([`sign_again`]).
pub const SIGNING_ATTEMPTS: u32 = 3;

/// Whether a request refused with `why` on its `attempt`-th signing is to be signed again (a
/// second later): the appliance refuses requests signed before its runtime started, and right
/// after a reboot this machine's clock may run that moment behind the appliance's (set from
/// its RTC, in whole seconds). Any other refusal stands.
pub fn sign_again(why: &str, attempt: u32) -> bool {
    let again = why.ends_with("sign it again") && attempt < SIGNING_ATTEMPTS;
    if again {
        std::thread::sleep(Duration::from_secs(1));
    }
    again
}

/// Sends a request without payloads and returns its (unverified) response.
pub fn send(endpoint: &Endpoint, request: &SignedRequest, timeout: Duration) -> anyhow::Result<SignedResponse> {
    exchange(endpoint, request, &[], timeout, &mut |_| {}).map(|a| a.response)
}

/// Learns the identity of the node at `endpoint` (trust on first use: a `status` addressed to
/// any node, whose answer is signed by the identity it names). Pin the identity instead
/// wherever it is known.
pub fn discover(endpoint: &Endpoint, operator: &SigningKey, timeout: Duration) -> anyhow::Result<VerifyingKey> {
    for attempt in 1.. {
        let request = sign_addressed(Request::Status, ANY_NODE, &[], operator);
        let response = send(endpoint, &request, timeout)?;
        let claimed = VerifyingKey::from_bytes(&response.identity).map_err(|e| anyhow!("node identity: {e}"))?;
        match response.verify(&request, &claimed).map_err(|e| anyhow!("status response: {e}"))? {
            Response::Status(st) if st.identity == claimed.to_bytes() => return Ok(claimed),
            Response::Status(_) => bail!("the node's status names another identity than the key that signed it"),
            Response::Refused(why) if sign_again(why, attempt) => continue,
            Response::Refused(why) => bail!("the appliance refused: {why}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }
    unreachable!("the attempts above return")
}

/// The identity to address: `pinned`, or else the one [`discover`] learns.
pub fn node_identity(
    endpoint: &Endpoint,
    operator: &SigningKey,
    pinned: Option<&VerifyingKey>,
    timeout: Duration,
) -> anyhow::Result<VerifyingKey> {
    match pinned {
        Some(k) => Ok(*k),
        None => discover(endpoint, operator, timeout),
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
