//! The media plane: `Worker`, `Router`, `WebRtcTransport`, `Producer`, `Consumer`, `DataProducer`,
//! `DataConsumer` (see `docs/architecture.md`).
//!
//! Not built yet: the media-plane issue fills this crate on str0m. Until then it only re-exports the
//! negotiation types its API will be expressed in, so the dependency direction is fixed from day one.

pub use sluice_ortc as ortc;
