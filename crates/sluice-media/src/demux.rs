//! O(1) demultiplexing of a worker's sockets to its WebRTC transports.
//!
//! Every transport of a worker shares one UDP port and one TCP port (like mediasoup's
//! WebRtcServer); a TCP connection's frames (RFC 4571) count as datagrams from the connection's
//! remote address. A datagram is routed by:
//! - its source ([`Remote`]: protocol and address), once that source has sent a STUN binding
//!   request that passed the transport's integrity check (an ICE-validated tuple);
//! - otherwise, for a STUN binding request, the local ufrag in its USERNAME (`local:remote`).
//!
//! Anything else (DTLS, RTP or RTCP from an address no transport validated) is dropped by the
//! caller and counted. The integrity check itself is str0m's; this type only keeps the maps.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use sluice_ortc::Protocol;

/// The worker-local key of a transport.
pub type TransportKey = u64;

/// The far end of a tuple: the protocol it reaches the worker by and its address (on TCP, the
/// connection's remote address, which names the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Remote {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl Remote {
    pub fn udp(addr: SocketAddr) -> Remote {
        Remote {
            protocol: Protocol::Udp,
            addr,
        }
    }

    pub fn tcp(addr: SocketAddr) -> Remote {
        Remote {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    /// str0m's name of the protocol.
    pub fn str0m_protocol(&self) -> str0m::net::Protocol {
        match self.protocol {
            Protocol::Udp => str0m::net::Protocol::Udp,
            Protocol::Tcp => str0m::net::Protocol::Tcp,
        }
    }

    /// From a str0m transmit's protocol and destination (str0m only uses the protocols of the
    /// candidates it was given: UDP and TCP).
    pub fn from_str0m(protocol: str0m::net::Protocol, addr: SocketAddr) -> Remote {
        match protocol {
            str0m::net::Protocol::Udp => Remote::udp(addr),
            _ => Remote::tcp(addr),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        };
        write!(f, "{protocol}:{}", self.addr)
    }
}

/// What kind of datagram this is, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    RtpOrRtcp,
    Unknown,
}

impl DatagramKind {
    pub fn of(datagram: &[u8]) -> DatagramKind {
        match datagram.first() {
            Some(0..=3) => DatagramKind::Stun,
            Some(20..=63) => DatagramKind::Dtls,
            Some(128..=191) => DatagramKind::RtpOrRtcp,
            _ => DatagramKind::Unknown,
        }
    }
}

/// Whether a DTLS datagram starts with a ClientHello: a handshake record (content type 22) of
/// DTLS (major version 254) at epoch 0 whose first handshake message is a client_hello (1).
pub fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.len() > 13
        && datagram[0] == 22
        && datagram[1] == 254
        && datagram[3..5] == [0, 0]
        && datagram[13] == 1
}

/// The maps from ufrag and from validated source address to a transport.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, TransportKey>,
    by_addr: HashMap<Remote, TransportKey>,
    /// Validated sources of each transport, to forget them when it closes.
    addrs_of: HashMap<TransportKey, Vec<Remote>>,
}

impl Demux {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes STUN requests whose USERNAME starts with `ufrag:` to `key`.
    pub fn add_ufrag(&mut self, ufrag: &str, key: TransportKey) {
        self.by_ufrag.insert(ufrag.to_owned(), key);
    }

    /// Forgets a ufrag (ICE restart or close).
    pub fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    pub fn by_ufrag(&self, ufrag: &str) -> Option<TransportKey> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// Records that `addr` passed `key`'s ICE integrity check. An address validated by another
    /// transport before (a client reusing a port) moves to the new one.
    pub fn validate_addr(&mut self, addr: Remote, key: TransportKey) {
        if let Some(previous) = self.by_addr.insert(addr, key) {
            if previous == key {
                return;
            }
            if let Some(list) = self.addrs_of.get_mut(&previous) {
                list.retain(|a| *a != addr);
            }
        }
        self.addrs_of.entry(key).or_default().push(addr);
    }

    pub fn by_addr(&self, addr: &Remote) -> Option<TransportKey> {
        self.by_addr.get(addr).copied()
    }

    /// Forgets one validated source (a closed TCP connection).
    pub fn forget_addr(&mut self, addr: &Remote) {
        if let Some(key) = self.by_addr.remove(addr)
            && let Some(list) = self.addrs_of.get_mut(&key)
        {
            list.retain(|a| a != addr);
        }
    }

    /// Forgets everything about a transport.
    pub fn remove_transport(&mut self, key: TransportKey) {
        self.by_ufrag.retain(|_, k| *k != key);
        for addr in self.addrs_of.remove(&key).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Number of (ufrag, validated address) entries; zero when no transport is left.
    pub fn entries(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }

    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty() && self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dtls_handshake_record_carrying_a_client_hello_counts_as_one() {
        // Record header: type, version (DTLS 1.2), epoch, sequence (6), length; then the
        // handshake header's type.
        let mut hello = vec![22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1];
        hello.extend_from_slice(&[0; 12]);
        assert!(is_client_hello(&hello));
        let mut other = hello.clone();
        other[13] = 11; // a Certificate
        assert!(!is_client_hello(&other));
        let mut appdata = hello.clone();
        appdata[0] = 23;
        assert!(!is_client_hello(&appdata));
        let mut epoch1 = hello.clone();
        epoch1[4] = 1;
        assert!(!is_client_hello(&epoch1));
        assert!(!is_client_hello(&hello[..13]));
    }

    fn addr(port: u16) -> Remote {
        Remote::udp(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn datagram_kind_follows_rfc_7983() {
        assert_eq!(DatagramKind::of(&[0]), DatagramKind::Stun);
        assert_eq!(DatagramKind::of(&[22]), DatagramKind::Dtls);
        assert_eq!(DatagramKind::of(&[0x80]), DatagramKind::RtpOrRtcp);
        assert_eq!(DatagramKind::of(&[0xff]), DatagramKind::Unknown);
        assert_eq!(DatagramKind::of(&[]), DatagramKind::Unknown);
    }

    #[test]
    fn validated_address_routes_to_its_transport_and_is_forgotten_on_close() {
        let mut d = Demux::new();
        d.add_ufrag("u1", 1);
        d.add_ufrag("u2", 2);
        assert_eq!(d.by_ufrag("u1"), Some(1));
        assert_eq!(d.by_addr(&addr(5000)), None);
        d.validate_addr(addr(5000), 1);
        d.validate_addr(addr(5001), 2);
        assert_eq!(d.by_addr(&addr(5000)), Some(1));
        d.remove_transport(1);
        assert_eq!(d.by_addr(&addr(5000)), None);
        assert_eq!(d.by_ufrag("u1"), None);
        assert_eq!(d.by_addr(&addr(5001)), Some(2));
        d.remove_transport(2);
        assert!(d.is_empty());
    }

    #[test]
    fn address_revalidated_by_another_transport_moves_to_it() {
        let mut d = Demux::new();
        d.validate_addr(addr(6000), 1);
        d.validate_addr(addr(6000), 2);
        assert_eq!(d.by_addr(&addr(6000)), Some(2));
        // Closing the old owner does not take the address away from the new one.
        d.remove_transport(1);
        assert_eq!(d.by_addr(&addr(6000)), Some(2));
        d.remove_transport(2);
        assert!(d.is_empty());
    }

    #[test]
    fn the_same_address_over_udp_and_tcp_are_different_sources() {
        let mut d = Demux::new();
        let a = SocketAddr::from(([127, 0, 0, 1], 7000));
        d.validate_addr(Remote::udp(a), 1);
        d.validate_addr(Remote::tcp(a), 2);
        assert_eq!(d.by_addr(&Remote::udp(a)), Some(1));
        assert_eq!(d.by_addr(&Remote::tcp(a)), Some(2));
        d.remove_transport(1);
        assert_eq!(d.by_addr(&Remote::udp(a)), None);
        assert_eq!(d.by_addr(&Remote::tcp(a)), Some(2));
        // A closed connection's tuple is forgotten alone.
        let b = SocketAddr::from(([127, 0, 0, 1], 7001));
        d.validate_addr(Remote::tcp(b), 2);
        d.forget_addr(&Remote::tcp(a));
        assert_eq!(d.by_addr(&Remote::tcp(a)), None);
        assert_eq!(d.by_addr(&Remote::tcp(b)), Some(2));
        d.remove_transport(2);
        assert!(d.is_empty());
    }
}
