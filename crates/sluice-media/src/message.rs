//! Data-channel messages and the bounded queues they wait in: a data consumer's own queue
//! ([`SendQueue`], beyond SCTP's buffer) and the receiver of a data consumer on a
//! `DirectTransport` ([`DataReceiver`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One data-channel message: text (`binary: false`, UTF-8) or binary; may be empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    pub binary: bool,
    pub data: Vec<u8>,
}

impl DataMessage {
    pub fn text(s: impl Into<String>) -> Self {
        DataMessage {
            binary: false,
            data: s.into().into_bytes(),
        }
    }

    pub fn binary(data: impl Into<Vec<u8>>) -> Self {
        DataMessage {
            binary: true,
            data: data.into(),
        }
    }

    /// mediasoup's PPID: 51 string, 53 binary, 56 empty string, 57 empty binary.
    pub fn ppid(&self) -> u32 {
        match (self.binary, self.data.is_empty()) {
            (false, false) => 51,
            (true, false) => 53,
            (false, true) => 56,
            (true, true) => 57,
        }
    }
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

    #[test]
    fn ppids_follow_mediasoup() {
        assert_eq!(DataMessage::text("a").ppid(), 51);
        assert_eq!(DataMessage::binary(vec![1]).ppid(), 53);
        assert_eq!(DataMessage::text("").ppid(), 56);
        assert_eq!(DataMessage::binary(vec![]).ppid(), 57);
    }
}
