//! Refuses cluster events that were delivered before or are too old. Each node stamps what it
//! publishes with its boot (a random number drawn when it starts), a sequence number and its
//! clock ([`Stamp`], signed with the event); a receiving node keeps, for each sender's boot, the
//! highest sequence number it took and which of the [`WINDOW`] numbers below it it took too,
//! the way SRTP's replay list works (RFC 3711 §3.3.2), and refuses stamps further than
//! `max_age` from its own clock. So a recorded event published again is refused: within
//! `max_age` by the window, after it by its age. Pure arithmetic: the caller gives the time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How many sequence numbers below the highest a sender's window remembers: events published
/// concurrently may arrive out of order by this much and still be taken.
pub const WINDOW: u64 = 128;

/// Who sent an event, and when: signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    pub node: String,
    pub boot: u64,
    pub seq: u64,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_ms: u64,
}

/// Why a signed event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the event was sent further from this node's clock than the allowed age")]
    Stale,
    #[error("the event was delivered before")]
    Replayed,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
        }
    }
}

/// One sender boot's window.
#[derive(Debug)]
struct Window {
    highest: u64,
    /// Bit `i` set: `highest - i` was taken.
    taken: u128,
    /// When this node last took an event of it.
    last_ms: u64,
}

/// The windows of the senders heard from within twice the allowed age.
#[derive(Debug)]
pub struct ReplayGuard {
    max_age_ms: u64,
    senders: HashMap<(String, u64), Window>,
    pruned_ms: u64,
}

impl ReplayGuard {
    pub fn new(max_age_ms: u64) -> Self {
        ReplayGuard {
            max_age_ms,
            senders: HashMap::new(),
            pruned_ms: 0,
        }
    }

    /// Takes the event stamped `stamp` at `now_ms`, or says why not.
    pub fn accept(&mut self, stamp: &Stamp, now_ms: u64) -> Result<(), Refusal> {
        if stamp.sent_ms.abs_diff(now_ms) > self.max_age_ms {
            return Err(Refusal::Stale);
        }
        self.prune(now_ms);
        let key = (stamp.node.clone(), stamp.boot);
        let Some(w) = self.senders.get_mut(&key) else {
            self.senders.insert(
                key,
                Window {
                    highest: stamp.seq,
                    taken: 1,
                    last_ms: now_ms,
                },
            );
            return Ok(());
        };
        if stamp.seq > w.highest {
            let shift = stamp.seq - w.highest;
            w.taken = if shift >= WINDOW { 0 } else { w.taken << shift };
            w.taken |= 1;
            w.highest = stamp.seq;
        } else {
            let back = w.highest - stamp.seq;
            // Below the window nothing can be told apart: refused, as SRTP does.
            if back >= WINDOW {
                return Err(Refusal::Replayed);
            }
            let bit = 1u128 << back;
            if w.taken & bit != 0 {
                return Err(Refusal::Replayed);
            }
            w.taken |= bit;
        }
        w.last_ms = now_ms;
        Ok(())
    }

    /// How many sender boots are remembered.
    #[cfg(test)]
    fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Forgets the senders last heard from more than twice the allowed age ago (at most once per
    /// allowed age). Safe: every event they sent before was taken by then, so it was sent before
    /// `now_ms - max_age` and is refused as stale.
    fn prune(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.pruned_ms) < self.max_age_ms {
            return;
        }
        self.pruned_ms = now_ms;
        let keep = 2 * self.max_age_ms;
        self.senders
            .retain(|_, w| now_ms.saturating_sub(w.last_ms) <= keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(node: &str, boot: u64, seq: u64, sent_ms: u64) -> Stamp {
        Stamp {
            node: node.into(),
            boot,
            seq,
            sent_ms,
        }
    }

    #[test]
    fn an_event_is_taken_once() {
        let mut g = ReplayGuard::new(30_000);
        let s = stamp("n1", 7, 1, 1_000_000);
        assert_eq!(g.accept(&s, 1_000_010), Ok(()));
        assert_eq!(g.accept(&s, 1_000_020), Err(Refusal::Replayed));
        assert_eq!(g.accept(&stamp("n1", 7, 2, 1_000_000), 1_000_020), Ok(()));
    }

    #[test]
    fn events_out_of_order_within_the_window_are_each_taken_once() {
        let mut g = ReplayGuard::new(30_000);
        let now = 5_000_000;
        for seq in [10, 12, 11, 10 + WINDOW - 1, 13] {
            assert_eq!(g.accept(&stamp("n", 1, seq, now), now), Ok(()), "{seq}");
        }
        for seq in [10, 11, 12, 13, 10 + WINDOW - 1] {
            assert_eq!(
                g.accept(&stamp("n", 1, seq, now), now),
                Err(Refusal::Replayed),
                "{seq}"
            );
        }
        // 14 was never taken and is still inside the window.
        assert_eq!(g.accept(&stamp("n", 1, 14, now), now), Ok(()));
        // Once the highest is 10 + WINDOW, 10 has fallen below the window: refused unseen.
        assert_eq!(g.accept(&stamp("n", 1, 10 + WINDOW, now), now), Ok(()));
        assert_eq!(
            g.accept(&stamp("n", 1, 9, now), now),
            Err(Refusal::Replayed)
        );
        // A jump past the whole window forgets what was taken below it.
        assert_eq!(g.accept(&stamp("n", 1, 1_000, now), now), Ok(()));
        assert_eq!(g.accept(&stamp("n", 1, 999, now), now), Ok(()));
    }

    #[test]
    fn senders_and_boots_are_counted_apart() {
        let mut g = ReplayGuard::new(30_000);
        let now = 5_000_000;
        assert_eq!(g.accept(&stamp("n1", 1, 1, now), now), Ok(()));
        assert_eq!(g.accept(&stamp("n2", 1, 1, now), now), Ok(()));
        // The same node restarted: a new boot starts its numbers again.
        assert_eq!(g.accept(&stamp("n1", 2, 1, now), now), Ok(()));
        assert_eq!(g.senders(), 3);
    }

    #[test]
    fn events_sent_further_than_the_allowed_age_from_now_are_stale() {
        let mut g = ReplayGuard::new(30_000);
        let now = 5_000_000;
        assert_eq!(
            g.accept(&stamp("n", 1, 1, now - 30_001), now),
            Err(Refusal::Stale)
        );
        assert_eq!(
            g.accept(&stamp("n", 1, 2, now + 30_001), now),
            Err(Refusal::Stale)
        );
        assert_eq!(g.accept(&stamp("n", 1, 3, now - 30_000), now), Ok(()));
        assert_eq!(g.accept(&stamp("n", 1, 4, now + 30_000), now), Ok(()));
    }

    #[test]
    fn a_forgotten_senders_old_events_are_still_refused() {
        let mut g = ReplayGuard::new(30_000);
        let t0 = 5_000_000;
        let old = stamp("n", 1, 1, t0);
        assert_eq!(g.accept(&old, t0), Ok(()));
        // Another sender keeps the guard busy; n is forgotten after twice the allowed age.
        let later = t0 + 60_001;
        assert_eq!(g.accept(&stamp("m", 1, 1, later), later), Ok(()));
        assert_eq!(g.senders(), 1, "n was pruned");
        // n's old event, replayed now, is too old to be taken.
        assert_eq!(g.accept(&old, later), Err(Refusal::Stale));
    }
}
