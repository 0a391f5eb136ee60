//! `DataConsumer`: one data producer's messages sent to one client (over SCTP) or to the server
//! (on a `DirectTransport`), with bounded memory whatever the sender does.
//!
//! Messages go straight into SCTP while it has room; otherwise they wait in the consumer's
//! [`SendQueue`], bounded in bytes. When it is full, an unreliable consumer (`maxRetransmits` or
//! `maxPacketLifeTime`) drops its *oldest* messages, so a slow receiver gets fresh state instead
//! of a growing backlog; a reliable one refuses the newest and counts it (`dropped`), reporting
//! itself full. When SCTP's buffer falls below the low-water mark the queue drains and the
//! consumer reports `DataConsumerBufferedAmountLow`.
//!
//! Empty messages reach `DirectTransport` consumers; toward SCTP they are dropped and counted:
//! str0m 0.25 cannot send them (it writes no chunk but advances the stream sequence number,
//! which would stall an ordered stream).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sluice_ortc::SctpStreamParameters;
use str0m::channel::ChannelId;
use tokio::sync::Notify;

use crate::data_producer::DataMessage;
use crate::error::MediaError;
use crate::worker::{Command, Key, Worker};

/// Default bound of a consumer's queue (bytes waiting beyond SCTP's own buffer).
pub const DEFAULT_QUEUE_LIMIT: usize = 256 * 1024;

/// Default bound of an unreliable consumer's queue: a few messages' worth of fresh state.
pub const DEFAULT_UNRELIABLE_QUEUE_LIMIT: usize = 16 * 1024;

/// Most bytes a reliable consumer keeps inside SCTP's buffer (str0m's association buffer is 128 KiB
/// for all streams); the rest waits in the consumer's queue.
pub const RELIABLE_SCTP_BUFFER: usize = 64 * 1024;

/// Most bytes an unreliable consumer keeps inside SCTP's buffer: little, so what reaches a slow
/// receiver is recent.
pub const UNRELIABLE_SCTP_BUFFER: usize = 4 * 1024;

/// Default low-water mark of SCTP's buffer for the `BufferedAmountLow` report.
pub const DEFAULT_BUFFERED_AMOUNT_LOW_THRESHOLD: usize = 16 * 1024;

/// What `consume_data` takes.
#[derive(Debug, Clone)]
pub struct DataConsumerOptions {
    pub data_producer_id: String,
    /// Override the producer's reliability (`None`: the producer's).
    pub ordered: Option<bool>,
    pub max_packet_life_time: Option<u32>,
    pub max_retransmits: Option<u32>,
    pub paused: bool,
    /// Bound of the queue; `None`: [`DEFAULT_QUEUE_LIMIT`] or, unreliable,
    /// [`DEFAULT_UNRELIABLE_QUEUE_LIMIT`].
    pub queue_limit: Option<usize>,
}

impl DataConsumerOptions {
    pub fn new(data_producer_id: impl Into<String>) -> Self {
        DataConsumerOptions {
            data_producer_id: data_producer_id.into(),
            ordered: None,
            max_packet_life_time: None,
            max_retransmits: None,
            paused: false,
            queue_limit: None,
        }
    }
}

/// What the worker says about a data consumer it created.
#[derive(Debug, Clone)]
pub(crate) struct DataConsumerCreated {
    pub sctp_stream_parameters: Option<SctpStreamParameters>,
    pub label: String,
    pub protocol: String,
    pub receiver: Option<DataReceiver>,
}

/// Statistics of a data consumer (`getDataConsumerStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub label: String,
    pub protocol: String,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub buffered_amount: usize,
    pub queued_bytes: usize,
    pub dropped: u64,
}

/// What pushing into a [`SendQueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping this many older messages (unreliable).
    DroppedOldest(usize),
    /// Refused: the queue is full (reliable), or the message alone exceeds the bound.
    Full,
}

/// A byte-bounded message queue.
#[derive(Debug)]
pub struct SendQueue {
    reliable: bool,
    limit: usize,
    messages: VecDeque<DataMessage>,
    bytes: usize,
    pub dropped: u64,
}

impl SendQueue {
    pub fn new(reliable: bool, limit: usize) -> Self {
        SendQueue {
            reliable,
            limit,
            messages: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Bytes counted for a message (an empty one still takes a slot).
    fn cost(m: &DataMessage) -> usize {
        m.data.len().max(1)
    }

    pub fn push(&mut self, message: DataMessage) -> Pushed {
        let cost = Self::cost(&message);
        if cost > self.limit {
            self.dropped += 1;
            return Pushed::Full;
        }
        let mut dropped = 0;
        while self.bytes + cost > self.limit {
            if self.reliable {
                self.dropped += 1;
                return Pushed::Full;
            }
            let Some(old) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= Self::cost(&old);
            dropped += 1;
        }
        self.dropped += dropped as u64;
        self.bytes += cost;
        self.messages.push_back(message);
        if dropped > 0 {
            Pushed::DroppedOldest(dropped)
        } else {
            Pushed::Queued
        }
    }

    pub fn front(&self) -> Option<&DataMessage> {
        self.messages.front()
    }

    pub fn pop(&mut self) -> Option<DataMessage> {
        let m = self.messages.pop_front()?;
        self.bytes -= Self::cost(&m);
        Some(m)
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }
}

#[derive(Debug)]
struct DirectShared {
    queue: Mutex<(SendQueue, bool)>,
    notify: Notify,
}

/// Messages for a data consumer on a `DirectTransport`: an async, bounded receiver.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    shared: Arc<DirectShared>,
}

impl DataReceiver {
    pub(crate) fn new(reliable: bool, limit: usize) -> Self {
        DataReceiver {
            shared: Arc::new(DirectShared {
                queue: Mutex::new((SendQueue::new(reliable, limit), false)),
                notify: Notify::new(),
            }),
        }
    }

    pub(crate) fn push(&self, message: DataMessage) -> Pushed {
        let pushed = match self.shared.queue.lock() {
            Ok(mut q) => q.0.push(message),
            Err(_) => Pushed::Full,
        };
        self.shared.notify.notify_one();
        pushed
    }

    pub(crate) fn close(&self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.1 = true;
        }
        self.shared.notify.notify_waiters();
        self.shared.notify.notify_one();
    }

    /// The next message; `None` once the consumer is closed and everything was read.
    pub async fn recv(&self) -> Option<DataMessage> {
        loop {
            let notified = self.shared.notify.notified();
            {
                let mut q = self.shared.queue.lock().ok()?;
                if let Some(m) = q.0.pop() {
                    return Some(m);
                }
                if q.1 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// A message if one is waiting.
    pub fn try_recv(&self) -> Option<DataMessage> {
        self.shared.queue.lock().ok()?.0.pop()
    }

    /// Messages dropped because the reader fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.queue.lock().map_or(0, |q| q.0.dropped)
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.queue.lock().map_or(0, |q| q.0.bytes())
    }
}

/// The control plane's handle on a data consumer.
#[derive(Debug, Clone)]
pub struct DataConsumer {
    id: String,
    data_producer_id: String,
    transport_id: String,
    sctp_stream_parameters: Option<SctpStreamParameters>,
    label: String,
    protocol: String,
    worker: Worker,
}

impl DataConsumer {
    pub(crate) fn new(
        worker: Worker,
        id: String,
        data_producer_id: String,
        transport_id: String,
        created: &DataConsumerCreated,
    ) -> Self {
        DataConsumer {
            id,
            data_producer_id,
            transport_id,
            sctp_stream_parameters: created.sctp_stream_parameters.clone(),
            label: created.label.clone(),
            protocol: created.protocol.clone(),
            worker,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn data_producer_id(&self) -> &str {
        &self.data_producer_id
    }

    pub fn transport_id(&self) -> &str {
        &self.transport_id
    }

    /// The stream the server chose (WebRTC transports; the client opens it as `negotiated`).
    pub fn sctp_stream_parameters(&self) -> Option<&SctpStreamParameters> {
        self.sctp_stream_parameters.as_ref()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    pub async fn pause(&self) -> Result<(), MediaError> {
        self.set_paused(true).await
    }

    pub async fn resume(&self) -> Result<(), MediaError> {
        self.set_paused(false).await
    }

    async fn set_paused(&self, paused: bool) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::PauseDataConsumer { id, paused, reply })
            .await?
    }

    pub async fn get_stats(&self) -> Result<Vec<DataConsumerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::DataConsumerStats { id, reply })
            .await?
    }

    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseDataConsumer { id, reply })
            .await?
    }
}

/// Where a data consumer's messages go.
#[derive(Debug)]
pub(crate) enum DataSink {
    Sctp { stream_id: u16, channel: ChannelId },
    Direct(DataReceiver),
}

/// A data consumer in its worker.
#[derive(Debug)]
pub(crate) struct DataConsumerState {
    pub id: String,
    pub data_producer: Key,
    pub transport: Key,
    pub label: String,
    pub protocol: String,
    pub paused: bool,
    pub sink: DataSink,
    pub queue: SendQueue,
    /// Most bytes kept inside SCTP's buffer for this consumer.
    pub max_buffered: usize,
    pub messages: u64,
    pub bytes: u64,
    pub last_buffered: usize,
    /// Report `BufferedAmountLow` once the queue drains (it had backed up).
    pub backed_up: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> DataMessage {
        DataMessage::binary(vec![0; n])
    }

    #[test]
    fn unreliable_queue_drops_its_oldest_to_stay_within_bounds() {
        let mut q = SendQueue::new(false, 1000);
        for i in 0..25 {
            let mut m = msg(100);
            m.data[0] = i;
            q.push(m);
        }
        assert!(q.bytes() <= 1000);
        assert_eq!(q.len(), 10);
        assert_eq!(q.dropped, 15);
        // The freshest survive.
        assert_eq!(q.front().map(|m| m.data[0]), Some(15));
    }

    #[test]
    fn reliable_queue_refuses_the_newest_when_full() {
        let mut q = SendQueue::new(true, 250);
        assert_eq!(q.push(msg(100)), Pushed::Queued);
        assert_eq!(q.push(msg(100)), Pushed::Queued);
        assert_eq!(q.push(msg(100)), Pushed::Full);
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped, 1);
        assert!(q.pop().is_some());
        assert_eq!(q.push(msg(100)), Pushed::Queued);
    }

    #[test]
    fn empty_messages_take_a_slot_and_oversize_ones_are_refused() {
        let mut q = SendQueue::new(false, 10);
        assert_eq!(q.push(DataMessage::text("")), Pushed::Queued);
        assert_eq!(q.bytes(), 1);
        assert_eq!(q.push(msg(11)), Pushed::Full);
    }

    #[tokio::test]
    async fn direct_receiver_delivers_in_order_and_ends_after_close() {
        let r = DataReceiver::new(true, 1 << 20);
        r.push(DataMessage::text("a"));
        r.push(DataMessage::text("b"));
        r.close();
        assert_eq!(r.recv().await, Some(DataMessage::text("a")));
        assert_eq!(r.recv().await, Some(DataMessage::text("b")));
        assert_eq!(r.recv().await, None);
    }
}
