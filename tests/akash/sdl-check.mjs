// Validates an Akash SDL with Akash's own parser and computes the manifest a deployment would
// send: node sdl-check.mjs FILE. Prints JSON {"version": hex, "services": [{name, image, env,
// expose: [{port, externalPort, proto, global}], storage: [...]}]}; exits 1 with the parser's
// message on an invalid SDL.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { SDL } = require('@akashnetwork/akashjs/build/sdl/index.js')

try {
  const sdl = SDL.fromString(readFileSync(process.argv[2], 'utf8'), 'beta3')
  const manifest = sdl.manifest()
  const version = Buffer.from(await sdl.manifestVersion()).toString('hex')
  const services = manifest.flatMap(group => group.services.map(s => ({
    name: s.name,
    image: s.image,
    env: s.env,
    expose: s.expose.map(e => ({ port: e.port, externalPort: e.externalPort, proto: e.proto, global: e.global })),
    storage: s.resources.storage.map(st => ({ name: st.name, size: st.size?.val, attributes: st.attributes }))
  })))
  console.log(JSON.stringify({ version, services }))
} catch (e) {
  console.error(e.message)
  process.exit(1)
}
