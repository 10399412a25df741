// A Helia node that holds one file and serves it over Bitswap until its stdin closes:
// node22 bitswap-serve.mjs SIZE SEED, or node22 bitswap-serve.mjs PATH (an absolute path: that
// file's bytes). Prints one JSON line {"addr": multiaddr, "cid": CID, "sha256": hex} once it
// listens. The bytes are a xorshift stream of SEED, in 256 KiB raw leaves.
import { startHelia } from './helia-node.mjs'
import { unixfs } from '@helia/unixfs'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'

function xorshift (size, seed) {
  const bytes = new Uint8Array(size)
  let x = BigInt(seed) * 0x9E3779B97F4A7C15n | 1n
  const mask = (1n << 64n) - 1n
  for (let i = 0; i < size; i++) {
    x ^= (x << 13n) & mask
    x ^= x >> 7n
    x ^= (x << 17n) & mask
    bytes[i] = Number(x & 0xffn)
  }
  return bytes
}

const args = process.argv.slice(2)
const bytes = args[0].startsWith('/') ? new Uint8Array(readFileSync(args[0])) : xorshift(Number(args[0]), Number(args[1]))
const helia = await startHelia()
const cid = await unixfs(helia).addBytes(bytes, { cidVersion: 1, rawLeaves: true, chunker: fixedSize({ chunkSize: 262144 }) })
const addr = helia.libp2p.getMultiaddrs()[0].toString()
console.log(JSON.stringify({ addr, cid: cid.toString(), sha256: createHash('sha256').update(bytes).digest('hex') }))
process.stdin.resume()
process.stdin.on('end', async () => {
  await helia.stop()
  process.exit(0)
})
