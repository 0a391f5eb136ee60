//! `SeqManager`: maps a producer stream's sequence numbers to a consumer's, without gaps.
//!
//! A consumer's outgoing sequence numbers must be continuous even though it skips input
//! packets (pause, temporal layers it does not want, a simulcast layer switch). Like mediasoup's
//! `SeqManager`, this keeps a base (`input` ↔ `output`) set at each [`sync`](SeqManager::sync)
//! and the inputs dropped since, so a late (reordered or retransmitted) packet still gets the
//! number it would have had. Extended (64-bit) sequence numbers as str0m hands them out.

use crate::settings::DEFAULTS;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub struct SeqManager {
    /// (first input, its output) since the last sync.
    base: Option<(u64, u64)>,
    /// Inputs dropped since the base, newer than `floor`.
    dropped: BTreeSet<u64>,
    /// Inputs below this are refused (before the base, or pruned from `dropped`).
    floor: u64,
    max_input: u64,
    /// Highest output handed out; the next sync continues after it.
    max_output: u64,
}

impl SeqManager {
    /// A manager whose first output after the first sync is `initial_output`.
    pub fn new(initial_output: u64) -> Self {
        SeqManager {
            base: None,
            dropped: BTreeSet::new(),
            floor: 0,
            max_input: 0,
            max_output: initial_output.saturating_sub(1),
        }
    }

    /// The next input `input` continues right after the last output (a new stream, a resume,
    /// a layer switch). Older inputs are refused from now on.
    pub fn sync(&mut self, input: u64) {
        let out = self.max_output + 1;
        self.base = Some((input, out));
        self.dropped.clear();
        self.floor = input;
        self.max_input = input;
    }

    pub fn is_synced(&self) -> bool {
        self.base.is_some()
    }

    /// Records that `input` is skipped, so later outputs close the gap.
    pub fn drop_input(&mut self, input: u64) {
        if self.base.is_none() || input < self.floor {
            return;
        }
        self.dropped.insert(input);
        self.max_input = self.max_input.max(input);
        self.prune();
    }

    /// The output sequence number for `input`, or `None` if it is too old or precedes the sync.
    pub fn input(&mut self, input: u64) -> Option<u64> {
        let (in0, out0) = self.base?;
        if input < self.floor || self.dropped.contains(&input) {
            return None;
        }
        let skipped = self.dropped.range(in0..input).count() as u64;
        let out = out0 + (input - in0) - skipped;
        self.max_input = self.max_input.max(input);
        self.max_output = self.max_output.max(out);
        self.prune();
        Some(out)
    }

    /// The highest output so far (0 before any).
    pub fn max_output(&self) -> u64 {
        self.max_output
    }

    fn prune(&mut self) {
        let limit = self.max_input.saturating_sub(DEFAULTS.max_reorder);
        if limit <= self.floor {
            return;
        }
        // Fold the dropped inputs below `limit` into the base: move the base to `limit`.
        let Some((in0, out0)) = self.base else { return };
        if limit <= in0 {
            self.floor = limit.max(self.floor);
            return;
        }
        let skipped = self.dropped.range(in0..limit).count() as u64;
        let new_out0 = out0 + (limit - in0) - skipped;
        self.dropped = self.dropped.split_off(&limit);
        self.base = Some((limit, new_out0));
        self.floor = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_input_maps_one_to_one_from_the_initial_output() {
        let mut s = SeqManager::new(500);
        s.sync(10);
        assert_eq!(s.input(10), Some(500));
        assert_eq!(s.input(11), Some(501));
        assert_eq!(s.input(12), Some(502));
    }

    #[test]
    fn dropped_inputs_leave_no_gap_in_the_output() {
        let mut s = SeqManager::new(1);
        s.sync(100);
        assert_eq!(s.input(100), Some(1));
        s.drop_input(101);
        s.drop_input(102);
        assert_eq!(s.input(103), Some(2));
        assert_eq!(s.input(104), Some(3));
    }

    #[test]
    fn a_late_packet_gets_the_number_it_would_have_had() {
        let mut s = SeqManager::new(1);
        s.sync(100);
        assert_eq!(s.input(100), Some(1));
        s.drop_input(101);
        assert_eq!(s.input(103), Some(3));
        // 102 arrives late (reordered or recovered by RTX).
        assert_eq!(s.input(102), Some(2));
        // A dropped input stays dropped.
        assert_eq!(s.input(101), None);
    }

    #[test]
    fn sync_continues_after_the_highest_output_and_refuses_older_input() {
        let mut s = SeqManager::new(1);
        s.sync(100);
        for i in 100..110 {
            s.input(i);
        }
        assert_eq!(s.max_output(), 10);
        // A layer switch: another stream with unrelated numbers.
        s.sync(7000);
        assert_eq!(s.input(7000), Some(11));
        assert_eq!(s.input(7001), Some(12));
        assert_eq!(s.input(6999), None);
        assert_eq!(s.input(105), None);
    }

    #[test]
    fn input_far_behind_the_newest_is_refused_and_memory_stays_bounded() {
        let mut s = SeqManager::new(1);
        s.sync(0);
        for i in 0..10_000u64 {
            if i % 2 == 0 {
                s.drop_input(i);
            } else {
                assert_eq!(s.input(i), Some(i / 2 + 1));
            }
        }
        assert!(s.dropped.len() <= DEFAULTS.max_reorder as usize);
        assert_eq!(s.input(10_000 - DEFAULTS.max_reorder - 5), None);
        // 10_000 was neither seen nor dropped: it may still come, so its number is kept free.
        assert_eq!(s.input(10_001), Some(5_002));
        assert_eq!(s.input(10_000), Some(5_001));
    }

    #[test]
    fn nothing_is_output_before_the_first_sync() {
        let mut s = SeqManager::new(1);
        assert_eq!(s.input(5), None);
        assert!(!s.is_synced());
    }
}
