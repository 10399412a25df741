// Parses a CAR with @ipld/car (an independent reader) and verifies every block against its CID
// with multiformats' sha2-256: node car-verify.mjs FILE
// Prints JSON: {"roots": [...], "cids": [... in file order], "bytes": N, "duplicates": N};
// exits 1 naming the first block whose bytes do not match its CID.
import { CarBlockIterator } from '@ipld/car/iterator'
import { sha256 } from 'multiformats/hashes/sha2'
import { identity } from 'multiformats/hashes/identity'
import { equals } from 'multiformats/bytes'
import { createReadStream } from 'node:fs'

const reader = await CarBlockIterator.fromIterable(createReadStream(process.argv[2]))
const roots = (await reader.getRoots()).map(String)
const seen = new Set()
const cids = []
let bytes = 0
let duplicates = 0
for await (const { cid, bytes: data } of reader) {
  const hasher = cid.multihash.code === identity.code ? identity : sha256
  if (cid.multihash.code !== hasher.code) throw new Error(`${cid}: unsupported multihash`)
  const digest = await hasher.digest(data)
  if (!equals(digest.bytes, cid.multihash.bytes)) {
    console.error(`${cid}: bytes do not match the CID`)
    process.exit(1)
  }
  const key = cid.toString()
  if (seen.has(key)) duplicates++
  seen.add(key)
  cids.push(key)
  bytes += data.length
}
console.log(JSON.stringify({ roots, cids, bytes, duplicates }))
