//! ICE over TCP: a worker's TCP listener and its connections (RFC 6544 passive candidates,
//! RFC 4571 framing), for clients on networks that block UDP.
//!
//! Each accepted connection is one ICE tuple: its frames are handed to the core as datagrams from
//! [`Remote::tcp`] of the connection's remote address, and what the core sends to that remote
//! is framed onto it. The driver owns this listener as it owns the UDP socket; the framing itself
//! ([`FrameReader`], [`frame`]) is plain functions of bytes.
//!
//! Limits keep a hostile host from holding the worker's memory or descriptors: connections per IP
//! address before ICE validates them, a deadline for that validation, a bound on everything a
//! connection holds (`MediaSettings::tcp_*`), and the first frame must be a STUN binding request.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::demux::{DatagramKind, Remote};
use crate::settings::MediaSettings;

/// The largest RFC 4571 frame: its length is 16 bits.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// A write that cannot proceed this long ends the connection's writer: a peer that stopped
/// reading cannot hold it (or, after the worker let go, the connection) for ever.
const WRITE_STALL: Duration = Duration::from_secs(5);

/// One datagram as an RFC 4571 frame (a 16-bit length, then the bytes); `None` when it is too
/// long to frame.
pub fn frame(datagram: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(datagram.len()).ok()?;
    let mut framed = Vec::with_capacity(2 + datagram.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(datagram);
    Some(framed)
}

/// Splits a byte stream into RFC 4571 frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        let header: [u8; 2] = rest.get(..2)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(header));
        if rest.len() < 2 + len {
            return None;
        }
        let from = self.start + 2;
        self.start = from + len;
        Some(&self.buf[from..from + len])
    }

    /// Bytes held that are not yet a whole frame (at most one frame's worth plus the last read).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// What the connections' tasks tell the listener.
enum ConnEvent {
    Frame {
        addr: SocketAddr,
        id: u64,
        bytes: Vec<u8>,
    },
    Closed {
        addr: SocketAddr,
        id: u64,
    },
}

/// What the driver hands to the core.
pub(crate) enum TcpInput {
    /// A frame from the connection of this remote address.
    Frame { from: SocketAddr, bytes: Vec<u8> },
    /// Nothing for the core (a connection accepted, refused or closed).
    Nothing,
}

/// One accepted connection.
struct Conn {
    id: u64,
    accepted: Instant,
    /// ICE validated its tuple (see `Core::is_validated`).
    validated: bool,
    /// Whether a frame came on it yet (the first must be a STUN binding request).
    spoke: bool,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    reader: AbortHandle,
    writer_task: AbortHandle,
}

/// Counters of the TCP listener (added to the worker's resource usage).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpCounters {
    pub accepted: u64,
    /// Refused at accept (a limit) or closed for one (timeout, slow reader, not ICE).
    pub rejected: u64,
}

/// A worker's ICE-TCP listener and connections.
pub(crate) struct IceTcpServer {
    listener: TcpListener,
    conns: HashMap<SocketAddr, Conn>,
    /// Connections not yet validated, per IP address.
    pending_per_ip: HashMap<IpAddr, usize>,
    events_tx: mpsc::Sender<ConnEvent>,
    events_rx: mpsc::Receiver<ConnEvent>,
    next_id: u64,
    settings: MediaSettings,
    pub counters: TcpCounters,
    /// Validated connections closed since `take_closed`.
    closed: Vec<SocketAddr>,
}

impl IceTcpServer {
    pub fn new(listener: TcpListener, settings: MediaSettings) -> Self {
        // Frames of all connections wait here for the worker loop; a full queue stalls the
        // readers (TCP's own flow control then slows the senders).
        let (events_tx, events_rx) = mpsc::channel(1024);
        IceTcpServer {
            listener,
            conns: HashMap::new(),
            pending_per_ip: HashMap::new(),
            events_tx,
            events_rx,
            next_id: 1,
            settings,
            counters: TcpCounters::default(),
            closed: Vec::new(),
        }
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Waits for a new connection or a frame; `now` is read when one comes.
    pub async fn next(&mut self, now: impl Fn() -> Instant) -> TcpInput {
        tokio::select! {
            event = self.events_rx.recv() => match event {
                // The listener holds a sender, so the channel never ends.
                None => TcpInput::Nothing,
                Some(event) => self.on_event(event),
            },
            accepted = self.listener.accept() => {
                if let Ok((stream, addr)) = accepted {
                    self.on_accept(stream, addr, now());
                }
                TcpInput::Nothing
            }
        }
    }

    /// A frame or a closed connection that is already waiting, if any (the driver takes a batch
    /// of them per wake-up, as it does with UDP datagrams).
    pub fn try_next(&mut self) -> Option<TcpInput> {
        let event = self.events_rx.try_recv().ok()?;
        Some(self.on_event(event))
    }

    fn on_event(&mut self, event: ConnEvent) -> TcpInput {
        match event {
            ConnEvent::Frame { addr, id, bytes } => self.on_frame(addr, id, bytes),
            ConnEvent::Closed { addr, id } => {
                if self.conns.get(&addr).is_some_and(|c| c.id == id) {
                    tracing::debug!(%addr, "ICE-TCP connection closed by the peer");
                    self.close(addr);
                }
                TcpInput::Nothing
            }
        }
    }

    /// Connections closed since the last call (the core forgets their tuples).
    pub fn take_closed(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.closed)
    }

    fn on_accept(&mut self, stream: TcpStream, addr: SocketAddr, now: Instant) {
        let pending = self.pending_per_ip.get(&addr.ip()).copied().unwrap_or(0);
        if self.conns.len() >= self.settings.tcp_max_connections
            || pending >= self.settings.tcp_max_pending_per_ip
            || self.conns.contains_key(&addr)
        {
            self.counters.rejected += 1;
            tracing::debug!(%addr, pending, "ICE-TCP connection refused");
            return; // Dropping the stream closes it.
        }
        // Media must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let id = self.next_id;
        self.next_id += 1;
        let queued = Arc::new(AtomicUsize::new(0));
        let (writer, to_write) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_frames(write, to_write, queued.clone()));
        let reader = tokio::spawn(read_frames(read, addr, id, self.events_tx.clone()));
        self.conns.insert(
            addr,
            Conn {
                id,
                accepted: now,
                validated: false,
                spoke: false,
                writer,
                queued,
                reader: reader.abort_handle(),
                writer_task: writer_task.abort_handle(),
            },
        );
        *self.pending_per_ip.entry(addr.ip()).or_default() += 1;
        self.counters.accepted += 1;
        tracing::debug!(%addr, "ICE-TCP connection accepted");
    }

    fn on_frame(&mut self, addr: SocketAddr, id: u64, bytes: Vec<u8>) -> TcpInput {
        let Some(conn) = self.conns.get_mut(&addr).filter(|c| c.id == id) else {
            return TcpInput::Nothing;
        };
        if !conn.spoke {
            conn.spoke = true;
            if DatagramKind::of(&bytes) != DatagramKind::Stun {
                // Not an ICE client: RFC 6544 connections start with a binding request.
                self.counters.rejected += 1;
                self.close(addr);
                return TcpInput::Nothing;
            }
        }
        TcpInput::Frame { from: addr, bytes }
    }

    /// After the core handled a frame from `addr`: a connection ICE validated stops counting
    /// against its IP address's pending limit.
    pub fn after_frame(&mut self, addr: SocketAddr, validated: bool) {
        if !validated {
            return;
        }
        if let Some(conn) = self.conns.get_mut(&addr)
            && !conn.validated
        {
            conn.validated = true;
            tracing::debug!(%addr, "ICE-TCP connection validated");
            release_pending(&mut self.pending_per_ip, addr.ip());
        }
    }

    /// Frames `contents` onto the connection of `to`. False when there is none (closed) or the
    /// datagram cannot be framed; a connection whose reader is too slow is closed.
    pub fn send(&mut self, to: SocketAddr, contents: &[u8]) -> bool {
        let Some(conn) = self.conns.get(&to) else {
            return false;
        };
        let Some(framed) = frame(contents) else {
            return false;
        };
        let len = framed.len();
        let queued = conn.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.settings.tcp_write_buffer_bytes {
            tracing::debug!(addr = %to, queued, "ICE-TCP reader too slow; closing");
            self.counters.rejected += 1;
            conn.writer_task.abort();
            self.close(to);
            return false;
        }
        conn.writer.send(framed).is_ok()
    }

    /// Closes connections that ICE did not validate in time, and validated ones whose tuple no
    /// transport has any more (closed, or moved to another tuple by ICE).
    pub fn sweep(&mut self, now: Instant, is_validated: impl Fn(&Remote) -> bool) {
        let timeout = self.settings.tcp_pending_timeout;
        let stale: Vec<SocketAddr> = self
            .conns
            .iter()
            .filter(|(addr, c)| {
                if c.validated {
                    !is_validated(&Remote::tcp(**addr))
                } else {
                    now.saturating_duration_since(c.accepted) >= timeout
                }
            })
            .map(|(addr, _)| *addr)
            .collect();
        for addr in stale {
            if self.conns.get(&addr).is_some_and(|c| !c.validated) {
                self.counters.rejected += 1;
            }
            self.close(addr);
        }
    }

    /// Forgets a connection: its reader stops, its writer writes what it holds and shuts the
    /// stream down.
    fn close(&mut self, addr: SocketAddr) {
        if let Some(conn) = self.conns.remove(&addr) {
            conn.reader.abort();
            if conn.validated {
                self.closed.push(addr);
            } else {
                release_pending(&mut self.pending_per_ip, addr.ip());
            }
        }
    }
}

fn release_pending(pending: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = pending.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            pending.remove(&ip);
        }
    }
}

/// Reads a connection's frames and hands them to the worker loop until the stream ends.
async fn read_frames(
    mut read: tokio::net::tcp::OwnedReadHalf,
    addr: SocketAddr,
    id: u64,
    events: mpsc::Sender<ConnEvent>,
) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => reader.push(&buf[..n]),
        }
        while let Some(bytes) = reader.next_frame() {
            let bytes = bytes.to_vec();
            if events
                .send(ConnEvent::Frame { addr, id, bytes })
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = events.send(ConnEvent::Closed { addr, id }).await;
}

/// Writes what the worker frames for a connection, several frames per write when they queue up;
/// once the worker lets go of the connection, writes what is left and shuts the stream down.
/// No write waits longer than [`WRITE_STALL`].
async fn write_frames(
    write: tokio::net::tcp::OwnedWriteHalf,
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) -> io::Result<()> {
    let mut write = write;
    let mut frames = frames;
    let mut batch = Vec::new();
    while let Some(first) = frames.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        tokio::time::timeout(WRITE_STALL, write.write_all(&batch))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
    tokio::time::timeout(WRITE_STALL, write.shutdown())
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.
    use super::*;
    use tokio::net::TcpStream;

    /// A server on a loopback listener with these limits.
    async fn server(settings: MediaSettings) -> (IceTcpServer, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (IceTcpServer::new(listener, settings), addr)
    }

    /// Connects a client and lets the server accept it.
    async fn connect(server: &mut IceTcpServer, addr: SocketAddr) -> TcpStream {
        let client = TcpStream::connect(addr).await.unwrap();
        let accepted = server.counters.accepted + server.counters.rejected;
        while server.counters.accepted + server.counters.rejected == accepted {
            server.next(Instant::now).await;
        }
        client
    }

    /// Reads until the server closes the stream (what it wrote before is skipped).
    async fn closed_by_server(client: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    }

    /// A STUN binding request's first bytes (the server only looks at the first byte here).
    const STUN: [u8; 20] = [
        0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    #[tokio::test]
    async fn a_stun_frame_comes_out_whole_and_a_reply_goes_back_framed() {
        let (mut server, addr) = server(MediaSettings::default()).await;
        let mut client = connect(&mut server, addr).await;
        let local = client.local_addr().unwrap();
        client.write_all(&frame(&STUN).unwrap()).await.unwrap();
        let from = loop {
            if let TcpInput::Frame { from, bytes } = server.next(Instant::now).await {
                assert_eq!(bytes, STUN);
                break from;
            }
        };
        assert_eq!(from, local);
        assert!(server.send(from, b"reply"));
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\0\x05reply");
    }

    #[tokio::test]
    async fn a_connection_whose_first_frame_is_not_stun_is_closed() {
        let (mut server, addr) = server(MediaSettings::default()).await;
        let mut client = connect(&mut server, addr).await;
        client
            .write_all(&frame(&[22, 254, 253, 0]).unwrap())
            .await
            .unwrap();
        while server.connections() > 0 {
            assert!(matches!(server.next(Instant::now).await, TcpInput::Nothing));
        }
        assert_eq!(server.counters.rejected, 1);
        assert!(closed_by_server(&mut client).await);
    }

    #[tokio::test]
    async fn connections_beyond_the_pending_limit_of_an_address_are_refused_until_one_validates() {
        let settings = MediaSettings {
            tcp_max_pending_per_ip: 2,
            ..MediaSettings::default()
        };
        let (mut server, addr) = server(settings).await;
        let first = connect(&mut server, addr).await;
        let _second = connect(&mut server, addr).await;
        let mut third = connect(&mut server, addr).await;
        assert_eq!((server.connections(), server.counters.rejected), (2, 1));
        assert!(closed_by_server(&mut third).await);
        // Once ICE validated one, another may come.
        server.after_frame(first.local_addr().unwrap(), true);
        let _fourth = connect(&mut server, addr).await;
        assert_eq!((server.connections(), server.counters.rejected), (3, 1));
    }

    #[tokio::test]
    async fn a_connection_ice_does_not_validate_in_time_is_closed_and_a_validated_one_kept() {
        let settings = MediaSettings {
            tcp_pending_timeout: Duration::from_secs(10),
            ..MediaSettings::default()
        };
        let (mut server, addr) = server(settings).await;
        let accepted_at = Instant::now();
        let mut idle = connect(&mut server, addr).await;
        let validated = connect(&mut server, addr).await;
        let validated_addr = validated.local_addr().unwrap();
        server.after_frame(validated_addr, true);
        let known = |r: &Remote| r.addr == validated_addr;
        server.sweep(accepted_at + Duration::from_secs(5), known);
        assert_eq!(server.connections(), 2);
        server.sweep(accepted_at + Duration::from_secs(11), known);
        assert_eq!(server.connections(), 1);
        assert!(closed_by_server(&mut idle).await);
        // The validated one goes once no transport has its tuple any more.
        assert!(
            server.take_closed().is_empty(),
            "only validated tuples are reported"
        );
        server.sweep(accepted_at + Duration::from_secs(12), |_| false);
        assert_eq!(server.connections(), 0);
        assert_eq!(server.take_closed(), vec![validated_addr]);
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_the_write_buffer_is_closed() {
        let settings = MediaSettings {
            tcp_write_buffer_bytes: 256 * 1024,
            ..MediaSettings::default()
        };
        let (mut server, addr) = server(settings).await;
        let mut client = connect(&mut server, addr).await;
        let remote = client.local_addr().unwrap();
        // Nothing yields to the writer between these sends, so nothing drains: the bound holds
        // whatever the kernel's buffers.
        let sent = (0..100)
            .take_while(|_| server.send(remote, &[0u8; 60_000]))
            .count();
        assert_eq!(sent, 4, "256 KiB hold four 60 kB frames");
        assert_eq!((server.connections(), server.counters.rejected), (0, 1));
        assert!(!server.send(remote, b"after"));
        assert!(closed_by_server(&mut client).await);
    }

    #[test]
    fn frames_split_across_reads_and_several_per_read_come_out_whole() {
        let a = frame(&[1, 2, 3]).unwrap();
        let b = frame(&[]).unwrap();
        let c = frame(&[9; 300]).unwrap();
        let stream: Vec<u8> = [a, b, c].concat();
        let mut reader = FrameReader::new();
        let mut out = Vec::new();
        // One byte at a time, then the rest at once: the same frames.
        for byte in &stream[..4] {
            reader.push(&[*byte]);
            while let Some(f) = reader.next_frame() {
                out.push(f.to_vec());
            }
        }
        reader.push(&stream[4..]);
        while let Some(f) = reader.next_frame() {
            out.push(f.to_vec());
        }
        assert_eq!(out, vec![vec![1, 2, 3], vec![], vec![9; 300]]);
        assert_eq!(reader.pending(), 0);
    }

    #[test]
    fn a_partial_frame_waits_for_its_remaining_bytes() {
        let mut reader = FrameReader::new();
        reader.push(&[0, 5, 1, 2]);
        assert!(reader.next_frame().is_none());
        assert_eq!(reader.pending(), 4);
        reader.push(&[3, 4, 5, 0]);
        assert_eq!(reader.next_frame(), Some(&[1, 2, 3, 4, 5][..]));
        assert!(reader.next_frame().is_none());
        assert_eq!(reader.pending(), 1);
    }

    #[test]
    fn a_reader_fed_a_long_stream_keeps_at_most_about_one_frame() {
        let mut reader = FrameReader::new();
        let f = frame(&[7; 1000]).unwrap();
        for _ in 0..1000 {
            reader.push(&f[..600]);
            reader.push(&f[600..]);
            assert_eq!(reader.next_frame().map(<[u8]>::len), Some(1000));
        }
        assert!(reader.buf.capacity() < 4 * (MAX_FRAME + 2));
    }

    #[test]
    fn datagrams_longer_than_sixteen_bits_cannot_be_framed() {
        assert_eq!(frame(&[0; MAX_FRAME]).map(|f| f.len()), Some(MAX_FRAME + 2));
        assert!(frame(&[0; MAX_FRAME + 1]).is_none());
    }
}
