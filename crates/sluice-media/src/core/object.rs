//! Names for the core's objects, as the close cascade (`cascade.rs`) walks them.

use crate::types::Key;

/// Every object the close cascade walks.
#[derive(Debug, Clone)]
pub(super) enum Object {
    Router(String),
    WebRtcTransport(Key),
    DirectTransport(Key),
    PlainTransport(Key),
    Producer(Key),
    Consumer(Key),
    DataProducer(Key),
    DataConsumer(Key),
}
