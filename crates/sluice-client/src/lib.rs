//! Rust client SDK for sluice: bots, load tests, native clients and game servers. It speaks the
//! same protocol as the server (`sluice-protocol`) and never depends on the server crate.
//!
//! - [`session_core`]: [`ClientSession`], the sans-IO client side of a WebRTC transport on
//!   str0m, with synthetic producers ([`SourceConfig`]) and consumers: datagrams and time in,
//!   transmits and timeouts out (for tests on a virtual network at virtual time).
//! - [`transport`]: [`ClientTransport`], the async driver of a session on a UDP socket and the
//!   real clock.
//! - [`media`]: synthetic VP8 and audio payloads carrying a [`Stamp`](media::Stamp) for
//!   integrity and latency checks.
//! - [`numbering`]: how a client numbers what it sends (Chromium's, aiortc's, a router's).
//! - [`relay`]: a UDP relay that drops packets, for loss tests.
//! - [`signaling`]: [`SignalingClient`], protoo over a WebSocket.
//! - [`session`]: [`Session`], a whole peer running mediasoup-demo's flow (bots, load tests).

pub mod media;
pub mod numbering;
pub mod relay;
pub mod session;
pub mod session_core;
pub mod signaling;
pub mod transport;

pub use numbering::ClientNumbering;
pub use relay::LossyRelay;
pub use session::{Session, SessionError, SessionEvent, SessionOptions};
pub use session_core::{ClientSession, Transmit, WallClock};
pub use signaling::{Incoming, SignalingClient, SignalingError, ws_url};
pub use sluice_protocol as protocol;
pub use transport::{
    ClientDataProducer, ClientError, ClientProducer, ClientStats, ClientTransport,
    ClientTransportOptions, ConnectionState, ReceivedData, ReceivedRtp, ReceivedSenderReport,
    ServerTransportInfo, SourceConfig,
};
