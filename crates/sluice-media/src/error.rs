//! Errors of the media plane's control API.

use sluice_ortc::OrtcError;

/// Why parameters were refused: a rule of the ORTC layer (kept as the typed source), or one of
/// the media plane's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("{0}")]
    Ortc(#[from] OrtcError),
    #[error("{0}")]
    Other(String),
}

impl From<String> for Reason {
    fn from(reason: String) -> Self {
        Reason::Other(reason)
    }
}

impl From<&str> for Reason {
    fn from(reason: &str) -> Self {
        Reason::Other(reason.to_owned())
    }
}

/// Why a media-plane request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("cannot start worker thread: {0}")]
    Spawn(String),
    #[error("worker {0} is closed")]
    WorkerClosed(usize),
    #[error("no router {0}")]
    UnknownRouter(String),
    #[error("no transport {0}")]
    UnknownTransport(String),
    #[error("no producer {0}")]
    UnknownProducer(String),
    #[error("no consumer {0}")]
    UnknownConsumer(String),
    #[error("no data producer {0}")]
    UnknownDataProducer(String),
    #[error("no data consumer {0}")]
    UnknownDataConsumer(String),
    #[error("id {0} is already in use")]
    DuplicateId(String),
    #[error("invalid router media codecs: {0}")]
    InvalidMediaCodecs(#[source] Reason),
    #[error("invalid DTLS parameters: {0}")]
    InvalidDtlsParameters(String),
    #[error("invalid RTP parameters: {0}")]
    InvalidRtpParameters(#[source] Reason),
    #[error("invalid SRTP parameters: {0}")]
    InvalidSrtpParameters(String),
    #[error("invalid SCTP parameters: {0}")]
    InvalidSctpParameters(#[source] Reason),
    #[error("cannot consume: {0}")]
    CannotConsume(#[source] Reason),
    #[error("cannot receive this producer's numbering: {0}")]
    Numbering(String),
    #[error("transport {0} is already connected")]
    AlreadyConnected(String),
    #[error("invalid remote: {0}")]
    InvalidRemote(String),
    #[error("SCTP is not enabled on transport {0}")]
    SctpDisabled(String),
    #[error("no candidate: {0}")]
    NoCandidate(&'static str),
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("cannot create DTLS certificate")]
    Certificate,
    #[error("WebRTC session error: {0}")]
    Rtc(String),
}
