// A Helia node on loopback TCP + Noise + Yamux + Identify (no routing), started: what the
// Bitswap interop scripts share.
import { createHelia } from 'helia'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'

export async function startHelia () {
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
  return helia
}
