//! The control API's byte streams over the mesh: one libp2p stream
//! ([`CONTROL_PROTOCOL`]) per operator session, on the mesh's own transport (TCP → pnet → Noise
//! → Yamux), so only a holder of the swarm key reaches it. What travels on the stream is the
//! control protocol's frames, exactly as over the virtio-serial port; this module only carries
//! bytes. Both ends get blocking `Read`/`Write` halves (the runtime's control server and the
//! CLI are synchronous), every read and write bounded by a timeout.
//!
//! An operator is not a mesh node: it holds no TPM and speaks no mesh protocol, so it is never
//! admitted to governance traffic (witnessing). The control API's gate (a request signed by an
//! authorized operator key, addressed to this node, fresh, never replayed) is what admits its
//! requests, over the mesh as over the serial port.

use std::io::{self, Read, Write};
use std::time::Duration;

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, identity};

use crate::node::MeshError;
use crate::swarm_key::SwarmKey;

/// The control API's protocol on the mesh.
pub const CONTROL_PROTOCOL: &str = "/sovereign/control/1";

/// The read half of a control stream, blocking, each read bounded by a timeout (`None`: no
/// bound).
pub struct StreamReader {
    half: ReadHalf<Stream>,
    runtime: tokio::runtime::Handle,
    timeout: Option<Duration>,
}

/// The write half of a control stream, blocking, each write bounded by a timeout.
pub struct StreamWriter {
    half: WriteHalf<Stream>,
    runtime: tokio::runtime::Handle,
    timeout: Option<Duration>,
}

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("the mesh stream's {what} timed out after {} s", after.as_secs()))
}

fn bounded<T>(
    runtime: &tokio::runtime::Handle,
    timeout: Option<Duration>,
    what: &str,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match timeout {
        None => runtime.block_on(work),
        Some(after) => {
            runtime.block_on(async { tokio::time::timeout(after, work).await }).map_err(|_| timed_out(what, after))?
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        bounded(&self.runtime, self.timeout, "read", self.half.read(buf))
    }
}

impl Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        bounded(&self.runtime, self.timeout, "write", self.half.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        bounded(&self.runtime, self.timeout, "flush", self.half.flush())
    }
}

impl StreamWriter {
    /// Closes the write direction (the other end reads end-of-file); reads go on.
    pub fn close_write(&mut self) -> io::Result<()> {
        bounded(&self.runtime, self.timeout, "close", self.half.close())
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        // Tell the other end the session is over (bounded: a peer that stopped reading cannot
        // hold this thread).
        let _ = bounded(&self.runtime, Some(Duration::from_secs(2)), "close", self.half.close());
    }
}

/// Splits `stream` into blocking halves driven on `runtime`.
pub fn blocking(
    stream: Stream,
    runtime: tokio::runtime::Handle,
    timeout: Option<Duration>,
) -> (StreamReader, StreamWriter) {
    let (read, write) = stream.split();
    (StreamReader { half: read, runtime: runtime.clone(), timeout }, StreamWriter { half: write, runtime, timeout })
}

/// The streams of one protocol peers open to this node (the control API's, or update
/// distribution's).
pub struct StreamListener {
    incoming: libp2p_stream::IncomingStreams,
    runtime: tokio::runtime::Handle,
}

impl StreamListener {
    pub(crate) fn new(incoming: libp2p_stream::IncomingStreams, runtime: tokio::runtime::Handle) -> Self {
        StreamListener { incoming, runtime }
    }

    /// Waits for the next stream: the peer that opened it, and the stream (see [`blocking`]);
    /// `None` once the node has stopped.
    pub fn accept(&mut self) -> Option<(PeerId, Stream)> {
        self.runtime.block_on(self.incoming.next())
    }

    /// The runtime that drives the streams.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }
}

/// Opens streams from this node to its peers (update distribution's, [`crate::transfer`]).
#[derive(Clone)]
pub struct StreamOpener {
    pub(crate) streams: libp2p_stream::Control,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl StreamOpener {
    /// Opens a `protocol` stream to `peer` (connected, or dialled at an address the node knows),
    /// within `timeout`; its halves' reads and writes are each bounded by `timeout` too.
    pub fn open(
        &self,
        peer: PeerId,
        protocol: &'static str,
        timeout: Duration,
    ) -> Result<(StreamReader, StreamWriter), String> {
        let mut streams = self.streams.clone();
        let opened = self
            .runtime
            .block_on(async {
                tokio::time::timeout(timeout, streams.open_stream(peer, StreamProtocol::new(protocol))).await
            })
            .map_err(|_| format!("{peer} did not open a {protocol} stream within {} s", timeout.as_secs()))?
            .map_err(|e| format!("{peer} did not open a {protocol} stream: {e}"))?;
        Ok(blocking(opened, self.runtime.clone(), Some(timeout)))
    }
}

/// An operator's connection to a node's control API over the mesh. Dropping it closes the
/// connection.
pub struct ControlConnection {
    /// The node's libp2p identity (authenticated by Noise; the node identity is what signs the
    /// answers).
    pub peer: PeerId,
    /// The stream's read half.
    pub reader: StreamReader,
    /// The stream's write half.
    pub writer: StreamWriter,
    /// Drives the connection; it stops when this is dropped.
    _runtime: tokio::runtime::Runtime,
}

/// Dials `address` with `swarm_key` under a fresh, throw-away libp2p identity and opens a
/// control stream; the handshake and the stream's opening are each bounded by `timeout`, and
/// so is every read and write afterwards. A node with another swarm key (or none listening)
/// fails here, named.
pub fn dial_control(
    swarm_key: &SwarmKey,
    address: &Multiaddr,
    timeout: Duration,
) -> Result<ControlConnection, MeshError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mesh-client")
        .enable_all()
        .build()
        .map_err(|e| MeshError::Runtime(e.to_string()))?;
    let keypair = identity::Keypair::generate_ed25519();
    let mut swarm = {
        let _entered = runtime.enter();
        crate::node::swarm_with(&keypair, swarm_key, timeout, libp2p_stream::Behaviour::new())?
    };
    let mut streams = swarm.behaviour().new_control();
    let target = address.clone();
    let (peer, mut swarm) = runtime.block_on(async move {
        let connected = tokio::time::timeout(timeout, async {
            swarm.dial(target).map_err(|e| e.to_string())?;
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                    SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.to_string()),
                    _ => {}
                }
            }
        })
        .await;
        (connected, swarm)
    });
    let peer = match peer {
        Ok(Ok(peer)) => peer,
        Ok(Err(why)) => return Err(MeshError::Dial { addr: address.clone(), why }),
        Err(_) => {
            return Err(MeshError::Dial {
                addr: address.clone(),
                why: format!("no handshake within {} s (another swarm key?)", timeout.as_secs()),
            });
        }
    };
    runtime.spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let opened = runtime
        .block_on(async {
            tokio::time::timeout(timeout, streams.open_stream(peer, StreamProtocol::new(CONTROL_PROTOCOL))).await
        })
        .map_err(|_| MeshError::Dial {
            addr: address.clone(),
            why: format!("the node did not open a control stream within {} s", timeout.as_secs()),
        })?
        .map_err(|e| MeshError::Dial { addr: address.clone(), why: e.to_string() })?;
    let (reader, writer) = blocking(opened, runtime.handle().clone(), Some(timeout));
    Ok(ControlConnection { peer, reader, writer, _runtime: runtime })
}
