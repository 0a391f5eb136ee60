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

pub(crate) mod command;
pub mod consumer;
pub(crate) mod core;
pub mod data_consumer;
pub mod data_producer;
pub mod demux;
pub mod direct_transport;
pub(crate) mod driver;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod forwarder;
pub mod ice_tcp;
pub mod layers;
pub mod message;
mod nack;
pub mod numbering;
pub mod payload;
pub mod pipe;
pub mod plain_transport;
pub mod producer;
pub mod router;
mod rtcp;
pub mod seq_manager;
pub mod settings;
mod srtp;
pub mod testing;
pub mod types;
pub mod webrtc_transport;
pub mod worker;

pub use consumer::{Consumer, ConsumerDump, ConsumerOptions, ConsumerStat};
pub use data_consumer::{DataConsumer, DataConsumerOptions, DataConsumerStat, DataReceiver};
pub use data_producer::{DataMessage, DataProducer, DataProducerOptions, DataProducerStat};
pub use direct_transport::DirectTransport;
pub use driver::panic_message;
pub use error::{MediaError, Reason};
pub use events::{
    CloseReason, ConsumerLayers, ConsumerScore, EventSender, MediaEvent, ProducerScore,
};
pub use pipe::{PipedDataProducer, PipedProducer};
pub use plain_transport::{
    PlainTransport, PlainTransportConnect, PlainTransportOptions, PlainTransportStat,
    SrtpCryptoSuite, SrtpParameters,
};
pub use producer::{Producer, ProducerOptions, ProducerStat, ProducerType};
pub use router::{Router, RouterDump};
pub use settings::{MediaSettings, TcpPort, WorkerSettings};
pub use sluice_ortc as ortc;
pub use types::{ResourceUsage, WorkerDump, new_id};
pub use webrtc_transport::{
    BandwidthEstimation, DtlsState, IceState, SctpState, TransportStat, WebRtcTransport,
    WebRtcTransportOptions,
};
pub use worker::Worker;

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
