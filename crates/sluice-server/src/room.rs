//! A room: its router, its peers, the media objects they own, and its store.
//!
//! Handlers change the room by dispatching [`Action`]s ([`Room::dispatch`]); the room reacts to
//! each one after the store applied it: it derives the peers' notifications (`newPeer`,
//! `peerClosed`, `consumerClosed`, …) and offers new producers and data producers to the other
//! joined peers as consumers (`newConsumer`, `newDataConsumer`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_media::ortc::MediaKind;
use sluice_media::{
    Consumer, ConsumerLayers, ConsumerOptions, DataConsumer, DataConsumerOptions, DataProducer,
    PlainTransport, Producer, Router, WebRtcTransport,
};
use sluice_protocol::{
    ActionNotification, ActiveSpeaker, ConsumerLayersChanged, ConsumerRef,
    ConsumerScore as ConsumerScoreMsg, ConsumerScoreValue, ConsumerType, DataConsumerRef,
    DataProducerRef, DownlinkBwe, ErrorCode, NewConsumerRequest, NewDataConsumerRequest,
    NewDataProducer, NewProducer, PeerDisplayNameChanged, PeerInfo, PeerRef, ProducerRef,
    ProducerScore as ProducerScoreMsg, ProducerStreamScore, ServerNotification, ServerRequest,
};

use crate::config::{Config, InterestMode, Relay};
use crate::error::{SignalError, clip};
use crate::game::{GameEffect, GameEvent, GameHost, GameInput, GameLink, To};
use crate::interest::{Interest, Position, Sense};
use crate::peer::Peer;
use crate::room_routers::{PipeLease, RoomRouters};
use crate::store::{Action, CacheBounds, GameDraft, Store};

/// A media object and the peer that owns it.
#[derive(Debug, Clone)]
pub struct Owned<T> {
    pub peer_id: String,
    pub object: T,
    pub app_data: Value,
}

/// A transport and what its peer said it is for.
#[derive(Debug, Clone)]
pub struct TransportEntry {
    pub transport: WebRtcTransport,
    pub producing: bool,
    pub consuming: bool,
}

/// A broadcaster (mediasoup-demo's REST API, `broadcaster.rs`): a member of the room without a
/// WebSocket, producing through plain transports of its own.
#[derive(Debug, Default)]
pub struct BroadcasterEntry {
    pub transports: HashMap<String, PlainTransport>,
    /// What it can receive (given when it joined), for consuming.
    pub rtp_capabilities: Option<sluice_media::ortc::RtpCapabilities>,
}

/// The media handles of a room, by id.
#[derive(Debug, Default)]
pub struct Objects {
    pub transports: HashMap<String, Owned<TransportEntry>>,
    pub producers: HashMap<String, Owned<Producer>>,
    pub consumers: HashMap<String, Owned<Consumer>>,
    pub data_producers: HashMap<String, Owned<DataProducer>>,
    pub data_consumers: HashMap<String, Owned<DataConsumer>>,
}

impl Objects {
    /// Forgets everything `peer_id` owns; returns its transports (to close them).
    pub(crate) fn remove_peer(&mut self, peer_id: &str) -> Vec<WebRtcTransport> {
        self.producers.retain(|_, o| o.peer_id != peer_id);
        self.consumers.retain(|_, o| o.peer_id != peer_id);
        self.data_producers.retain(|_, o| o.peer_id != peer_id);
        self.data_consumers.retain(|_, o| o.peer_id != peer_id);
        let mut transports = Vec::new();
        self.transports.retain(|_, o| {
            if o.peer_id == peer_id {
                transports.push(o.object.transport.clone());
                false
            } else {
                true
            }
        });
        crate::shrink_when_sparse(&mut self.transports);
        crate::shrink_when_sparse(&mut self.producers);
        crate::shrink_when_sparse(&mut self.consumers);
        crate::shrink_when_sparse(&mut self.data_producers);
        crate::shrink_when_sparse(&mut self.data_consumers);
        transports
    }

    /// How many objects of each kind `peer_id` owns: (transports, producers, consumers, data
    /// producers, data consumers).
    pub fn count_of(&self, peer_id: &str) -> [usize; 5] {
        [
            self.transports
                .values()
                .filter(|o| o.peer_id == peer_id)
                .count(),
            self.producers
                .values()
                .filter(|o| o.peer_id == peer_id)
                .count(),
            self.consumers
                .values()
                .filter(|o| o.peer_id == peer_id)
                .count(),
            self.data_producers
                .values()
                .filter(|o| o.peer_id == peer_id)
                .count(),
            self.data_consumers
                .values()
                .filter(|o| o.peer_id == peer_id)
                .count(),
        ]
    }
}

/// A place counted against a per-peer limit while its object is being created (consumers are
/// created concurrently, so counting existing objects alone would let a burst overshoot).
pub struct Reservation<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Reservation<'a> {
    /// Takes a place if `peer_id`'s objects of kind `index` (see [`Objects::count_of`]) plus the
    /// places already taken stay below `limit`.
    pub fn take(
        objects: &Objects,
        peer_id: &str,
        index: usize,
        reserved: &'a std::sync::atomic::AtomicUsize,
        limit: usize,
    ) -> Option<Reservation<'a>> {
        use std::sync::atomic::Ordering;
        let used = objects.count_of(peer_id)[index] + reserved.load(Ordering::SeqCst);
        if used >= limit {
            return None;
        }
        reserved.fetch_add(1, Ordering::SeqCst);
        Some(Reservation(reserved))
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One room.
pub struct Room {
    pub id: String,
    /// The room's first router (its home): broadcasters, recordings and the game live there.
    pub router: Router,
    /// The worker of its home router.
    pub worker_index: usize,
    /// Its routers on every worker that hosts one of its transports, and the pipes between them.
    pub routers: RoomRouters,
    pub store: Store,
    pub config: Arc<Config>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Broadcasters by id (members without a WebSocket).
    broadcasters: Mutex<HashMap<String, BroadcasterEntry>>,
    objects: Mutex<Objects>,
    /// Interest management (`[interest] mode = "proximity"`), evaluated by the instance's ticker.
    interest: Option<Mutex<Interest>>,
    /// The room's server side (made on first use): it consumes the peers' position channels
    /// and the game's inputs, and carries the game's outputs.
    direct: tokio::sync::OnceCell<sluice_media::DirectTransport>,
    /// The room's game logic (`sluice_server::game`), if the server was built with one.
    game: Option<GameLink>,
    /// The game's output data producers, by label.
    game_producers: Mutex<HashMap<String, DataProducer>>,
    /// Per video consumer: the peer's preferred layers, and the spatial layer interest
    /// management allows at its distance (what it receives is the lower of both).
    layer_caps: Mutex<HashMap<String, LayerCap>>,
    /// Why the game logic failed; a failed room takes no new peer.
    failed: std::sync::OnceLock<String>,
    /// Its peers on other nodes of the cluster, by id (docs/cluster.md).
    remote_peers: Mutex<HashMap<String, crate::cluster::RemotePeer>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("id", &self.id).finish()
    }
}

/// Looks an object up for `peer_id`: 404 if it does not exist, 403 if another peer owns it.
fn owned<T: Clone>(
    map: &HashMap<String, Owned<T>>,
    what: &str,
    id: &str,
    peer_id: &str,
) -> Result<T, SignalError> {
    match map.get(id) {
        None => Err(SignalError::not_found(format!("no {what} {}", clip(id)))),
        Some(o) if o.peer_id != peer_id => Err(SignalError::forbidden(format!(
            "{what} {} belongs to another peer",
            clip(id)
        ))),
        Some(o) => Ok(o.object.clone()),
    }
}

impl Room {
    pub(crate) fn new(
        id: &str,
        routers: RoomRouters,
        config: Arc<Config>,
        game: Option<GameLink>,
    ) -> Self {
        let router = routers.home().clone();
        Room {
            game,
            game_producers: Mutex::new(HashMap::new()),
            layer_caps: Mutex::new(HashMap::new()),
            failed: std::sync::OnceLock::new(),
            remote_peers: Mutex::new(HashMap::new()),
            id: id.to_owned(),
            worker_index: router.worker_index(),
            router,
            routers,
            store: Store::new(id),
            peers: Mutex::new(HashMap::new()),
            broadcasters: Mutex::new(HashMap::new()),
            objects: Mutex::new(Objects::default()),
            direct: tokio::sync::OnceCell::new(),
            interest: (config.interest.mode == InterestMode::Proximity)
                .then(|| Mutex::new(Interest::new(config.interest.settings()))),
            config,
        }
    }

    /// The joined members other than `except` (broadcasters included), as `join` lists them.
    pub fn joined_peer_infos(&self, except: &str) -> Vec<PeerInfo> {
        self.store
            .read(|s| {
                s.peers
                    .iter()
                    .filter(|(id, p)| *id != except && p.joined)
                    .map(|(id, p)| PeerInfo {
                        id: id.clone(),
                        display_name: p.display_name.clone(),
                        device: p.device.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its joined peers on other nodes, as `join` lists them (without `except`).
    pub fn remote_peer_infos(&self, except: &str) -> Vec<PeerInfo> {
        self.remote_peers()
            .iter()
            .filter(|(id, _)| id != except)
            .map(|(id, p)| crate::cluster::peer_info(id, p))
            .collect()
    }

    /// Its peers on other nodes.
    pub fn remote_peers(&self) -> Vec<(String, crate::cluster::RemotePeer)> {
        let mut peers: Vec<_> = self
            .remote_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        peers
    }

    /// Another node announced a peer of this room: the joined peers here get `newPeer`, once.
    pub fn remote_peer_joined(&self, peer_id: &str, peer: &crate::cluster::RemotePeer) {
        let new = self
            .remote_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer_id.to_owned(), peer.clone())
            .is_none();
        if new && self.peer(peer_id).is_none() {
            let n = ServerNotification::NewPeer(crate::cluster::peer_info(peer_id, peer));
            for p in self.joined_peers_except(peer_id) {
                p.notify(&n);
            }
        }
    }

    /// A peer of this room on another node left (or its node was lost): `peerClosed` here.
    pub fn remote_peer_left(&self, peer_id: &str) {
        let removed = {
            let mut peers = self.remote_peers.lock().unwrap_or_else(|e| e.into_inner());
            let removed = peers.remove(peer_id).is_some();
            crate::shrink_when_sparse(&mut peers);
            removed
        };
        if removed && self.peer(peer_id).is_none() {
            let n = ServerNotification::PeerClosed(PeerRef {
                peer_id: peer_id.to_owned(),
            });
            for p in self.joined_peers_except(peer_id) {
                p.notify(&n);
            }
        }
    }

    /// A producer of a peer on another node, piped to this node's home router (docs/cluster.md):
    /// the joined peers here consume it as any other (`newConsumer`, or `newProducer` without
    /// `auto_consume`).
    pub fn add_remote_producer(
        self: &Arc<Self>,
        peer_id: &str,
        producer: Producer,
        paused: bool,
        app_data: Value,
    ) {
        let producer_id = producer.id().to_owned();
        let notification = ServerNotification::NewProducer(NewProducer {
            peer_id: peer_id.to_owned(),
            producer_id: producer_id.clone(),
            kind: producer.kind(),
            paused,
            app_data: app_data_map(&app_data),
        });
        self.objects().producers.insert(
            producer_id.clone(),
            Owned {
                peer_id: peer_id.to_owned(),
                object: producer,
                app_data,
            },
        );
        for p in self.joined_peers_except(peer_id) {
            if self.config.router.auto_consume {
                self.spawn_consumer(p, producer_id.clone());
            } else {
                p.notify(&notification);
            }
        }
    }

    /// Forgets a piped producer of another node (its pipe closed: its consumers here are told
    /// as for any producer that closes).
    pub fn remove_remote_producer(&self, producer_id: &str) -> Option<Producer> {
        let mut objects = self.objects();
        let remote = objects
            .producers
            .get(producer_id)
            .is_some_and(|p| self.peer(&p.peer_id).is_none());
        if !remote {
            return None;
        }
        objects.producers.remove(producer_id).map(|p| p.object)
    }

    /// A data producer of a peer on another node, piped here (docs/cluster.md): the joined
    /// peers here consume it as any other whose label is relayed to peers.
    pub fn add_remote_data_producer(
        self: &Arc<Self>,
        peer_id: &str,
        data_producer: DataProducer,
        app_data: Value,
    ) {
        let id = data_producer.id().to_owned();
        let notification = ServerNotification::NewDataProducer(NewDataProducer {
            peer_id: peer_id.to_owned(),
            data_producer_id: id.clone(),
            label: data_producer.label().to_owned(),
            protocol: data_producer.protocol().to_owned(),
            app_data: app_data_map(&app_data),
        });
        let relayed = self.relays_to_peers(data_producer.label());
        self.objects().data_producers.insert(
            id.clone(),
            Owned {
                peer_id: peer_id.to_owned(),
                object: data_producer,
                app_data,
            },
        );
        if !relayed {
            return;
        }
        for p in self.joined_peers_except(peer_id) {
            if self.config.router.auto_consume {
                self.spawn_data_consumer(p, id.clone());
            } else {
                p.notify(&notification);
            }
        }
    }

    /// Forgets a piped data producer of another node.
    pub fn remove_remote_data_producer(&self, id: &str) -> Option<DataProducer> {
        let mut objects = self.objects();
        let remote = objects
            .data_producers
            .get(id)
            .is_some_and(|p| p.peer_id != SERVER_PEER && self.peer(&p.peer_id).is_none());
        if !remote {
            return None;
        }
        objects.data_producers.remove(id).map(|p| p.object)
    }

    /// The ids of this room's peers on other nodes.
    fn remote_peer_ids(&self) -> HashSet<String> {
        self.remote_peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The data producers of peers on other nodes piped here: owner, id, label, protocol and
    /// app data.
    fn remote_data_producers(&self) -> Vec<(String, String, String, String, Value)> {
        let remote = self.remote_peer_ids();
        self.objects()
            .data_producers
            .values()
            .filter(|p| remote.contains(&p.peer_id))
            .map(|p| {
                (
                    p.peer_id.clone(),
                    p.object.id().to_owned(),
                    p.object.label().to_owned(),
                    p.object.protocol().to_owned(),
                    p.app_data.clone(),
                )
            })
            .collect()
    }

    /// The producers of peers on other nodes piped here, for a peer that just joined.
    fn remote_producers(&self) -> Vec<(String, Producer, Value)> {
        let remote = self.remote_peer_ids();
        self.objects()
            .producers
            .values()
            .filter(|p| remote.contains(&p.peer_id))
            .map(|p| (p.peer_id.clone(), p.object.clone(), p.app_data.clone()))
            .collect()
    }

    /// The room's broadcasters.
    pub fn broadcasters(&self) -> std::sync::MutexGuard<'_, HashMap<String, BroadcasterEntry>> {
        self.broadcasters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn peer_count(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.len())
    }

    pub fn peer(&self, id: &str) -> Option<Arc<Peer>> {
        self.peers.lock().ok()?.get(id).cloned()
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Joined peers other than `except`.
    fn joined_peers_except(&self, except: &str) -> Vec<Arc<Peer>> {
        self.peers()
            .into_iter()
            .filter(|p| p.id != except && p.is_joined())
            .collect()
    }

    /// Registers a connected peer; returns the one it replaces (same peer id), if any.
    pub fn insert_peer(&self, peer: Arc<Peer>) -> Option<Arc<Peer>> {
        self.peers
            .lock()
            .ok()
            .and_then(|mut p| p.insert(peer.id.clone(), peer))
    }

    /// Removes `peer` if it is still the registered one for its id.
    fn remove_peer(&self, peer: &Arc<Peer>) -> bool {
        let Ok(mut peers) = self.peers.lock() else {
            return false;
        };
        if peers.get(&peer.id).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            peers.remove(&peer.id);
            crate::shrink_when_sparse(&mut peers);
            true
        } else {
            false
        }
    }

    pub fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        // A poisoned lock means a panic while holding it; the maps stay usable.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn transport_of(&self, peer_id: &str, id: &str) -> Result<WebRtcTransport, SignalError> {
        owned(&self.objects().transports, "transport", id, peer_id).map(|t| t.transport)
    }

    /// One of `peer_id`'s transports that it created to produce on (`produce`, `produceData`);
    /// one created with `producing: false` is 409.
    pub fn producing_transport_of(
        &self,
        peer_id: &str,
        id: &str,
    ) -> Result<WebRtcTransport, SignalError> {
        let entry = owned(&self.objects().transports, "transport", id, peer_id)?;
        if !entry.producing {
            return Err(SignalError::conflict(format!(
                "transport {} was created with producing: false",
                clip(id)
            )));
        }
        Ok(entry.transport)
    }

    pub fn producer_of(&self, peer_id: &str, id: &str) -> Result<Producer, SignalError> {
        owned(&self.objects().producers, "producer", id, peer_id)
    }

    pub fn consumer_of(&self, peer_id: &str, id: &str) -> Result<Consumer, SignalError> {
        owned(&self.objects().consumers, "consumer", id, peer_id)
    }

    pub fn data_producer_of(&self, peer_id: &str, id: &str) -> Result<DataProducer, SignalError> {
        owned(&self.objects().data_producers, "data producer", id, peer_id)
    }

    pub fn data_consumer_of(&self, peer_id: &str, id: &str) -> Result<DataConsumer, SignalError> {
        owned(&self.objects().data_consumers, "data consumer", id, peer_id)
    }

    /// Applies an action to the store, then derives notifications and consumers from it.
    pub fn dispatch(self: &Arc<Self>, action: Action) {
        let action = self.store.dispatch(action);
        self.react(&action);
    }

    fn notify_peer(&self, peer_id: &str, n: ServerNotification) {
        if let Some(p) = self.peer(peer_id) {
            p.notify(&n);
        }
    }

    fn react(self: &Arc<Self>, action: &Action) {
        if let Action::ConsumerClosed { consumer_id, .. }
        | Action::DataConsumerClosed {
            data_consumer_id: consumer_id,
            ..
        } = action
        {
            // Its pipe, if it had one, closes with the last consumer of the producer there.
            self.routers.release(consumer_id);
        }
        if let Action::PeerLeft { peer_id, .. } = action {
            self.routers.release_peer(peer_id);
        }
        match action {
            Action::PeerJoined {
                peer_id,
                display_name,
                device,
            } => {
                self.with_interest(|i| i.add_player(peer_id));
                if let Some(game) = &self.game {
                    let _ = game.events.send(GameEvent::Join(peer_id.clone()));
                }
                let n = ServerNotification::NewPeer(PeerInfo {
                    id: peer_id.clone(),
                    display_name: display_name.clone(),
                    device: device.clone(),
                });
                for p in self.joined_peers_except(peer_id) {
                    p.notify(&n);
                }
            }
            Action::PeerLeft {
                peer_id,
                joined: true,
            } => {
                self.with_interest(|i| i.remove_player(peer_id));
                if let Some(game) = &self.game {
                    let _ = game.events.send(GameEvent::Leave(peer_id.clone()));
                }
                let n = ServerNotification::PeerClosed(PeerRef {
                    peer_id: peer_id.clone(),
                });
                for p in self.joined_peers_except(peer_id) {
                    p.notify(&n);
                }
            }
            Action::DisplayNameChanged {
                peer_id,
                display_name,
                old_display_name,
            } => {
                let n = ServerNotification::PeerDisplayNameChanged(PeerDisplayNameChanged {
                    peer_id: peer_id.clone(),
                    display_name: display_name.clone(),
                    old_display_name: old_display_name.clone(),
                });
                for p in self.joined_peers_except(peer_id) {
                    p.notify(&n);
                }
            }
            Action::ProducerCreated {
                peer_id,
                producer_id,
                ..
            } => {
                for p in self.joined_peers_except(peer_id) {
                    if self.config.router.auto_consume {
                        self.spawn_consumer(p, producer_id.clone());
                    } else if let Some(n) = producer_notification(action) {
                        p.notify(&n);
                    }
                }
            }
            Action::DataProducerCreated {
                peer_id,
                data_producer_id,
                label,
                ..
            } if self.relays_to_peers(label) => {
                for p in self.joined_peers_except(peer_id) {
                    if self.config.router.auto_consume {
                        self.spawn_data_consumer(p, data_producer_id.clone());
                    } else if let Some(n) = producer_notification(action) {
                        p.notify(&n);
                    }
                }
            }
            Action::ProducerClosed {
                peer_id,
                producer_id,
            } if !self.config.router.auto_consume => {
                let n = ServerNotification::ProducerClosed(ProducerRef {
                    producer_id: producer_id.clone(),
                });
                for p in self.joined_peers_except(peer_id) {
                    p.notify(&n);
                }
            }
            Action::DataProducerClosed {
                peer_id,
                data_producer_id,
            } if !self.config.router.auto_consume => {
                let n = ServerNotification::DataProducerClosed(DataProducerRef {
                    data_producer_id: data_producer_id.clone(),
                });
                for p in self.joined_peers_except(peer_id) {
                    p.notify(&n);
                }
            }
            Action::ProducerScoreChanged {
                peer_id,
                producer_id,
                score,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ProducerScore(ProducerScoreMsg {
                    producer_id: producer_id.clone(),
                    score: score
                        .iter()
                        .map(|s| ProducerStreamScore {
                            encoding_idx: s.encoding_idx,
                            ssrc: s.ssrc,
                            rid: s.rid.clone(),
                            score: s.score,
                        })
                        .collect(),
                }),
            ),
            Action::ConsumerProducerPaused {
                peer_id,
                consumer_id,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ConsumerPaused(ConsumerRef {
                    consumer_id: consumer_id.clone(),
                }),
            ),
            Action::ConsumerProducerResumed {
                peer_id,
                consumer_id,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ConsumerResumed(ConsumerRef {
                    consumer_id: consumer_id.clone(),
                }),
            ),
            Action::ConsumerScoreChanged {
                peer_id,
                consumer_id,
                score,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ConsumerScore(ConsumerScoreMsg {
                    consumer_id: consumer_id.clone(),
                    score: ConsumerScoreValue {
                        score: score.score,
                        producer_score: score.producer_score,
                        producer_scores: score.producer_scores.clone(),
                    },
                }),
            ),
            Action::ConsumerLayersChanged {
                peer_id,
                consumer_id,
                layers,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ConsumerLayersChanged(ConsumerLayersChanged {
                    consumer_id: consumer_id.clone(),
                    spatial_layer: layers.map(|l| l.spatial_layer),
                    temporal_layer: layers.map(|l| l.temporal_layer),
                }),
            ),
            Action::ConsumerClosed {
                peer_id,
                consumer_id,
                notify: true,
            } => self.notify_peer(
                peer_id,
                ServerNotification::ConsumerClosed(ConsumerRef {
                    consumer_id: consumer_id.clone(),
                }),
            ),
            Action::DataConsumerClosed {
                peer_id,
                data_consumer_id,
                notify: true,
            } => self.notify_peer(
                peer_id,
                ServerNotification::DataConsumerClosed(DataConsumerRef {
                    data_consumer_id: data_consumer_id.clone(),
                }),
            ),
            Action::ActiveSpeaker { peer_id, volume } => {
                let n = ServerNotification::ActiveSpeaker(ActiveSpeaker {
                    peer_id: (!peer_id.is_empty()).then(|| peer_id.clone()),
                    volume: volume.map(i32::from),
                });
                for p in self.joined_peers_except("") {
                    p.notify(&n);
                }
            }
            Action::DownlinkBwe {
                peer_id,
                desired_bitrate,
                effective_desired_bitrate,
                available_bitrate,
                ..
            } => self.notify_peer(
                peer_id,
                ServerNotification::DownlinkBwe(DownlinkBwe {
                    desired_bitrate: *desired_bitrate,
                    effective_desired_bitrate: *effective_desired_bitrate,
                    available_bitrate: *available_bitrate,
                }),
            ),
            _ => {}
        }
    }

    pub(crate) fn relays_to_peers(&self, label: &str) -> bool {
        label != POSITION_LABEL && !self.is_game_input(label) && !self.relays_to_server(label)
    }

    fn relays_to_server(&self, label: &str) -> bool {
        matches!(self.config.data.rule(label), Ok(Some(rule)) if rule.relay == Relay::Server)
    }

    /// Whether `label` is one the room's game sends on (players may not produce on it).
    pub fn is_game_output(&self, label: &str) -> bool {
        self.game
            .as_ref()
            .is_some_and(|g| g.outputs.iter().any(|o| o.label == label))
    }

    fn is_game_input(&self, label: &str) -> bool {
        self.game.as_ref().is_some_and(|g| g.inputs.contains(label))
    }

    /// The room's DirectTransport, made on first use.
    async fn direct(&self) -> Result<&sluice_media::DirectTransport, SignalError> {
        self.direct
            .get_or_try_init(|| self.router.create_direct_transport(None))
            .await
            .map_err(SignalError::from)
    }

    /// A data consumer of `data_producer_id` (hosted by worker `from`) on the room's
    /// DirectTransport: its messages, until the data producer closes, and the lease on its pipe
    /// to the home router (to keep while reading).
    async fn read_on_direct(
        &self,
        data_producer_id: &str,
        from: usize,
    ) -> Result<(sluice_media::DataReceiver, Option<PipeLease>), SignalError> {
        let lease = self
            .routers
            .pipe_data(data_producer_id, from, self.worker_index)
            .await
            .map_err(SignalError::from)?;
        let (_consumer, messages) = self
            .direct()
            .await?
            .consume_data(DataConsumerOptions::new(data_producer_id))
            .await
            .map_err(SignalError::from)?;
        Ok((messages, lease))
    }

    /// After a peer's data producer was created: the server reads what is its own (positions,
    /// the game's inputs and labels relayed to the server); other labels are left alone.
    pub async fn read_server_labels(
        self: &Arc<Self>,
        peer_id: &str,
        data_producer: &DataProducer,
    ) -> Result<(), SignalError> {
        let label = data_producer.label();
        if label == POSITION_LABEL {
            return self.read_positions(peer_id, data_producer).await;
        }
        let Some(game) = &self.game else {
            return Ok(());
        };
        if !game.inputs.contains(label) && !self.relays_to_server(label) {
            return Ok(());
        }
        let (messages, lease) = self
            .read_on_direct(data_producer.id(), data_producer.worker_index())
            .await?;
        let to_game = game.messages.clone();
        let (peer_id, label) = (peer_id.to_owned(), label.to_owned());
        tokio::spawn(async move {
            let _pipe = lease;
            // Ends when the data producer closes (its consumer closes with it) or the game ends.
            // While the game is behind, this waits and the bounded receiver drops what overflows.
            while let Some(message) = messages.recv().await {
                let input = GameInput {
                    peer_id: peer_id.clone(),
                    label: label.clone(),
                    message,
                };
                if to_game.send(input).await.is_err() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Creates the game's output data producers on the room's DirectTransport (when the room
    /// opens, before any peer joins).
    pub(crate) async fn open_game(&self) -> Result<(), SignalError> {
        let Some(game) = &self.game else {
            return Ok(());
        };
        for output in &game.outputs {
            let mut options = sluice_media::DataProducerOptions::new(output.label.clone());
            options.max_message_size = usize::MAX;
            let dp = self
                .direct()
                .await?
                .produce_data(options)
                .await
                .map_err(SignalError::from)?;
            self.objects().data_producers.insert(
                dp.id().to_owned(),
                Owned {
                    peer_id: SERVER_PEER.to_owned(),
                    object: dp.clone(),
                    app_data: Value::Null,
                },
            );
            self.game_producers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(output.label.clone(), dp);
        }
        Ok(())
    }

    /// Carries out what a game hook asked for.
    fn carry_out(&self, effect: GameEffect) {
        match effect {
            GameEffect::Send { to, label, message } => {
                let producer = self
                    .game_producers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&label)
                    .cloned();
                let Some(producer) = producer else {
                    tracing::warn!(room = %self.id, %label, "the game sent on a label it did not declare as an output");
                    return;
                };
                let sent = match to {
                    To::All => producer.send(message),
                    To::Peer(peer_id) => {
                        let ids = self.data_consumers_of(producer.id(), |p| p == peer_id);
                        self.send_to(&producer, message, ids)
                    }
                    To::Near(peer_id) => {
                        let ids = self.data_consumers_of(producer.id(), |p| {
                            p != peer_id && self.hears_now(p, &peer_id)
                        });
                        self.send_to(&producer, message, ids)
                    }
                };
                if let Err(e) = sent {
                    tracing::debug!(room = %self.id, error = %e, "game message not sent");
                }
            }
            GameEffect::SetPosition { peer_id, position } => {
                self.set_position(&peer_id, position);
            }
            GameEffect::Action {
                action_type,
                payload,
                cache,
            } => {
                self.dispatch_server_action(&action_type, payload, cache, None);
            }
        }
    }

    /// The ids of `data_producer_id`'s data consumers whose peer passes `f`, with their worker.
    fn data_consumers_of(
        &self,
        data_producer_id: &str,
        f: impl Fn(&str) -> bool,
    ) -> Vec<(String, usize)> {
        self.objects()
            .data_consumers
            .iter()
            .filter(|(_, c)| c.object.data_producer_id() == data_producer_id && f(&c.peer_id))
            .map(|(id, c)| (id.clone(), c.object.worker_index()))
            .collect()
    }

    /// Sends `message` from `producer` to some of its data consumers: on its own worker
    /// directly, on another worker through the copy of `producer` at the end of its pipe.
    fn send_to(
        &self,
        producer: &DataProducer,
        message: sluice_media::DataMessage,
        consumers: Vec<(String, usize)>,
    ) -> Result<(), sluice_media::MediaError> {
        let mut by_worker: HashMap<usize, Vec<String>> = HashMap::new();
        for (id, worker) in consumers {
            by_worker.entry(worker).or_default().push(id);
        }
        for (worker, ids) in by_worker {
            let sender = if worker == producer.worker_index() {
                producer.clone()
            } else {
                match self.routers.piped_data_producer(producer.id(), worker) {
                    Some(piped) => piped,
                    None => continue,
                }
            };
            sender.send_to(message.clone(), ids)?;
        }
        Ok(())
    }

    /// The game logic panicked: the room takes nobody new and its peers are closed with the
    /// reason (they may join again once the room is gone; a new room gets a new game).
    fn close_for_game(&self, reason: &str) {
        tracing::error!(room = %self.id, %reason, "the game logic panicked; closing the room");
        let _ = self.failed.set(reason.to_owned());
        // A close frame's reason holds at most 123 bytes.
        let mut text = format!("game logic failed: {reason}");
        if text.len() > 120 {
            let mut end = 120;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        self.close_all_peers(crate::game::CLOSE_GAME_FAILED, &text);
    }

    /// Why the room's game logic failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    /// A peer's `sluice.position` data producer: the server reads it (never relays it) and sets
    /// the peer's position from each message (little-endian f32 x, y, z, then an optional yaw;
    /// other messages are ignored). Without interest management nothing reads it.
    async fn read_positions(
        self: &Arc<Self>,
        peer_id: &str,
        data_producer: &DataProducer,
    ) -> Result<(), SignalError> {
        if self.interest.is_none() {
            return Ok(());
        }
        let (messages, lease) = self
            .read_on_direct(data_producer.id(), data_producer.worker_index())
            .await?;
        let room = Arc::downgrade(self);
        let peer_id = peer_id.to_owned();
        tokio::spawn(async move {
            let _pipe = lease;
            // Ends when the data producer closes (its consumer closes with it).
            while let Some(message) = messages.recv().await {
                let Some(room) = room.upgrade() else { break };
                if let Some(position) = decode_position(&message.data) {
                    room.set_position(&peer_id, position);
                }
            }
        });
        Ok(())
    }

    /// After `peer` joined: consume what the others already produce (the cached actions).
    pub fn replay_for(self: &Arc<Self>, peer: &Arc<Peer>) {
        // The cached game actions, oldest first, then live ones (under the store's lock, so
        // none is missed or sent twice).
        self.store.replay_game(|cached| {
            for action in cached {
                if let Some(n) = action_notification(action) {
                    peer.notify(&n);
                }
            }
            peer.actions_replayed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let auto_consume = self.config.router.auto_consume;
        for action in self.store.cached() {
            match &*action {
                Action::ProducerCreated {
                    peer_id,
                    producer_id,
                    ..
                } if peer_id != &peer.id => {
                    if auto_consume {
                        self.spawn_consumer(peer.clone(), producer_id.clone());
                    } else if let Some(n) = producer_notification(&action) {
                        peer.notify(&n);
                    }
                }
                Action::DataProducerCreated {
                    peer_id,
                    data_producer_id,
                    label,
                    ..
                } if peer_id != &peer.id && self.relays_to_peers(label) => {
                    if auto_consume {
                        self.spawn_data_consumer(peer.clone(), data_producer_id.clone());
                    } else if let Some(n) = producer_notification(&action) {
                        peer.notify(&n);
                    }
                }
                _ => {}
            }
        }
        for (owner, id, label, protocol, app_data) in self.remote_data_producers() {
            if !self.relays_to_peers(&label) {
                continue;
            }
            if auto_consume {
                self.spawn_data_consumer(peer.clone(), id);
            } else {
                peer.notify(&ServerNotification::NewDataProducer(NewDataProducer {
                    peer_id: owner,
                    data_producer_id: id,
                    label,
                    protocol,
                    app_data: app_data_map(&app_data),
                }));
            }
        }
        for (owner, producer, app_data) in self.remote_producers() {
            if auto_consume {
                self.spawn_consumer(peer.clone(), producer.id().to_owned());
            } else {
                peer.notify(&ServerNotification::NewProducer(NewProducer {
                    peer_id: owner,
                    producer_id: producer.id().to_owned(),
                    kind: producer.kind(),
                    // Its consumer's `producerPaused` tells the truth.
                    paused: false,
                    app_data: app_data_map(&app_data),
                }));
            }
        }
        let game_producers: Vec<DataProducer> = self
            .game_producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for dp in game_producers {
            if auto_consume {
                self.spawn_data_consumer(peer.clone(), dp.id().to_owned());
            } else {
                peer.notify(&ServerNotification::NewDataProducer(NewDataProducer {
                    peer_id: SERVER_PEER.to_owned(),
                    data_producer_id: dp.id().to_owned(),
                    label: dp.label().to_owned(),
                    protocol: dp.protocol().to_owned(),
                    app_data: Default::default(),
                }));
            }
        }
    }

    /// Numbers a checked game action (`actions::check`, or the server's own), stores it and
    /// delivers it as `action` to the joined peers it is for (all but its sender, or those in
    /// `to`) that have had the cache replayed. Returns its sequence number.
    pub fn dispatch_game(&self, draft: GameDraft, bounds: CacheBounds) -> Option<u64> {
        let peers = self.peers();
        let action = self.store.dispatch_game(draft, bounds, |action| {
            let Action::Game { peer_id, to, .. } = &**action else {
                return;
            };
            let Some(n) = action_notification(action) else {
                return;
            };
            for p in &peers {
                let addressed = match to {
                    Some(to) => to.iter().any(|id| id == &p.id),
                    None => &p.id != peer_id,
                };
                if addressed
                    && p.is_joined()
                    && p.actions_replayed.load(std::sync::atomic::Ordering::SeqCst)
                {
                    p.notify(&n);
                }
            }
        })?;
        match &*action {
            Action::Game { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The server's own game action (Rust API): delivered like a peer's, `from: null`, with no
    /// sender or rate check. `cache`: `Some(key)` keeps it for late joiners (replacing the cached
    /// one of the same type and key), within the cache bounds of the rule matching its type.
    pub fn dispatch_server_action(
        &self,
        action_type: &str,
        payload: Value,
        cache: Option<Option<String>>,
        to: Option<Vec<String>>,
    ) -> Option<u64> {
        let per_room = self.config.limits.cached_actions_per_room;
        let per_type = self
            .config
            .action_rule(action_type)
            .map_or(per_room, |(_, r)| r.max_cached);
        let draft = GameDraft {
            peer_id: String::new(),
            action_type: action_type.to_owned(),
            payload,
            cache,
            to,
        };
        self.dispatch_game(draft, CacheBounds { per_type, per_room })
    }

    // ---- interest management ------------------------------------------------------------------

    fn with_interest<T>(&self, f: impl FnOnce(&mut Interest) -> T) -> Option<T> {
        let interest = self.interest.as_ref()?;
        // A poisoned lock means a panic while holding it; the state stays usable.
        let mut guard = interest.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut guard))
    }

    /// Sets (or with `None` clears) a player's position in the room's world, for interest
    /// management (Rust API: the game's server code owns positions). False if the room has no
    /// interest management, the peer has not joined, or a coordinate is not finite.
    pub fn set_position(&self, peer_id: &str, position: Option<Position>) -> bool {
        self.with_interest(|i| i.set_position(peer_id, position))
            .unwrap_or(false)
    }

    /// A player's position, if it has one.
    pub fn position(&self, peer_id: &str) -> Option<Position> {
        self.with_interest(|i| i.position(peer_id)).flatten()
    }

    /// Whether `subscriber` receives `publisher`'s `kind` now (always without interest
    /// management).
    fn hears(&self, subscriber: &str, publisher: &str, kind: MediaKind) -> bool {
        let sense = match kind {
            MediaKind::Audio => Sense::Audio,
            MediaKind::Video => Sense::Video,
        };
        self.with_interest(|i| i.is_on(subscriber, publisher, sense))
            .unwrap_or(true)
    }

    /// Whether `subscriber` hears `publisher` now, as interest management last decided (always
    /// without it).
    pub fn hears_now(&self, subscriber: &str, publisher: &str) -> bool {
        self.hears(subscriber, publisher, MediaKind::Audio)
    }

    /// Whether interest management holds `consumer_id` of `peer_id` paused.
    pub fn interest_paused(&self, peer_id: &str, consumer_id: &str) -> bool {
        self.store
            .read(|s| {
                s.peers
                    .get(peer_id)
                    .and_then(|p| p.consumers.get(consumer_id))
                    .is_some_and(|c| c.interest_paused)
            })
            .unwrap_or(false)
    }

    /// One evaluation of interest management: consumers of players that went out of range are
    /// paused (`consumerPaused` to their owner), those back in range resumed (unless their owner
    /// paused them; `consumerResumed` unless their producer is paused). Returns the number of
    /// consumers changed.
    pub async fn evaluate_interest(self: &Arc<Self>) -> usize {
        let Some((changes, layers)) = self.with_interest(|i| (i.evaluate(), i.video_layers()))
        else {
            return 0;
        };
        let mut changed = 0;
        for change in changes {
            let kind = match change.sense {
                Sense::Audio => MediaKind::Audio,
                Sense::Video => MediaKind::Video,
            };
            let consumers = self.consumers_between(&change.subscriber, &change.publisher, kind);
            for consumer in consumers {
                if self
                    .set_interest_paused(&change.subscriber, &consumer, !change.on)
                    .await
                {
                    changed += 1;
                }
            }
        }
        for change in layers {
            self.set_distance_layer(&change.subscriber, &change.publisher, change.spatial_layer)
                .await;
        }
        // Forget the layers of consumers gone since.
        let mut caps = self.layer_caps.lock().unwrap_or_else(|e| e.into_inner());
        if !caps.is_empty() {
            let objects = self.objects();
            caps.retain(|id, _| objects.consumers.contains_key(id));
            crate::shrink_when_sparse(&mut caps);
        }
        changed
    }

    /// `subscriber`'s consumers of `publisher`'s producers of `kind`.
    fn consumers_between(
        &self,
        subscriber: &str,
        publisher: &str,
        kind: MediaKind,
    ) -> Vec<Consumer> {
        let objects = self.objects();
        objects
            .consumers
            .values()
            .filter(|c| c.peer_id == subscriber && c.object.kind() == kind)
            .filter(|c| {
                objects
                    .producers
                    .get(c.object.producer_id())
                    .is_some_and(|p| p.peer_id == publisher)
            })
            .map(|c| c.object.clone())
            .collect()
    }

    /// Caps the spatial layer of `subscriber`'s video consumers of `publisher` (interest
    /// management, by distance).
    async fn set_distance_layer(&self, subscriber: &str, publisher: &str, spatial_layer: u8) {
        for consumer in self.consumers_between(subscriber, publisher, MediaKind::Video) {
            if consumer.r#type() == sluice_media::ProducerType::Simple {
                continue;
            }
            let layers = {
                let mut caps = self.layer_caps.lock().unwrap_or_else(|e| e.into_inner());
                let entry = caps.entry(consumer.id().to_owned()).or_default();
                entry.1 = spatial_layer;
                effective_layers(entry)
            };
            let _ = consumer.set_preferred_layers(layers).await;
        }
    }

    /// `setConsumerPreferredLayers`: the peer's own preference, under the distance cap of
    /// interest management if there is one.
    pub async fn set_preferred_layers(
        &self,
        consumer: &Consumer,
        layers: ConsumerLayers,
    ) -> Result<(), SignalError> {
        let effective = {
            let mut caps = self.layer_caps.lock().unwrap_or_else(|e| e.into_inner());
            let entry = caps.entry(consumer.id().to_owned()).or_default();
            entry.0 = Some(layers);
            effective_layers(entry)
        };
        consumer
            .set_preferred_layers(effective)
            .await
            .map_err(SignalError::from)
    }

    /// Pauses or resumes one consumer for interest management; false if nothing changed.
    async fn set_interest_paused(
        self: &Arc<Self>,
        peer_id: &str,
        consumer: &Consumer,
        paused: bool,
    ) -> bool {
        let flags = self.store.read(|s| {
            s.peers
                .get(peer_id)
                .and_then(|p| p.consumers.get(consumer.id()))
                .map(|c| (c.paused, c.interest_paused))
        });
        let Some(Some((owner_paused, was))) = flags else {
            return false;
        };
        if was == paused {
            return false;
        }
        self.dispatch(Action::ConsumerInterestChanged {
            peer_id: peer_id.to_owned(),
            consumer_id: consumer.id().to_owned(),
            paused,
        });
        let consumer_ref = ConsumerRef {
            consumer_id: consumer.id().to_owned(),
        };
        if paused {
            if !owner_paused {
                let _ = consumer.pause().await;
            }
            self.notify_peer(peer_id, ServerNotification::ConsumerPaused(consumer_ref));
        } else {
            if !owner_paused {
                let _ = consumer.resume().await;
            }
            if !consumer.producer_paused() {
                self.notify_peer(peer_id, ServerNotification::ConsumerResumed(consumer_ref));
            }
        }
        true
    }

    fn spawn_consumer(self: &Arc<Self>, peer: Arc<Peer>, producer_id: String) {
        let room = self.clone();
        tokio::spawn(async move {
            if let Err(e) = room.create_consumer(&peer, &producer_id).await {
                tracing::debug!(room = %room.id, peer = %peer.id, producer = %producer_id, error = %e.reason, "no consumer");
            }
        });
    }

    fn spawn_data_consumer(self: &Arc<Self>, peer: Arc<Peer>, id: String) {
        let room = self.clone();
        tokio::spawn(async move {
            if let Err(e) = room.create_data_consumer(&peer, &id).await {
                tracing::debug!(room = %room.id, peer = %peer.id, data_producer = %id, error = %e.reason, "no data consumer");
            }
        });
    }

    /// The transport `peer` receives on (with SCTP for a data consumer): one it created with
    /// `consuming` (given, or implied by giving neither flag), never a send-only one.
    fn consuming_transport(&self, peer_id: &str, sctp: bool) -> Option<WebRtcTransport> {
        self.objects()
            .transports
            .values()
            .find(|t| {
                t.peer_id == peer_id
                    && t.object.consuming
                    && (!sctp || t.object.transport.sctp_parameters().is_some())
            })
            .map(|t| t.object.transport.clone())
    }

    /// A paused consumer of `producer_id` for `peer` on its receive transport, registered and in
    /// the store, with the parameters that `newConsumer` (or the answer to `consume`) carries.
    /// Each refusal has its code: no subscribe grant 403, not joined 409, no such producer 404,
    /// its own producer or one it already consumes 409, no receive transport 409, the limit 429,
    /// capabilities that cannot receive it 422.
    async fn make_consumer(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        producer_id: &str,
    ) -> Result<(Consumer, NewConsumerRequest), SignalError> {
        if !peer.grants.subscribe {
            return Err(SignalError::forbidden("the token does not grant subscribe"));
        }
        if !peer.is_joined() {
            return Err(SignalError::conflict("not joined yet"));
        }
        let Some(caps) = peer.rtp_capabilities() else {
            return Err(SignalError::new(
                ErrorCode::Unsupported,
                "joined without rtpCapabilities: the peer cannot consume",
            ));
        };
        let (producer_peer, app_data, producer_worker) = {
            let objects = self.objects();
            let Some(p) = objects.producers.get(producer_id) else {
                return Err(SignalError::not_found(format!(
                    "no producer {}",
                    clip(producer_id)
                )));
            };
            if objects
                .consumers
                .values()
                .any(|c| c.peer_id == peer.id && c.object.producer_id() == producer_id)
            {
                return Err(SignalError::conflict(format!(
                    "already consuming producer {producer_id}"
                )));
            }
            (
                p.peer_id.clone(),
                p.app_data.clone(),
                p.object.worker_index(),
            )
        };
        if producer_peer == peer.id {
            return Err(SignalError::conflict(
                "a peer does not consume its own producer",
            ));
        }
        let _slot = Reservation::take(
            &self.objects(),
            &peer.id,
            2,
            &peer.reserved[0],
            self.config.limits.consumers_per_peer,
        )
        .ok_or_else(|| SignalError::limit("consumers per peer"))?;
        let Some(transport) = self.consuming_transport(&peer.id, false) else {
            return Err(SignalError::conflict(
                "no transport to receive on: none was created with consuming: true",
            ));
        };
        let source = self
            .routers
            .on(producer_worker)
            .unwrap_or_else(|| self.router.clone());
        if !source
            .can_consume(producer_id, &caps)
            .await
            .unwrap_or(false)
        {
            return Err(SignalError::new(
                ErrorCode::Unsupported,
                format!("the peer's rtpCapabilities cannot receive producer {producer_id}"),
            ));
        }
        // From another worker: through a pipe (made by the first consumer there).
        let lease = self
            .routers
            .pipe(producer_id, producer_worker, transport.worker_index())
            .await
            .map_err(SignalError::from)?;
        let consumer = transport
            .consume(ConsumerOptions::new(producer_id, caps))
            .await
            .map_err(SignalError::from)?;
        self.routers.hold(&peer.id, consumer.id(), lease);
        self.objects().consumers.insert(
            consumer.id().to_owned(),
            Owned {
                peer_id: peer.id.clone(),
                object: consumer.clone(),
                app_data: app_data.clone(),
            },
        );
        self.dispatch(Action::ConsumerCreated {
            peer_id: peer.id.clone(),
            transport_id: transport.id().to_owned(),
            consumer_id: consumer.id().to_owned(),
            producer_id: producer_id.to_owned(),
            producer_peer_id: producer_peer.clone(),
            kind: consumer.kind(),
            paused: true,
            producer_paused: consumer.producer_paused(),
            app_data: app_data.clone(),
        });
        if consumer.kind() == MediaKind::Video
            && consumer.r#type() != sluice_media::ProducerType::Simple
            && let Some(layer) = self
                .with_interest(|i| i.video_layer(&peer.id, &producer_peer))
                .filter(|l| *l != crate::interest::TOP_LAYER)
        {
            self.set_distance_layer(&peer.id, &producer_peer, layer)
                .await;
        }
        if !self.hears(&peer.id, &producer_peer, consumer.kind()) {
            self.dispatch(Action::ConsumerInterestChanged {
                peer_id: peer.id.clone(),
                consumer_id: consumer.id().to_owned(),
                paused: true,
            });
        }
        let params = NewConsumerRequest {
            peer_id: producer_peer,
            producer_id: producer_id.to_owned(),
            id: consumer.id().to_owned(),
            kind: consumer.kind(),
            rtp_parameters: consumer.rtp_parameters().clone(),
            r#type: match consumer.r#type() {
                sluice_media::ProducerType::Simple => ConsumerType::Simple,
                sluice_media::ProducerType::Simulcast => ConsumerType::Simulcast,
                sluice_media::ProducerType::Svc => ConsumerType::Svc,
            },
            app_data: app_data_map(&app_data),
            producer_paused: consumer.producer_paused(),
        };
        Ok((consumer, params))
    }

    /// mediasoup-demo's `createConsumer`: a paused consumer, `newConsumer` to its peer, resumed
    /// once the peer accepted it (closed if it refused or did not answer).
    async fn create_consumer(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        producer_id: &str,
    ) -> Result<(), SignalError> {
        let (consumer, params) = self.make_consumer(peer, producer_id).await?;
        // Queued under the objects' lock, where a consumer closing meanwhile is removed before its
        // `consumerClosed` is sent: the client gets `newConsumer` before `consumerClosed`, or
        // neither (never a consumer announced after it closed).
        let pending = {
            let objects = self.objects();
            if !objects.consumers.contains_key(consumer.id()) {
                return Ok(());
            }
            peer.start_request(ServerRequest::NewConsumer(params))?
        };
        match pending.answer(self.request_timeout()).await {
            Ok(_) => {
                let out_of_range = self.interest_paused(&peer.id, consumer.id());
                if !out_of_range {
                    consumer.resume().await.map_err(SignalError::from)?;
                }
                self.dispatch(Action::ConsumerResumed {
                    peer_id: peer.id.clone(),
                    consumer_id: consumer.id().to_owned(),
                });
                if out_of_range {
                    peer.notify(&ServerNotification::ConsumerPaused(ConsumerRef {
                        consumer_id: consumer.id().to_owned(),
                    }));
                }
                let score = consumer.score().clone();
                self.dispatch(Action::ConsumerScoreChanged {
                    peer_id: peer.id.clone(),
                    consumer_id: consumer.id().to_owned(),
                    score,
                });
                Ok(())
            }
            Err(e) => {
                let _ = consumer.close().await;
                self.objects().consumers.remove(consumer.id());
                self.dispatch(Action::ConsumerClosed {
                    peer_id: peer.id.clone(),
                    consumer_id: consumer.id().to_owned(),
                    notify: false,
                });
                Err(e)
            }
        }
    }

    /// `consume`: a consumer the peer asked for, answered with its parameters. It stays paused
    /// until the peer resumes it (`resumeConsumer`), once its side is set up.
    pub async fn consume(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        producer_id: &str,
    ) -> Result<NewConsumerRequest, SignalError> {
        let (_, params) = self.make_consumer(peer, producer_id).await?;
        Ok(params)
    }

    /// A data consumer of `data_producer_id` for `peer`, registered and in the store, with the
    /// parameters `newDataConsumer` (or the answer to `consumeData`) carries. Refusals as for
    /// [`Room::make_consumer`], and 403 for a label relayed to the server only.
    async fn make_data_consumer(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        data_producer_id: &str,
    ) -> Result<(DataConsumer, NewDataConsumerRequest), SignalError> {
        if !peer.grants.subscribe {
            return Err(SignalError::forbidden("the token does not grant subscribe"));
        }
        if !peer.is_joined() {
            return Err(SignalError::conflict("not joined yet"));
        }
        let (producer_peer, label, app_data, producer_worker) =
            {
                let objects = self.objects();
                let Some(p) = objects.data_producers.get(data_producer_id) else {
                    return Err(SignalError::not_found(format!(
                        "no data producer {}",
                        clip(data_producer_id)
                    )));
                };
                if objects.data_consumers.values().any(|c| {
                    c.peer_id == peer.id && c.object.data_producer_id() == data_producer_id
                }) {
                    return Err(SignalError::conflict(format!(
                        "already consuming data producer {data_producer_id}"
                    )));
                }
                (
                    p.peer_id.clone(),
                    p.object.label().to_owned(),
                    p.app_data.clone(),
                    p.object.worker_index(),
                )
            };
        if producer_peer == peer.id {
            return Err(SignalError::conflict(
                "a peer does not consume its own data producer",
            ));
        }
        let from_game = producer_peer == SERVER_PEER;
        if !from_game && !self.relays_to_peers(&label) {
            return Err(SignalError::forbidden(format!(
                "data label {label:?} is relayed to the server only"
            )));
        }
        if !peer.has_sctp() {
            return Err(SignalError::conflict("no SCTP association to receive on"));
        }
        let _slot = Reservation::take(
            &self.objects(),
            &peer.id,
            4,
            &peer.reserved[1],
            self.config.limits.data_consumers_per_peer,
        )
        .ok_or_else(|| SignalError::limit("data consumers per peer"))?;
        let Some(transport) = self.consuming_transport(&peer.id, true) else {
            return Err(SignalError::conflict(
                "no transport with SCTP to receive on: none was created with consuming: true",
            ));
        };
        let mut options = DataConsumerOptions::new(data_producer_id);
        let output = self
            .game
            .as_ref()
            .filter(|_| from_game)
            .and_then(|g| g.outputs.iter().find(|o| o.label == label));
        if let Some(output) = output {
            options.ordered = Some(output.ordered);
            options.max_retransmits = output.max_retransmits;
        } else if let Ok(Some(rule)) = self.config.data.rule(&label)
            && (rule.ordered.is_some()
                || rule.max_retransmits.is_some()
                || rule.max_packet_life_time.is_some())
        {
            options.ordered = rule.ordered;
            options.max_retransmits = rule.max_retransmits;
            options.max_packet_life_time = rule.max_packet_life_time;
        }
        let lease = self
            .routers
            .pipe_data(data_producer_id, producer_worker, transport.worker_index())
            .await
            .map_err(SignalError::from)?;
        let consumer = transport
            .consume_data(options)
            .await
            .map_err(SignalError::from)?;
        self.routers.hold(&peer.id, consumer.id(), lease);
        self.objects().data_consumers.insert(
            consumer.id().to_owned(),
            Owned {
                peer_id: peer.id.clone(),
                object: consumer.clone(),
                app_data: app_data.clone(),
            },
        );
        self.dispatch(Action::DataConsumerCreated {
            peer_id: peer.id.clone(),
            transport_id: transport.id().to_owned(),
            data_consumer_id: consumer.id().to_owned(),
            data_producer_id: data_producer_id.to_owned(),
            label: consumer.label().to_owned(),
            protocol: consumer.protocol().to_owned(),
            app_data: app_data.clone(),
        });
        let Some(stream) = consumer.sctp_stream_parameters().cloned() else {
            return Err(SignalError::internal("data consumer without a stream"));
        };
        let params = NewDataConsumerRequest {
            peer_id: (!from_game).then_some(producer_peer),
            data_producer_id: data_producer_id.to_owned(),
            id: consumer.id().to_owned(),
            sctp_stream_parameters: stream,
            label: consumer.label().to_owned(),
            protocol: consumer.protocol().to_owned(),
            app_data: app_data_map(&app_data),
        };
        Ok((consumer, params))
    }

    /// mediasoup-demo's `createDataConsumer`: a data consumer and `newDataConsumer` to its peer.
    async fn create_data_consumer(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        data_producer_id: &str,
    ) -> Result<(), SignalError> {
        let (consumer, params) = self.make_data_consumer(peer, data_producer_id).await?;
        // As for consumers: `newDataConsumer` before `dataConsumerClosed`, or neither.
        let pending = {
            let objects = self.objects();
            if !objects.data_consumers.contains_key(consumer.id()) {
                return Ok(());
            }
            peer.start_request(ServerRequest::NewDataConsumer(params))?
        };
        if let Err(e) = pending.answer(self.request_timeout()).await {
            let _ = consumer.close().await;
            self.objects().data_consumers.remove(consumer.id());
            self.dispatch(Action::DataConsumerClosed {
                peer_id: peer.id.clone(),
                data_consumer_id: consumer.id().to_owned(),
                notify: false,
            });
            return Err(e);
        }
        Ok(())
    }

    /// `consumeData`: a data consumer the peer asked for, answered with its parameters.
    pub async fn consume_data(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        data_producer_id: &str,
    ) -> Result<NewDataConsumerRequest, SignalError> {
        let (_, params) = self.make_data_consumer(peer, data_producer_id).await?;
        Ok(params)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.config.signaling.request_timeout_secs)
    }

    /// `peer` left: others get `peerClosed`, then its transports close (their consumers of its
    /// producers get `consumerClosed`). Returns false if another connection replaced it already.
    pub async fn leave(self: &Arc<Self>, peer: &Arc<Peer>) -> bool {
        if !self.remove_peer(peer) {
            return false;
        }
        self.dispatch(Action::PeerLeft {
            peer_id: peer.id.clone(),
            joined: peer.is_joined(),
        });
        let transports = self.objects().remove_peer(&peer.id);
        for t in transports {
            let _ = t.close().await;
        }
        true
    }

    /// A router event: the loudest audio producer of one of the room's routers changed; the
    /// peers hear of the loudest across its routers when that changed.
    pub fn on_router_event(self: &Arc<Self>, event: sluice_media::MediaEvent) {
        if let sluice_media::MediaEvent::ActiveSpeaker {
            router_id,
            producer_id,
            volume,
        } = event
            && let Some((producer_id, volume)) =
                self.routers.speaker(&router_id, producer_id, volume)
        {
            let peer_id = producer_id
                .and_then(|id| self.objects().producers.get(&id).map(|p| p.peer_id.clone()))
                .unwrap_or_default();
            self.dispatch(Action::ActiveSpeaker { peer_id, volume });
        }
    }

    /// Asks every peer to disconnect (shutdown, dead worker).
    pub fn close_all_peers(&self, code: u16, reason: &str) {
        for p in self.peers() {
            p.close(code, reason);
        }
    }
}

/// The `action` notification of a game action.
fn action_notification(action: &Action) -> Option<ServerNotification> {
    let Action::Game {
        peer_id,
        action_type,
        payload,
        seq,
        cache_key,
        ..
    } = action
    else {
        return None;
    };
    Some(ServerNotification::Action(ActionNotification {
        r#type: action_type.clone(),
        payload: payload.clone(),
        from: (!peer_id.is_empty()).then(|| peer_id.clone()),
        seq: *seq,
        cache_key: cache_key.clone(),
    }))
}

/// `newProducer` / `newDataProducer` for a producer's creation (routers without
/// `auto_consume`).
fn producer_notification(action: &Action) -> Option<ServerNotification> {
    match action {
        Action::ProducerCreated {
            peer_id,
            producer_id,
            kind,
            paused,
            app_data,
            ..
        } => Some(ServerNotification::NewProducer(NewProducer {
            peer_id: peer_id.clone(),
            producer_id: producer_id.clone(),
            kind: *kind,
            paused: *paused,
            app_data: app_data_map(app_data),
        })),
        Action::DataProducerCreated {
            peer_id,
            data_producer_id,
            label,
            protocol,
            app_data,
            ..
        } => Some(ServerNotification::NewDataProducer(NewDataProducer {
            peer_id: peer_id.clone(),
            data_producer_id: data_producer_id.clone(),
            label: label.clone(),
            protocol: protocol.clone(),
            app_data: app_data_map(app_data),
        })),
        _ => None,
    }
}

/// An object's appData as the protocol carries it (the room keeps it as a JSON object).
fn app_data_map(value: &Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    }
}

impl GameHost for Room {
    fn apply_game_effect(&self, effect: GameEffect) {
        self.carry_out(effect);
    }

    fn game_failed(&self, reason: &str) {
        self.close_for_game(reason);
    }

    fn position(&self, peer_id: &str) -> Option<Position> {
        Room::position(self, peer_id)
    }
}

/// A video consumer's layers: the peer's preference, and the distance cap.
#[derive(Debug, Clone, Copy)]
struct LayerCap(Option<ConsumerLayers>, u8);

impl Default for LayerCap {
    fn default() -> Self {
        LayerCap(None, crate::interest::TOP_LAYER)
    }
}

/// What a consumer should receive: the peer's preference (top layers if none), spatially no
/// higher than the distance allows.
fn effective_layers(cap: &LayerCap) -> ConsumerLayers {
    let wanted = cap.0.unwrap_or(ConsumerLayers {
        spatial_layer: u8::MAX,
        temporal_layer: u8::MAX,
    });
    ConsumerLayers {
        spatial_layer: wanted.spatial_layer.min(cap.1),
        temporal_layer: wanted.temporal_layer,
    }
}

/// The owner of the game's data producers in the room's objects: no peer (peer ids are never
/// empty).
pub const SERVER_PEER: &str = "";

/// The data-channel label on which players report their position to the server.
pub const POSITION_LABEL: &str = "sluice.position";

/// x, y, z as little-endian f32 (12 bytes; a yaw after them is allowed and unused): a position,
/// or, if all three are NaN, the player leaving the world (`Some(None)`). `None` for anything
/// else.
fn decode_position(data: &[u8]) -> Option<Option<Position>> {
    if data.len() != 12 && data.len() != 16 {
        return None;
    }
    let f = |i: usize| {
        let bytes: [u8; 4] = data.get(i..i + 4)?.try_into().ok()?;
        Some(f32::from_le_bytes(bytes))
    };
    let (x, y, z) = (f(0)?, f(4)?, f(8)?);
    if x.is_nan() && y.is_nan() && z.is_nan() {
        return Some(None);
    }
    Some(Some(Position::new(x, y, z)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_decode_from_12_or_16_little_endian_bytes_and_nothing_else() {
        let mut bytes = Vec::new();
        for v in [1.5f32, -2.0, 3.25, 0.5] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            decode_position(&bytes[..12]),
            Some(Some(Position::new(1.5, -2.0, 3.25)))
        );
        assert_eq!(
            decode_position(&bytes),
            Some(Some(Position::new(1.5, -2.0, 3.25)))
        );
        let nan: Vec<u8> = [f32::NAN; 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_position(&nan), Some(None), "leaves the world");
        for len in [0, 4, 11, 13, 15, 17] {
            let data = vec![0u8; len];
            assert_eq!(decode_position(&data), None, "{len} bytes");
        }
    }
}
