//! The control API server: signed requests in, node-signed responses out, over byte streams
//! (the virtio-serial port named in the runtime configuration; control streams over the mesh
//! when it runs, [`crate::mesh`]; a socket in the host tests). Every transport shares one gate
//! (one replay store: a request admitted on one is never admitted again on another) and one
//! engine.
//!
//! One thread reads frames. Every request passes the gate first (addressed to this node,
//! authorized operator key, valid signature, fresh timestamp, unused nonce); its attachments'
//! chunks are checked one by one against its signed manifest as they arrive, within a limit per
//! request and a limit on everything held at once ([`MAX_HELD_PAYLOAD`]). Status, attestation
//! and credential activation are answered by the reading thread at once; pipeline commands go
//! to the engine's own thread through per-operator queues served in turn ([`Scheduler`]), so a
//! running stage delays neither `status` nor `attest`, and one operator cannot starve another.
//! Responses (and their attachments, chunk by chunk) from both threads share the stream, each
//! frame written whole. A frame that cannot be read as a request (too large, not decodable)
//! is answered with a one-line refusal and the stream stays usable.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sovereign_protocol::pipeline::{Command, Reply};
use sovereign_protocol::stream::chunks;
use sovereign_protocol::{
    Assembly, Attachment, Frame, Gate, MAX_FRAME, Payloads, Request, Response, SignedRequest, SignedResponse, Status,
    decode, frame, frame_len,
};

use sovereign_canonical::{now_ms, sha256};

pub use crate::attestor::{Attestor, NodeFiles, TCTI};
use crate::scheduler::Scheduler;

/// Freshness window for request timestamps.
pub const WINDOW_MS: u64 = 120_000;
/// Most payload bytes the runtime holds for requests at once, being received or waiting for
/// the engine (one request may carry [`sovereign_protocol::MAX_MESSAGE_PAYLOAD`]).
pub const MAX_HELD_PAYLOAD: u64 = 256 * 1024 * 1024;

/// What answers at once: the node's identity and facts, and its TPM.
pub struct Node {
    /// The node identity.
    pub identity: SigningKey,
    /// Image version.
    pub version: u64,
    /// The signed manifest the node booted.
    pub manifest: Vec<u8>,
    /// The manifest's detached signature.
    pub manifest_signature: Vec<u8>,
    /// The TPM session that answers attestation requests (the engine's bundles use it too).
    pub attestor: Mutex<Attestor>,
    /// Why the engine did not start (every governed action refused with it), if it did not.
    pub refused: Option<String>,
    /// What the runtime's parts count, for [`Request::Metrics`].
    pub observed: crate::metrics::Observed,
}

impl Node {
    /// This node's status now.
    pub fn status(&self) -> Status {
        Status {
            version: self.version,
            manifest_sha256: sha256(&self.manifest),
            uptime_s: uptime_s(),
            identity: self.identity.verifying_key().to_bytes(),
            confinement: sovereign_confine::read().unwrap_or_else(|why| unreadable_confinement(&why)),
            refused: self.refused.clone(),
            gpu: match self.observed.gpu.get() {
                Some(gpu) => gpu.describe(),
                None => "GPU governance is not running: the pipeline engine did not start".into(),
            },
        }
    }

    /// TPM evidence for `nonce`, bound to this node's identity.
    pub fn evidence(&self, nonce: &[u8; 32]) -> Result<sovereign_protocol::Evidence, String> {
        let files = NodeFiles { manifest: &self.manifest, manifest_signature: &self.manifest_signature };
        let mut attestor = self.attestor.lock().map_err(|_| "the TPM session is poisoned".to_string())?;
        attestor.evidence(nonce, &self.identity.verifying_key().to_bytes(), &files)
    }

    /// Answers an admitted request that needs no engine; `None` for a pipeline command.
    pub fn answer_at_once(&self, request: &Request) -> Option<Response> {
        Some(match request {
            Request::Status => Response::Status(self.status()),
            Request::Attest { nonce } => match self.evidence(nonce) {
                Ok(evidence) => {
                    self.observed.attestations_ok.fetch_add(1, Ordering::Relaxed);
                    Response::Evidence(Box::new(evidence))
                }
                Err(e) => {
                    self.observed.attestations_failed.fetch_add(1, Ordering::Relaxed);
                    Response::Refused(format!("attestation failed: {e}"))
                }
            },
            Request::Metrics => Response::Metrics(crate::metrics::render(self)),
            Request::ActivateCredential { credential_blob, encrypted_secret } => {
                let released = self
                    .attestor
                    .lock()
                    .map_err(|_| "the TPM session is poisoned".to_string())
                    .and_then(|mut a| a.activate(credential_blob, encrypted_secret));
                match released {
                    Ok(secret) => Response::Credential(secret),
                    Err(e) => Response::Refused(format!("credential activation failed: {e}")),
                }
            }
            Request::CertifyAk(cert) => {
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let identity = self.identity.verifying_key().to_bytes();
                let installed = self
                    .attestor
                    .lock()
                    .map_err(|_| "the TPM session is poisoned".to_string())
                    .and_then(|mut a| a.install_certificate(cert, &identity, now_unix));
                match installed {
                    Ok(()) => Response::AkCertified { serial: cert.serial.clone() },
                    Err(e) => Response::Refused(e),
                }
            }
            Request::Pipeline(_) => return None,
            _ => Response::Refused("request not supported by this runtime version".into()),
        })
    }
}

/// Admits `request` through `gate` at `now_ms` and answers it at once, signed: the path of
/// status, attestation and credential activation without the transport (the benchmarks drive
/// it). A pipeline command is refused: it goes through [`serve`]'s engine thread.
pub fn answer(node: &Node, gate: &mut Gate, request: &SignedRequest, now_ms: u64) -> SignedResponse {
    let response = match gate.admit(request, now_ms) {
        Err(refusal) => Response::Refused(refusal.to_string()),
        Ok(()) if !request.attachments.is_empty() => {
            Response::Refused("payload refused: this request takes no attachments".into())
        }
        Ok(()) => node
            .answer_at_once(&request.request)
            .unwrap_or_else(|| Response::Refused("pipeline commands are answered by the engine's thread".into())),
    };
    SignedResponse::sign(request.digest(), response, vec![], &node.identity)
}

/// The write half of the stream, shared by the reading thread and the engine's thread.
struct Outbox {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Outbox {
    fn send(&self, f: &Frame) {
        let bytes = frame(f);
        let written = match self.out.lock() {
            Ok(mut out) => out.write_all(&bytes).and_then(|()| out.flush()),
            Err(_) => Err(io::Error::other("the control port's writer is poisoned")),
        };
        if let Err(e) = written {
            println!("sovereign-runtime: control: answering failed: {e}");
        }
    }

    /// Signs `response` to the request `digest` with its payloads' manifests, then sends the
    /// payloads chunk by chunk (other answers may go between two chunks).
    fn respond(&self, node: &Node, digest: [u8; 32], response: Response, payloads: &[Vec<u8>]) {
        let signed = SignedResponse::sign(digest, response, Attachment::describe_all(payloads), &node.identity);
        self.send(&Frame::Response(Box::new(signed)));
        for chunk in chunks(digest, payloads) {
            self.send(&chunk);
        }
    }
}

/// A pipeline command waiting for the engine.
struct Job {
    /// Where its answer goes: the session that asked.
    outbox: Arc<Outbox>,
    /// The operator who signed the request.
    operator: [u8; 32],
    digest: [u8; 32],
    command: Command,
    payloads: Payloads,
    /// Bytes of payload it holds against [`MAX_HELD_PAYLOAD`].
    held: u64,
}

/// A request whose attachments are still arriving.
struct Receiving {
    request: SignedRequest,
    assembly: Assembly,
    held: u64,
}

/// Where sessions come from: each yields the read and write halves of one connection.
pub trait Link {
    /// Waits for the next session.
    fn next_session(&mut self) -> io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)>;
}

/// The appliance's virtio-serial port. It stays open: while no host is connected a read
/// returns end-of-file at once, so a session that ends is followed, a little later, by the next
/// on the same port.
pub struct VirtioPort {
    path: PathBuf,
    open: Option<std::fs::File>,
}

impl VirtioPort {
    /// The port at `path` (see [`find_port`]).
    pub fn new(path: PathBuf) -> Self {
        VirtioPort { path, open: None }
    }
}

impl Link for VirtioPort {
    fn next_session(&mut self) -> io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
        if self.open.is_some() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let port = loop {
            if let Some(f) = &self.open {
                break f.try_clone()?;
            }
            match OpenOptions::new().read(true).write(true).open(&self.path) {
                Ok(f) => self.open = Some(f),
                Err(e) => {
                    println!("sovereign-runtime: control: cannot open {}: {e}; retrying", self.path.display());
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        Ok((Box::new(port.try_clone()?), Box::new(port)))
    }
}

/// A unix socket: one session per accepted connection, one at a time (as QEMU's socket for a
/// virtio-serial port serves one host at a time). The host tests serve the runtime this way.
impl Link for std::os::unix::net::UnixListener {
    fn next_session(&mut self) -> io::Result<(Box<dyn Read + Send>, Box<dyn Write + Send>)> {
        let (stream, _) = self.accept()?;
        Ok((Box::new(stream.try_clone()?), Box::new(stream)))
    }
}

/// What every session shares: the node, the gate (one replay store for every transport), the
/// engine's queue and the payload bytes held.
struct Shared {
    node: Arc<Node>,
    gate: Mutex<Gate>,
    engine: Option<Arc<Scheduler<Job>>>,
    held: Arc<AtomicU64>,
}

/// The control API: one gate and one engine behind any number of sessions, from any transport
/// (the virtio-serial port, one session at a time; the mesh, a thread per stream).
#[derive(Clone)]
pub struct ControlServer {
    shared: Arc<Shared>,
}

impl ControlServer {
    /// Starts the engine's thread (when `engine` is given) and returns the server.
    pub fn start(node: Arc<Node>, engine: Option<sovereign_pipeline::Engine>, gate: Gate) -> io::Result<Self> {
        let held = Arc::new(AtomicU64::new(0));
        let jobs = match engine {
            None => None,
            Some(engine) => {
                let jobs = Arc::new(Scheduler::default());
                let (j, n, h) = (jobs.clone(), node.clone(), held.clone());
                std::thread::Builder::new().name("engine".into()).spawn(move || run_engine(engine, j, n, h))?;
                Some(jobs)
            }
        };
        Ok(ControlServer { shared: Arc::new(Shared { node, gate: Mutex::new(gate), engine: jobs, held }) })
    }

    /// Serves the sessions of `link`, one after another, until the link fails.
    pub fn serve(&self, mut link: impl Link) -> io::Result<()> {
        loop {
            let (mut input, output) = link.next_session()?;
            self.session(&mut input, output);
        }
    }

    /// Serves one session on this thread until its input ends. Answers the engine gives after
    /// that are dropped (the session's client is gone).
    pub fn session(&self, input: &mut dyn Read, output: Box<dyn Write + Send>) {
        let mut session = Server {
            shared: self.shared.clone(),
            outbox: Arc::new(Outbox { out: Mutex::new(output) }),
            receiving: std::collections::BTreeMap::new(),
        };
        session.session(input);
        session.forget_partial();
    }
}

/// One session's state on its reading thread.
struct Server {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    receiving: std::collections::BTreeMap<[u8; 32], Receiving>,
}

impl Server {
    fn refuse(&self, digest: [u8; 32], why: String) {
        self.outbox.respond(&self.shared.node, digest, Response::Refused(why), &[]);
    }

    fn release(&self, bytes: u64) {
        self.shared.held.fetch_sub(bytes, Ordering::SeqCst);
    }

    fn on_request(&mut self, request: SignedRequest) {
        let digest = request.digest();
        let admitted = match self.shared.gate.lock() {
            Ok(mut gate) => gate.admit(&request, now_ms()).map_err(|refusal| refusal.to_string()),
            Err(_) => Err("the control API's gate is poisoned".to_string()),
        };
        if let Err(refusal) = admitted {
            return self.refuse(digest, refusal);
        }
        let takes_payloads = matches!(
            &request.request,
            Request::Pipeline(
                Command::Start(_)
                    | Command::UpdatePush { .. }
                    | Command::LicenceImport { .. }
                    | Command::AnchorImport { .. }
            )
        );
        if !request.attachments.is_empty() && !takes_payloads {
            return self.refuse(digest, "payload refused: this request takes no attachments".into());
        }
        let assembly = match Assembly::new(digest, &request.attachments) {
            Ok(a) => a,
            Err(refusal) => return self.refuse(digest, refusal.to_string()),
        };
        let need = assembly.remaining();
        let held = self.shared.held.fetch_add(need, Ordering::SeqCst);
        if held.saturating_add(need) > MAX_HELD_PAYLOAD {
            self.release(need);
            return self.refuse(
                digest,
                format!(
                    "busy: {held} bytes of payloads are held; {need} more would pass the {MAX_HELD_PAYLOAD}-byte limit"
                ),
            );
        }
        if assembly.is_complete() {
            self.dispatch(request, assembly, need);
        } else {
            self.receiving.insert(digest, Receiving { request, assembly, held: need });
        }
    }

    fn on_chunk(&mut self, chunk: sovereign_protocol::Chunk) {
        let Some(receiving) = self.receiving.get_mut(&chunk.message) else {
            // The chunk of a request that was refused (or never sent): it is dropped; the
            // refusal already went out.
            return;
        };
        if let Err(refusal) = receiving.assembly.accept(&chunk) {
            if let Some(r) = self.receiving.remove(&chunk.message) {
                self.release(r.held);
            }
            return self.refuse(chunk.message, refusal.to_string());
        }
        if receiving.assembly.is_complete()
            && let Some(r) = self.receiving.remove(&chunk.message)
        {
            self.dispatch(r.request, r.assembly, r.held);
        }
    }

    fn dispatch(&mut self, request: SignedRequest, assembly: Assembly, held: u64) {
        let digest = request.digest();
        let payloads = match assembly.finish() {
            Ok(p) => p,
            Err(refusal) => {
                self.release(held);
                return self.refuse(digest, refusal.to_string());
            }
        };
        let command = match request.request {
            Request::Pipeline(command) => command,
            other => {
                self.release(held);
                let response = self
                    .shared
                    .node
                    .answer_at_once(&other)
                    .unwrap_or_else(|| Response::Refused("request not supported by this runtime version".into()));
                return self.outbox.respond(&self.shared.node, digest, response, &[]);
            }
        };
        let Some(engine) = &self.shared.engine else {
            self.release(held);
            let why = match &self.shared.node.refused {
                Some(why) => format!("this node refuses every governed action: {why}"),
                None => "pipelines are not part of this node".into(),
            };
            return self.refuse(digest, why);
        };
        let job = Job { outbox: self.outbox.clone(), operator: request.operator, digest, command, payloads, held };
        if let Err(busy) = engine.push(request.operator, job) {
            self.release(held);
            self.refuse(digest, busy);
        }
    }

    /// The stream ended: requests still receiving chunks can never complete.
    fn forget_partial(&mut self) {
        for (_, r) in std::mem::take(&mut self.receiving) {
            self.release(r.held);
        }
    }
}

/// The engine's thread: one command at a time, in the scheduler's order.
fn run_engine(
    mut engine: sovereign_pipeline::Engine,
    jobs: Arc<Scheduler<Job>>,
    node: Arc<Node>,
    held: Arc<AtomicU64>,
) {
    while let Some(job) = jobs.next() {
        let mut attest = |nonce: &[u8; 32]| -> Result<Vec<u8>, String> {
            let evidence = node.evidence(nonce)?;
            let certificate = node.attestor.lock().ok().and_then(|mut a| a.certificate());
            serde_json::to_vec(&serde_json::json!({ "evidence": evidence, "ak_certificate": certificate }))
                .map_err(|e| e.to_string())
        };
        let answer = engine.handle_for(job.operator, job.command, &job.payloads, &mut attest);
        drop(job.payloads);
        held.fetch_sub(job.held, Ordering::SeqCst);
        let applying = matches!(&answer.reply, Reply::Update(state) if state.applying);
        job.outbox.respond(&node, job.digest, Response::Pipeline(answer.reply), &answer.payloads);
        if applying {
            // Answered, audited and durable (the engine's state advances before it answers):
            // the runtime stops here so that PID 1 installs the staged bundle and reboots.
            println!("sovereign-runtime: stopping so that PID 1 applies the staged update");
            drop(engine);
            std::process::exit(sovereign_boot_contract::slots::EXIT_INSTALL_UPDATE);
        }
    }
}

/// Serves the sessions of `link`, one after another, until the link fails. Pipeline commands
/// run on a thread of their own when `engine` is given; each answer goes to the session that
/// asked (on the virtio-serial port, a session that ended and the next share the port: its
/// client ignores an answer bound to a request it did not send).
pub fn serve(
    node: Arc<Node>,
    engine: Option<sovereign_pipeline::Engine>,
    gate: Gate,
    link: impl Link,
) -> io::Result<()> {
    ControlServer::start(node, engine, gate)?.serve(link)
}

impl Server {
    /// Reads one session's frames until it ends.
    fn session(&mut self, input: &mut dyn Read) {
        loop {
            match read_frame(input) {
                Incoming::Frame(body) => match decode(&body) {
                    Ok(Frame::Request(request)) => self.on_request(*request),
                    Ok(Frame::Chunk(chunk)) => self.on_chunk(chunk),
                    Ok(_) => self.outbox.send(&Frame::Refused("the node takes requests and chunks only".into())),
                    Err(e) => {
                        println!("sovereign-runtime: control: refused a malformed frame: {e}");
                        self.outbox.send(&Frame::Refused(format!("frame refused: {e}")));
                    }
                },
                Incoming::Oversized(len) => {
                    println!("sovereign-runtime: control: refused a {len}-byte frame (limit {MAX_FRAME})");
                    self.outbox.send(&Frame::Refused(format!(
                        "frame refused: {len} bytes exceed the {MAX_FRAME}-byte limit (its bytes are skipped)"
                    )));
                    // The declared length is the only way back to a frame boundary: skip it.
                    let skipped = io::copy(&mut input.take(u64::from(len)), &mut io::sink()).ok();
                    if skipped != Some(u64::from(len)) {
                        return;
                    }
                }
                Incoming::End => return,
            }
        }
    }
}

/// This runtime's gate: requests addressed to `node`, signed by one of `admins`, fresh, and
/// signed after `started_ms` (when this runtime process started). Nonces live in memory:
/// nothing signed before this runtime started is admitted, so a restart never re-opens a
/// request captured before it. (The process's start, not a thread's: a request signed once the
/// runtime said its port is up is admitted.)
pub fn gate(node: &Node, admins: Vec<VerifyingKey>, started_ms: u64) -> Gate {
    Gate::new(node.identity.verifying_key().to_bytes(), admins, WINDOW_MS).admitting_from(started_ms)
}

/// Serves the appliance's virtio-serial port for as long as the runtime runs.
pub fn serve_port(server: ControlServer, port: PathBuf) {
    let warmed = server.shared.node.attestor.lock().map_err(|_| "poisoned".to_string()).and_then(|mut a| a.warm_up());
    match warmed {
        Ok(()) => println!("sovereign-runtime: control: attestation key ready"),
        Err(e) => println!("sovereign-runtime: control: attestation unavailable for now: {e}"),
    }
    if let Err(e) = server.serve(VirtioPort::new(port)) {
        // Without its control API the runtime is of no use: exit, and PID 1 applies its rule.
        println!("sovereign-runtime: FATAL: the control API stopped: {e}");
        std::process::exit(2);
    }
}

enum Incoming {
    Frame(Vec<u8>),
    /// No host connected, or the host went away mid-frame.
    End,
    /// A length prefix over the limit.
    Oversized(u32),
}

fn read_frame(input: &mut dyn Read) -> Incoming {
    let mut prefix = [0u8; 4];
    if input.read_exact(&mut prefix).is_err() {
        return Incoming::End;
    }
    let Ok(len) = frame_len(prefix) else { return Incoming::Oversized(u32::from_be_bytes(prefix)) };
    let mut body = vec![0u8; len];
    if input.read_exact(&mut body).is_err() {
        return Incoming::End;
    }
    Incoming::Frame(body)
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

fn uptime_s() -> u64 {
    fs::read_to_string("/proc/uptime").ok().and_then(|s| s.split('.').next().and_then(|v| v.parse().ok())).unwrap_or(0)
}
