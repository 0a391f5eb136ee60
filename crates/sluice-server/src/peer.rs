//! A connected peer of the signaling server: who it is, what it may do, its outbound queue, its
//! pending server→client requests and what it has negotiated. The connection that drives it is
//! `session.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_media::MediaEvent;
use sluice_media::ortc::{RtpCapabilities, SctpCapabilities};
use sluice_protocol::{ErrorCode, Message, Response, ServerNotification, ServerRequest};
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::Grants;
use crate::error::SignalError;
use crate::rate::TokenBucket;

/// Frames waiting to be written to one peer; a peer that lets this fill up is closed with
/// [`CLOSE_TOO_SLOW`].
const OUTBOUND_CAPACITY: usize = 4096;

/// Bytes of frames waiting to be written to one peer; a peer that lets this fill up is closed
/// with [`CLOSE_TOO_SLOW`] too. Without it, 4096 frames of up to `limits.max_message_bytes`
/// (256 KiB) could pin a gigabyte for a peer that stops reading. 8 MiB holds seconds of a busy
/// room's notifications for a reader that is merely slow. A single frame larger than this is
/// still queued when nothing else is.
const OUTBOUND_MAX_BYTES: usize = 8 << 20;

/// Close codes of our own (4000–4999 are the application's).
pub const CLOSE_REPLACED: u16 = 4000;

pub const CLOSE_TIMEOUT: u16 = 4001;

pub const CLOSE_TOO_SLOW: u16 = 4002;

pub const CLOSE_KICKED: u16 = 4003;

/// RFC 6455: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// RFC 6455: policy violation (request flood).
pub const CLOSE_POLICY: u16 = 1008;

/// RFC 6455: invalid frame payload data (a text frame that is not UTF-8).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;

/// A frame for the session's writer. Closing is not queued behind frames: the writer watches
/// the peer's close request ([`Peer::close`]) and its session's stop signal itself, so a close
/// code reaches the client even when the queue is full.
pub(crate) enum Outbound {
    Text(String),
}

/// A connected peer.
pub struct Peer {
    pub id: String,
    pub grants: Grants,
    pub(crate) out: mpsc::Sender<Outbound>,
    /// Bytes of the frames in `out` (the writer subtracts what it takes).
    pub(crate) out_bytes: Arc<AtomicUsize>,
    pub(crate) pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    joined: AtomicBool,
    /// When the WebSocket connection was accepted.
    pub(crate) connected_at: Instant,
    /// One of the peer's transports has reached DTLS `connected`.
    pub(crate) media_ready: AtomicBool,
    /// An SCTP association was offered on one of the peer's transports.
    sctp: AtomicBool,
    caps: Mutex<(Option<RtpCapabilities>, Option<SctpCapabilities>)>,
    pub(crate) events: mpsc::UnboundedSender<MediaEvent>,
    /// Consumers and data consumers being created (counted against their limits).
    pub(crate) reserved: [std::sync::atomic::AtomicUsize; 2],
    closing: watch::Sender<Option<(u16, String)>>,
    pub(crate) left: watch::Sender<bool>,
    /// Per action rule (its index in `actions`): the peer's rate of game actions.
    pub(crate) action_buckets: Mutex<HashMap<usize, TokenBucket>>,
    /// The room's cached game actions were replayed to it: live ones follow (set under the
    /// store's lock, so none is both replayed and delivered live, or lost in between).
    pub(crate) actions_replayed: AtomicBool,
}

/// The receiving ends of a new peer's queues, for the session that drives it.
pub(crate) struct PeerChannels {
    pub out_rx: mpsc::Receiver<Outbound>,
    pub out_bytes: Arc<AtomicUsize>,
    pub events_rx: mpsc::UnboundedReceiver<MediaEvent>,
    pub closing_rx: watch::Receiver<Option<(u16, String)>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).finish()
    }
}

impl Peer {
    /// A peer that has just connected, and the ends of its queues its session reads.
    pub(crate) fn new(id: String, grants: Grants) -> (Arc<Peer>, PeerChannels) {
        let (out, out_rx) = mpsc::channel::<Outbound>(OUTBOUND_CAPACITY);
        let (events, events_rx) = mpsc::unbounded_channel();
        let (closing, closing_rx) = watch::channel(None);
        let (left, _) = watch::channel(false);
        let out_bytes = Arc::new(AtomicUsize::new(0));
        let peer = Arc::new(Peer {
            id,
            grants,
            out,
            out_bytes: out_bytes.clone(),
            pending: Mutex::new(HashMap::new()),
            joined: AtomicBool::new(false),
            connected_at: Instant::now(),
            media_ready: AtomicBool::new(false),
            sctp: AtomicBool::new(false),
            caps: Mutex::new((None, None)),
            events,
            reserved: Default::default(),
            closing,
            left,
            action_buckets: Mutex::new(HashMap::new()),
            actions_replayed: AtomicBool::new(false),
        });
        (
            peer,
            PeerChannels {
                out_rx,
                out_bytes,
                events_rx,
                closing_rx,
            },
        )
    }

    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::SeqCst)
    }

    /// Marks the peer joined with its capabilities; false if it already was.
    pub(crate) fn set_joined(
        &self,
        rtp: Option<RtpCapabilities>,
        sctp: Option<SctpCapabilities>,
    ) -> bool {
        if self.joined.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Ok(mut caps) = self.caps.lock() {
            *caps = (rtp, sctp);
        }
        true
    }

    pub fn rtp_capabilities(&self) -> Option<RtpCapabilities> {
        self.caps.lock().ok()?.0.clone()
    }

    /// Whether the peer can take data consumers: one of its transports offers an SCTP
    /// association. (mediasoup-client 3.24 no longer sends `sctpCapabilities`, in `join` or
    /// `createWebRtcTransport`, so the transports are what tells; every transport offers SCTP.)
    pub fn has_sctp(&self) -> bool {
        self.sctp.load(Ordering::SeqCst)
    }

    /// Records that a transport of this peer offers SCTP.
    pub(crate) fn set_sctp_transport(&self) {
        self.sctp.store(true, Ordering::SeqCst);
    }

    /// Queues a frame, or closes the peer with [`CLOSE_TOO_SLOW`] when its queue is over
    /// [`OUTBOUND_CAPACITY`] frames or [`OUTBOUND_MAX_BYTES`] bytes (the frame is dropped).
    fn send(&self, text: String) {
        let len = text.len();
        let queued = self.out_bytes.fetch_add(len, Ordering::SeqCst) + len;
        if queued > OUTBOUND_MAX_BYTES && queued > len {
            self.out_bytes.fetch_sub(len, Ordering::SeqCst);
            self.too_slow(format!("too slow: over {OUTBOUND_MAX_BYTES} bytes queued"));
            return;
        }
        match self.out.try_send(Outbound::Text(text)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.out_bytes.fetch_sub(len, Ordering::SeqCst);
                self.too_slow(format!("too slow: over {OUTBOUND_CAPACITY} frames queued"));
            }
            // The writer is gone: the connection is closing.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.out_bytes.fetch_sub(len, Ordering::SeqCst);
            }
        }
    }

    fn too_slow(&self, reason: String) {
        if self.closing.borrow().is_none() {
            tracing::warn!(peer = %self.id, %reason, "peer does not read its socket; closing it");
        }
        self.close(CLOSE_TOO_SLOW, &reason);
    }

    pub fn notify(&self, notification: &ServerNotification) {
        self.send(notification.to_message().to_json());
    }

    pub(crate) fn respond(&self, message: Message) {
        self.send(message.to_json());
    }

    /// Sends a server→client request and waits (up to `timeout`) for its answer.
    pub async fn request(
        &self,
        request: ServerRequest,
        timeout: Duration,
    ) -> Result<Value, SignalError> {
        self.start_request(request)?.answer(timeout).await
    }

    /// Queues a server→client request now (so that what is queued after it reaches the client
    /// after it); [`PendingRequest::answer`] waits for the answer.
    pub fn start_request(&self, request: ServerRequest) -> Result<PendingRequest<'_>, SignalError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| SignalError::internal("pending requests poisoned"))?;
            let mut id = rand::random::<u64>() % 10_000_000;
            while pending.contains_key(&id) {
                id = rand::random::<u64>() % 10_000_000;
            }
            pending.insert(id, tx);
            id
        };
        self.send(request.to_message(id).to_json());
        Ok(PendingRequest {
            peer: self,
            id,
            method: request.method(),
            rx,
        })
    }

    /// Asks the connection to close with `code`; the peer then leaves the room.
    pub fn close(&self, code: u16, reason: &str) {
        self.closing.send_if_modified(|c| {
            if c.is_none() {
                *c = Some((code, reason.to_owned()));
                true
            } else {
                false
            }
        });
    }

    /// Waits until the peer has left its room (everything of it closed).
    pub async fn wait_left(&self) {
        let mut left = self.left.subscribe();
        let _ = left.wait_for(|l| *l).await;
    }
}

/// A server→client request on its way ([`Peer::start_request`]).
pub struct PendingRequest<'a> {
    peer: &'a Peer,
    id: u64,
    method: &'static str,
    rx: oneshot::Receiver<Response>,
}

impl PendingRequest<'_> {
    /// The client's answer, within `timeout`.
    pub async fn answer(self, timeout: Duration) -> Result<Value, SignalError> {
        let PendingRequest {
            peer,
            id,
            method,
            rx,
        } = self;
        let answer = tokio::time::timeout(timeout, rx).await;
        if let Ok(mut pending) = peer.pending.lock() {
            pending.remove(&id);
        }
        match answer {
            Ok(Ok(Response::Ok { data, .. })) => Ok(data),
            Ok(Ok(Response::Error {
                error_code,
                error_reason,
                ..
            })) => Err(SignalError::new(
                ErrorCode::Unsupported,
                format!("the client refused {method}: {error_code} {error_reason}"),
            )),
            Ok(Err(_)) => Err(SignalError::new(ErrorCode::Unavailable, "the peer left")),
            Err(_) => Err(SignalError::new(
                ErrorCode::Unavailable,
                format!("the client did not answer {method}"),
            )),
        }
    }
}
