//! Simulcast layer selection, sans IO: which spatial layer a consumer should receive, from the
//! producer's live layers, the consumer's preference and its share of the egress bandwidth.
//!
//! Rules (mediasoup's, simplified):
//! - only layers that are receiving media count (Chromium stops its top layer under loss or low
//!   uplink bandwidth; a consumer pinned to it would starve), and never above the preference;
//! - without a bandwidth estimate, the highest such layer;
//! - with one, the highest layer whose measured bitrate fits; going *up* needs
//!   `MediaSettings::upgrade_headroom` above the layer's bitrate and the current layer is kept down to
//!   `downgrade_tolerance` of it, so an estimate hovering at a layer's bitrate does not flap;
//!   if none fits, the lowest live layer (something beats nothing);
//! - if no layer at or below the preference is live, the lowest live layer above it.

use crate::settings::DEFAULTS;
use std::time::{Duration, Instant};

/// What the selector knows of one producer layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerStatus {
    pub active: bool,
    /// Measured bitrate, bits per second.
    pub bitrate: u64,
}

/// The spatial layer to send, or `None` when no layer is live.
pub fn select_spatial_layer(
    layers: &[LayerStatus],
    preferred: usize,
    current: Option<usize>,
    available_bitrate: Option<u64>,
) -> Option<usize> {
    let live: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].active).collect();
    let candidates: Vec<usize> = live.iter().copied().filter(|&i| i <= preferred).collect();
    if candidates.is_empty() {
        return live.first().copied();
    }
    let Some(available) = available_bitrate else {
        return candidates.last().copied();
    };
    let fits = |i: usize| {
        let needed = layers[i].bitrate as f64;
        let headroom = match current {
            Some(c) if i == c => DEFAULTS.downgrade_tolerance,
            Some(c) if i < c => 1.0,
            _ => DEFAULTS.upgrade_headroom,
        };
        available as f64 >= needed * headroom
    };
    candidates
        .iter()
        .rev()
        .copied()
        .find(|&i| fits(i))
        .or(candidates.first().copied())
}

/// Bitrate over a sliding window, for a producer layer or a consumer.
#[derive(Debug, Clone)]
pub struct RateCalculator {
    window: Duration,
    /// (when, bytes) per bucket of `window / BUCKETS`.
    buckets: [(Option<Instant>, u64); Self::BUCKETS],
    /// First sample: until a whole window has passed, the rate is over the time since then.
    last: Option<Instant>,
    /// The bucket written last, with its span (start inclusive, end exclusive): a sample within
    /// it is added without the division that finds a bucket (one per packet and consumer).
    current: Option<(usize, Instant, Instant)>,
}

impl RateCalculator {
    const BUCKETS: usize = 10;

    pub fn new(window: Duration) -> Self {
        RateCalculator {
            window,
            buckets: [(None, 0); Self::BUCKETS],
            last: None,
            current: None,
        }
    }

    fn bucket_len(&self) -> Duration {
        self.window / Self::BUCKETS as u32
    }

    fn index(&self, now: Instant, origin: Instant) -> (usize, Instant) {
        let len = self.bucket_len().as_nanos().max(1);
        let n = now.saturating_duration_since(origin).as_nanos() / len;
        let start = origin + Duration::from_nanos((n * len) as u64);
        ((n as usize) % Self::BUCKETS, start)
    }

    pub fn add(&mut self, bytes: usize, now: Instant) {
        if let Some((i, start, end)) = self.current
            && now >= start
            && now < end
        {
            self.buckets[i].1 += bytes as u64;
            return;
        }
        let origin = *self.last.get_or_insert(now);
        let (i, start) = self.index(now, origin);
        let b = &mut self.buckets[i];
        if b.0 != Some(start) {
            *b = (Some(start), 0);
        }
        b.1 += bytes as u64;
        self.current = Some((i, start, start + self.bucket_len()));
    }

    /// Bits per second over the last window.
    pub fn rate(&self, now: Instant) -> u64 {
        let bytes: u64 = self
            .buckets
            .iter()
            .filter(|(t, _)| t.is_some_and(|t| now.saturating_duration_since(t) < self.window))
            .map(|(_, b)| *b)
            .sum();
        let span = self
            .last
            .map_or(self.window, |first| now.saturating_duration_since(first))
            .clamp(self.bucket_len(), self.window);
        (bytes * 8 * 1000) / (span.as_millis().max(1) as u64)
    }
}

/// Bitrate of a running byte count over about a window, from samples of the count taken on the
/// worker's tick: nothing per packet, where [`RateCalculator`] adds each one. For consumers,
/// whose byte count is kept anyway and which are many per packet (a `RateCalculator` each made
/// the fan-out touch a further cache line per consumer).
#[derive(Debug, Clone)]
pub struct SampledRate {
    window: Duration,
    /// (when, count), oldest first: spaced at least a quarter window apart, and the oldest the
    /// newest one at least a window old once there is one.
    samples: [(Instant, u64); Self::SAMPLES],
    len: usize,
}

impl SampledRate {
    const SAMPLES: usize = 6;

    /// A count that is 0 at `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        SampledRate {
            window,
            samples: [(now, 0); Self::SAMPLES],
            len: 1,
        }
    }

    /// Records the count at `now` (a quarter window after the last sample, else ignored).
    pub fn sample(&mut self, now: Instant, count: u64) {
        let last = self.samples[self.len - 1].0;
        if now.saturating_duration_since(last) < self.window / 4 {
            return;
        }
        while self.len > 1
            && (self.len == Self::SAMPLES
                || now.saturating_duration_since(self.samples[1].0) >= self.window)
        {
            self.samples.copy_within(1..self.len, 0);
            self.len -= 1;
        }
        self.samples[self.len] = (now, count);
        self.len += 1;
    }

    /// Bits per second from the oldest sample to `now`, when the count is `count`: over one to
    /// one and a quarter windows, or the count's age when younger (at least a tenth window).
    pub fn rate(&self, now: Instant, count: u64) -> u64 {
        let (at, then) = self.samples[0];
        let span = now
            .saturating_duration_since(at)
            .max(self.window / 10)
            .as_millis()
            .max(1);
        count.saturating_sub(then) * 8 * 1000 / span as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(spec: &[(bool, u64)]) -> Vec<LayerStatus> {
        spec.iter()
            .map(|&(active, bitrate)| LayerStatus { active, bitrate })
            .collect()
    }

    #[test]
    fn without_an_estimate_the_highest_live_preferred_layer_is_chosen() {
        let l = layers(&[(true, 150_000), (true, 500_000), (true, 1_500_000)]);
        assert_eq!(select_spatial_layer(&l, 2, None, None), Some(2));
        assert_eq!(select_spatial_layer(&l, 1, None, None), Some(1));
    }

    #[test]
    fn a_stopped_top_layer_drops_the_consumer_to_the_next_live_one() {
        let l = layers(&[(true, 150_000), (true, 500_000), (false, 0)]);
        assert_eq!(select_spatial_layer(&l, 2, Some(2), None), Some(1));
    }

    #[test]
    fn low_bandwidth_picks_the_layer_that_fits_and_recovers_with_headroom() {
        let l = layers(&[(true, 150_000), (true, 500_000), (true, 1_500_000)]);
        assert_eq!(select_spatial_layer(&l, 2, Some(2), Some(600_000)), Some(1));
        assert_eq!(select_spatial_layer(&l, 2, Some(1), Some(100_000)), Some(0));
        // At exactly the top layer's bitrate, no upgrade; with headroom, yes.
        assert_eq!(
            select_spatial_layer(&l, 2, Some(1), Some(1_500_000)),
            Some(1)
        );
        assert_eq!(
            select_spatial_layer(&l, 2, Some(1), Some(1_800_000)),
            Some(2)
        );
        // Staying on a layer needs no headroom.
        assert_eq!(
            select_spatial_layer(&l, 2, Some(2), Some(1_500_000)),
            Some(2)
        );
    }

    #[test]
    fn an_estimate_wobbling_just_below_the_current_layer_keeps_it() {
        let l = layers(&[(true, 150_000), (true, 500_000), (true, 1_500_000)]);
        // 95 % of the current layer's bitrate: kept; 85 %: down.
        assert_eq!(select_spatial_layer(&l, 2, Some(1), Some(475_000)), Some(1));
        assert_eq!(select_spatial_layer(&l, 2, Some(1), Some(425_000)), Some(0));
        // The tolerance is for the current layer only: from layer 0, 475k is not enough for 1.
        assert_eq!(select_spatial_layer(&l, 2, Some(0), Some(475_000)), Some(0));
    }

    #[test]
    fn nothing_live_at_or_below_the_preference_falls_back_to_the_lowest_live() {
        let l = layers(&[(false, 0), (false, 0), (true, 1_500_000)]);
        assert_eq!(select_spatial_layer(&l, 0, None, None), Some(2));
        let none = layers(&[(false, 0), (false, 0)]);
        assert_eq!(select_spatial_layer(&none, 1, None, None), None);
    }

    #[test]
    fn rate_calculator_measures_bits_per_second_over_its_window() {
        let t0 = Instant::now();
        let mut r = RateCalculator::new(Duration::from_secs(1));
        for i in 0..100u64 {
            r.add(1250, t0 + Duration::from_millis(i * 10));
        }
        let now = t0 + Duration::from_millis(999);
        let rate = r.rate(now);
        assert!((900_000..=1_010_000).contains(&rate), "{rate}");
        assert_eq!(r.rate(t0 + Duration::from_secs(5)), 0);
    }

    #[test]
    fn samples_at_irregular_times_are_counted_in_the_buckets_of_their_time() {
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        let len = window / 10;
        let mut r = RateCalculator::new(window);
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        let mut t = t0;
        let mut x: u64 = 7;
        for _ in 0..2000 {
            // Gaps of 0 to 9 ms, sometimes 0.4 s (a stream pausing).
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let gap = if x >> 60 == 0 {
                400_000
            } else {
                (x >> 33) % 10_000
            };
            t += Duration::from_micros(gap);
            let bytes = 100 + (x >> 50) % 1200;
            r.add(bytes as usize, t);
            samples.push((t, bytes));
            // What the window holds: the samples whose bucket (counted from the first
            // sample) began less than a window ago.
            let origin = samples[0].0;
            let held: u64 = samples
                .iter()
                .filter(|(at, _)| {
                    let n = (at.duration_since(origin).as_nanos() / len.as_nanos()) as u32;
                    t.duration_since(origin + len * n) < window
                })
                .map(|(_, b)| b)
                .sum();
            let span = t.duration_since(origin).clamp(len, window);
            assert_eq!(r.rate(t), held * 8 * 1000 / span.as_millis() as u64);
        }
    }

    #[test]
    fn a_young_stream_is_measured_over_its_own_age() {
        let t0 = Instant::now();
        let mut r = RateCalculator::new(Duration::from_secs(1));
        for i in 0..20u64 {
            r.add(1250, t0 + Duration::from_millis(i * 10));
        }
        // 20 packets of 10 kbit in 200 ms: 1 Mbit/s, not 200 kbit/s.
        let rate = r.rate(t0 + Duration::from_millis(200));
        assert!((900_000..=1_100_000).contains(&rate), "{rate}");
    }

    #[test]
    fn a_sampled_rate_measures_a_steady_count_over_about_its_window() {
        let t0 = Instant::now();
        let tick = Duration::from_millis(250);
        let mut r = SampledRate::new(Duration::from_secs(1), t0);
        // 1 Mbit/s: 125 bytes a millisecond, sampled each tick for 10 s.
        for i in 1..=40u32 {
            let now = t0 + tick * i;
            r.sample(now, 125 * now.duration_since(t0).as_millis() as u64);
        }
        let now = t0 + Duration::from_millis(10_100);
        assert_eq!(r.rate(now, 125 * 10_100), 1_000_000);
        // The window's samples, not the whole history: 2 Mbit/s from 10.1 s on.
        let count = |ms: u64| 125 * 10_100 + 250 * (ms - 10_100);
        for ms in (10_250..=12_000).step_by(250) {
            r.sample(t0 + Duration::from_millis(ms), count(ms));
        }
        assert_eq!(
            r.rate(t0 + Duration::from_millis(12_000), count(12_000)),
            2_000_000
        );
    }

    #[test]
    fn a_sampled_rate_falls_to_zero_a_window_after_the_count_stops() {
        let t0 = Instant::now();
        let mut r = SampledRate::new(Duration::from_secs(1), t0);
        r.sample(t0 + Duration::from_millis(250), 10_000);
        r.sample(t0 + Duration::from_millis(500), 20_000);
        for ms in (750..=2_000).step_by(250) {
            r.sample(t0 + Duration::from_millis(ms), 20_000);
        }
        assert_eq!(r.rate(t0 + Duration::from_millis(2_000), 20_000), 0);
    }

    #[test]
    fn a_young_count_is_measured_over_its_own_age_and_samples_closer_than_a_quarter_window_are_ignored()
     {
        let t0 = Instant::now();
        let mut r = SampledRate::new(Duration::from_secs(1), t0);
        // 25 kB in 200 ms before any sample: 1 Mbit/s, not 200 kbit/s.
        assert_eq!(r.rate(t0 + Duration::from_millis(200), 25_000), 1_000_000);
        r.sample(t0 + Duration::from_millis(100), 12_500);
        assert_eq!(r.len, 1);
        // A tenth of the window at least: a count 1 ms old is not a huge rate.
        assert_eq!(r.rate(t0 + Duration::from_millis(1), 125), 10_000);
    }
}
