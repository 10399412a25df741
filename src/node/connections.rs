//! Who holds the HTTP listeners' connections: at most a fixed number per client address, so a
//! client that opens many and sends one byte a second (or never finishes a body) holds its share
//! and no more. The listener's total is actix's `max_connections`; idle connections end with its
//! request and keep-alive timeouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The open connections of one listener, by client address.
#[derive(Clone)]
pub struct PerAddress {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
    exempt: Arc<Vec<IpAddr>>,
}

/// Held by a connection while it lives (in its extensions): dropping it frees the slot.
pub struct Slot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connection counts");
        if let Some(n) = open.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

impl PerAddress {
    /// `exempt`: addresses that speak for many clients (trusted reverse proxies).
    pub fn new(limit: usize, exempt: Vec<IpAddr>) -> Self {
        PerAddress { open: Arc::default(), limit, exempt: Arc::new(exempt) }
    }

    /// A slot for a new connection from `address`, or None when it holds its share already.
    pub fn admit(&self, address: IpAddr) -> Option<Option<Slot>> {
        if self.exempt.contains(&address) {
            return Some(None);
        }
        let mut open = self.open.lock().expect("connection counts");
        let n = open.entry(address).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Some(Slot { open: self.open.clone(), address }))
    }

    /// For actix's `on_connect`: admits the connection, or closes its socket at once (the
    /// client sees the connection end before any answer).
    pub fn on_connect(&self, io: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
        let Some(stream) = io.downcast_ref::<actix_web::rt::net::TcpStream>() else { return };
        let Ok(peer) = stream.peer_addr() else { return };
        match self.admit(peer.ip()) {
            Some(Some(slot)) => {
                data.insert(slot);
            }
            Some(None) => {}
            None => {
                use std::os::fd::AsRawFd;
                tracing::debug!(address = %peer.ip(), limit = self.limit, "connection refused: the address holds its share");
                // SAFETY: shutdown(2) on a socket this stream owns and keeps open; it only ends
                // the connection's traffic, the descriptor stays valid until the stream drops.
                unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_its_share_and_frees_it() {
        let limits = PerAddress::new(2, vec!["10.0.0.9".parse().unwrap()]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let second = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "a third connection of the same address");
        assert!(limits.admit("10.0.0.2".parse().unwrap()).is_some(), "another address is not held back");
        drop(first);
        assert!(limits.admit(a).is_some(), "a closed connection frees its slot");
        drop(second);
        for _ in 0..10 {
            assert!(matches!(limits.admit("10.0.0.9".parse().unwrap()), Some(None)), "a trusted proxy is not counted");
        }
    }
}
