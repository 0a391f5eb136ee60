//! The receiving side of retransmission on a pipe: which packets of a stream are missing and
//! when to ask for them again (RFC 4585's generic NACK). A gap in the sequence numbers makes
//! its packets missing; a NACK asks for each missing packet at once, again after `retry`, at
//! most `tries` times and for at most `max_age`; a packet that arrives (late or resent) is no
//! longer missing. Pure arithmetic on extended sequence numbers and the caller's clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a [`NackGenerator`] asks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NackPolicy {
    pub retry: Duration,
    pub tries: u8,
    pub max_age: Duration,
    /// A larger gap than this is a restart of the stream, not loss: nothing is asked for.
    pub max_missing: usize,
    /// At most this many are asked for at once (one NACK within a datagram); the others wait
    /// for the next call.
    pub max_per_call: usize,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    asked: Option<Instant>,
    tries: u8,
}

/// The missing packets of one stream.
#[derive(Debug)]
pub(crate) struct NackGenerator {
    policy: NackPolicy,
    highest: Option<u64>,
    missing: BTreeMap<u64, Missing>,
}

impl NackGenerator {
    pub fn new(policy: NackPolicy) -> Self {
        NackGenerator {
            policy,
            highest: None,
            missing: BTreeMap::new(),
        }
    }

    /// Forgets the stream: its next packet starts it again, and nothing missing is asked for.
    pub fn restart(&mut self) {
        self.highest = None;
        self.missing.clear();
    }

    /// Packet `seq` (extended) arrived at `now`.
    pub fn on_packet(&mut self, seq: u64, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        if seq <= highest {
            self.missing.remove(&seq);
            return;
        }
        self.highest = Some(seq);
        let gap = seq - highest - 1;
        if gap as usize > self.policy.max_missing {
            self.missing.clear();
            return;
        }
        for lost in highest + 1..seq {
            self.missing.insert(
                lost,
                Missing {
                    since: now,
                    asked: None,
                    tries: 0,
                },
            );
        }
        while self.missing.len() > self.policy.max_missing {
            self.missing.pop_first();
        }
    }

    /// The packets to ask for at `now` (16-bit, oldest first): the newly missing ones and those
    /// asked for `retry` ago that did not come. Those asked for `tries` times or missing for
    /// longer than `max_age` are given up.
    pub fn due(&mut self, now: Instant) -> Vec<u16> {
        let p = self.policy;
        self.missing.retain(|_, m| {
            m.tries < p.tries && now.saturating_duration_since(m.since) <= p.max_age
        });
        let mut out = Vec::new();
        for (&seq, m) in &mut self.missing {
            if out.len() >= p.max_per_call {
                break;
            }
            if m.asked
                .is_none_or(|at| now.saturating_duration_since(at) >= p.retry)
            {
                m.asked = Some(now);
                m.tries += 1;
                out.push(seq as u16);
            }
        }
        out
    }

    /// How many packets are missing.
    #[cfg(test)]
    fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: NackPolicy = NackPolicy {
        retry: Duration::from_millis(40),
        tries: 3,
        max_age: Duration::from_secs(1),
        max_missing: 100,
        max_per_call: 4,
    };

    #[test]
    fn a_gap_is_asked_for_at_once_then_again_after_the_retry_until_it_comes() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        for seq in [10, 11, 14] {
            g.on_packet(seq, t0);
        }
        assert_eq!(g.due(t0), vec![12, 13]);
        assert_eq!(g.due(t0 + Duration::from_millis(39)), Vec::<u16>::new());
        // 12 is resent; 13 is asked for again.
        g.on_packet(12, t0 + Duration::from_millis(30));
        assert_eq!(g.due(t0 + Duration::from_millis(40)), vec![13]);
        g.on_packet(13, t0 + Duration::from_millis(50));
        assert_eq!(g.due(t0 + Duration::from_millis(100)), Vec::<u16>::new());
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn a_restarted_stream_forgets_what_was_missing_and_does_not_ask_for_the_gap_after_it() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        for seq in [10, 12] {
            g.on_packet(seq, t0);
        }
        g.restart();
        assert_eq!(g.due(t0), Vec::<u16>::new(), "11 is no longer asked for");
        // The stream goes on 40 packets later (a pipe resumed): no gap.
        g.on_packet(52, t0);
        g.on_packet(53, t0);
        assert_eq!(g.due(t0), Vec::<u16>::new());
        g.on_packet(55, t0);
        assert_eq!(g.due(t0), vec![54], "loss after the restart is asked for");
    }

    #[test]
    fn a_packet_is_given_up_after_its_tries_or_its_age() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        g.on_packet(1, t0);
        g.on_packet(3, t0);
        let mut asked = 0;
        for i in 0..10 {
            asked += g.due(t0 + Duration::from_millis(40 * i)).len();
        }
        assert_eq!(asked, 3, "three tries");
        assert_eq!(g.missing(), 0);
        g.on_packet(5, t0);
        assert_eq!(g.due(t0 + Duration::from_millis(1001)), Vec::<u16>::new());
    }

    #[test]
    fn a_gap_longer_than_the_limit_is_a_restart_and_nothing_is_asked() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        g.on_packet(1, t0);
        g.on_packet(3, t0);
        g.on_packet(3 + 102, t0);
        assert_eq!(g.due(t0), Vec::<u16>::new());
        // A late packet and a repeated one change nothing.
        g.on_packet(2, t0);
        g.on_packet(105, t0);
        assert_eq!(g.missing(), 0);
    }

    #[test]
    fn at_most_max_per_call_are_asked_for_at_once_and_the_rest_next_time() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        g.on_packet(0, t0);
        g.on_packet(7, t0);
        assert_eq!(g.due(t0), vec![1, 2, 3, 4]);
        assert_eq!(g.due(t0), vec![5, 6]);
        assert_eq!(g.due(t0), Vec::<u16>::new());
    }

    #[test]
    fn sequence_numbers_are_asked_for_across_the_wrap() {
        let t0 = Instant::now();
        let mut g = NackGenerator::new(POLICY);
        g.on_packet(65_534, t0);
        g.on_packet(65_537, t0);
        assert_eq!(g.due(t0), vec![65_535, 0]);
    }
}
