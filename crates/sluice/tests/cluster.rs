//! Two `sluice serve` nodes sharing rooms through a real `redis-server` (docs/cluster.md), all
//! on loopback: peers on one node see the peers on the other, `/api/place` and
//! `/api/rooms/{id}` answer across nodes, forged and replayed events are ignored, placements
//! read Redis at a bounded rate, a killed node's peers
//! leave the others within its TTL, and a node that drains takes its entries out of Redis.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_client::protocol::{ClientRequest, ConsumerRef, ProducerRef, ServerNotification};
use sluice_client::{
    ReceivedData, ReceivedRtp, Session, SessionEvent, SessionOptions, SignalingClient, SourceConfig,
};
use sluice_media::DataMessage;
use sluice_media::ortc::MediaKind;
use sluice_server::Grants;
use sluice_server::TokenAuthority;
use sluice_server::auth::unix_now;
use tokio::sync::mpsc::UnboundedReceiver;

const AUTH_SECRET: &str = "cluster-test-auth-secret-0123456789abcdef";
const CLUSTER_SECRET: &str = "cluster-test-cluster-secret-0123456789abcdef";
/// Heartbeat 1 s and TTL 3 s: a killed node is gone from the others' view within 4 s.
const CLUSTER_TOML: &str = "[cluster]\nheartbeat_secs = 1\nnode_ttl_secs = 3\n";

/// Kills the process if a test fails before stopping it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` of its own on a free loopback port, nothing saved to disk.
struct Redis {
    _process: Process,
    port: u16,
    dir: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("sluice-cluster-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs Debian's redis-server)");
        let redis = Redis {
            _process: Process(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command(&["PING"]) != "+PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command in Redis's protocol; the first line of the answer ("" if none).
    fn command(&self, args: &[&str]) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if stream.write_all(request.as_bytes()).is_err() {
            return String::new();
        }
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        line.trim_end().to_owned()
    }

    /// One command whose answer is a bulk string (`INFO`): the string.
    fn command_bulk(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(resp_command(args).as_bytes()).unwrap();
        read_reply(&mut BufReader::new(stream)).join("\n")
    }

    /// A connection subscribed to `channel`: [`read_reply`] gives each message as
    /// `["message", channel, payload]`.
    fn subscribe(&self, channel: &str) -> BufReader<TcpStream> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(resp_command(&["SUBSCRIBE", channel]).as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream);
        let confirmed = read_reply(&mut reader);
        assert_eq!(confirmed.first().map(String::as_str), Some("subscribe"));
        reader
    }
}

/// `args` in Redis's protocol.
fn resp_command(args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    request
}

/// One reply in Redis's protocol, its strings and numbers in order (arrays flattened).
fn read_reply(reader: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "*" => {
            let n: usize = rest.parse().unwrap();
            (0..n).flat_map(|_| read_reply(reader)).collect()
        }
        "$" => {
            let n: usize = rest.parse().unwrap();
            let mut bytes = vec![0; n + 2];
            reader.read_exact(&mut bytes).unwrap();
            bytes.truncate(n);
            vec![String::from_utf8(bytes).unwrap()]
        }
        _ => vec![rest.to_owned()],
    }
}

/// A `sluice serve` node of the cluster.
struct Node {
    process: Process,
    addr: String,
}

fn config_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "sluice-cluster-test-{}-{}.toml",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, CLUSTER_TOML).unwrap();
    path
}

fn start_node(redis: &Redis, node_id: &str) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--rtc-port", "0"])
        .args([
            "--workers",
            "1",
            "--log",
            "warn",
            "--auth-secret",
            AUTH_SECRET,
        ])
        .arg("--config")
        .arg(config_file())
        .args([
            "--cluster-redis",
            &redis.url(),
            "--cluster-secret",
            CLUSTER_SECRET,
        ])
        .args(["--node-id", node_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("sluice listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Node {
        process: Process(child),
        addr,
    }
}

fn token(room: &str, peer: &str, grants: Grants) -> String {
    TokenAuthority::new(AUTH_SECRET)
        .mint(room, peer, grants, 600, unix_now())
        .unwrap()
}

fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    let (status, body) = http_get_text(addr, path, bearer);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// The body of a GET, as text.
fn http_get_text(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of `series` in `body`, 0 while the series has not been counted yet.
fn count(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits (polling, up to `within`) until `f` holds; panics with `what` if it never does.
fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn join(node: &Node, room: &str, peer: &str) -> Session {
    let url = sluice_client::ws_url(
        &format!("http://{}", node.addr),
        room,
        peer,
        &token(room, peer, Grants::player()),
    );
    let options = SessionOptions::new(&format!("{peer} the player"));
    Session::join(SignalingClient::connect(&url).await.unwrap(), options)
        .await
        .unwrap()
}

async fn next_peer_notification(session: &mut Session, within: Duration) -> ServerNotification {
    let event = session
        .wait_event(within, |e| {
            matches!(
                e,
                SessionEvent::Notification(
                    ServerNotification::NewPeer(_) | ServerNotification::PeerClosed(_)
                )
            )
        })
        .await;
    match event {
        Some(SessionEvent::Notification(n)) => n,
        other => panic!("no newPeer or peerClosed within {within:?}: {other:?}"),
    }
}

/// A token for the admin API, for every room.
fn admin_token() -> String {
    token(
        "*",
        "admin",
        Grants {
            admin: true,
            ..Grants::default()
        },
    )
}

/// Waits until `n` nodes registered in Redis.
fn wait_registered(redis: &Redis, n: usize) {
    wait_until(Duration::from_secs(10), "the nodes registered", || {
        redis.command(&["SCARD", "sluice:nodes"]) == format!(":{n}")
    });
}

fn place(node: &Node, room: &str) -> String {
    let (status, body) = http_get(&node.addr, &format!("/api/place?roomId={room}"), None);
    assert_eq!(status, 200, "{body}");
    body["nodeId"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_two_nodes_see_each_other_and_a_lost_node_is_removed() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let mut n2 = start_node(&redis, "n2");
    let admin = admin_token();
    wait_registered(&redis, 2);

    let mut alice = join(&n1, "r", "alice").await;
    assert!(alice.peers.is_empty(), "{:?}", alice.peers);
    // The room lives on n1 only, so both nodes place its new peers there.
    wait_until(
        Duration::from_secs(10),
        "n2 places room r's peers on n1",
        || place(&n2, "r") == "n1",
    );
    assert_eq!(place(&n1, "r"), "n1");

    let mut bob = join(&n2, "r", "bob").await;
    let listed: Vec<_> = bob.peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(listed, ["alice"]);
    assert_eq!(bob.peers[0].display_name, "alice the player");
    match next_peer_notification(&mut alice, Duration::from_secs(10)).await {
        ServerNotification::NewPeer(p) => {
            assert_eq!(
                (p.id.as_str(), p.display_name.as_str()),
                ("bob", "bob the player")
            )
        }
        other => panic!("alice expected newPeer bob, got {other:?}"),
    }

    // Each node's admin view of the room shows the other node's peer.
    let (status, room) = http_get(&n1.addr, "/api/rooms/r", Some(&admin));
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["remotePeers"]["bob"]["node"], "n2", "{room}");
    assert!(room["peers"]["alice"].is_object(), "{room}");
    let (_, room) = http_get(&n2.addr, "/api/rooms/r", Some(&admin));
    assert_eq!(room["remotePeers"]["alice"]["node"], "n1", "{room}");

    // An event on the cluster's channel without the cluster's signature changes nothing: the
    // next peer notification bob gets is carol's, who really joined after it was published.
    // Published until both nodes are subscribed (PUBLISH answers how many received it).
    let forged = r#"{"type":"peerJoined","room":"r","peerId":"mallory","peer":{"node":"n1","displayName":"mallory"}}"#;
    let unsigned = format!("AAAA.{forged}");
    wait_until(
        Duration::from_secs(10),
        "both nodes get forged events",
        || {
            redis.command(&["PUBLISH", "sluice:events", forged]) == ":2"
                && redis.command(&["PUBLISH", "sluice:events", &unsigned]) == ":2"
        },
    );
    wait_until(
        Duration::from_secs(10),
        "n2 counts the forged events",
        || {
            let (_, metrics) = http_get_text(&n2.addr, "/metrics", Some(&admin));
            count(
                &metrics,
                "sluice_cluster_events_ignored_total{reason=\"signature\"}",
            ) >= 2.0
        },
    );
    let carol = join(&n1, "r", "carol").await;
    match next_peer_notification(&mut bob, Duration::from_secs(10)).await {
        ServerNotification::NewPeer(p) => assert_eq!(p.id, "carol"),
        other => panic!("bob expected newPeer carol, got {other:?}"),
    }

    // n1 is killed: n2 notices when its registration expires and removes its peers.
    let mut n1 = n1;
    n1.process.0.kill().unwrap();
    n1.process.0.wait().unwrap();
    drop(carol);
    let killed = Instant::now();
    let mut closed = Vec::new();
    while closed.len() < 2 {
        match next_peer_notification(&mut bob, Duration::from_secs(10)).await {
            ServerNotification::PeerClosed(p) => closed.push(p.peer_id),
            other => panic!("bob expected peerClosed, got {other:?}"),
        }
    }
    closed.sort();
    assert_eq!(closed, ["alice", "carol"]);
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    // The peers go first, then the node's registration.
    wait_until(Duration::from_secs(5), "n1 leaves the node set", || {
        redis.command(&["SISMEMBER", "sluice:nodes", "n1"]) == ":0"
    });
    assert_eq!(redis.command(&["HLEN", "sluice:room:r:peers"]), ":1");
    assert_eq!(place(&n2, "r"), "n2");
    drop(alice);

    // n2 drains on SIGTERM: its peer and its registration leave Redis before it exits.
    Command::new("kill")
        .args(["-TERM", &n2.process.0.id().to_string()])
        .status()
        .unwrap();
    let closed = bob
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, SessionEvent::Closed { .. })
        })
        .await;
    assert!(
        matches!(closed, Some(SessionEvent::Closed { .. })),
        "{closed:?}"
    );
    let status = n2.process.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(redis.command(&["HLEN", "sluice:room:r:peers"]), ":0");
    assert_eq!(redis.command(&["SCARD", "sluice:nodes"]), ":0");
    assert_eq!(redis.command(&["EXISTS", "sluice:node:n2"]), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_cluster_event_published_again_is_ignored() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let n2 = start_node(&redis, "n2");
    let admin = admin_token();
    wait_registered(&redis, 2);
    let mut recorder = redis.subscribe("sluice:events");
    let mut bob = join(&n2, "r", "bob").await;
    let alice = join(&n1, "r", "alice").await;
    match next_peer_notification(&mut bob, Duration::from_secs(10)).await {
        ServerNotification::NewPeer(p) => assert_eq!(p.id, "alice"),
        other => panic!("bob expected newPeer alice, got {other:?}"),
    }
    // What someone with access to Redis recorded: n1's signed event announcing alice.
    let recorded = loop {
        let message = read_reply(&mut recorder);
        let payload = &message[2];
        if payload.contains(r#""type":"peerJoined""#) && payload.contains(r#""peerId":"alice""#) {
            break payload.clone();
        }
    };
    alice.close();
    match next_peer_notification(&mut bob, Duration::from_secs(10)).await {
        ServerNotification::PeerClosed(p) => assert_eq!(p.peer_id, "alice"),
        other => panic!("bob expected peerClosed alice, got {other:?}"),
    }

    // Published again, it reaches both nodes and the recorder, and changes nothing: n2 counts
    // it as replayed, alice stays gone, and bob's next peer notification is carol's.
    wait_until(
        Duration::from_secs(10),
        "both nodes get the replayed event",
        || redis.command(&["PUBLISH", "sluice:events", &recorded]) == ":3",
    );
    wait_until(
        Duration::from_secs(10),
        "n2 counts the replayed event",
        || {
            let (_, metrics) = http_get_text(&n2.addr, "/metrics", Some(&admin));
            count(
                &metrics,
                "sluice_cluster_events_ignored_total{reason=\"replayed\"}",
            ) >= 1.0
        },
    );
    let (_, room) = http_get(&n2.addr, "/api/rooms/r", Some(&admin));
    assert!(room["remotePeers"].get("alice").is_none(), "{room}");
    let _carol = join(&n1, "r", "carol").await;
    match next_peer_notification(&mut bob, Duration::from_secs(10)).await {
        ServerNotification::NewPeer(p) => assert_eq!(p.id, "carol"),
        other => panic!("bob expected newPeer carol, got {other:?}"),
    }
    drop(n1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_entry_written_back_after_its_peer_left_is_removed_by_its_node() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let n2 = start_node(&redis, "n2");
    wait_registered(&redis, 2);
    // Carol keeps the room open on n1.
    let _carol = join(&n1, "r", "carol").await;
    let alice = join(&n1, "r", "alice").await;
    let exists = || redis.command(&["HEXISTS", "sluice:room:r:peers", "alice"]);
    wait_until(Duration::from_secs(10), "alice announced", || {
        exists() == ":1"
    });
    // What someone with access to Redis kept: n1's signed entry for alice.
    let recorded = redis.command_bulk(&["HGET", "sluice:room:r:peers", "alice"]);
    alice.close();
    wait_until(Duration::from_secs(10), "alice's entry removed", || {
        exists() == ":0"
    });

    // Written back, it verifies (n1 signed it), and n1, which does not hold alice, removes it.
    assert_eq!(
        redis.command(&["HSET", "sluice:room:r:peers", "alice", &recorded]),
        ":1"
    );
    wait_until(
        Duration::from_secs(10),
        "n1 removes an entry of its own it does not hold",
        || exists() == ":0",
    );
    // A peer joining the room on n2 afterwards sees carol, not alice.
    let bob = join(&n2, "r", "bob").await;
    let peers: Vec<&str> = bob.peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(peers, vec!["carol"]);
    drop((n1, n2));
}

#[test]
fn a_flood_of_place_requests_reads_redis_at_a_bounded_rate() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    wait_registered(&redis, 1);
    let reads = || {
        let info = redis.command_bulk(&["INFO", "commandstats"]);
        let calls = |cmd: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
                .and_then(|rest| rest.split(',').next()?.parse().ok())
                .unwrap_or(0)
        };
        calls("hgetall") + calls("mget") + calls("smembers")
    };
    let before = reads();
    let started = Instant::now();
    // 300 requests for one room, 300 for rooms nobody asked for before.
    for i in 0..600 {
        let room = if i % 2 == 0 {
            "busy".to_owned()
        } else {
            format!("new-{i}")
        };
        assert_eq!(place(&n1, &room), "n1");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let read = reads() - before;
    eprintln!("{read} Redis reads for 600 placements in {elapsed:.1} s");
    // The read budget: a burst of twice the rate, then the rate; the heartbeat reads the nodes
    // (two calls) once a second beside it.
    let budget = 100.0 + 50.0 * elapsed + 2.0 * (elapsed + 1.0);
    assert!(
        (read as f64) <= budget,
        "{read} Redis reads for 600 placements in {elapsed:.1} s (budget {budget:.0})"
    );
}

/// Waits for a data consumer of `label` and returns its messages.
async fn data_consumer(session: &mut Session, label: &str) -> UnboundedReceiver<ReceivedData> {
    let event = session
        .wait_event(
            Duration::from_secs(15),
            |e| matches!(e, SessionEvent::DataConsumer { label: l, .. } if l == label),
        )
        .await;
    match event {
        Some(SessionEvent::DataConsumer { messages, .. }) => messages,
        other => panic!("no data consumer of {label}: {other:?}"),
    }
}

/// Sends `text` until it arrives on `messages` (SCTP may still be opening).
async fn deliver(
    from: &Session,
    stream: u16,
    messages: &mut UnboundedReceiver<ReceivedData>,
    text: &str,
) {
    for _ in 0..200 {
        from.send_data(stream, DataMessage::text(text)).unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), messages.recv()).await
        {
            assert_eq!(m.data, text.as_bytes());
            return;
        }
    }
    panic!("{text:?} never arrived");
}

/// Waits for a consumer of `producer_id` and returns its id and packets.
async fn consumer_of(
    session: &mut Session,
    producer_id: &str,
) -> (String, MediaKind, UnboundedReceiver<ReceivedRtp>) {
    let event = session
        .wait_event(
            Duration::from_secs(15),
            |e| matches!(e, SessionEvent::Consumer { producer_id: p, .. } if p == producer_id),
        )
        .await;
    match event {
        Some(SessionEvent::Consumer {
            id, kind, packets, ..
        }) => (id, kind, packets),
        other => panic!("no consumer of {producer_id}: {other:?}"),
    }
}

async fn first_packet(packets: &mut UnboundedReceiver<ReceivedRtp>) -> ReceivedRtp {
    tokio::time::timeout(Duration::from_secs(10), packets.recv())
        .await
        .expect("a packet within 10 s")
        .expect("the consumer is open")
}

async fn notification(session: &mut Session, what: &str, f: impl Fn(&ServerNotification) -> bool) {
    let event = session
        .wait_event(
            Duration::from_secs(15),
            |e| matches!(e, SessionEvent::Notification(n) if f(n)),
        )
        .await;
    assert!(event.is_some(), "no notification: {what}");
}

/// `session` (room r's only publisher) produces video with keyframes only when asked for,
/// as a browser sends them, and audio; returns their ids once Redis announces both.
async fn produce_video_and_audio(session: &Session, redis: &Redis) -> (String, String) {
    let mut source = SourceConfig::video();
    if let SourceConfig::Video {
        keyframe_interval, ..
    } = &mut source
    {
        *keyframe_interval = u32::MAX;
    }
    let video = session.produce(source).await.unwrap();
    let audio = session.produce(SourceConfig::audio()).await.unwrap();
    wait_until(Duration::from_secs(10), "the producers announced", || {
        redis.command(&["HLEN", "sluice:room:r:producers"]) == ":2"
    });
    (video, audio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_nodes_through_encrypted_pipes_with_pause_close_and_node_loss() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let n2 = start_node(&redis, "n2");
    wait_registered(&redis, 2);

    let mut alice = join(&n1, "r", "alice").await;
    // Keyframes only when asked for: bob's first frame needs his request to cross back to n1
    // (SRTCP on the pipe).
    let (video, audio) = produce_video_and_audio(&alice, &redis).await;

    // Bob on n2 consumes alice's producers through pipes from n1; the first video packet
    // starts a keyframe (his consumer's request crossed back to n1).
    let mut bob = join(&n2, "r", "bob").await;
    let (video_consumer, kind, mut video_packets) = consumer_of(&mut bob, &video).await;
    assert_eq!(kind, MediaKind::Video);
    let first = first_packet(&mut video_packets).await;
    assert!(
        sluice_client::media::vp8_is_keyframe(&first.payload),
        "the first piped video packet starts a keyframe"
    );
    let (audio_consumer, kind, mut audio_packets) = consumer_of(&mut bob, &audio).await;
    assert_eq!(kind, MediaKind::Audio);
    first_packet(&mut audio_packets).await;

    // The piped copy on n2 keeps alice's id but is not bob's to pause or close, and n1's own
    // objects are unknown to n2.
    for request in [
        ClientRequest::PauseProducer(ProducerRef {
            producer_id: audio.clone(),
        }),
        ClientRequest::CloseProducer(ProducerRef {
            producer_id: audio.clone(),
        }),
    ] {
        assert!(bob.request(request).await.is_err());
    }
    let transport = alice.send_transport_id.clone();
    let refused = bob
        .request_raw(
            "restartIce",
            serde_json::json!({ "transportId": transport }),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Alice's audio still flows to bob (what was queued before aside).
    while audio_packets.try_recv().is_ok() {}
    first_packet(&mut audio_packets).await;

    // And the other way: bob's audio reaches alice on n1.
    let bob_audio = bob.produce(SourceConfig::audio()).await.unwrap();
    let (_, _, mut at_alice) = consumer_of(&mut alice, &bob_audio).await;
    first_packet(&mut at_alice).await;

    // Data both ways: a node consumes the other's data producer over DTLS and SCTP.
    let (_, alice_chat) = alice.produce_data("chat", true, None).await.unwrap();
    let (_, bob_chat) = bob.produce_data("chat", true, None).await.unwrap();
    let mut at_bob = data_consumer(&mut bob, "chat").await;
    let mut at_alice = data_consumer(&mut alice, "chat").await;
    deliver(&alice, alice_chat, &mut at_bob, "gg").await;
    deliver(&bob, bob_chat, &mut at_alice, "wp").await;
    for i in 0..20 {
        alice
            .send_data(alice_chat, DataMessage::text(format!("m{i}")))
            .unwrap();
    }
    for i in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(10), at_bob.recv())
            .await
            .unwrap()
            .unwrap();
        // After "gg" (maybe sent more than once), every message in order.
        if m.data == b"gg" {
            continue;
        }
        assert_eq!(m.data, format!("m{i}").as_bytes());
    }

    // n2 counts its pipes from n1 (video, audio, chat) and to n1 (bob's audio and chat).
    wait_until(Duration::from_secs(10), "n2's pipe gauges", || {
        let (_, m) = http_get_text(&n2.addr, "/metrics", None);
        m.contains("sluice_cluster_pipes{direction=\"in\"} 3")
            && m.contains("sluice_cluster_pipes{direction=\"out\"} 2")
    });

    // A late joiner on n2 gets n1's producers (the pipes n2 already has).
    let mut dave = join(&n2, "r", "dave").await;
    let (_, _, mut dave_video) = consumer_of(&mut dave, &video).await;
    first_packet(&mut dave_video).await;

    // Pause, resume and close cross with the usual notifications.
    alice
        .request(ClientRequest::PauseProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    notification(
        &mut bob,
        "video paused",
        |n| matches!(n, ServerNotification::ConsumerPaused(c) if c.consumer_id == video_consumer),
    )
    .await;
    alice
        .request(ClientRequest::ResumeProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    notification(
        &mut bob,
        "video resumed",
        |n| matches!(n, ServerNotification::ConsumerResumed(c) if c.consumer_id == video_consumer),
    )
    .await;
    alice
        .request(ClientRequest::CloseProducer(ProducerRef {
            producer_id: video.clone(),
        }))
        .await
        .unwrap();
    notification(
        &mut bob,
        "video closed",
        |n| matches!(n, ServerNotification::ConsumerClosed(c) if c.consumer_id == video_consumer),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the closed producer leaves Redis",
        || redis.command(&["HLEN", "sluice:room:r:producers"]) == ":2",
    );

    // n1 is lost: bob's consumer of alice's audio closes, and alice leaves his room.
    let mut n1 = n1;
    n1.process.0.kill().unwrap();
    n1.process.0.wait().unwrap();
    notification(
        &mut bob,
        "audio closed with its node",
        |n| matches!(n, ServerNotification::ConsumerClosed(c) if c.consumer_id == audio_consumer),
    )
    .await;
    notification(
        &mut bob,
        "alice gone",
        |n| matches!(n, ServerNotification::PeerClosed(p) if p.peer_id == "alice"),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "n1's producers leave Redis",
        || redis.command(&["HLEN", "sluice:room:r:producers"]) == ":1",
    );
    drop((alice, n2));
}

/// A node's gauge `series` (e.g. `sluice_cluster_pipes_paused{direction="out"}`), or `None`
/// before the node counted it.
fn gauge(node: &Node, series: &str) -> Option<f64> {
    let (_, body) = http_get_text(&node.addr, "/metrics", None);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Pauses or resumes one of `session`'s consumers.
async fn set_consumer_paused(session: &Session, consumer_id: &str, paused: bool) {
    let consumer = ConsumerRef {
        consumer_id: consumer_id.to_owned(),
    };
    let request = if paused {
        ClientRequest::PauseConsumer(consumer)
    } else {
        ClientRequest::ResumeConsumer(consumer)
    };
    session.request(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_between_nodes_carries_media_only_while_a_consumer_at_its_target_wants_it() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let n2 = start_node(&redis, "n2");
    wait_registered(&redis, 2);
    let alice = join(&n1, "r", "alice").await;
    let (video, audio) = produce_video_and_audio(&alice, &redis).await;
    let out = |paused: f64| {
        gauge(&n1, "sluice_cluster_pipes{direction=\"out\"}") == Some(2.0)
            && gauge(&n1, "sluice_cluster_pipes_paused{direction=\"out\"}") == Some(paused)
    };

    // Bob on n2 consumes both: both pipes carry.
    let mut bob = join(&n2, "r", "bob").await;
    let (video_consumer, _, mut video_packets) = consumer_of(&mut bob, &video).await;
    let (audio_consumer, _, mut audio_packets) = consumer_of(&mut bob, &audio).await;
    first_packet(&mut video_packets).await;
    first_packet(&mut audio_packets).await;
    wait_until(Duration::from_secs(10), "n1's pipes carry", || out(0.0));

    // Bob pauses both (as interest management would): n1 stops sending them to n2.
    set_consumer_paused(&bob, &video_consumer, true).await;
    set_consumer_paused(&bob, &audio_consumer, true).await;
    wait_until(Duration::from_secs(10), "n1's pipes pause", || out(2.0));
    wait_until(Duration::from_secs(10), "n2 wants neither", || {
        gauge(&n2, "sluice_cluster_pipes_paused{direction=\"in\"}") == Some(2.0)
    });
    // n1's workers say so too, and send nothing on them while alice sends on.
    let token = admin_token();
    let pipes_out = || {
        let (status, room) = http_get(&n1.addr, "/api/rooms/r", Some(&token));
        assert_eq!(status, 200, "{room}");
        room["pipesOut"].as_array().cloned().unwrap_or_default()
    };
    let before = pipes_out();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before
            .iter()
            .all(|p| p["node"] == "n2" && p["kind"] == "media" && p["paused"] == true),
        "{before:?}"
    );
    let sent = alice.send.stats().await.unwrap().rtp_sent;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alice.send.stats().await.unwrap().rtp_sent < sent + 60 {
        assert!(Instant::now() < deadline, "alice stopped sending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pipes_out(), before, "a paused pipe sends nothing");

    // Bob resumes the video: its pipe carries again, and bob's first frame is a keyframe
    // (the resumed pipe asked alice for one).
    while video_packets.try_recv().is_ok() {}
    set_consumer_paused(&bob, &video_consumer, false).await;
    let first = first_packet(&mut video_packets).await;
    assert!(
        sluice_client::media::vp8_is_keyframe(&first.payload),
        "the resumed pipe starts on a keyframe"
    );
    wait_until(Duration::from_secs(10), "n1's video pipe carries", || {
        out(1.0)
    });

    // Dave joins n2 and consumes alice's audio: its pipe carries again for him.
    let mut dave = join(&n2, "r", "dave").await;
    let (_, _, mut dave_audio) = consumer_of(&mut dave, &audio).await;
    first_packet(&mut dave_audio).await;
    wait_until(Duration::from_secs(10), "n1's audio pipe carries", || {
        out(0.0)
    });
    drop((alice, bob, dave, n1, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_longer_than_its_ttl_closes_its_peers_with_1013() {
    let redis = Redis::start();
    let n1 = start_node(&redis, "n1");
    let mut alice = join(&n1, "r", "alice").await;
    drop(redis);
    let closed = alice
        .wait_event(Duration::from_secs(15), |e| {
            matches!(e, SessionEvent::Closed { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Some(SessionEvent::Closed {
                code: Some(1013),
                ..
            })
        ),
        "{closed:?}"
    );
    drop(n1);
}

/// `sluice serve` on loopback with the cluster flags `cluster` (a secret and a Redis URL): it
/// must fail to start; answers what it printed on stderr.
fn serve_refused(cluster: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--rtc-port", "0"])
        .args(["--workers", "1", "--auth-secret", AUTH_SECRET])
        .args(cluster)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_node_that_cannot_reach_its_redis_does_not_start() {
    // A port nothing listens on: bound, read, released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = format!("redis://127.0.0.1:{port}");
    let stderr = serve_refused(&[
        "--cluster-secret",
        CLUSTER_SECRET,
        "--cluster-redis",
        &redis,
    ]);
    assert!(stderr.contains("cannot join the cluster"), "{stderr}");
}

#[test]
fn a_cluster_without_a_long_enough_secret_is_refused() {
    let stderr = serve_refused(&[
        "--cluster-secret",
        "short",
        "--cluster-redis",
        "redis://127.0.0.1:1",
    ]);
    assert!(stderr.contains("cluster.secret"), "{stderr}");
}
