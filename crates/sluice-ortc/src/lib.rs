//! RTP and SCTP capabilities and parameters in mediasoup v3's JSON shape, their validation, and the
//! negotiation an SFU router does between producers and consumers.
//!
//! Pure code: no I/O and no clock. Every type (de)serialises to exactly the camelCase JSON that
//! mediasoup and mediasoup-client exchange, and unknown fields are ignored so newer clients parse.
//!
//! - [`types`], [`transport`]: the JSON types.
//! - [`validation`]: the rules input must follow, with precise [`OrtcError`]s.
//! - [`supported`]: what the SFU can route.
//! - [`negotiation`]: router capabilities, producer mapping, consumable and consumer parameters,
//!   SCTP stream ids.
//! - [`h264`], [`scalability`]: H.264 profile-level-id and scalability-mode helpers.
//!
//! See `docs/ortc.md` for the rules and the payload-type allocation.

pub mod error;
pub mod h264;
pub mod negotiation;
pub mod scalability;
pub mod supported;
pub mod transport;
pub mod types;
pub mod validation;

pub use error::OrtcError;
pub use negotiation::{
    RtpMapping, RtpMappingCodec, RtpMappingEncoding, SctpStreamIdAllocator, SsrcGenerator,
    can_consume, dynamic_payload_types, generate_router_rtp_capabilities,
    get_consumable_rtp_parameters, get_consumer_rtp_parameters,
    get_data_consumer_sctp_stream_parameters, get_pipe_consumer_rtp_parameters,
    get_producer_rtp_parameters_mapping,
};
pub use scalability::{
    MAX_SPATIAL_LAYERS, MAX_TEMPORAL_LAYERS, ScalabilityMode, parse_scalability_mode,
    validate_scalability_mode,
};
pub use supported::supported_rtp_capabilities;
pub use transport::*;
pub use types::*;
pub use validation::{
    validate_producer_rtp_parameters, validate_rtcp_feedback, validate_rtp_capabilities,
    validate_rtp_codec_capability, validate_rtp_codec_parameters, validate_rtp_encoding_parameters,
    validate_rtp_header_extension, validate_rtp_parameters, validate_sctp_capabilities,
    validate_sctp_parameters, validate_sctp_stream_parameters,
};
