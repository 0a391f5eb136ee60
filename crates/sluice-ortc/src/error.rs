//! The one error type of this crate.
//!
//! Every variant says which field is at fault (as a JSON path in mediasoup's camelCase, e.g.
//! `codecs[1].parameters.apt`) and why, so that the message can go back to the client verbatim.

use thiserror::Error;

/// Why capabilities or parameters were rejected, or why a negotiation step failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrtcError {
    /// A field has a value the rules do not allow.
    #[error("{field}: {reason}")]
    InvalidField {
        /// JSON path of the field, e.g. `encodings[2].rid`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A codec matches none of the codecs it was compared against (the supported table when the
    /// router capabilities are generated, the router capabilities when a producer is mapped).
    #[error("{field}: codec {mime_type}{} is not supported", payload_type.map(|pt| format!(" (payload type {pt})")).unwrap_or_default())]
    UnsupportedCodec {
        /// JSON path of the codec, e.g. `media_codecs[3]` or `codecs[0]`.
        field: String,
        mime_type: String,
        /// The payload type the producer used, when there is one.
        payload_type: Option<u8>,
    },

    /// A producer's RTX codec protects a media codec for which the router has no RTX codec.
    #[error(
        "{field}: RTX payload type {payload_type} protects a codec the router has no RTX codec for (router payload type {router_payload_type})"
    )]
    UnsupportedRtxCodec {
        field: String,
        payload_type: u8,
        /// The router's payload type of the protected media codec.
        router_payload_type: u8,
    },

    /// All dynamic payload types (96..=127) are taken.
    #[error("{field}: cannot allocate more dynamic payload types (96..=127 are all in use)")]
    PayloadTypesExhausted { field: String },

    /// No codec of the consumable parameters is in the consumer's capabilities.
    #[error("no codec of the producer matches the consumer's RTP capabilities")]
    NoMatchingCodec,

    /// The consumer cannot be created for another reason.
    #[error("cannot consume: {reason}")]
    CannotConsume { reason: String },

    /// Every SCTP stream id of the association is in use.
    #[error("all {count} SCTP stream ids are in use")]
    SctpStreamsExhausted { count: u16 },

    /// The SCTP stream id is outside the association's streams or already taken.
    #[error("SCTP stream id {stream_id}: {reason}")]
    SctpStreamIdUnavailable { stream_id: u16, reason: String },
}

impl OrtcError {
    /// Shorthand for [`OrtcError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        OrtcError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            OrtcError::InvalidField { field, .. }
            | OrtcError::UnsupportedCodec { field, .. }
            | OrtcError::UnsupportedRtxCodec { field, .. }
            | OrtcError::PayloadTypesExhausted { field } => Some(field),
            _ => None,
        }
    }
}

/// `prefix.name`, or just `name` when there is no prefix.
pub(crate) fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}
