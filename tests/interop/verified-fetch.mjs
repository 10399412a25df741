// Fetches ipfs://CID through @helia/verified-fetch (Helia's verifying client) from one trustless
// gateway, HTTP only (no libp2p, no delegated routing): node22 verified-fetch.mjs GATEWAY_URL CID
// Prints JSON {"status": N, "bytes": N, "sha256": hex}. The library verifies every block against
// its CID; a gateway that served wrong bytes makes the fetch fail.
import { withHTTP } from '@helia/http'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'
import { createHash } from 'node:crypto'

const [gateway, cid] = process.argv.slice(2)
// The gateway under test is plain HTTP on loopback, which Helia refuses unless told. Helia asks
// its fallback routers (the gateways) only after its default ones answered, and with none at all
// it never does; a delegated router on the same URL answers "no providers" (404) at once.
const helia = await withHTTP(createHeliaLight(), {
  delegatedRouters: [gateway],
  recursiveGateways: [gateway],
  allowInsecure: true,
  allowLocal: true
}).start()
const verifiedFetch = await createVerifiedFetch(helia)
try {
  const res = await verifiedFetch(`ipfs://${cid}`, { signal: AbortSignal.timeout(60000) })
  const body = new Uint8Array(await res.arrayBuffer())
  const sha256 = createHash('sha256').update(body).digest('hex')
  console.log(JSON.stringify({ status: res.status, bytes: body.length, sha256 }))
} finally {
  await verifiedFetch.stop()
}
