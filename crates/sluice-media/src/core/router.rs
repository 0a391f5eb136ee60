//! A router in the core ([`RouterState`]): a room's media codecs (its RTP capabilities), the
//! transports, producers and data producers on it, and its active-speaker observer.

use std::collections::HashSet;
use std::sync::Arc;

use sluice_ortc::{RtpCapabilities, RtpCodecCapability};

use crate::error::MediaError;
use crate::settings::DEFAULTS;
use crate::types::Key;

/// Generates the router's capabilities, reporting bad codecs as [`MediaError::InvalidMediaCodecs`].
pub(crate) fn router_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities, MediaError> {
    sluice_ortc::generate_router_rtp_capabilities(media_codecs)
        .map_err(|e| MediaError::InvalidMediaCodecs(e.into()))
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
        if now.saturating_duration_since(started) < DEFAULTS.speaker_interval {
            return None;
        }
        self.started = Some(now);
        let loudest = self
            .levels
            .drain()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (sum, n))| (k, (sum / i64::from(n)) as i8))
            .filter(|(_, v)| *v > DEFAULTS.speaker_threshold)
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

    #[test]
    fn bad_media_codecs_keep_the_ortc_error_as_the_typed_source() {
        let codecs: Vec<RtpCodecCapability> = serde_json::from_str(
            r#"[{"kind":"audio","mimeType":"audio/nonsense","clockRate":48000}]"#,
        )
        .expect("parses");
        let err = router_capabilities(&codecs).expect_err("unsupported codec");
        let source = std::error::Error::source(&err).expect("a source");
        let ortc = std::error::Error::source(source)
            .and_then(|s| s.downcast_ref::<sluice_ortc::OrtcError>());
        assert!(
            matches!(ortc, Some(sluice_ortc::OrtcError::UnsupportedCodec { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("invalid router media codecs: "),
            "{err}"
        );
    }
}
