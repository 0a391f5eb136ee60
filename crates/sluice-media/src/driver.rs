//! The driver: the only part of the media plane with a thread, a runtime, a socket and the
//! clock. It feeds a worker's [`Core`] with what the socket and the control plane bring, at the
//! clock's time, and sends what the core hands out.
//!
//! One loop per worker: wait for a command, a readable socket or the core's next deadline; hand
//! each input to the core with the time of tokio's clock (the wall clock, or virtual time on a
//! paused test runtime); run the core's due timeouts; then drain it (`poll_transmit` until
//! `None`) onto the socket. Datagrams are read in batches of `MediaSettings::recv_batch` before
//! the core is drained, so each transport is polled once per batch. This is where batched
//! system calls (`recvmmsg`/`sendmmsg`, GSO) belong.
//!
//! A real worker runs the loop on its own thread and runtime with a UDP socket and, for ICE over
//! TCP, a TCP listener ([`crate::ice_tcp`]); a worker on a
//! [`VirtualNet`](crate::testing::VirtualNet) runs the same loop as a task with a virtual
//! socket.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_ortc::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::command::{Command, WorkerLink};
use crate::core::{Core, CoreConfig};
use crate::demux::Remote;
use crate::error::MediaError;
use crate::ice_tcp::{IceTcpServer, TcpInput};
use crate::settings::{MediaSettings, TcpPort, WorkerSettings};
use crate::testing::VirtualSocket;

/// How often the driver closes ICE-TCP connections that outstayed their welcome.
const TCP_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How a worker thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Closed,
    Died(String),
}

/// What runs a worker's loop.
pub(crate) enum Runner {
    /// Its own OS thread with its own runtime (a real worker).
    Thread(std::thread::JoinHandle<()>),
    /// A task of the caller's runtime (a worker on a virtual network).
    Task(tokio::task::JoinHandle<()>),
}

/// A started worker: the link to its core, its sockets' addresses, its status and what runs it.
pub(crate) struct Spawned {
    pub link: WorkerLink,
    pub local_addr: SocketAddr,
    pub tcp_local_addr: Option<SocketAddr>,
    pub status: watch::Receiver<Status>,
    pub runner: Runner,
}

/// What the loop needs of a datagram socket: tokio's UDP socket, or a virtual one.
pub(crate) trait DatagramSocket {
    async fn readable(&self) -> io::Result<()>;
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl DatagramSocket for UdpSocket {
    async fn readable(&self) -> io::Result<()> {
        UdpSocket::readable(self).await
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::try_recv_from(self, buf)
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::try_send_to(self, buf, to)
    }
}

impl DatagramSocket for VirtualSocket {
    async fn readable(&self) -> io::Result<()> {
        VirtualSocket::readable(self).await
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        VirtualSocket::try_recv_from(self, buf)
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        VirtualSocket::try_send_to(self, buf, to)
    }
}

/// The clock: tokio's, which is the wall clock on a running runtime and virtual on a paused one.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts a worker on a virtual network as a task of the current runtime (tests and
/// simulations; see [`crate::testing`]).
pub(crate) fn spawn_virtual(
    index: usize,
    socket: VirtualSocket,
    media: MediaSettings,
) -> Result<Spawned, MediaError> {
    let local_addr = socket.local_addr();
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or(MediaError::Certificate)?;
    let config = CoreConfig {
        index,
        local_addr,
        tcp_local_addr: None,
        announced_ip: local_addr.ip(),
        cert,
        unix_millis: unix_millis(),
        settings: media,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::Running);
    let task = tokio::spawn(run(Core::new(config, clock()), socket, None, None, rx));
    let runner = tokio::spawn(async move {
        let status = match task.await {
            Ok(()) => Status::Closed,
            Err(e) => Status::Died(e.to_string()),
        };
        let _ = status_tx.send(status);
    });
    Ok(Spawned {
        link: WorkerLink::new(index, tx),
        local_addr,
        tcp_local_addr: None,
        status: status_rx,
        runner: Runner::Task(runner),
    })
}

/// Binds the worker's UDP socket (and TCP listener) and starts its thread.
pub(crate) fn spawn(
    index: usize,
    settings: &WorkerSettings,
    media: MediaSettings,
) -> Result<Spawned, MediaError> {
    let (std_socket, local_addr, std_listener) = bind_sockets(settings, &media)?;
    let tcp_local_addr = match &std_listener {
        Some(l) => Some(l.local_addr().map_err(|e| MediaError::Bind {
            addr: local_addr,
            reason: e.to_string(),
        })?),
        None => None,
    };
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or(MediaError::Certificate)?;
    let config = CoreConfig {
        index,
        local_addr,
        tcp_local_addr,
        announced_ip: settings.announced_ip.unwrap_or(settings.listen_ip),
        cert,
        unix_millis: unix_millis(),
        settings: media,
    };
    let listen_ip = settings.listen_ip;
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::Running);
    let thread = std::thread::Builder::new()
        .name(format!("sluice-worker-{index}"))
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot build the worker's event loop: {e}"))?;
                runtime.block_on(async move {
                    let socket = UdpSocket::from_std(std_socket)
                        .map_err(|e| format!("cannot register the UDP socket: {e}"))?;
                    let tcp = match std_listener {
                        Some(l) => Some(IceTcpServer::new(
                            TcpListener::from_std(l)
                                .map_err(|e| format!("cannot register the TCP listener: {e}"))?,
                            config.settings.clone(),
                        )),
                        None => None,
                    };
                    run(Core::new(config, clock()), socket, tcp, Some(listen_ip), rx).await;
                    Ok::<(), String>(())
                })
            }));
            let status = match result {
                Ok(Ok(())) => Status::Closed,
                Ok(Err(reason)) => Status::Died(reason),
                Err(panic) => Status::Died(panic_message(panic.as_ref())),
            };
            if let Status::Died(reason) = &status {
                tracing::error!(worker = index, %reason, "worker died");
            }
            let _ = status_tx.send(status);
        })
        .map_err(|e| MediaError::Spawn(e.to_string()))?;
    Ok(Spawned {
        link: WorkerLink::new(index, tx),
        local_addr,
        tcp_local_addr,
        status: status_rx,
        runner: Runner::Thread(thread),
    })
}

/// The worker loop.
async fn run(
    mut core: Core,
    socket: impl DatagramSocket,
    mut tcp: Option<IceTcpServer>,
    plain_ip: Option<IpAddr>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut plain = PlainSockets::new(core.settings().socket_buffer_bytes);
    let mut buf = vec![0u8; 2048];
    let recv_batch = core.settings().recv_batch;
    let mut send_errors = 0u64;
    let mut wakeups = 0u64;
    let mut next_sweep = clock() + TCP_SWEEP_INTERVAL;
    loop {
        let mut deadline = core.poll_timeout().unwrap_or_else(clock);
        if tcp.is_some() || !plain.is_empty() {
            deadline = deadline.min(next_sweep);
        }
        tokio::select! {
            biased;
            command = rx.recv() => match command {
                None => {
                    core.close(clock());
                    send(&mut core, &socket, &mut tcp, &plain, &mut send_errors);
                    break;
                }
                Some(Command::Crash) => panic!("worker crash requested"),
                Some(Command::ResourceUsage { reply }) => {
                    let mut usage = core.usage().clone();
                    usage.send_errors += send_errors;
                    usage.wakeups = wakeups;
                    if let Some(tcp) = &tcp {
                        usage.tcp_connections = tcp.connections() as u64;
                        usage.tcp_accepted = tcp.counters.accepted;
                        usage.tcp_rejected = tcp.counters.rejected;
                    }
                    if let Some((user, system)) = thread_cpu_ms() {
                        usage.cpu_user_ms = user;
                        usage.cpu_system_ms = system;
                    }
                    let _ = reply.send(usage);
                }
                Some(Command::CreatePlainTransport { router_id, options, reply }) => {
                    let result = match plain_ip {
                        Some(ip) => plain.create(&mut core, ip, router_id, *options),
                        None => Err(MediaError::Bind {
                            addr: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
                            reason: "a worker on a virtual network has no plain sockets".into(),
                        }),
                    };
                    let _ = reply.send(result);
                }
                Some(command) => core.handle_command(clock(), command),
            },
            ready = socket.readable() => {
                if ready.is_ok() {
                    for _ in 0..recv_batch {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                core.handle_datagram(clock(), Remote::udp(from), &buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                core.count_receive_error();
                                break;
                            }
                        }
                    }
                }
            }
            Some((local, from, bytes)) = plain.rx.recv() => {
                core.handle_plain_datagram(clock(), local, from, &bytes);
            }
            input = next_tcp(&mut tcp) => {
                if let Some(tcp) = tcp.as_mut() {
                    let mut input = Some(input);
                    let mut handled = 0;
                    while let Some(next) = input.take() {
                        if let TcpInput::Frame { from, bytes } = next {
                            let remote = Remote::tcp(from);
                            core.handle_datagram(clock(), remote, &bytes);
                            tcp.after_frame(from, core.is_validated(&remote));
                        }
                        handled += 1;
                        if handled < recv_batch {
                            input = tcp.try_next();
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
        }
        wakeups += 1;
        if core.is_closed() {
            send(&mut core, &socket, &mut tcp, &plain, &mut send_errors);
            break;
        }
        // Timeouts run after every wake-up, not only when the sleep branch wins: under load the
        // socket is always readable and the biased select would starve them (str0m releases
        // paced media and sends feedback only on timeouts).
        let now = clock();
        core.handle_timeout(now);
        send(&mut core, &socket, &mut tcp, &plain, &mut send_errors);
        if let Some(tcp) = tcp.as_mut() {
            for addr in tcp.take_closed() {
                core.forget_tuple(&Remote::tcp(addr));
            }
        }
        if now >= next_sweep {
            if let Some(tcp) = tcp.as_mut() {
                tcp.sweep(now, |remote| core.is_validated(remote));
            }
            plain.sweep(&core);
            next_sweep = now + TCP_SWEEP_INTERVAL;
        }
    }
}

/// The sockets of the worker's plain transports: a reader task each hands their datagrams to
/// the loop with the address they arrived at.
struct PlainSockets {
    tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
    rx: mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Each socket (its consumers send from it) and its reader.
    readers: HashMap<SocketAddr, (Arc<UdpSocket>, tokio::task::AbortHandle)>,
    buffer_bytes: usize,
}

impl PlainSockets {
    fn new(buffer_bytes: usize) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        PlainSockets {
            tx,
            rx,
            readers: HashMap::new(),
            buffer_bytes,
        }
    }

    fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    /// Binds the transport's sockets on `ip` and creates it in the core.
    fn create(
        &mut self,
        core: &mut Core,
        ip: IpAddr,
        router_id: String,
        options: crate::types::PlainTransportOptions,
    ) -> Result<crate::types::PlainTransportCreated, MediaError> {
        let rtp = self.bind(ip)?;
        let rtcp = if options.rtcp_mux {
            None
        } else {
            match self.bind(ip) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    self.close(rtp);
                    return Err(e);
                }
            }
        };
        let created = core.create_plain_transport(router_id, options, rtp, rtcp);
        if created.is_err() {
            self.close(rtp);
            if let Some(rtcp) = rtcp {
                self.close(rtcp);
            }
        }
        created
    }

    fn bind(&mut self, ip: IpAddr) -> Result<SocketAddr, MediaError> {
        let addr = SocketAddr::new(ip, 0);
        let error = |e: io::Error| MediaError::Bind {
            addr,
            reason: e.to_string(),
        };
        let std_socket = bind_udp(addr, self.buffer_bytes).map_err(error)?;
        let local = std_socket.local_addr().map_err(error)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket).map_err(error)?);
        let tx = self.tx.clone();
        let kept = socket.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if tx.send((local, from, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
        self.readers.insert(local, (kept, reader.abort_handle()));
        Ok(local)
    }

    /// Sends from the plain socket `local`; false when it is gone or the send failed.
    fn send(&self, local: SocketAddr, to: SocketAddr, contents: &[u8]) -> bool {
        self.readers
            .get(&local)
            .is_some_and(|(socket, _)| socket.try_send_to(contents, to).is_ok())
    }

    fn close(&mut self, local: SocketAddr) {
        if let Some((_, reader)) = self.readers.remove(&local) {
            reader.abort();
        }
    }

    /// Closes the sockets of transports the core no longer has.
    fn sweep(&mut self, core: &Core) {
        if self.readers.is_empty() {
            return;
        }
        let gone: Vec<SocketAddr> = self
            .readers
            .keys()
            .filter(|a| !core.plain_socket_in_use(a))
            .copied()
            .collect();
        for local in gone {
            self.close(local);
        }
    }
}

/// The next input of the ICE-TCP listener; never, for a worker without one.
async fn next_tcp(tcp: &mut Option<IceTcpServer>) -> TcpInput {
    match tcp {
        Some(tcp) => tcp.next(clock).await,
        None => std::future::pending().await,
    }
}

/// Drains the core onto the socket (and the TCP connections, and plain transports' sockets).
fn send(
    core: &mut Core,
    socket: &impl DatagramSocket,
    tcp: &mut Option<IceTcpServer>,
    plain: &PlainSockets,
    send_errors: &mut u64,
) {
    while let Some(t) = core.poll_transmit() {
        let sent = match (t.destination.protocol, tcp.as_mut()) {
            (Protocol::Udp, _) if t.source.is_some() => t
                .source
                .is_some_and(|local| plain.send(local, t.destination.addr, &t.contents)),
            (Protocol::Udp, _) => socket.try_send_to(&t.contents, t.destination.addr).is_ok(),
            (Protocol::Tcp, Some(tcp)) => tcp.send(t.destination.addr, &t.contents),
            (Protocol::Tcp, None) => false,
        };
        if !sent {
            *send_errors += 1;
        }
    }
}

/// Binds the UDP socket and, unless TCP is off, the TCP listener. With `TcpPort::SameAsUdp` and
/// a UDP port the OS picks, a port whose TCP number is taken is given back and another tried.
fn bind_sockets(
    settings: &WorkerSettings,
    media: &MediaSettings,
) -> Result<(StdUdpSocket, SocketAddr, Option<StdTcpListener>), MediaError> {
    let bind = SocketAddr::new(settings.listen_ip, settings.port);
    let bind_error = |addr: SocketAddr| {
        move |e: std::io::Error| MediaError::Bind {
            addr,
            reason: e.to_string(),
        }
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let udp = bind_udp(bind, media.socket_buffer_bytes).map_err(bind_error(bind))?;
        let local_addr = udp.local_addr().map_err(bind_error(bind))?;
        let tcp_port = match settings.tcp {
            TcpPort::Off => return Ok((udp, local_addr, None)),
            TcpPort::SameAsUdp => local_addr.port(),
            TcpPort::Port(port) => port,
        };
        let tcp_bind = SocketAddr::new(settings.listen_ip, tcp_port);
        match bind_tcp(tcp_bind, media.socket_buffer_bytes) {
            Ok(listener) => return Ok((udp, local_addr, Some(listener))),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && settings.port == 0
                    && settings.tcp == TcpPort::SameAsUdp
                    && attempts < 16 => {}
            Err(e) => return Err(bind_error(tcp_bind)(e)),
        }
    }
}

/// A non-blocking TCP listener whose connections have large buffers.
fn bind_tcp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<StdTcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // A restarted worker can listen again while connections of the old one linger.
    socket.set_reuse_address(true)?;
    // Accepted connections inherit these (set before listening, so the window scale is
    // negotiated for them): a keyframe burst must fit while the worker is busy, or a browser
    // whose own small TCP buffer overflows drops media (libwebrtc does).
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A non-blocking UDP socket with large buffers.
fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<StdUdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer than asked for is not an error.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The text of a panic's payload (`"panic"` when it is neither a `&str` nor a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// User and system CPU time of the calling thread, from `/proc/thread-self/stat` (Linux).
fn thread_cpu_ms() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; Linux reports USER_HZ = 100.
    Some((utime * 10, stime * 10))
}
