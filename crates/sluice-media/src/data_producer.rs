//! `DataProducer`: game data a client (over SCTP) or the server itself (on a `DirectTransport`)
//! sends into a router; its data consumers relay it.
//!
//! The worker enforces each data producer's limits: messages larger than its
//! `max_message_size` and messages beyond its rate (`max_messages_per_second`, a token bucket)
//! are dropped and counted, never queued.

use std::time::Instant;

use serde::Serialize;
use sluice_ortc::SctpStreamParameters;
use str0m::channel::ChannelId;

use crate::error::MediaError;
use crate::worker::{Command, Key, Worker};

/// The largest message a data producer accepts by default: what str0m delivers toward a browser.
pub const DEFAULT_MAX_DATA_MESSAGE_SIZE: usize = 65536;

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

/// What `produce_data` takes.
#[derive(Debug, Clone)]
pub struct DataProducerOptions {
    pub id: Option<String>,
    /// The client's stream (WebRTC transports); `None` on a `DirectTransport`.
    pub sctp_stream_parameters: Option<SctpStreamParameters>,
    pub label: String,
    pub protocol: String,
    pub paused: bool,
    /// Larger messages are dropped and counted.
    pub max_message_size: usize,
    /// Messages beyond this rate are dropped and counted; `None`: no limit.
    pub max_messages_per_second: Option<u32>,
}

impl DataProducerOptions {
    pub fn new(label: impl Into<String>) -> Self {
        DataProducerOptions {
            id: None,
            sctp_stream_parameters: None,
            label: label.into(),
            protocol: String::new(),
            paused: false,
            max_message_size: DEFAULT_MAX_DATA_MESSAGE_SIZE,
            max_messages_per_second: None,
        }
    }

    /// On a WebRTC transport: the stream the client opened.
    pub fn sctp(stream: SctpStreamParameters, label: impl Into<String>) -> Self {
        DataProducerOptions {
            sctp_stream_parameters: Some(stream),
            ..Self::new(label)
        }
    }
}

/// Statistics of a data producer (`getDataProducerStats`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerStat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: u64,
    pub label: String,
    pub protocol: String,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Dropped for being larger than `max_message_size`.
    pub dropped_oversize: u64,
    /// Dropped for exceeding `max_messages_per_second`.
    pub dropped_rate: u64,
}

/// The control plane's handle on a data producer.
#[derive(Debug, Clone)]
pub struct DataProducer {
    id: String,
    transport_id: String,
    sctp_stream_parameters: Option<SctpStreamParameters>,
    label: String,
    protocol: String,
    worker: Worker,
}

impl DataProducer {
    pub(crate) fn new(
        worker: Worker,
        id: String,
        transport_id: String,
        options: &DataProducerOptions,
    ) -> Self {
        DataProducer {
            id,
            transport_id,
            sctp_stream_parameters: options.sctp_stream_parameters.clone(),
            label: options.label.clone(),
            protocol: options.protocol.clone(),
            worker,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn transport_id(&self) -> &str {
        &self.transport_id
    }

    pub fn sctp_stream_parameters(&self) -> Option<&SctpStreamParameters> {
        self.sctp_stream_parameters.as_ref()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Sends a message to every data consumer (data producers of a `DirectTransport` only).
    pub fn send(&self, message: DataMessage) -> Result<(), MediaError> {
        self.worker.send(Command::DirectSend {
            data_producer_id: self.id.clone(),
            message,
        })
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
            .request(|reply| Command::PauseDataProducer { id, paused, reply })
            .await?
    }

    pub async fn get_stats(&self) -> Result<Vec<DataProducerStat>, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::DataProducerStats { id, reply })
            .await?
    }

    /// Closes it; its data consumers close with `CloseReason::ProducerClosed`.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseDataProducer { id, reply })
            .await?
    }
}

/// A token bucket: `rate` messages per second, bursts of up to one second's worth.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate: u32, now: Instant) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(rate.max(1)),
            last: now,
        }
    }

    /// Takes a token if one is left.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A data producer in its worker.
#[derive(Debug)]
pub(crate) struct DataProducerState {
    pub id: String,
    pub transport: Key,
    pub router_id: String,
    pub stream: Option<SctpStreamParameters>,
    pub channel: Option<ChannelId>,
    pub label: String,
    pub protocol: String,
    pub paused: bool,
    pub consumers: Vec<Key>,
    pub max_message_size: usize,
    pub limiter: Option<RateLimiter>,
    pub messages: u64,
    pub bytes: u64,
    pub dropped_oversize: u64,
    pub dropped_rate: u64,
}

impl DataProducerState {
    /// Whether `message` may be relayed (size and rate limits), counting it either way.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if len > self.max_message_size {
            self.dropped_oversize += 1;
            return false;
        }
        if let Some(l) = &mut self.limiter
            && !l.allow(now)
        {
            self.dropped_rate += 1;
            return false;
        }
        self.messages += 1;
        self.bytes += len as u64;
        true
    }

    pub fn stats(&self, timestamp: u64) -> DataProducerStat {
        DataProducerStat {
            kind: "data-producer",
            timestamp,
            label: self.label.clone(),
            protocol: self.protocol.clone(),
            messages_received: self.messages,
            bytes_received: self.bytes,
            dropped_oversize: self.dropped_oversize,
            dropped_rate: self.dropped_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_allows_its_rate_and_refills_over_time() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, t0);
        let allowed = (0..20).filter(|_| l.allow(t0)).count();
        assert_eq!(allowed, 10);
        assert!(!l.allow(t0 + Duration::from_millis(50)));
        assert!(l.allow(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn ppids_follow_mediasoup() {
        assert_eq!(DataMessage::text("a").ppid(), 51);
        assert_eq!(DataMessage::binary(vec![1]).ppid(), 53);
        assert_eq!(DataMessage::text("").ppid(), 56);
        assert_eq!(DataMessage::binary(vec![]).ppid(), 57);
    }
}
