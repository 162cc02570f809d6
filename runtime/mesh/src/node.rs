//! A mesh node on libp2p 0.57 (tokio): TCP → pnet (the swarm key) → Noise → Yamux, with a
//! transport timeout (a peer with the wrong key, or one that stalls, can hold an upgrade only
//! that long), and one request-response protocol ([`crate::wire`]).
//!
//! On every new connection the node challenges the peer to attest ([`Request::Challenge`]);
//! the answer goes to the caller's verifier, and the admission table ([`crate::admission`])
//! decides. Only an admitted peer is served governance traffic: a witness request from any
//! other peer is refused with the reason, and checkpoints are sent only to admitted peers. A
//! peer that does not hold the swarm key never completes the handshake, so no PeerId is learnt
//! and nothing of the protocol reaches it. Admissions expire and are renewed; a disconnect ends
//! one.
//!
//! The node runs on a thread of its own (a current-thread tokio runtime), driven by commands
//! and reporting events on channels, so the synchronous runtime can hold it.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::core::transport::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, Transport as _, identity, noise, pnet, tcp, yamux};
use rand_core::{OsRng, RngCore as _};
use sovereign_audit::witness::Witness;
use tokio::sync::mpsc;

use crate::admission::{Admissions, Attested, Policy, Standing, quote_binding};
use crate::swarm_key::SwarmKey;
use crate::wire::{MAX_MESSAGE, PROTOCOL, Request, Response};

/// Produces this node's evidence for a quote binding (`admission::quote_binding`).
pub type AttestFn = Box<dyn FnMut(&[u8; 32]) -> Result<Vec<u8>, String> + Send>;
/// Verifies a peer's evidence: the binding it must quote (`quote_binding(nonce, its peer ID,
/// its node identity)`), the node identity it claims, its evidence; what it established, or
/// why not (one line, e.g. "PCR 1 differs").
pub type VerifyFn = Box<dyn FnMut(&[u8; 32], &[u8; 32], &[u8]) -> Result<[u8; 32], String> + Send>;

/// The log an admitted peer keeps, by its node identity: its origin and note verifier (the
/// witness then follows it).
pub type LogOf = fn(&[u8; 32]) -> Option<(String, sovereign_audit::note::NoteVerifier)>;
/// Stores what the witness has cosigned, durably, before a cosignature leaves.
pub type KeepSeen = Box<dyn FnMut(&sovereign_audit::witness::Seen) -> Result<(), String> + Send>;

/// How a node runs.
pub struct MeshConfig {
    /// Its libp2p identity.
    pub keypair: identity::Keypair,
    /// Its node identity (bound in its quotes).
    pub node_identity: [u8; 32],
    /// The swarm key.
    pub swarm_key: SwarmKey,
    /// Where it listens (every address; at least one).
    pub listen: Vec<Multiaddr>,
    /// Peers it dials.
    pub dial: Vec<Multiaddr>,
    /// The transport upgrade's limit (pnet + Noise + Yamux).
    pub handshake_timeout: Duration,
    /// A request's limit.
    pub request_timeout: Duration,
    /// Admission lifetimes.
    pub admission: Policy,
    /// When set, the witness follows the log of every peer it admits.
    pub follow_admitted: Option<LogOf>,
    /// When set, a refused peer is challenged again this long after its refusal (it may have
    /// been refused for something it can fix, such as an uncertified AK).
    pub rechallenge_refused: Option<Duration>,
    /// When set, every address in `dial` with no connection this node dialled is dialled again
    /// this often (a peer that was not up yet, or went away).
    pub redial: Option<Duration>,
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// Listening on an address.
    Listening(Multiaddr),
    /// A handshake completed (pnet, Noise, Yamux): connected, not admitted.
    Connected(PeerId),
    /// A connection ended.
    Disconnected(PeerId),
    /// A connection attempt failed before it was established (wrong key, timeout, refused).
    HandshakeFailed {
        /// The peer, when known.
        peer: Option<PeerId>,
        /// Why.
        reason: String,
    },
    /// A peer's attestation verified: admitted.
    Admitted {
        /// The peer.
        peer: PeerId,
        /// Its node identity.
        node_identity: [u8; 32],
    },
    /// A peer that speaks no mesh protocol (it could not be challenged): a client, such as an
    /// operator's CLI on the control API. It is neither admitted nor challenged again.
    Client(PeerId),
    /// A peer's attestation failed: refused admission (to audit).
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A peer cosigned this node's checkpoint.
    Cosigned {
        /// The witness.
        peer: PeerId,
        /// The note with its cosignature.
        note: String,
    },
    /// A peer refused to cosign (e.g. a split view), or the request failed.
    WitnessRefused {
        /// The witness.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// This node refused to witness for a peer (not admitted, or the checkpoint failed).
    RefusedToWitness {
        /// The asker.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// What the caller asks the node.
#[derive(Debug)]
pub enum MeshCommand {
    /// Send this node's checkpoint to every admitted peer for cosigning.
    Witness {
        /// The signed checkpoint.
        checkpoint: String,
        /// The size the proof starts from.
        old_size: u64,
        /// The consistency proof.
        proof: Vec<[u8; 32]>,
    },
    /// Send this node's checkpoint to one admitted peer, with a proof from the size it last
    /// cosigned.
    WitnessTo {
        /// The witness.
        peer: PeerId,
        /// The signed checkpoint.
        checkpoint: String,
        /// The size the proof starts from.
        old_size: u64,
        /// The consistency proof.
        proof: Vec<[u8; 32]>,
    },
    /// Challenge a connected peer again now (a renewal on demand); its standing follows the
    /// answer.
    Challenge {
        /// The peer.
        peer: PeerId,
    },
    /// Dial a peer's address (e.g. one that went away).
    Dial(Multiaddr),
    /// Close every connection to a peer (its admission ends with them).
    Disconnect(PeerId),
    /// Stop.
    Shutdown,
}

/// A running node.
pub struct MeshHandle {
    /// Its libp2p identity.
    pub peer_id: PeerId,
    /// Opens and accepts raw streams ([`crate::control`]).
    streams: libp2p_stream::Control,
    /// The node's tokio runtime (raw streams are driven by it).
    runtime: tokio::runtime::Handle,
    commands: mpsc::UnboundedSender<MeshCommand>,
    /// Its events.
    pub events: std_mpsc::Receiver<MeshEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MeshHandle {
    /// Sends a command (false when the node has stopped).
    pub fn send(&self, command: MeshCommand) -> bool {
        self.commands.send(command).is_ok()
    }

    /// The next event within `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<MeshEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Accepts the control API's streams ([`crate::control::CONTROL_PROTOCOL`]) from any peer
    /// that completed the handshake (the control API's own gate decides what it answers); once
    /// only.
    pub fn accept_control(&self) -> Result<crate::control::StreamListener, MeshError> {
        self.accept(crate::control::CONTROL_PROTOCOL)
    }

    /// Accepts update distribution's streams ([`crate::transfer::UPDATE_PROTOCOL`]) from any
    /// peer that completed the handshake: whoever serves them answers admitted peers only; once
    /// only.
    pub fn accept_updates(&self) -> Result<crate::control::StreamListener, MeshError> {
        self.accept(crate::transfer::UPDATE_PROTOCOL)
    }

    fn accept(&self, protocol: &'static str) -> Result<crate::control::StreamListener, MeshError> {
        let incoming = self
            .streams
            .clone()
            .accept(StreamProtocol::new(protocol))
            .map_err(|e| MeshError::Runtime(format!("the protocol {protocol}: {e}")))?;
        Ok(crate::control::StreamListener::new(incoming, self.runtime.clone()))
    }

    /// Opens streams to peers (e.g. to pull an update bundle from an admitted one).
    pub fn opener(&self) -> crate::control::StreamOpener {
        crate::control::StreamOpener { streams: self.streams.clone(), runtime: self.runtime.clone() }
    }
}

impl Drop for MeshHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(MeshCommand::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The transport or swarm could not be built.
    #[error("mesh: building the transport: {0}")]
    Transport(String),
    /// It cannot listen.
    #[error("mesh: cannot listen on {addr}: {why}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        why: String,
    },
    /// A peer could not be reached.
    #[error("mesh: cannot reach {addr}: {why}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        why: String,
    },
    /// The runtime could not start.
    #[error("mesh: {0}")]
    Runtime(String),
}

/// The length-prefixed postcard codec of [`crate::wire`]: a u32 length, then at most
/// [`MAX_MESSAGE`] bytes — checked before anything is allocated.
#[derive(Debug, Clone, Default)]
pub struct WireCodec;

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {len}-byte mesh message is over the limit")));
    }
    let mut bytes = vec![0u8; len];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Request::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Response::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, req: Request) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode().map_err(invalid)?).await
    }

    async fn write_response<T>(&mut self, _: &Self::Protocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode().map_err(invalid)?).await
    }
}

/// Connections kept in their handshake at once; more are closed as they arrive (a flood, or
/// peers stalling mid-handshake, cost at most this many sockets for a transport timeout each).
pub const MAX_PENDING_INCOMING: u32 = 32;
/// Established incoming connections at once.
pub const MAX_ESTABLISHED_INCOMING: u32 = 128;
/// Connections with one peer at once (a dial each way, and one more while a redial races).
pub const MAX_PER_PEER: u32 = 3;

/// Connection limits first (a connection over them is denied before its handshake), then the
/// one request-response protocol, then raw streams (the control API, [`crate::control`]).
#[derive(libp2p::swarm::NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    wire: request_response::Behaviour<WireCodec>,
    pub(crate) streams: libp2p_stream::Behaviour,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn build_swarm(config: &MeshConfig) -> Result<Swarm<Behaviour>, MeshError> {
    let protocol = StreamProtocol::new(PROTOCOL);
    let limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
        .with_max_established_per_peer(Some(MAX_PER_PEER));
    let behaviour = Behaviour {
        limits: libp2p::connection_limits::Behaviour::new(limits),
        wire: request_response::Behaviour::new(
            [(protocol, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        ),
        streams: libp2p_stream::Behaviour::new(),
    };
    swarm_with(&config.keypair, &config.swarm_key, config.handshake_timeout, behaviour)
}

/// A swarm on the mesh's transport (TCP → pnet with `swarm_key` → Noise → Yamux, the upgrade
/// bounded by `handshake_timeout`) running `behaviour`.
pub(crate) fn swarm_with<B: libp2p::swarm::NetworkBehaviour>(
    keypair: &identity::Keypair,
    swarm_key: &SwarmKey,
    handshake_timeout: Duration,
    behaviour: B,
) -> Result<Swarm<B>, MeshError> {
    let psk = pnet::PreSharedKey::new(*swarm_key.bytes());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let noise = noise::Config::new(key)?;
            Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| pnet::PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(handshake_timeout))
        })
        .map_err(|e| MeshError::Transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| MeshError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Starts a node: listens, dials its peers, challenges every peer that connects, serves and
/// asks for witnessing. `attest` answers challenges; `verify` judges peers' answers; `witness`
/// cosigns admitted peers' checkpoints.
pub fn spawn(
    config: MeshConfig,
    attest: AttestFn,
    verify: VerifyFn,
    witness: Witness,
) -> Result<MeshHandle, MeshError> {
    spawn_keeping(config, attest, verify, witness, None)
}

/// [`spawn`], with `keep_seen` storing the witness's state durably before each cosignature
/// leaves (a failure refuses the cosignature and keeps the state it had).
pub fn spawn_keeping(
    config: MeshConfig,
    attest: AttestFn,
    verify: VerifyFn,
    witness: Witness,
    keep_seen: Option<KeepSeen>,
) -> Result<MeshHandle, MeshError> {
    let peer_id = config.keypair.public().to_peer_id();
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events_tx, events) = std_mpsc::channel();
    let (ready_tx, ready_rx) =
        std_mpsc::channel::<Result<(libp2p_stream::Control, tokio::runtime::Handle), MeshError>>();
    let thread = std::thread::Builder::new()
        .name(format!("mesh-{peer_id}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(MeshError::Runtime(e.to_string())));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut swarm = match build_swarm(&config) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for addr in &config.listen {
                    if let Err(e) = swarm.listen_on(addr.clone()) {
                        let why = format!("{e} ({e:?})");
                        let _ = ready_tx.send(Err(MeshError::Listen { addr: addr.clone(), why }));
                        return;
                    }
                }
                for addr in &config.dial {
                    if let Err(e) = swarm.dial(addr.clone()) {
                        let _ = events_tx.send(MeshEvent::HandshakeFailed { peer: None, reason: e.to_string() });
                    }
                }
                let _ = ready_tx.send(Ok((swarm.behaviour().streams.new_control(), tokio::runtime::Handle::current())));
                let node = Node {
                    config,
                    attest,
                    verify,
                    witness,
                    keep_seen,
                    admissions: Admissions::default(),
                    events: events_tx,
                    pending_witness: BTreeMap::new(),
                    dialled: BTreeMap::new(),
                };
                node.run(swarm, command_rx).await;
            });
        })
        .map_err(|e| MeshError::Runtime(e.to_string()))?;
    match ready_rx.recv() {
        Ok(Ok((streams, runtime))) => {
            Ok(MeshHandle { peer_id, streams, runtime, commands, events, thread: Some(thread) })
        }
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(MeshError::Runtime("the mesh thread stopped before it was ready".into())),
    }
}

struct Node {
    config: MeshConfig,
    attest: AttestFn,
    verify: VerifyFn,
    witness: Witness,
    keep_seen: Option<KeepSeen>,
    admissions: Admissions,
    events: std_mpsc::Sender<MeshEvent>,
    /// Outstanding witness requests: request ID → the peer asked.
    pending_witness: BTreeMap<request_response::OutboundRequestId, PeerId>,
    /// The `dial` addresses with a connection this node dialled, and how many.
    dialled: BTreeMap<Multiaddr, usize>,
}

impl Node {
    fn emit(&self, event: MeshEvent) {
        let _ = self.events.send(event);
    }

    fn challenge(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        self.admissions.challenge(&peer.to_bytes(), nonce, now_ms());
        swarm.behaviour_mut().wire.send_request(&peer, Request::Challenge { nonce });
    }

    async fn run(mut self, mut swarm: Swarm<Behaviour>, mut commands: mpsc::UnboundedReceiver<MeshCommand>) {
        let mut renew_every = Duration::from_millis((self.config.admission.ttl_ms / 4).max(100));
        if let Some(again) = self.config.rechallenge_refused {
            renew_every = renew_every.min(again.max(Duration::from_millis(100)));
        }
        let mut renew = tokio::time::interval(renew_every);
        let mut redial = tokio::time::interval(self.config.redial.unwrap_or(Duration::from_secs(3600)));
        redial.tick().await;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(MeshCommand::Shutdown) => return,
                    Some(MeshCommand::Dial(addr)) => {
                        if let Err(e) = swarm.dial(addr) {
                            self.emit(MeshEvent::HandshakeFailed { peer: None, reason: e.to_string() });
                        }
                    }
                    Some(MeshCommand::Disconnect(peer)) => {
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                    Some(MeshCommand::Challenge { peer }) => {
                        if swarm.is_connected(&peer) {
                            self.challenge(&mut swarm, peer);
                        }
                    }
                    Some(MeshCommand::WitnessTo { peer, checkpoint, old_size, proof }) => {
                        if self.admissions.admitted(&peer.to_bytes(), now_ms()) {
                            let id = swarm.behaviour_mut().wire.send_request(&peer, Request::Witness { checkpoint, old_size, proof });
                            self.pending_witness.insert(id, peer);
                        } else {
                            self.emit(MeshEvent::WitnessRefused { peer, reason: "not admitted here: not asked to witness".into() });
                        }
                    }
                    Some(MeshCommand::Witness { checkpoint, old_size, proof }) => {
                        let now = now_ms();
                        let admitted: Vec<PeerId> = swarm
                            .connected_peers()
                            .filter(|p| self.admissions.admitted(&p.to_bytes(), now))
                            .copied()
                            .collect();
                        for peer in admitted {
                            let request = Request::Witness { checkpoint: checkpoint.clone(), old_size, proof: proof.clone() };
                            let id = swarm.behaviour_mut().wire.send_request(&peer, request);
                            self.pending_witness.insert(id, peer);
                        }
                    }
                },
                _ = renew.tick() => {
                    let margin = self.config.admission.ttl_ms / 2;
                    for peer in self.admissions.due_for_renewal(now_ms(), margin) {
                        if let Ok(peer) = PeerId::from_bytes(&peer) {
                            self.challenge(&mut swarm, peer);
                        }
                    }
                    if let Some(after) = self.config.rechallenge_refused {
                        let now = now_ms();
                        let again: Vec<PeerId> = swarm
                            .connected_peers()
                            .filter(|p| {
                                let key = p.to_bytes();
                                self.admissions.outstanding(&key).is_none()
                                    && matches!(self.admissions.standing(&key),
                                        Some(Standing::Refused { at_ms, .. }) if now.saturating_sub(*at_ms) >= after.as_millis() as u64)
                            })
                            .copied()
                            .collect();
                        for peer in again {
                            self.challenge(&mut swarm, peer);
                        }
                    }
                }
                _ = redial.tick(), if self.config.redial.is_some() => {
                    for addr in self.config.dial.clone() {
                        if self.dialled.get(&addr).copied().unwrap_or(0) == 0 {
                            let _ = swarm.dial(addr);
                        }
                    }
                }
                event = swarm.select_next_some() => self.on_event(&mut swarm, event),
            }
        }
    }

    fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.emit(MeshEvent::Listening(address)),
            SwarmEvent::ConnectionEstablished {
                endpoint: libp2p::core::ConnectedPoint::Dialer { address, .. },
                num_established,
                peer_id,
                ..
            } => {
                *self.dialled.entry(address).or_insert(0) += 1;
                if num_established.get() == 1 {
                    self.emit(MeshEvent::Connected(peer_id));
                    self.challenge(swarm, peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                endpoint: libp2p::core::ConnectedPoint::Dialer { address, .. },
                peer_id,
                num_established,
                ..
            } => {
                if let Some(n) = self.dialled.get_mut(&address) {
                    *n = n.saturating_sub(1);
                }
                if num_established == 0 {
                    self.admissions.disconnected(&peer_id.to_bytes());
                    self.emit(MeshEvent::Disconnected(peer_id));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if num_established.get() == 1 => {
                self.emit(MeshEvent::Connected(peer_id));
                self.challenge(swarm, peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.admissions.disconnected(&peer_id.to_bytes());
                self.emit(MeshEvent::Disconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.emit(MeshEvent::HandshakeFailed { peer: peer_id, reason: error.to_string() });
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                self.emit(MeshEvent::HandshakeFailed { peer: None, reason: error.to_string() });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Wire(event)) => self.on_message(swarm, event),
            _ => {}
        }
    }

    fn on_message(&mut self, swarm: &mut Swarm<Behaviour>, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let response = self.serve(peer, request);
                let _ = swarm.behaviour_mut().wire.send_response(channel, response);
            }
            Event::Message { peer, message: Message::Response { request_id, response }, .. } => {
                if let Some(witness) = self.pending_witness.remove(&request_id) {
                    match response {
                        Response::Cosigned { note } => self.emit(MeshEvent::Cosigned { peer: witness, note }),
                        Response::Refused { reason } => self.emit(MeshEvent::WitnessRefused { peer: witness, reason }),
                        Response::Evidence { .. } => self.emit(MeshEvent::WitnessRefused {
                            peer: witness,
                            reason: "answered a witness request with evidence".into(),
                        }),
                    }
                    return;
                }
                self.on_evidence(peer, response);
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                if self.pending_witness.remove(&request_id).is_some() {
                    self.emit(MeshEvent::WitnessRefused { peer, reason: error.to_string() });
                } else if matches!(error, request_response::OutboundFailure::UnsupportedProtocols) {
                    // Not a mesh node: it gets nothing but what the control API's gate allows.
                    self.admissions.disconnected(&peer.to_bytes());
                    self.emit(MeshEvent::Client(peer));
                } else {
                    self.on_evidence(
                        peer,
                        Response::Refused { reason: format!("no answer to the challenge: {error}") },
                    );
                }
            }
            _ => {}
        }
    }

    /// A peer's answer to this node's challenge.
    fn on_evidence(&mut self, peer: PeerId, response: Response) {
        let key = peer.to_bytes();
        let verdict = match response {
            Response::Evidence { node_identity, evidence } => match self.admissions.outstanding(&key) {
                None => Err("an answer to no outstanding challenge".to_string()),
                Some(nonce) => {
                    let binding = quote_binding(&nonce, &key, &node_identity);
                    (self.verify)(&binding, &node_identity, &evidence).map(|boot_id| Attested {
                        nonce,
                        node_identity,
                        boot_id,
                    })
                }
            },
            Response::Refused { reason } => Err(format!("it would not attest: {reason}")),
            Response::Cosigned { .. } => Err("answered a challenge with a cosignature".into()),
        };
        match self.admissions.answer(&key, verdict, &self.config.admission, now_ms()).clone() {
            Standing::Admitted { node_identity, .. } => {
                if let Some((origin, verifier)) = self.config.follow_admitted.and_then(|log_of| log_of(&node_identity))
                {
                    self.witness.follow(origin, verifier);
                }
                self.emit(MeshEvent::Admitted { peer, node_identity })
            }
            Standing::Refused { reason, .. } => self.emit(MeshEvent::Refused { peer, reason }),
            Standing::Connected => {}
        }
    }

    /// A peer's request.
    fn serve(&mut self, peer: PeerId, request: Request) -> Response {
        match request {
            Request::Challenge { nonce } => {
                let binding = quote_binding(&nonce, &swarm_peer_bytes(&self.config), &self.config.node_identity);
                match (self.attest)(&binding) {
                    Ok(evidence) => Response::Evidence { node_identity: self.config.node_identity, evidence },
                    Err(why) => Response::Refused { reason: format!("cannot attest: {why}") },
                }
            }
            Request::Witness { checkpoint, old_size, proof } => {
                let refused = |node: &Self, reason: String| {
                    node.emit(MeshEvent::RefusedToWitness { peer, reason: reason.clone() });
                    Response::Refused { reason }
                };
                if !self.admissions.admitted(&peer.to_bytes(), now_ms()) {
                    return refused(self, "not admitted: attest first".into());
                }
                let now = now_ms() / 1000;
                let before = self.witness.seen().clone();
                match self.witness.add_checkpoint(&checkpoint, old_size, &proof, now) {
                    Ok(note) => match self.keep_seen.as_mut().map(|keep| keep(self.witness.seen())) {
                        Some(Err(why)) => {
                            self.witness.restore(before);
                            refused(self, format!("this witness cannot store what it cosigned: {why}"))
                        }
                        _ => Response::Cosigned { note: note.to_text() },
                    },
                    Err(e) => refused(self, e.to_string()),
                }
            }
        }
    }
}

fn swarm_peer_bytes(config: &MeshConfig) -> Vec<u8> {
    config.keypair.public().to_peer_id().to_bytes()
}
