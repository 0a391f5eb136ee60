//! A room's routers: one on each worker that hosts one of its transports, and the pipes that
//! carry a producer from its router to another one (mediasoup's `router.pipeToRouter`).
//!
//! The room's first router (its home) hosts what is the room's own: broadcasters, recordings,
//! the game's DirectTransport. A peer's transports go to one worker, picked by load when its
//! first transport is created (`Instance::router_for`); the room gets a router there if it had
//! none. A consumer on worker B of a producer on worker A holds a [`PipeLease`]: the first one
//! pipes the producer A → B ([`PipedProducer`], same id on B), later ones share that pipe, and
//! when the last one is dropped the pipe closes. Data producers are piped the same way.
//! Pause, resume and close of the source cross the pipe (`sluice_media::pipe`), so the
//! consumers on B get the same notifications as those on A.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_media::ortc::RtpCodecCapability;
use sluice_media::{
    DataProducer, EventSender, MediaError, PipedDataProducer, PipedProducer, Router, Worker,
};

/// A producer (or data producer) id and the worker it is piped to.
type PipeKey = (String, usize);

enum Pipe {
    Media(Box<PipedProducer>),
    Data(Box<PipedDataProducer>),
}

impl Pipe {
    async fn close(&self) {
        let _ = match self {
            Pipe::Media(p) => p.close().await,
            Pipe::Data(p) => p.close().await,
        };
    }
}

struct Slot {
    pipe: Pipe,
    users: usize,
}

#[derive(Default)]
struct PipeTable {
    slots: Mutex<HashMap<PipeKey, Slot>>,
    /// Held while a pipe is made or closed: one pipe per producer and worker at any time.
    busy: tokio::sync::Mutex<()>,
}

impl PipeTable {
    fn slots(&self) -> MutexGuard<'_, HashMap<PipeKey, Slot>> {
        // A poisoned lock means a panic while holding it; the map stays usable.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the pipe of `key` if nobody took it again since its last lease was dropped.
    async fn close_if_unused(&self, key: PipeKey) {
        let _busy = self.busy.lock().await;
        let slot = {
            let mut slots = self.slots();
            if slots.get(&key).is_some_and(|s| s.users == 0) {
                let slot = slots.remove(&key);
                crate::shrink_when_sparse(&mut slots);
                slot
            } else {
                None
            }
        };
        if let Some(slot) = slot {
            slot.pipe.close().await;
        }
    }
}

/// One user of a pipe; the pipe closes when its last lease is dropped.
pub struct PipeLease {
    key: PipeKey,
    table: Arc<PipeTable>,
}

impl std::fmt::Debug for PipeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PipeLease").field(&self.key).finish()
    }
}

impl Drop for PipeLease {
    fn drop(&mut self) {
        let last = match self.table.slots().get_mut(&self.key) {
            Some(slot) => {
                slot.users = slot.users.saturating_sub(1);
                slot.users == 0
            }
            None => false,
        };
        if last && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (table, key) = (self.table.clone(), self.key.clone());
            runtime.spawn(async move { table.close_if_unused(key).await });
        }
    }
}

/// The loudest producer each router reported, and the room's loudest last announced.
#[derive(Default)]
struct Speakers {
    by_router: HashMap<String, (Option<String>, Option<i8>)>,
    announced: Option<String>,
}

impl Speakers {
    /// Router `router_id`'s loudest now; the room's loudest (the loudest of its routers'), if
    /// it is another producer than the one last answered (or silence after a speaker).
    fn report(
        &mut self,
        router_id: &str,
        producer_id: Option<String>,
        volume: Option<i8>,
    ) -> Option<(Option<String>, Option<i8>)> {
        self.by_router
            .insert(router_id.to_owned(), (producer_id, volume));
        let loudest = self
            .by_router
            .values()
            .filter(|(p, _)| p.is_some())
            .max_by_key(|(_, v)| *v)
            .cloned()
            .unwrap_or((None, None));
        if loudest.0 == self.announced {
            return None;
        }
        self.announced = loudest.0.clone();
        Some(loudest)
    }
}

/// A room's routers and the pipes between them (see the module's documentation).
pub struct RoomRouters {
    home: Router,
    codecs: Vec<RtpCodecCapability>,
    /// Where the routers' own events (the active speaker) go.
    events: EventSender,
    /// The routers on other workers, by worker index.
    others: Mutex<HashMap<usize, Router>>,
    /// Held while a router is added: one router per worker.
    adding: tokio::sync::Mutex<()>,
    pipes: Arc<PipeTable>,
    /// The leases of the room's consumers and data consumers, by consumer id, with their peer.
    leases: Mutex<HashMap<String, (String, PipeLease)>>,
    speakers: Mutex<Speakers>,
}

impl std::fmt::Debug for RoomRouters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomRouters")
            .field("workers", &self.workers())
            .finish_non_exhaustive()
    }
}

impl RoomRouters {
    /// The routers of a room whose first router is `home`; the others are made with `codecs`
    /// and their events go to `events`, as `home`'s do.
    pub fn new(home: Router, codecs: Vec<RtpCodecCapability>, events: EventSender) -> Self {
        RoomRouters {
            home,
            codecs,
            events,
            others: Mutex::new(HashMap::new()),
            adding: tokio::sync::Mutex::new(()),
            pipes: Arc::new(PipeTable::default()),
            leases: Mutex::new(HashMap::new()),
            speakers: Mutex::new(Speakers::default()),
        }
    }

    fn others(&self) -> MutexGuard<'_, HashMap<usize, Router>> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's first router.
    pub fn home(&self) -> &Router {
        &self.home
    }

    /// The room's router on worker `index`, if it has one.
    pub fn on(&self, index: usize) -> Option<Router> {
        if index == self.home.worker_index() {
            return Some(self.home.clone());
        }
        self.others().get(&index).cloned()
    }

    /// The room's router on `worker`, made if the room has none there yet.
    pub async fn on_worker(&self, worker: &Worker) -> Result<Router, MediaError> {
        if let Some(router) = self.on(worker.index()) {
            return Ok(router);
        }
        let _adding = self.adding.lock().await;
        if let Some(router) = self.on(worker.index()) {
            return Ok(router);
        }
        let router = worker
            .create_router_with_events(&self.codecs, Some(self.events.clone()))
            .await?;
        self.others().insert(worker.index(), router.clone());
        Ok(router)
    }

    /// The workers the room has a router on, home first.
    pub fn workers(&self) -> Vec<usize> {
        let mut others: Vec<usize> = self.others().keys().copied().collect();
        others.sort_unstable();
        std::iter::once(self.home.worker_index())
            .chain(others)
            .collect()
    }

    /// Makes producer `producer_id`, hosted by worker `from`, available on the room's router
    /// on worker `to`: `None` when it is there already, else a lease on its pipe.
    pub async fn pipe(
        &self,
        producer_id: &str,
        from: usize,
        to: usize,
    ) -> Result<Option<PipeLease>, MediaError> {
        self.lease(producer_id, from, to, false).await
    }

    /// As [`RoomRouters::pipe`], for data producer `data_producer_id`.
    pub async fn pipe_data(
        &self,
        data_producer_id: &str,
        from: usize,
        to: usize,
    ) -> Result<Option<PipeLease>, MediaError> {
        self.lease(data_producer_id, from, to, true).await
    }

    async fn lease(
        &self,
        id: &str,
        from: usize,
        to: usize,
        data: bool,
    ) -> Result<Option<PipeLease>, MediaError> {
        if from == to {
            return Ok(None);
        }
        let key = (id.to_owned(), to);
        let lease = |users: &mut usize| {
            *users += 1;
            PipeLease {
                key: key.clone(),
                table: self.pipes.clone(),
            }
        };
        let _busy = self.pipes.busy.lock().await;
        if let Some(slot) = self.pipes.slots().get_mut(&key) {
            return Ok(Some(lease(&mut slot.users)));
        }
        let source = self
            .on(from)
            .ok_or_else(|| MediaError::UnknownRouter(format!("of the room on worker {from}")))?;
        let target = self
            .on(to)
            .ok_or_else(|| MediaError::UnknownRouter(format!("of the room on worker {to}")))?;
        let pipe = if data {
            Pipe::Data(Box::new(
                PipedDataProducer::create(&source, &target, id).await?,
            ))
        } else {
            Pipe::Media(Box::new(PipedProducer::create(&source, &target, id).await?))
        };
        let mut slot = Slot { pipe, users: 0 };
        let taken = lease(&mut slot.users);
        self.pipes.slots().insert(key.clone(), slot);
        Ok(Some(taken))
    }

    /// The copy of data producer `data_producer_id` on worker `index` (its pipe's end), if it
    /// is piped there.
    pub fn piped_data_producer(
        &self,
        data_producer_id: &str,
        index: usize,
    ) -> Option<DataProducer> {
        match &self
            .pipes
            .slots()
            .get(&(data_producer_id.to_owned(), index))?
            .pipe
        {
            Pipe::Data(p) => Some(p.pipe_data_producer.clone()),
            Pipe::Media(_) => None,
        }
    }

    /// How many pipes the room has now.
    pub fn pipe_count(&self) -> usize {
        self.pipes.slots().len()
    }

    /// Keeps `lease` while consumer (or data consumer) `consumer_id` of `peer_id` lives.
    pub fn hold(&self, peer_id: &str, consumer_id: &str, lease: Option<PipeLease>) {
        if let Some(lease) = lease {
            self.leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(consumer_id.to_owned(), (peer_id.to_owned(), lease));
        }
    }

    /// Consumer `consumer_id` closed: its lease goes.
    pub fn release(&self, consumer_id: &str) {
        let lease = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(consumer_id);
        drop(lease);
    }

    /// `peer_id` left: the leases of its consumers go.
    pub fn release_peer(&self, peer_id: &str) {
        let gone: Vec<(String, PipeLease)> = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> = leases
                .iter()
                .filter(|(_, (p, _))| p == peer_id)
                .map(|(id, _)| id.clone())
                .collect();
            let gone = ids.iter().filter_map(|id| leases.remove(id)).collect();
            crate::shrink_when_sparse(&mut leases);
            gone
        };
        drop(gone);
    }

    /// A router reported its loudest audio producer (`None`: silence). Answers the room's
    /// loudest across its routers when that changed.
    pub fn speaker(
        &self,
        router_id: &str,
        producer_id: Option<String>,
        volume: Option<i8>,
    ) -> Option<(Option<String>, Option<i8>)> {
        self.speakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report(router_id, producer_id, volume)
    }

    /// Closes every router of the room (their transports and pipes with them).
    pub async fn close(&self) {
        let others: Vec<Router> = self.others().drain().map(|(_, r)| r).collect();
        for router in others {
            let _ = router.close().await;
        }
        let _ = self.home.close().await;
        self.pipes.slots().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rooms_speaker_is_the_loudest_of_its_routers_announced_once_per_change() {
        let mut s = Speakers::default();
        let p = |id: &str| Some(id.to_owned());
        assert_eq!(s.report("a", p("x"), Some(-30)), Some((p("x"), Some(-30))));
        // The same producer reported by the router it is piped to: nothing new.
        assert_eq!(s.report("b", p("x"), Some(-30)), None);
        // Louder on router b.
        assert_eq!(s.report("b", p("y"), Some(-10)), Some((p("y"), Some(-10))));
        // Router a's quieter change does not matter.
        assert_eq!(s.report("a", p("z"), Some(-40)), None);
        // b goes silent: a's speaker is the loudest again.
        assert_eq!(s.report("b", None, None), Some((p("z"), Some(-40))));
        // Everyone silent: silence once.
        assert_eq!(s.report("a", None, None), Some((None, None)));
        assert_eq!(s.report("b", None, None), None);
    }
}
