// Prints the root CID that ipfs-unixfs-importer (the JavaScript UnixFS importer used by Helia)
// gives a file: node unixfs-cid.mjs FILE CHUNK_SIZE MAX_LINKS
// CIDv1, raw leaves, fixed-size chunks, balanced layout; blocks are discarded.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { createReadStream } from 'node:fs'

const [file, chunkSize, maxLinks] = process.argv.slice(2)
const blockstore = { put: async (cid) => cid, get: async () => { throw new Error('not stored') }, has: async () => false }
let root
for await (const entry of importer([{ content: createReadStream(file) }], blockstore, {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: Number(chunkSize) }),
  layout: balanced({ maxChildrenPerNode: Number(maxLinks) })
})) {
  root = entry.cid
}
console.log(root.toString())
