//! The instance: its workers, its rooms (a router on each worker one of their peers was placed
//! on, by load), and its lifecycle: start, ready, drain, shut down, and a dead worker replaced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_media::{Worker, WorkerSettings};

use crate::auth::TokenAuthority;
use crate::config::{Config, InterestMode, RoomPlacement};
use crate::error::SignalError;
use crate::game::GameFactory;
use crate::metrics::Metrics;
use crate::recording::{Recorder, RecordingSettings};
use crate::room::Room;
use crate::room_routers::RoomRouters;

/// How the instance measures its workers' load for placement.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// How often each worker's datagram counters are read.
    pub sample_interval: Duration,
    /// What one transport placed on a worker counts for, in datagrams per second, until the
    /// next samples show its traffic (so a burst of joiners does not all land on one worker).
    pub datagrams_per_new_transport: u64,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            sample_interval: Duration::from_secs(1),
            // An Opus stream each way at 50 packets per second.
            datagrams_per_new_transport: 100,
        }
    }
}

/// One worker's load: datagrams per second (sent and received) at the last sample, and the
/// transports placed on it since.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerLoad {
    datagrams_per_second: u64,
    placed_since_sample: u64,
}

/// Close code sent to peers when the server shuts down ("going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code sent to peers whose worker died: reconnect.
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// Why a room could not be entered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("the server is shutting down")]
    Draining,
    #[error("no worker is available")]
    NoWorker,
    #[error("cannot create the room's router: {0}")]
    Router(String),
    #[error("the room's game logic failed: {0}")]
    GameFailed(String),
}

/// Everything one `sluice serve` runs.
pub struct Instance {
    pub config: Arc<Config>,
    pub auth: TokenAuthority,
    pub metrics: Metrics,
    /// The rooms' recordings (docs/recording.md).
    pub recorder: Arc<Recorder>,
    workers: Mutex<Vec<Worker>>,
    rooms: tokio::sync::Mutex<HashMap<String, Arc<Room>>>,
    draining: AtomicBool,
    /// Makes each new room's game logic (`Server::builder().game_logic`).
    game: Option<GameFactory>,
    /// Each worker's load, by index (sampled every `load_settings.sample_interval`).
    loads: Mutex<Vec<WorkerLoad>>,
    load_settings: LoadSettings,
    /// This node's cluster membership, with `[cluster] redis` (set once connected).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Starts the workers (one per core unless configured) and their supervisors.
    pub fn start(config: Arc<Config>) -> Result<Arc<Instance>, sluice_media::MediaError> {
        Self::start_with_game(config, None)
    }

    /// As [`Instance::start`], with each room's game logic made by `game`.
    pub fn start_with_game(
        config: Arc<Config>,
        game: Option<GameFactory>,
    ) -> Result<Arc<Instance>, sluice_media::MediaError> {
        let mut workers = Vec::new();
        for i in 0..config.worker_count() {
            workers.push(spawn_worker(&config, i)?);
        }
        let metrics = Metrics::new();
        let recorder = Recorder::new(
            config.recording.clone(),
            RecordingSettings::default(),
            metrics.recordings.clone(),
        );
        let instance = Arc::new(Instance {
            auth: TokenAuthority::new(config.auth_secret()),
            metrics,
            recorder,
            config,
            workers: Mutex::new(workers.clone()),
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            game,
            loads: Mutex::new(vec![WorkerLoad::default(); workers.len()]),
            load_settings: LoadSettings::default(),
            cluster: std::sync::OnceLock::new(),
        });
        for worker in workers {
            supervise(Arc::downgrade(&instance), worker);
        }
        sample_loads(Arc::downgrade(&instance));
        Ok(instance)
    }

    /// This node's cluster membership, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Joins `cluster` (once) and starts its tasks.
    pub fn set_cluster(self: &Arc<Self>, cluster: Arc<crate::cluster::Cluster>) {
        if self.cluster.set(cluster.clone()).is_ok() {
            cluster.start(Arc::downgrade(self));
        }
    }

    /// This node's load (datagrams per second through all its workers) and its peers.
    pub async fn load_and_peers(&self) -> (u64, usize) {
        let load = self.loads().iter().map(|l| l.datagrams_per_second).sum();
        let peers = self.rooms().await.iter().map(|r| r.peer_count()).sum();
        (load, peers)
    }

    /// Where a new peer of `room_id` should connect: with a cluster, its least-loaded node (or
    /// the least-loaded node); alone, here (`url` is this node's, as clients reach it).
    pub async fn place(&self, room_id: &str, url: String) -> crate::cluster::Place {
        match self.cluster() {
            Some(c) => c.place(room_id).await,
            None => crate::cluster::Place {
                node_id: "local".to_owned(),
                url,
            },
        }
    }

    fn loads(&self) -> std::sync::MutexGuard<'_, Vec<WorkerLoad>> {
        self.loads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The load of worker `index` as placement sees it: datagrams per second, plus an
    /// estimate for the transports placed since the last sample.
    fn load_of(&self, index: usize) -> u64 {
        self.loads().get(index).map_or(0, |l| {
            l.datagrams_per_second
                + l.placed_since_sample * self.load_settings.datagrams_per_new_transport
        })
    }

    /// The router a new transport of `peer_id` in `room` goes on: the worker of the peer's
    /// other transports; else, with `placement.rooms = "spread"`, the least-loaded of the
    /// room's workers unless another worker is less loaded by more than
    /// `placement.spread_above_datagrams_per_second` (then that one, and the room gets a
    /// router there); with `"single"`, the room's first router.
    pub async fn router_for(
        &self,
        room: &Room,
        peer_id: &str,
    ) -> Result<sluice_media::Router, SignalError> {
        if self.config.placement.rooms == RoomPlacement::Single {
            return Ok(room.router.clone());
        }
        let own = room
            .objects()
            .transports
            .values()
            .find(|t| t.peer_id == peer_id)
            .map(|t| t.object.transport.worker_index());
        if let Some(router) = own.and_then(|w| room.routers.on(w)) {
            return Ok(router);
        }
        let alive: Vec<Worker> = self
            .workers()
            .into_iter()
            .filter(Worker::is_alive)
            .collect();
        let in_room = room.routers.workers();
        // Equal loads (idle workers): the one with fewer transports.
        let mut transports: HashMap<usize, usize> = HashMap::new();
        for r in self.rooms().await {
            for t in r.objects().transports.values() {
                *transports
                    .entry(t.object.transport.worker_index())
                    .or_default() += 1;
            }
        }
        let least = |candidates: &mut dyn Iterator<Item = &Worker>| {
            candidates
                .map(|w| {
                    let i = w.index();
                    let rank = (self.load_of(i), transports.get(&i).copied().unwrap_or(0), i);
                    (rank, w)
                })
                .min_by_key(|(rank, _)| *rank)
                .map(|((load, ..), w)| (load, w.clone()))
        };
        let (least_load, least_loaded) = least(&mut alive.iter())
            .ok_or_else(|| SignalError::internal("no worker is available"))?;
        let threshold = self.config.placement.spread_above_datagrams_per_second;
        let chosen = match least(&mut alive.iter().filter(|w| in_room.contains(&w.index()))) {
            Some((load, worker))
                if worker.index() == least_loaded.index() || load < least_load + threshold =>
            {
                worker
            }
            _ => least_loaded,
        };
        if let Some(l) = self.loads().get_mut(chosen.index()) {
            l.placed_since_sample += 1;
        }
        room.routers
            .on_worker(&chosen)
            .await
            .map_err(SignalError::from)
    }

    pub fn workers(&self) -> Vec<Worker> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Ready: every worker alive and the instance not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && {
            let workers = self.workers();
            !workers.is_empty() && workers.iter().all(Worker::is_alive)
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The room, if it exists.
    pub async fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.rooms.lock().await.get(id).cloned()
    }

    /// Every room now.
    pub async fn rooms(&self) -> Vec<Arc<Room>> {
        let mut rooms: Vec<Arc<Room>> = self.rooms.lock().await.values().cloned().collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// The room, created with a router on the least-loaded worker if needed.
    pub async fn room_or_create(&self, id: &str) -> Result<Arc<Room>, RoomError> {
        if self.is_draining() {
            return Err(RoomError::Draining);
        }
        let mut rooms = self.rooms.lock().await;
        if let Some(room) = rooms.get(id) {
            if let Some(reason) = room.failure() {
                // Its peers are being closed; once they are gone the room goes, and the next
                // peer gets a fresh one.
                return Err(RoomError::GameFailed(reason.to_owned()));
            }
            return Ok(room.clone());
        }
        // The game's code runs first here (its factory and spec): a panic in it refuses the
        // room rather than failing the connection.
        let game = match &self.game {
            None => None,
            Some(factory) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                factory(id).map(crate::game::link)
            }))
            .map_err(|_| RoomError::GameFailed("its factory panicked".to_owned()))?,
        };
        let (game_link, game_task) = game.unzip();
        let mut load: HashMap<usize, usize> = HashMap::new();
        for r in rooms.values() {
            *load.entry(r.worker_index).or_default() += 1 + r.peer_count();
        }
        let worker = self
            .workers()
            .into_iter()
            .filter(Worker::is_alive)
            .min_by_key(|w| load.get(&w.index()).copied().unwrap_or(0))
            .ok_or(RoomError::NoWorker)?;
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let router = worker
            .create_router_with_events(&self.config.router.media_codecs, Some(events_tx.clone()))
            .await
            .map_err(|e| RoomError::Router(e.to_string()))?;
        let routers = RoomRouters::new(router, self.config.router.media_codecs.clone(), events_tx);
        let room = Arc::new(Room::new(id, routers, self.config.clone(), game_link));
        if let Some(task) = game_task {
            if let Err(e) = room.open_game().await {
                room.routers.close().await;
                return Err(RoomError::Router(e.reason));
            }
            let host = Arc::downgrade(&room);
            tokio::spawn(task.run(host, id.to_owned()));
        }
        // Subscribed before any peer can join, so every peer of it here is announced.
        let actions = self.cluster().map(|_| room.store.subscribe());
        rooms.insert(id.to_owned(), room.clone());
        // Redis is read without the rooms' lock: other rooms are not held up by a slow Redis.
        drop(rooms);
        if let (Some(cluster), Some(actions)) = (self.cluster(), actions) {
            // The peers and producers of other nodes (peers that joined meanwhile get newPeer).
            cluster.follow(&room, actions).await;
        }
        let weak = Arc::downgrade(&room);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match weak.upgrade() {
                    Some(room) => room.on_router_event(event),
                    None => break,
                }
            }
        });
        if self.config.interest.mode == InterestMode::Proximity {
            let weak = Arc::downgrade(&room);
            let period = Duration::from_secs_f64(1.0 / f64::from(self.config.interest.rate_hz));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(room) = weak.upgrade() else { break };
                    room.evaluate_interest().await;
                }
            });
        }
        tracing::info!(room = id, worker = worker.index(), "room opened");
        Ok(room)
    }

    /// Closes a room that has no peer and no broadcaster left (its router too).
    pub async fn close_room_if_empty(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock().await;
        let same = rooms.get(&room.id).is_some_and(|r| Arc::ptr_eq(r, room));
        if same && room.peer_count() == 0 && room.broadcasters().is_empty() {
            rooms.remove(&room.id);
            crate::shrink_when_sparse(&mut rooms);
            drop(rooms);
            self.recorder.room_closed(&room.id);
            room.routers.close().await;
            tracing::info!(room = %room.id, "room closed");
        }
    }

    /// Stops accepting, tells every peer, and closes everything within `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        // Recordings end first, while their producers still send: each file gets its index.
        self.recorder.stop_all().await;
        for room in self.rooms().await {
            room.close_all_peers(CLOSE_GOING_AWAY, "server shutting down");
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.rooms.lock().await.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rooms: Vec<Arc<Room>> = self.rooms.lock().await.drain().map(|(_, r)| r).collect();
        for room in rooms {
            room.routers.close().await;
        }
        for worker in self.workers() {
            worker.close().await;
        }
    }

    /// A worker died: replace it and tell its rooms' peers to reconnect.
    async fn replace_worker(self: &Arc<Self>, dead: &Worker, reason: &str) {
        let index = dead.index();
        tracing::error!(worker = index, %reason, "worker died; replacing it");
        self.metrics.worker_deaths.inc();
        let replacement = match spawn_worker(&self.config, index) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot replace the worker");
                return;
            }
        };
        if let Ok(mut workers) = self.workers.lock()
            && let Some(slot) = workers.get_mut(index)
        {
            *slot = replacement.clone();
        }
        supervise(Arc::downgrade(self), replacement);
        let rooms: Vec<Arc<Room>> = {
            let mut rooms = self.rooms.lock().await;
            let dead_rooms: Vec<String> = rooms
                .values()
                .filter(|r| r.routers.workers().contains(&index))
                .map(|r| r.id.clone())
                .collect();
            let removed = dead_rooms
                .iter()
                .filter_map(|id| rooms.remove(id))
                .collect();
            crate::shrink_when_sparse(&mut rooms);
            removed
        };
        for room in rooms {
            self.recorder.room_closed(&room.id);
            room.close_all_peers(CLOSE_TRY_AGAIN, "media worker restarted; reconnect");
        }
    }
}

/// Worker `index` as the configuration says: its socket, and the tuning it overrides.
fn spawn_worker(config: &Config, index: usize) -> Result<Worker, sluice_media::MediaError> {
    let settings = WorkerSettings {
        listen_ip: config.rtc.ip,
        announced_ip: Some(config.announced_ip()),
        port: config.worker_port(index),
        tcp: config.worker_tcp_port(index),
    };
    let media = sluice_media::MediaSettings {
        own_audio_egress: config.rtc.own_audio_egress,
        own_video_egress: config.rtc.own_video_egress,
        ..sluice_media::MediaSettings::default()
    };
    Worker::spawn_with(index, &settings, media)
}

/// Reads every worker's datagram counters each `sample_interval` into `Instance::loads`.
fn sample_loads(instance: std::sync::Weak<Instance>) {
    tokio::spawn(async move {
        let mut last: HashMap<usize, (u64, tokio::time::Instant)> = HashMap::new();
        let period = match instance.upgrade() {
            Some(i) => i.load_settings.sample_interval,
            None => return,
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(instance) = instance.upgrade() else {
                break;
            };
            if instance.is_draining() {
                break;
            }
            for worker in instance.workers() {
                let Ok(usage) = worker.resource_usage().await else {
                    continue;
                };
                let total = usage.datagrams_sent + usage.datagrams_received;
                let now = tokio::time::Instant::now();
                let rate = match last.insert(worker.index(), (total, now)) {
                    Some((before, at)) if total >= before => {
                        let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                        ((total - before) as f64 / secs) as u64
                    }
                    // First sample, or a replaced worker whose counters started again.
                    _ => 0,
                };
                let mut loads = instance.loads();
                if let Some(l) = loads.get_mut(worker.index()) {
                    *l = WorkerLoad {
                        datagrams_per_second: rate,
                        placed_since_sample: 0,
                    };
                }
            }
        }
    });
}

fn supervise(instance: std::sync::Weak<Instance>, worker: Worker) {
    tokio::spawn(async move {
        let reason = worker.died().await;
        if let Some(instance) = instance.upgrade()
            && !instance.is_draining()
        {
            instance.replace_worker(&worker, &reason).await;
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.
    use super::*;

    #[tokio::test]
    async fn the_room_map_gives_its_capacity_back_once_the_rooms_close() {
        let mut config = Config::embedded_default().unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.rtc.port = 0;
        config.workers = 1;
        let instance = Instance::start(Arc::new(config)).unwrap();
        let mut rooms = Vec::new();
        for i in 0..500 {
            rooms.push(instance.room_or_create(&format!("r{i}")).await.unwrap());
        }
        let busy = instance.rooms.lock().await.capacity();
        assert!(busy >= 500);
        for room in &rooms {
            instance.close_room_if_empty(room).await;
        }
        let map = instance.rooms.lock().await;
        assert!(map.is_empty());
        assert!(map.capacity() <= 64, "{busy} → {}", map.capacity());
        drop(map);
        instance.drain(Duration::from_secs(1)).await;
    }
}
