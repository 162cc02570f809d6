// Another libp2p implementation against the mesh: a js-libp2p node (TCP → pnet with the IPFS
// swarm.key → Noise → Yamux) dials ADDRESS with the key in KEYFILE and prints, as one JSON line,
// the peer it reached ({"connected": PEER_ID}) or why it did not ({"failed": WHY}; exit 1).
// Run by runtime/mesh/tests/net.rs from the directory `cargo xtask setup` installs the pinned
// packages into (/var/cache/sovereign/js-libp2p).
// usage: node dial.mjs ADDRESS KEYFILE
import { readFileSync } from 'node:fs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { preSharedKey } from '@libp2p/pnet'
import { multiaddr } from '@multiformats/multiaddr'

const [address, keyFile] = process.argv.slice(2)
const node = await createLibp2p({
  transports: [tcp()],
  connectionProtector: preSharedKey({ psk: readFileSync(keyFile) }),
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
})
try {
  const connection = await node.dial(multiaddr(address), { signal: AbortSignal.timeout(10000) })
  console.log(JSON.stringify({ connected: connection.remotePeer.toString() }))
  await new Promise(r => setTimeout(r, 3000))
  await node.stop()
  process.exit(0)
} catch (e) {
  console.log(JSON.stringify({ failed: String(e.message ?? e) }))
  await node.stop()
  process.exit(1)
}
