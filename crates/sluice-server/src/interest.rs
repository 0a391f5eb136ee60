//! Interest management: which players hear and see which, from their positions. Sans-IO: the
//! room gives it positions and asks it to [`Interest::evaluate`] at its rate; it answers with
//! the changes, which the room applies by pausing and resuming consumers.
//!
//! For each subscriber, the publishers within `audio_radius` (`video_radius`) are audible
//! (visible), at most the `max_audible` (`max_visible`) nearest. A publisher already audible
//! stays so until it is `hysteresis` beyond the radius, and counts as that much nearer when the
//! nearest are picked, so a player at the edge does not flap. A player without a position (not
//! in the world, e.g. a spectator) is heard and seen by everyone and hears and sees everyone.
//!
//! Cost: positions go into a uniform grid whose cells are as wide as the largest radius plus the
//! hysteresis, so each subscriber looks at the 3×3 cells around it (3×3×3 in 3D): O(players ·
//! neighbours) per evaluation, not O(players²).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// A player's position in the game's world (its units).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub x: f32,
    pub y: f32,
    pub z: f32,
}

impl Position {
    pub fn new(x: f32, y: f32, z: f32) -> Self {
        Position { x, y, z }
    }

    fn distance(&self, other: &Position) -> f32 {
        let (dx, dy, dz) = (self.x - other.x, self.y - other.y, self.z - other.z);
        (dx * dx + dy * dy + dz * dz).sqrt()
    }

    fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.z.is_finite()
    }
}

/// What is heard or seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sense {
    Audio,
    Video,
}

/// The tuning of one room's interest management (`[interest]`, docs/config.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InterestSettings {
    pub audio_radius: f32,
    pub video_radius: f32,
    pub max_audible: usize,
    pub max_visible: usize,
    pub hysteresis: f32,
    /// Prefer a lower spatial layer of a visible player's video with distance (see
    /// [`Interest::video_layers`]).
    pub video_layers_by_distance: bool,
}

impl InterestSettings {
    fn radius(&self, sense: Sense) -> f32 {
        match sense {
            Sense::Audio => self.audio_radius,
            Sense::Video => self.video_radius,
        }
    }

    fn max(&self, sense: Sense) -> usize {
        match sense {
            Sense::Audio => self.max_audible,
            Sense::Video => self.max_visible,
        }
    }
}

/// One change of interest: `subscriber` now does (`on`) or no longer does hear or see
/// `publisher`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub subscriber: String,
    pub publisher: String,
    pub sense: Sense,
    pub on: bool,
}

/// The spatial layer preferred for the video of a visible player: the top one (`u8::MAX`, which
/// the consumer clamps to what the producer sends) within a third of `video_radius`, layer 1 up
/// to two thirds, layer 0 beyond.
pub const TOP_LAYER: u8 = u8::MAX;

/// `subscriber` should now receive `publisher`'s video at most at `spatial_layer`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayerChange {
    pub subscriber: String,
    pub publisher: String,
    pub spatial_layer: u8,
}

/// The interest state of one room.
#[derive(Debug)]
pub struct Interest {
    settings: InterestSettings,
    /// Everyone in the room, with a position or not.
    players: HashMap<String, Option<Position>>,
    /// Per subscriber and sense: the positioned publishers it hears / sees now.
    current: HashMap<(String, Sense), HashSet<String>>,
    /// The players that had a position at the last evaluation.
    positioned: HashSet<String>,
    /// Per (subscriber, publisher): the spatial layer last reported, if not [`TOP_LAYER`].
    layers: HashMap<(String, String), u8>,
}

/// Grid cell of a position.
type Cell = (i64, i64, i64);

impl Interest {
    pub fn new(settings: InterestSettings) -> Self {
        Interest {
            settings,
            players: HashMap::new(),
            current: HashMap::new(),
            positioned: HashSet::new(),
            layers: HashMap::new(),
        }
    }

    /// A player joined (without a position until one is set).
    pub fn add_player(&mut self, id: &str) {
        self.players.entry(id.to_owned()).or_insert(None);
    }

    /// A player left; nothing about it is reported.
    pub fn remove_player(&mut self, id: &str) {
        self.players.remove(id);
        self.positioned.remove(id);
        self.current.retain(|(s, _), set| {
            set.remove(id);
            s != id
        });
        self.layers.retain(|(s, p), _| s != id && p != id);
    }

    /// Sets (or with `None` clears) a player's position; a position with a NaN or infinite
    /// coordinate is ignored. False if the player is unknown.
    pub fn set_position(&mut self, id: &str, position: Option<Position>) -> bool {
        if position.is_some_and(|p| !p.is_finite()) {
            return false;
        }
        match self.players.get_mut(id) {
            Some(p) => {
                *p = position;
                true
            }
            None => false,
        }
    }

    pub fn position(&self, id: &str) -> Option<Position> {
        self.players.get(id).copied().flatten()
    }

    /// Whether `subscriber` hears (sees) `publisher`, as the last evaluation decided (a pair
    /// with a player that had no position then, or is unknown, is on).
    pub fn is_on(&self, subscriber: &str, publisher: &str, sense: Sense) -> bool {
        if !self.positioned.contains(subscriber) || !self.positioned.contains(publisher) {
            return true;
        }
        self.current
            .get(&(subscriber.to_owned(), sense))
            .is_some_and(|set| set.contains(publisher))
    }

    /// Decides who hears and sees whom from the positions now, and returns what changed since
    /// the last evaluation (sorted). Pairs involving a player without a position are always on
    /// and never reported.
    pub fn evaluate(&mut self) -> Vec<Change> {
        let cell_size = (self.settings.audio_radius.max(self.settings.video_radius)
            + self.settings.hysteresis.max(0.0))
        .max(f32::MIN_POSITIVE);
        let cell_of = |p: &Position| -> Cell {
            (
                (p.x / cell_size).floor() as i64,
                (p.y / cell_size).floor() as i64,
                (p.z / cell_size).floor() as i64,
            )
        };
        let mut grid: HashMap<Cell, Vec<(&str, Position)>> = HashMap::new();
        for (id, p) in &self.players {
            if let Some(p) = p {
                grid.entry(cell_of(p)).or_default().push((id.as_str(), *p));
            }
        }
        let mut next: HashMap<(String, Sense), HashSet<String>> = HashMap::new();
        let mut candidates: Vec<(f32, &str)> = Vec::new();
        for (id, p) in &self.players {
            let Some(p) = p else { continue };
            let (cx, cy, cz) = cell_of(p);
            for sense in [Sense::Audio, Sense::Video] {
                let radius = self.settings.radius(sense);
                let keep = radius + self.settings.hysteresis.max(0.0);
                let now = self.current.get(&(id.clone(), sense));
                candidates.clear();
                for dx in -1..=1 {
                    for dy in -1..=1 {
                        for dz in -1..=1 {
                            let Some(cell) = grid.get(&(cx + dx, cy + dy, cz + dz)) else {
                                continue;
                            };
                            for (other, q) in cell {
                                if *other == id.as_str() {
                                    continue;
                                }
                                let d = p.distance(q);
                                let held = now.is_some_and(|set| set.contains(*other));
                                if d <= radius || (held && d <= keep) {
                                    // Held ones count as nearer by the margin: no flapping at
                                    // the k-th place either.
                                    let rank = if held {
                                        d - self.settings.hysteresis
                                    } else {
                                        d
                                    };
                                    candidates.push((rank, other));
                                }
                            }
                        }
                    }
                }
                // Nearest first; ties by id, so the choice does not depend on hash order.
                candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
                let chosen: HashSet<String> = candidates
                    .iter()
                    .take(self.settings.max(sense))
                    .map(|(_, other)| (*other).to_owned())
                    .collect();
                if !chosen.is_empty() {
                    next.insert((id.clone(), sense), chosen);
                }
            }
        }
        let now_positioned: HashSet<String> = self
            .players
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let stable = |id: &str| now_positioned.contains(id) && self.positioned.contains(id);
        let mut changes = Vec::new();
        // Between players positioned before and now: what the sets say.
        for ((subscriber, sense), set) in &next {
            if !stable(subscriber) {
                continue;
            }
            let before = self.current.get(&(subscriber.clone(), *sense));
            for publisher in set {
                if stable(publisher) && !before.is_some_and(|b| b.contains(publisher)) {
                    changes.push(change(subscriber, publisher, *sense, true));
                }
            }
        }
        for ((subscriber, sense), before) in &self.current {
            if !stable(subscriber) {
                continue;
            }
            let after = next.get(&(subscriber.clone(), *sense));
            for publisher in before {
                if stable(publisher) && !after.is_some_and(|a| a.contains(publisher)) {
                    changes.push(change(subscriber, publisher, *sense, false));
                }
            }
        }
        // A player that got or lost its position: its pairs with every positioned player go
        // from or to "always on" (O(players) per such player, not per evaluation).
        let moved: Vec<&String> = now_positioned
            .symmetric_difference(&self.positioned)
            .filter(|id| self.players.contains_key(*id))
            .collect();
        for p in &moved {
            for q in self.players.keys() {
                if q == *p || (moved.contains(&q) && q < *p) {
                    // A pair of two movers is looked at once.
                    continue;
                }
                for (a, b) in [(*p, q), (q, *p)] {
                    for sense in [Sense::Audio, Sense::Video] {
                        let key = (a.clone(), sense);
                        let was = !(self.positioned.contains(a) && self.positioned.contains(b))
                            || self.current.get(&key).is_some_and(|s| s.contains(b));
                        let is = !(now_positioned.contains(a) && now_positioned.contains(b))
                            || next.get(&key).is_some_and(|s| s.contains(b));
                        if was != is {
                            changes.push(change(a, b, sense, is));
                        }
                    }
                }
            }
        }
        self.current = next;
        self.positioned = now_positioned;
        changes.sort();
        changes
    }
}

impl Interest {
    /// The spatial layer `subscriber` receives `publisher`'s video at, as last reported by
    /// [`Interest::video_layers`].
    pub fn video_layer(&self, subscriber: &str, publisher: &str) -> u8 {
        self.layers
            .get(&(subscriber.to_owned(), publisher.to_owned()))
            .copied()
            .unwrap_or(TOP_LAYER)
    }

    /// After [`Interest::evaluate`]: for each player seen, the spatial layer its video should be
    /// received at from its distance (see [`TOP_LAYER`]), as changes since the last call. A
    /// pair keeps its layer until the distance is `hysteresis` past a band's edge, and the layer
    /// of a pair out of sight is kept, so it comes back at the right one. Empty when
    /// `video_layers_by_distance` is off.
    pub fn video_layers(&mut self) -> Vec<LayerChange> {
        if !self.settings.video_layers_by_distance {
            return Vec::new();
        }
        let radius = self.settings.video_radius;
        let margin = self.settings.hysteresis.max(0.0);
        let mut changes = Vec::new();
        for ((subscriber, sense), set) in &self.current {
            if *sense != Sense::Video {
                continue;
            }
            let Some(Some(p)) = self.players.get(subscriber) else {
                continue;
            };
            for publisher in set {
                let Some(Some(q)) = self.players.get(publisher) else {
                    continue;
                };
                let key = (subscriber.clone(), publisher.clone());
                let before = self.layers.get(&key).copied().unwrap_or(TOP_LAYER);
                let after = layer_at(p.distance(q), radius, margin, before);
                if after != before {
                    if after == TOP_LAYER {
                        self.layers.remove(&key);
                    } else {
                        self.layers.insert(key, after);
                    }
                    changes.push(LayerChange {
                        subscriber: subscriber.clone(),
                        publisher: publisher.clone(),
                        spatial_layer: after,
                    });
                }
            }
        }
        changes.sort();
        changes
    }
}

/// The layer band of distance `d` for a radius, staying in `before`'s band until `margin` past
/// its edges.
fn layer_at(d: f32, radius: f32, margin: f32, before: u8) -> u8 {
    let (near, mid) = (radius / 3.0, radius * 2.0 / 3.0);
    let (low, high) = match before {
        TOP_LAYER => (f32::NEG_INFINITY, near + margin),
        1 => (near - margin, mid + margin),
        _ => (mid - margin, f32::INFINITY),
    };
    if d > low && d <= high {
        return before;
    }
    if d <= near {
        TOP_LAYER
    } else if d <= mid {
        1
    } else {
        0
    }
}

fn change(subscriber: &str, publisher: &str, sense: Sense, on: bool) -> Change {
    Change {
        subscriber: subscriber.to_owned(),
        publisher: publisher.to_owned(),
        sense,
        on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> InterestSettings {
        InterestSettings {
            audio_radius: 10.0,
            video_radius: 5.0,
            max_audible: 8,
            max_visible: 8,
            hysteresis: 1.0,
            video_layers_by_distance: true,
        }
    }

    fn at(x: f32) -> Option<Position> {
        Some(Position::new(x, 0.0, 0.0))
    }

    fn audio(changes: &[Change]) -> Vec<(String, String, bool)> {
        changes
            .iter()
            .filter(|c| c.sense == Sense::Audio)
            .map(|c| (c.subscriber.clone(), c.publisher.clone(), c.on))
            .collect()
    }

    fn pair(s: &str, p: &str, on: bool) -> (String, String, bool) {
        (s.to_owned(), p.to_owned(), on)
    }

    fn world(ids: &[(&str, Option<Position>)]) -> Interest {
        let mut i = Interest::new(settings());
        for (id, p) in ids {
            i.add_player(id);
            i.set_position(id, *p);
        }
        i
    }

    #[test]
    fn players_within_the_radius_hear_each_other_and_the_others_are_reported_off() {
        let mut i = world(&[("a", at(0.0)), ("b", at(8.0)), ("c", at(30.0))]);
        let changes = i.evaluate();
        // Everyone got a position: a and b stay on (nothing to report), pairs with c go off.
        assert_eq!(
            audio(&changes),
            [
                pair("a", "c", false),
                pair("b", "c", false),
                pair("c", "a", false),
                pair("c", "b", false),
            ]
        );
        assert!(i.is_on("a", "b", Sense::Audio));
        assert!(!i.is_on("a", "c", Sense::Audio));
        // Video's radius is 5: a and b do not see each other.
        assert!(!i.is_on("a", "b", Sense::Video));
        assert!(i.evaluate().is_empty(), "nothing moved, nothing changes");
    }

    #[test]
    fn crossing_the_edge_flips_once_thanks_to_the_hysteresis() {
        let mut i = world(&[("a", at(0.0)), ("b", at(9.0))]);
        i.evaluate();
        assert!(i.is_on("a", "b", Sense::Audio));
        // Just beyond the radius but within the margin: still heard.
        i.set_position("b", at(10.5));
        assert!(audio(&i.evaluate()).is_empty());
        // Beyond radius + margin: off, once.
        i.set_position("b", at(11.5));
        assert_eq!(
            audio(&i.evaluate()),
            [pair("a", "b", false), pair("b", "a", false)]
        );
        // Back within the margin is not enough to come back…
        i.set_position("b", at(10.5));
        assert!(audio(&i.evaluate()).is_empty());
        // …within the radius is.
        i.set_position("b", at(9.5));
        assert_eq!(
            audio(&i.evaluate()),
            [pair("a", "b", true), pair("b", "a", true)]
        );
    }

    #[test]
    fn only_the_k_nearest_are_heard_and_a_held_one_keeps_its_place_within_the_margin() {
        let mut s = settings();
        s.max_audible = 2;
        let mut i = Interest::new(s);
        for (id, x) in [
            ("me", 0.0),
            ("p1", 1.0),
            ("p2", 2.0),
            ("p3", 3.0),
            ("p4", 4.0),
        ] {
            i.add_player(id);
            i.set_position(id, at(x));
        }
        i.evaluate();
        let heard: Vec<&str> = ["p1", "p2", "p3", "p4"]
            .into_iter()
            .filter(|p| i.is_on("me", p, Sense::Audio))
            .collect();
        assert_eq!(heard, ["p1", "p2"]);
        // p3 comes a little nearer than p2 (by less than the margin): p2 stays.
        i.set_position("p3", at(1.8));
        i.evaluate();
        assert!(i.is_on("me", "p2", Sense::Audio));
        assert!(!i.is_on("me", "p3", Sense::Audio));
        // Clearly nearer: they swap.
        i.set_position("p3", at(0.5));
        let changes: Vec<_> = audio(&i.evaluate())
            .into_iter()
            .filter(|c| c.0 == "me")
            .collect();
        assert_eq!(changes, [pair("me", "p2", false), pair("me", "p3", true)]);
    }

    #[test]
    fn a_player_without_a_position_hears_everyone_and_is_heard_by_everyone() {
        let mut i = world(&[("a", at(0.0)), ("b", at(100.0)), ("ghost", None)]);
        i.evaluate();
        for other in ["a", "b"] {
            assert!(i.is_on("ghost", other, Sense::Audio));
            assert!(i.is_on(other, "ghost", Sense::Video));
        }
        assert!(!i.is_on("a", "b", Sense::Audio));
        // The ghost appears next to a: its pairs with b go off, with a stay on.
        i.set_position("ghost", at(1.0));
        assert_eq!(
            audio(&i.evaluate()),
            [pair("b", "ghost", false), pair("ghost", "b", false)]
        );
        // And leaves the world again: everything with it comes back on.
        i.set_position("ghost", None);
        assert_eq!(
            audio(&i.evaluate()),
            [pair("b", "ghost", true), pair("ghost", "b", true)]
        );
        // Bad coordinates are refused; unknown players too.
        assert!(!i.set_position("a", Some(Position::new(f32::NAN, 0.0, 0.0))));
        assert!(!i.set_position("nobody", at(1.0)));
    }

    #[test]
    fn a_player_who_leaves_is_forgotten_without_reports() {
        let mut i = world(&[("a", at(0.0)), ("b", at(50.0))]);
        i.evaluate();
        i.remove_player("b");
        assert!(i.evaluate().is_empty());
        i.add_player("b");
        i.set_position("b", at(50.0));
        assert_eq!(
            audio(&i.evaluate()),
            [pair("a", "b", false), pair("b", "a", false)]
        );
    }

    #[test]
    fn the_grid_finds_the_same_neighbours_as_a_full_scan() {
        // 400 players on a 20 × 20 lattice 3 units apart, radius 10, k 8: each hears exactly
        // the 8 nearest within 10 (ties broken by id), as a brute-force scan says.
        let mut s = settings();
        s.max_audible = 8;
        let mut i = Interest::new(s);
        let mut all = Vec::new();
        for gx in 0..20 {
            for gy in 0..20 {
                let id = format!("p{gx:02}-{gy:02}");
                let p = Position::new(gx as f32 * 3.0, gy as f32 * 3.0, 0.0);
                i.add_player(&id);
                i.set_position(&id, Some(p));
                all.push((id, p));
            }
        }
        i.evaluate();
        for (id, p) in &all {
            let mut near: Vec<(f32, &str)> = all
                .iter()
                .filter(|(o, _)| o != id)
                .map(|(o, q)| (p.distance(q), o.as_str()))
                .filter(|(d, _)| *d <= 10.0)
                .collect();
            near.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            let expected: HashSet<&str> = near.iter().take(8).map(|(_, o)| *o).collect();
            let got: HashSet<&str> = all
                .iter()
                .map(|(o, _)| o.as_str())
                .filter(|o| o != id && i.is_on(id, o, Sense::Audio))
                .collect();
            assert_eq!(got, expected, "{id}");
        }
    }

    #[test]
    fn video_layers_fall_with_distance_with_a_margin_and_come_back_as_players_near() {
        // video_radius 5: top layer within 5/3, layer 1 up to 10/3, layer 0 beyond; margin 1.
        let mut i = world(&[("a", at(0.0)), ("b", at(1.0))]);
        i.evaluate();
        assert!(
            i.video_layers().is_empty(),
            "near: the top layer, nothing to say"
        );
        let layer = |i: &mut Interest, x: f32| {
            i.set_position("b", at(x));
            i.evaluate();
            i.video_layers()
                .into_iter()
                .filter(|c| c.subscriber == "a")
                .map(|c| c.spatial_layer)
                .collect::<Vec<_>>()
        };
        assert_eq!(layer(&mut i, 2.5), Vec::<u8>::new(), "within the margin");
        assert_eq!(layer(&mut i, 3.0), vec![1]);
        assert_eq!(layer(&mut i, 4.0), Vec::<u8>::new(), "within the margin");
        assert_eq!(layer(&mut i, 4.5), vec![0]);
        assert_eq!(layer(&mut i, 2.5), Vec::<u8>::new(), "within the margin");
        // Out of sight: the layer is kept, and reported when it comes back nearer.
        assert_eq!(layer(&mut i, 50.0), Vec::<u8>::new());
        assert_eq!(layer(&mut i, 0.5), vec![TOP_LAYER]);
        // Both directions are reported, in order.
        i.set_position("b", at(4.5));
        i.evaluate();
        assert_eq!(
            i.video_layers(),
            vec![
                LayerChange {
                    subscriber: "a".into(),
                    publisher: "b".into(),
                    spatial_layer: 0
                },
                LayerChange {
                    subscriber: "b".into(),
                    publisher: "a".into(),
                    spatial_layer: 0
                },
            ]
        );
        i.remove_player("b");
        assert!(i.layers.is_empty(), "forgotten with the player");
        let mut off = Interest::new(InterestSettings {
            video_layers_by_distance: false,
            ..settings()
        });
        off.add_player("a");
        off.add_player("b");
        off.set_position("a", at(0.0));
        off.set_position("b", at(4.5));
        off.evaluate();
        assert!(off.video_layers().is_empty());
    }
}
