//! Recording (docs/recording.md): a peer's producers written to one WebM (or Matroska) file by
//! an ffmpeg process, fed the producers' RTP through plain transports, one per stream, and told
//! what to expect by a generated SDP. ffmpeg only copies (`-c copy`): no decoding, no encoding.
//!
//! A recording starts through the admin API for a room (every producer, and those created while
//! it runs) or for named producers, and ends on a stop, when its producers close, when the room's
//! byte budget is spent, when ffmpeg fails (a full disk, say), or at shutdown. Each end is a
//! SIGTERM to ffmpeg, which then finishes the file (cues, duration): what was written plays.
//! Starts and ends are actions of the room's store (`RecordingStarted`, `RecordingStopped`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sluice_media::ortc::{MediaKind, ParameterValue, RtpCodecParameters};
use sluice_media::{ConsumerOptions, MediaEvent, PlainTransport, PlainTransportOptions};
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;
use tokio::sync::watch;

use crate::config::RecordingConfig;
use crate::metrics::{ReasonLabels, RecordingMetrics};
use crate::room::Room;
use crate::store::Action;

/// The tuning of recordings.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// How long ffmpeg may take to read its SDP and bind its ports.
    pub ready_timeout: Duration,
    /// How long ffmpeg may take to finish its file once told its input ended…
    pub stop_timeout: Duration,
    /// …and after a SIGTERM, before it is killed (see `Supervisor::finish_ffmpeg`).
    pub term_timeout: Duration,
    /// How often the size of each file is read (the room's byte budget).
    pub size_poll: Duration,
    /// A room-wide recording starts once no producer has been created for this long, so a
    /// player's camera and microphone, created one after the other, share a file.
    pub group_delay: Duration,
    /// Finished recordings listed per room.
    pub finished_kept: usize,
    /// Closed rooms whose finished recordings are still listed (the oldest closed goes first).
    pub closed_rooms_kept: usize,
    /// Lines of ffmpeg's error output kept to explain a failure.
    pub stderr_lines: usize,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        RecordingSettings {
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            term_timeout: Duration::from_secs(2),
            size_poll: Duration::from_millis(500),
            group_delay: Duration::from_millis(500),
            finished_kept: 64,
            closed_rooms_kept: 256,
            stderr_lines: 8,
        }
    }
}

/// The address ffmpeg listens on: recordings never leave the machine.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Why a recording could not start (or stop).
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("the server is shutting down")]
    Draining,
    #[error("no producer {0} in the room")]
    NoProducer(String),
    #[error("{0} is already being recorded")]
    AlreadyRecording(String),
    #[error("nothing of {0} is being recorded")]
    NotRecording(String),
    #[error("{0} cannot be recorded (WebM and Matroska take Opus, VP8, VP9, AV1, H264 and H265)")]
    Codec(String),
    #[error("{0} recordings are running, the most this server runs at once")]
    TooMany(usize),
    #[error("the room's recordings have written {0} bytes, its limit")]
    RoomFull(u64),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("ffmpeg did not start recording: {0}")]
    Ffmpeg(String),
    #[error("no free UDP port pair on the loopback for ffmpeg")]
    NoPort,
    #[error(transparent)]
    Media(#[from] sluice_media::MediaError),
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// The admin API stopped it.
    Stopped,
    /// All its producers closed.
    ProducerClosed,
    /// The room's byte budget (`recording.max_bytes_per_room`) was spent.
    SizeLimit,
    /// ffmpeg failed (its error output says why: a full disk, say).
    Failed,
    /// The room closed (or its worker died) under it.
    RoomClosed,
    /// The server shut down.
    Shutdown,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stopped => "stopped",
            StopReason::ProducerClosed => "producerClosed",
            StopReason::SizeLimit => "sizeLimit",
            StopReason::Failed => "failed",
            StopReason::RoomClosed => "roomClosed",
            StopReason::Shutdown => "shutdown",
        }
    }
}

/// One recording as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingSummary {
    pub id: String,
    pub room_id: String,
    pub peer_id: String,
    pub producer_ids: Vec<String>,
    /// The file's path.
    pub file: String,
    /// `recording` or `stopped`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StopReason>,
    /// ffmpeg's last error lines, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes: u64,
    /// Unix time in milliseconds.
    pub started_at: u64,
}

/// One stream of a recording: the plain transport that sends it to ffmpeg, and its consumer.
struct Stream {
    producer_id: String,
    consumer_id: String,
    transport: PlainTransport,
    /// The producer's pipe to the room's first router, if it lives on another worker.
    _pipe: Option<crate::room_routers::PipeLease>,
}

/// A running recording: one ffmpeg process, one file.
struct Recording {
    id: String,
    room_id: String,
    peer_id: String,
    producer_ids: Vec<String>,
    path: PathBuf,
    started_at: u64,
    /// Each stream's RTP port at ffmpeg (RTCP on the next) and the SSRC it receives.
    ffmpeg_ports: Vec<(u16, u32)>,
    /// The streams still fed (a producer that closes leaves).
    streams: Mutex<Vec<Stream>>,
    bytes: AtomicU64,
    stop: watch::Sender<Option<StopReason>>,
    done: watch::Receiver<bool>,
}

impl Recording {
    fn summary(&self) -> RecordingSummary {
        RecordingSummary {
            id: self.id.clone(),
            room_id: self.room_id.clone(),
            peer_id: self.peer_id.clone(),
            producer_ids: self.producer_ids.clone(),
            file: self.path.display().to_string(),
            state: "recording",
            reason: None,
            error: None,
            bytes: self.bytes.load(Ordering::Relaxed),
            started_at: self.started_at,
        }
    }

    fn request_stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// A room's recordings.
#[derive(Default)]
struct RoomRecordings {
    /// The room-wide recording's watcher of new producers.
    follow: Option<tokio::task::AbortHandle>,
    live: Vec<Arc<Recording>>,
    /// Producers recorded now (by the recording's id) or being set up (`None`): a producer is
    /// in one recording at most.
    claimed: HashMap<String, Option<String>>,
    /// Producers the room-wide recording leaves alone: stopped one by one, or whose recording
    /// failed (until the room is recorded anew).
    excluded: HashSet<String>,
    /// Recordings being set up (they count against `max_recorders`).
    starting: usize,
    finished: VecDeque<RecordingSummary>,
    /// Bytes written by the room's finished recordings.
    finished_bytes: u64,
    /// When the room closed (the recorder's count of room closes then); its list stays for
    /// `closed_rooms_kept` closes.
    closed: Option<u64>,
}

impl RoomRecordings {
    fn bytes(&self) -> u64 {
        self.finished_bytes
            + self
                .live
                .iter()
                .map(|r| r.bytes.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    fn is_idle(&self) -> bool {
        self.follow.is_none() && self.live.is_empty() && self.starting == 0
    }
}

/// The server's recordings, by room.
pub struct Recorder {
    config: RecordingConfig,
    settings: RecordingSettings,
    metrics: RecordingMetrics,
    rooms: Mutex<HashMap<String, RoomRecordings>>,
    /// Rooms closed so far (orders closed rooms' lists for eviction).
    closes: AtomicU64,
    draining: AtomicBool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// What one recording is set up from: the peer and its producers (id, kind).
struct Group {
    peer_id: String,
    producers: Vec<(String, MediaKind)>,
}

impl Recorder {
    pub fn new(
        config: RecordingConfig,
        settings: RecordingSettings,
        metrics: RecordingMetrics,
    ) -> Arc<Recorder> {
        Arc::new(Recorder {
            config,
            settings,
            metrics,
            rooms: Mutex::new(HashMap::new()),
            closes: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        })
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomRecordings>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording `producer_ids` of `room`, or (`None`) every producer of the room and
    /// those created until [`Recorder::stop`]; one recording per peer. Answers the recordings
    /// started.
    pub async fn start(
        self: &Arc<Self>,
        room: &Arc<Room>,
        producer_ids: Option<Vec<String>>,
    ) -> Result<Vec<RecordingSummary>, RecordingError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(RecordingError::Draining);
        }
        let groups = match producer_ids {
            Some(ids) => {
                let groups = {
                    let objects = room.objects();
                    let mut by_peer: BTreeMap<String, Vec<(String, MediaKind)>> = BTreeMap::new();
                    for id in &ids {
                        let p = objects
                            .producers
                            .get(id)
                            .ok_or_else(|| RecordingError::NoProducer(id.clone()))?;
                        let list = by_peer.entry(p.peer_id.clone()).or_default();
                        if !list.iter().any(|(known, _)| known == id) {
                            list.push((id.clone(), p.object.kind()));
                        }
                    }
                    by_peer
                };
                let mut rooms = self.rooms();
                let entry = rooms.entry(room.id.clone()).or_default();
                if let Some(taken) = ids.iter().find(|id| entry.claimed.contains_key(*id)) {
                    return Err(RecordingError::AlreadyRecording(format!(
                        "producer {taken}"
                    )));
                }
                for id in &ids {
                    entry.claimed.insert(id.clone(), None);
                    entry.excluded.remove(id);
                }
                groups
                    .into_iter()
                    .map(|(peer_id, producers)| Group { peer_id, producers })
                    .collect::<Vec<_>>()
            }
            None => {
                // Subscribed before the producers are listed: none created in between is missed.
                let actions = room.store.subscribe();
                let mut rooms = self.rooms();
                let entry = rooms.entry(room.id.clone()).or_default();
                if entry.follow.is_some() {
                    return Err(RecordingError::AlreadyRecording("the room".into()));
                }
                entry.excluded.clear();
                let groups = unclaimed_groups(room, entry);
                entry.follow = Some(self.follow(room, actions));
                groups
            }
        };
        let mut started = Vec::new();
        let mut failure = None;
        for group in groups {
            if failure.is_some() {
                self.release(&room.id, group.producers.iter().map(|(id, _)| id));
                continue;
            }
            match self.start_group(room, group).await {
                Ok(summary) => started.push(summary),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            None => Ok(started),
            Some(e) if started.is_empty() => Err(e),
            Some(e) => {
                // Some started: the answer lists them; the failure is logged.
                tracing::warn!(room = %room.id, error = %e, "a recording did not start");
                Ok(started)
            }
        }
    }

    /// Stops the room's recordings (`None`: all of them, and the room-wide recording) or the
    /// recording of one producer (its other producers go on being recorded). Answers what
    /// was stopped, once the files are finished.
    pub async fn stop(
        &self,
        room_id: &str,
        producer_id: Option<&str>,
    ) -> Result<Vec<RecordingSummary>, RecordingError> {
        let targets: Vec<Arc<Recording>> = {
            let mut rooms = self.rooms();
            let Some(entry) = rooms.get_mut(room_id) else {
                return Err(RecordingError::NotRecording(format!("room {room_id}")));
            };
            match producer_id {
                None => {
                    let had_follow = entry.follow.take().map(|f| f.abort()).is_some();
                    if !had_follow && entry.live.is_empty() {
                        return Err(RecordingError::NotRecording(format!("room {room_id}")));
                    }
                    entry.live.clone()
                }
                Some(pid) => {
                    let Some(rec) = entry.live.iter().find(|r| r.streams_hold(pid)).cloned() else {
                        return Err(RecordingError::NotRecording(format!("producer {pid}")));
                    };
                    let (left, gone) = rec.leave(pid);
                    if let Some(stream) = gone {
                        entry.claimed.remove(pid);
                        entry.excluded.insert(pid.to_owned());
                        tokio::spawn(async move {
                            let _ = stream.transport.close().await;
                        });
                    }
                    if left > 0 {
                        let mut summary = rec.summary();
                        summary.producer_ids = vec![pid.to_owned()];
                        return Ok(vec![summary]);
                    }
                    vec![rec]
                }
            }
        };
        for rec in &targets {
            rec.request_stop(StopReason::Stopped);
        }
        let mut out = Vec::new();
        for rec in targets {
            out.push(self.wait_finished(&rec).await);
        }
        Ok(out)
    }

    /// The room's recordings, running and finished (the most recent `finished_kept`); `None`
    /// if the recorder never recorded the room (or has forgotten it since it closed).
    pub fn list(&self, room_id: &str) -> Option<Vec<RecordingSummary>> {
        let rooms = self.rooms();
        let entry = rooms.get(room_id)?;
        Some(
            entry
                .finished
                .iter()
                .cloned()
                .chain(entry.live.iter().map(|r| r.summary()))
                .collect(),
        )
    }

    /// Whether the room records every producer (a room-wide recording).
    pub fn is_recording_room(&self, room_id: &str) -> bool {
        self.rooms()
            .get(room_id)
            .is_some_and(|e| e.follow.is_some())
    }

    /// The room closed: its room-wide recording stops following it and its recordings end;
    /// its list is kept until `closed_rooms_kept` other rooms have closed.
    pub fn room_closed(&self, room_id: &str) {
        let mut rooms = self.rooms();
        let Some(entry) = rooms.get_mut(room_id) else {
            return;
        };
        if let Some(f) = entry.follow.take() {
            f.abort();
        }
        entry.closed = Some(self.closes.fetch_add(1, Ordering::SeqCst));
        for rec in &entry.live {
            rec.request_stop(StopReason::RoomClosed);
        }
        let mut closed: Vec<(u64, String)> = rooms
            .iter()
            .filter_map(|(id, e)| e.closed.filter(|_| e.is_idle()).map(|c| (c, id.clone())))
            .collect();
        if closed.len() > self.settings.closed_rooms_kept {
            closed.sort_unstable();
            let excess = closed.len() - self.settings.closed_rooms_kept;
            for (_, id) in closed.into_iter().take(excess) {
                rooms.remove(&id);
            }
        }
    }

    /// Shutdown: no new recording; every running one is finished (SIGTERM, then killed after
    /// `stop_timeout`).
    pub async fn stop_all(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let live: Vec<Arc<Recording>> = {
            let mut rooms = self.rooms();
            rooms
                .values_mut()
                .flat_map(|e| {
                    if let Some(f) = e.follow.take() {
                        f.abort();
                    }
                    e.live.clone()
                })
                .collect()
        };
        for rec in &live {
            rec.request_stop(StopReason::Shutdown);
        }
        for rec in live {
            self.wait_finished(&rec).await;
        }
    }

    async fn wait_finished(&self, rec: &Recording) -> RecordingSummary {
        let mut done = rec.done.clone();
        let _ = done.wait_for(|d| *d).await;
        let rooms = self.rooms();
        rooms
            .get(&rec.room_id)
            .and_then(|e| e.finished.iter().rev().find(|s| s.id == rec.id).cloned())
            .unwrap_or_else(|| RecordingSummary {
                state: "stopped",
                ..rec.summary()
            })
    }

    /// Gives back claims of producers whose recording did not start.
    fn release<'a>(&self, room_id: &str, ids: impl Iterator<Item = &'a String>) {
        let mut rooms = self.rooms();
        if let Some(entry) = rooms.get_mut(room_id) {
            for id in ids {
                if entry.claimed.get(id) == Some(&None) {
                    entry.claimed.remove(id);
                }
            }
        }
    }

    /// A recording set up: it is live (before its supervisor runs, which may end it at once).
    fn register(&self, rec: &Arc<Recording>) {
        let mut rooms = self.rooms();
        let entry = rooms.entry(rec.room_id.clone()).or_default();
        entry.starting = entry.starting.saturating_sub(1);
        for id in &rec.producer_ids {
            entry.claimed.insert(id.clone(), Some(rec.id.clone()));
        }
        entry.live.push(rec.clone());
        self.metrics.running.inc();
    }

    /// Watches the room's new producers and records them, a peer's together.
    fn follow(
        self: &Arc<Self>,
        room: &Arc<Room>,
        mut actions: tokio::sync::broadcast::Receiver<Arc<Action>>,
    ) -> tokio::task::AbortHandle {
        let weak_room = Arc::downgrade(room);
        let recorder = Arc::downgrade(self);
        let delay = self.settings.group_delay;
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                // Wait for a new producer (or for having missed actions: every producer no
                // recording holds is recorded, so nothing missed is lost), then gather more
                // until none has come for `group_delay`.
                match actions.recv().await {
                    Ok(a) if !matches!(*a, Action::ProducerCreated { .. }) => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
                let mut deadline = tokio::time::Instant::now() + delay;
                loop {
                    match tokio::time::timeout_at(deadline, actions.recv()).await {
                        Err(_) => break,
                        Ok(Err(RecvError::Closed)) => return,
                        Ok(Ok(a)) if matches!(*a, Action::ProducerCreated { .. }) => {
                            deadline = tokio::time::Instant::now() + delay;
                        }
                        Ok(_) => {}
                    }
                }
                let (Some(room), Some(recorder)) = (weak_room.upgrade(), recorder.upgrade()) else {
                    break;
                };
                let groups = {
                    let mut rooms = recorder.rooms();
                    let Some(entry) = rooms.get_mut(&room.id) else {
                        break;
                    };
                    unclaimed_groups(&room, entry)
                };
                for group in groups {
                    if let Err(e) = recorder.start_group(&room, group).await {
                        tracing::warn!(room = %room.id, error = %e, "a recording did not start");
                    }
                }
            }
        })
        .abort_handle()
    }

    /// Sets up one recording of `group` (whose producers are claimed): transports, consumers,
    /// the SDP, ffmpeg; then resumes the consumers (a keyframe is asked for) and supervises.
    async fn start_group(
        self: &Arc<Self>,
        room: &Arc<Room>,
        group: Group,
    ) -> Result<RecordingSummary, RecordingError> {
        let ids: Vec<String> = group.producers.iter().map(|(id, _)| id.clone()).collect();
        let remaining = {
            let mut rooms = self.rooms();
            let running: usize = rooms.values().map(|e| e.live.len() + e.starting).sum();
            let entry = rooms.entry(room.id.clone()).or_default();
            let used = entry.bytes();
            if running >= self.config.max_recorders {
                Err(RecordingError::TooMany(running))
            } else if used >= self.config.max_bytes_per_room {
                Err(RecordingError::RoomFull(used))
            } else {
                entry.starting += 1;
                Ok(self.config.max_bytes_per_room - used)
            }
        };
        let remaining = match remaining {
            Ok(r) => r,
            Err(e) => {
                self.release(&room.id, ids.iter());
                return Err(e);
            }
        };
        match self.launch(room, &group, remaining).await {
            Ok(rec) => Ok(rec.summary()),
            Err(e) => {
                let mut rooms = self.rooms();
                let entry = rooms.entry(room.id.clone()).or_default();
                entry.starting = entry.starting.saturating_sub(1);
                for id in &ids {
                    if entry.claimed.get(id) == Some(&None) {
                        entry.claimed.remove(id);
                    }
                }
                Err(e)
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        room: &Arc<Room>,
        group: &Group,
        remaining: u64,
    ) -> Result<Arc<Recording>, RecordingError> {
        let dir = self.config.directory.join(file_name_part(&room.id));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| RecordingError::Io {
                path: dir.clone(),
                source,
            })?;
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut streams = Vec::new();
        let mut described = Vec::new();
        let mut consumers = Vec::new();
        let mut ffmpeg_ports = Vec::new();
        let setup = async {
            let mut ports = reserve_ports(group.producers.len())?;
            for ((producer_id, kind), (port, _)) in group.producers.iter().zip(&ports) {
                // Recordings consume on the room's first router.
                let from = room
                    .objects()
                    .producers
                    .get(producer_id)
                    .map_or(room.worker_index, |p| p.object.worker_index());
                let pipe = room
                    .routers
                    .pipe(producer_id, from, room.worker_index)
                    .await?;
                let transport = room
                    .router
                    .create_plain_transport(PlainTransportOptions {
                        rtcp_mux: true,
                        comedia: false,
                        events: Some(events_tx.clone()),
                        ..PlainTransportOptions::default()
                    })
                    .await?;
                streams.push(Stream {
                    producer_id: producer_id.clone(),
                    consumer_id: String::new(),
                    transport: transport.clone(),
                    _pipe: pipe,
                });
                transport
                    .connect(SocketAddr::from((LOOPBACK, *port)))
                    .await?;
                let consumer = transport
                    .consume(ConsumerOptions::new(
                        producer_id.clone(),
                        room.router.rtp_capabilities().clone(),
                    ))
                    .await?;
                let codec = consumer
                    .rtp_parameters()
                    .codecs
                    .first()
                    .cloned()
                    .ok_or_else(|| RecordingError::Codec(format!("producer {producer_id}")))?;
                if let Some(s) = streams.last_mut() {
                    s.consumer_id = consumer.id().to_owned();
                }
                let ssrc = consumer
                    .rtp_parameters()
                    .encodings
                    .first()
                    .and_then(|e| e.ssrc)
                    .unwrap_or_default();
                described.push((*kind, *port, codec));
                ffmpeg_ports.push((*port, ssrc));
                consumers.push(consumer);
            }
            let format = container(described.iter().map(|(_, _, c)| c))?;
            let id = sluice_media::new_id();
            let started_at = unix_millis();
            let base = format!(
                "{}-{}-{}",
                started_at,
                file_name_part(&group.peer_id),
                &id[..8.min(id.len())]
            );
            let path = dir.join(format!("{base}.{}", format.extension));
            let sdp_path = dir.join(format!("{base}.sdp"));
            tokio::fs::write(&sdp_path, sdp(&described))
                .await
                .map_err(|source| RecordingError::Io {
                    path: sdp_path.clone(),
                    source,
                })?;
            // ffmpeg binds the ports itself: let go of them just before it starts.
            let port_numbers: Vec<u16> = ports.iter().map(|(p, _)| *p).collect();
            ports.clear();
            let spawned =
                self.spawn_ffmpeg(&sdp_path, &path, format.muxer, remaining, &port_numbers);
            let (child, stderr) = match spawned.await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&sdp_path).await;
                    return Err(e);
                }
            };
            Ok((id, started_at, path, sdp_path, child, stderr))
        };
        let (id, started_at, path, sdp_path, child, stderr) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                for s in &streams {
                    let _ = s.transport.close().await;
                }
                return Err(e);
            }
        };
        for c in &consumers {
            // Resuming asks the producer for a keyframe: the file starts with one.
            let _ = c.resume().await;
        }
        let (stop, stop_rx) = watch::channel(None);
        let (done_tx, done) = watch::channel(false);
        let rec = Arc::new(Recording {
            id,
            room_id: room.id.clone(),
            peer_id: group.peer_id.clone(),
            producer_ids: group.producers.iter().map(|(id, _)| id.clone()).collect(),
            path,
            started_at,
            ffmpeg_ports,
            streams: Mutex::new(streams),
            bytes: AtomicU64::new(0),
            stop,
            done,
        });
        room.dispatch(Action::RecordingStarted {
            peer_id: rec.peer_id.clone(),
            recording_id: rec.id.clone(),
            producer_ids: rec.producer_ids.clone(),
            file: rec.path.display().to_string(),
        });
        tracing::info!(room = %room.id, recording = %rec.id, file = %rec.path.display(), "recording started");
        let supervisor = Supervisor {
            recorder: Arc::downgrade(self),
            room: Arc::downgrade(room),
            rec: rec.clone(),
            child,
            stderr,
            sdp_path,
            events,
            stop: stop_rx,
            done: done_tx,
        };
        self.register(&rec);
        tokio::spawn(supervisor.run());
        Ok(rec)
    }

    /// Starts ffmpeg on `sdp_path` and waits until it holds every port (it is then listening).
    async fn spawn_ffmpeg(
        &self,
        sdp_path: &Path,
        path: &Path,
        muxer: &str,
        max_bytes: u64,
        ports: &[u16],
    ) -> Result<(Child, ErrorOutput), RecordingError> {
        let mut command = tokio::process::Command::new(&self.config.ffmpeg);
        command
            .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(["-protocol_whitelist", "file,udp,rtp"])
            .args(["-localaddr", "127.0.0.1", "-buffer_size", "4194304"])
            // ffmpeg writes nothing until it has looked at the streams: a second of media,
            // not its default five (a keyframe is asked for at once).
            .args(["-analyzeduration", "1000000"])
            .args(["-f", "sdp", "-i"])
            .arg(sdp_path)
            .args(["-map", "0", "-c", "copy"])
            .args(["-fs", &max_bytes.to_string()])
            // Clusters of a second at most: a file cut short loses little.
            .args(["-cluster_time_limit", "1000", "-flush_packets", "1"])
            .args(["-f", muxer, "-y"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| RecordingError::Spawn {
            program: self.config.ffmpeg.clone(),
            source,
        })?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut stderr = ErrorOutput {
            tail: tail.clone(),
            reader: None,
        };
        if let Some(pipe) = child.stderr.take() {
            let keep = self.settings.stderr_lines;
            stderr.reader = Some(tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "sluice::ffmpeg", "{line}");
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }));
        }
        let deadline = tokio::time::Instant::now() + self.settings.ready_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RecordingError::Ffmpeg(format!(
                    "{status}: {}",
                    stderr.text().await
                )));
            }
            if ports.iter().all(|p| port_taken(*p)) {
                return Ok((child, stderr));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(RecordingError::Ffmpeg(format!(
                    "it did not listen within {:?}: {}",
                    self.settings.ready_timeout,
                    stderr.text().await
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A recording ended: it moves to the finished list and gives its producers back.
    fn finished(&self, rec: &Recording, summary: RecordingSummary) {
        self.metrics.running.dec();
        if let Some(reason) = summary.reason {
            self.metrics
                .ended
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc();
        }
        self.metrics.bytes.inc_by(summary.bytes);
        let mut rooms = self.rooms();
        let Some(entry) = rooms.get_mut(&rec.room_id) else {
            return;
        };
        entry.live.retain(|r| r.id != rec.id);
        entry
            .claimed
            .retain(|_, by| by.as_deref() != Some(rec.id.as_str()));
        if summary.reason == Some(StopReason::Failed) {
            entry.excluded.extend(rec.producer_ids.iter().cloned());
        }
        entry.finished_bytes += summary.bytes;
        entry.finished.push_back(summary);
        while entry.finished.len() > self.settings.finished_kept {
            entry.finished.pop_front();
        }
    }

    /// Whether the room's recordings have spent its byte budget; if so every one is stopped.
    fn enforce_budget(&self, room_id: &str) {
        let rooms = self.rooms();
        if let Some(entry) = rooms.get(room_id)
            && entry.bytes() >= self.config.max_bytes_per_room
        {
            for rec in &entry.live {
                rec.request_stop(StopReason::SizeLimit);
            }
        }
    }
}

impl Recording {
    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<Stream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn streams_hold(&self, producer_id: &str) -> bool {
        self.streams().iter().any(|s| s.producer_id == producer_id)
    }

    /// Takes `producer_id`'s stream out; answers how many are left.
    fn leave(&self, producer_id: &str) -> (usize, Option<Stream>) {
        let mut streams = self.streams();
        let gone = streams
            .iter()
            .position(|s| s.producer_id == producer_id)
            .map(|i| streams.remove(i));
        (streams.len(), gone)
    }
}

/// Watches one recording's ffmpeg, its streams and its size, and ends it.
struct Supervisor {
    recorder: Weak<Recorder>,
    room: Weak<Room>,
    rec: Arc<Recording>,
    child: Child,
    stderr: ErrorOutput,
    sdp_path: PathBuf,
    events: tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
    stop: watch::Receiver<Option<StopReason>>,
    done: watch::Sender<bool>,
}

impl Supervisor {
    async fn run(mut self) {
        let poll = self
            .recorder
            .upgrade()
            .map_or(Duration::from_secs(1), |r| r.settings.size_poll);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exited: Option<ExitStatus> = None;
        let reason = loop {
            tokio::select! {
                // The media events already queued first: producers that closed before a stop
                // was asked (their room closing because of it) end the recording as
                // `producerClosed`, whichever task the scheduler ran first.
                biased;
                event = self.events.recv() => match event {
                    Some(MediaEvent::ConsumerClosed { consumer_id, .. }) => {
                        if self.lose_stream(|s| s.consumer_id == consumer_id) {
                            break StopReason::ProducerClosed;
                        }
                    }
                    Some(MediaEvent::TransportClosed { transport_id, .. }) => {
                        if self.lose_stream(|s| s.transport.id() == transport_id) {
                            break StopReason::RoomClosed;
                        }
                    }
                    Some(_) => {}
                    None => break StopReason::RoomClosed,
                },
                changed = self.stop.changed() => {
                    let asked = *self.stop.borrow();
                    match (changed, asked) {
                        (_, Some(reason)) => break reason,
                        (Err(_), None) => break StopReason::Stopped,
                        (Ok(()), None) => {}
                    }
                }
                status = self.child.wait() => {
                    exited = status.ok();
                    // `-fs` reached ends ffmpeg well; anything else is a failure.
                    break if exited.is_some_and(|s| s.success()) {
                        StopReason::SizeLimit
                    } else {
                        StopReason::Failed
                    };
                }
                _ = tick.tick() => {
                    self.read_size().await;
                    if let Some(recorder) = self.recorder.upgrade() {
                        recorder.enforce_budget(&self.rec.room_id);
                    }
                }
            }
        };
        if exited.is_none() {
            exited = self.finish_ffmpeg().await;
        }
        let streams = std::mem::take(&mut *self.rec.streams());
        for s in streams {
            let _ = s.transport.close().await;
        }
        let _ = tokio::fs::remove_file(&self.sdp_path).await;
        self.read_size().await;
        let error = if reason == StopReason::Failed {
            let status = exited.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
            Some(format!("ffmpeg {status}: {}", self.stderr.text().await))
        } else {
            None
        };
        let bytes = self.rec.bytes.load(Ordering::Relaxed);
        match &error {
            Some(e) => {
                tracing::warn!(recording = %self.rec.id, error = %e, bytes, "recording failed")
            }
            None => {
                tracing::info!(recording = %self.rec.id, reason = reason.as_str(), bytes, "recording ended")
            }
        }
        let summary = RecordingSummary {
            state: "stopped",
            reason: Some(reason),
            error,
            bytes,
            ..self.rec.summary()
        };
        if let Some(recorder) = self.recorder.upgrade() {
            recorder.finished(&self.rec, summary);
        }
        if let Some(room) = self.room.upgrade() {
            room.dispatch(Action::RecordingStopped {
                peer_id: self.rec.peer_id.clone(),
                recording_id: self.rec.id.clone(),
                reason: reason.as_str().to_owned(),
                bytes,
            });
        }
        let _ = self.done.send(true);
    }

    /// Drops the stream `which` matches; answers whether none is left.
    fn lose_stream(&self, which: impl Fn(&Stream) -> bool) -> bool {
        let mut streams = self.rec.streams();
        streams.retain(|s| !which(s));
        streams.is_empty()
    }

    async fn read_size(&self) {
        if let Ok(meta) = tokio::fs::metadata(&self.rec.path).await {
            self.rec.bytes.store(meta.len(), Ordering::Relaxed);
        }
    }

    /// Ends ffmpeg's input with an RTCP BYE on every stream (RFC 3550 §6.6): ffmpeg reads
    /// that as the end of the input, writes out what it holds and the file's index, and exits.
    /// A signal is no substitute: one ends ffmpeg only at its next packet (none comes once the
    /// producers have closed), and a second interrupts the writing of the index too. If ffmpeg
    /// has not exited within `stop_timeout` it gets a SIGTERM, then is killed.
    async fn finish_ffmpeg(&mut self) -> Option<ExitStatus> {
        let settings = self
            .recorder
            .upgrade()
            .map(|r| r.settings.clone())
            .unwrap_or_default();
        if let Ok(socket) = UdpSocket::bind((LOOPBACK, 0)) {
            for (port, ssrc) in &self.rec.ffmpeg_ports {
                let bye = rtcp_bye(*ssrc);
                let _ = socket.send_to(&bye, (LOOPBACK, port.saturating_add(1)));
            }
        }
        if let Ok(status) = tokio::time::timeout(settings.stop_timeout, self.child.wait()).await {
            return status.ok();
        }
        tracing::warn!(recording = %self.rec.id, "ffmpeg did not end its input; SIGTERM");
        self.signal();
        if let Ok(status) = tokio::time::timeout(settings.term_timeout, self.child.wait()).await {
            return status.ok();
        }
        tracing::warn!(recording = %self.rec.id, "ffmpeg did not finish; killed");
        let _ = self.child.kill().await;
        None
    }

    fn signal(&self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The room's producers no recording holds (nor excluded), claimed now, by peer.
fn unclaimed_groups(room: &Room, entry: &mut RoomRecordings) -> Vec<Group> {
    let objects = room.objects();
    let mut by_peer: BTreeMap<String, Vec<(String, MediaKind)>> = BTreeMap::new();
    for (id, p) in &objects.producers {
        if entry.claimed.contains_key(id) || entry.excluded.contains(id) {
            continue;
        }
        entry.claimed.insert(id.clone(), None);
        by_peer
            .entry(p.peer_id.clone())
            .or_default()
            .push((id.clone(), p.object.kind()));
    }
    by_peer
        .into_iter()
        .map(|(peer_id, mut producers)| {
            // Audio first, then video, each in id order: the file's stream order is stable.
            producers.sort_by(|a, b| {
                (a.1 == MediaKind::Video, &a.0).cmp(&(b.1 == MediaKind::Video, &b.0))
            });
            Group { peer_id, producers }
        })
        .collect()
}

/// The container a recording's codecs go into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Container {
    /// ffmpeg's muxer.
    pub muxer: &'static str,
    pub extension: &'static str,
}

/// WebM when every codec is one WebM takes (Opus, VP8, VP9, AV1), else Matroska (H264, H265);
/// anything else is refused.
pub fn container<'a>(
    codecs: impl Iterator<Item = &'a RtpCodecParameters>,
) -> Result<Container, RecordingError> {
    let mut webm = true;
    for c in codecs {
        match codec_name(&c.mime_type).to_ascii_lowercase().as_str() {
            "opus" | "vp8" | "vp9" | "av1" => {}
            "h264" | "h265" => webm = false,
            _ => return Err(RecordingError::Codec(c.mime_type.clone())),
        }
    }
    Ok(if webm {
        Container {
            muxer: "webm",
            extension: "webm",
        }
    } else {
        Container {
            muxer: "matroska",
            extension: "mkv",
        }
    })
}

fn codec_name(mime_type: &str) -> &str {
    mime_type.split_once('/').map_or(mime_type, |(_, n)| n)
}

/// The SDP ffmpeg reads: one `m=` line per stream, on its port of the loopback, with the
/// consumer's payload type, codec and format parameters.
pub fn sdp(streams: &[(MediaKind, u16, RtpCodecParameters)]) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=sluice recording\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
    );
    for (kind, port, codec) in streams {
        let media = match kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let pt = codec.payload_type;
        // Writing to a String cannot fail.
        let _ = write!(s, "m={media} {port} RTP/AVP {pt}\r\n");
        let _ = write!(
            s,
            "a=rtpmap:{pt} {}/{}",
            codec_name(&codec.mime_type),
            codec.clock_rate
        );
        if let Some(ch) = codec.channels.filter(|c| *c > 1) {
            let _ = write!(s, "/{ch}");
        }
        s.push_str("\r\n");
        if !codec.parameters.is_empty() {
            let fmtp: Vec<String> = codec
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={}", parameter_text(v)))
                .collect();
            let _ = write!(s, "a=fmtp:{pt} {}\r\n", fmtp.join(";"));
        }
        s.push_str("a=recvonly\r\n");
    }
    s
}

fn parameter_text(v: &ParameterValue) -> String {
    match v {
        ParameterValue::Bool(b) => u8::from(*b).to_string(),
        ParameterValue::Int(i) => i.to_string(),
        ParameterValue::Float(f) => f.to_string(),
        ParameterValue::String(s) => s.clone(),
    }
}

/// A room or peer id as part of a file name: visible ASCII letters, digits, `-` and `_` kept,
/// anything else (`/`, `.`, spaces) made `_`; never empty.
pub fn file_name_part(id: &str) -> String {
    let s: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "_".to_owned() } else { s }
}

/// A compound RTCP packet (RFC 3550 §6.1) from `ssrc`: an empty receiver report, then a BYE
/// (§6.6). ffmpeg ignores anything shorter than an RTP header, so a bare BYE would not do.
fn rtcp_bye(ssrc: u32) -> [u8; 16] {
    let s = ssrc.to_be_bytes();
    [
        // V=2, no report block; RR (201); length 1 (32-bit words after the first).
        0x80, 201, 0, 1, s[0], s[1], s[2], s[3], //
        // V=2, one source; BYE (203); length 1.
        0x81, 203, 0, 1, s[0], s[1], s[2], s[3],
    ]
}

/// `n` even UDP ports of the loopback whose odd neighbours are free too (ffmpeg takes RTP on
/// the even port, RTCP on the next), held until the caller lets go.
fn reserve_ports(n: usize) -> Result<Vec<(u16, [UdpSocket; 2])>, RecordingError> {
    let mut out: Vec<(u16, [UdpSocket; 2])> = Vec::new();
    for _ in 0..(64 * n.max(1)) {
        if out.len() == n {
            break;
        }
        let Ok(first) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        let (even, odd) = if port % 2 == 0 {
            (port, port.checked_add(1))
        } else {
            (port.wrapping_sub(1), Some(port))
        };
        let Some(odd) = odd else { continue };
        let other = if even == port { odd } else { even };
        if let Ok(second) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, other)) {
            out.push((even, [first, second]));
        }
    }
    if out.len() < n {
        return Err(RecordingError::NoPort);
    }
    Ok(out)
}

/// Whether someone (ffmpeg) has bound `port` on the loopback.
fn port_taken(port: u16) -> bool {
    matches!(
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

/// ffmpeg's error output: its last lines, read by a task of their own.
struct ErrorOutput {
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl ErrorOutput {
    /// The last lines, once ffmpeg has exited (its pipe read to the end, a second at most).
    async fn text(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.is_empty() {
            "no error output".to_owned()
        } else {
            tail.iter().cloned().collect::<Vec<_>>().join(" / ")
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.
    use super::*;

    fn codec(mime: &str, pt: u8, clock: u32, channels: Option<u8>) -> RtpCodecParameters {
        RtpCodecParameters {
            mime_type: mime.to_owned(),
            payload_type: pt,
            clock_rate: clock,
            channels,
            parameters: Default::default(),
            rtcp_feedback: Vec::new(),
        }
    }

    #[test]
    fn the_sdp_names_each_stream_with_its_port_codec_and_parameters() {
        let mut opus = codec("audio/opus", 100, 48_000, Some(2));
        opus.parameters
            .insert("useinbandfec".into(), ParameterValue::Int(1));
        let mut h264 = codec("video/H264", 102, 90_000, None);
        h264.parameters.insert(
            "profile-level-id".into(),
            ParameterValue::String("42e01f".into()),
        );
        h264.parameters
            .insert("packetization-mode".into(), ParameterValue::Int(1));
        let text = sdp(&[
            (MediaKind::Audio, 40_000, opus),
            (MediaKind::Video, 40_002, h264),
        ]);
        assert_eq!(
            text,
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=sluice recording\r\nc=IN IP4 127.0.0.1\r\n\
             t=0 0\r\n\
             m=audio 40000 RTP/AVP 100\r\na=rtpmap:100 opus/48000/2\r\n\
             a=fmtp:100 useinbandfec=1\r\na=recvonly\r\n\
             m=video 40002 RTP/AVP 102\r\na=rtpmap:102 H264/90000\r\n\
             a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\na=recvonly\r\n"
        );
    }

    #[test]
    fn webm_takes_opus_and_vp8_matroska_h264_and_pcmu_is_refused() {
        let opus = codec("audio/opus", 100, 48_000, Some(2));
        let vp8 = codec("video/VP8", 101, 90_000, None);
        let h264 = codec("video/H264", 102, 90_000, None);
        let pcmu = codec("audio/PCMU", 0, 8_000, None);
        assert_eq!(container([&opus, &vp8].into_iter()).unwrap().muxer, "webm");
        let mkv = container([&opus, &h264].into_iter()).unwrap();
        assert_eq!((mkv.muxer, mkv.extension), ("matroska", "mkv"));
        assert!(matches!(
            container([&opus, &pcmu].into_iter()),
            Err(RecordingError::Codec(m)) if m == "audio/PCMU"
        ));
    }

    #[test]
    fn ids_become_file_names_without_separators_or_dots() {
        assert_eq!(file_name_part("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_name_part("room-1_a"), "room-1_a");
        assert_eq!(file_name_part(""), "_");
        assert_eq!(file_name_part("é x"), "__x");
        assert_eq!(file_name_part(&"a".repeat(200)).len(), 64);
    }

    #[test]
    fn reserved_ports_are_even_with_their_odd_neighbour_held() {
        let ports = reserve_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        for (port, sockets) in &ports {
            assert_eq!(port % 2, 0);
            let mut held: Vec<u16> = sockets
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect();
            held.sort_unstable();
            assert_eq!(held, vec![*port, port + 1]);
            assert!(port_taken(*port));
            assert!(port_taken(port + 1));
        }
    }
}
