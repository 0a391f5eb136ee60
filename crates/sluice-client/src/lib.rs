//! Rust client SDK for sluice. It speaks the same protocol as the server (`sluice-protocol`) and
//! never depends on the server crate.
//!
//! Not built yet: the media-plane issue adds the str0m transport half, the signaling issue the
//! WebSocket half. Until then it only re-exports the protocol it will speak.

pub use sluice_protocol as protocol;
