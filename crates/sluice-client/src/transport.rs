//! `ClientTransport`: the client side of one WebRTC transport on a real UDP socket and the real
//! clock. It is a thin async driver of a sans-IO [`ClientSession`](crate::session_core): a task
//! owns the socket, reads the clock, feeds the session datagrams, commands and timeouts, and
//! sends what it transmits. Everything a client does (ICE/DTLS, synthetic media, consumers,
//! data channels, stats) lives in the session.
//!
//! It produces synthetic media ([`crate::media`]): VP8 with keyframes (periodic and on request),
//! picture ids, temporal layers and rid-based simulcast, and opus-sized audio; and it consumes
//! what the server sends, handing each packet to the consumer's channel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_media::DataMessage;
use sluice_media::ice_tcp::{FrameReader, frame};
use sluice_media::ortc::{DtlsParameters, RtpParameters, SctpStreamParameters};
use sluice_media::testing::{VirtualNet, VirtualSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::media;
use crate::session_core::ClientSession;
pub use crate::session_core::{
    ClientDataProducer, ClientError, ClientProducer, ClientStats, ClientTransportOptions,
    ConnectionState, ReceivedData, ReceivedRtp, ReceivedSenderReport, ServerTransportInfo,
    SourceConfig, WallClock, temporal_id,
};

enum Cmd {
    Start,
    Produce {
        source: SourceConfig,
        paused: bool,
        reply: oneshot::Sender<Result<ClientProducer, ClientError>>,
    },
    Consume {
        params: RtpParameters,
        reply: oneshot::Sender<Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError>>,
    },
    RequestKeyframe {
        mid: String,
    },
    RequestRemb {
        mid: String,
        bps: u64,
    },
    SetSending {
        mid: String,
        sending: bool,
    },
    SetLayerActive {
        mid: String,
        layer: usize,
        active: bool,
    },
    ProduceData {
        label: String,
        ordered: bool,
        max_retransmits: Option<u16>,
        max_packet_life_time: Option<u16>,
        stream_id: Option<u16>,
        reply: oneshot::Sender<ClientDataProducer>,
    },
    ConsumeData {
        params: SctpStreamParameters,
        label: String,
        reply: oneshot::Sender<mpsc::UnboundedReceiver<ReceivedData>>,
    },
    SendData {
        stream_id: u16,
        message: DataMessage,
    },
    Stats {
        reply: oneshot::Sender<ClientStats>,
    },
    /// SDP mode: an offer sending these sources.
    CreateOffer {
        sources: Vec<SourceConfig>,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    AcceptAnswer {
        answer: String,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    AcceptOffer {
        offer: String,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    ReceiveAll {
        reply: oneshot::Sender<mpsc::UnboundedReceiver<ReceivedRtp>>,
    },
    Close,
}

/// The client side of one WebRTC transport.
#[derive(Clone)]
pub struct ClientTransport {
    commands: mpsc::UnboundedSender<Cmd>,
    local_addr: SocketAddr,
    dtls_parameters: DtlsParameters,
    state: watch::Receiver<ConnectionState>,
}

impl std::fmt::Debug for ClientTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Stamps carry UNIX microseconds unless the options map the clock otherwise.
fn with_system_clock(mut options: ClientTransportOptions) -> ClientTransportOptions {
    options.wall_clock.get_or_insert_with(|| WallClock {
        at: clock(),
        unix_us: media::now_us(),
    });
    options
}

/// tokio's clock: the wall clock on a running runtime, virtual time on a paused one.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The transport's socket: real UDP, one on a virtual network, or a TCP connection to the
/// server's ICE-TCP candidate.
enum Socket {
    Udp(UdpSocket),
    Virtual(VirtualSocket),
    Tcp(TcpConnection),
}

/// A TCP connection carrying RFC 4571 frames; tasks read and write it.
struct TcpConnection {
    remote: SocketAddr,
    frames: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
}

impl TcpConnection {
    fn spawn(stream: TcpStream, remote: SocketAddr) -> TcpConnection {
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let (writer, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut reader = FrameReader::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                reader.push(&buf[..n]);
                while let Some(f) = reader.next_frame() {
                    if frames_tx.send(f.to_vec()).is_err() {
                        return;
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some(framed) = to_write.recv().await {
                if write.write_all(&framed).await.is_err() {
                    break;
                }
            }
        });
        TcpConnection {
            remote,
            frames: Mutex::new(frames),
            writer,
        }
    }
}

impl Socket {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            Socket::Udp(s) => s.recv_from(buf).await,
            Socket::Virtual(s) => s.recv_from(buf).await,
            Socket::Tcp(c) => {
                let Some(f) = c.frames.lock().await.recv().await else {
                    // The server closed the connection: nothing more comes.
                    return std::future::pending().await;
                };
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok((n, c.remote))
            }
        }
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self {
            Socket::Udp(s) => s.try_send_to(buf, to),
            Socket::Virtual(s) => s.try_send_to(buf, to),
            Socket::Tcp(c) => {
                let framed = frame(buf).ok_or(std::io::ErrorKind::InvalidInput)?;
                c.writer
                    .send(framed)
                    .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
                Ok(buf.len())
            }
        }
    }
}

async fn bind(options: &ClientTransportOptions) -> Result<(Socket, SocketAddr), ClientError> {
    let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
        .await
        .map_err(|e| ClientError::Bind(e.to_string()))?;
    let local_addr = socket
        .local_addr()
        .map_err(|e| ClientError::Bind(e.to_string()))?;
    Ok((Socket::Udp(socket), local_addr))
}

/// Connects to the server's ICE-TCP candidate (or the override address).
async fn connect_tcp(
    server: &ServerTransportInfo,
    options: &ClientTransportOptions,
) -> Result<(Socket, SocketAddr), ClientError> {
    let remote = match options.remote_override {
        Some(addr) => addr,
        None => server.candidate_addr(true)?,
    };
    let stream = TcpStream::connect(remote)
        .await
        .map_err(|e| ClientError::Bind(format!("cannot connect to {remote}: {e}")))?;
    let local_addr = stream
        .local_addr()
        .map_err(|e| ClientError::Bind(e.to_string()))?;
    Ok((
        Socket::Tcp(TcpConnection::spawn(stream, remote)),
        local_addr,
    ))
}

impl ClientTransport {
    /// Binds a socket and prepares ICE and DTLS toward `server`; nothing is sent before
    /// [`start`](Self::start) (give the server our [`dtls_parameters`](Self::dtls_parameters) first).
    pub async fn new(
        server: &ServerTransportInfo,
        options: ClientTransportOptions,
    ) -> Result<ClientTransport, ClientError> {
        let (socket, local_addr) = if options.tcp {
            connect_tcp(server, &options).await?
        } else {
            bind(&options).await?
        };
        let session = ClientSession::new(clock(), local_addr, server, with_system_clock(options))?;
        Ok(ClientTransport::spawn(session, socket))
    }

    /// The same on a virtual network, bound to `addr` there, on tokio's clock (virtual time on a
    /// paused runtime): see `sluice_media::testing`.
    pub fn new_virtual(
        net: &VirtualNet,
        addr: SocketAddr,
        server: &ServerTransportInfo,
        options: ClientTransportOptions,
    ) -> Result<ClientTransport, ClientError> {
        let socket = net
            .bind(addr)
            .map_err(|e| ClientError::Bind(e.to_string()))?;
        let session = ClientSession::new(clock(), addr, server, with_system_clock(options))?;
        Ok(ClientTransport::spawn(session, Socket::Virtual(socket)))
    }

    /// A transport negotiated with SDP offer/answer instead of mediasoup's parameters (for SFUs
    /// that speak SDP, such as Janus, in side-by-side benchmarks). ICE and DTLS start once the
    /// first offer/answer completes.
    pub async fn new_sdp(options: ClientTransportOptions) -> Result<ClientTransport, ClientError> {
        let (socket, local_addr) = bind(&options).await?;
        let session = ClientSession::new_sdp(clock(), local_addr, with_system_clock(options))?;
        Ok(ClientTransport::spawn(session, socket))
    }

    fn spawn(session: ClientSession, socket: Socket) -> ClientTransport {
        let local_addr = session.local_addr();
        let dtls_parameters = session.dtls_parameters().clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(session.connection_state());
        tokio::spawn(drive(session, socket, state_tx, rx));
        ClientTransport {
            commands: tx,
            local_addr,
            dtls_parameters,
            state: state_rx,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `{role: "client", fingerprints}` for `connectWebRtcTransport`.
    pub fn dtls_parameters(&self) -> &DtlsParameters {
        &self.dtls_parameters
    }

    /// Starts ICE, DTLS and (if enabled) SCTP.
    pub fn start(&self) {
        let _ = self.commands.send(Cmd::Start);
    }

    /// Waits until `reached` holds of the connection's state (`what` names it in the timeout
    /// error); an error if the transport closes first.
    async fn wait_state(
        &self,
        timeout: Duration,
        what: &'static str,
        reached: impl Fn(&ConnectionState) -> bool,
    ) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        let s = tokio::time::timeout(timeout, state.wait_for(|s| reached(s) || s.closed))
            .await
            .map_err(|_| ClientError::Timeout(what))?
            .map_err(|_| ClientError::Closed)?;
        if s.closed {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    /// Waits until DTLS is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait_state(timeout, "DTLS", |s| s.dtls_connected).await
    }

    /// Waits until `n` data channels have opened (the SCTP association is up and the
    /// negotiated channels with it).
    pub async fn wait_channels_opened(&self, n: u32, timeout: Duration) -> Result<(), ClientError> {
        self.wait_state(timeout, "SCTP", |s| s.channels_opened >= n)
            .await
    }

    /// Waits until ICE is connected (before DTLS completes).
    pub async fn wait_ice_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        self.wait_state(timeout, "ICE", |s| s.ice_connected).await
    }

    pub fn connection_state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(f(tx)).map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Declares a synthetic producer; it sends once started and not paused.
    pub async fn produce(
        &self,
        source: SourceConfig,
        paused: bool,
    ) -> Result<ClientProducer, ClientError> {
        self.ask(|reply| Cmd::Produce {
            source,
            paused,
            reply,
        })
        .await?
    }

    /// Receives a consumer with these (server-given) parameters.
    pub async fn consume(
        &self,
        params: RtpParameters,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        self.ask(|reply| Cmd::Consume { params, reply }).await?
    }

    /// Sends a PLI for the consumer with this mid.
    pub fn request_keyframe(&self, mid: &str) {
        let _ = self.commands.send(Cmd::RequestKeyframe { mid: mid.into() });
    }

    /// Sends a REMB (receiver-estimated maximum bitrate) for the consumer with this mid, as a
    /// browser does when it estimates bandwidth on the receiving side (abs-send-time).
    pub fn request_remb(&self, mid: &str, bps: u64) {
        let _ = self.commands.send(Cmd::RequestRemb {
            mid: mid.into(),
            bps,
        });
    }

    /// Stops or restarts a producer's packets (what a browser does on pause).
    pub fn set_sending(&self, mid: &str, sending: bool) {
        let _ = self.commands.send(Cmd::SetSending {
            mid: mid.into(),
            sending,
        });
    }

    /// Stops or restarts one simulcast layer (as Chromium drops its top layer under load).
    pub fn set_layer_active(&self, mid: &str, layer: usize, active: bool) {
        let _ = self.commands.send(Cmd::SetLayerActive {
            mid: mid.into(),
            layer,
            active,
        });
    }

    /// Opens a negotiated data channel to produce on; send its parameters with `produceData`.
    /// `stream_id`: pick one (tests of hostile clients), else the next free.
    pub async fn produce_data(
        &self,
        label: &str,
        ordered: bool,
        max_retransmits: Option<u16>,
        max_packet_life_time: Option<u16>,
        stream_id: Option<u16>,
    ) -> Result<ClientDataProducer, ClientError> {
        self.ask(|reply| Cmd::ProduceData {
            label: label.to_owned(),
            ordered,
            max_retransmits,
            max_packet_life_time,
            stream_id,
            reply,
        })
        .await
    }

    /// Opens the negotiated channel a server data consumer sends on.
    pub async fn consume_data(
        &self,
        params: SctpStreamParameters,
        label: &str,
    ) -> Result<mpsc::UnboundedReceiver<ReceivedData>, ClientError> {
        self.ask(|reply| Cmd::ConsumeData {
            params,
            label: label.to_owned(),
            reply,
        })
        .await
    }

    /// Sends a message on a data producer's stream.
    pub fn send_data(&self, stream_id: u16, message: DataMessage) -> Result<(), ClientError> {
        self.commands
            .send(Cmd::SendData { stream_id, message })
            .map_err(|_| ClientError::Closed)
    }

    /// SDP mode: an offer that sends these sources (each its own m-line, send-only).
    pub async fn create_offer(&self, sources: Vec<SourceConfig>) -> Result<String, ClientError> {
        self.ask(|reply| Cmd::CreateOffer { sources, reply })
            .await?
    }

    /// SDP mode: the answer to our offer.
    pub async fn accept_answer(&self, answer: String) -> Result<(), ClientError> {
        self.ask(|reply| Cmd::AcceptAnswer { answer, reply })
            .await?
    }

    /// SDP mode: answers the remote's offer (receiving what it offers).
    pub async fn accept_offer(&self, offer: String) -> Result<String, ClientError> {
        self.ask(|reply| Cmd::AcceptOffer { offer, reply }).await?
    }

    /// Every RTP packet received on a stream no consumer was declared for.
    pub async fn receive_all(&self) -> Result<mpsc::UnboundedReceiver<ReceivedRtp>, ClientError> {
        self.ask(|reply| Cmd::ReceiveAll { reply }).await
    }

    pub async fn stats(&self) -> Result<ClientStats, ClientError> {
        self.ask(|reply| Cmd::Stats { reply }).await
    }

    pub fn close(&self) {
        let _ = self.commands.send(Cmd::Close);
    }
}

/// Runs one session on its socket and the real clock until it is closed, over, or every handle
/// is dropped.
async fn drive(
    mut session: ClientSession,
    socket: Socket,
    state: watch::Sender<ConnectionState>,
    mut commands: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut buf = vec![0u8; 2048];
    while let Some(deadline) = session.poll_timeout() {
        let wait = deadline.saturating_duration_since(clock());
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None | Some(Cmd::Close) => break,
                Some(command) => apply(&mut session, command),
            },
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    session.handle_datagram(clock(), from, &buf[..n]);
                    flush(&mut session, &socket);
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
        session.handle_timeout(clock());
        flush(&mut session, &socket);
        let current = session.connection_state();
        state.send_if_modified(|s| {
            let changed = *s != current;
            *s = current;
            changed
        });
    }
    session.close();
    state.send_modify(|s| s.closed = true);
}

fn flush(session: &mut ClientSession, socket: &Socket) {
    while let Some(t) = session.poll_transmit() {
        let _ = socket.try_send_to(&t.contents, t.destination);
    }
}

fn apply(session: &mut ClientSession, command: Cmd) {
    let now = clock();
    match command {
        Cmd::Start => session.start(now),
        Cmd::Produce {
            source,
            paused,
            reply,
        } => {
            let _ = reply.send(session.produce(now, source, paused));
        }
        Cmd::Consume { params, reply } => {
            let _ = reply.send(session.consume(params));
        }
        Cmd::RequestKeyframe { mid } => session.request_keyframe(&mid),
        Cmd::RequestRemb { mid, bps } => session.request_remb(&mid, bps),
        Cmd::SetSending { mid, sending } => session.set_sending(now, &mid, sending),
        Cmd::SetLayerActive { mid, layer, active } => {
            session.set_layer_active(&mid, layer, active);
        }
        Cmd::ProduceData {
            label,
            ordered,
            max_retransmits,
            max_packet_life_time,
            stream_id,
            reply,
        } => {
            let _ = reply.send(session.produce_data(
                &label,
                ordered,
                max_retransmits,
                max_packet_life_time,
                stream_id,
            ));
        }
        Cmd::ConsumeData {
            params,
            label,
            reply,
        } => {
            let _ = reply.send(session.consume_data(params, &label));
        }
        Cmd::SendData { stream_id, message } => session.send_data(stream_id, &message),
        Cmd::Stats { reply } => {
            let _ = reply.send(session.stats().clone());
        }
        Cmd::CreateOffer { sources, reply } => {
            let _ = reply.send(session.create_offer(sources));
        }
        Cmd::AcceptAnswer { answer, reply } => {
            let _ = reply.send(session.accept_answer(&answer));
        }
        Cmd::AcceptOffer { offer, reply } => {
            let _ = reply.send(session.accept_offer(&offer));
        }
        Cmd::ReceiveAll { reply } => {
            let _ = reply.send(session.receive_all());
        }
        Cmd::Close => session.close(),
    }
}
