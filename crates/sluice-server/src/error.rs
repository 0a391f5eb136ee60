//! [`SignalError`]: why a signaling request failed, as the protoo error answer carries it.

use sluice_media::MediaError;
use sluice_protocol::ErrorCode;

/// A failed request: the protoo `errorCode` and `errorReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalError {
    pub code: ErrorCode,
    pub reason: String,
}

impl SignalError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        SignalError {
            code,
            reason: reason.into(),
        }
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason)
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, reason)
    }

    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, reason)
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, reason)
    }

    pub fn limit(what: &str) -> Self {
        Self::new(ErrorCode::LimitReached, format!("limit reached: {what}"))
    }
}

impl From<MediaError> for SignalError {
    fn from(e: MediaError) -> Self {
        let code = match &e {
            MediaError::UnknownRouter(_)
            | MediaError::UnknownTransport(_)
            | MediaError::UnknownProducer(_)
            | MediaError::UnknownConsumer(_)
            | MediaError::UnknownDataProducer(_)
            | MediaError::UnknownDataConsumer(_) => ErrorCode::NotFound,
            MediaError::InvalidDtlsParameters(_)
            | MediaError::InvalidRtpParameters(_)
            | MediaError::InvalidSctpParameters(_)
            | MediaError::InvalidSrtpParameters(_)
            | MediaError::InvalidRemote(_)
            | MediaError::InvalidMediaCodecs(_) => ErrorCode::BadRequest,
            MediaError::CannotConsume(_)
            | MediaError::Numbering(_)
            | MediaError::SctpDisabled(_)
            | MediaError::NoCandidate(_) => ErrorCode::Unsupported,
            MediaError::AlreadyConnected(_) | MediaError::DuplicateId(_) => ErrorCode::Conflict,
            MediaError::Limit(_) => ErrorCode::LimitReached,
            MediaError::WorkerClosed(_) => ErrorCode::Unavailable,
            MediaError::Bind { .. }
            | MediaError::Spawn(_)
            | MediaError::Certificate
            | MediaError::Rtc(_) => ErrorCode::Internal,
        };
        SignalError::new(code, e.to_string())
    }
}
