//! RTP and SCTP capabilities and parameters in mediasoup v3's JSON shape, their validation, and the
//! negotiation an SFU router does between producers and consumers.
//!
//! Pure code: no I/O and no clock. Every type (de)serialises to exactly the camelCase JSON that
//! mediasoup and mediasoup-client exchange, and unknown fields are ignored so newer clients parse.

pub mod transport;
pub mod types;

pub use transport::*;
pub use types::*;
