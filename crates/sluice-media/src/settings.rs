//! Where a worker listens ([`WorkerSettings`]) and every tuning constant of the media plane with
//! its default ([`MediaSettings`], one commented struct, like the server's configuration).
//!
//! The core reads its copy (`Core::new` takes one); the pure algorithms (layer selection, the
//! forwarder, the sequence-number manager) read [`DEFAULTS`].

use std::net::IpAddr;
use std::time::Duration;

/// Where a worker listens and what it announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Address the UDP socket binds to.
    pub listen_ip: IpAddr,
    /// Address in ICE candidates; `listen_ip` when `None`.
    pub announced_ip: Option<IpAddr>,
    /// UDP port; 0 lets the OS pick.
    pub port: u16,
    /// Where the worker listens for ICE over TCP (RFC 6544 passive candidates).
    pub tcp: TcpPort,
}

/// A worker's ICE-TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpPort {
    /// None: transports offer UDP candidates only.
    Off,
    /// The port number of the worker's UDP socket (mediasoup's default).
    SameAsUdp,
    /// This port (0 lets the OS pick).
    Port(u16),
}

impl WorkerSettings {
    /// Loopback, any free port (tests, benchmarks).
    pub fn loopback() -> Self {
        WorkerSettings {
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            announced_ip: None,
            port: 0,
            tcp: TcpPort::SameAsUdp,
        }
    }
}

/// The media plane's tuning constants.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    // ---- the driver ------------------------------------------------------------------------
    /// Datagrams the driver reads before it drains the core's output.
    pub recv_batch: usize,
    /// Socket buffers asked of the kernel (it caps them at `net.core.rmem_max` / `wmem_max`):
    /// bursts of a keyframe to many consumers must not overflow them.
    pub socket_buffer_bytes: usize,
    /// ICE-TCP connections a worker holds at most (beyond, new ones are refused).
    pub tcp_max_connections: usize,
    /// Connections one IP address may hold before ICE validates them: a host cannot exhaust
    /// the worker with connections that never authenticate.
    pub tcp_max_pending_per_ip: usize,
    /// A connection ICE has not validated this long after it was accepted is closed.
    pub tcp_pending_timeout: Duration,
    /// Bytes a connection may have waiting to be written; a reader slower than that is closed
    /// (memory stays bounded; real-time media that late is useless anyway).
    pub tcp_write_buffer_bytes: usize,

    // ---- the core's timing -----------------------------------------------------------------
    /// How often the core re-evaluates layers, scores, estimates and queued data.
    pub tick: Duration,
    /// A str0m deadline this close is run at once rather than through the timer: with TWCC,
    /// str0m's pacer asks for one 1 µs after each packet it releases, and a timer (1 ms
    /// resolution) would hold every further packet of a frame ≈ 1.1 ms.
    pub immediate_window: Duration,
    /// Immediate timeouts one transport gets per drain before it waits its turn again.
    pub max_immediate_timeouts: u32,
    /// str0m's delay-based estimator asks for a timeout every 25 ms on every transport that
    /// estimates, whether or not anything it measures is sent. On a transport with nothing to
    /// measure (connected, no producers, no data channels, every consumer with its own egress:
    /// a listener in a voice room, a viewer of single-encoding video) a timeout whose reason is
    /// that estimator is armed at least this far ahead: a quarter of the wake-ups.
    pub idle_estimator_interval: Duration,
    /// How late a str0m timeout may run on a transport that only receives what sluice writes
    /// itself (no producers, no str0m send stream: a listener, a viewer, a data channel): the
    /// worker does not wake for it alone before this, so it mostly runs on the next datagram's
    /// wake-up. Pacer and probe deadlines, and every deadline of other transports, keep their
    /// time.
    pub timer_slack: Duration,
    /// Rounds of polling dirty transports per flush (a transport re-dirtied by another's
    /// output is polled again in the same flush, up to this many times).
    pub max_flush_rounds: u32,

    // ---- keyframes and layers --------------------------------------------------------------
    /// The least time between two keyframe requests to one producer stream.
    pub key_frame_request_delay: Duration,
    /// A consumer waiting for a keyframe asks again after this long.
    pub keyframe_retry: Duration,
    /// A layer is chosen when the estimate exceeds its bitrate by this factor…
    pub upgrade_headroom: f64,
    /// …and kept while the estimate stays above this fraction of it.
    pub downgrade_tolerance: f64,
    /// What a transport asks str0m's estimator to probe for, above its consumers' desired
    /// bitrate plus the upgrade headroom.
    pub probe_margin: f64,
    /// A layer with no packet for this long counts as inactive.
    pub layer_inactive_after: Duration,
    /// How far behind the newest sequence number a packet may arrive and still be forwarded.
    pub max_reorder: u64,

    // ---- retransmission ---------------------------------------------------------------------
    /// How long a video consumer keeps what it sent, to answer NACKs (str0m keeps 3 s unless
    /// told otherwise; mediasoup 2 s). A retransmission answers within about one round trip,
    /// and a packet resent a second after it was first sent misses any real-time receiver's
    /// playout, which then asks for a keyframe instead. Each consumer keeps its own copy of
    /// each packet, so this is most of what a video consumer costs in memory.
    pub retransmission_window: Duration,
    /// …and at most this many packets.
    pub retransmission_packets: usize,
    /// A packet is resent at most once per this interval, however often it is NACKed (a
    /// receiver asks again after about a round trip; a hostile one must not make us a packet
    /// pump).
    pub resend_interval: Duration,
    /// At most this many sequence numbers are read from one RTCP datagram's NACKs.
    pub max_nacked_per_datagram: usize,
    /// A video consumer with its own egress resends at most this share of the packets it sends
    /// (str0m's default drop ratio for its own resends)…
    pub max_resend_ratio: f32,
    /// …beyond a burst of this many (a keyframe's worth lost at once).
    pub resend_burst: f32,
    /// A video producer on a pipe asks again for a packet still missing after this long (about
    /// a round trip between hosts of one region; the source resends a packet at most once per
    /// `resend_interval`)…
    pub pipe_nack_retry: Duration,
    /// …at most this many times, and for at most `retransmission_window` after it was missed;
    pub pipe_nack_tries: u8,
    /// it follows at most this many missing packets (a longer gap is a restart, not loss).
    pub pipe_nack_max_missing: usize,

    // ---- the active speaker ----------------------------------------------------------------
    /// How often the loudest producer of a router is reported.
    pub speaker_interval: Duration,
    /// Below this audio level (dBov) nobody speaks.
    pub speaker_threshold: i8,

    // ---- data channels ---------------------------------------------------------------------
    /// A reliable data consumer's own queue, in bytes, beyond SCTP's buffer.
    pub data_queue_limit: usize,
    /// An unreliable data consumer's queue, in bytes; it drops its oldest beyond.
    pub unreliable_data_queue_limit: usize,
    /// SCTP's send buffer per reliable data consumer, beyond which messages wait in its queue.
    pub reliable_sctp_buffer: usize,
    /// The same for an unreliable one (stale state should not wait in SCTP).
    pub unreliable_sctp_buffer: usize,
    /// str0m's buffered-amount-low threshold on data consumers' channels.
    pub buffered_amount_low_threshold: usize,
    /// Audio consumers' packets are written and SRTP-protected by sluice itself rather than
    /// through a str0m send stream, whose per-stream bookkeeping costs more than the rest of the
    /// forwarding together (issue 13; docs/media.md).
    pub own_audio_egress: bool,
    /// The same for video consumers of a producer with a single encoding (no layer for an
    /// estimate to choose): sluice writes their packets and answers their NACKs (RTX when
    /// negotiated) and keyframe requests itself. Simulcast and SVC consumers stay in str0m,
    /// whose send-side estimator picks their layers.
    pub own_video_egress: bool,
    /// How often a consumer with its own egress sends an RTCP sender report (the receiver
    /// syncs a peer's audio with its video from them).
    pub own_sender_report_interval: Duration,
}

/// The defaults.
pub const DEFAULTS: MediaSettings = MediaSettings {
    recv_batch: 64,
    socket_buffer_bytes: 4 << 20,
    tcp_max_connections: 4096,
    tcp_max_pending_per_ip: 16,
    tcp_pending_timeout: Duration::from_secs(10),
    tcp_write_buffer_bytes: 1 << 20,
    tick: Duration::from_millis(250),
    immediate_window: Duration::from_micros(200),
    max_immediate_timeouts: 16,
    idle_estimator_interval: Duration::from_millis(100),
    timer_slack: Duration::from_millis(20),
    max_flush_rounds: 64,
    key_frame_request_delay: Duration::from_millis(500),
    keyframe_retry: Duration::from_millis(1000),
    upgrade_headroom: 1.15,
    downgrade_tolerance: 0.9,
    probe_margin: 1.1,
    layer_inactive_after: Duration::from_millis(1500),
    max_reorder: 1000,
    retransmission_window: Duration::from_secs(1),
    retransmission_packets: 1024,
    resend_interval: Duration::from_millis(20),
    max_nacked_per_datagram: 256,
    pipe_nack_retry: Duration::from_millis(40),
    pipe_nack_tries: 8,
    pipe_nack_max_missing: 512,
    max_resend_ratio: 0.15,
    resend_burst: 64.0,
    speaker_interval: Duration::from_millis(800),
    speaker_threshold: -80,
    data_queue_limit: 256 * 1024,
    unreliable_data_queue_limit: 16 * 1024,
    reliable_sctp_buffer: 64 * 1024,
    unreliable_sctp_buffer: 4 * 1024,
    buffered_amount_low_threshold: 16 * 1024,
    own_audio_egress: true,
    own_video_egress: true,
    own_sender_report_interval: Duration::from_secs(1),
};

impl Default for MediaSettings {
    fn default() -> Self {
        DEFAULTS
    }
}
