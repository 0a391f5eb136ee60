//! This node in a cluster of sluice nodes whose directory is Redis (`[cluster] redis`, issue 15,
//! docs/cluster.md): nodes register with a TTL heartbeat and their load, each room's peers are
//! announced by their node from the room's store actions, and every node learns the others'
//! peers of the rooms it hosts (`join`'s answer, `newPeer`, `peerClosed`). A node that stops
//! heartbeating is noticed by the others within its TTL: its peers are removed everywhere.
//!
//! Redis keys:
//!
//! | key | type | what |
//! |---|---|---|
//! | `sluice:nodes` | set | node ids that registered and were not removed |
//! | `sluice:node:{id}` | string, with a TTL | the node's [`NodeInfo`] (JSON), renewed each heartbeat |
//! | `sluice:node:{id}:rooms` | set | rooms the node announced peers in |
//! | `sluice:room:{room}:peers` | hash | peer id → [`RemotePeer`] (JSON): its node, name, device |
//!
//! and one channel, `sluice:events`, on which each [`Event`] goes. Every value a node writes —
//! node records, peer entries, events — is signed with the cluster's secret (HMAC-SHA256, see
//! [`seal`]): a node ignores what it cannot verify, so a Redis client without the secret cannot
//! add peers to rooms or send new peers to a URL of its choosing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sluice_protocol::{Device, PeerInfo};

use crate::config::ClusterConfig;
use crate::instance::Instance;
use crate::room::Room;
use crate::store::Action;

/// The channel every node publishes its events on.
pub const EVENTS: &str = "sluice:events";
/// The set of registered nodes.
pub const NODES: &str = "sluice:nodes";
/// How long one Redis call may take before the node gives up on it (and logs).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

fn node_key(id: &str) -> String {
    format!("sluice:node:{id}")
}

fn node_rooms_key(id: &str) -> String {
    format!("sluice:node:{id}:rooms")
}

fn room_peers_key(room: &str) -> String {
    format!("sluice:room:{room}:peers")
}

/// Why the cluster could not be joined or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot encode or decode cluster data: {0}")]
    Json(#[from] serde_json::Error),
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// The URL its clients use.
    pub url: String,
    /// Datagrams per second through its workers.
    pub load: u64,
    pub peers: usize,
}

/// A peer of a room as its node announced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemotePeer {
    pub node: String,
    pub display_name: String,
    #[serde(default)]
    pub device: Device,
}

/// What a node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    PeerJoined {
        room: String,
        peer_id: String,
        peer: RemotePeer,
    },
    /// `node`: the node the peer was on (another node may publish it when that one is lost).
    #[serde(rename_all = "camelCase")]
    PeerLeft {
        room: String,
        peer_id: String,
        node: String,
    },
}

/// Where a new peer of a room should connect (`GET /api/place`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    pub node_id: String,
    pub url: String,
}

/// This node's membership of the cluster.
pub struct Cluster {
    pub node_id: String,
    pub node_url: String,
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    key: hmac::Key,
    heartbeat: Duration,
    ttl: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Runs one Redis call with [`CALL_TIMEOUT`].
async fn call<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| ClusterError::Timeout(CALL_TIMEOUT))?
        .map_err(ClusterError::from)
}

impl Cluster {
    /// Connects to the cluster's Redis as node `node_id`, reachable by clients at `node_url`.
    /// `config.redis` and `config.secret` are set (the configuration was validated).
    pub async fn connect(
        config: &ClusterConfig,
        node_id: String,
        node_url: String,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let url = config.redis.clone().unwrap_or_default();
        let client = redis::Client::open(url)?;
        let conn = call(client.get_connection_manager()).await?;
        let secret = config.secret.clone().unwrap_or_default();
        Ok(Arc::new(Cluster {
            node_id,
            node_url,
            client,
            conn,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            heartbeat: Duration::from_secs(config.heartbeat_secs),
            ttl: Duration::from_secs(config.node_ttl_secs),
        }))
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }

    async fn publish(&self, event: &Event) -> Result<(), ClusterError> {
        let sealed = seal(&self.key, event)?;
        call(self.conn().publish::<_, _, ()>(EVENTS, sealed)).await
    }

    /// Registers this node (or renews its registration) with its load.
    async fn register(&self, load: u64, peers: usize) -> Result<(), ClusterError> {
        let info = NodeInfo {
            id: self.node_id.clone(),
            url: self.node_url.clone(),
            load,
            peers,
        };
        let sealed = seal(&self.key, &info)?;
        let mut conn = self.conn();
        call(conn.set_ex::<_, _, ()>(node_key(&self.node_id), sealed, self.ttl.as_secs())).await?;
        call(conn.sadd::<_, _, ()>(NODES, &self.node_id)).await
    }

    /// The live nodes (registered, TTL not expired), and the ids of the registered ones that
    /// stopped.
    async fn nodes(&self) -> Result<(Vec<NodeInfo>, Vec<String>), ClusterError> {
        let mut conn = self.conn();
        let ids: Vec<String> = call(conn.smembers(NODES)).await?;
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let values: Vec<Option<String>> = call(conn.mget(&keys)).await?;
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        for (id, value) in ids.into_iter().zip(values) {
            match value {
                // A record that does not verify is not a live node of this cluster.
                Some(v) => live.extend(open::<NodeInfo>(&self.key, &v).filter(|n| n.id == id)),
                None => gone.push(id),
            }
        }
        Ok((live, gone))
    }

    /// The peers of `room` announced by nodes (this one included).
    pub async fn room_peers(&self, room: &str) -> Result<Vec<(String, RemotePeer)>, ClusterError> {
        let all: HashMap<String, String> = call(self.conn().hgetall(room_peers_key(room))).await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, v)| Some((id, open(&self.key, &v)?)))
            .collect())
    }

    /// Where a new peer of `room` should connect: the room's least-loaded live node, else the
    /// least-loaded live node (this one when Redis cannot tell).
    pub async fn place(&self, room: &str) -> Place {
        let here = Place {
            node_id: self.node_id.clone(),
            url: self.node_url.clone(),
        };
        let Ok((live, _)) = self.nodes().await else {
            return here;
        };
        let in_room: HashSet<String> = self
            .room_peers(room)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| p.node)
            .collect();
        let least = |nodes: &mut dyn Iterator<Item = &NodeInfo>| {
            nodes
                .min_by_key(|n| (n.load, n.peers, n.id.clone()))
                .map(|n| Place {
                    node_id: n.id.clone(),
                    url: n.url.clone(),
                })
        };
        least(&mut live.iter().filter(|n| in_room.contains(&n.id)))
            .or_else(|| least(&mut live.iter()))
            .unwrap_or(here)
    }

    /// Follows `room`, just opened here: learns the peers other nodes announced in it, then
    /// announces this node's peers of it as its store records them (until the room closes).
    pub async fn follow(self: &Arc<Self>, room: &Arc<Room>) {
        let actions = room.store.subscribe();
        match self.room_peers(&room.id).await {
            Ok(peers) => {
                for (peer_id, peer) in peers {
                    if peer.node != self.node_id {
                        room.remote_peer_joined(&peer_id, &peer);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(room = %room.id, error = %e, "cannot read the room's peers on other nodes")
            }
        }
        let (cluster, room_id) = (self.clone(), room.id.clone());
        let weak = Arc::downgrade(room);
        tokio::spawn(async move { cluster.announce(room_id, weak, actions).await });
    }

    /// Announces the peers joining and leaving `room_id` here.
    async fn announce(
        self: Arc<Self>,
        room_id: String,
        room: Weak<Room>,
        mut actions: tokio::sync::broadcast::Receiver<Arc<Action>>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let action = match actions.recv().await {
                Ok(a) => a,
                Err(RecvError::Closed) => break,
                Err(RecvError::Lagged(_)) => {
                    // Some actions were missed: announce the room's peers as they are now.
                    let Some(room) = room.upgrade() else { break };
                    if let Err(e) = self.resync(&room).await {
                        tracing::warn!(room = %room_id, error = %e, "cannot resync the room's peers");
                    }
                    continue;
                }
            };
            let done = match &*action {
                Action::PeerJoined {
                    peer_id,
                    display_name,
                    device,
                } => {
                    self.peer_joined(&room_id, peer_id, display_name, device)
                        .await
                }
                Action::PeerLeft {
                    peer_id,
                    joined: true,
                } => self
                    .peer_left(&room_id, peer_id, &self.node_id)
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = done {
                tracing::warn!(room = %room_id, error = %e, "cannot announce a peer to the cluster");
            }
        }
    }

    async fn peer_joined(
        &self,
        room: &str,
        peer_id: &str,
        display_name: &str,
        device: &Device,
    ) -> Result<(), ClusterError> {
        let peer = RemotePeer {
            node: self.node_id.clone(),
            display_name: display_name.to_owned(),
            device: device.clone(),
        };
        let mut conn = self.conn();
        let sealed = seal(&self.key, &peer)?;
        call(conn.hset::<_, _, _, ()>(room_peers_key(room), peer_id, sealed)).await?;
        call(conn.sadd::<_, _, ()>(node_rooms_key(&self.node_id), room)).await?;
        self.publish(&Event::PeerJoined {
            room: room.to_owned(),
            peer_id: peer_id.to_owned(),
            peer,
        })
        .await
    }

    /// Removes `peer_id` of `node` from `room` and tells every node, unless another node
    /// removed it first. Returns whether this call removed it.
    async fn peer_left(&self, room: &str, peer_id: &str, node: &str) -> Result<bool, ClusterError> {
        let mut conn = self.conn();
        let key = room_peers_key(room);
        let entry: Option<String> = call(conn.hget(&key, peer_id)).await?;
        let of_node = entry
            .and_then(|v| open::<RemotePeer>(&self.key, &v))
            .is_some_and(|p| p.node == node);
        if !of_node {
            return Ok(false);
        }
        let removed: i64 = call(conn.hdel(&key, peer_id)).await?;
        if removed == 0 {
            return Ok(false);
        }
        self.publish(&Event::PeerLeft {
            room: room.to_owned(),
            peer_id: peer_id.to_owned(),
            node: node.to_owned(),
        })
        .await?;
        Ok(true)
    }

    /// Makes Redis hold exactly this node's joined peers of `room`.
    async fn resync(&self, room: &Arc<Room>) -> Result<(), ClusterError> {
        let here: HashMap<String, (String, Device)> = room
            .store
            .read(|s| {
                s.peers
                    .iter()
                    .filter(|(_, p)| p.joined)
                    .map(|(id, p)| (id.clone(), (p.display_name.clone(), p.device.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for (peer_id, peer) in self.room_peers(&room.id).await? {
            if peer.node == self.node_id && !here.contains_key(&peer_id) {
                self.peer_left(&room.id, &peer_id, &self.node_id).await?;
            }
        }
        for (peer_id, (name, device)) in here {
            self.peer_joined(&room.id, &peer_id, &name, &device).await?;
        }
        Ok(())
    }

    /// Removes every peer `node` announced, in every room, telling the nodes.
    async fn forget_node(&self, node: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        let rooms: Vec<String> = call(conn.smembers(node_rooms_key(node))).await?;
        for room in rooms {
            for (peer_id, peer) in self.room_peers(&room).await? {
                if peer.node == node {
                    self.peer_left(&room, &peer_id, node).await?;
                }
            }
        }
        call(conn.del::<_, ()>(node_rooms_key(node))).await?;
        call(conn.srem::<_, _, ()>(NODES, node)).await
    }

    /// Starts this node's tasks: the heartbeat (registration, load, and the nodes that stopped)
    /// and the reader of the other nodes' events.
    pub fn start(self: &Arc<Self>, instance: Weak<Instance>) {
        let cluster = self.clone();
        let weak = instance.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(instance) = weak.upgrade() else {
                    break;
                };
                if instance.is_draining() {
                    break;
                }
                let (load, peers) = instance.load_and_peers().await;
                drop(instance);
                if let Err(e) = cluster.register(load, peers).await {
                    tracing::warn!(error = %e, "cannot renew this node's registration");
                    continue;
                }
                match cluster.nodes().await {
                    Ok((_, gone)) => {
                        for node in gone.iter().filter(|n| **n != cluster.node_id) {
                            tracing::warn!(%node, "a node stopped heartbeating; removing its peers");
                            if let Err(e) = cluster.forget_node(node).await {
                                tracing::warn!(%node, error = %e, "cannot remove a lost node");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list the cluster's nodes"),
                }
            }
        });
        let cluster = self.clone();
        tokio::spawn(async move { cluster.read_events(instance).await });
    }

    /// Applies the other nodes' events to this node's rooms, reconnecting when Redis goes away.
    async fn read_events(self: Arc<Self>, instance: Weak<Instance>) {
        loop {
            if instance.upgrade().is_none_or(|i| i.is_draining()) {
                return;
            }
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(EVENTS).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let mut pubsub = match tokio::time::timeout(CALL_TIMEOUT, subscribed).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot subscribe to the cluster's events");
                    tokio::time::sleep(self.heartbeat).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!("cannot subscribe to the cluster's events: timed out");
                    continue;
                }
            };
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let Some(event) = open::<Event>(&self.key, &payload) else {
                    tracing::warn!("a cluster event without a valid signature was ignored");
                    continue;
                };
                let Some(instance) = instance.upgrade() else {
                    return;
                };
                self.apply(&instance, event).await;
            }
            tracing::warn!("the cluster's event subscription ended; subscribing again");
        }
    }

    async fn apply(&self, instance: &Instance, event: Event) {
        match event {
            Event::PeerJoined {
                room,
                peer_id,
                peer,
            } if peer.node != self.node_id => {
                if let Some(room) = instance.room(&room).await {
                    room.remote_peer_joined(&peer_id, &peer);
                }
            }
            Event::PeerLeft {
                room,
                peer_id,
                node,
            } if node != self.node_id => {
                if let Some(room) = instance.room(&room).await {
                    room.remote_peer_left(&peer_id);
                }
            }
            _ => {}
        }
    }

    /// Before draining: this node leaves the directory, so no new peer is placed here.
    pub async fn unregister(&self) {
        let mut conn = self.conn();
        let removed = async {
            call(conn.del::<_, ()>(node_key(&self.node_id))).await?;
            call(conn.srem::<_, _, ()>(NODES, &self.node_id)).await
        };
        if let Err(e) = removed.await {
            tracing::warn!(error = %e, "cannot remove this node from the cluster");
        }
    }

    /// After draining: every peer this node announced is removed, the others told.
    pub async fn forget_self(&self) {
        if let Err(e) = self.forget_node(&self.node_id).await {
            tracing::warn!(error = %e, "cannot remove this node's peers from the cluster");
        }
    }

    /// Peers of `room` on other nodes, as the admin API shows them.
    pub fn remote_peers_of(room: &Room) -> Vec<(String, RemotePeer)> {
        room.remote_peers()
    }
}

/// `value`, signed with `key`: base64 of the HMAC-SHA256 of its JSON, a dot, the JSON.
fn seal<T: Serialize>(key: &hmac::Key, value: &T) -> Result<String, ClusterError> {
    let json = serde_json::to_string(value)?;
    let tag = hmac::sign(key, json.as_bytes());
    Ok(format!(
        "{}.{json}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// The value in `payload` if it was signed with `key`.
fn open<T: serde::de::DeserializeOwned>(key: &hmac::Key, payload: &str) -> Option<T> {
    let (tag, json) = payload.split_once('.')?;
    let tag = base64::engine::general_purpose::STANDARD.decode(tag).ok()?;
    hmac::verify(key, json.as_bytes(), &tag).ok()?;
    serde_json::from_str(json).ok()
}

/// `join`'s list entry for a remote peer.
pub fn peer_info(peer_id: &str, peer: &RemotePeer) -> PeerInfo {
    PeerInfo {
        id: peer_id.to_owned(),
        display_name: peer.display_name.clone(),
        device: peer.device.clone(),
    }
}

/// This node's default name: the host name and the listen port.
pub fn default_node_id(port: u16) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_owned());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.
    use super::*;

    #[test]
    fn events_round_trip_as_camel_case_json() {
        let event = Event::PeerLeft {
            room: "r".into(),
            peer_id: "p".into(),
            node: "n".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "peerLeft", "room": "r", "peerId": "p", "node": "n"})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn only_events_signed_with_the_clusters_secret_are_opened() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let event = Event::PeerJoined {
            room: "r".into(),
            peer_id: "p".into(),
            peer: RemotePeer {
                node: "n".into(),
                display_name: "P".into(),
                device: Device::default(),
            },
        };
        let sealed = seal(&key, &event).unwrap();
        assert_eq!(open(&key, &sealed), Some(event));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert_eq!(open::<Event>(&other, &sealed), None);
        let forged = sealed.replace("\"P\"", "\"Q\"");
        assert_ne!(forged, sealed);
        assert_eq!(open::<Event>(&key, &forged), None);
        assert_eq!(open::<Event>(&key, "no dot"), None);
        assert_eq!(open::<Event>(&key, "!!!.{}"), None);
        // A value signed as another type does not open as an event.
        let node = seal(
            &key,
            &NodeInfo {
                id: "n".into(),
                url: "u".into(),
                load: 0,
                peers: 0,
            },
        )
        .unwrap();
        assert_eq!(open::<Event>(&key, &node), None);
    }
}
