//! A libp2p peer of a test's own that speaks raw Bitswap: to send what no honest peer would.

use std::time::Duration;

/// A libp2p peer of the test's own, speaking raw Bitswap to the node.
pub struct RawPeer {
    control: libp2p_stream::Control,
    /// Every message the node sent, on whichever stream (it keeps one open while it talks).
    pub messages: tokio::sync::mpsc::UnboundedReceiver<af_registry::swarm::message::Message>,
    node: libp2p::PeerId,
    /// Streams to the node kept open (silent, or with a message the node is still to answer).
    held: Vec<libp2p::Stream>,
}

impl RawPeer {
    pub async fn connect(addr: &str) -> RawPeer {
        Self::connect_reading(addr, true).await
    }

    /// A peer that accepts the node's reply streams and never reads them (with `reads` false):
    /// the node's writes to it stall once the stream's window is full.
    pub async fn connect_reading(addr: &str, reads: bool) -> RawPeer {
        use futures_util::StreamExt;
        let addr: libp2p::Multiaddr = addr.parse().unwrap();
        let node = af_registry::swarm::peer_of(&addr).unwrap();
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(af_registry::swarm::bitswap::BITSWAP_120).unwrap();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut unread = Vec::new();
            while let Some((_, mut stream)) = incoming.next().await {
                if !reads {
                    unread.push(stream);
                    continue;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Ok(Some(m)) = af_registry::swarm::message::read(&mut stream).await {
                        let _ = tx.send(m);
                    }
                });
            }
        });
        // Connected at once, and again whenever the node drops us.
        swarm.dial(addr.clone()).unwrap();
        tokio::spawn(async move {
            loop {
                if let libp2p::swarm::SwarmEvent::ConnectionClosed { num_established: 0, .. } = swarm.select_next_some().await {
                    let _ = swarm.dial(addr.clone());
                }
            }
        });
        RawPeer { control, messages, node, held: Vec::new() }
    }

    async fn open(&mut self, protocol: libp2p::StreamProtocol) -> Result<libp2p::Stream, String> {
        self.control.open_stream(self.node, protocol).await.map_err(|e| e.to_string())
    }

    /// Opens `n` Bitswap streams and sends nothing on them; returns how many opened.
    pub async fn open_silent(&mut self, n: usize) -> usize {
        let mut opened = 0;
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(5), self.open(af_registry::swarm::bitswap::BITSWAP_120)).await {
                Ok(Ok(s)) => {
                    self.held.push(s);
                    opened += 1;
                }
                _ => break,
            }
        }
        opened
    }

    /// Sends `m` on a new stream and keeps the stream open.
    pub async fn send_keeping(&mut self, m: &af_registry::swarm::message::Message) {
        use futures_util::AsyncWriteExt;
        let Ok(mut s) = self.open(af_registry::swarm::bitswap::BITSWAP_120).await else { return };
        let mut frame = Vec::new();
        let body = prost::Message::encode_to_vec(m);
        af_registry::varint::encode(&mut frame, body.len() as u64);
        frame.extend_from_slice(&body);
        if tokio::time::timeout(Duration::from_secs(5), s.write_all(&frame)).await.is_ok_and(|r| r.is_ok()) {
            let _ = s.flush().await;
        }
        self.held.push(s);
    }

    /// Sends raw bytes on a new stream and keeps it open.
    pub async fn send_raw_keeping(&mut self, bytes: &[u8]) {
        use futures_util::AsyncWriteExt;
        let Ok(mut s) = self.open(af_registry::swarm::bitswap::BITSWAP_120).await else { return };
        let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(bytes)).await;
        self.held.push(s);
    }

    /// Sends raw bytes on a new Bitswap stream.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.send_raw_on(af_registry::swarm::bitswap::BITSWAP_120, bytes).await
    }

    /// Sends raw bytes on a new stream of `protocol`.
    pub async fn send_raw_on(&mut self, protocol: libp2p::StreamProtocol, bytes: &[u8]) {
        use futures_util::AsyncWriteExt;
        let mut tries = 0;
        let mut s = loop {
            match self.control.open_stream(self.node, protocol.clone()).await {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no stream to the node: {e}"),
            }
        };
        let _ = s.write_all(bytes).await;
        let _ = s.close().await;
    }

    pub async fn send(&mut self, m: &af_registry::swarm::message::Message) {
        let mut frame = Vec::new();
        let body = prost::Message::encode_to_vec(m);
        af_registry::varint::encode(&mut frame, body.len() as u64);
        frame.extend_from_slice(&body);
        self.send_raw(&frame).await;
    }

    /// Every message the node sends back within `wait`.
    pub async fn replies(&mut self, wait: Duration) -> Vec<af_registry::swarm::message::Message> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.messages.recv()).await {
            out.push(m);
        }
        out
    }
}
