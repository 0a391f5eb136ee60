//! The arena's rules: a server-authoritative game (see `main.rs`).
//!
//! Players send where they want to go on `arena.input` (JSON text `{"dx": -1..1, "dy": -1..1}`,
//! kept until the next one); every tick the server moves each player at `SPEED` units per second
//! in that direction, inside the square `0..SIZE`, sets its position for interest management,
//! and 20 times per second sends everyone the world on `arena.state`, unreliably (the next
//! snapshot replaces a lost one): `{"tick": n, "size": SIZE, "players": {"peerId": [x, y], …}}`.

use std::collections::BTreeMap;
use std::time::Instant;

use sluice_media::DataMessage;
use sluice_server::game::{Game, GameLogic, GameOutput, GameSpec, To};
use sluice_server::interest::Position;

pub const INPUT_LABEL: &str = "arena.input";
pub const STATE_LABEL: &str = "arena.state";
/// The world is the square 0..SIZE (the game's units, as the interest radii).
pub const SIZE: f32 = 200.0;
/// Units per second at full input.
pub const SPEED: f32 = 40.0;
pub const TICK_HZ: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Player {
    pub x: f32,
    pub y: f32,
    /// The direction asked for, each in -1..=1.
    pub dx: f32,
    pub dy: f32,
}

/// The arena of one room.
#[derive(Debug, Default)]
pub struct Arena {
    pub players: BTreeMap<String, Player>,
    pub tick: u64,
    last: Option<Instant>,
    joined: u64,
}

/// An input message's direction, each component clamped to -1..=1; `None` if it is not one.
pub fn parse_input(message: &DataMessage) -> Option<(f32, f32)> {
    let value: serde_json::Value = serde_json::from_slice(&message.data).ok()?;
    let component = |name: &str| -> Option<f32> {
        let v = value.get(name)?.as_f64()? as f32;
        v.is_finite().then(|| v.clamp(-1.0, 1.0))
    };
    Some((component("dx")?, component("dy")?))
}

impl Arena {
    /// Where the n-th player to join starts: spread on a circle around the centre.
    fn spawn(n: u64) -> (f32, f32) {
        let angle = n as f32 * 2.399_963; // the golden angle: no two spawn points coincide
        let r = SIZE * 0.35;
        (SIZE / 2.0 + r * angle.cos(), SIZE / 2.0 + r * angle.sin())
    }

    /// The world as `arena.state` carries it.
    pub fn snapshot(&self) -> String {
        let players: serde_json::Map<String, serde_json::Value> = self
            .players
            .iter()
            .map(|(id, p)| (id.clone(), serde_json::json!([p.x, p.y])))
            .collect();
        serde_json::json!({ "tick": self.tick, "size": SIZE, "players": players }).to_string()
    }
}

impl GameLogic for Arena {
    fn spec(&self) -> GameSpec {
        GameSpec {
            inputs: vec![INPUT_LABEL.into()],
            outputs: vec![GameOutput::unreliable(STATE_LABEL)],
            tick_hz: TICK_HZ,
        }
    }

    fn on_join(&mut self, game: &mut Game, peer_id: &str) {
        let (x, y) = Self::spawn(self.joined);
        self.joined += 1;
        let player = Player {
            x,
            y,
            dx: 0.0,
            dy: 0.0,
        };
        self.players.insert(peer_id.to_owned(), player);
        game.set_position(peer_id, Some(Position::new(x, y, 0.0)));
    }

    fn on_leave(&mut self, _game: &mut Game, peer_id: &str) {
        self.players.remove(peer_id);
    }

    fn on_message(&mut self, _game: &mut Game, peer_id: &str, _label: &str, m: DataMessage) {
        if let (Some(player), Some((dx, dy))) = (self.players.get_mut(peer_id), parse_input(&m)) {
            player.dx = dx;
            player.dy = dy;
        }
    }

    fn on_tick(&mut self, game: &mut Game, now: Instant) {
        let dt = self
            .last
            .map_or(0.0, |last| {
                now.saturating_duration_since(last).as_secs_f32()
            })
            .min(0.25); // a stalled task does not teleport anyone
        self.last = Some(now);
        self.tick += 1;
        for (id, p) in &mut self.players {
            if p.dx == 0.0 && p.dy == 0.0 {
                continue;
            }
            let len = (p.dx * p.dx + p.dy * p.dy).sqrt().max(1.0);
            p.x = (p.x + p.dx / len * SPEED * dt).clamp(0.0, SIZE);
            p.y = (p.y + p.dy / len * SPEED * dt).clamp(0.0, SIZE);
            game.set_position(id, Some(Position::new(p.x, p.y, 0.0)));
        }
        game.send(To::All, STATE_LABEL, DataMessage::text(self.snapshot()));
    }
}
