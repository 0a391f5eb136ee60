//! A `DirectTransport` in its worker: the data producers and consumers of a Rust game server on
//! the same router (no network; its consumers deliver through a `DataReceiver`).

use crate::core::table::Identified;
use crate::events::EventSender;
use crate::types::Key;

/// The worker-side state of a direct transport.
#[derive(Debug)]
pub(crate) struct DirectTransportState {
    pub id: String,
    pub router_id: String,
    pub events: Option<EventSender>,
    pub data_producers: Vec<Key>,
    pub data_consumers: Vec<Key>,
}

impl Identified for DirectTransportState {
    fn id(&self) -> &str {
        &self.id
    }
}
