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
//! A real worker runs the loop on its own thread and runtime with a UDP socket; a worker on a
//! [`VirtualNet`](crate::testing::VirtualNet) runs the same loop as a task with a virtual
//! socket.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::command::{Command, WorkerLink};
use crate::core::{Core, CoreConfig};
use crate::error::MediaError;
use crate::settings::{MediaSettings, WorkerSettings};
use crate::testing::VirtualSocket;

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

/// A started worker: the link to its core, its socket's address, its status and what runs it.
pub(crate) struct Spawned {
    pub link: WorkerLink,
    pub local_addr: SocketAddr,
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
        announced_ip: local_addr.ip(),
        cert,
        unix_millis: unix_millis(),
        settings: media,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(Status::Running);
    let task = tokio::spawn(run(Core::new(config, clock()), socket, rx));
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
        status: status_rx,
        runner: Runner::Task(runner),
    })
}

/// Binds the worker's UDP socket and starts its thread.
pub(crate) fn spawn(
    index: usize,
    settings: &WorkerSettings,
    media: MediaSettings,
) -> Result<Spawned, MediaError> {
    let bind = SocketAddr::new(settings.listen_ip, settings.port);
    let bind_error = |e: std::io::Error| MediaError::Bind {
        addr: bind,
        reason: e.to_string(),
    };
    let std_socket = bind_udp(bind, media.socket_buffer_bytes).map_err(bind_error)?;
    let local_addr = std_socket.local_addr().map_err(bind_error)?;
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or(MediaError::Certificate)?;
    let config = CoreConfig {
        index,
        local_addr,
        announced_ip: settings.announced_ip.unwrap_or(settings.listen_ip),
        cert,
        unix_millis: unix_millis(),
        settings: media,
    };
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
                    run(Core::new(config, clock()), socket, rx).await;
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
        status: status_rx,
        runner: Runner::Thread(thread),
    })
}

/// The worker loop.
async fn run(
    mut core: Core,
    socket: impl DatagramSocket,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut buf = vec![0u8; 2048];
    let recv_batch = core.settings().recv_batch;
    let mut send_errors = 0u64;
    let mut wakeups = 0u64;
    loop {
        let deadline = core.poll_timeout().unwrap_or_else(clock);
        tokio::select! {
            biased;
            command = rx.recv() => match command {
                None => {
                    core.close(clock());
                    send(&mut core, &socket, &mut send_errors);
                    break;
                }
                Some(Command::Crash) => panic!("worker crash requested"),
                Some(Command::ResourceUsage { reply }) => {
                    let mut usage = core.usage().clone();
                    usage.send_errors += send_errors;
                    usage.wakeups = wakeups;
                    if let Some((user, system)) = thread_cpu_ms() {
                        usage.cpu_user_ms = user;
                        usage.cpu_system_ms = system;
                    }
                    let _ = reply.send(usage);
                }
                Some(command) => core.handle_command(clock(), command),
            },
            ready = socket.readable() => {
                if ready.is_ok() {
                    for _ in 0..recv_batch {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => core.handle_datagram(clock(), from, &buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                core.count_receive_error();
                                break;
                            }
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
        }
        wakeups += 1;
        if core.is_closed() {
            send(&mut core, &socket, &mut send_errors);
            break;
        }
        // Timeouts run after every wake-up, not only when the sleep branch wins: under load the
        // socket is always readable and the biased select would starve them (str0m releases
        // paced media and sends feedback only on timeouts).
        core.handle_timeout(clock());
        send(&mut core, &socket, &mut send_errors);
    }
}

/// Drains the core onto the socket.
fn send(core: &mut Core, socket: &impl DatagramSocket, send_errors: &mut u64) {
    while let Some(t) = core.poll_transmit() {
        if socket.try_send_to(&t.contents, t.destination).is_err() {
            *send_errors += 1;
        }
    }
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
