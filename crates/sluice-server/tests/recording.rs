//! Recording through the admin API: a broadcaster's ffmpeg sends VP8 and Opus, the room is
//! recorded by sluice's own ffmpeg into WebM, and `ffprobe` (Debian's ffmpeg package, which
//! scripts/test installs) reads the files back: both streams, the right duration, a clean end
//! on a stop, on the producers' close, at the room's byte budget, and when ffmpeg fails.

#![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_server::auth::Grants;
use sluice_server::store::Action;

const ROOM: &str = "rec";

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http_body(method, &server.base, path, Some(token), &body).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A fresh directory for one test's recordings.
fn recording_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-rec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A broadcaster in `ROOM` with an Opus and a VP8 producer on plain transports (mediasoup-demo's
/// ffmpeg.sh set-up); answers its token, where ffmpeg sends each, and the producer ids.
struct Broadcast {
    token: String,
    audio_to: String,
    video_to: String,
    producers: Vec<String>,
}

async fn broadcast(server: &TestServer) -> Broadcast {
    let token = server.token(ROOM, "cast", Grants::player());
    let base = format!("/rooms/{ROOM}/broadcasters");
    let (status, joined) = call(
        server,
        "POST",
        &base,
        &token,
        json!({"id": "cast", "displayName": "Cast", "device": {"name": "FFmpeg"}}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    let mut to = Vec::new();
    let mut producers = Vec::new();
    let specs = [
        json!({"kind": "audio", "rtpParameters": {"codecs": [{"mimeType": "audio/opus", "payloadType": 100,
            "clockRate": 48000, "channels": 2}], "encodings": [{"ssrc": 1111}]}}),
        json!({"kind": "video", "rtpParameters": {"codecs": [{"mimeType": "video/VP8", "payloadType": 101,
            "clockRate": 90000}], "encodings": [{"ssrc": 2222}]}}),
    ];
    for spec in specs {
        let (status, t) = call(
            server,
            "POST",
            &format!("{base}/cast/transports"),
            &token,
            json!({"type": "plain", "comedia": true, "rtcpMux": false}),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        to.push(format!(
            "rtp://{}:{}?rtcpport={}",
            t["ip"].as_str().unwrap(),
            t["port"],
            t["rtcpPort"]
        ));
        let (status, p) = call(
            server,
            "POST",
            &format!(
                "{base}/cast/transports/{}/producers",
                t["id"].as_str().unwrap()
            ),
            &token,
            spec,
        )
        .await;
        assert_eq!(status, 200, "{p}");
        producers.push(p["id"].as_str().unwrap().to_owned());
    }
    Broadcast {
        token,
        audio_to: to[0].clone(),
        video_to: to[1].clone(),
        producers,
    }
}

/// ffmpeg sending `seconds` of a test pattern (VP8, a keyframe a second) and a tone (Opus) in
/// real time, as mediasoup-demo's broadcaster script does.
fn send(cast: &Broadcast, seconds: u32) -> tokio::process::Child {
    let seconds = seconds.to_string();
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=15"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds])
        .args(["-map", "1:a:0", "-c:a", "libopus", "-b:a", "64k", "-ac", "2"])
        .args(["-map", "0:v:0", "-pix_fmt", "yuv420p", "-c:v", "libvpx", "-b:v", "300k"])
        .args(["-deadline", "realtime", "-cpu-used", "8", "-g", "15", "-f", "tee"])
        .arg(format!(
            "[select=a:f=rtp:ssrc=1111:payload_type=100]{}|[select=v:f=rtp:ssrc=2222:payload_type=101]{}",
            cast.audio_to, cast.video_to
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg; scripts/test installs it)")
}

/// What ffprobe reads in a file: its streams' (type, codec) and its duration in seconds.
fn probe(path: &Path) -> (Vec<(String, String)>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .args([
            "format=duration:stream=codec_type,codec_name",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut streams: Vec<(String, String)> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().to_owned(),
                s["codec_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    streams.sort();
    let duration = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    (streams, duration)
}

fn opus_and_vp8() -> Vec<(String, String)> {
    vec![
        ("audio".to_owned(), "opus".to_owned()),
        ("video".to_owned(), "vp8".to_owned()),
    ]
}

/// Polls the room's recordings until `done` holds for one of them; answers it.
async fn wait_recording(server: &TestServer, admin: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/rooms/{ROOM}/recording");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, listed) = call(server, "GET", &path, admin, Value::Null).await;
        assert_eq!(status, 200, "{listed}");
        if let Some(r) = listed["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| done(r))
        {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording came to the state wanted: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_seconds_of_vp8_and_opus_are_recorded_into_one_webm_that_ends_when_the_producers_close()
 {
    let dir = recording_dir("five");
    let server = TestServer::start(|c| c.recording.directory = dir.clone()).await;
    let admin = server.admin_token();
    let cast = broadcast(&server).await;
    let room = server.instance.room(ROOM).await.unwrap();
    let mut actions = room.store.subscribe();

    let (status, started) = call(
        &server,
        "POST",
        &format!("/api/rooms/{ROOM}/recording"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["roomWide"], true);
    let recordings = started["recordings"].as_array().unwrap();
    assert_eq!(
        recordings.len(),
        1,
        "one file for the peer's two producers: {started}"
    );
    let mut recorded: Vec<String> = recordings[0]["producerIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    recorded.sort();
    let mut expected = cast.producers.clone();
    expected.sort();
    assert_eq!(recorded, expected);
    assert_eq!(recordings[0]["peerId"], "cast");
    assert_eq!(recordings[0]["state"], "recording");
    let file = PathBuf::from(recordings[0]["file"].as_str().unwrap());
    assert!(file.starts_with(dir.join(ROOM)), "{}", file.display());
    assert_eq!(file.extension().unwrap(), "webm");
    let id = recordings[0]["id"].as_str().unwrap().to_owned();
    let in_state = room
        .store
        .read(|s| s.recordings.get(&id).map(|r| r.peer_id.clone()));
    assert_eq!(in_state, Some(Some("cast".to_owned())));

    let mut sender = send(&cast, 5);
    let status = tokio::time::timeout(Duration::from_secs(60), sender.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the sending ffmpeg: {status}");
    // The broadcaster leaves: its producers close, and so does the recording, cleanly.
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/rooms/{ROOM}/broadcasters/cast"),
        &cast.token,
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let ended = wait_recording(&server, &admin, |r| r["state"] == "stopped").await;
    assert_eq!(ended["reason"], "producerClosed", "{ended}");
    let bytes = ended["bytes"].as_u64().unwrap();
    assert_eq!(bytes, std::fs::metadata(&file).unwrap().len());

    let (streams, duration) = probe(&file);
    assert_eq!(streams, opus_and_vp8());
    assert!(
        (duration - 5.0).abs() <= 0.5,
        "{duration} s recorded of 5 s sent"
    );
    let sdp = file.with_extension("sdp");
    assert!(!sdp.exists(), "the SDP given to ffmpeg is removed");

    // The store told the story: started, then stopped with the reason and the size.
    let mut stopped = None;
    while let Ok(a) = actions.try_recv() {
        if let Action::RecordingStopped {
            recording_id,
            reason,
            bytes: b,
            ..
        } = &*a
            && *recording_id == id
        {
            stopped = Some((reason.clone(), *b));
        }
    }
    assert_eq!(stopped, Some(("producerClosed".to_owned(), bytes)));
    assert!(room.store.read(|s| s.recordings.is_empty()).unwrap());
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_stopped_mid_stream_is_a_playable_file_and_a_second_start_is_refused() {
    let dir = recording_dir("stop");
    let server = TestServer::start(|c| c.recording.directory = dir.clone()).await;
    let admin = server.admin_token();
    let cast = broadcast(&server).await;
    let path = format!("/api/rooms/{ROOM}/recording");

    let (status, started) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": cast.producers}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["roomWide"], false);
    let file = PathBuf::from(started["recordings"][0]["file"].as_str().unwrap());
    // A producer is in one recording at most; unknown producers and bad bodies are refused.
    let (status, again) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": [cast.producers[0]]}),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let (status, unknown) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": ["nope"]}),
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    let (status, bad) = call(&server, "POST", &path, &admin, json!({"producers": []})).await;
    assert_eq!(status, 400, "{bad}");
    let player = server.token(ROOM, "someone", Grants::player());
    let (status, _) = call(&server, "POST", &path, &player, Value::Null).await;
    assert_eq!(status, 403, "a player's token cannot record");

    let mut sender = send(&cast, 60);
    // Stop once a few clusters are on disk, while packets still flow.
    wait_recording(&server, &admin, |r| r["bytes"].as_u64().unwrap() > 30_000).await;
    let (status, stopped) = call(&server, "DELETE", &path, &admin, Value::Null).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["recordings"][0]["state"], "stopped");
    assert_eq!(stopped["recordings"][0]["reason"], "stopped");
    let _ = sender.kill().await;
    let (streams, duration) = probe(&file);
    assert_eq!(streams, opus_and_vp8());
    assert!(duration > 0.5, "{duration}");
    // Nothing left to stop.
    let (status, _) = call(&server, "DELETE", &path, &admin, Value::Null).await;
    assert_eq!(status, 409);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_byte_budget_ends_its_recording_and_refuses_the_next() {
    const BUDGET: u64 = 60_000;
    let dir = recording_dir("budget");
    let server = TestServer::start(|c| {
        c.recording.directory = dir.clone();
        c.recording.max_bytes_per_room = BUDGET;
    })
    .await;
    let admin = server.admin_token();
    let cast = broadcast(&server).await;
    let path = format!("/api/rooms/{ROOM}/recording");
    let (status, started) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": cast.producers}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let file = PathBuf::from(started["recordings"][0]["file"].as_str().unwrap());
    let mut sender = send(&cast, 60);
    let ended = wait_recording(&server, &admin, |r| r["state"] == "stopped").await;
    let _ = sender.kill().await;
    assert_eq!(ended["reason"], "sizeLimit", "{ended}");
    let bytes = ended["bytes"].as_u64().unwrap();
    // ffmpeg stops at the first cluster that takes the file past the limit (`-fs`), then
    // writes the file's index: past the budget by at most one cluster — at most a second of
    // media (`-cluster_time_limit 1000`), at the rate this file was written — and the index.
    let (streams, duration) = probe(&file);
    assert_eq!(streams, opus_and_vp8());
    let per_second = bytes as f64 / duration.max(0.1);
    assert!(
        bytes >= BUDGET && (bytes - BUDGET) as f64 <= per_second + 32_768.0,
        "{bytes} bytes in {duration} s"
    );
    let (status, refused) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": cast.producers}),
    )
    .await;
    assert_eq!(status, 507, "{refused}");
    let (_, metrics) = server.get("/metrics", None).await;
    for line in [
        "sluice_recordings 0".to_owned(),
        "sluice_recordings_ended_total{reason=\"sizeLimit\"} 1".to_owned(),
        format!("sluice_recording_bytes_total {bytes}"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An "ffmpeg" that listens on the SDP's ports as the real one does, then fails the way a full
/// disk makes it fail.
const FAILING_FFMPEG: &str = r#"#!/usr/bin/env python3
import socket, sys, time
sdp = open(sys.argv[sys.argv.index("-i") + 1]).read()
held = []
for line in sdp.splitlines():
    if line.startswith("m="):
        port = int(line.split()[1])
        for p in (port, port + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", p))
            held.append(s)
time.sleep(1)
sys.stderr.write("Error writing trailer: No space left on device\n")
sys.exit(1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ffmpeg_that_fails_ends_its_recording_with_its_error_and_the_server_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = recording_dir("fail");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("ffmpeg-full-disk");
    std::fs::write(&fake, FAILING_FFMPEG).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start(|c| {
        c.recording.directory = dir.clone();
        c.recording.ffmpeg = fake.display().to_string();
        c.recording.max_recorders = 1;
    })
    .await;
    let admin = server.admin_token();
    let cast = broadcast(&server).await;
    let path = format!("/api/rooms/{ROOM}/recording");
    let (status, started) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": [cast.producers[0]]}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    // The one recorder slot is taken.
    let (status, busy) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": [cast.producers[1]]}),
    )
    .await;
    assert_eq!(status, 503, "{busy}");
    let ended = wait_recording(&server, &admin, |r| r["state"] == "stopped").await;
    assert_eq!(ended["reason"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    let (status, _) = server.get("/health", None).await;
    assert_eq!(status, 200);
    // The slot is free again, and the producer may be recorded anew.
    let (status, again) = call(
        &server,
        "POST",
        &path,
        &admin,
        json!({"producerIds": [cast.producers[0]]}),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_wide_recording_takes_producers_created_later_and_shutdown_finishes_it() {
    let dir = recording_dir("shutdown");
    let server = TestServer::start(|c| c.recording.directory = dir.clone()).await;
    let admin = server.admin_token();
    let path = format!("/api/rooms/{ROOM}/recording");
    let (status, _) = call(&server, "POST", &path, &admin, Value::Null).await;
    assert_eq!(status, 404, "no such room yet");
    let _watcher = server.session(ROOM, "watcher").await;
    let (status, started) = call(&server, "POST", &path, &admin, Value::Null).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["roomWide"], true);
    assert_eq!(started["recordings"], json!([]), "nothing to record yet");
    let (status, again) = call(&server, "POST", &path, &admin, Value::Null).await;
    assert_eq!(status, 409, "{again}");

    // The broadcaster's producers come after: one recording takes both.
    let cast = broadcast(&server).await;
    let running = wait_recording(&server, &admin, |r| r["state"] == "recording").await;
    assert_eq!(running["peerId"], "cast");
    assert_eq!(
        running["producerIds"].as_array().unwrap().len(),
        2,
        "{running}"
    );
    let file = PathBuf::from(running["file"].as_str().unwrap());
    let mut sender = send(&cast, 60);
    wait_recording(&server, &admin, |r| r["bytes"].as_u64().unwrap() > 30_000).await;
    let instance = server.instance.clone();
    server.stop().await;
    let _ = sender.kill().await;
    let listed = instance.recorder.list(ROOM).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "stopped");
    assert_eq!(
        listed[0].reason,
        Some(sluice_server::recording::StopReason::Shutdown)
    );
    let (streams, duration) = probe(&file);
    assert_eq!(streams, opus_and_vp8());
    assert!(duration > 0.5, "{duration}");
    let _ = std::fs::remove_dir_all(&dir);
}
