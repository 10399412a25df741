// Fetches a UnixFS file over Bitswap with Helia (libp2p over TCP + Noise + Yamux + Identify),
// from one peer it dials, with no routing: node22 bitswap-fetch.mjs MULTIADDR CID [TIMEOUT_MS]
// Prints JSON {"bytes": N, "sha256": hex, "ms": time from the dial to the last byte}. Helia
// verifies every block against its CID.
import { startHelia } from './helia-node.mjs'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { createHash } from 'node:crypto'

const [addr, cid, timeout] = process.argv.slice(2)
const helia = await startHelia()
try {
  const started = performance.now()
  await helia.libp2p.dial(multiaddr(addr))
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of unixfs(helia).cat(CID.parse(cid), { signal: AbortSignal.timeout(Number(timeout ?? 60000)) })) {
    hash.update(chunk)
    bytes += chunk.length
  }
  console.log(JSON.stringify({ bytes, sha256: hash.digest('hex'), ms: performance.now() - started }))
} finally {
  await helia.stop()
}
