//! The room's action/state store, after iR Engine's Hyperflux.
//!
//! Every change to a room is a typed [`Action`], applied by one reducer ([`RoomState::apply`]) to
//! the room's state, keyed by peer and object id. Subscribers receive every action after it is
//! applied: the room derives peer notifications from them, and anyone can [`Store::subscribe`]
//! (metrics, the admin API, a game server, later cluster sync). Actions marked *cached*
//! ([`Action::is_cached`]) are kept while the thing they announce lives, and are replayed to late
//! joiners ([`Store::cached`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::Value;
use sluice_media::ortc::{DtlsParameters, IceCandidate, IceParameters, MediaKind, SctpParameters};
use sluice_media::{ConsumerLayers, ConsumerScore, ProducerScore};
use sluice_protocol::Device;
use tokio::sync::broadcast;

/// One change to a room.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Action {
    /// A peer's WebSocket was accepted (it may create transports before it joins).
    PeerConnected { peer_id: String },
    /// The peer joined: it is visible to the others. Cached.
    PeerJoined {
        peer_id: String,
        display_name: String,
        device: Device,
    },
    /// The peer left (socket closed, timed out, kicked or replaced); everything of it is gone.
    /// `joined`: whether the others knew it (they get `peerClosed`).
    PeerLeft { peer_id: String, joined: bool },
    DisplayNameChanged {
        peer_id: String,
        display_name: String,
        old_display_name: String,
    },
    TransportCreated {
        peer_id: String,
        transport_id: String,
        producing: bool,
        consuming: bool,
        sctp: bool,
        /// The server's side, as `createWebRtcTransport` answered it.
        ice_parameters: IceParameters,
        ice_candidates: Vec<IceCandidate>,
        dtls_parameters: DtlsParameters,
        #[serde(skip_serializing_if = "Option::is_none")]
        sctp_parameters: Option<SctpParameters>,
        app_data: Value,
    },
    /// `restartIce`: the transport's new ICE parameters.
    TransportIceRestarted {
        peer_id: String,
        transport_id: String,
        ice_parameters: IceParameters,
    },
    TransportConnected {
        peer_id: String,
        transport_id: String,
    },
    TransportStateChanged {
        peer_id: String,
        transport_id: String,
        ice_state: Option<String>,
        dtls_state: Option<String>,
    },
    TransportClosed {
        peer_id: String,
        transport_id: String,
    },
    /// Cached: late joiners consume it.
    ProducerCreated {
        peer_id: String,
        transport_id: String,
        producer_id: String,
        kind: MediaKind,
        producer_type: String,
        paused: bool,
        app_data: Value,
    },
    ProducerPaused {
        peer_id: String,
        producer_id: String,
    },
    ProducerResumed {
        peer_id: String,
        producer_id: String,
    },
    ProducerScoreChanged {
        peer_id: String,
        producer_id: String,
        score: Vec<ProducerScore>,
    },
    ProducerClosed {
        peer_id: String,
        producer_id: String,
    },
    ConsumerCreated {
        peer_id: String,
        transport_id: String,
        consumer_id: String,
        producer_id: String,
        producer_peer_id: String,
        kind: MediaKind,
        paused: bool,
        producer_paused: bool,
        /// The producer's, as `newConsumer` carries it.
        app_data: Value,
    },
    /// The consumer's owner paused or resumed it.
    ConsumerPaused {
        peer_id: String,
        consumer_id: String,
    },
    ConsumerResumed {
        peer_id: String,
        consumer_id: String,
    },
    /// Its producer paused or resumed (`consumerPaused` / `consumerResumed` to the owner).
    ConsumerProducerPaused {
        peer_id: String,
        consumer_id: String,
    },
    ConsumerProducerResumed {
        peer_id: String,
        consumer_id: String,
    },
    ConsumerScoreChanged {
        peer_id: String,
        consumer_id: String,
        score: ConsumerScore,
    },
    /// Interest management paused (`paused`) or resumed the consumer: its producer's player
    /// is out of (back in) range (`consumerPaused` / `consumerResumed` to the owner).
    ConsumerInterestChanged {
        peer_id: String,
        consumer_id: String,
        paused: bool,
    },
    ConsumerLayersChanged {
        peer_id: String,
        consumer_id: String,
        layers: Option<ConsumerLayers>,
    },
    /// The consumer closed by cascade (`consumerClosed` to the owner) or by its owner.
    ConsumerClosed {
        peer_id: String,
        consumer_id: String,
        notify: bool,
    },
    /// Cached: late joiners consume it.
    DataProducerCreated {
        peer_id: String,
        transport_id: String,
        data_producer_id: String,
        label: String,
        protocol: String,
        app_data: Value,
    },
    DataProducerClosed {
        peer_id: String,
        data_producer_id: String,
    },
    DataConsumerCreated {
        peer_id: String,
        transport_id: String,
        data_consumer_id: String,
        data_producer_id: String,
        label: String,
        protocol: String,
        /// The data producer's, as `newDataConsumer` carries it.
        app_data: Value,
    },
    DataConsumerClosed {
        peer_id: String,
        data_consumer_id: String,
        notify: bool,
    },
    /// The room's loudest peer changed (`activeSpeaker`); an empty `peer_id` is silence.
    ActiveSpeaker { peer_id: String, volume: Option<i8> },
    /// A game action (`dispatchAction`, or the server's own through [`Store::dispatch_game`]),
    /// numbered in the room; delivered as `action`, and replayed to late joiners if `cached`.
    Game {
        /// The sender; empty for the server's own.
        peer_id: String,
        action_type: String,
        payload: Value,
        /// 1, 2, 3… per room.
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_key: Option<String>,
        cached: bool,
        /// Delivered to these peers only (never cached).
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<Vec<String>>,
    },
    /// A recording of some of `peer_id`'s producers began (docs/recording.md); `file` is its
    /// path under the recording directory.
    RecordingStarted {
        peer_id: String,
        recording_id: String,
        producer_ids: Vec<String>,
        file: String,
    },
    /// The recording ended (`reason`: stopped, producerClosed, sizeLimit, failed, roomClosed,
    /// shutdown); its file holds `bytes`.
    RecordingStopped {
        peer_id: String,
        recording_id: String,
        reason: String,
        bytes: u64,
    },
    /// The egress bandwidth estimate toward a peer's transport (`downlinkBwe`).
    DownlinkBwe {
        peer_id: String,
        transport_id: String,
        desired_bitrate: u64,
        effective_desired_bitrate: u64,
        available_bitrate: u64,
    },
}

impl Action {
    /// Whether the action is kept for late joiners while what it announces lives.
    pub fn is_cached(&self) -> bool {
        matches!(
            self,
            Action::PeerJoined { .. }
                | Action::ProducerCreated { .. }
                | Action::DataProducerCreated { .. }
        )
    }

    /// The peer the action is about.
    pub fn peer_id(&self) -> &str {
        match self {
            Action::PeerConnected { peer_id }
            | Action::PeerJoined { peer_id, .. }
            | Action::PeerLeft { peer_id, .. }
            | Action::DisplayNameChanged { peer_id, .. }
            | Action::TransportCreated { peer_id, .. }
            | Action::TransportConnected { peer_id, .. }
            | Action::TransportStateChanged { peer_id, .. }
            | Action::TransportClosed { peer_id, .. }
            | Action::TransportIceRestarted { peer_id, .. }
            | Action::ProducerCreated { peer_id, .. }
            | Action::ProducerPaused { peer_id, .. }
            | Action::ProducerResumed { peer_id, .. }
            | Action::ProducerScoreChanged { peer_id, .. }
            | Action::ProducerClosed { peer_id, .. }
            | Action::ConsumerCreated { peer_id, .. }
            | Action::ConsumerPaused { peer_id, .. }
            | Action::ConsumerResumed { peer_id, .. }
            | Action::ConsumerProducerPaused { peer_id, .. }
            | Action::ConsumerProducerResumed { peer_id, .. }
            | Action::ConsumerScoreChanged { peer_id, .. }
            | Action::ConsumerInterestChanged { peer_id, .. }
            | Action::ConsumerLayersChanged { peer_id, .. }
            | Action::ConsumerClosed { peer_id, .. }
            | Action::DataProducerCreated { peer_id, .. }
            | Action::DataProducerClosed { peer_id, .. }
            | Action::DataConsumerCreated { peer_id, .. }
            | Action::DataConsumerClosed { peer_id, .. }
            | Action::DownlinkBwe { peer_id, .. }
            | Action::RecordingStarted { peer_id, .. }
            | Action::RecordingStopped { peer_id, .. }
            | Action::ActiveSpeaker { peer_id, .. }
            | Action::Game { peer_id, .. } => peer_id,
        }
    }
}

/// A WebRTC transport of a peer: its direction (mediasoup-client's send or receive transport, or
/// both for an older client), the server's ICE and DTLS parameters, its states and appData.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportInfo {
    pub producing: bool,
    pub consuming: bool,
    pub sctp: bool,
    pub connected: bool,
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: DtlsParameters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sctp_parameters: Option<SctpParameters>,
    pub app_data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ice_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtls_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bitrate: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerInfo {
    pub transport_id: String,
    pub kind: MediaKind,
    pub r#type: String,
    pub paused: bool,
    pub score: Vec<ProducerScore>,
    pub app_data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerInfo {
    pub transport_id: String,
    pub producer_id: String,
    pub producer_peer_id: String,
    pub kind: MediaKind,
    pub paused: bool,
    pub producer_paused: bool,
    /// Paused by interest management (its producer's player is out of range).
    pub interest_paused: bool,
    pub app_data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<ConsumerLayers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<ConsumerScore>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerInfo {
    pub transport_id: String,
    pub label: String,
    pub protocol: String,
    pub app_data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerInfo {
    pub transport_id: String,
    pub data_producer_id: String,
    pub label: String,
    pub protocol: String,
    pub app_data: Value,
}

/// One peer of a room and everything it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerState {
    pub joined: bool,
    pub display_name: String,
    pub device: Device,
    pub transports: BTreeMap<String, TransportInfo>,
    pub producers: BTreeMap<String, ProducerInfo>,
    pub consumers: BTreeMap<String, ConsumerInfo>,
    pub data_producers: BTreeMap<String, DataProducerInfo>,
    pub data_consumers: BTreeMap<String, DataConsumerInfo>,
}

/// A running recording (docs/recording.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingInfo {
    pub peer_id: String,
    pub producer_ids: Vec<String>,
    pub file: String,
}

/// The state of one room (the admin API's `GET /api/rooms/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomState {
    pub id: String,
    pub peers: BTreeMap<String, PeerState>,
    /// The loudest peer now, if anyone speaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_speaker: Option<String>,
    /// Actions applied so far.
    pub version: u64,
    /// The recordings running now, by id.
    pub recordings: BTreeMap<String, RecordingInfo>,
    /// Game actions cached for late joiners now…
    pub cached_actions: usize,
    /// …and those evicted by the cache's bounds so far.
    pub cached_actions_evicted: u64,
}

impl RoomState {
    pub fn new(id: &str) -> Self {
        RoomState {
            id: id.to_owned(),
            ..Default::default()
        }
    }

    /// The reducer: applies one action. Actions about unknown peers or objects change nothing.
    pub fn apply(&mut self, action: &Action) {
        self.version += 1;
        if let Action::PeerConnected { peer_id } = action {
            self.peers.entry(peer_id.clone()).or_default();
            return;
        }
        if let Action::PeerLeft { peer_id, .. } = action {
            self.peers.remove(peer_id);
            if self.active_speaker.as_ref() == Some(peer_id) {
                self.active_speaker = None;
            }
            return;
        }
        if let Action::ActiveSpeaker { peer_id, .. } = action {
            self.active_speaker = (!peer_id.is_empty()).then(|| peer_id.clone());
            return;
        }
        if let Action::Game { .. } = action {
            // The game's own state is the cache of its actions (`Store::dispatch_game`).
            return;
        }
        // Recordings are the room's, and outlive the peer whose media they hold.
        if let Action::RecordingStarted {
            peer_id,
            recording_id,
            producer_ids,
            file,
        } = action
        {
            self.recordings.insert(
                recording_id.clone(),
                RecordingInfo {
                    peer_id: peer_id.clone(),
                    producer_ids: producer_ids.clone(),
                    file: file.clone(),
                },
            );
            return;
        }
        if let Action::RecordingStopped { recording_id, .. } = action {
            self.recordings.remove(recording_id);
            return;
        }
        let Some(peer) = self.peers.get_mut(action.peer_id()) else {
            return;
        };
        match action {
            Action::PeerConnected { .. }
            | Action::PeerLeft { .. }
            | Action::ActiveSpeaker { .. }
            | Action::RecordingStarted { .. }
            | Action::RecordingStopped { .. }
            | Action::Game { .. } => {}
            Action::PeerJoined {
                display_name,
                device,
                ..
            } => {
                peer.joined = true;
                peer.display_name = display_name.clone();
                peer.device = device.clone();
            }
            Action::DisplayNameChanged { display_name, .. } => {
                peer.display_name = display_name.clone();
            }
            Action::TransportCreated {
                transport_id,
                producing,
                consuming,
                sctp,
                ice_parameters,
                ice_candidates,
                dtls_parameters,
                sctp_parameters,
                app_data,
                ..
            } => {
                peer.transports.insert(
                    transport_id.clone(),
                    TransportInfo {
                        producing: *producing,
                        consuming: *consuming,
                        sctp: *sctp,
                        connected: false,
                        ice_parameters: ice_parameters.clone(),
                        ice_candidates: ice_candidates.clone(),
                        dtls_parameters: dtls_parameters.clone(),
                        sctp_parameters: *sctp_parameters,
                        app_data: app_data.clone(),
                        ice_state: None,
                        dtls_state: None,
                        available_bitrate: None,
                    },
                );
            }
            Action::TransportIceRestarted {
                transport_id,
                ice_parameters,
                ..
            } => {
                if let Some(t) = peer.transports.get_mut(transport_id) {
                    t.ice_parameters = ice_parameters.clone();
                }
            }
            Action::TransportConnected { transport_id, .. } => {
                if let Some(t) = peer.transports.get_mut(transport_id) {
                    t.connected = true;
                }
            }
            Action::TransportStateChanged {
                transport_id,
                ice_state,
                dtls_state,
                ..
            } => {
                if let Some(t) = peer.transports.get_mut(transport_id) {
                    if ice_state.is_some() {
                        t.ice_state = ice_state.clone();
                    }
                    if dtls_state.is_some() {
                        t.dtls_state = dtls_state.clone();
                    }
                }
            }
            Action::TransportClosed { transport_id, .. } => {
                peer.transports.remove(transport_id);
                peer.producers
                    .retain(|_, p| &p.transport_id != transport_id);
                peer.consumers
                    .retain(|_, c| &c.transport_id != transport_id);
                peer.data_producers
                    .retain(|_, p| &p.transport_id != transport_id);
                peer.data_consumers
                    .retain(|_, c| &c.transport_id != transport_id);
            }
            Action::ProducerCreated {
                transport_id,
                producer_id,
                kind,
                producer_type,
                paused,
                app_data,
                ..
            } => {
                peer.producers.insert(
                    producer_id.clone(),
                    ProducerInfo {
                        transport_id: transport_id.clone(),
                        kind: *kind,
                        r#type: producer_type.clone(),
                        paused: *paused,
                        score: Vec::new(),
                        app_data: app_data.clone(),
                    },
                );
            }
            Action::ProducerPaused { producer_id, .. } => {
                if let Some(p) = peer.producers.get_mut(producer_id) {
                    p.paused = true;
                }
            }
            Action::ProducerResumed { producer_id, .. } => {
                if let Some(p) = peer.producers.get_mut(producer_id) {
                    p.paused = false;
                }
            }
            Action::ProducerScoreChanged {
                producer_id, score, ..
            } => {
                if let Some(p) = peer.producers.get_mut(producer_id) {
                    p.score = score.clone();
                }
            }
            Action::ProducerClosed { producer_id, .. } => {
                peer.producers.remove(producer_id);
            }
            Action::ConsumerCreated {
                transport_id,
                consumer_id,
                producer_id,
                producer_peer_id,
                kind,
                paused,
                producer_paused,
                app_data,
                ..
            } => {
                peer.consumers.insert(
                    consumer_id.clone(),
                    ConsumerInfo {
                        transport_id: transport_id.clone(),
                        producer_id: producer_id.clone(),
                        producer_peer_id: producer_peer_id.clone(),
                        kind: *kind,
                        paused: *paused,
                        producer_paused: *producer_paused,
                        interest_paused: false,
                        app_data: app_data.clone(),
                        layers: None,
                        score: None,
                    },
                );
            }
            Action::ConsumerPaused { consumer_id, .. }
            | Action::ConsumerResumed { consumer_id, .. } => {
                if let Some(c) = peer.consumers.get_mut(consumer_id) {
                    c.paused = matches!(action, Action::ConsumerPaused { .. });
                }
            }
            Action::ConsumerProducerPaused { consumer_id, .. }
            | Action::ConsumerProducerResumed { consumer_id, .. } => {
                if let Some(c) = peer.consumers.get_mut(consumer_id) {
                    c.producer_paused = matches!(action, Action::ConsumerProducerPaused { .. });
                }
            }
            Action::ConsumerScoreChanged {
                consumer_id, score, ..
            } => {
                if let Some(c) = peer.consumers.get_mut(consumer_id) {
                    c.score = Some(score.clone());
                }
            }
            Action::ConsumerInterestChanged {
                consumer_id,
                paused,
                ..
            } => {
                if let Some(c) = peer.consumers.get_mut(consumer_id) {
                    c.interest_paused = *paused;
                }
            }
            Action::ConsumerLayersChanged {
                consumer_id,
                layers,
                ..
            } => {
                if let Some(c) = peer.consumers.get_mut(consumer_id) {
                    c.layers = *layers;
                }
            }
            Action::ConsumerClosed { consumer_id, .. } => {
                peer.consumers.remove(consumer_id);
            }
            Action::DataProducerCreated {
                transport_id,
                data_producer_id,
                label,
                protocol,
                app_data,
                ..
            } => {
                peer.data_producers.insert(
                    data_producer_id.clone(),
                    DataProducerInfo {
                        transport_id: transport_id.clone(),
                        label: label.clone(),
                        protocol: protocol.clone(),
                        app_data: app_data.clone(),
                    },
                );
            }
            Action::DataProducerClosed {
                data_producer_id, ..
            } => {
                peer.data_producers.remove(data_producer_id);
            }
            Action::DataConsumerCreated {
                transport_id,
                data_consumer_id,
                data_producer_id,
                label,
                protocol,
                app_data,
                ..
            } => {
                peer.data_consumers.insert(
                    data_consumer_id.clone(),
                    DataConsumerInfo {
                        transport_id: transport_id.clone(),
                        data_producer_id: data_producer_id.clone(),
                        label: label.clone(),
                        protocol: protocol.clone(),
                        app_data: app_data.clone(),
                    },
                );
            }
            Action::DataConsumerClosed {
                data_consumer_id, ..
            } => {
                peer.data_consumers.remove(data_consumer_id);
            }
            Action::DownlinkBwe {
                transport_id,
                available_bitrate,
                ..
            } => {
                if let Some(t) = peer.transports.get_mut(transport_id) {
                    t.available_bitrate = Some(*available_bitrate);
                }
            }
        }
    }

    /// Number of (peers, transports, producers, consumers, data producers, data consumers).
    pub fn counts(&self) -> [usize; 6] {
        let mut c = [self.peers.len(), 0, 0, 0, 0, 0];
        for p in self.peers.values() {
            c[1] += p.transports.len();
            c[2] += p.producers.len();
            c[3] += p.consumers.len();
            c[4] += p.data_producers.len();
            c[5] += p.data_consumers.len();
        }
        c
    }
}

/// A game action before the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct GameDraft {
    /// The sender; empty for the server's own.
    pub peer_id: String,
    pub action_type: String,
    pub payload: Value,
    /// Keep it for late joiners, replacing the cached one of the same type and key if any.
    pub cache: Option<Option<String>>,
    pub to: Option<Vec<String>>,
}

/// The bounds of the game-action cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    /// Cached actions of the draft's type the room keeps at most.
    pub per_type: usize,
    /// Cached actions the room keeps at most, all types.
    pub per_room: usize,
}

/// What the store guards: the state, the cached media actions, the cached game actions.
#[derive(Debug)]
struct Inner {
    state: RoomState,
    cached: Vec<Arc<Action>>,
    /// Cached game actions, in sequence order (a replaced one moves to the end with its new
    /// number).
    game: VecDeque<Arc<Action>>,
    game_seq: u64,
}

/// A room's state, its cached actions and its subscribers.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    /// Made by the first [`Store::subscribe`]: a tokio broadcast channel allocates all its slots
    /// up front (≈160 KiB for 4096), which every room paid even though most have no subscriber.
    subscribers: OnceLock<broadcast::Sender<Arc<Action>>>,
}

/// Actions a subscriber may fall behind by before it misses the oldest.
const SUBSCRIBER_CAPACITY: usize = 4096;

impl Store {
    pub fn new(room_id: &str) -> Self {
        Store {
            inner: Mutex::new(Inner {
                state: RoomState::new(room_id),
                cached: Vec::new(),
                game: VecDeque::new(),
                game_seq: 0,
            }),
            subscribers: OnceLock::new(),
        }
    }

    /// Applies `action`, updates the cache and hands the action to subscribers. Returns it.
    pub fn dispatch(&self, action: Action) -> Arc<Action> {
        let action = Arc::new(action);
        if let Ok(mut inner) = self.inner.lock() {
            let Inner { state, cached, .. } = &mut *inner;
            state.apply(&action);
            prune_cache(cached, &action);
            if action.is_cached() {
                cached.push(action.clone());
            }
        }
        if let Some(subscribers) = self.subscribers.get() {
            let _ = subscribers.send(action.clone());
        }
        action
    }

    /// Every action from now on (a lagging subscriber misses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Action>> {
        self.subscribers
            .get_or_init(|| broadcast::channel(SUBSCRIBER_CAPACITY).0)
            .subscribe()
    }

    /// The cached actions, oldest first: what a late joiner replays.
    pub fn cached(&self) -> Vec<Arc<Action>> {
        self.inner
            .lock()
            .map(|i| i.cached.clone())
            .unwrap_or_default()
    }

    /// A copy of the state.
    pub fn state(&self) -> RoomState {
        self.inner
            .lock()
            .map(|i| i.state.clone())
            .unwrap_or_default()
    }

    /// Reads the state without copying it.
    pub fn read<T>(&self, f: impl FnOnce(&RoomState) -> T) -> Option<T> {
        self.inner.lock().ok().map(|i| f(&i.state))
    }

    /// Numbers a game action (one more than the room's last), applies it, caches it if asked
    /// (replacing the cached one of the same type and key; beyond `bounds` the oldest of its
    /// type, then the room's oldest, is evicted and counted), and calls `deliver` with it while
    /// still holding the store's lock, so that deliveries and [`Store::replay_game`] are in
    /// sequence order. Then hands it to subscribers.
    pub fn dispatch_game(
        &self,
        draft: GameDraft,
        bounds: CacheBounds,
        deliver: impl FnOnce(&Arc<Action>),
    ) -> Option<Arc<Action>> {
        let action = {
            let mut inner = self.inner.lock().ok()?;
            let Inner {
                state,
                game,
                game_seq,
                ..
            } = &mut *inner;
            *game_seq += 1;
            let cached = draft.cache.is_some();
            let cache_key = draft.cache.clone().flatten();
            let action = Arc::new(Action::Game {
                peer_id: draft.peer_id,
                action_type: draft.action_type,
                payload: draft.payload,
                seq: *game_seq,
                cache_key: cache_key.clone(),
                cached,
                to: draft.to,
            });
            state.apply(&action);
            if let Action::Game { action_type, .. } = &*action
                && cached
            {
                if let Some(key) = &cache_key {
                    game.retain(|a| !is_game(a, action_type, Some(key)));
                }
                game.push_back(action.clone());
                let of_type = game
                    .iter()
                    .filter(|a| is_game(a, action_type, None))
                    .count();
                if of_type > bounds.per_type
                    && let Some(oldest) = game.iter().position(|a| is_game(a, action_type, None))
                {
                    game.remove(oldest);
                    state.cached_actions_evicted += 1;
                }
                while game.len() > bounds.per_room {
                    game.pop_front();
                    state.cached_actions_evicted += 1;
                }
                state.cached_actions = game.len();
            }
            deliver(&action);
            action
        };
        if let Some(subscribers) = self.subscribers.get() {
            let _ = subscribers.send(action.clone());
        }
        Some(action)
    }

    /// Calls `replay` with the cached game actions, oldest first, under the store's lock (no
    /// game action is dispatched meanwhile).
    pub fn replay_game(&self, replay: impl FnOnce(&mut dyn Iterator<Item = &Arc<Action>>)) {
        if let Ok(inner) = self.inner.lock() {
            replay(&mut inner.game.iter());
        }
    }
}

/// Whether `a` is a game action of `action_type` (and, if given, of `cache_key`).
fn is_game(a: &Action, action_type: &str, cache_key: Option<&String>) -> bool {
    matches!(a, Action::Game { action_type: t, cache_key: k, .. }
        if t == action_type && (cache_key.is_none() || k.as_ref() == cache_key))
}

/// Drops cached actions whose subject `action` ends.
fn prune_cache(cached: &mut Vec<Arc<Action>>, action: &Action) {
    match action {
        Action::PeerLeft { peer_id, .. } => cached.retain(|a| a.peer_id() != peer_id),
        Action::ProducerClosed { producer_id, .. } => cached.retain(|a| {
            !matches!(&**a, Action::ProducerCreated { producer_id: p, .. } if p == producer_id)
        }),
        Action::DataProducerClosed {
            data_producer_id, ..
        } => cached.retain(|a| {
            !matches!(&**a, Action::DataProducerCreated { data_producer_id: p, .. } if p == data_producer_id)
        }),
        Action::TransportClosed { transport_id, .. } => cached.retain(|a| match &**a {
            Action::ProducerCreated { transport_id: t, .. }
            | Action::DataProducerCreated { transport_id: t, .. } => t != transport_id,
            _ => true,
        }),
        Action::DisplayNameChanged {
            peer_id,
            display_name,
            ..
        } => {
            for a in cached.iter_mut() {
                if let Action::PeerJoined {
                    peer_id: p,
                    device,
                    ..
                } = &**a
                    && p == peer_id
                {
                    *a = Arc::new(Action::PeerJoined {
                        peer_id: p.clone(),
                        display_name: display_name.clone(),
                        device: device.clone(),
                    });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(store: &Store, peer: &str) {
        store.dispatch(Action::PeerConnected {
            peer_id: peer.into(),
        });
        store.dispatch(Action::PeerJoined {
            peer_id: peer.into(),
            display_name: peer.to_uppercase(),
            device: Device::default(),
        });
    }

    fn producer(peer: &str, id: &str) -> Action {
        Action::ProducerCreated {
            peer_id: peer.into(),
            transport_id: format!("t-{peer}"),
            producer_id: id.into(),
            kind: MediaKind::Video,
            producer_type: "simple".into(),
            paused: false,
            app_data: Value::Null,
        }
    }

    fn transport(peer: &str, producing: bool, consuming: bool) -> Action {
        Action::TransportCreated {
            peer_id: peer.into(),
            transport_id: format!("t-{peer}"),
            producing,
            consuming,
            sctp: true,
            ice_parameters: IceParameters {
                username_fragment: "ufrag".into(),
                password: "pwd".into(),
                ice_lite: Some(true),
            },
            ice_candidates: Vec::new(),
            dtls_parameters: DtlsParameters {
                role: None,
                fingerprints: Vec::new(),
            },
            sctp_parameters: None,
            app_data: Value::Null,
        }
    }

    fn game(peer: &str, action_type: &str, cache: Option<&str>) -> GameDraft {
        GameDraft {
            peer_id: peer.into(),
            action_type: action_type.into(),
            payload: Value::Null,
            cache: cache.map(|k| (!k.is_empty()).then(|| k.to_owned())),
            to: None,
        }
    }

    /// (seq, type, key) of the cached game actions, oldest first.
    fn game_cache(store: &Store) -> Vec<(u64, String, Option<String>)> {
        let mut out = Vec::new();
        store.replay_game(|cached| {
            for a in cached {
                if let Action::Game {
                    seq,
                    action_type,
                    cache_key,
                    ..
                } = &**a
                {
                    out.push((*seq, action_type.clone(), cache_key.clone()));
                }
            }
        });
        out
    }

    #[test]
    fn the_game_cache_replaces_by_key_and_evicts_the_oldest_of_a_type_then_of_the_room() {
        let store = Store::new("r1");
        let bounds = CacheBounds {
            per_type: 2,
            per_room: 3,
        };
        let mut delivered = Vec::new();
        for draft in [
            game("a", "move", Some("red")),  // 1
            game("a", "move", Some("blue")), // 2
            game("a", "move", Some("red")),  // 3 replaces 1
            game("a", "chat", None),         // 4, not cached
            game("a", "move", Some("")),     // 5, no key: the type's oldest (2) goes
            game("", "score", Some("a")),    // 6
            game("", "score", Some("b")),    // 7: the room's oldest (3) goes
        ] {
            store
                .dispatch_game(draft, bounds, |a| {
                    if let Action::Game { seq, .. } = &**a {
                        delivered.push(*seq);
                    }
                })
                .unwrap();
        }
        assert_eq!(delivered, [1, 2, 3, 4, 5, 6, 7]);
        let key = |k: &str| Some(k.to_owned());
        assert_eq!(
            game_cache(&store),
            [
                (5, "move".to_owned(), None),
                (6, "score".to_owned(), key("a")),
                (7, "score".to_owned(), key("b")),
            ]
        );
        let state = store.state();
        assert_eq!((state.cached_actions, state.cached_actions_evicted), (3, 2));
        // Game actions are not the peers' state.
        assert_eq!(state.counts(), [0, 0, 0, 0, 0, 0]);
        assert_eq!(state.version, 7);
    }

    #[test]
    fn actions_build_the_state_keyed_by_peer_and_object() {
        let store = Store::new("r1");
        joined(&store, "alice");
        store.dispatch(transport("alice", true, false));
        store.dispatch(producer("alice", "p1"));
        store.dispatch(Action::ProducerPaused {
            peer_id: "alice".into(),
            producer_id: "p1".into(),
        });
        let state = store.state();
        let alice = &state.peers["alice"];
        assert!(alice.joined);
        assert_eq!(alice.display_name, "ALICE");
        assert!(alice.producers["p1"].paused);
        assert_eq!(state.counts(), [1, 1, 1, 0, 0, 0]);
        assert_eq!(state.version, 5);
    }

    #[test]
    fn closing_a_transport_removes_what_was_on_it() {
        let store = Store::new("r1");
        joined(&store, "bob");
        store.dispatch(transport("bob", true, true));
        store.dispatch(producer("bob", "p1"));
        store.dispatch(Action::TransportClosed {
            peer_id: "bob".into(),
            transport_id: "t-bob".into(),
        });
        assert_eq!(store.state().counts(), [1, 0, 0, 0, 0, 0]);
        assert!(
            store
                .cached()
                .iter()
                .all(|a| !matches!(&**a, Action::ProducerCreated { .. }))
        );
    }

    #[test]
    fn cached_actions_replay_what_lives_and_forget_what_ended() {
        let store = Store::new("r1");
        joined(&store, "alice");
        joined(&store, "bob");
        store.dispatch(producer("alice", "p1"));
        store.dispatch(producer("alice", "p2"));
        store.dispatch(producer("bob", "p3"));
        store.dispatch(Action::ProducerClosed {
            peer_id: "alice".into(),
            producer_id: "p1".into(),
        });
        store.dispatch(Action::PeerLeft {
            peer_id: "bob".into(),
            joined: true,
        });
        store.dispatch(Action::DisplayNameChanged {
            peer_id: "alice".into(),
            display_name: "Al".into(),
            old_display_name: "ALICE".into(),
        });
        let cached = store.cached();
        assert_eq!(cached.len(), 2);
        assert!(
            matches!(&*cached[0], Action::PeerJoined { display_name, .. } if display_name == "Al")
        );
        assert!(
            matches!(&*cached[1], Action::ProducerCreated { producer_id, .. } if producer_id == "p2")
        );
        assert_eq!(store.state().counts()[0], 1);
    }

    #[test]
    fn subscribers_receive_every_action_in_order() {
        let store = Store::new("r1");
        let mut rx = store.subscribe();
        joined(&store, "carol");
        store.dispatch(Action::PeerLeft {
            peer_id: "carol".into(),
            joined: true,
        });
        let mut seen = Vec::new();
        while let Ok(a) = rx.try_recv() {
            seen.push(a);
        }
        assert_eq!(seen.len(), 3);
        assert!(matches!(&*seen[2], Action::PeerLeft { .. }));
        assert_eq!(store.state().counts(), [0; 6]);
    }

    #[test]
    fn actions_about_unknown_peers_change_nothing() {
        let mut state = RoomState::new("r");
        state.apply(&producer("ghost", "p"));
        assert_eq!(state.counts(), [0; 6]);
    }

    #[test]
    fn actions_serialise_with_their_type() {
        let a = Action::PeerLeft {
            peer_id: "x".into(),
            joined: false,
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"type":"PeerLeft","peerId":"x","joined":false})
        );
    }
}
