//! Server-authoritative game logic in a room (`sluice_server::game`): players' inputs reach the
//! logic and no other player, its messages reach the players it addresses, its hooks see joins
//! and leaves, and a logic that panics closes its room and nothing else. Then `examples/arena`
//! with real clients.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

#[path = "../examples/arena/arena.rs"]
#[allow(dead_code)] // the example's constants not used here
mod arena;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sluice_client::{ReceivedData, Session, SessionEvent};
use sluice_media::DataMessage;
use sluice_server::config::InterestMode;
use sluice_server::game::{Game, GameLogic, GameOutput, GameSpec, To};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(20);

/// A logic that records what it sees and answers commands sent on `cmd`:
/// `all:TEXT`, `peer:ID:TEXT`, `near:ID:TEXT` (on `out`), and `panic`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_seen(&self, what: &str) {
        tokio::time::timeout(WAIT, async {
            while !self.seen().iter().any(|s| s == what) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the game never saw {what:?}: {:?}", self.seen()));
    }
}

impl GameLogic for Recorder {
    fn spec(&self) -> GameSpec {
        GameSpec {
            inputs: vec!["cmd".into()],
            outputs: vec![GameOutput::reliable("out")],
            tick_hz: 50.0,
        }
    }

    fn on_join(&mut self, game: &mut Game, peer_id: &str) {
        let peers = game.peers().join(",");
        self.seen
            .lock()
            .unwrap()
            .push(format!("join:{peer_id}:{peers}"));
    }

    fn on_leave(&mut self, game: &mut Game, peer_id: &str) {
        let peers = game.peers().join(",");
        self.seen
            .lock()
            .unwrap()
            .push(format!("leave:{peer_id}:{peers}"));
    }

    fn on_message(&mut self, game: &mut Game, peer_id: &str, label: &str, m: DataMessage) {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        self.seen
            .lock()
            .unwrap()
            .push(format!("{label}:{peer_id}:{text}"));
        let parts: Vec<&str> = text.splitn(3, ':').collect();
        match parts.as_slice() {
            ["all", t] => game.send(To::All, "out", DataMessage::text(*t)),
            ["peer", id, t] => game.send(To::Peer((*id).into()), "out", DataMessage::text(*t)),
            ["near", id, t] => game.send(To::Near((*id).into()), "out", DataMessage::text(*t)),
            ["panic"] => panic!("the game logic broke"),
            _ => {}
        }
    }
}

async fn game_server(
    logic: Recorder,
    tweak: impl FnOnce(&mut sluice_server::Config),
) -> TestServer {
    TestServer::start_with_game(tweak, move |_room: &str| {
        Some(Box::new(logic.clone()) as Box<dyn GameLogic>)
    })
    .await
}

/// Waits for the session's data consumer of `label`: (its producer's peer, its messages).
async fn data_consumer(
    session: &mut Session,
    label: &str,
) -> (Option<String>, UnboundedReceiver<ReceivedData>) {
    let event = session
        .wait_event(
            WAIT,
            |e| matches!(e, SessionEvent::DataConsumer { label: l, .. } if l == label),
        )
        .await
        .unwrap_or_else(|| panic!("no data consumer of {label}"));
    match event {
        SessionEvent::DataConsumer {
            peer_id, messages, ..
        } => (peer_id, messages),
        _ => unreachable!("matched above"),
    }
}

async fn next_text(messages: &mut UnboundedReceiver<ReceivedData>) -> String {
    let m = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("a message in time")
        .expect("the data consumer is open");
    String::from_utf8(m.data).unwrap()
}

/// Sends `text` on `stream` until the game has seen it (the channel may still be opening).
async fn send_until_seen(
    session: &Session,
    stream: u16,
    game: &Recorder,
    seen_as: &str,
    text: &str,
) {
    tokio::time::timeout(WAIT, async {
        while !game.seen().iter().any(|s| s == seen_as) {
            let _ = session.send_data(stream, DataMessage::text(text));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the game never saw {seen_as:?}: {:?}", game.seen()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_from_two_players_reach_the_game_and_its_messages_reach_whom_they_address() {
    inputs_reach_the_game_and_its_messages_reach_whom_they_address(|_| {}, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_in_a_room_spread_over_two_workers_hears_and_addresses_players_on_both() {
    let spread = |c: &mut sluice_server::Config| {
        c.workers = 2;
        c.placement.rooms = sluice_server::config::RoomPlacement::Spread;
        c.placement.spread_above_datagrams_per_second = 0;
    };
    inputs_reach_the_game_and_its_messages_reach_whom_they_address(spread, true).await;
}

async fn inputs_reach_the_game_and_its_messages_reach_whom_they_address(
    tweak: impl FnOnce(&mut sluice_server::Config),
    spread: bool,
) {
    let game = Recorder::default();
    let server = game_server(game.clone(), tweak).await;
    let mut alice = server.session("r", "alice").await;
    game.wait_seen("join:alice:alice").await;
    let mut bob = server.session("r", "bob").await;
    game.wait_seen("join:bob:alice,bob").await;
    if spread {
        // Bob is on the other worker: the game's output and his input cross pipes.
        let room = server.instance.room("r").await.unwrap();
        let worker = |peer: &str| {
            room.objects()
                .transports
                .values()
                .find(|t| t.peer_id == peer)
                .map(|t| t.object.transport.worker_index())
        };
        assert_eq!((worker("alice"), worker("bob")), (Some(0), Some(1)));
    }

    // Each is offered the game's output, from no peer.
    let (from, mut alice_out) = data_consumer(&mut alice, "out").await;
    assert_eq!(from, None);
    let (from, mut bob_out) = data_consumer(&mut bob, "out").await;
    assert_eq!(from, None);

    // Inputs from both reach the game.
    let (_, a_cmd) = alice.produce_data("cmd", true, None).await.unwrap();
    let (_, b_cmd) = bob.produce_data("cmd", true, None).await.unwrap();
    send_until_seen(
        &alice,
        a_cmd,
        &game,
        "cmd:alice:hello from alice",
        "hello from alice",
    )
    .await;
    send_until_seen(
        &bob,
        b_cmd,
        &game,
        "cmd:bob:hello from bob",
        "hello from bob",
    )
    .await;

    // To everyone, then to one: Alice's next message is the one addressed to her alone.
    alice
        .send_data(a_cmd, DataMessage::text("all:to everyone"))
        .unwrap();
    assert_eq!(next_text(&mut alice_out).await, "to everyone");
    assert_eq!(next_text(&mut bob_out).await, "to everyone");
    alice
        .send_data(a_cmd, DataMessage::text("peer:bob:only bob"))
        .unwrap();
    alice
        .send_data(a_cmd, DataMessage::text("peer:alice:only alice"))
        .unwrap();
    assert_eq!(next_text(&mut bob_out).await, "only bob");
    assert_eq!(next_text(&mut alice_out).await, "only alice");
    // Near Alice, without interest management: everyone but her.
    bob.send_data(b_cmd, DataMessage::text("near:alice:near alice"))
        .unwrap();
    bob.send_data(b_cmd, DataMessage::text("all:after"))
        .unwrap();
    assert_eq!(next_text(&mut bob_out).await, "near alice");
    assert_eq!(next_text(&mut bob_out).await, "after");
    assert_eq!(next_text(&mut alice_out).await, "after");

    // The output label is the game's: a player cannot produce on it.
    let refused = alice.produce_data("out", true, None).await;
    assert!(
        format!("{refused:?}").contains("the game's output"),
        "{refused:?}"
    );
    // The input label is the game's: no player was offered the other's.
    let no_cmd = alice
        .wait_event(
            Duration::from_millis(300),
            |e| matches!(e, SessionEvent::DataConsumer { label, .. } if label == "cmd"),
        )
        .await;
    assert!(no_cmd.is_none(), "cmd relayed to a peer");

    // Leaving runs the leave hook, with the player gone from the list.
    bob.close();
    game.wait_seen("leave:bob:alice").await;
    alice.close();
    game.wait_seen("leave:alice:").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_sends_near_a_player_only_to_those_in_range() {
    let game = Recorder::default();
    let server = game_server(game.clone(), |c| {
        c.interest.mode = InterestMode::Proximity;
        c.interest.audio_radius = 10.0;
        c.interest.rate_hz = 50;
    })
    .await;
    let mut alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    let mut carol = server.session("r", "carol").await;
    let (_, mut bob_out) = data_consumer(&mut bob, "out").await;
    let (_, mut carol_out) = data_consumer(&mut carol, "out").await;
    let (_, mut alice_out) = data_consumer(&mut alice, "out").await;
    let room = server.instance.room("r").await.unwrap();
    use sluice_server::interest::Position;
    room.set_position("alice", Some(Position::new(0.0, 0.0, 0.0)));
    room.set_position("bob", Some(Position::new(5.0, 0.0, 0.0)));
    room.set_position("carol", Some(Position::new(100.0, 0.0, 0.0)));
    // Until an evaluation takes them in, everybody hears everybody.
    tokio::time::timeout(WAIT, async {
        while room.hears_now("carol", "alice") || !room.hears_now("bob", "alice") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("interest evaluated");
    let (_, a_cmd) = alice.produce_data("cmd", true, None).await.unwrap();
    send_until_seen(&alice, a_cmd, &game, "cmd:alice:ready", "ready").await;
    alice
        .send_data(a_cmd, DataMessage::text("near:alice:psst"))
        .unwrap();
    alice
        .send_data(a_cmd, DataMessage::text("all:everyone"))
        .unwrap();
    assert_eq!(next_text(&mut bob_out).await, "psst");
    assert_eq!(next_text(&mut bob_out).await, "everyone");
    assert_eq!(
        next_text(&mut carol_out).await,
        "everyone",
        "carol is out of range"
    );
    assert_eq!(
        next_text(&mut alice_out).await,
        "everyone",
        "not to alice herself"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_game_closes_its_room_with_an_error_and_the_server_lives_on() {
    let game = Recorder::default();
    let server = game_server(game.clone(), |_| {}).await;
    let mut alice = server.session("r", "alice").await;
    let mut other_room = server.session("other", "dave").await;
    let (_, cmd) = alice.produce_data("cmd", true, None).await.unwrap();
    send_until_seen(&alice, cmd, &game, "cmd:alice:hi", "hi").await;
    alice.send_data(cmd, DataMessage::text("panic")).unwrap();
    let closed = alice
        .wait_event(WAIT, |e| matches!(e, SessionEvent::Closed { .. }))
        .await
        .expect("alice's socket closes");
    match closed {
        SessionEvent::Closed { code, reason } => {
            assert_eq!(code, Some(sluice_server::game::CLOSE_GAME_FAILED));
            assert!(reason.contains("the game logic broke"), "{reason}");
        }
        _ => unreachable!("matched above"),
    }
    // The other room and its game go on.
    let (_, dave_out) = data_consumer(&mut other_room, "out").await;
    drop(dave_out);
    let (_, d_cmd) = other_room.produce_data("cmd", true, None).await.unwrap();
    send_until_seen(
        &other_room,
        d_cmd,
        &game,
        "cmd:dave:still here",
        "still here",
    )
    .await;
    // The failed room is replaced by a fresh one with a new game once its players are gone.
    tokio::time::timeout(WAIT, async {
        while server.instance.room("r").await.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the failed room closes");
    let mut erin = server.session("r", "erin").await;
    let (_, mut erin_out) = data_consumer(&mut erin, "out").await;
    let (_, e_cmd) = erin.produce_data("cmd", true, None).await.unwrap();
    send_until_seen(&erin, e_cmd, &game, "cmd:erin:back", "back").await;
    erin.send_data(e_cmd, DataMessage::text("all:alive"))
        .unwrap();
    assert_eq!(next_text(&mut erin_out).await, "alive");
    assert!(server.instance.is_ready(), "every worker is alive");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arena_moves_players_from_their_inputs_and_broadcasts_the_world() {
    let server = TestServer::start_with_game(
        |c| {
            c.interest.mode = InterestMode::Proximity;
            c.interest.rate_hz = 50;
        },
        |_room: &str| Some(Box::new(arena::Arena::default()) as Box<dyn GameLogic>),
    )
    .await;
    let mut alice = server.session("r", "alice").await;
    let mut bob = server.session("r", "bob").await;
    let (from, mut alice_state) = data_consumer(&mut alice, arena::STATE_LABEL).await;
    assert_eq!(from, None);
    let (_, mut bob_state) = data_consumer(&mut bob, arena::STATE_LABEL).await;
    let room = server.instance.room("r").await.unwrap();

    // Both see both in the world, where the server put them (and set their positions).
    let world = |text: String| -> serde_json::Value { serde_json::from_str(&text).unwrap() };
    let start = loop {
        let w = world(next_text(&mut bob_state).await);
        if w["players"].get("alice").is_some() && w["players"].get("bob").is_some() {
            break w;
        }
    };
    let w = loop {
        let w = world(next_text(&mut alice_state).await);
        if w["players"].get("bob").is_some() {
            break w;
        }
    };
    assert!(w["tick"].as_u64().unwrap() > 0);
    let x0 = start["players"]["alice"][0].as_f64().unwrap() as f32;
    let y0 = start["players"]["alice"][1].as_f64().unwrap() as f32;
    assert_eq!(
        room.position("alice"),
        Some(sluice_server::interest::Position::new(x0, y0, 0.0))
    );

    // Alice walks right: the server moves her, within the world, and nobody else.
    let (_, input) = alice
        .produce_data(arena::INPUT_LABEL, false, Some(0))
        .await
        .unwrap();
    let bob_start = start["players"]["bob"].clone();
    tokio::time::timeout(WAIT, async {
        loop {
            let _ = alice.send_data(input, DataMessage::text(r#"{"dx": 1, "dy": 0}"#));
            let w = world(next_text(&mut bob_state).await);
            let x = w["players"]["alice"][0].as_f64().unwrap() as f32;
            if x > x0 + 5.0 || x >= arena::SIZE {
                assert_eq!(w["players"]["alice"][1].as_f64().unwrap() as f32, y0);
                assert_eq!(w["players"]["bob"], bob_start, "bob did not move");
                break;
            }
        }
    })
    .await
    .expect("alice moves right");
    let p = room.position("alice").unwrap();
    assert!(p.x > x0 && p.y == y0, "{p:?}");
    server.stop().await;
}

#[test]
fn arena_inputs_are_clamped_and_anything_else_is_ignored() {
    let parse = |s: &str| arena::parse_input(&DataMessage::text(s));
    assert_eq!(parse(r#"{"dx": 0.5, "dy": -3}"#), Some((0.5, -1.0)));
    assert_eq!(parse(r#"{"dx": 1}"#), None);
    assert_eq!(parse(r#"{"dx": "1", "dy": 0}"#), None);
    assert_eq!(parse("not json"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_consume_players_are_told_of_the_games_outputs_and_consume_them_as_declared() {
    /// Declares one unreliable output; does nothing else.
    struct Quiet;
    impl GameLogic for Quiet {
        fn spec(&self) -> GameSpec {
            GameSpec {
                inputs: vec![],
                outputs: vec![GameOutput::unreliable("state")],
                tick_hz: 1.0,
            }
        }
    }
    let server = TestServer::start_with_game(
        |c| c.router.auto_consume = false,
        |_room: &str| Some(Box::new(Quiet) as Box<dyn GameLogic>),
    )
    .await;
    let bob = server.signaling("r", "bob").await;
    transport_raw(&bob, false, serde_json::json!({})).await;
    join_raw(&bob, "bob").await;
    let n = next_named(&bob, "newDataProducer").await;
    assert_eq!(n["peerId"], "", "the server's own: {n}");
    assert_eq!(n["label"], "state");
    let d = bob
        .request_raw(
            "consumeData",
            serde_json::json!({"dataProducerId": n["dataProducerId"]}),
        )
        .await
        .unwrap();
    assert_eq!(d["peerId"], serde_json::Value::Null, "{d}");
    assert_eq!(d["label"], "state");
    assert_eq!(d["sctpStreamParameters"]["ordered"], false, "{d}");
    assert_eq!(d["sctpStreamParameters"]["maxRetransmits"], 0, "{d}");
    server.stop().await;
}
