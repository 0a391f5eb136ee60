//! Server-authoritative game logic embedded with the server: one [`GameLogic`] per room.
//!
//! The logic is sans-IO: its hooks get what happened (a player joined or left, a message on one
//! of its input labels, a tick with the time) and a [`Game`] on which they write what should
//! happen (messages on its output labels to one player, to all, or to those near a player;
//! positions for interest management; game actions on the room's state store). The room's game
//! task calls one hook at a time and carries the outputs out after each.
//!
//! It runs on the room's DirectTransport: every player data producer on an input label is
//! consumed there and never relayed to other players, and each output label is a data producer
//! of the server that every player is offered (`newDataConsumer` with `peerId: null`, as
//! mediasoup-demo offers its bot's). A hook that panics closes the room: its players' sockets
//! close with code 1011 and the reason, and no worker is touched.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_media::DataMessage;
use tokio::sync::mpsc;

use crate::interest::Position;

/// RFC 6455 close code for "the server met an unexpected condition": a room whose game logic
/// panicked closes its peers' sockets with it.
pub const CLOSE_GAME_FAILED: u16 = 1011;

/// Messages from players waiting for the game task; beyond this the readers wait, and the
/// players' data consumers on the DirectTransport (bounded themselves) drop what does not fit.
const INPUT_QUEUE: usize = 1024;

/// A game's code, embedded with the server: one instance per room, made by the factory given to
/// [`ServerBuilder::game_logic`](crate::ServerBuilder::game_logic).
pub trait GameLogic: Send + 'static {
    /// The labels it reads and writes and its tick rate; asked once, when the room opens.
    fn spec(&self) -> GameSpec;

    /// A player joined the room (before it may have opened any data channel).
    fn on_join(&mut self, _game: &mut Game, _peer_id: &str) {}

    /// A player left the room; it is no longer in [`Game::peers`].
    fn on_leave(&mut self, _game: &mut Game, _peer_id: &str) {}

    /// A player's message on one of [`GameSpec::inputs`].
    fn on_message(
        &mut self,
        _game: &mut Game,
        _peer_id: &str,
        _label: &str,
        _message: DataMessage,
    ) {
    }

    /// The game's clock: called [`GameSpec::tick_hz`] times per second with the time now.
    fn on_tick(&mut self, _game: &mut Game, _now: Instant) {}
}

/// What a game reads, writes, and how often it ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct GameSpec {
    /// Data-channel labels whose messages go to the game (and to no other player).
    pub inputs: Vec<String>,
    /// Data-channel labels the game sends on; every player is offered one data consumer each.
    pub outputs: Vec<GameOutput>,
    /// Ticks per second (clamped to 1–1000).
    pub tick_hz: f64,
}

impl Default for GameSpec {
    fn default() -> Self {
        GameSpec {
            inputs: Vec::new(),
            outputs: Vec::new(),
            tick_hz: 20.0,
        }
    }
}

impl GameSpec {
    fn tick(&self) -> Duration {
        let hz = if self.tick_hz.is_finite() {
            self.tick_hz.clamp(1.0, 1000.0)
        } else {
            20.0
        };
        Duration::from_secs_f64(1.0 / hz)
    }
}

/// One label the game sends on, and how reliably its copies reach the players.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameOutput {
    pub label: String,
    pub ordered: bool,
    /// `Some(0)`: sent once, never retransmitted (world state that the next tick replaces).
    pub max_retransmits: Option<u32>,
}

impl GameOutput {
    /// Ordered and reliable (events that must all arrive).
    pub fn reliable(label: impl Into<String>) -> Self {
        GameOutput {
            label: label.into(),
            ordered: true,
            max_retransmits: None,
        }
    }

    /// Unordered, never retransmitted (state snapshots).
    pub fn unreliable(label: impl Into<String>) -> Self {
        GameOutput {
            label: label.into(),
            ordered: false,
            max_retransmits: Some(0),
        }
    }
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// One player.
    Peer(String),
    /// Every player.
    All,
    /// The players that hear the given one now (interest management's audio set; without
    /// interest management, everyone but it).
    Near(String),
}

/// What a hook asked for; carried out by the room after the hook returns.
#[derive(Debug, Clone, PartialEq)]
pub enum GameEffect {
    Send {
        to: To,
        label: String,
        message: DataMessage,
    },
    SetPosition {
        peer_id: String,
        position: Option<Position>,
    },
    /// A game action on the room's state store (`action` to the players, `from: null`); with
    /// `cache: Some(key)` late joiners get it too (the newest per type and key).
    Action {
        action_type: String,
        payload: Value,
        cache: Option<Option<String>>,
    },
}

/// What the game task needs of its room (the room implements it; a trait, so that this module
/// does not depend on the room's).
pub(crate) trait GameHost: Send + Sync {
    /// Carries out what a hook asked for.
    fn apply_game_effect(&self, effect: GameEffect);
    /// A hook panicked with this message: the room closes.
    fn game_failed(&self, reason: &str);
    /// A player's position, if the room knows one.
    fn position(&self, peer_id: &str) -> Option<Position>;
}

/// The game's view of its room during a hook, and where the hook writes what should happen.
pub struct Game {
    room_id: String,
    /// `None` for a detached game.
    room: Option<Weak<dyn GameHost>>,
    peers: Vec<String>,
    effects: Vec<GameEffect>,
}

impl std::fmt::Debug for Game {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Game")
            .field("room_id", &self.room_id)
            .field("peers", &self.peers)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}

impl Game {
    /// A game outside any server, to drive a [`GameLogic`] in a test: hooks write their effects
    /// here, [`Game::take_effects`] reads them.
    pub fn detached(room_id: impl Into<String>) -> Self {
        Game {
            room_id: room_id.into(),
            room: None,
            peers: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// The players in the room, in the order they joined.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// Sends a message on one of the game's output labels.
    pub fn send(&mut self, to: To, label: &str, message: DataMessage) {
        self.effects.push(GameEffect::Send {
            to,
            label: label.to_owned(),
            message,
        });
    }

    /// Sets (or with `None` clears) a player's position for interest management.
    pub fn set_position(&mut self, peer_id: &str, position: Option<Position>) {
        self.effects.push(GameEffect::SetPosition {
            peer_id: peer_id.to_owned(),
            position,
        });
    }

    /// A player's position as the room knows it (set by the game, or reported by the player on
    /// `sluice.position`); `None` without interest management.
    pub fn position(&self, peer_id: &str) -> Option<Position> {
        self.room.as_ref()?.upgrade()?.position(peer_id)
    }

    /// A game action to every player (not kept for late joiners).
    pub fn action(&mut self, action_type: &str, payload: Value) {
        self.effects.push(GameEffect::Action {
            action_type: action_type.to_owned(),
            payload,
            cache: None,
        });
    }

    /// A game action to every player, kept for late joiners (the newest per type and `key`).
    pub fn cached_action(&mut self, action_type: &str, payload: Value, key: Option<&str>) {
        self.effects.push(GameEffect::Action {
            action_type: action_type.to_owned(),
            payload,
            cache: Some(key.map(str::to_owned)),
        });
    }

    /// What the hooks asked for since the last call, oldest first.
    pub fn take_effects(&mut self) -> Vec<GameEffect> {
        std::mem::take(&mut self.effects)
    }

    /// Adds a player to [`Game::peers`] (the room's task does this before `on_join`; a test
    /// driving a logic with [`Game::detached`] does it itself).
    pub fn add_peer(&mut self, peer_id: &str) {
        if !self.peers.iter().any(|p| p == peer_id) {
            self.peers.push(peer_id.to_owned());
        }
    }

    /// Removes a player from [`Game::peers`] (before `on_leave`).
    pub fn remove_peer(&mut self, peer_id: &str) {
        self.peers.retain(|p| p != peer_id);
    }
}

/// Makes a room's game logic from its id; `None`: the room has none.
pub type GameFactory = Arc<dyn Fn(&str) -> Option<Box<dyn GameLogic>> + Send + Sync>;

/// What happened in the room, for its game task.
#[derive(Debug)]
pub(crate) enum GameEvent {
    Join(String),
    Leave(String),
}

/// A player's message on an input label.
#[derive(Debug)]
pub(crate) struct GameInput {
    pub peer_id: String,
    pub label: String,
    pub message: DataMessage,
}

/// The room's side of its game: the labels and the channels into its task.
#[derive(Debug)]
pub(crate) struct GameLink {
    pub inputs: HashSet<String>,
    pub outputs: Vec<GameOutput>,
    pub events: mpsc::UnboundedSender<GameEvent>,
    pub messages: mpsc::Sender<GameInput>,
}

/// The task's side: what it reads.
pub(crate) struct GameTask {
    logic: Box<dyn GameLogic>,
    tick: Duration,
    events: mpsc::UnboundedReceiver<GameEvent>,
    messages: mpsc::Receiver<GameInput>,
}

/// Asks `logic` for its spec and makes both sides.
pub(crate) fn link(logic: Box<dyn GameLogic>) -> (GameLink, GameTask) {
    let spec = logic.spec();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (messages_tx, messages) = mpsc::channel(INPUT_QUEUE);
    let link = GameLink {
        inputs: spec.inputs.iter().cloned().collect(),
        outputs: spec.outputs.clone(),
        events: events_tx,
        messages: messages_tx,
    };
    let task = GameTask {
        logic,
        tick: spec.tick(),
        events,
        messages,
    };
    (link, task)
}

impl GameTask {
    /// Runs the game until its room is gone or a hook panics (then the room is closed).
    pub(crate) async fn run(mut self, room: Weak<dyn GameHost>, room_id: String) {
        let mut game = Game {
            room_id,
            room: Some(room.clone()),
            peers: Vec::new(),
            effects: Vec::new(),
        };
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // Joins and leaves first, so a player's messages never reach the game before its
            // join (they cannot: its data producer comes after) or after its leave.
            let logic = &mut self.logic;
            let outcome = tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(GameEvent::Join(peer_id)) => {
                        game.add_peer(&peer_id);
                        catch_unwind(AssertUnwindSafe(|| logic.on_join(&mut game, &peer_id)))
                    }
                    Some(GameEvent::Leave(peer_id)) => {
                        if !game.peers.contains(&peer_id) {
                            continue;
                        }
                        game.remove_peer(&peer_id);
                        catch_unwind(AssertUnwindSafe(|| logic.on_leave(&mut game, &peer_id)))
                    }
                    None => break,
                },
                input = self.messages.recv() => match input {
                    Some(input) if game.peers.contains(&input.peer_id) => {
                        catch_unwind(AssertUnwindSafe(|| {
                            logic.on_message(&mut game, &input.peer_id, &input.label, input.message)
                        }))
                    }
                    Some(_) => continue,
                    None => break,
                },
                at = tick.tick() => {
                    let now = at.into_std();
                    catch_unwind(AssertUnwindSafe(|| logic.on_tick(&mut game, now)))
                }
            };
            let Some(room) = room.upgrade() else { break };
            if let Err(payload) = outcome {
                room.game_failed(&sluice_media::panic_message(payload.as_ref()));
                break;
            }
            for effect in game.take_effects() {
                room.apply_game_effect(effect);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl GameLogic for Echo {
        fn spec(&self) -> GameSpec {
            GameSpec {
                inputs: vec!["in".into()],
                outputs: vec![GameOutput::unreliable("out")],
                tick_hz: f64::NAN,
            }
        }

        fn on_message(&mut self, game: &mut Game, peer_id: &str, _label: &str, m: DataMessage) {
            game.send(To::Near(peer_id.to_owned()), "out", m);
        }
    }

    #[test]
    fn a_detached_game_collects_what_the_hooks_ask_for_in_order() {
        let mut game = Game::detached("r");
        let mut logic = Echo;
        game.add_peer("a");
        game.add_peer("a");
        game.add_peer("b");
        assert_eq!(game.peers(), ["a", "b"]);
        logic.on_message(&mut game, "a", "in", DataMessage::text("hi"));
        game.set_position("a", Some(Position::new(1.0, 2.0, 3.0)));
        game.cached_action("score", serde_json::json!(3), Some("a"));
        assert_eq!(
            game.take_effects(),
            vec![
                GameEffect::Send {
                    to: To::Near("a".into()),
                    label: "out".into(),
                    message: DataMessage::text("hi"),
                },
                GameEffect::SetPosition {
                    peer_id: "a".into(),
                    position: Some(Position::new(1.0, 2.0, 3.0)),
                },
                GameEffect::Action {
                    action_type: "score".into(),
                    payload: serde_json::json!(3),
                    cache: Some(Some("a".into())),
                },
            ]
        );
        assert!(game.take_effects().is_empty());
        game.remove_peer("a");
        assert_eq!(game.peers(), ["b"]);
        assert_eq!(game.position("b"), None, "no room: no positions");
    }

    #[test]
    fn tick_rates_are_clamped_and_a_nan_one_falls_back_to_20_hz() {
        assert_eq!(Echo.spec().tick(), Duration::from_millis(50));
        let spec = |hz| GameSpec {
            tick_hz: hz,
            ..GameSpec::default()
        };
        assert_eq!(spec(0.0).tick(), Duration::from_secs(1));
        assert_eq!(spec(1e9).tick(), Duration::from_millis(1));
        assert_eq!(spec(60.0).tick(), Duration::from_secs_f64(1.0 / 60.0));
    }
}
