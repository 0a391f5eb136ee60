//! The instance: its workers, its rooms (one router each, placed on the least-loaded worker), and
//! its lifecycle: start, ready, drain, shut down, and a dead worker replaced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_media::{Worker, WorkerSettings};

use crate::auth::TokenAuthority;
use crate::config::{Config, InterestMode};
use crate::game::GameFactory;
use crate::metrics::Metrics;
use crate::recording::{Recorder, RecordingSettings};
use crate::room::Room;

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
        });
        for worker in workers {
            supervise(Arc::downgrade(&instance), worker);
        }
        Ok(instance)
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
            .create_router_with_events(&self.config.router.media_codecs, Some(events_tx))
            .await
            .map_err(|e| RoomError::Router(e.to_string()))?;
        let room = Arc::new(Room::new(
            id,
            router,
            worker.index(),
            self.config.clone(),
            game_link,
        ));
        if let Some(task) = game_task {
            if let Err(e) = room.open_game().await {
                let _ = room.router.close().await;
                return Err(RoomError::Router(e.reason));
            }
            let host = Arc::downgrade(&room);
            tokio::spawn(task.run(host, id.to_owned()));
        }
        rooms.insert(id.to_owned(), room.clone());
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
            let _ = room.router.close().await;
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
            let _ = room.router.close().await;
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
                .filter(|r| r.worker_index == index)
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
        ..sluice_media::MediaSettings::default()
    };
    Worker::spawn_with(index, &settings, media)
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
