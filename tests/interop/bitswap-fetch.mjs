// Fetches a UnixFS file over Bitswap with Helia (libp2p over TCP + Noise + Yamux + Identify),
// from one peer it dials, with no routing: node22 bitswap-fetch.mjs MULTIADDR CID [TIMEOUT_MS]
// Prints JSON {"bytes": N, "sha256": hex}. Helia verifies every block against its CID.
import { createHelia } from 'helia'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { createHash } from 'node:crypto'

const [addr, cid, timeout] = process.argv.slice(2)
// Helia 7 takes libp2p's options and builds the node itself when it starts.
const helia = await createHelia({
  libp2p: {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }
})
await helia.start()
try {
  await helia.libp2p.dial(multiaddr(addr))
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of unixfs(helia).cat(CID.parse(cid), { signal: AbortSignal.timeout(Number(timeout ?? 60000)) })) {
    hash.update(chunk)
    bytes += chunk.length
  }
  console.log(JSON.stringify({ bytes, sha256: hash.digest('hex') }))
} finally {
  await helia.stop()
}
