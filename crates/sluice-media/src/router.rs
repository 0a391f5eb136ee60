//! `Router`: a room's media codecs (its RTP capabilities) and, in its worker, the transports,
//! producers and consumers that forward media among its peers.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use sluice_ortc::{RtpCapabilities, RtpCodecCapability};

use crate::error::MediaError;
use crate::webrtc_transport::{WebRtcTransport, WebRtcTransportOptions};
use crate::worker::{Command, Key, Worker};

/// The control plane's handle on a router living in a worker.
#[derive(Debug, Clone)]
pub struct Router {
    id: String,
    worker: Worker,
    rtp_capabilities: Arc<RtpCapabilities>,
}

/// What a router holds now (`Router::dump`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterDump {
    pub id: String,
    pub transport_ids: Vec<String>,
    pub producer_ids: Vec<String>,
    pub consumer_ids: Vec<String>,
    pub data_producer_ids: Vec<String>,
    pub data_consumer_ids: Vec<String>,
}

impl Router {
    pub(crate) fn new(id: String, worker: Worker, rtp_capabilities: Arc<RtpCapabilities>) -> Self {
        Router {
            id,
            worker,
            rtp_capabilities,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The router's capabilities, generated from its media codecs (`getRouterRtpCapabilities`).
    pub fn rtp_capabilities(&self) -> &RtpCapabilities {
        &self.rtp_capabilities
    }

    /// Whether a device with `rtp_capabilities` can consume producer `producer_id`.
    pub async fn can_consume(
        &self,
        producer_id: &str,
        rtp_capabilities: &RtpCapabilities,
    ) -> Result<bool, MediaError> {
        let router_id = self.id.clone();
        let producer_id = producer_id.to_owned();
        let caps = rtp_capabilities.clone();
        self.worker
            .request(|reply| Command::CanConsume {
                router_id,
                producer_id,
                caps,
                reply,
            })
            .await
    }

    /// Creates a WebRTC transport on this router's worker.
    pub async fn create_webrtc_transport(
        &self,
        options: WebRtcTransportOptions,
    ) -> Result<WebRtcTransport, MediaError> {
        let router_id = self.id.clone();
        let created = self
            .worker
            .request(|reply| Command::CreateWebRtcTransport {
                router_id,
                options: Box::new(options),
                reply,
            })
            .await??;
        Ok(WebRtcTransport::new(
            self.worker.clone(),
            self.id.clone(),
            self.rtp_capabilities.clone(),
            created,
        ))
    }

    /// Creates a direct (in-process) transport for server-side game data.
    pub async fn create_direct_transport(
        &self,
        events: Option<crate::events::EventSender>,
    ) -> Result<crate::direct_transport::DirectTransport, MediaError> {
        let router_id = self.id.clone();
        let id = self
            .worker
            .request(|reply| Command::CreateDirectTransport {
                router_id,
                events,
                reply,
            })
            .await??;
        Ok(crate::direct_transport::DirectTransport::new(
            self.worker.clone(),
            self.id.clone(),
            id,
        ))
    }

    pub async fn dump(&self) -> Result<RouterDump, MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::RouterDump { id, reply })
            .await?
    }

    /// Closes the router and everything on it.
    pub async fn close(&self) -> Result<(), MediaError> {
        let id = self.id.clone();
        self.worker
            .request(|reply| Command::CloseRouter { id, reply })
            .await?
    }
}

/// Generates the router's capabilities, reporting bad codecs as [`MediaError::InvalidMediaCodecs`].
pub(crate) fn router_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities, MediaError> {
    sluice_ortc::generate_router_rtp_capabilities(media_codecs)
        .map_err(|e| MediaError::InvalidMediaCodecs(e.to_string()))
}

/// The worker-side state of a router.
#[derive(Debug)]
pub(crate) struct RouterState {
    pub rtp_capabilities: Arc<RtpCapabilities>,
    pub transports: HashSet<Key>,
    pub producers: HashSet<Key>,
    pub data_producers: HashSet<Key>,
    pub events: Option<crate::events::EventSender>,
    pub speaker: SpeakerObserver,
}

/// Finds the loudest audio producer of each interval (mediasoup's AudioLevelObserver as
/// mediasoup-demo configures it: 800 ms, threshold −80 dBov, one entry), sans IO.
#[derive(Debug, Default)]
pub(crate) struct SpeakerObserver {
    /// Per producer: (sum of levels, samples) in this interval.
    levels: std::collections::HashMap<Key, (i64, u32)>,
    started: Option<std::time::Instant>,
    /// The last report: the producer and its volume, or silence.
    last: Option<Option<Key>>,
}

impl SpeakerObserver {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(800);
    /// Levels at or below this (dBov) count as silence.
    pub const THRESHOLD: i8 = -80;

    /// `level`: RFC 6464's audio level as str0m gives it, 0 (loudest) down to −127 dBov.
    pub fn record(&mut self, producer: Key, level: i8) {
        let e = self.levels.entry(producer).or_default();
        e.0 += i64::from(level.min(0));
        e.1 += 1;
    }

    /// At the end of each interval: `Some(change)` when the loudest producer changed since the
    /// last report (`Some((producer, volume))`, or `None` for silence).
    pub fn interval(&mut self, now: std::time::Instant) -> Option<Option<(Key, i8)>> {
        let started = *self.started.get_or_insert(now);
        if now.saturating_duration_since(started) < Self::INTERVAL {
            return None;
        }
        self.started = Some(now);
        let loudest = self
            .levels
            .drain()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (sum, n))| (k, (sum / i64::from(n)) as i8))
            .filter(|(_, v)| *v > Self::THRESHOLD)
            .max_by_key(|(k, v)| (*v, std::cmp::Reverse(*k)));
        let key = loudest.map(|(k, _)| k);
        if self.last == Some(key) {
            return None;
        }
        if self.last.is_none() && key.is_none() {
            // Nobody spoke yet: no need to announce silence.
            self.last = Some(None);
            return None;
        }
        self.last = Some(key);
        Some(loudest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_loudest_producer_above_the_threshold_is_reported_once_then_silence() {
        let t0 = Instant::now();
        let mut o = SpeakerObserver::default();
        assert_eq!(o.interval(t0), None);
        for _ in 0..10 {
            o.record(1, -60);
            o.record(2, -30);
            o.record(3, -100);
        }
        assert_eq!(
            o.interval(t0 + Duration::from_millis(800)),
            Some(Some((2, -30)))
        );
        o.record(2, -31);
        // Same speaker: no new report.
        assert_eq!(o.interval(t0 + Duration::from_millis(1600)), None);
        o.record(3, -110);
        assert_eq!(o.interval(t0 + Duration::from_millis(2400)), Some(None));
        assert_eq!(o.interval(t0 + Duration::from_millis(3200)), None);
    }

    #[test]
    fn nothing_is_reported_before_the_interval_ends() {
        let t0 = Instant::now();
        let mut o = SpeakerObserver::default();
        o.interval(t0);
        o.record(1, -10);
        assert_eq!(o.interval(t0 + Duration::from_millis(100)), None);
    }
}
