//! A data producer in the core: game data a client (over SCTP) or the server itself (on a `DirectTransport`)
//! sends into a router; its data consumers relay it.
//!
//! The core enforces each data producer's limits: messages larger than its
//! `max_message_size` and messages beyond its rate (`max_messages_per_second`, a token bucket)
//! are dropped and counted, never queued.

use std::time::Instant;

use sluice_ortc::SctpStreamParameters;
use str0m::channel::ChannelId;

use crate::core::table::Identified;
use crate::types::{DataProducerStat, Key};

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

impl Identified for DataProducerState {
    fn id(&self) -> &str {
        &self.id
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
}
