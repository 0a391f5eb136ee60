//! `Worker`: an OS thread with its own event loop and one UDP socket shared by all of its
//! transports (like mediasoup's WebRtcServer), hosting routers and everything on them.
//!
//! The control plane talks to a worker through [`Command`]s over a channel and awaits replies;
//! the worker reports events on each transport's event sender. Inside, [`WorkerState`] owns every
//! str0m `Rtc`, the demultiplexer, the timers and the forwarding tables; a packet from a producer
//! reaches its consumers by plain function calls on this one thread.
//!
//! Robustness: a datagram from an address no transport has validated is dropped and counted
//! (STUN is routed by ufrag); a panic while handling one transport closes that transport only
//! (with `CloseReason::SessionError`); a worker whose thread ends unexpectedly reports "died"
//! through [`Worker::died`], and the control plane may spawn a replacement.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_ortc::{
    DtlsParameters, IceParameters, MediaKind, RtpCapabilities, RtpCodecCapability, SsrcGenerator,
};
use str0m::bwe::BweKind;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Event, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::consumer::{ConsumerCreated, ConsumerDump, ConsumerOp, ConsumerOptions, ConsumerState};
use crate::data_consumer::{
    DEFAULT_BUFFERED_AMOUNT_LOW_THRESHOLD, DEFAULT_QUEUE_LIMIT, DEFAULT_UNRELIABLE_QUEUE_LIMIT,
    DataConsumerCreated, DataConsumerOptions, DataConsumerStat, DataConsumerState, DataReceiver,
    DataSink, Pushed, RELIABLE_SCTP_BUFFER, SendQueue, UNRELIABLE_SCTP_BUFFER,
};
use crate::data_producer::{
    DataMessage, DataProducerOptions, DataProducerStat, DataProducerState, RateLimiter,
};
use crate::demux::{DatagramKind, Demux};
use crate::direct_transport::DirectTransportState;
use crate::error::MediaError;
use crate::events::EventSender;
use crate::events::{CloseReason, ConsumerLayers, ConsumerScore, MediaEvent};
use crate::forwarder::{Forwarder, InPacket, Verdict};
use crate::layers::{RateCalculator, select_spatial_layer};
use crate::payload;
use crate::producer::{ProducerSpec, ProducerStat, ProducerState, score_from_loss};
use crate::router::{Router, RouterDump, RouterState, router_capabilities};
use crate::webrtc_transport::{
    BandwidthEstimation, DtlsState, MediaLine, MediaOwner, SctpState, TransportCreated,
    TransportStat, TransportState, WebRtcTransportOptions,
};

/// Worker-local key of a transport, producer or consumer.
pub(crate) type Key = u64;

type Reply<T> = oneshot::Sender<T>;

/// How many datagrams the loop reads before it flushes output.
const RECV_BATCH: usize = 64;
/// A str0m deadline this close is run at once rather than through the timer (see `drain`).
const IMMEDIATE_WINDOW: Duration = Duration::from_micros(200);

/// When a str0m deadline seen at `now` is run without the timer: `Some(at)`, the time to hand
/// str0m (the deadline itself if it is still ahead; never earlier than `now`).
fn due_now(deadline: Instant, now: Instant) -> Option<Instant> {
    (deadline <= now + IMMEDIATE_WINDOW).then(|| deadline.max(now))
}

/// How often the worker re-evaluates layers and scores.
const TICK: Duration = Duration::from_millis(250);

/// Where a worker listens and what it announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Address the UDP socket binds to.
    pub listen_ip: IpAddr,
    /// Address in ICE candidates; `listen_ip` when `None`.
    pub announced_ip: Option<IpAddr>,
    /// UDP port; 0 lets the OS pick.
    pub port: u16,
}

impl WorkerSettings {
    /// Loopback, any free port (tests, benchmarks).
    pub fn loopback() -> Self {
        WorkerSettings {
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            announced_ip: None,
            port: 0,
        }
    }
}

/// A worker's counters and CPU time (`Worker::resource_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    /// CPU time of the worker thread, in milliseconds.
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Datagrams from an address no transport validated (and no known ufrag).
    pub dropped_unknown_source: u64,
    /// Datagrams str0m could not parse or refused.
    pub dropped_malformed: u64,
    pub send_errors: u64,
    /// Transports closed because handling them panicked.
    pub session_errors: u64,
    /// Data-channel messages on a stream no data producer declared.
    pub dropped_data: u64,
    /// str0m timeouts handled (all transports).
    pub timeouts: u64,
    /// Wake-ups of the worker loop.
    pub wakeups: u64,
}

/// What a worker holds now (`Worker::dump`); every count is zero once everything is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerDump {
    pub index: usize,
    pub local_addr: String,
    pub router_ids: Vec<String>,
    pub transports: usize,
    pub producers: usize,
    pub consumers: usize,
    pub data_producers: usize,
    pub data_consumers: usize,
    pub ufrag_entries: usize,
    pub address_entries: usize,
    pub timers: usize,
}

pub(crate) enum Command {
    CreateRouter {
        id: String,
        caps: Arc<RtpCapabilities>,
        events: Option<EventSender>,
        reply: Reply<Result<(), MediaError>>,
    },
    CloseRouter {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    RouterDump {
        id: String,
        reply: Reply<Result<RouterDump, MediaError>>,
    },
    CanConsume {
        router_id: String,
        producer_id: String,
        caps: RtpCapabilities,
        reply: Reply<bool>,
    },
    CreateWebRtcTransport {
        router_id: String,
        options: Box<WebRtcTransportOptions>,
        reply: Reply<Result<TransportCreated, MediaError>>,
    },
    ConnectTransport {
        id: String,
        dtls_parameters: Box<DtlsParameters>,
        reply: Reply<Result<(), MediaError>>,
    },
    RestartIce {
        id: String,
        reply: Reply<Result<IceParameters, MediaError>>,
    },
    TransportStats {
        id: String,
        reply: Reply<Result<TransportStat, MediaError>>,
    },
    CloseTransport {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Produce {
        transport_id: String,
        spec: Box<ProducerSpec>,
        reply: Reply<Result<(), MediaError>>,
    },
    PauseProducer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    ProducerStats {
        id: String,
        reply: Reply<Result<Vec<ProducerStat>, MediaError>>,
    },
    CloseProducer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Consume {
        transport_id: String,
        id: String,
        options: Box<ConsumerOptions>,
        reply: Reply<Result<ConsumerCreated, MediaError>>,
    },
    ConsumerOp {
        id: String,
        op: ConsumerOp,
        reply: Reply<Result<(), MediaError>>,
    },
    ConsumerStats {
        id: String,
        reply: Reply<Result<Vec<crate::consumer::ConsumerStat>, MediaError>>,
    },
    ConsumerDump {
        id: String,
        reply: Reply<Result<ConsumerDump, MediaError>>,
    },
    CreateDirectTransport {
        router_id: String,
        events: Option<EventSender>,
        reply: Reply<Result<String, MediaError>>,
    },
    ProduceData {
        transport_id: String,
        id: String,
        options: Box<DataProducerOptions>,
        reply: Reply<Result<(), MediaError>>,
    },
    ConsumeData {
        transport_id: String,
        id: String,
        options: Box<DataConsumerOptions>,
        reply: Reply<Result<DataConsumerCreated, MediaError>>,
    },
    /// A message from a direct data producer.
    DirectSend {
        data_producer_id: String,
        message: DataMessage,
    },
    PauseDataProducer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    PauseDataConsumer {
        id: String,
        paused: bool,
        reply: Reply<Result<(), MediaError>>,
    },
    DataProducerStats {
        id: String,
        reply: Reply<Result<Vec<DataProducerStat>, MediaError>>,
    },
    DataConsumerStats {
        id: String,
        reply: Reply<Result<Vec<DataConsumerStat>, MediaError>>,
    },
    CloseDataProducer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    CloseDataConsumer {
        id: String,
        reply: Reply<Result<(), MediaError>>,
    },
    Dump {
        reply: Reply<WorkerDump>,
    },
    ResourceUsage {
        reply: Reply<ResourceUsage>,
    },
    /// Makes the worker thread panic (tests of the "died" report).
    Crash,
    /// Panics while handling one transport (tests that only that session closes).
    PanicTransport {
        id: String,
    },
    Close {
        reply: Reply<()>,
    },
}

/// How a worker thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Running,
    Closed,
    Died(String),
}

struct WorkerInner {
    index: usize,
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The control plane's handle on a worker thread.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<WorkerInner>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.inner.index)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

impl Worker {
    /// Binds the worker's UDP socket and starts its thread.
    pub fn spawn(index: usize, settings: &WorkerSettings) -> Result<Worker, MediaError> {
        let bind = SocketAddr::new(settings.listen_ip, settings.port);
        let std_socket = bind_udp(bind).map_err(|e| MediaError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        let local_addr = std_socket.local_addr().map_err(|e| MediaError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        let announced_ip = settings.announced_ip.unwrap_or(settings.listen_ip);
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or(MediaError::Certificate)?;
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
                        let state = WorkerState::new(index, local_addr, announced_ip, cert);
                        run(state, socket, rx).await;
                        Ok::<(), String>(())
                    })
                }));
                let status = match result {
                    Ok(Ok(())) => Status::Closed,
                    Ok(Err(reason)) => Status::Died(reason),
                    Err(panic) => Status::Died(panic_message(&panic)),
                };
                if let Status::Died(reason) = &status {
                    tracing::error!(worker = index, %reason, "worker died");
                }
                let _ = status_tx.send(status);
            })
            .map_err(|e| MediaError::Spawn(e.to_string()))?;
        Ok(Worker {
            inner: Arc::new(WorkerInner {
                index,
                local_addr,
                commands: tx,
                status: status_rx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// The address the worker's UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Whether the worker thread is running.
    pub fn is_alive(&self) -> bool {
        *self.inner.status.borrow() == Status::Running
    }

    /// Resolves with the reason when the worker thread ends without being closed; never
    /// resolves for a worker that runs on or was closed.
    pub async fn died(&self) -> String {
        let mut status = self.inner.status.clone();
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                Status::Died(reason) => return reason,
                Status::Closed => std::future::pending::<()>().await,
                Status::Running => {}
            }
            if status.changed().await.is_err() {
                // The sender is gone; its last word decides.
                let last = status.borrow().clone();
                return match last {
                    Status::Died(reason) => reason,
                    Status::Closed => std::future::pending::<String>().await,
                    Status::Running => "worker thread is gone".to_owned(),
                };
            }
        }
    }

    pub(crate) fn send(&self, command: Command) -> Result<(), MediaError> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| MediaError::WorkerClosed(self.inner.index))
    }

    pub(crate) async fn request<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(command(tx))
            .map_err(|_| MediaError::WorkerClosed(self.inner.index))?;
        rx.await
            .map_err(|_| MediaError::WorkerClosed(self.inner.index))
    }

    /// Creates a router with these media codecs (`mediaCodecs` in mediasoup).
    pub async fn create_router(
        &self,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<Router, MediaError> {
        self.create_router_with_events(media_codecs, None).await
    }

    /// Creates a router whose own events (the active speaker) go to `events`.
    pub async fn create_router_with_events(
        &self,
        media_codecs: &[RtpCodecCapability],
        events: Option<EventSender>,
    ) -> Result<Router, MediaError> {
        let caps = Arc::new(router_capabilities(media_codecs)?);
        let id = crate::new_id();
        let (rid, rcaps) = (id.clone(), caps.clone());
        self.request(|reply| Command::CreateRouter {
            id: rid,
            caps: rcaps,
            events,
            reply,
        })
        .await??;
        Ok(Router::new(id, self.clone(), caps))
    }

    pub async fn dump(&self) -> Result<WorkerDump, MediaError> {
        self.request(|reply| Command::Dump { reply }).await
    }

    pub async fn resource_usage(&self) -> Result<ResourceUsage, MediaError> {
        self.request(|reply| Command::ResourceUsage { reply }).await
    }

    /// Makes the worker thread panic, to test what watches [`Worker::died`].
    #[doc(hidden)]
    pub fn crash_for_test(&self) {
        let _ = self.inner.commands.send(Command::Crash);
    }

    /// Closes every router and stops the thread.
    pub async fn close(&self) {
        let _ = self.request(|reply| Command::Close { reply }).await;
        let thread = self
            .inner
            .thread
            .lock()
            .map(|mut t| t.take())
            .unwrap_or(None);
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Socket buffers asked of the kernel (it caps them at `net.core.rmem_max` / `wmem_max`):
/// bursts of a keyframe to many consumers must not overflow them.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A non-blocking UDP socket with large buffers.
fn bind_udp(addr: SocketAddr) -> std::io::Result<StdUdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer than asked for is not an error.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

async fn run(mut state: WorkerState, socket: UdpSocket, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut buf = vec![0u8; 2048];
    let mut next_tick = Instant::now() + TICK;
    loop {
        let deadline = state
            .next_deadline()
            .map_or(next_tick, |d| d.min(next_tick));
        tokio::select! {
            biased;
            command = rx.recv() => match command {
                None => {
                    state.close_all(CloseReason::WorkerClosed, &socket);
                    break;
                }
                Some(Command::Close { reply }) => {
                    state.close_all(CloseReason::WorkerClosed, &socket);
                    let _ = reply.send(());
                    break;
                }
                Some(Command::Crash) => panic!("worker crash requested"),
                Some(command) => state.handle_command(command, &socket),
            },
            ready = socket.readable() => {
                if ready.is_ok() {
                    for _ in 0..RECV_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => state.on_datagram(&buf[..n], from, Instant::now(), &socket),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                state.usage.dropped_malformed += 1;
                                break;
                            }
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
        }
        state.usage.wakeups += 1;
        // Timers and the tick run after every wake-up, not only when the sleep branch wins:
        // under load the socket is always readable and the biased select would starve them
        // (str0m releases paced media and sends feedback only on timeouts).
        let now = Instant::now();
        if state.next_deadline().is_some_and(|d| d <= now) {
            state.on_timeout(now, &socket);
        }
        if now >= next_tick {
            state.on_tick(now, &socket);
            next_tick = now + TICK;
        }
        state.flush(&socket);
    }
}

/// Everything a worker owns.
pub(crate) struct WorkerState {
    index: usize,
    local_addr: SocketAddr,
    announced_ip: IpAddr,
    cert: str0m::config::DtlsCert,
    demux: Demux,
    routers: HashMap<String, RouterState>,
    transports: HashMap<Key, Box<TransportState>>,
    transport_ids: HashMap<String, Key>,
    producers: HashMap<Key, ProducerState>,
    producer_ids: HashMap<String, Key>,
    consumers: HashMap<Key, ConsumerState>,
    consumer_ids: HashMap<String, Key>,
    directs: HashMap<Key, DirectTransportState>,
    data_producers: HashMap<Key, DataProducerState>,
    data_producer_ids: HashMap<String, Key>,
    data_consumers: HashMap<Key, DataConsumerState>,
    data_consumer_ids: HashMap<String, Key>,
    timers: BTreeSet<(Instant, Key)>,
    /// Transports with output to poll.
    dirty: Vec<Key>,
    next_key: Key,
    ssrcs: SsrcGenerator,
    usage: ResourceUsage,
}

impl WorkerState {
    fn new(
        index: usize,
        local_addr: SocketAddr,
        announced_ip: IpAddr,
        cert: str0m::config::DtlsCert,
    ) -> Self {
        WorkerState {
            index,
            local_addr,
            announced_ip,
            cert,
            demux: Demux::new(),
            routers: HashMap::new(),
            transports: HashMap::new(),
            transport_ids: HashMap::new(),
            producers: HashMap::new(),
            producer_ids: HashMap::new(),
            consumers: HashMap::new(),
            consumer_ids: HashMap::new(),
            directs: HashMap::new(),
            data_producers: HashMap::new(),
            data_producer_ids: HashMap::new(),
            data_consumers: HashMap::new(),
            data_consumer_ids: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: Vec::new(),
            next_key: 1,
            ssrcs: SsrcGenerator::new(rand::random()),
            usage: ResourceUsage::default(),
        }
    }

    fn key(&mut self) -> Key {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    // ---- commands ------------------------------------------------------------------------

    fn handle_command(&mut self, command: Command, socket: &UdpSocket) {
        let now = Instant::now();
        match command {
            Command::CreateRouter {
                id,
                caps,
                events,
                reply,
            } => {
                let result = match self.routers.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        Err(MediaError::DuplicateId(e.key().clone()))
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(RouterState {
                            rtp_capabilities: caps,
                            transports: Default::default(),
                            producers: Default::default(),
                            data_producers: Default::default(),
                            events,
                            speaker: Default::default(),
                        });
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            Command::CloseRouter { id, reply } => {
                let result = if self.routers.contains_key(&id) {
                    self.close_router(&id, CloseReason::Closed, socket);
                    Ok(())
                } else {
                    Err(MediaError::UnknownRouter(id))
                };
                let _ = reply.send(result);
            }
            Command::RouterDump { id, reply } => {
                let _ = reply.send(self.router_dump(&id));
            }
            Command::CanConsume {
                router_id,
                producer_id,
                caps,
                reply,
            } => {
                let ok = self
                    .producer_ids
                    .get(&producer_id)
                    .and_then(|k| self.producers.get(k))
                    .filter(|p| p.router_id == router_id)
                    .is_some_and(|p| {
                        sluice_ortc::can_consume(&p.consumable, &caps).unwrap_or(false)
                    });
                let _ = reply.send(ok);
            }
            Command::CreateWebRtcTransport {
                router_id,
                options,
                reply,
            } => {
                let _ = reply.send(self.create_transport(router_id, *options, now));
            }
            Command::ConnectTransport {
                id,
                dtls_parameters,
                reply,
            } => {
                let result = self.with_transport(&id, |t| {
                    t.connect(&dtls_parameters)?;
                    if t.offer_pending {
                        t.apply_offer()?;
                    }
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Connecting,
                    });
                    Ok(())
                });
                let _ = reply.send(result);
            }
            Command::RestartIce { id, reply } => {
                let result = match self.transport_ids.get(&id).copied() {
                    Some(key) => {
                        let t = self.transports.get_mut(&key);
                        match t {
                            Some(t) => {
                                let (params, old) = t.restart_ice();
                                self.demux.remove_ufrag(&old);
                                self.demux.add_ufrag(&params.username_fragment, key);
                                self.dirty.push(key);
                                Ok(params)
                            }
                            None => Err(MediaError::UnknownTransport(id)),
                        }
                    }
                    None => Err(MediaError::UnknownTransport(id)),
                };
                let _ = reply.send(result);
            }
            Command::TransportStats { id, reply } => {
                let ts = unix_millis();
                let result = self.with_transport(&id, |t| Ok(t.stats(ts)));
                let _ = reply.send(result);
            }
            Command::CloseTransport { id, reply } => {
                let result = match self.transport_ids.get(&id).copied() {
                    Some(key) if self.directs.contains_key(&key) => {
                        self.close_direct_transport(key, CloseReason::Closed);
                        Ok(())
                    }
                    Some(key) => {
                        self.close_transport(key, CloseReason::Closed, socket);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownTransport(id)),
                };
                let _ = reply.send(result);
            }
            Command::Produce {
                transport_id,
                spec,
                reply,
            } => {
                let _ = reply.send(self.produce(&transport_id, *spec, now));
            }
            Command::PauseProducer { id, paused, reply } => {
                let _ = reply.send(self.pause_producer(&id, paused, now));
            }
            Command::ProducerStats { id, reply } => {
                let result = match self
                    .producer_ids
                    .get(&id)
                    .and_then(|k| self.producers.get(k))
                {
                    Some(p) => Ok(p.stats(now, unix_millis())),
                    None => Err(MediaError::UnknownProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseProducer { id, reply } => {
                let result = match self.producer_ids.get(&id).copied() {
                    Some(key) => {
                        self.close_producer(key, CloseReason::Closed, false);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::Consume {
                transport_id,
                id,
                options,
                reply,
            } => {
                let _ = reply.send(self.consume(&transport_id, id, *options, now));
            }
            Command::ConsumerOp { id, op, reply } => {
                let _ = reply.send(self.consumer_op(&id, op, now));
            }
            Command::ConsumerStats { id, reply } => {
                let result = match self
                    .consumer_ids
                    .get(&id)
                    .and_then(|k| self.consumers.get(k))
                {
                    Some(c) => Ok(vec![c.stats(now, unix_millis())]),
                    None => Err(MediaError::UnknownConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::ConsumerDump { id, reply } => {
                let result = match self.consumer_ids.get(&id).copied() {
                    Some(key) => Ok(self.consumer_dump(key)),
                    None => Err(MediaError::UnknownConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CreateDirectTransport {
                router_id,
                events,
                reply,
            } => {
                let _ = reply.send(self.create_direct_transport(router_id, events));
            }
            Command::ProduceData {
                transport_id,
                id,
                options,
                reply,
            } => {
                let _ = reply.send(self.produce_data(&transport_id, id, *options, now));
            }
            Command::ConsumeData {
                transport_id,
                id,
                options,
                reply,
            } => {
                let _ = reply.send(self.consume_data(&transport_id, id, *options));
            }
            Command::DirectSend {
                data_producer_id,
                message,
            } => {
                if let Some(&key) = self.data_producer_ids.get(&data_producer_id) {
                    self.relay_data(key, message, now);
                }
            }
            Command::PauseDataProducer { id, paused, reply } => {
                let result = match self
                    .data_producer_ids
                    .get(&id)
                    .and_then(|k| self.data_producers.get_mut(k))
                {
                    Some(p) => {
                        p.paused = paused;
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::PauseDataConsumer { id, paused, reply } => {
                let result = match self
                    .data_consumer_ids
                    .get(&id)
                    .and_then(|k| self.data_consumers.get_mut(k))
                {
                    Some(c) => {
                        c.paused = paused;
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::DataProducerStats { id, reply } => {
                let result = match self
                    .data_producer_ids
                    .get(&id)
                    .and_then(|k| self.data_producers.get(k))
                {
                    Some(p) => Ok(vec![p.stats(unix_millis())]),
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::DataConsumerStats { id, reply } => {
                let result = match self.data_consumer_ids.get(&id).copied() {
                    Some(key) => Ok(vec![self.data_consumer_stats(key)]),
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseDataProducer { id, reply } => {
                let result = match self.data_producer_ids.get(&id).copied() {
                    Some(key) => {
                        self.close_data_producer(key, CloseReason::Closed, false);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataProducer(id)),
                };
                let _ = reply.send(result);
            }
            Command::CloseDataConsumer { id, reply } => {
                let result = match self.data_consumer_ids.get(&id).copied() {
                    Some(key) => {
                        self.close_data_consumer(key, CloseReason::Closed, false);
                        Ok(())
                    }
                    None => Err(MediaError::UnknownDataConsumer(id)),
                };
                let _ = reply.send(result);
            }
            Command::Dump { reply } => {
                let _ = reply.send(self.dump());
            }
            Command::ResourceUsage { reply } => {
                let mut usage = self.usage.clone();
                if let Some((user, system)) = thread_cpu_ms() {
                    usage.cpu_user_ms = user;
                    usage.cpu_system_ms = system;
                }
                let _ = reply.send(usage);
            }
            Command::PanicTransport { id } => {
                if let Some(&key) = self.transport_ids.get(&id) {
                    self.guarded(key, socket, |_| panic!("session panic requested"));
                }
            }
            Command::Crash | Command::Close { .. } => {}
        }
    }

    /// Runs `f` for transport `key`; a panic inside closes that transport (and only it).
    fn guarded(&mut self, key: Key, socket: &UdpSocket, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            self.usage.session_errors += 1;
            let id = self
                .transports
                .get(&key)
                .map(|t| t.id.clone())
                .unwrap_or_default();
            tracing::error!(transport = %id, "session panicked; closing it");
            self.close_transport(key, CloseReason::SessionError, socket);
        }
    }

    fn with_transport<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut TransportState) -> Result<T, MediaError>,
    ) -> Result<T, MediaError> {
        let key = *self
            .transport_ids
            .get(id)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        let t = self
            .transports
            .get_mut(&key)
            .ok_or_else(|| MediaError::UnknownTransport(id.to_owned()))?;
        let result = f(t);
        self.dirty.push(key);
        result
    }

    fn create_transport(
        &mut self,
        router_id: String,
        options: WebRtcTransportOptions,
        now: Instant,
    ) -> Result<TransportCreated, MediaError> {
        let caps = self
            .routers
            .get(&router_id)
            .ok_or_else(|| MediaError::UnknownRouter(router_id.clone()))?
            .rtp_capabilities
            .clone();
        let id = crate::new_id();
        let (state, created) = TransportState::new(
            id.clone(),
            router_id.clone(),
            &caps,
            &self.cert,
            self.local_addr,
            self.announced_ip,
            &options,
            now,
        )?;
        let key = self.key();
        self.demux.add_ufrag(&state.local_ufrag, key);
        self.transports.insert(key, Box::new(state));
        self.transport_ids.insert(id, key);
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.transports.insert(key);
        }
        self.dirty.push(key);
        Ok(created)
    }

    fn produce(
        &mut self,
        transport_id: &str,
        spec: ProducerSpec,
        now: Instant,
    ) -> Result<(), MediaError> {
        let tkey = *self
            .transport_ids
            .get(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        if self.producer_ids.contains_key(&spec.id) {
            return Err(MediaError::DuplicateId(spec.id));
        }
        let t = self
            .transports
            .get_mut(&tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let mid = match spec.rtp_parameters.mid.clone() {
            Some(mid) => {
                if mid.is_empty()
                    || mid.len() > 16
                    || !mid.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return Err(MediaError::InvalidRtpParameters(format!(
                        "mid {mid:?}: up to 16 letters and digits"
                    )));
                }
                if t.medias.iter().any(|m| m.mid == mid && m.active) {
                    return Err(MediaError::InvalidRtpParameters(format!(
                        "mid {mid:?} is already in use on this transport"
                    )));
                }
                mid
            }
            None => t.allocate_mid(),
        };
        // A client may reuse the mid of a closed producer: the m-line is recycled.
        let mut params = spec.rtp_parameters.clone();
        params.mid = Some(mid.clone());
        for e in &spec.rtp_parameters.encodings {
            let taken = |ssrc: u32| t.rx_ssrc.contains_key(&ssrc);
            if e.ssrc.is_some_and(taken) || e.rtx.is_some_and(|r| taken(r.ssrc)) {
                return Err(MediaError::InvalidRtpParameters(
                    "an SSRC of these encodings is already in use on this transport".into(),
                ));
            }
        }
        let line = MediaLine {
            mid: mid.clone(),
            kind: spec.kind,
            owner: MediaOwner::Producer(0),
            rtp_parameters: params,
            active: true,
        };
        let slot = match t.medias.iter().position(|m| m.mid == mid) {
            Some(i) => {
                t.medias[i] = line;
                i
            }
            None => {
                t.medias.push(line);
                t.medias.len() - 1
            }
        };
        if let Err(e) = t.apply_offer() {
            t.medias[slot].active = false;
            return Err(e);
        }
        if t.dtls_started
            && let Err(e) = crate::numbering::check_producer_numbering(
                t.rtc.codec_config(),
                &spec.rtp_parameters,
            )
        {
            t.medias[slot].active = false;
            return Err(MediaError::Numbering(e.0));
        }
        let key = self.key();
        // Re-borrow after allocating the key.
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        t.medias[slot].owner = MediaOwner::Producer(key);
        let producer = ProducerState::new(spec, tkey, t.router_id.clone(), mid.clone());
        if producer.kind == MediaKind::Audio {
            for l in &producer.layers {
                if let Some(ssrc) = l.ssrc
                    && let Some(s) = t.rtc.direct_api().stream_rx(&ssrc.into())
                {
                    s.suppress_nack(true);
                }
            }
        }
        for (i, l) in producer.layers.iter().enumerate() {
            if let Some(ssrc) = l.ssrc {
                t.rx_ssrc.insert(ssrc, (key, i));
            }
        }
        t.producer_by_mid.insert(Mid::from(mid.as_str()), key);
        t.producers.push(key);
        if let Some(r) = self.routers.get_mut(&t.router_id) {
            r.producers.insert(key);
        }
        self.producer_ids.insert(producer.id.clone(), key);
        self.producers.insert(key, producer);
        self.dirty.push(tkey);
        let _ = now;
        Ok(())
    }

    fn pause_producer(&mut self, id: &str, paused: bool, now: Instant) -> Result<(), MediaError> {
        let key = *self
            .producer_ids
            .get(id)
            .ok_or_else(|| MediaError::UnknownProducer(id.to_owned()))?;
        let Some(p) = self.producers.get_mut(&key) else {
            return Err(MediaError::UnknownProducer(id.to_owned()));
        };
        if p.paused == paused {
            return Ok(());
        }
        p.paused = paused;
        let consumers = p.consumers.clone();
        for ckey in consumers {
            let Some(c) = self.consumers.get_mut(&ckey) else {
                continue;
            };
            c.forwarder.set_producer_paused(paused, now);
            let event = if paused {
                MediaEvent::ConsumerProducerPaused {
                    transport_id: String::new(),
                    consumer_id: c.id.clone(),
                }
            } else {
                MediaEvent::ConsumerProducerResumed {
                    transport_id: String::new(),
                    consumer_id: c.id.clone(),
                }
            };
            let tkey = c.transport;
            self.emit_on(tkey, event);
        }
        if !paused {
            self.serve_keyframe_requests(key, now);
        }
        Ok(())
    }

    fn consume(
        &mut self,
        transport_id: &str,
        id: String,
        options: ConsumerOptions,
        now: Instant,
    ) -> Result<ConsumerCreated, MediaError> {
        let tkey = *self
            .transport_ids
            .get(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let pkey = *self
            .producer_ids
            .get(&options.producer_id)
            .ok_or_else(|| MediaError::UnknownProducer(options.producer_id.clone()))?;
        let key = self.key();
        let Some(producer) = self.producers.get(&pkey) else {
            return Err(MediaError::UnknownProducer(options.producer_id.clone()));
        };
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        if producer.router_id != t.router_id {
            return Err(MediaError::CannotConsume(
                "the producer is on another router".into(),
            ));
        }
        if !sluice_ortc::can_consume(&producer.consumable, &options.rtp_capabilities)
            .map_err(|e| MediaError::CannotConsume(e.to_string()))?
        {
            return Err(MediaError::CannotConsume(
                "the device cannot receive any of the producer's codecs".into(),
            ));
        }
        // With REMB the device must not be offered transport-wide sequence numbers: a browser
        // that has them estimates on the send side and sends no REMB.
        let remb_caps;
        let caps = if t.bandwidth_estimation == BandwidthEstimation::Remb {
            let mut c = options.rtp_capabilities.clone();
            c.header_extensions
                .retain(|e| e.uri != sluice_ortc::supported::TRANSPORT_WIDE_CC_URI);
            remb_caps = c;
            &remb_caps
        } else {
            &options.rtp_capabilities
        };
        let ssrcs = &mut self.ssrcs;
        let mut params = sluice_ortc::get_consumer_rtp_parameters(
            &producer.consumable,
            caps,
            false,
            &mut || ssrcs.next_ssrc(),
        )
        .map_err(|e| MediaError::CannotConsume(e.to_string()))?;
        let mid = t.allocate_mid();
        params.mid = Some(mid.clone());
        let declared = t.declare_consumer_media(&mid, producer.kind, &mut params)?;
        let pt_map = producer
            .mapping
            .codecs
            .iter()
            .filter_map(|m| {
                declared
                    .payload_types
                    .iter()
                    .find(|(router_pt, _)| *router_pt == m.mapped_payload_type)
                    .map(|(_, sent)| (m.payload_type, *sent))
            })
            .collect();
        let main = params
            .codecs
            .iter()
            .find(|c| !c.mime_type.to_ascii_lowercase().ends_with("/rtx"));
        let mime_type = main.map_or_else(String::new, |c| c.mime_type.clone());
        let initial_seq = u64::from(rand::random::<u16>() & 0x7fff) + 1;
        let mut forwarder = Forwarder::new(
            producer.codec,
            producer.clock_rate,
            producer.kind == MediaKind::Video,
            initial_seq,
        );
        forwarder.set_producer_paused(producer.paused, now);
        if !options.paused {
            forwarder.set_paused(false, now);
        }
        let Some(t) = self.transports.get_mut(&tkey) else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        t.medias.push(MediaLine {
            mid: mid.clone(),
            kind: producer.kind,
            owner: MediaOwner::Consumer(key),
            rtp_parameters: params.clone(),
            active: true,
        });
        t.consumer_by_mid.insert(Mid::from(mid.as_str()), key);
        t.consumers.push(key);
        let producer_score = producer.score();
        let producer_scores: Vec<u8> = producer.layers.iter().map(|l| l.score).collect();
        let created = ConsumerCreated {
            kind: producer.kind,
            r#type: producer.r#type,
            rtp_parameters: params.clone(),
            producer_paused: producer.paused,
            score: ConsumerScore {
                score: 10,
                producer_score,
                producer_scores,
            },
        };
        let consumer = ConsumerState {
            id: id.clone(),
            producer: pkey,
            producer_id: options.producer_id.clone(),
            transport: tkey,
            kind: producer.kind,
            r#type: producer.r#type,
            mid,
            ssrc: declared.ssrc,
            rtx_ssrc: declared.rtx,
            mime_type,
            pt_map,
            forwarder,
            preferred_layers: options.preferred_layers,
            priority: options.priority.max(1),
            reported_layers: None,
            rate: RateCalculator::new(Duration::from_secs(1)),
            packets: 0,
            bytes: 0,
            score: 10,
            fraction_lost: 0,
            nacks: 0,
            plis: 0,
            firs: 0,
            last_score: None,
        };
        if let Some(p) = self.producers.get_mut(&pkey) {
            p.consumers.push(key);
        }
        self.consumer_ids.insert(id, key);
        self.consumers.insert(key, consumer);
        self.update_layers(key, now);
        self.serve_consumer_keyframe_request(key, now);
        self.dirty.push(tkey);
        Ok(created)
    }

    fn consumer_op(&mut self, id: &str, op: ConsumerOp, now: Instant) -> Result<(), MediaError> {
        let key = *self
            .consumer_ids
            .get(id)
            .ok_or_else(|| MediaError::UnknownConsumer(id.to_owned()))?;
        let Some(c) = self.consumers.get_mut(&key) else {
            return Err(MediaError::UnknownConsumer(id.to_owned()));
        };
        match op {
            ConsumerOp::Pause => c.forwarder.set_paused(true, now),
            ConsumerOp::Resume => c.forwarder.set_paused(false, now),
            ConsumerOp::SetPreferredLayers(layers) => {
                c.preferred_layers = Some(layers);
                self.update_layers(key, now);
            }
            ConsumerOp::SetPriority(priority) => c.priority = priority.max(1),
            ConsumerOp::RequestKeyFrame => c.forwarder.request_keyframe(now),
            ConsumerOp::Close => {
                self.close_consumer(key, CloseReason::Closed, false);
                return Ok(());
            }
        }
        self.serve_consumer_keyframe_request(key, now);
        self.report_layers(key);
        Ok(())
    }

    fn consumer_dump(&self, key: Key) -> ConsumerDump {
        let c = &self.consumers[&key];
        let producer = self.producers.get(&c.producer);
        ConsumerDump {
            id: c.id.clone(),
            producer_id: c.producer_id.clone(),
            paused: c.forwarder.is_paused(),
            producer_paused: c.forwarder.is_producer_paused(),
            priority: c.priority,
            preferred_layers: c.preferred_layers,
            current_layers: c.current_layers(),
            score: ConsumerScore {
                score: c.score,
                producer_score: producer.map_or(0, |p| p.score()),
                producer_scores: producer
                    .map(|p| p.layers.iter().map(|l| l.score).collect())
                    .unwrap_or_default(),
            },
        }
    }

    fn router_dump(&self, id: &str) -> Result<RouterDump, MediaError> {
        let r = self
            .routers
            .get(id)
            .ok_or_else(|| MediaError::UnknownRouter(id.to_owned()))?;
        let mut transport_ids = Vec::new();
        let mut producer_ids = Vec::new();
        let mut consumer_ids = Vec::new();
        for tkey in &r.transports {
            let Some(t) = self.transports.get(tkey) else {
                continue;
            };
            transport_ids.push(t.id.clone());
            producer_ids.extend(
                t.producers
                    .iter()
                    .filter_map(|k| self.producers.get(k).map(|p| p.id.clone())),
            );
            consumer_ids.extend(
                t.consumers
                    .iter()
                    .filter_map(|k| self.consumers.get(k).map(|c| c.id.clone())),
            );
        }
        let mut data_producer_ids: Vec<String> = r
            .data_producers
            .iter()
            .filter_map(|k| self.data_producers.get(k).map(|p| p.id.clone()))
            .collect();
        let mut data_consumer_ids: Vec<String> = self
            .data_consumers
            .values()
            .filter(|c| r.data_producers.contains(&c.data_producer))
            .map(|c| c.id.clone())
            .collect();
        for d in self.directs.values().filter(|d| d.router_id == id) {
            transport_ids.push(d.id.clone());
        }
        transport_ids.sort();
        producer_ids.sort();
        consumer_ids.sort();
        data_producer_ids.sort();
        data_consumer_ids.sort();
        Ok(RouterDump {
            id: id.to_owned(),
            transport_ids,
            producer_ids,
            consumer_ids,
            data_producer_ids,
            data_consumer_ids,
        })
    }

    fn dump(&self) -> WorkerDump {
        let (ufrag_entries, address_entries) = self.demux.entries();
        let mut router_ids: Vec<String> = self.routers.keys().cloned().collect();
        router_ids.sort();
        WorkerDump {
            index: self.index,
            local_addr: self.local_addr.to_string(),
            router_ids,
            transports: self.transports.len() + self.directs.len(),
            producers: self.producers.len(),
            consumers: self.consumers.len(),
            data_producers: self.data_producers.len(),
            data_consumers: self.data_consumers.len(),
            ufrag_entries,
            address_entries,
            timers: self.timers.len(),
        }
    }

    // ---- close cascade -------------------------------------------------------------------

    fn emit_on(&self, tkey: Key, mut event: MediaEvent) {
        if let Some(t) = self.transports.get(&tkey) {
            set_transport_id(&mut event, &t.id);
            t.emit(event);
        }
    }

    /// Closes a consumer. `notify`: report it on its transport (it did not close by its handle).
    fn close_consumer(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(c) = self.consumers.remove(&key) else {
            return;
        };
        self.consumer_ids.remove(&c.id);
        if let Some(p) = self.producers.get_mut(&c.producer) {
            p.consumers.retain(|k| *k != key);
        }
        if let Some(t) = self.transports.get_mut(&c.transport) {
            t.consumers.retain(|k| *k != key);
            let mid = Mid::from(c.mid.as_str());
            t.consumer_by_mid.remove(&mid);
            if let Some(m) = t.medias.iter_mut().find(|m| m.mid == c.mid) {
                m.active = false;
            }
            t.rtc.direct_api().remove_stream_tx(c.ssrc.into());
            self.dirty.push(c.transport);
        }
        if notify {
            self.emit_on(
                c.transport,
                MediaEvent::ConsumerClosed {
                    transport_id: String::new(),
                    consumer_id: c.id,
                    reason,
                },
            );
        }
    }

    /// Closes a producer and (with `ProducerClosed`) its consumers.
    fn close_producer(&mut self, key: Key, reason: CloseReason, notify: bool) {
        let Some(p) = self.producers.remove(&key) else {
            return;
        };
        self.producer_ids.remove(&p.id);
        for ckey in &p.consumers {
            self.close_consumer(*ckey, CloseReason::ProducerClosed, true);
        }
        if let Some(r) = self.routers.get_mut(&p.router_id) {
            r.producers.remove(&key);
        }
        if let Some(t) = self.transports.get_mut(&p.transport) {
            t.producers.retain(|k| *k != key);
            t.producer_by_mid.remove(&Mid::from(p.mid.as_str()));
            t.rx_ssrc.retain(|_, (pk, _)| *pk != key);
            if let Some(m) = t.medias.iter_mut().find(|m| m.mid == p.mid) {
                m.active = false;
            }
            for l in &p.layers {
                if let Some(ssrc) = l.ssrc {
                    t.rtc.direct_api().remove_stream_rx(ssrc.into());
                }
            }
        }
        if notify {
            self.emit_on(
                p.transport,
                MediaEvent::ProducerClosed {
                    transport_id: String::new(),
                    producer_id: p.id,
                    reason,
                },
            );
        }
    }

    /// Closes a transport, its producers and its consumers.
    fn close_transport(&mut self, key: Key, reason: CloseReason, socket: &UdpSocket) {
        let Some(t) = self.transports.get(&key) else {
            return;
        };
        let notify = reason != CloseReason::Closed;
        let producers = t.producers.clone();
        let consumers = t.consumers.clone();
        let data_producers = t.data_producers.clone();
        let data_consumers = t.data_consumers.clone();
        for dkey in data_consumers {
            self.close_data_consumer(dkey, CloseReason::TransportClosed, notify);
        }
        for dkey in data_producers {
            self.close_data_producer(dkey, CloseReason::TransportClosed, notify);
        }
        for ckey in consumers {
            self.close_consumer(ckey, CloseReason::TransportClosed, notify);
        }
        for pkey in producers {
            self.close_producer(pkey, CloseReason::TransportClosed, notify);
        }
        let Some(mut t) = self.transports.remove(&key) else {
            return;
        };
        self.transport_ids.remove(&t.id);
        self.demux.remove_transport(key);
        if let Some(deadline) = t.next_timeout.take() {
            self.timers.remove(&(deadline, key));
        }
        if let Some(r) = self.routers.get_mut(&t.router_id) {
            r.transports.remove(&key);
        }
        // Say goodbye (DTLS close_notify, RTCP BYE) where str0m has something to send.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = t.rtc.close();
            for _ in 0..16 {
                match t.rtc.poll_output() {
                    Ok(Output::Transmit(tx)) => {
                        let _ = socket.try_send_to(&tx.contents, tx.destination);
                    }
                    Ok(Output::Event(_)) => {}
                    _ => break,
                }
            }
        }));
        if notify {
            t.emit(MediaEvent::IceStateChange {
                transport_id: t.id.clone(),
                state: crate::webrtc_transport::IceState::Closed,
            });
            t.emit(MediaEvent::DtlsStateChange {
                transport_id: t.id.clone(),
                state: DtlsState::Closed,
            });
            t.emit(MediaEvent::TransportClosed {
                transport_id: t.id.clone(),
                reason,
            });
        }
    }

    fn close_router(&mut self, id: &str, reason: CloseReason, socket: &UdpSocket) {
        let Some(r) = self.routers.get(id) else {
            return;
        };
        let transports: Vec<Key> = r.transports.iter().copied().collect();
        let transport_reason = if reason == CloseReason::Closed {
            CloseReason::RouterClosed
        } else {
            reason
        };
        let directs: Vec<Key> = self
            .directs
            .iter()
            .filter(|(_, d)| d.router_id == id)
            .map(|(k, _)| *k)
            .collect();
        for dkey in directs {
            self.close_direct_transport(dkey, transport_reason);
        }
        for tkey in transports {
            self.close_transport(tkey, transport_reason, socket);
        }
        self.routers.remove(id);
    }

    fn close_all(&mut self, reason: CloseReason, socket: &UdpSocket) {
        let ids: Vec<String> = self.routers.keys().cloned().collect();
        for id in ids {
            self.close_router(&id, reason, socket);
        }
    }

    // ---- data channels -------------------------------------------------------------------

    fn create_direct_transport(
        &mut self,
        router_id: String,
        events: Option<EventSender>,
    ) -> Result<String, MediaError> {
        if !self.routers.contains_key(&router_id) {
            return Err(MediaError::UnknownRouter(router_id));
        }
        let id = crate::new_id();
        let key = self.key();
        self.directs.insert(
            key,
            DirectTransportState {
                id: id.clone(),
                router_id,
                events,
                data_producers: Vec::new(),
                data_consumers: Vec::new(),
            },
        );
        self.transport_ids.insert(id.clone(), key);
        Ok(id)
    }

    fn router_of(&self, tkey: Key) -> Option<String> {
        self.transports
            .get(&tkey)
            .map(|t| t.router_id.clone())
            .or_else(|| self.directs.get(&tkey).map(|d| d.router_id.clone()))
    }

    fn produce_data(
        &mut self,
        transport_id: &str,
        id: String,
        options: DataProducerOptions,
        now: Instant,
    ) -> Result<(), MediaError> {
        let tkey = *self
            .transport_ids
            .get(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        if self.data_producer_ids.contains_key(&id) {
            return Err(MediaError::DuplicateId(id));
        }
        let router_id = self
            .router_of(tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let key = self.key();
        let mut channel = None;
        let mut stream = options.sctp_stream_parameters.clone();
        if let Some(t) = self.transports.get_mut(&tkey) {
            let Some(params) = stream.as_mut() else {
                return Err(MediaError::InvalidSctpParameters(
                    "sctpStreamParameters are required on a WebRTC transport".into(),
                ));
            };
            sluice_ortc::validate_sctp_stream_parameters(params)
                .map_err(|e| MediaError::InvalidSctpParameters(e.to_string()))?;
            let streams = t
                .sctp_streams
                .as_mut()
                .ok_or_else(|| MediaError::SctpDisabled(transport_id.to_owned()))?;
            streams.reserve(params.stream_id).map_err(|e| {
                MediaError::InvalidSctpParameters(format!("stream {}: {e}", params.stream_id))
            })?;
            let partial = params.max_packet_life_time.is_some() || params.max_retransmits.is_some();
            params.ordered = Some(params.ordered.unwrap_or(!partial));
            let config = channel_config(params, &options.label, &options.protocol);
            let cid = t.rtc.direct_api().create_data_channel(config);
            t.data_by_channel.insert(cid, DataOwner::Producer(key));
            t.data_producers.push(key);
            channel = Some(cid);
            self.dirty.push(tkey);
        } else if let Some(d) = self.directs.get_mut(&tkey) {
            stream = None;
            d.data_producers.push(key);
        }
        if let Some(r) = self.routers.get_mut(&router_id) {
            r.data_producers.insert(key);
        }
        self.data_producer_ids.insert(id.clone(), key);
        self.data_producers.insert(
            key,
            DataProducerState {
                id,
                transport: tkey,
                router_id,
                stream,
                channel,
                label: options.label,
                protocol: options.protocol,
                paused: options.paused,
                consumers: Vec::new(),
                max_message_size: options.max_message_size,
                limiter: options
                    .max_messages_per_second
                    .map(|rate| RateLimiter::new(rate, now)),
                messages: 0,
                bytes: 0,
                dropped_oversize: 0,
                dropped_rate: 0,
            },
        );
        Ok(())
    }

    fn consume_data(
        &mut self,
        transport_id: &str,
        id: String,
        options: DataConsumerOptions,
    ) -> Result<DataConsumerCreated, MediaError> {
        let tkey = *self
            .transport_ids
            .get(transport_id)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let pkey = *self
            .data_producer_ids
            .get(&options.data_producer_id)
            .ok_or_else(|| MediaError::UnknownDataProducer(options.data_producer_id.clone()))?;
        let router_id = self
            .router_of(tkey)
            .ok_or_else(|| MediaError::UnknownTransport(transport_id.to_owned()))?;
        let Some(producer) = self.data_producers.get(&pkey) else {
            return Err(MediaError::UnknownDataProducer(options.data_producer_id));
        };
        if producer.router_id != router_id {
            return Err(MediaError::CannotConsume(
                "the data producer is on another router".into(),
            ));
        }
        let base = producer.stream.clone().unwrap_or_default();
        let label = producer.label.clone();
        let protocol = producer.protocol.clone();
        let key = self.key();
        let (sink, params, receiver, reliable) = if let Some(t) = self.transports.get_mut(&tkey) {
            let streams = t
                .sctp_streams
                .as_mut()
                .ok_or_else(|| MediaError::SctpDisabled(transport_id.to_owned()))?;
            let stream_id = streams
                .allocate()
                .map_err(|e| MediaError::Limit(format!("SCTP streams of this transport: {e}")))?;
            let mut params =
                sluice_ortc::get_data_consumer_sctp_stream_parameters(&base, stream_id);
            if options.ordered.is_some()
                || options.max_packet_life_time.is_some()
                || options.max_retransmits.is_some()
            {
                params.max_packet_life_time = options.max_packet_life_time;
                params.max_retransmits = options.max_retransmits;
                let partial =
                    params.max_packet_life_time.is_some() || params.max_retransmits.is_some();
                params.ordered = Some(options.ordered.unwrap_or(!partial));
            }
            let reliable =
                params.max_packet_life_time.is_none() && params.max_retransmits.is_none();
            let cid = t
                .rtc
                .direct_api()
                .create_data_channel(channel_config(&params, &label, &protocol));
            t.data_by_channel.insert(cid, DataOwner::Consumer(key));
            t.data_consumers.push(key);
            self.dirty.push(tkey);
            (
                DataSink::Sctp {
                    stream_id,
                    channel: cid,
                },
                Some(params),
                None,
                reliable,
            )
        } else if let Some(d) = self.directs.get_mut(&tkey) {
            let reliable = options.max_packet_life_time.is_none()
                && options.max_retransmits.is_none()
                && base.max_packet_life_time.is_none()
                && base.max_retransmits.is_none();
            let limit = options.queue_limit.unwrap_or(if reliable {
                DEFAULT_QUEUE_LIMIT
            } else {
                DEFAULT_UNRELIABLE_QUEUE_LIMIT
            });
            let receiver = DataReceiver::new(reliable, limit);
            d.data_consumers.push(key);
            (
                DataSink::Direct(receiver.clone()),
                None,
                Some(receiver),
                reliable,
            )
        } else {
            return Err(MediaError::UnknownTransport(transport_id.to_owned()));
        };
        let limit = options.queue_limit.unwrap_or(if reliable {
            DEFAULT_QUEUE_LIMIT
        } else {
            DEFAULT_UNRELIABLE_QUEUE_LIMIT
        });
        if let Some(p) = self.data_producers.get_mut(&pkey) {
            p.consumers.push(key);
        }
        self.data_consumer_ids.insert(id.clone(), key);
        self.data_consumers.insert(
            key,
            DataConsumerState {
                id,
                data_producer: pkey,
                transport: tkey,
                label: label.clone(),
                protocol: protocol.clone(),
                paused: options.paused,
                sink,
                queue: SendQueue::new(reliable, limit),
                max_buffered: if reliable {
                    RELIABLE_SCTP_BUFFER
                } else {
                    UNRELIABLE_SCTP_BUFFER
                },
                messages: 0,
                bytes: 0,
                last_buffered: 0,
                backed_up: false,
            },
        );
        Ok(DataConsumerCreated {
            sctp_stream_parameters: params,
            label,
            protocol,
            receiver,
        })
    }

    /// Relays one message of data producer `pkey` to its data consumers.
    fn relay_data(&mut self, pkey: Key, message: DataMessage, now: Instant) {
        let Some(p) = self.data_producers.get_mut(&pkey) else {
            return;
        };
        if !p.admit(message.data.len(), now) {
            tracing::debug!(data_producer = %p.id, len = message.data.len(), "data message dropped (size or rate limit)");
            return;
        }
        if p.paused {
            return;
        }
        let consumers = p.consumers.clone();
        let last = consumers.len().saturating_sub(1);
        let mut message = Some(message);
        for (i, dkey) in consumers.into_iter().enumerate() {
            let m = if i == last {
                message.take()
            } else {
                message.clone()
            };
            if let Some(m) = m {
                self.deliver(dkey, m);
            }
        }
    }

    fn deliver(&mut self, dkey: Key, message: DataMessage) {
        let WorkerState {
            data_consumers,
            transports,
            dirty,
            ..
        } = self;
        let Some(c) = data_consumers.get_mut(&dkey) else {
            return;
        };
        if c.paused {
            return;
        }
        let len = message.data.len() as u64;
        match &c.sink {
            DataSink::Direct(receiver) => {
                if receiver.push(message) != Pushed::Full {
                    c.messages += 1;
                    c.bytes += len;
                }
            }
            DataSink::Sctp { channel, .. } => {
                if message.data.is_empty() {
                    // str0m 0.25 writes no chunk for an empty message yet advances the stream
                    // sequence number, which would stall an ordered stream: drop it, counted.
                    c.queue.dropped += 1;
                    return;
                }
                let Some(t) = transports.get_mut(&c.transport) else {
                    return;
                };
                if c.queue.is_empty() && try_write(t, *channel, &message, c.max_buffered) {
                    c.messages += 1;
                    c.bytes += len;
                } else {
                    if c.queue.push(message) == Pushed::Full {
                        tracing::debug!(data_consumer = %c.id, "data consumer full: message dropped");
                    }
                    c.backed_up = true;
                }
                dirty.push(c.transport);
            }
        }
    }

    /// Sends what a data consumer queued while SCTP had no room.
    fn flush_data_consumer(&mut self, dkey: Key) {
        let Some(c) = self.data_consumers.get_mut(&dkey) else {
            return;
        };
        let DataSink::Sctp { channel, .. } = c.sink else {
            return;
        };
        let Some(t) = self.transports.get_mut(&c.transport) else {
            return;
        };
        while let Some(m) = c.queue.front() {
            if !try_write(t, channel, m, c.max_buffered) {
                break;
            }
            c.messages += 1;
            c.bytes += m.data.len() as u64;
            c.queue.pop();
        }
        c.last_buffered = t
            .rtc
            .channel(channel)
            .map_or(0, |mut ch| ch.buffered_amount());
        self.dirty.push(c.transport);
        if c.queue.is_empty() && c.backed_up {
            c.backed_up = false;
            let event = MediaEvent::DataConsumerBufferedAmountLow {
                transport_id: t.id.clone(),
                data_consumer_id: c.id.clone(),
                buffered_amount: c.last_buffered,
            };
            t.emit(event);
        }
    }

    fn data_consumer_stats(&mut self, dkey: Key) -> DataConsumerStat {
        let Some(c) = self.data_consumers.get(&dkey) else {
            return DataConsumerStat {
                kind: "data-consumer",
                timestamp: unix_millis(),
                label: String::new(),
                protocol: String::new(),
                messages_sent: 0,
                bytes_sent: 0,
                buffered_amount: 0,
                queued_bytes: 0,
                dropped: 0,
            };
        };
        let (buffered, queued, dropped) = match &c.sink {
            DataSink::Direct(r) => (0, r.queued_bytes(), r.dropped()),
            DataSink::Sctp { channel, .. } => {
                let buffered = self
                    .transports
                    .get_mut(&c.transport)
                    .and_then(|t| t.rtc.channel(*channel).map(|mut ch| ch.buffered_amount()))
                    .unwrap_or(0);
                (buffered, c.queue.bytes(), c.queue.dropped)
            }
        };
        DataConsumerStat {
            kind: "data-consumer",
            timestamp: unix_millis(),
            label: c.label.clone(),
            protocol: c.protocol.clone(),
            messages_sent: c.messages,
            bytes_sent: c.bytes,
            buffered_amount: buffered,
            queued_bytes: queued,
            dropped,
        }
    }

    fn emit_on_any(&self, tkey: Key, mut event: MediaEvent) {
        if let Some(t) = self.transports.get(&tkey) {
            set_transport_id(&mut event, &t.id);
            t.emit(event);
        } else if let Some(d) = self.directs.get(&tkey) {
            set_transport_id(&mut event, &d.id);
            if let Some(events) = &d.events {
                let _ = events.send(event);
            }
        }
    }

    fn close_data_consumer(&mut self, dkey: Key, reason: CloseReason, notify: bool) {
        let Some(c) = self.data_consumers.remove(&dkey) else {
            return;
        };
        self.data_consumer_ids.remove(&c.id);
        if let Some(p) = self.data_producers.get_mut(&c.data_producer) {
            p.consumers.retain(|k| *k != dkey);
        }
        match &c.sink {
            DataSink::Direct(receiver) => {
                receiver.close();
                if let Some(d) = self.directs.get_mut(&c.transport) {
                    d.data_consumers.retain(|k| *k != dkey);
                }
            }
            DataSink::Sctp { stream_id, channel } => {
                if let Some(t) = self.transports.get_mut(&c.transport) {
                    t.data_consumers.retain(|k| *k != dkey);
                    t.data_by_channel.remove(channel);
                    if let Some(streams) = t.sctp_streams.as_mut() {
                        streams.release(*stream_id);
                    }
                    if reason != CloseReason::RemoteClosed {
                        t.rtc.direct_api().close_data_channel(*channel);
                    }
                    self.dirty.push(c.transport);
                }
            }
        }
        if notify {
            self.emit_on_any(
                c.transport,
                MediaEvent::DataConsumerClosed {
                    transport_id: String::new(),
                    data_consumer_id: c.id,
                    reason,
                },
            );
        }
    }

    fn close_data_producer(&mut self, pkey: Key, reason: CloseReason, notify: bool) {
        let Some(p) = self.data_producers.remove(&pkey) else {
            return;
        };
        self.data_producer_ids.remove(&p.id);
        for dkey in &p.consumers {
            self.close_data_consumer(*dkey, CloseReason::ProducerClosed, true);
        }
        if let Some(r) = self.routers.get_mut(&p.router_id) {
            r.data_producers.remove(&pkey);
        }
        if let Some(t) = self.transports.get_mut(&p.transport) {
            t.data_producers.retain(|k| *k != pkey);
            if let Some(cid) = p.channel {
                t.data_by_channel.remove(&cid);
                if reason != CloseReason::RemoteClosed {
                    t.rtc.direct_api().close_data_channel(cid);
                }
            }
            if let (Some(streams), Some(stream)) = (t.sctp_streams.as_mut(), p.stream.as_ref()) {
                streams.release(stream.stream_id);
            }
            self.dirty.push(p.transport);
        } else if let Some(d) = self.directs.get_mut(&p.transport) {
            d.data_producers.retain(|k| *k != pkey);
        }
        if notify {
            self.emit_on_any(
                p.transport,
                MediaEvent::DataProducerClosed {
                    transport_id: String::new(),
                    data_producer_id: p.id,
                    reason,
                },
            );
        }
    }

    fn close_direct_transport(&mut self, key: Key, reason: CloseReason) {
        let Some(d) = self.directs.get(&key) else {
            return;
        };
        let notify = reason != CloseReason::Closed;
        let consumers = d.data_consumers.clone();
        let producers = d.data_producers.clone();
        for k in consumers {
            self.close_data_consumer(k, CloseReason::TransportClosed, notify);
        }
        for k in producers {
            self.close_data_producer(k, CloseReason::TransportClosed, notify);
        }
        if let Some(d) = self.directs.remove(&key) {
            self.transport_ids.remove(&d.id);
            if notify && let Some(events) = &d.events {
                let _ = events.send(MediaEvent::TransportClosed {
                    transport_id: d.id.clone(),
                    reason,
                });
            }
        }
    }

    // ---- network input -------------------------------------------------------------------

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant, socket: &UdpSocket) {
        self.usage.datagrams_received += 1;
        self.usage.bytes_received += data.len() as u64;
        let kind = DatagramKind::of(data);
        let key = match self.demux.by_addr(&from) {
            Some(key) => Some(key),
            None if kind == DatagramKind::Stun => str0m::ice::StunMessage::parse(data)
                .ok()
                .filter(|m| m.is_binding_request())
                .and_then(|m| m.split_username().map(|(local, _)| local.to_owned()))
                .and_then(|local| self.demux.by_ufrag(&local)),
            None => None,
        };
        let Some(key) = key else {
            self.usage.dropped_unknown_source += 1;
            return;
        };
        let Some(t) = self.transports.get_mut(&key) else {
            self.usage.dropped_unknown_source += 1;
            return;
        };
        if kind == DatagramKind::Stun
            && let Ok(m) = str0m::ice::StunMessage::parse(data)
            && m.is_binding_request()
            && let Some((local, remote)) = m.split_username()
        {
            if local != t.local_ufrag {
                // An old ufrag after an ICE restart, or a stray request.
                self.usage.dropped_unknown_source += 1;
                return;
            }
            t.learn_remote_ufrag(remote);
        }
        let Ok(receive) = Receive::new(Protocol::Udp, from, t.local_addr, data) else {
            self.usage.dropped_malformed += 1;
            return;
        };
        t.bytes_received += data.len() as u64;
        t.packets_received += 1;
        if let Some(capture) = t.peer_certificate.as_mut()
            && kind == DatagramKind::Dtls
        {
            capture.on_datagram(data);
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            t.rtc.handle_input(Input::Receive(now, receive))
        }));
        match result {
            Ok(Ok(())) => self.drain(key, now, socket),
            Ok(Err(e)) => {
                tracing::debug!(transport = %t.id, error = %e, "input refused");
                self.usage.dropped_malformed += 1;
                if matches!(e, str0m::RtcError::Dtls(_)) {
                    t.dtls_state = DtlsState::Failed;
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Failed,
                    });
                    self.close_transport(key, CloseReason::DtlsFailed, socket);
                } else {
                    self.drain(key, now, socket);
                }
            }
            Err(_) => {
                self.usage.session_errors += 1;
                tracing::error!(transport = %t.id, "session panicked; closing it");
                self.close_transport(key, CloseReason::SessionError, socket);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant, socket: &UdpSocket) {
        while let Some(&(deadline, key)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.remove(&(deadline, key));
            let Some(t) = self.transports.get_mut(&key) else {
                continue;
            };
            t.next_timeout = None;
            self.usage.timeouts += 1;
            let result = catch_unwind(AssertUnwindSafe(|| t.rtc.handle_input(Input::Timeout(now))));
            match result {
                Ok(_) => self.drain(key, now, socket),
                Err(_) => {
                    self.usage.session_errors += 1;
                    self.close_transport(key, CloseReason::SessionError, socket);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, _socket: &UdpSocket) {
        let keys: Vec<Key> = self.consumers.keys().copied().collect();
        for key in keys {
            self.update_layers(key, now);
            self.serve_consumer_keyframe_request(key, now);
        }
        let transports: Vec<Key> = self.transports.keys().copied().collect();
        for key in transports {
            self.update_bwe_targets(key, now);
        }
        self.observe_speakers(now);
        let backed_up: Vec<Key> = self
            .data_consumers
            .iter()
            .filter(|(_, c)| !c.queue.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in backed_up {
            self.flush_data_consumer(key);
        }
    }

    /// Reports each router's loudest audio producer when it changes.
    fn observe_speakers(&mut self, now: Instant) {
        let WorkerState {
            routers, producers, ..
        } = self;
        for (router_id, r) in routers.iter_mut() {
            let Some(change) = r.speaker.interval(now) else {
                continue;
            };
            let Some(events) = &r.events else {
                continue;
            };
            let event = match change {
                Some((pkey, volume)) => match producers.get(&pkey) {
                    Some(p) => MediaEvent::ActiveSpeaker {
                        router_id: router_id.clone(),
                        producer_id: Some(p.id.clone()),
                        volume: Some(volume),
                    },
                    None => continue,
                },
                None => MediaEvent::ActiveSpeaker {
                    router_id: router_id.clone(),
                    producer_id: None,
                    volume: None,
                },
            };
            let _ = events.send(event);
        }
    }

    /// Records what this transport's consumers would send at their preferred layers (reported
    /// with each estimate, as mediasoup's `desiredBitrate`), and with TWCC tells str0m's
    /// estimator what they send now (the minimum to sustain) and that desired bitrate plus
    /// headroom (the capacity to probe for), as str0m advises an SFU to.
    fn update_bwe_targets(&mut self, tkey: Key, now: Instant) {
        let Some(t) = self.transports.get(&tkey) else {
            return;
        };
        if t.bandwidth_estimation == BandwidthEstimation::Off || t.consumers.is_empty() {
            return;
        }
        let (mut current, mut desired) = (0u64, 0u64);
        for ckey in &t.consumers {
            let Some(c) = self.consumers.get(ckey) else {
                continue;
            };
            if !c.forwarder.is_active() {
                continue;
            }
            let Some(p) = self.producers.get(&c.producer) else {
                continue;
            };
            let statuses = p.layer_statuses(now);
            let (target, _) = c.forwarder.target_layers();
            let preferred = c
                .preferred_layers
                .map_or(statuses.len().saturating_sub(1), |l| {
                    usize::from(l.spatial_layer)
                });
            let live_best = statuses
                .iter()
                .enumerate()
                .filter(|(i, s)| s.active && *i <= preferred)
                .map(|(_, s)| s.bitrate)
                .next_back()
                .unwrap_or(0);
            current += statuses.get(target).map_or(0, |s| s.bitrate);
            desired += live_best;
        }
        // Ask for a little more than needed, so the estimate clears the upgrade headroom.
        let effective = (desired as f64 * crate::layers::UPGRADE_HEADROOM * 1.1) as u64;
        let Some(t) = self.transports.get_mut(&tkey) else {
            return;
        };
        t.desired_bitrate = desired;
        t.effective_desired_bitrate = effective;
        if desired == 0 || t.bandwidth_estimation != BandwidthEstimation::Twcc {
            return;
        }
        t.rtc.bwe().set_bitrate(
            str0m::bwe::Bitrate::bps(current.min(effective)),
            str0m::bwe::Bitrate::bps(effective),
        );
        self.dirty.push(tkey);
    }

    /// Polls every transport with pending output until all are idle.
    fn flush(&mut self, socket: &UdpSocket) {
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 64 {
            rounds += 1;
            let now = Instant::now();
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty {
                self.drain(key, now, socket);
            }
        }
    }

    /// Polls one transport's output: sends its datagrams, handles its events, arms its timer.
    fn drain(&mut self, key: Key, now: Instant, socket: &UdpSocket) {
        let mut events = Vec::new();
        let mut requeue = false;
        let result = {
            let Some(t) = self.transports.get_mut(&key) else {
                return;
            };
            let usage = &mut self.usage;
            let demux = &mut self.demux;
            let timers = &mut self.timers;
            catch_unwind(AssertUnwindSafe(|| {
                let mut immediate = 0;
                loop {
                    match t.rtc.poll_output() {
                        Ok(Output::Transmit(tx)) => {
                            // A binding success response: str0m checked the request's integrity,
                            // so the address is now a validated tuple of this transport.
                            if tx.contents.len() >= 2
                                && tx.contents[0] == 0x01
                                && tx.contents[1] == 0x01
                            {
                                demux.validate_addr(tx.destination, key);
                                if t.selected_remote != Some(tx.destination) {
                                    t.selected_remote = Some(tx.destination);
                                    t.emit(MediaEvent::IceSelectedTupleChange {
                                        transport_id: t.id.clone(),
                                        remote: tx.destination,
                                    });
                                }
                            }
                            match socket.try_send_to(&tx.contents, tx.destination) {
                                Ok(n) => {
                                    usage.datagrams_sent += 1;
                                    usage.bytes_sent += n as u64;
                                    t.bytes_sent += n as u64;
                                    t.packets_sent += 1;
                                }
                                Err(_) => usage.send_errors += 1,
                            }
                        }
                        // The peer is checked before anything after the handshake is polled,
                        // so nothing is sent to a peer that fails.
                        Ok(Output::Event(Event::Connected)) => {
                            if let Err(why) = t.verify_peer() {
                                break Ok(Some(why));
                            }
                            events.push(Event::Connected);
                        }
                        Ok(Output::Event(e)) => events.push(e),
                        Ok(Output::Timeout(deadline)) => {
                            // Written media leaves str0m only on a timeout: give it at once
                            // rather than through the timer (no wake-up, no timer latency).
                            // With TWCC, str0m's pacer asks for one 1 µs after each packet it
                            // releases; the timer (1 ms resolution) would hold every further
                            // packet of a frame ≈1.1 ms, so a deadline that close is run now,
                            // at itself.
                            let due = due_now(deadline, now);
                            if let Some(at) = due
                                && immediate < 16
                            {
                                immediate += 1;
                                usage.timeouts += 1;
                                if let Err(e) = t.rtc.handle_input(Input::Timeout(at)) {
                                    break Err(e);
                                }
                                continue;
                            }
                            if t.next_timeout != Some(deadline) {
                                if let Some(old) = t.next_timeout.take() {
                                    timers.remove(&(old, key));
                                }
                                t.next_timeout = Some(deadline);
                                timers.insert((deadline, key));
                            }
                            // Still due after its share of immediate timeouts (str0m's pacer
                            // wants one around every packet with TWCC, so a keyframe burst
                            // needs many): drained again in this flush after the others, not
                            // a timer tick (≥ 1 ms) later.
                            requeue = due.is_some();
                            break Ok(None);
                        }
                        Err(e) => break Err(e),
                    }
                }
            }))
        };
        match result {
            Ok(Ok(None)) => {
                if requeue {
                    self.dirty.push(key);
                }
            }
            Ok(Ok(Some(why))) => {
                if let Some(t) = self.transports.get_mut(&key) {
                    tracing::warn!(transport = %t.id, reason = %why, "DTLS peer refused");
                    t.dtls_state = DtlsState::Failed;
                    t.emit(MediaEvent::DtlsStateChange {
                        transport_id: t.id.clone(),
                        state: DtlsState::Failed,
                    });
                }
                self.close_transport(key, CloseReason::DtlsFailed, socket);
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "transport output error; closing it");
                self.close_transport(key, CloseReason::SessionError, socket);
                return;
            }
            Err(_) => {
                self.usage.session_errors += 1;
                self.close_transport(key, CloseReason::SessionError, socket);
                return;
            }
        }
        for event in events {
            let mut close = None;
            self.guarded(key, socket, |s| close = s.on_event(key, event, now));
            if let Some(reason) = close {
                self.close_transport(key, reason, socket);
            }
            if !self.transports.contains_key(&key) {
                return;
            }
        }
    }

    /// Handles one str0m event of transport `key`; `Some(reason)` closes the transport.
    fn on_event(&mut self, key: Key, event: Event, now: Instant) -> Option<CloseReason> {
        match event {
            Event::RtpPacket(packet) => self.forward(key, packet, now),
            Event::IceConnectionStateChange(state) => {
                let t = self.transports.get_mut(&key)?;
                if let Some(state) = t.set_ice_state(state) {
                    t.emit(MediaEvent::IceStateChange {
                        transport_id: t.id.clone(),
                        state,
                    });
                }
            }
            Event::Connected => {
                let t = self.transports.get_mut(&key)?;
                t.dtls_state = DtlsState::Connected;
                t.emit(MediaEvent::DtlsStateChange {
                    transport_id: t.id.clone(),
                    state: DtlsState::Connected,
                });
            }
            Event::KeyframeRequest(req) => {
                let t = self.transports.get(&key)?;
                let ckey = *t.consumer_by_mid.get(&req.mid)?;
                if let Some(c) = self.consumers.get_mut(&ckey) {
                    match req.kind {
                        KeyframeRequestKind::Pli => c.plis += 1,
                        KeyframeRequestKind::Fir => c.firs += 1,
                    }
                    c.forwarder.request_keyframe(now);
                }
                self.serve_consumer_keyframe_request(ckey, now);
            }
            Event::StreamPaused(paused) => {
                let t = self.transports.get(&key)?;
                let (pkey, layer) = *t.rx_ssrc.get(&*paused.ssrc)?;
                let p = self.producers.get_mut(&pkey)?;
                if let Some(l) = p.layers.get_mut(layer) {
                    l.stalled = paused.paused;
                }
                let consumers = p.consumers.clone();
                for ckey in consumers {
                    self.update_layers(ckey, now);
                }
            }
            Event::EgressBitrateEstimate(kind) => {
                let t = self.transports.get_mut(&key)?;
                let bps = match (kind, t.bandwidth_estimation) {
                    (BweKind::Twcc { estimate, .. }, BandwidthEstimation::Twcc)
                    | (BweKind::Remb { estimate, .. }, BandwidthEstimation::Remb) => {
                        estimate.as_u64()
                    }
                    _ => return None,
                };
                tracing::trace!(transport = %t.id, bps, "egress bandwidth estimate");
                t.available_bitrate = Some(bps);
                t.emit(MediaEvent::BandwidthEstimate {
                    transport_id: t.id.clone(),
                    bitrate: bps,
                    desired_bitrate: t.desired_bitrate,
                    effective_desired_bitrate: t.effective_desired_bitrate,
                });
                let consumers = t.consumers.clone();
                for ckey in consumers {
                    self.update_layers(ckey, now);
                }
            }
            Event::MediaIngressStats(stats) => {
                let t = self.transports.get(&key)?;
                let pkey = *t.producer_by_mid.get(&stats.mid)?;
                let p = self.producers.get_mut(&pkey)?;
                let layer = p.layer_of(u32::MAX, stats.rid.as_deref()).unwrap_or(0);
                if let Some(l) = p.layers.get_mut(layer) {
                    let loss = stats.loss.unwrap_or(0.0);
                    l.fraction_lost = (loss.clamp(0.0, 1.0) * 255.0) as u8;
                    l.score = if l.is_active(now) {
                        score_from_loss(loss)
                    } else {
                        0
                    };
                    l.nacks = stats.nacks;
                }
                let scores: Vec<u8> = p.layers.iter().map(|l| l.score).collect();
                if scores != p.last_scores {
                    p.last_scores = scores;
                    let event = MediaEvent::ProducerScore {
                        transport_id: String::new(),
                        producer_id: p.id.clone(),
                        scores: p.scores(),
                    };
                    let consumers = p.consumers.clone();
                    self.emit_on(key, event);
                    for ckey in consumers {
                        self.report_score(ckey);
                    }
                }
            }
            Event::MediaEgressStats(stats) => {
                let t = self.transports.get(&key)?;
                let ckey = *t.consumer_by_mid.get(&stats.mid)?;
                let c = self.consumers.get_mut(&ckey)?;
                let loss = stats.loss.unwrap_or(0.0);
                c.fraction_lost = (loss.clamp(0.0, 1.0) * 255.0) as u8;
                c.score = score_from_loss(loss);
                c.nacks = stats.nacks;
                self.report_score(ckey);
            }
            Event::Closed => return Some(CloseReason::RemoteClosed),
            Event::ChannelOpen(cid, _) => {
                let t = self.transports.get_mut(&key)?;
                if t.sctp_state != Some(SctpState::Connected) {
                    t.sctp_state = Some(SctpState::Connected);
                    t.emit(MediaEvent::SctpStateChange {
                        transport_id: t.id.clone(),
                        state: SctpState::Connected,
                    });
                }
                if let Some(DataOwner::Consumer(dkey)) = t.data_by_channel.get(&cid).copied() {
                    if let Some(mut ch) = t.rtc.channel(cid) {
                        ch.set_buffered_amount_low_threshold(DEFAULT_BUFFERED_AMOUNT_LOW_THRESHOLD);
                    }
                    self.flush_data_consumer(dkey);
                }
            }
            Event::ChannelData(data) => {
                let t = self.transports.get(&key)?;
                match t.data_by_channel.get(&data.id).copied() {
                    Some(DataOwner::Producer(dkey)) => {
                        let message = DataMessage {
                            binary: data.binary,
                            data: data.data,
                        };
                        self.relay_data(dkey, message, now);
                    }
                    // Data on a consumer's stream, or on a stream no data producer declared.
                    _ => self.usage.dropped_data += 1,
                }
            }
            Event::ChannelBufferedAmountLow(cid) => {
                let t = self.transports.get(&key)?;
                if let Some(DataOwner::Consumer(dkey)) = t.data_by_channel.get(&cid).copied() {
                    self.flush_data_consumer(dkey);
                }
            }
            Event::ChannelClose(cid) => {
                let t = self.transports.get(&key)?;
                match t.data_by_channel.get(&cid).copied() {
                    Some(DataOwner::Producer(dkey)) => {
                        self.close_data_producer(dkey, CloseReason::RemoteClosed, true)
                    }
                    Some(DataOwner::Consumer(dkey)) => {
                        self.close_data_consumer(dkey, CloseReason::RemoteClosed, true)
                    }
                    None => {}
                }
            }
            _ => {}
        }
        None
    }

    // ---- forwarding ----------------------------------------------------------------------

    fn forward(&mut self, key: Key, packet: RtpPacket, now: Instant) {
        let ssrc = *packet.header.ssrc;
        let Some(t) = self.transports.get_mut(&key) else {
            return;
        };
        let (pkey, layer) = match t.rx_ssrc.get(&ssrc) {
            Some(found) => *found,
            None => {
                // A stream str0m mapped by mid/rid (simulcast by rid): learn its SSRC.
                let Some((mid, rid)) = t
                    .rtc
                    .direct_api()
                    .stream_rx(&packet.header.ssrc)
                    .map(|s| (s.mid(), s.rid()))
                else {
                    return;
                };
                let Some(&pkey) = t.producer_by_mid.get(&mid) else {
                    // RTP before `produce` completed: dropped quietly.
                    return;
                };
                let Some(p) = self.producers.get_mut(&pkey) else {
                    return;
                };
                let rid = rid.map(|r| r.to_string());
                let Some(layer) = p.layer_of(ssrc, rid.as_deref()) else {
                    return;
                };
                if let Some(l) = p.layers.get_mut(layer)
                    && l.ssrc.is_none()
                {
                    l.ssrc = Some(ssrc);
                }
                t.rx_ssrc.insert(ssrc, (pkey, layer));
                (pkey, layer)
            }
        };
        let Some(p) = self.producers.get_mut(&pkey) else {
            return;
        };
        p.on_packet(layer, packet.payload.len(), now);
        if let Some(level) = packet.header.ext_vals.audio_level
            && !p.paused
            && let Some(r) = self.routers.get_mut(&p.router_id)
        {
            r.speaker.record(pkey, level);
        }
        if p.paused || p.consumers.is_empty() {
            return;
        }
        let info = payload::inspect(p.codec, &packet.payload);
        if info.keyframe_start
            && let Some(l) = p.layers.get_mut(layer)
        {
            l.last_keyframe_request = None;
        }
        let input = InPacket {
            layer,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            info,
        };
        let ext = &packet.header.ext_vals;
        let ext_vals = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..Default::default()
        };
        let mut keyframe_layers: Vec<usize> = Vec::new();
        let nackable = p.kind == MediaKind::Video;
        let WorkerState {
            consumers,
            transports,
            dirty,
            ..
        } = self;
        for ckey in &p.consumers {
            let Some(c) = consumers.get_mut(ckey) else {
                continue;
            };
            let verdict = c.forwarder.on_packet(&input, now);
            if let Some(l) = c.forwarder.take_keyframe_request() {
                keyframe_layers.push(l);
            }
            let Verdict::Forward(out) = verdict else {
                continue;
            };
            let Some(pt) = c.payload_type_for(*packet.header.payload_type) else {
                continue;
            };
            let Some(ct) = transports.get_mut(&c.transport) else {
                continue;
            };
            let mut write = RtpWrite::new(
                pt,
                out.seq.into(),
                out.timestamp,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .nackable(nackable)
            .ext_vals(ext_vals.clone());
            if out.picture_id.is_some() || out.tl0_pic_idx.is_some() {
                if let Ok(desc) = str0m::rtp::Vp8Descriptor::parse(&packet.payload) {
                    let mut patch = desc.patch();
                    if let Some(pid) = out.picture_id {
                        patch = patch.picture_id(pid);
                    }
                    if let Some(tl0) = out.tl0_pic_idx {
                        patch = patch.tl0_pic_idx(tl0);
                    }
                    if let Ok(patch) = patch.build() {
                        write = write.vp8_patch(patch);
                    }
                }
            }
            if let Some(stream) = ct.rtc.direct_api().stream_tx(&c.ssrc.into()) {
                stream.write_rtp(write);
                c.on_sent(packet.payload.len(), now);
                dirty.push(c.transport);
            }
        }
        let reported: Vec<Key> = p
            .consumers
            .iter()
            .copied()
            .filter(|k| {
                consumers
                    .get(k)
                    .is_some_and(|c| c.current_layers() != c.reported_layers)
            })
            .collect();
        keyframe_layers.sort_unstable();
        keyframe_layers.dedup();
        for l in keyframe_layers {
            self.request_producer_keyframe(pkey, l, now);
        }
        for ckey in reported {
            self.report_layers(ckey);
        }
    }

    /// Passes a consumer's pending keyframe request to its producer.
    fn serve_consumer_keyframe_request(&mut self, ckey: Key, now: Instant) {
        let Some(c) = self.consumers.get_mut(&ckey) else {
            return;
        };
        if let Some(layer) = c.forwarder.take_keyframe_request() {
            let pkey = c.producer;
            self.request_producer_keyframe(pkey, layer, now);
        }
    }

    /// After a producer resumes, its consumers want keyframes.
    fn serve_keyframe_requests(&mut self, pkey: Key, now: Instant) {
        let consumers = self
            .producers
            .get(&pkey)
            .map(|p| p.consumers.clone())
            .unwrap_or_default();
        for ckey in consumers {
            self.serve_consumer_keyframe_request(ckey, now);
        }
    }

    /// Sends a PLI to the producer's client for `layer`, rate-limited per stream.
    fn request_producer_keyframe(&mut self, pkey: Key, layer: usize, now: Instant) {
        let Some(p) = self.producers.get_mut(&pkey) else {
            return;
        };
        if p.kind != MediaKind::Video {
            return;
        }
        let Some(ssrc) = p.allow_keyframe_request(layer, now) else {
            return;
        };
        if let Some(l) = p.layers.get_mut(layer) {
            l.plis += 1;
        }
        let tkey = p.transport;
        let Some(t) = self.transports.get_mut(&tkey) else {
            return;
        };
        if let Some(stream) = t.rtc.direct_api().stream_rx(&ssrc.into()) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
            self.dirty.push(tkey);
        }
    }

    /// Re-selects a simulcast consumer's layers from its producer's live layers, its preference
    /// and its share of the transport's bandwidth estimate.
    fn update_layers(&mut self, ckey: Key, now: Instant) {
        let Some(c) = self.consumers.get(&ckey) else {
            return;
        };
        let Some(p) = self.producers.get(&c.producer) else {
            return;
        };
        if p.layers.len() < 2 {
            let temporal = c.preferred_layers.map_or(u8::MAX, |l| {
                l.temporal_layer.min(p.temporal_layers.saturating_sub(1))
            });
            let temporal = if p.temporal_layers > 1 {
                temporal
            } else {
                u8::MAX
            };
            if let Some(c) = self.consumers.get_mut(&ckey) {
                c.forwarder.set_target_layers(0, temporal, now);
            }
            return;
        }
        let statuses = p.layer_statuses(now);
        let preferred = c
            .preferred_layers
            .map_or(p.layers.len() - 1, |l| usize::from(l.spatial_layer));
        let share = self.bandwidth_share(ckey);
        let current = c.forwarder.current_layers().map(|(s, _)| s);
        let Some(spatial) = select_spatial_layer(&statuses, preferred, current, share) else {
            return;
        };
        let temporal = c
            .preferred_layers
            .map_or(p.temporal_layers.saturating_sub(1), |l| {
                l.temporal_layer.min(p.temporal_layers.saturating_sub(1))
            });
        if let Some(c) = self.consumers.get_mut(&ckey) {
            c.forwarder.set_target_layers(spatial, temporal, now);
        }
    }

    /// A video consumer's share of its transport's estimate, by priority.
    fn bandwidth_share(&self, ckey: Key) -> Option<u64> {
        let c = self.consumers.get(&ckey)?;
        let t = self.transports.get(&c.transport)?;
        let available = t.available_bitrate?;
        let mut audio = 0u64;
        let mut weights = 0u64;
        for k in &t.consumers {
            let Some(o) = self.consumers.get(k) else {
                continue;
            };
            if !o.forwarder.is_active() {
                continue;
            }
            match o.kind {
                MediaKind::Audio => audio += o.rate.rate(Instant::now()),
                MediaKind::Video => weights += u64::from(o.priority),
            }
        }
        let weights = weights.max(u64::from(c.priority));
        Some(available.saturating_sub(audio) * u64::from(c.priority) / weights)
    }

    fn report_layers(&mut self, ckey: Key) {
        let Some(c) = self.consumers.get_mut(&ckey) else {
            return;
        };
        if c.r#type == crate::producer::ProducerType::Simple {
            return;
        }
        let layers = c.current_layers();
        if layers == c.reported_layers {
            return;
        }
        c.reported_layers = layers;
        let event = MediaEvent::ConsumerLayersChange {
            transport_id: String::new(),
            consumer_id: c.id.clone(),
            layers: layers.map(|l| ConsumerLayers {
                spatial_layer: l.spatial_layer,
                temporal_layer: l.temporal_layer.min(15),
            }),
        };
        let tkey = c.transport;
        self.emit_on(tkey, event);
    }

    fn report_score(&mut self, ckey: Key) {
        let Some(c) = self.consumers.get(&ckey) else {
            return;
        };
        let Some(p) = self.producers.get(&c.producer) else {
            return;
        };
        let score = ConsumerScore {
            score: c.score,
            producer_score: p.score(),
            producer_scores: p.layers.iter().map(|l| l.score).collect(),
        };
        if c.last_score.as_ref() == Some(&score) {
            return;
        }
        let event = MediaEvent::ConsumerScore {
            transport_id: String::new(),
            consumer_id: c.id.clone(),
            score: score.clone(),
        };
        let tkey = c.transport;
        if let Some(c) = self.consumers.get_mut(&ckey) {
            c.last_score = Some(score);
        }
        self.emit_on(tkey, event);
    }
}

/// Who owns a data channel of a WebRTC transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataOwner {
    Producer(Key),
    Consumer(Key),
}

/// str0m's channel configuration for a negotiated (out-of-band) SCTP stream.
fn channel_config(
    params: &sluice_ortc::SctpStreamParameters,
    label: &str,
    protocol: &str,
) -> str0m::channel::ChannelConfig {
    use str0m::channel::Reliability;
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let reliability = match (params.max_packet_life_time, params.max_retransmits) {
        (Some(lifetime), _) => Reliability::MaxPacketLifetime {
            lifetime: clamp(lifetime),
        },
        (None, Some(retransmits)) => Reliability::MaxRetransmits {
            retransmits: clamp(retransmits),
        },
        (None, None) => Reliability::Reliable,
    };
    str0m::channel::ChannelConfig {
        label: label.to_owned(),
        ordered: params.ordered.unwrap_or(true),
        reliability,
        negotiated: Some(params.stream_id),
        protocol: protocol.to_owned(),
    }
}

/// Writes one message into SCTP if the channel is open and holds less than `max_buffered`
/// bytes: beyond that a consumer's messages wait in its own queue, where an unreliable one drops
/// its oldest (SCTP's buffer would only add latency to stale state).
fn try_write(
    t: &mut TransportState,
    channel: str0m::channel::ChannelId,
    m: &DataMessage,
    max_buffered: usize,
) -> bool {
    match t.rtc.channel(channel) {
        Some(mut ch) => {
            let buffered = ch.buffered_amount();
            if buffered > 0 && buffered + m.data.len() > max_buffered {
                return false;
            }
            matches!(ch.write(m.binary, &m.data), Ok(true))
        }
        None => false,
    }
}

fn set_transport_id(event: &mut MediaEvent, id: &str) {
    match event {
        MediaEvent::IceStateChange { transport_id, .. }
        | MediaEvent::IceSelectedTupleChange { transport_id, .. }
        | MediaEvent::DtlsStateChange { transport_id, .. }
        | MediaEvent::SctpStateChange { transport_id, .. }
        | MediaEvent::TransportClosed { transport_id, .. }
        | MediaEvent::ProducerScore { transport_id, .. }
        | MediaEvent::ProducerClosed { transport_id, .. }
        | MediaEvent::ConsumerClosed { transport_id, .. }
        | MediaEvent::ConsumerProducerPaused { transport_id, .. }
        | MediaEvent::ConsumerProducerResumed { transport_id, .. }
        | MediaEvent::ConsumerScore { transport_id, .. }
        | MediaEvent::ConsumerLayersChange { transport_id, .. }
        | MediaEvent::BandwidthEstimate { transport_id, .. }
        | MediaEvent::DataProducerClosed { transport_id, .. }
        | MediaEvent::DataConsumerClosed { transport_id, .. }
        | MediaEvent::DataConsumerBufferedAmountLow { transport_id, .. } => {
            *transport_id = id.to_owned();
        }
        MediaEvent::ActiveSpeaker { .. } => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_str0m_sets_just_ahead_runs_now_at_itself_and_a_later_one_waits_for_the_timer() {
        let now = Instant::now();
        // The pacer's "1 µs after the last packet".
        let just_ahead = now + Duration::from_micros(1);
        assert_eq!(due_now(just_ahead, now), Some(just_ahead));
        // Past deadlines run at `now`, never in the past.
        let past = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
        assert_eq!(due_now(past, now), Some(now));
        assert_eq!(
            due_now(now + IMMEDIATE_WINDOW, now),
            Some(now + IMMEDIATE_WINDOW)
        );
        // A real pacing gap or an RTCP interval is left to the timer.
        assert_eq!(due_now(now + Duration::from_millis(1), now), None);
        assert_eq!(due_now(now + Duration::from_secs(1), now), None);
    }
}
