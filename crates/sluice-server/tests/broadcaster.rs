//! mediasoup-demo's broadcaster REST API: a tool joins a room over HTTP, sends plain RTP to a
//! plain transport, and the room's peers see it join and consume its media; bad requests get
//! clear errors.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_client::SessionEvent;
use sluice_client::media::{Stamp, audio_payload};
use sluice_media::ortc::MediaKind;
use sluice_protocol::ServerNotification;
use sluice_server::auth::Grants;

fn rtp(pt: u8, seq: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn post(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    let (status, text) =
        http_body("POST", &server.base, path, Some(token), &body.to_string()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const OPUS: &str = r#"{"codecs":[{"mimeType":"audio/opus","payloadType":100,"clockRate":48000,"channels":2}],"encodings":[{"ssrc":1111}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_sending_plain_rtp_is_seen_and_heard_by_the_rooms_peers() {
    let server = TestServer::start(|_| {}).await;
    let mut viewer = server.session("r", "viewer").await;
    let token = server.token("r", "bcast", Grants::player());
    let (status, joined) = post(
        &server,
        "/rooms/r/broadcasters",
        &token,
        json!({"id": "bcast", "displayName": "Broadcaster",
               "device": {"name": "FFmpeg", "flag": "broadcaster"}}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    let peers: Vec<&str> = joined["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(peers, vec!["viewer"]);
    let seen = viewer
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, SessionEvent::Notification(ServerNotification::NewPeer(p)) if p.id == "bcast")
        })
        .await;
    assert!(seen.is_some(), "the viewer is told of the broadcaster");
    // The room's state lists it as a joined peer, so late joiners' `join` answers name it.
    let room = server.instance.room("r").await.unwrap();
    let listed = room
        .store
        .read(|s| {
            s.peers
                .get("bcast")
                .map(|p| (p.joined, p.display_name.clone()))
        })
        .unwrap();
    assert_eq!(listed, Some((true, "Broadcaster".to_owned())));

    let (status, transport) = post(
        &server,
        "/rooms/r/broadcasters/bcast/transports",
        &token,
        json!({"type": "plain", "comedia": true, "rtcpMux": false}),
    )
    .await;
    assert_eq!(status, 200, "{transport}");
    let transport_id = transport["id"].as_str().unwrap();
    let ip = transport["ip"].as_str().unwrap();
    let port = transport["port"].as_u64().unwrap() as u16;
    assert!(transport["rtcpPort"].as_u64().is_some(), "{transport}");
    let (status, produced) = post(
        &server,
        &format!("/rooms/r/broadcasters/bcast/transports/{transport_id}/producers"),
        &token,
        json!({"kind": "audio", "rtpParameters": serde_json::from_str::<Value>(OPUS).unwrap()}),
    )
    .await;
    assert_eq!(status, 200, "{produced}");

    let (_, from_peer, mut packets) = wait_consumer(&mut viewer, MediaKind::Audio).await;
    assert_eq!(from_peer, "bcast");
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = SocketAddr::new(ip.parse().unwrap(), port);
    let sending = tokio::spawn(async move {
        for frame in 0..1000u32 {
            let stamp = Stamp {
                layer: 0,
                frame,
                index: 0,
                count: 1,
                sent_us: 0,
            };
            let p = rtp(
                100,
                frame as u16,
                frame * 960,
                1111,
                &audio_payload(stamp, 80),
            );
            sender.send_to(&p, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut got = Vec::new();
    while got.len() < 20 {
        let p = tokio::time::timeout(Duration::from_secs(30), packets.recv())
            .await
            .expect("the broadcaster's audio arrives")
            .unwrap();
        got.push(
            sluice_client::media::audio_stamp(&p.payload)
                .expect("intact")
                .frame,
        );
    }
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{got:?}");
    // A peer joining later is offered the broadcaster's producer too.
    let mut late = server.session("r", "late").await;
    let (_, from_peer, mut late_packets) = wait_consumer(&mut late, MediaKind::Audio).await;
    assert_eq!(from_peer, "bcast");
    let p = tokio::time::timeout(Duration::from_secs(30), late_packets.recv())
        .await
        .expect("the late joiner hears the broadcaster")
        .unwrap();
    assert!(sluice_client::media::audio_stamp(&p.payload).is_some());
    sending.abort();

    let (status, _) = http(
        "DELETE",
        &server.base,
        "/rooms/r/broadcasters/bcast",
        Some(&token),
    )
    .await;
    assert_eq!(status, 204);
    let gone = viewer
        .wait_event(Duration::from_secs(10), |e| {
            matches!(e, SessionEvent::Notification(ServerNotification::PeerClosed(p)) if p.peer_id == "bcast")
        })
        .await;
    assert!(gone.is_some(), "the viewer is told the broadcaster left");
    assert!(room.objects().producers.is_empty());
    let listed = room.store.read(|s| s.peers.contains_key("bcast")).unwrap();
    assert!(!listed, "the broadcaster is gone from the room's state");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_broadcaster_requests_get_clear_errors_and_change_nothing() {
    let server = TestServer::start(|_| {}).await;
    let token = server.token("r", "bcast", Grants::player());
    let other = server.token("r", "someone-else", Grants::player());
    let join = json!({"id": "bcast"});
    // No token, another subject's token, a malformed body.
    let (status, _) = http_body(
        "POST",
        &server.base,
        "/rooms/r/broadcasters",
        None,
        &join.to_string(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&server, "/rooms/r/broadcasters", &other, join.clone()).await;
    assert_eq!(status, 403);
    let (status, body) = http_body(
        "POST",
        &server.base,
        "/rooms/r/broadcasters",
        Some(&token),
        "{not json",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("error"), "{body}");
    // Unknown broadcaster, then a real one joined twice.
    let (status, _) = post(
        &server,
        "/rooms/r/broadcasters/bcast/transports",
        &token,
        json!({"type": "plain"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        post(&server, "/rooms/r/broadcasters", &token, join.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        post(&server, "/rooms/r/broadcasters", &token, join).await.0,
        409
    );
    // A transport type other than plain and WebRTC is refused.
    let (status, body) = post(
        &server,
        "/rooms/r/broadcasters/bcast/transports",
        &token,
        json!({"type": "pipe"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, transport) = post(
        &server,
        "/rooms/r/broadcasters/bcast/transports",
        &token,
        json!({"type": "plain"}),
    )
    .await;
    // A plain transport has no SCTP: no data producer on it.
    let (status, body) = post(
        &server,
        &format!(
            "/rooms/r/broadcasters/bcast/transports/{}/produce/data",
            transport["id"].as_str().unwrap()
        ),
        &token,
        json!({"sctpStreamParameters": {"streamId": 1}, "label": "chat"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // Nowhere to send to: no unicast address, or port 0.
    for (ip, port) in [
        ("255.255.255.255", 9),
        ("0.0.0.0", 9),
        ("224.0.0.1", 9),
        ("127.0.0.1", 0),
    ] {
        let (status, body) = post(
            &server,
            &format!(
                "/rooms/r/broadcasters/bcast/transports/{}/connect",
                transport["id"].as_str().unwrap()
            ),
            &token,
            json!({"ip": ip, "port": port}),
        )
        .await;
        assert_eq!(status, 400, "{ip}:{port}: {body}");
        assert!(body.to_string().contains("invalid remote"), "{body}");
    }
    let path = format!(
        "/rooms/r/broadcasters/bcast/transports/{}/producers",
        transport["id"].as_str().unwrap()
    );
    // Without an SSRC, and without the publish grant.
    let mut no_ssrc: Value = serde_json::from_str(OPUS).unwrap();
    no_ssrc["encodings"][0] = json!({});
    let (status, body) = post(
        &server,
        &path,
        &token,
        json!({"kind": "audio", "rtpParameters": no_ssrc}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let listen_only = server.token(
        "r",
        "bcast",
        Grants {
            publish: false,
            ..Grants::player()
        },
    );
    let opus: Value = serde_json::from_str(OPUS).unwrap();
    let (status, _) = post(
        &server,
        &path,
        &listen_only,
        json!({"kind": "audio", "rtpParameters": opus}),
    )
    .await;
    assert_eq!(status, 403);
    let room = server.instance.room("r").await.unwrap();
    assert!(room.objects().producers.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_consumes_a_peers_producer_as_plain_rtp_sent_to_its_port() {
    let server = TestServer::start(|_| {}).await;
    let singer = server.session("r", "singer").await;
    let producer_id = singer
        .produce(sluice_client::SourceConfig::audio())
        .await
        .unwrap();
    let room = server.instance.room("r").await.unwrap();
    let caps = serde_json::to_value(room.router.rtp_capabilities()).unwrap();
    let token = server.token("r", "rec", Grants::player());
    let (status, _) = post(
        &server,
        "/rooms/r/broadcasters",
        &token,
        json!({"id": "rec", "rtpCapabilities": caps}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, transport) = post(
        &server,
        "/rooms/r/broadcasters/rec/transports",
        &token,
        json!({"type": "plain"}),
    )
    .await;
    let transport_id = transport["id"].as_str().unwrap();
    let port = transport["port"].as_u64().unwrap() as u16;
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    let (status, body) = post(
        &server,
        &format!("/rooms/r/broadcasters/rec/transports/{transport_id}/connect"),
        &token,
        json!({"ip": me.ip().to_string(), "port": me.port()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, consumer) = post(
        &server,
        &format!(
            "/rooms/r/broadcasters/rec/transports/{transport_id}/consume?producerId={producer_id}"
        ),
        &token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{consumer}");
    assert_eq!(consumer["producerId"], producer_id.as_str());
    assert_eq!(consumer["kind"], "audio");
    let ssrc = consumer["rtpParameters"]["encodings"][0]["ssrc"]
        .as_u64()
        .unwrap() as u32;
    let mut buf = [0u8; 2048];
    let (mut rtp, mut reports) = (0, 0);
    while rtp < 20 || reports == 0 {
        let (n, from) = tokio::time::timeout(Duration::from_secs(30), listener.recv_from(&mut buf))
            .await
            .expect("the singer's audio arrives as plain RTP, with sender reports")
            .unwrap();
        assert_eq!(from.port(), port);
        if buf[1] == 200 {
            // A sender report (RFC 3550 §6.4.1) from the consumer's SSRC, then its CNAME.
            assert_eq!(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]), ssrc);
            assert_eq!(buf[28 + 1], 202, "SDES follows");
            reports += 1;
            continue;
        }
        assert_eq!(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]), ssrc);
        assert!(sluice_client::media::audio_stamp(&buf[12..n]).is_some());
        rtp += 1;
    }
    // A producer that does not exist, and a broadcaster that gave no capabilities.
    let path =
        format!("/rooms/r/broadcasters/rec/transports/{transport_id}/consume?producerId=nope");
    assert_eq!(post(&server, &path, &token, json!({})).await.0, 404);
    let mute = server.token("r", "mute", Grants::player());
    assert_eq!(
        post(
            &server,
            "/rooms/r/broadcasters",
            &mute,
            json!({"id": "mute"})
        )
        .await
        .0,
        200
    );
    let (_, t) = post(
        &server,
        "/rooms/r/broadcasters/mute/transports",
        &mute,
        json!({"type": "plain"}),
    )
    .await;
    let path = format!(
        "/rooms/r/broadcasters/mute/transports/{}/consume?producerId={producer_id}",
        t["id"].as_str().unwrap()
    );
    assert_eq!(post(&server, &path, &mute, json!({})).await.0, 422);
    let (status, _) = http(
        "DELETE",
        &server.base,
        "/rooms/r/broadcasters/rec",
        Some(&token),
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        room.objects()
            .consumers
            .values()
            .all(|c| c.peer_id != "rec")
    );
    server.stop().await;
}

/// Whether something (ffmpeg) holds UDP `port` on the loopback.
fn port_taken(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// An even loopback port whose odd neighbour is free too (ffmpeg takes both), let go.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port % 2 == 0 && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_from_ffmpeg_is_decrypted_and_srtp_to_ffmpeg_is_encrypted_with_the_keys_exchanged() {
    use base64::Engine;
    let server = TestServer::start(|_| {}).await;
    let token = server.token("r", "cast", Grants::player());
    let base = "/rooms/r/broadcasters";
    let opus_caps = json!({"codecs": [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000,
        "channels": 2, "preferredPayloadType": 100}], "headerExtensions": []});
    let (status, joined) = post(
        &server,
        base,
        &token,
        json!({"id": "cast", "rtpCapabilities": opus_caps}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");

    // In: ffmpeg encrypts with its key, given to sluice at connect.
    let (status, inbound) = post(
        &server,
        &format!("{base}/cast/transports"),
        &token,
        json!({"type": "plain", "comedia": true, "rtcpMux": false, "enableSrtp": true}),
    )
    .await;
    assert_eq!(status, 200, "{inbound}");
    assert_eq!(
        inbound["srtpParameters"]["cryptoSuite"],
        "AES_CM_128_HMAC_SHA1_80"
    );
    let in_id = inbound["id"].as_str().unwrap();
    let ffmpeg_key = base64::engine::general_purpose::STANDARD
        .encode((0..30u8).map(|i| i * 7 + 3).collect::<Vec<_>>());
    // Without the key, or with a key of the wrong size, connect is refused.
    let connect = format!("{base}/cast/transports/{in_id}/connect");
    let (status, refused) = post(&server, &connect, &token, json!({})).await;
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = post(
        &server,
        &connect,
        &token,
        json!({"srtpParameters": {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": "AAAA"}}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let (status, connected) = post(
        &server,
        &connect,
        &token,
        json!({"srtpParameters": {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": ffmpeg_key}}),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    let (status, produced) = post(
        &server,
        &format!("{base}/cast/transports/{in_id}/producers"),
        &token,
        json!({"kind": "audio", "rtpParameters": serde_json::from_str::<Value>(OPUS).unwrap()}),
    )
    .await;
    assert_eq!(status, 200, "{produced}");
    let producer_id = produced["id"].as_str().unwrap();

    // Out: sluice encrypts with its own key (answered at creation), which ffmpeg reads from
    // the SDP's a=crypto line.
    let (status, outbound) = post(
        &server,
        &format!("{base}/cast/transports"),
        &token,
        json!({"type": "plain", "enableSrtp": true}),
    )
    .await;
    assert_eq!(status, 200, "{outbound}");
    let out_id = outbound["id"].as_str().unwrap();
    let sluice_key = outbound["srtpParameters"]["keyBase64"].as_str().unwrap();
    assert_ne!(
        sluice_key,
        inbound["srtpParameters"]["keyBase64"].as_str().unwrap()
    );
    let port = free_port_pair();
    let (status, connected) = post(
        &server,
        &format!("{base}/cast/transports/{out_id}/connect"),
        &token,
        json!({"ip": "127.0.0.1", "port": port, "srtpParameters":
            {"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": ffmpeg_key}}),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    let dir = std::env::temp_dir().join(format!("sluice-srtp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sdp = dir.join("in.sdp");
    let file = dir.join("out.webm");
    std::fs::write(
        &sdp,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 100\r\na=rtpmap:100 opus/48000/2\r\n\
             a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{sluice_key}\r\n"
        ),
    )
    .unwrap();
    let mut receiver = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args([
            "-protocol_whitelist",
            "file,udp,rtp,srtp",
            "-analyzeduration",
            "1000000",
        ])
        .args(["-f", "sdp", "-i"])
        .arg(&sdp)
        .args(["-c", "copy", "-t", "2", "-y"])
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg; scripts/test installs it)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !port_taken(port) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ffmpeg did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, consumed) = post(
        &server,
        &format!("{base}/cast/transports/{out_id}/consume?producerId={producer_id}"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{consumed}");

    let to = format!(
        "srtp://{}:{}?rtcpport={}",
        inbound["ip"].as_str().unwrap(),
        inbound["port"],
        inbound["rtcpPort"]
    );
    let mut sender = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "30",
        ])
        .args(["-c:a", "libopus", "-ac", "2", "-b:a", "64k", "-f", "rtp"])
        .args(["-ssrc", "1111", "-payload_type", "100"])
        .args([
            "-srtp_out_suite",
            "AES_CM_128_HMAC_SHA1_80",
            "-srtp_out_params",
            &ffmpeg_key,
        ])
        .arg(&to)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The receiving ffmpeg stops by itself after two seconds of decrypted audio.
    let status = tokio::time::timeout(Duration::from_secs(60), receiver.wait())
        .await
        .expect("the receiving ffmpeg got two seconds of audio")
        .unwrap();
    let _ = sender.kill().await;
    assert!(status.success(), "{status}");
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration",
            "-of",
            "json",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let probed: Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(probed["streams"][0]["codec_name"], "opus", "{probed}");
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.5..=2.5).contains(&duration), "{duration}");
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcaster_on_a_webrtc_transport_sends_audio_and_data_that_peers_receive() {
    use sluice_client::{ClientNumbering, ClientTransport, ClientTransportOptions};
    use sluice_client::{ServerTransportInfo, SourceConfig};
    use sluice_media::DataMessage;
    let server = TestServer::start(|_| {}).await;
    let mut viewer = server.session("r", "viewer").await;
    let token = server.token("r", "rtc", Grants::player());
    let base = "/rooms/r/broadcasters";
    let (status, joined) = post(&server, base, &token, json!({"id": "rtc"})).await;
    assert_eq!(status, 200, "{joined}");
    let (status, created) = post(
        &server,
        &format!("{base}/rtc/transports"),
        &token,
        json!({"type": "webrtc", "sctpCapabilities": {"numStreams": {"OS": 1024, "MIS": 1024}}}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let transport_id = created["id"].as_str().unwrap();
    assert!(created["sctpParameters"].is_object(), "{created}");
    let info = ServerTransportInfo {
        ice_parameters: serde_json::from_value(created["iceParameters"].clone()).unwrap(),
        ice_candidates: serde_json::from_value(created["iceCandidates"].clone()).unwrap(),
        dtls_parameters: serde_json::from_value(created["dtlsParameters"].clone()).unwrap(),
        sctp_parameters: serde_json::from_value(created["sctpParameters"].clone()).unwrap(),
    };
    let client = ClientTransport::new(
        &info,
        ClientTransportOptions::new(ClientNumbering::chromium()),
    )
    .await
    .unwrap();
    let connect = format!("{base}/rtc/transports/{transport_id}/connect");
    // A WebRTC transport is connected with DTLS parameters, not an address.
    let (status, refused) = post(
        &server,
        &connect,
        &token,
        json!({"ip": "127.0.0.1", "port": 9}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    let (status, connected) = post(
        &server,
        &connect,
        &token,
        json!({"dtlsParameters": client.dtls_parameters()}),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    client.start();
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();

    let producer = client.produce(SourceConfig::audio(), false).await.unwrap();
    let (status, produced) = post(
        &server,
        &format!("{base}/rtc/transports/{transport_id}/producers"),
        &token,
        json!({"kind": "audio", "rtpParameters": producer.rtp_parameters}),
    )
    .await;
    assert_eq!(status, 200, "{produced}");
    let (_, from, mut packets) = wait_consumer(&mut viewer, MediaKind::Audio).await;
    assert_eq!(from, "rtc");
    let first = tokio::time::timeout(Duration::from_secs(10), packets.recv())
        .await
        .expect("audio from the broadcaster")
        .unwrap();
    assert!(!first.payload.is_empty());

    let channel = client
        .produce_data("chat", true, None, None, None)
        .await
        .unwrap();
    let (status, data) = post(
        &server,
        &format!("{base}/rtc/transports/{transport_id}/produce/data"),
        &token,
        json!({"sctpStreamParameters": channel.sctp_stream_parameters, "label": "chat"}),
    )
    .await;
    assert_eq!(status, 200, "{data}");
    let event = viewer
        .wait_event(
            Duration::from_secs(10),
            |e| matches!(e, SessionEvent::DataConsumer { label, .. } if label == "chat"),
        )
        .await
        .expect("the viewer consumes the broadcaster's channel");
    let SessionEvent::DataConsumer {
        peer_id,
        mut messages,
        ..
    } = event
    else {
        unreachable!("matched above")
    };
    assert_eq!(peer_id.as_deref(), Some("rtc"));
    // Sent until one arrives: the viewer's side of the channel opens on its own time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        assert!(tokio::time::Instant::now() < deadline, "no message arrived");
        client
            .send_data(
                channel.sctp_stream_parameters.stream_id,
                DataMessage::text("hello from a broadcaster"),
            )
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), messages.recv()).await
        {
            break m;
        }
    };
    assert_eq!(got.data, b"hello from a broadcaster");

    // Leaving closes the transport: the viewer's consumers of it close.
    let (status, _) = http("DELETE", &server.base, &format!("{base}/rtc"), Some(&token)).await;
    assert_eq!(status, 204);
    let closed = viewer
        .wait_event(Duration::from_secs(10), |e| {
            matches!(
                e,
                SessionEvent::Notification(ServerNotification::DataConsumerClosed(_))
            )
        })
        .await;
    assert!(closed.is_some(), "the viewer's data consumer closes");
    let room = server.instance.room("r").await.unwrap();
    assert_eq!(room.objects().count_of("rtc"), [0; 5]);
    server.stop().await;
}
