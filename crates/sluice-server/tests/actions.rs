//! Game actions: `dispatchAction` checked against the `[[actions]]` rules, numbered, delivered as
//! `action` notifications, cached by key within bounds and replayed to late joiners in order.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_client::{Incoming, SignalingClient, SignalingError};
use sluice_protocol::ActionNotification;
use sluice_server::auth::Grants;
use sluice_server::config::{ActionRule, ActionSender};

fn rule(pattern: &str) -> ActionRule {
    ActionRule {
        r#type: pattern.to_owned(),
        sender: ActionSender::Any,
        max_payload_bytes: 4096,
        max_per_second: None,
        burst: None,
        cache: false,
        max_cached: 64,
    }
}

/// A peer joined over signaling only (no transports), as a lobby player would.
async fn joined(server: &TestServer, room: &str, peer: &str, grants: Grants) -> SignalingClient {
    let url = sluice_client::ws_url(&server.base, room, peer, &server.token(room, peer, grants));
    let client = SignalingClient::connect(&url).await.unwrap();
    join_raw(&client, peer).await;
    client
}

async fn dispatch(client: &SignalingClient, data: Value) -> Result<u64, SignalingError> {
    let answer = client.request_raw("dispatchAction", data).await?;
    Ok(answer["seq"].as_u64().unwrap())
}

fn code(r: Result<u64, SignalingError>) -> Option<u16> {
    r.unwrap_err().code()
}

/// The next `action` notification (other notifications are skipped); panics after 10 s.
async fn next_action(client: &SignalingClient) -> ActionNotification {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.next().await {
                Some(Incoming::Notification { method, data }) if method == "action" => {
                    return serde_json::from_value::<ActionNotification>(data).unwrap();
                }
                Some(Incoming::Closed { code, reason }) => panic!("closed: {code:?} {reason}"),
                None => panic!("connection ended"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("an action notification within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_actions_reach_the_others_in_order_with_sender_and_sequence() {
    let server = TestServer::start(|c| c.actions = vec![rule("game.*")]).await;
    let alice = joined(&server, "r", "alice", Grants::player()).await;
    let bob = joined(&server, "r", "bob", Grants::player()).await;
    let carol = joined(&server, "r", "carol", Grants::player()).await;
    for i in 1..=5u64 {
        let seq = dispatch(&alice, json!({"type": "game.move", "payload": {"step": i}}))
            .await
            .unwrap();
        assert_eq!(seq, i);
    }
    for peer in [&bob, &carol] {
        for i in 1..=5u64 {
            let a = next_action(peer).await;
            assert_eq!(a.r#type, "game.move");
            assert_eq!(a.payload, json!({"step": i}));
            assert_eq!(a.from.as_deref(), Some("alice"));
            assert_eq!(a.seq, i);
            assert_eq!(a.cache_key, None);
        }
    }
    // The sender does not receive its own: the first action alice sees is bob's, number 6.
    assert_eq!(
        dispatch(&bob, json!({"type": "game.hello"})).await.unwrap(),
        6
    );
    let a = next_action(&alice).await;
    assert_eq!((a.seq, a.from.as_deref()), (6, Some("bob")));
    assert_eq!(a.payload, Value::Null);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_to_some_peers_reaches_only_them() {
    let server = TestServer::start(|c| c.actions = vec![rule("game.*")]).await;
    let alice = joined(&server, "r", "alice", Grants::player()).await;
    let bob = joined(&server, "r", "bob", Grants::player()).await;
    let carol = joined(&server, "r", "carol", Grants::player()).await;
    let seq = dispatch(
        &alice,
        json!({"type": "game.whisper", "payload": "psst", "to": ["carol", "nobody"]}),
    )
    .await
    .unwrap();
    assert_eq!(seq, 1);
    let a = next_action(&carol).await;
    assert_eq!((a.seq, a.payload), (1, json!("psst")));
    dispatch(&alice, json!({"type": "game.shout"}))
        .await
        .unwrap();
    // Bob's first action is the shout: the whisper never reached him.
    let a = next_action(&bob).await;
    assert_eq!((a.seq, a.r#type.as_str()), (2, "game.shout"));
    assert_eq!(next_action(&carol).await.seq, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_actions_get_their_error_codes() {
    let server = TestServer::start(|c| {
        let mut small = rule("game.*");
        small.max_payload_bytes = 64;
        small.cache = true;
        let mut admin = rule("admin.*");
        admin.sender = ActionSender::Admin;
        let mut server_only = rule("server.*");
        server_only.sender = ActionSender::Server;
        let mut flood = rule("flood");
        // 3 at once, then one every 1000 s: the fourth within the test is always refused.
        flood.max_per_second = Some(0.001);
        flood.burst = Some(3);
        c.actions = vec![small, admin, server_only, flood, rule("chat")];
    })
    .await;
    // Before join: 409.
    let early = server.signaling("r", "early").await;
    let r = early
        .request_raw("dispatchAction", json!({"type": "chat"}))
        .await;
    assert_eq!(r.unwrap_err().code(), Some(409));

    let p = joined(&server, "r", "p", Grants::player()).await;
    let cases = [
        (json!({"type": "other"}), 403, "no rule matches"),
        (json!({"type": "server.tick"}), 403, "server only"),
        (json!({"type": "admin.kick"}), 403, "admin only"),
        (json!({"type": "chat", "cache": true}), 403, "not cacheable"),
        (
            json!({"type": "game.x", "payload": "a".repeat(100)}),
            413,
            "oversize payload",
        ),
        (json!({"type": ""}), 400, "empty type"),
        (json!({"type": "t".repeat(129)}), 400, "long type"),
        (
            json!({"type": "game.x", "cacheKey": "k"}),
            400,
            "cacheKey without cache",
        ),
        (
            json!({"type": "game.x", "cache": true, "to": ["q"]}),
            400,
            "to with cache",
        ),
        (json!({"type": "game.x", "to": []}), 400, "empty to"),
        (json!({"payload": 1}), 400, "no type"),
    ];
    for (data, expected, why) in cases {
        assert_eq!(code(dispatch(&p, data).await), Some(expected), "{why}");
    }
    // Within the limits the same rules accept: a 64-byte payload, cached.
    let payload = "a".repeat(62); // 64 bytes with its quotes
    assert!(
        dispatch(
            &p,
            json!({"type": "game.x", "payload": payload, "cache": true})
        )
        .await
        .is_ok()
    );
    // A flood: the burst, then 429.
    for _ in 0..3 {
        dispatch(&p, json!({"type": "flood"})).await.unwrap();
    }
    for _ in 0..5 {
        assert_eq!(
            code(dispatch(&p, json!({"type": "flood"})).await),
            Some(429)
        );
    }
    // The limit is per peer: another peer still has its burst.
    let q = joined(&server, "r", "q", Grants::player()).await;
    dispatch(&q, json!({"type": "flood"})).await.unwrap();
    // An admin may send admin actions.
    let grants = Grants {
        admin: true,
        ..Grants::player()
    };
    let admin = joined(&server, "r", "boss", grants).await;
    dispatch(&admin, json!({"type": "admin.kick"}))
        .await
        .unwrap();
    // Refused actions were neither numbered nor delivered: q, which joined after p's cached
    // game.x (1) and three floods (2–4), gets the first replayed, then, after its own (5), the
    // admin's.
    let a = next_action(&q).await;
    assert_eq!((a.seq, a.r#type.as_str()), (1, "game.x"));
    let a = next_action(&q).await;
    assert_eq!((a.seq, a.r#type.as_str()), (6, "admin.kick"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_receives_exactly_the_cached_state_replaced_by_key_and_bounded_in_order() {
    let server = TestServer::start(|c| {
        let mut moves = rule("flag.move");
        moves.cache = true;
        moves.max_cached = 2;
        let mut any = rule("*");
        any.cache = true;
        c.actions = vec![moves, rule("chat"), any];
        c.limits.cached_actions_per_room = 3;
    })
    .await;
    let alice = joined(&server, "r", "alice", Grants::player()).await;
    let steps = [
        json!({"type": "flag.move", "payload": {"x": 1}, "cache": true, "cacheKey": "red"}),
        json!({"type": "flag.move", "payload": {"x": 2}, "cache": true, "cacheKey": "blue"}),
        // Replaces 1: [2, 3].
        json!({"type": "flag.move", "payload": {"x": 3}, "cache": true, "cacheKey": "red"}),
        // A third of its type: the oldest of the type (2) goes: [3, 4].
        json!({"type": "flag.move", "payload": {"x": 4}, "cache": true, "cacheKey": "green"}),
        // Not cached.
        json!({"type": "chat", "payload": "hi"}),
        json!({"type": "score.set", "payload": 10, "cache": true, "cacheKey": "a"}),
        // A fourth in the room: the room's oldest (3) goes: [4, 6, 7].
        json!({"type": "score.set", "payload": 20, "cache": true, "cacheKey": "b"}),
    ];
    for (i, data) in steps.into_iter().enumerate() {
        assert_eq!(dispatch(&alice, data).await.unwrap(), i as u64 + 1);
    }
    let late = joined(&server, "r", "late", Grants::player()).await;
    let replayed = [
        next_action(&late).await,
        next_action(&late).await,
        next_action(&late).await,
    ];
    let got: Vec<(u64, &str, Value, Option<&str>)> = replayed
        .iter()
        .map(|a| {
            assert_eq!(a.from.as_deref(), Some("alice"));
            (
                a.seq,
                a.r#type.as_str(),
                a.payload.clone(),
                a.cache_key.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (4, "flag.move", json!({"x": 4}), Some("green")),
            (6, "score.set", json!(10), Some("a")),
            (7, "score.set", json!(20), Some("b")),
        ]
    );
    // Then live ones, in order; nothing of the cache twice.
    dispatch(&alice, json!({"type": "chat", "payload": "welcome"}))
        .await
        .unwrap();
    let a = next_action(&late).await;
    assert_eq!((a.seq, a.payload), (8, json!("welcome")));
    // The room's state counts the cache.
    let (status, body) = server
        .get("/api/rooms/r", Some(&server.admin_token()))
        .await;
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["cachedActions"], 3, "{state}");
    assert_eq!(state["cachedActionsEvicted"], 2, "{state}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_actions_reach_peers_with_no_sender_and_are_replayed() {
    let server = TestServer::start(|c| {
        let mut server_only = rule("round.*");
        server_only.sender = ActionSender::Server;
        server_only.cache = true;
        c.actions = vec![server_only];
    })
    .await;
    let alice = joined(&server, "r", "alice", Grants::player()).await;
    // Peers may not send them…
    assert_eq!(
        code(dispatch(&alice, json!({"type": "round.start"})).await),
        Some(403)
    );
    // …the server's code may, and a subscriber of the room's store sees it.
    let room = server.instance.room("r").await.unwrap();
    let mut actions = room.store.subscribe();
    let seq = room
        .dispatch_server_action(
            "round.start",
            json!({"round": 2}),
            Some(Some("round".to_owned())),
            None,
        )
        .unwrap();
    assert_eq!(seq, 1);
    let a = next_action(&alice).await;
    assert_eq!((a.seq, a.from, a.payload), (1, None, json!({"round": 2})));
    let seen = actions.recv().await.unwrap();
    assert!(
        matches!(&*seen, sluice_server::store::Action::Game { seq: 1, action_type, .. } if action_type == "round.start"),
        "{seen:?}"
    );
    let late = joined(&server, "r", "late", Grants::player()).await;
    let a = next_action(&late).await;
    assert_eq!(
        (a.seq, a.from, a.cache_key.as_deref()),
        (1, None, Some("round"))
    );
    server.stop().await;
}
