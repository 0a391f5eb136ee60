//! The media plane: `Worker`, `Router`, `WebRtcTransport`, `Producer`, `Consumer`, with
//! mediasoup v3's object model, on str0m.
//!
//! - A [`Worker`] is an OS thread with its own event loop and one UDP port shared by all of its
//!   transports. A router and everything on it live in one worker, so forwarding is a function
//!   call on one thread.
//! - Handles ([`Router`], [`WebRtcTransport`], [`Producer`], [`Consumer`]) are cheap clones that
//!   send commands to their worker and await replies; events come back on each transport's
//!   [`EventSender`].
//! - The forwarding decisions ([`forwarder`], [`layers`], [`seq_manager`]) are sans-IO and take
//!   `now` as input; [`numbering`] explains how producers' own payload-type and header-extension
//!   numbering reaches str0m.
//!
//! `docs/media.md` describes the design and `docs/closures.md` the close cascade.

pub mod consumer;
pub mod data_consumer;
pub mod data_producer;
pub mod demux;
pub mod direct_transport;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod forwarder;
pub mod layers;
pub mod numbering;
pub mod payload;
pub mod producer;
pub mod router;
pub mod seq_manager;
pub mod webrtc_transport;
pub mod worker;

pub use consumer::{Consumer, ConsumerDump, ConsumerOptions, ConsumerStat};
pub use data_consumer::{DataConsumer, DataConsumerOptions, DataConsumerStat, DataReceiver};
pub use data_producer::{DataMessage, DataProducer, DataProducerOptions, DataProducerStat};
pub use direct_transport::DirectTransport;
pub use error::MediaError;
pub use events::{
    CloseReason, ConsumerLayers, ConsumerScore, EventSender, MediaEvent, ProducerScore,
};
pub use producer::{Producer, ProducerOptions, ProducerStat, ProducerType};
pub use router::{Router, RouterDump};
pub use sluice_ortc as ortc;
pub use webrtc_transport::{
    BandwidthEstimation, DtlsState, IceState, SctpState, TransportStat, WebRtcTransport,
    WebRtcTransportOptions,
};
pub use worker::{ResourceUsage, Worker, WorkerDump, WorkerSettings};

/// A fresh object id in UUID v4 form, as mediasoup's ids are.
pub fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid_v4_shaped_and_distinct() {
        let a = super::new_id();
        let b = super::new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(a.matches('-').count(), 4);
    }
}
