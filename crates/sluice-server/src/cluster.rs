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
//! add peers to rooms or send new peers to a URL of its choosing. Events also carry who sent
//! them, when and with which sequence number ([`replay::Stamp`]), so a recorded event published
//! again is refused; node records carry when they were written, so an old one written again is
//! not taken for a live node.

mod replay;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::{aead, digest, hmac};
use base64::Engine as _;
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_media::ortc::{
    DtlsParameters, IceCandidate, IceParameters, MediaKind, RtpParameters, SctpParameters,
    SctpStreamParameters,
};
use sluice_media::{
    Consumer, ConsumerOptions, DataConsumerOptions, DataMessage, DataProducer, DataProducerOptions,
    DirectTransport, MediaEvent, PlainTransport, PlainTransportConnect, PlainTransportOptions,
    Producer, ProducerOptions, SrtpCryptoSuite, SrtpParameters, WebRtcTransport,
    WebRtcTransportOptions,
};
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
/// How long a node waits for the producer's node to answer a pipe offer.
const PIPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How far an event's or a node record's time may be from this node's clock: the clocks of the
/// cluster's hosts (NTP keeps them within milliseconds) may differ by this much. An event older
/// than this is refused; within it, a replayed event is refused by its sequence number.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// How long `/api/place` reuses what it read of a room's nodes.
const PLACE_CACHE: Duration = Duration::from_secs(1);
/// How many rooms' nodes `/api/place` reads from Redis per second at most (twice that in a
/// burst); beyond, it answers the least-loaded node without reading the room.
const PLACE_READS_PER_SECOND: u32 = 50;
/// How many rooms `/api/place` remembers (forgotten all at once beyond).
const PLACE_CACHE_ROOMS: usize = 4096;
/// Rooms whose entries in Redis a node checks against what it holds, each heartbeat, in turn:
/// an entry of its own that it does not hold (removed, then written back by someone who kept
/// its value) is removed again and its peer's leaving told.
const AUDIT_ROOMS_PER_HEARTBEAT: usize = 8;

/// Milliseconds since the Unix epoch by this host's clock (0 if it is set before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn node_key(id: &str) -> String {
    format!("sluice:node:{id}")
}

fn node_rooms_key(id: &str) -> String {
    format!("sluice:node:{id}:rooms")
}

fn room_peers_key(room: &str) -> String {
    format!("sluice:room:{room}:peers")
}

fn room_producers_key(room: &str) -> String {
    format!("sluice:room:{room}:producers")
}

fn room_data_producers_key(room: &str) -> String {
    format!("sluice:room:{room}:data_producers")
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
    #[error("media: {0}")]
    Media(#[from] sluice_media::MediaError),
    #[error("pipe: {0}")]
    Pipe(String),
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
    /// When the record was written (its node's clock, ms since the Unix epoch).
    #[serde(default)]
    pub at_ms: u64,
}

impl NodeInfo {
    /// Whether a record written at `at_ms` can still be a live node's at `now_ms`: its node
    /// renews it every heartbeat and Redis drops it after `ttl`, so an older one was written
    /// again by someone else.
    fn is_recent(&self, now_ms: u64, ttl: Duration) -> bool {
        let limit = (ttl + MAX_CLOCK_SKEW).as_millis() as u64;
        self.at_ms.abs_diff(now_ms) <= limit
    }
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

/// A producer of a room as its node announced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteProducer {
    pub node: String,
    pub peer_id: String,
    pub kind: MediaKind,
    #[serde(default)]
    pub app_data: Value,
}

/// The producer's node's side of a pipe, answering an offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeAnswer {
    /// Where its RTCP goes (and its RTP comes from).
    pub addr: SocketAddr,
    /// Its SRTP key, encrypted with the cluster's pipe key ([`hide`]).
    pub key: String,
    pub suite: SrtpCryptoSuite,
    pub kind: MediaKind,
    /// The pipe consumer's: every encoding with its own SSRC.
    pub rtp_parameters: RtpParameters,
    pub paused: bool,
    pub peer_id: String,
    #[serde(default)]
    pub app_data: Value,
}

/// A data producer of a room as its node announced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteDataProducer {
    pub node: String,
    pub peer_id: String,
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub app_data: Value,
}

/// A producer or data producer of another node, to pipe here.
#[derive(Debug, Clone)]
enum Remote {
    Media(RemoteProducer),
    Data(RemoteDataProducer),
}

/// The data producer's node's side of a data pipe: a WebRTC transport (ICE-lite, DTLS, SCTP)
/// the target connects to as a client, and the stream its data consumer sends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataPipeAnswer {
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: DtlsParameters,
    pub sctp_parameters: SctpParameters,
    pub stream: SctpStreamParameters,
    pub label: String,
    pub protocol: String,
    pub peer_id: String,
    #[serde(default)]
    pub app_data: Value,
}

/// A source node's side of a pipe, answering an offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    Media(Box<PipeAnswer>),
    Data(Box<DataPipeAnswer>),
}

/// What a piped producer's source tells its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PipeState {
    Paused,
    Resumed,
    Closed,
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
    #[serde(rename_all = "camelCase")]
    ProducerCreated {
        room: String,
        producer_id: String,
        producer: RemoteProducer,
    },
    /// `from` asks `to` (the producer's node) to pipe a producer to it: RTP to `addr`, SRTP
    /// with `key` (encrypted, [`hide`]).
    #[serde(rename_all = "camelCase")]
    PipeOffer {
        room: String,
        producer_id: String,
        from: String,
        to: String,
        request: String,
        addr: SocketAddr,
        key: String,
        suite: SrtpCryptoSuite,
    },
    /// The source node answers an offer (media or data): its side, or why not.
    #[serde(rename_all = "camelCase")]
    PipeAnswered {
        to: String,
        request: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        answer: Option<Answer>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The source of a pipe tells its target that the producer paused, resumed or closed.
    #[serde(rename_all = "camelCase")]
    PipeUpdated {
        room: String,
        producer_id: String,
        from: String,
        to: String,
        state: PipeState,
    },
    /// The target of a pipe says whether one of its consumers of the producer is not paused:
    /// the source's pipe consumer sends only while one is.
    #[serde(rename_all = "camelCase")]
    PipeDemand {
        room: String,
        producer_id: String,
        from: String,
        to: String,
        demanded: bool,
    },
    /// Node `from` lost track of what its pipes' targets want (its subscription to the events
    /// ended): each target tells it again.
    PipeDemandLost { from: String },
    /// The target of a pipe closed it (its room closed there): the source stops sending.
    #[serde(rename_all = "camelCase")]
    PipeClosed {
        room: String,
        producer_id: String,
        from: String,
        to: String,
    },
    #[serde(rename_all = "camelCase")]
    DataProducerCreated {
        room: String,
        data_producer_id: String,
        data_producer: RemoteDataProducer,
    },
    /// `from` asks `to` to pipe a data producer to it.
    #[serde(rename_all = "camelCase")]
    DataPipeOffer {
        room: String,
        data_producer_id: String,
        from: String,
        to: String,
        request: String,
    },
    /// The target's DTLS side, to connect the data pipe's transport with.
    #[serde(rename_all = "camelCase")]
    DataPipeConnect {
        room: String,
        data_producer_id: String,
        from: String,
        to: String,
        dtls_parameters: DtlsParameters,
    },
    /// A node stopped heartbeating: the others close their pipes to it.
    NodeLost { node: String },
}

/// An event as it goes on the channel: with who sent it, when, and its sequence number
/// (`E` is `&Event` when sent, `Event` when read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stamped<E> {
    stamp: replay::Stamp,
    event: E,
}

/// What carries a pipe.
#[derive(Debug)]
enum Carrier {
    Media {
        transport: PlainTransport,
        producer: Box<Producer>,
    },
    Data {
        direct: DirectTransport,
        client: sluice_client::ClientTransport,
        data_producer: DataProducer,
    },
}

/// The source's side of a pipe.
#[derive(Debug, Clone)]
enum Outbound {
    Media {
        transport: PlainTransport,
        consumer: Box<Consumer>,
        /// Paused because the target wants none of it (as it last said).
        paused: bool,
    },
    Data(WebRtcTransport),
}

impl Outbound {
    fn id(&self) -> &str {
        match self {
            Outbound::Media { transport, .. } => transport.id(),
            Outbound::Data(t) => t.id(),
        }
    }

    async fn close(&self) {
        let _ = match self {
            Outbound::Media { transport, .. } => transport.close().await,
            Outbound::Data(t) => t.close().await,
        };
    }
}

/// A producer or data producer of another node piped here.
#[derive(Debug)]
struct PipeIn {
    node: String,
    peer_id: String,
    carrier: Carrier,
    /// Whether a consumer here of the piped producer is not paused (a data pipe: always).
    demanded: bool,
    /// What the source was last told of `demanded` (`None`: to tell again).
    told: Option<bool>,
}

impl PipeIn {
    /// Closes the pipe; the piped (data) producer closes with it.
    async fn close(&self) {
        match &self.carrier {
            Carrier::Media { transport, .. } => {
                let _ = transport.close().await;
            }
            Carrier::Data { direct, client, .. } => {
                client.close();
                let _ = direct.close().await;
            }
        }
    }
}

/// Pipes in and out of this node, by (room, producer[, target node]).
#[derive(Debug, Default)]
struct Pipes {
    /// Offers made and not answered yet, by request id.
    pending: HashMap<String, tokio::sync::oneshot::Sender<Result<Answer, String>>>,
    /// (room, producer) being piped in now (offer sent), so it is asked for once.
    opening: HashSet<(String, String)>,
    inbound: HashMap<(String, String), PipeIn>,
    outbound: HashMap<(String, String, String), Outbound>,
}

/// A pipe from this node, as `GET /api/rooms/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipeOutView {
    /// The producer or data producer piped.
    pub id: String,
    /// The node it is piped to.
    pub node: String,
    pub kind: &'static str,
    /// A media pipe: whether its consumer is paused (no consumer at the target wants it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// A media pipe: the RTP packets it sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_sent: Option<u64>,
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
    /// Encrypts the SRTP keys of pipes on their way through Redis.
    pipe_key: aead::LessSafeKey,
    /// The address other nodes send pipe RTP to (the RTC announced address).
    media_ip: IpAddr,
    heartbeat: Duration,
    ttl: Duration,
    pipes: Mutex<Pipes>,
    metrics: crate::metrics::ClusterMetrics,
    /// Drawn when the node starts: its events' sequence numbers start again with it.
    boot: u64,
    /// The next event's sequence number.
    seq: AtomicU64,
    /// What `/api/place` read of the cluster lately.
    placing: Mutex<Placing>,
    /// Held while a pipe's demand is told to its source ([`Cluster::tell_demand`]).
    telling: tokio::sync::Mutex<()>,
}

/// What `/api/place` read of the cluster lately, so that a flood of requests does not become
/// a flood of Redis reads.
#[derive(Debug)]
struct Placing {
    /// The live nodes, as of `nodes_at` (each heartbeat, or a placement after it).
    nodes: Vec<NodeInfo>,
    nodes_at: Option<Instant>,
    /// Each room's nodes, as read at the instant.
    rooms: HashMap<String, (Instant, HashSet<String>)>,
    /// Room reads allowed.
    reads: crate::rate::TokenBucket,
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
        media_ip: IpAddr,
        metrics: crate::metrics::ClusterMetrics,
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
            pipe_key: pipe_key(&secret),
            media_ip: if media_ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                media_ip
            },
            heartbeat: Duration::from_secs(config.heartbeat_secs),
            ttl: Duration::from_secs(config.node_ttl_secs),
            pipes: Mutex::new(Pipes::default()),
            metrics,
            boot: rand::random(),
            seq: AtomicU64::new(0),
            telling: tokio::sync::Mutex::new(()),
            placing: Mutex::new(Placing {
                nodes: Vec::new(),
                nodes_at: None,
                rooms: HashMap::new(),
                reads: crate::rate::TokenBucket::per_second(PLACE_READS_PER_SECOND, Instant::now()),
            }),
        }))
    }

    fn conn(&self) -> redis::aio::ConnectionManager {
        self.conn.clone()
    }

    /// Sets the pipe gauges (each heartbeat).
    fn count_pipes(&self) {
        let (inbound, outbound, idle_in, idle_out) = {
            let pipes = self.pipes();
            (
                pipes.inbound.len(),
                pipes.outbound.len(),
                pipes.inbound.values().filter(|p| !p.demanded).count(),
                pipes
                    .outbound
                    .values()
                    .filter(|o| matches!(o, Outbound::Media { paused: true, .. }))
                    .count(),
            )
        };
        let m = &self.metrics;
        for (family, direction, n) in [
            (&m.pipes, "in", inbound),
            (&m.pipes, "out", outbound),
            (&m.pipes_paused, "in", idle_in),
            (&m.pipes_paused, "out", idle_out),
        ] {
            family
                .get_or_create(&crate::metrics::DirectionLabels { direction })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// One Redis call with [`CALL_TIMEOUT`], its failure counted.
    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        let done = call(f).await;
        if done.is_err() {
            self.metrics.redis_errors.inc();
        }
        done
    }

    fn pipes(&self) -> MutexGuard<'_, Pipes> {
        self.pipes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, event: &Event) -> Result<(), ClusterError> {
        let stamped = Stamped {
            stamp: replay::Stamp {
                node: self.node_id.clone(),
                boot: self.boot,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                sent_ms: now_ms(),
            },
            event,
        };
        let sealed = seal(&self.key, &stamped)?;
        self.call(self.conn().publish::<_, _, ()>(EVENTS, sealed))
            .await
    }

    /// Registers this node (or renews its registration) with its load.
    async fn register(&self, load: u64, peers: usize) -> Result<(), ClusterError> {
        let info = NodeInfo {
            id: self.node_id.clone(),
            url: self.node_url.clone(),
            load,
            peers,
            at_ms: now_ms(),
        };
        let sealed = seal(&self.key, &info)?;
        let mut conn = self.conn();
        self.call(conn.set_ex::<_, _, ()>(node_key(&self.node_id), sealed, self.ttl.as_secs()))
            .await?;
        self.call(conn.sadd::<_, _, ()>(NODES, &self.node_id)).await
    }

    /// The live nodes (registered, TTL not expired), and the ids of the registered ones that
    /// stopped.
    async fn nodes(&self) -> Result<(Vec<NodeInfo>, Vec<String>), ClusterError> {
        let mut conn = self.conn();
        let ids: Vec<String> = self.call(conn.smembers(NODES)).await?;
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let values: Vec<Option<String>> = self.call(conn.mget(&keys)).await?;
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        let now = now_ms();
        for (id, value) in ids.into_iter().zip(values) {
            match value {
                // A record that does not verify, or was written long ago, is not a live node of
                // this cluster.
                Some(v) => live.extend(
                    open::<NodeInfo>(&self.key, &v)
                        .filter(|n| n.id == id && n.is_recent(now, self.ttl)),
                ),
                None => gone.push(id),
            }
        }
        let mut placing = self.placing();
        placing.nodes.clone_from(&live);
        placing.nodes_at = Some(Instant::now());
        drop(placing);
        Ok((live, gone))
    }

    /// The peers of `room` announced by nodes (this one included).
    pub async fn room_peers(&self, room: &str) -> Result<Vec<(String, RemotePeer)>, ClusterError> {
        self.signed_entries(room_peers_key(room)).await
    }

    /// The entries of hash `key` whose values are signed with the cluster's secret (the others
    /// are not the cluster's and are left out).
    async fn signed_entries<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
    ) -> Result<Vec<(String, T)>, ClusterError> {
        let all: HashMap<String, String> = self.call(self.conn().hgetall(key)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, v)| Some((id, open(&self.key, &v)?)))
            .collect())
    }

    /// Where a new peer of `room` should connect: the room's least-loaded live node, else the
    /// least-loaded live node (this one when Redis cannot tell). Reads Redis at most
    /// [`PLACE_READS_PER_SECOND`] times a second, however often it is asked: the nodes as of
    /// the last heartbeat, each room's nodes for [`PLACE_CACHE`].
    pub async fn place(&self, room: &str) -> Place {
        let here = Place {
            node_id: self.node_id.clone(),
            url: self.node_url.clone(),
        };
        let Some(live) = self.placing_nodes().await else {
            return here;
        };
        let in_room = self.room_nodes(room).await;
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

    fn placing(&self) -> MutexGuard<'_, Placing> {
        self.placing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live nodes as placement sees them: as of the last heartbeat's read, read again if
    /// that is older than two heartbeats and the read budget allows (else as they were).
    async fn placing_nodes(&self) -> Option<Vec<NodeInfo>> {
        {
            let mut p = self.placing();
            let now = Instant::now();
            let fresh = p
                .nodes_at
                .is_some_and(|at| now.duration_since(at) < 2 * self.heartbeat);
            if fresh || !p.reads.take(now) {
                return p.nodes_at.map(|_| p.nodes.clone());
            }
        }
        self.nodes().await.ok().map(|(live, _)| live)
    }

    /// The nodes with peers in `room`: as read within [`PLACE_CACHE`], else from Redis if the
    /// read budget allows, else none known.
    async fn room_nodes(&self, room: &str) -> HashSet<String> {
        {
            let mut p = self.placing();
            let now = Instant::now();
            if let Some((at, nodes)) = p.rooms.get(room)
                && now.duration_since(*at) < PLACE_CACHE
            {
                return nodes.clone();
            }
            if !p.reads.take(now) {
                return HashSet::new();
            }
        }
        let Ok(peers) = self.room_peers(room).await else {
            return HashSet::new();
        };
        let nodes: HashSet<String> = peers.into_iter().map(|(_, p)| p.node).collect();
        let mut p = self.placing();
        if p.rooms.len() >= PLACE_CACHE_ROOMS {
            p.rooms.clear();
        }
        p.rooms
            .insert(room.to_owned(), (Instant::now(), nodes.clone()));
        nodes
    }

    /// Follows `room`, just opened here: learns the peers other nodes announced in it, then
    /// announces this node's peers of it as its store records them (until the room closes).
    pub async fn follow(
        self: &Arc<Self>,
        room: &Arc<Room>,
        actions: tokio::sync::broadcast::Receiver<Arc<Action>>,
    ) {
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
        match self.room_producers(&room.id).await {
            Ok(producers) => {
                for (producer_id, producer) in producers {
                    self.spawn_pipe_in(room, producer_id, Remote::Media(producer));
                }
            }
            Err(e) => {
                tracing::warn!(room = %room.id, error = %e, "cannot read the room's producers on other nodes")
            }
        }
        match self.room_data_producers(&room.id).await {
            Ok(data_producers) => {
                for (id, data_producer) in data_producers {
                    self.spawn_pipe_in(room, id, Remote::Data(data_producer));
                }
            }
            Err(e) => {
                tracing::warn!(room = %room.id, error = %e, "cannot read the room's data producers on other nodes")
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
                Err(RecvError::Closed) => {
                    self.room_closed(&room_id).await;
                    break;
                }
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
                } => {
                    let left = self.peer_left(&room_id, peer_id, &self.node_id).await;
                    match room.upgrade() {
                        Some(room) => self.sync_producers(&room).await.and(left.map(|_| ())),
                        None => left.map(|_| ()),
                    }
                }
                Action::ProducerCreated {
                    peer_id,
                    producer_id,
                    kind,
                    app_data,
                    ..
                } => {
                    self.producer_created(&room_id, producer_id, peer_id, *kind, app_data)
                        .await
                }
                Action::DataProducerCreated {
                    peer_id,
                    data_producer_id,
                    label,
                    protocol,
                    app_data,
                    ..
                } if room.upgrade().is_some_and(|r| r.relays_to_peers(label)) => {
                    self.data_producer_created(
                        &room_id,
                        data_producer_id,
                        peer_id,
                        label,
                        protocol,
                        app_data,
                    )
                    .await
                }
                Action::ProducerClosed { .. }
                | Action::DataProducerClosed { .. }
                | Action::TransportClosed { .. } => match room.upgrade() {
                    Some(room) => self.sync_producers(&room).await,
                    None => Ok(()),
                },
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
        self.call(conn.hset::<_, _, _, ()>(room_peers_key(room), peer_id, sealed))
            .await?;
        self.call(conn.sadd::<_, _, ()>(node_rooms_key(&self.node_id), room))
            .await?;
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
        let entry: Option<String> = self.call(conn.hget(&key, peer_id)).await?;
        let of_node = entry
            .and_then(|v| open::<RemotePeer>(&self.key, &v))
            .is_some_and(|p| p.node == node);
        if !of_node {
            return Ok(false);
        }
        let removed: i64 = self.call(conn.hdel(&key, peer_id)).await?;
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

    /// The producers of `room` announced by nodes (this one included).
    pub async fn room_producers(
        &self,
        room: &str,
    ) -> Result<Vec<(String, RemoteProducer)>, ClusterError> {
        self.signed_entries(room_producers_key(room)).await
    }

    async fn producer_created(
        &self,
        room: &str,
        producer_id: &str,
        peer_id: &str,
        kind: MediaKind,
        app_data: &Value,
    ) -> Result<(), ClusterError> {
        let producer = RemoteProducer {
            node: self.node_id.clone(),
            peer_id: peer_id.to_owned(),
            kind,
            app_data: app_data.clone(),
        };
        let sealed = seal(&self.key, &producer)?;
        let mut conn = self.conn();
        self.call(conn.hset::<_, _, _, ()>(room_producers_key(room), producer_id, sealed))
            .await?;
        self.call(conn.sadd::<_, _, ()>(node_rooms_key(&self.node_id), room))
            .await?;
        self.publish(&Event::ProducerCreated {
            room: room.to_owned(),
            producer_id: producer_id.to_owned(),
            producer,
        })
        .await
    }

    /// Takes out of Redis this node's producers of `room` that closed (the nodes they were
    /// piped to learn it from the pipe, [`Event::PipeUpdated`]).
    async fn sync_producers(&self, room: &Room) -> Result<(), ClusterError> {
        let announced = self.room_producers(&room.id).await?;
        let gone: Vec<String> = {
            let objects = room.objects();
            announced
                .into_iter()
                .filter(|(id, p)| p.node == self.node_id && !objects.producers.contains_key(id))
                .map(|(id, _)| id)
                .collect()
        };
        if !gone.is_empty() {
            self.call(
                self.conn()
                    .hdel::<_, _, ()>(room_producers_key(&room.id), gone),
            )
            .await?;
        }
        let announced = self.room_data_producers(&room.id).await?;
        let gone: Vec<String> = {
            let objects = room.objects();
            announced
                .into_iter()
                .filter(|(id, p)| {
                    p.node == self.node_id && !objects.data_producers.contains_key(id)
                })
                .map(|(id, _)| id)
                .collect()
        };
        if !gone.is_empty() {
            self.call(
                self.conn()
                    .hdel::<_, _, ()>(room_data_producers_key(&room.id), gone),
            )
            .await?;
        }
        Ok(())
    }

    /// Pipes producer or data producer `id` of another node to this node's room (once: not
    /// while that pipe exists or is being made), in a task of its own.
    fn spawn_pipe_in(self: &Arc<Self>, room: &Arc<Room>, id: String, remote: Remote) {
        let node = match &remote {
            Remote::Media(p) => p.node.clone(),
            Remote::Data(p) if room.relays_to_peers(&p.label) => p.node.clone(),
            Remote::Data(_) => return,
        };
        if node == self.node_id {
            return;
        }
        let key = (room.id.clone(), id.clone());
        {
            let mut pipes = self.pipes();
            if pipes.inbound.contains_key(&key) || !pipes.opening.insert(key.clone()) {
                return;
            }
        }
        let (cluster, room) = (self.clone(), room.clone());
        tokio::spawn(async move {
            let piped = match &remote {
                Remote::Media(p) => cluster.pipe_in(&room, &id, p).await,
                Remote::Data(p) => cluster.data_pipe_in(&room, &id, p).await,
            };
            cluster.pipes().opening.remove(&key);
            if let Err(e) = piped {
                tracing::warn!(room = %room.id, %id, %node, error = %e, "cannot pipe a producer or data producer from another node");
            }
        });
    }

    /// Publishes `offer` (which carries `request`) to `node` and waits for its answer.
    async fn ask(&self, request: String, offer: Event, node: &str) -> Result<Answer, ClusterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pipes().pending.insert(request.clone(), tx);
        let answered = match self.publish(&offer).await {
            Ok(()) => tokio::time::timeout(PIPE_TIMEOUT, rx).await,
            Err(e) => {
                self.pipes().pending.remove(&request);
                return Err(e);
            }
        };
        self.pipes().pending.remove(&request);
        match answered {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(e))) => Err(ClusterError::Pipe(e)),
            Ok(Err(_)) | Err(_) => Err(ClusterError::Pipe(format!(
                "node {node} did not answer within {PIPE_TIMEOUT:?}"
            ))),
        }
    }

    /// The target's side of a pipe: a plain transport with SRTP on the room's home router, an
    /// offer to the producer's node, and on its answer a producer of the same id, which the
    /// room's peers here consume.
    async fn pipe_in(
        self: &Arc<Self>,
        room: &Arc<Room>,
        producer_id: &str,
        remote: &RemoteProducer,
    ) -> Result<(), ClusterError> {
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let transport = room
            .router
            .create_plain_transport(PlainTransportOptions {
                enable_srtp: true,
                events: Some(events_tx),
                ..PlainTransportOptions::default()
            })
            .await?;
        let made = async {
            let srtp = transport
                .srtp_parameters()
                .cloned()
                .ok_or_else(|| ClusterError::Pipe("the transport has no SRTP key".into()))?;
            let request = sluice_media::new_id();
            let offer = Event::PipeOffer {
                room: room.id.clone(),
                producer_id: producer_id.to_owned(),
                from: self.node_id.clone(),
                to: remote.node.clone(),
                request: request.clone(),
                addr: self.reachable(&transport),
                key: hide(&self.pipe_key, &srtp.key_base64),
                suite: srtp.crypto_suite,
            };
            let answer = match self.ask(request, offer, &remote.node).await? {
                Answer::Media(a) => *a,
                Answer::Data(_) => {
                    return Err(ClusterError::Pipe("a data answer to a media offer".into()));
                }
            };
            let key_base64 = reveal(&self.pipe_key, &answer.key)
                .ok_or_else(|| ClusterError::Pipe("the answer's key does not decrypt".into()))?;
            transport
                .connect_with(PlainTransportConnect {
                    remote: Some(answer.addr),
                    srtp_parameters: Some(SrtpParameters {
                        crypto_suite: answer.suite,
                        key_base64,
                    }),
                })
                .await?;
            let mut options = ProducerOptions::new(answer.kind, answer.rtp_parameters.clone());
            options.id = Some(producer_id.to_owned());
            options.paused = answer.paused;
            let producer = transport.produce(options).await?;
            Ok::<_, ClusterError>((answer, producer))
        };
        let (answer, producer) = match made.await {
            Ok(v) => v,
            Err(e) => {
                let _ = transport.close().await;
                return Err(e);
            }
        };
        // The peer may have left while the pipe was made.
        if !room
            .remote_peers()
            .iter()
            .any(|(id, _)| *id == answer.peer_id)
        {
            let _ = transport.close().await;
            self.close_source(&room.id, producer_id, &remote.node).await;
            return Ok(());
        }
        let key = (room.id.clone(), producer_id.to_owned());
        self.pipes().inbound.insert(
            key.clone(),
            PipeIn {
                node: remote.node.clone(),
                peer_id: answer.peer_id.clone(),
                carrier: Carrier::Media {
                    transport,
                    producer: Box::new(producer.clone()),
                },
                // The source's pipe consumer starts paused.
                demanded: false,
                told: Some(false),
            },
        );
        self.follow_demand(key, events);
        room.add_remote_producer(&answer.peer_id, producer, answer.paused, answer.app_data);
        Ok(())
    }

    /// Tells the source of pipe `key` whether its producer is wanted here, each time that
    /// changes, until the pipe's transport is gone.
    fn follow_demand(
        self: &Arc<Self>,
        key: (String, String),
        mut events: tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    MediaEvent::ProducerDemandChange {
                        transport_id,
                        producer_id,
                        demanded,
                    } if producer_id == key.1 => {
                        // Only this pipe's own (not a later pipe's of the same producer).
                        if let Some(pipe) = cluster.pipes().inbound.get_mut(&key)
                            && matches!(&pipe.carrier, Carrier::Media { transport, .. } if transport.id() == transport_id)
                        {
                            pipe.demanded = demanded;
                        }
                        cluster.tell_demand(&key).await;
                    }
                    MediaEvent::TransportClosed { .. } => break,
                    _ => {}
                }
            }
        });
    }

    /// Tells the source of pipe `key` what is wanted of it, unless it was told already; a
    /// failed publication is tried again at the next heartbeat.
    async fn tell_demand(&self, key: &(String, String)) {
        // One at a time, so that two tells of one pipe cannot overtake each other.
        let _telling = self.telling.lock().await;
        let Some((node, demanded)) = self
            .pipes()
            .inbound
            .get(key)
            .filter(|p| p.told != Some(p.demanded))
            .map(|p| (p.node.clone(), p.demanded))
        else {
            return;
        };
        let told = self
            .publish(&Event::PipeDemand {
                room: key.0.clone(),
                producer_id: key.1.clone(),
                from: self.node_id.clone(),
                to: node,
                demanded,
            })
            .await;
        match told {
            Ok(()) => {
                if let Some(pipe) = self.pipes().inbound.get_mut(key) {
                    pipe.told = Some(demanded);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell a pipe's source what is wanted"),
        }
    }

    /// This node's pipes of `room` to other nodes, as its workers report them.
    pub async fn pipes_out(&self, room: &str) -> Vec<PipeOutView> {
        let pipes: Vec<((String, String, String), Outbound)> = self
            .pipes()
            .outbound
            .iter()
            .filter(|(k, _)| k.0 == room)
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        let mut out = Vec::with_capacity(pipes.len());
        for ((_, id, node), outbound) in pipes {
            let (kind, paused, packets_sent) = match outbound {
                Outbound::Media { consumer, .. } => (
                    "media",
                    consumer.dump().await.ok().map(|d| d.paused),
                    consumer
                        .get_stats()
                        .await
                        .ok()
                        .map(|s| s.iter().map(|s| s.packet_count).sum()),
                ),
                Outbound::Data(_) => ("data", None, None),
            };
            out.push(PipeOutView {
                id,
                node,
                kind,
                paused,
                packets_sent,
            });
        }
        out.sort_by(|a, b| (&a.id, &a.node).cmp(&(&b.id, &b.node)));
        out
    }

    /// Asks the targets of this node's pipes to say again what they want of them, until
    /// Redis takes the request.
    async fn ask_for_demand(&self) {
        let lost = Event::PipeDemandLost {
            from: self.node_id.clone(),
        };
        while let Err(e) = self.publish(&lost).await {
            tracing::warn!(error = %e, "cannot ask for the demand of this node's pipes");
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    /// Tells the sources of this node's pipes what they were not told yet (`to`: only those
    /// of that node, after forgetting what it was told).
    async fn retell_demand(&self, to: Option<&str>) {
        let keys: Vec<(String, String)> = {
            let mut pipes = self.pipes();
            pipes
                .inbound
                .iter_mut()
                .filter(|(_, p)| matches!(p.carrier, Carrier::Media { .. }))
                .filter_map(|(k, p)| {
                    if to.is_some_and(|n| n == p.node) {
                        p.told = None;
                    }
                    (p.told != Some(p.demanded)).then(|| k.clone())
                })
                .collect()
        };
        for key in keys {
            self.tell_demand(&key).await;
        }
    }

    /// Where another node sends to `transport`.
    fn reachable(&self, transport: &PlainTransport) -> SocketAddr {
        let ip = transport.ip();
        let ip = if ip.is_unspecified() {
            self.media_ip
        } else {
            ip
        };
        SocketAddr::new(ip, transport.port())
    }

    /// Tells the node that pipes `producer_id` of `room` here to stop.
    async fn close_source(&self, room: &str, producer_id: &str, node: &str) {
        let closed = self
            .publish(&Event::PipeClosed {
                room: room.to_owned(),
                producer_id: producer_id.to_owned(),
                from: self.node_id.clone(),
                to: node.to_owned(),
            })
            .await;
        if let Err(e) = closed {
            tracing::warn!(room, producer = producer_id, node, error = %e, "cannot close a pipe's source");
        }
    }

    /// The source's side of a pipe: a plain transport with SRTP on the producer's router, a
    /// pipe consumer sending to the target, and an answer; then the producer's pause, resume
    /// and close go to the target.
    async fn pipe_out(
        self: &Arc<Self>,
        instance: &Instance,
        offer: PipeOfferRef<'_>,
    ) -> Result<PipeAnswer, String> {
        let room = instance
            .room(offer.room)
            .await
            .ok_or_else(|| format!("no room {} on node {}", offer.room, self.node_id))?;
        let (router, peer_id, app_data) = {
            let objects = room.objects();
            let p = objects
                .producers
                .get(offer.producer_id)
                .filter(|p| room.peer(&p.peer_id).is_some())
                .ok_or_else(|| {
                    format!("no producer {} on node {}", offer.producer_id, self.node_id)
                })?;
            (
                room.routers
                    .on(p.object.worker_index())
                    .unwrap_or_else(|| room.router.clone()),
                p.peer_id.clone(),
                p.app_data.clone(),
            )
        };
        let key_base64 =
            reveal(&self.pipe_key, offer.key).ok_or("the offer's key does not decrypt")?;
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let transport = router
            .create_plain_transport(PlainTransportOptions {
                enable_srtp: true,
                events: Some(events_tx),
                ..PlainTransportOptions::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let made = async {
            let srtp = transport
                .srtp_parameters()
                .cloned()
                .ok_or("the pipe's transport has no SRTP key")?;
            transport
                .connect_with(PlainTransportConnect {
                    remote: Some(offer.addr),
                    srtp_parameters: Some(SrtpParameters {
                        crypto_suite: offer.suite,
                        key_base64,
                    }),
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut options =
                ConsumerOptions::new(offer.producer_id, router.rtp_capabilities().clone());
            options.paused = true;
            options.pipe = true;
            let consumer = transport
                .consume(options)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((srtp, consumer))
        };
        let (srtp, consumer) = match made.await {
            Ok(v) => v,
            Err(e) => {
                let _ = transport.close().await;
                return Err(e);
            }
        };
        let answer = PipeAnswer {
            addr: self.reachable(&transport),
            key: hide(&self.pipe_key, &srtp.key_base64),
            suite: srtp.crypto_suite,
            kind: consumer.kind(),
            rtp_parameters: consumer.rtp_parameters().clone(),
            paused: consumer.producer_paused(),
            peer_id,
            app_data,
        };
        let key = (
            offer.room.to_owned(),
            offer.producer_id.to_owned(),
            offer.from.to_owned(),
        );
        let replaced = self.pipes().outbound.insert(
            key.clone(),
            Outbound::Media {
                transport: transport.clone(),
                consumer: Box::new(consumer.clone()),
                paused: true,
            },
        );
        if let Some(old) = replaced {
            // The target asked again (it lost its side): the new pipe replaces the old.
            tokio::spawn(async move { old.close().await });
        }
        // The pipe consumer stays paused until the target wants the producer (`PipeDemand`).
        let cluster = self.clone();
        let consumer_id = consumer.id().to_owned();
        tokio::spawn(async move {
            let update = |state| Event::PipeUpdated {
                room: key.0.clone(),
                producer_id: key.1.clone(),
                from: cluster.node_id.clone(),
                to: key.2.clone(),
                state,
            };
            while let Some(event) = events.recv().await {
                let state = match event {
                    MediaEvent::ConsumerProducerPaused { consumer_id: c, .. }
                        if c == consumer_id =>
                    {
                        PipeState::Paused
                    }
                    MediaEvent::ConsumerProducerResumed { consumer_id: c, .. }
                        if c == consumer_id =>
                    {
                        PipeState::Resumed
                    }
                    MediaEvent::ConsumerClosed { consumer_id: c, .. } if c == consumer_id => break,
                    MediaEvent::TransportClosed { .. } => break,
                    _ => continue,
                };
                if let Err(e) = cluster.publish(&update(state)).await {
                    tracing::warn!(error = %e, "cannot tell a pipe's target");
                }
            }
            let _ = transport.close().await;
            let ours = {
                let mut pipes = cluster.pipes();
                let ours = pipes
                    .outbound
                    .get(&key)
                    .is_some_and(|t| t.id() == transport.id());
                if ours {
                    pipes.outbound.remove(&key);
                }
                ours
            };
            if ours && let Err(e) = cluster.publish(&update(PipeState::Closed)).await {
                tracing::warn!(error = %e, "cannot tell a pipe's target");
            }
        });
        Ok(answer)
    }

    /// A pipe here from another node closed (its producer closed, its peer left, its node was
    /// lost): the piped producer closes and its consumers here are told.
    async fn close_pipe_in(&self, room: Option<&Room>, key: &(String, String)) {
        let Some(pipe) = self.pipes().inbound.remove(key) else {
            return;
        };
        if let Some(room) = room {
            match &pipe.carrier {
                Carrier::Media { producer, .. } => {
                    room.remove_remote_producer(producer.id());
                }
                Carrier::Data { data_producer, .. } => {
                    room.remove_remote_data_producer(data_producer.id());
                }
            }
        }
        pipe.close().await;
    }

    /// The data producers of `room` announced by nodes (this one included).
    pub async fn room_data_producers(
        &self,
        room: &str,
    ) -> Result<Vec<(String, RemoteDataProducer)>, ClusterError> {
        self.signed_entries(room_data_producers_key(room)).await
    }

    async fn data_producer_created(
        &self,
        room: &str,
        data_producer_id: &str,
        peer_id: &str,
        label: &str,
        protocol: &str,
        app_data: &Value,
    ) -> Result<(), ClusterError> {
        let data_producer = RemoteDataProducer {
            node: self.node_id.clone(),
            peer_id: peer_id.to_owned(),
            label: label.to_owned(),
            protocol: protocol.to_owned(),
            app_data: app_data.clone(),
        };
        let sealed = seal(&self.key, &data_producer)?;
        let mut conn = self.conn();
        self.call(conn.hset::<_, _, _, ()>(
            room_data_producers_key(room),
            data_producer_id,
            sealed,
        ))
        .await?;
        self.call(conn.sadd::<_, _, ()>(node_rooms_key(&self.node_id), room))
            .await?;
        self.publish(&Event::DataProducerCreated {
            room: room.to_owned(),
            data_producer_id: data_producer_id.to_owned(),
            data_producer,
        })
        .await
    }

    /// The target's side of a data pipe: an offer; on the answer, a WebRTC client of the
    /// source's transport (DTLS and SCTP, as a browser would be) whose messages go out on a
    /// direct data producer of the same id, which the room's peers here consume.
    async fn data_pipe_in(
        &self,
        room: &Arc<Room>,
        id: &str,
        remote: &RemoteDataProducer,
    ) -> Result<(), ClusterError> {
        let request = sluice_media::new_id();
        let offer = Event::DataPipeOffer {
            room: room.id.clone(),
            data_producer_id: id.to_owned(),
            from: self.node_id.clone(),
            to: remote.node.clone(),
            request: request.clone(),
        };
        let answer = match self.ask(request, offer, &remote.node).await? {
            Answer::Data(a) => *a,
            Answer::Media(_) => {
                return Err(ClusterError::Pipe("a media answer to a data offer".into()));
            }
        };
        let info = sluice_client::ServerTransportInfo {
            ice_parameters: answer.ice_parameters.clone(),
            ice_candidates: answer.ice_candidates.clone(),
            dtls_parameters: answer.dtls_parameters.clone(),
            sctp_parameters: Some(answer.sctp_parameters),
        };
        let mut options =
            sluice_client::ClientTransportOptions::new(sluice_client::ClientNumbering::chromium());
        options.bind_ip = self.media_ip;
        let client = sluice_client::ClientTransport::new(&info, options)
            .await
            .map_err(|e| ClusterError::Pipe(e.to_string()))?;
        let made = async {
            self.publish(&Event::DataPipeConnect {
                room: room.id.clone(),
                data_producer_id: id.to_owned(),
                from: self.node_id.clone(),
                to: remote.node.clone(),
                dtls_parameters: client.dtls_parameters().clone(),
            })
            .await?;
            client.start();
            client
                .wait_connected(PIPE_TIMEOUT)
                .await
                .map_err(|e| ClusterError::Pipe(e.to_string()))?;
            let messages = client
                .consume_data(answer.stream.clone(), &answer.label)
                .await
                .map_err(|e| ClusterError::Pipe(e.to_string()))?;
            // Messages the source sends before its SCTP association is up are lost: the peers
            // here consume the pipe once its channel is open.
            client
                .wait_channels_opened(1, PIPE_TIMEOUT)
                .await
                .map_err(|e| ClusterError::Pipe(e.to_string()))?;
            let direct = room.router.create_direct_transport(None).await?;
            let mut options = DataProducerOptions::new(answer.label.clone());
            options.id = Some(id.to_owned());
            options.protocol = answer.protocol.clone();
            let data_producer = match direct.produce_data(options).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = direct.close().await;
                    return Err(e.into());
                }
            };
            Ok::<_, ClusterError>((messages, direct, data_producer))
        };
        let (mut messages, direct, data_producer) = match made.await {
            Ok(v) => v,
            Err(e) => {
                client.close();
                self.close_source(&room.id, id, &remote.node).await;
                return Err(e);
            }
        };
        if !room
            .remote_peers()
            .iter()
            .any(|(p, _)| *p == answer.peer_id)
        {
            client.close();
            let _ = direct.close().await;
            self.close_source(&room.id, id, &remote.node).await;
            return Ok(());
        }
        // Each message from the source goes out here, in order, until either side closes.
        let forward = data_producer.clone();
        let (forward_client, forward_direct) = (client.clone(), direct.clone());
        tokio::spawn(async move {
            while let Some(m) = messages.recv().await {
                let message = DataMessage {
                    binary: m.binary,
                    data: m.data,
                };
                if forward.send(message).is_err() {
                    break;
                }
            }
            forward_client.close();
            let _ = forward_direct.close().await;
        });
        self.pipes().inbound.insert(
            (room.id.clone(), id.to_owned()),
            PipeIn {
                node: remote.node.clone(),
                peer_id: answer.peer_id.clone(),
                demanded: true,
                told: Some(true),
                carrier: Carrier::Data {
                    direct,
                    client,
                    data_producer: data_producer.clone(),
                },
            },
        );
        room.add_remote_data_producer(&answer.peer_id, data_producer, answer.app_data);
        Ok(())
    }

    /// The source's side of a data pipe: a WebRTC transport with SCTP on the data producer's
    /// router and a data consumer on it; connected when the target sends its DTLS side.
    async fn data_pipe_out(
        self: &Arc<Self>,
        instance: &Instance,
        room_id: &str,
        id: &str,
        from: &str,
    ) -> Result<DataPipeAnswer, String> {
        let room = instance
            .room(room_id)
            .await
            .ok_or_else(|| format!("no room {room_id} on node {}", self.node_id))?;
        let (router, peer_id, app_data) = {
            let objects = room.objects();
            let p = objects
                .data_producers
                .get(id)
                .filter(|p| room.peer(&p.peer_id).is_some())
                .ok_or_else(|| format!("no data producer {id} on node {}", self.node_id))?;
            (
                room.routers
                    .on(p.object.worker_index())
                    .unwrap_or_else(|| room.router.clone()),
                p.peer_id.clone(),
                p.app_data.clone(),
            )
        };
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let transport = router
            .create_webrtc_transport(WebRtcTransportOptions {
                enable_tcp: false,
                events: Some(events_tx),
                ..WebRtcTransportOptions::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let consumed = transport.consume_data(DataConsumerOptions::new(id)).await;
        let (consumer, sctp) = match (consumed, transport.sctp_parameters().cloned()) {
            (Ok(c), Some(sctp)) => (c, sctp),
            (Err(e), _) => {
                let _ = transport.close().await;
                return Err(e.to_string());
            }
            (Ok(_), None) => {
                let _ = transport.close().await;
                return Err("the data pipe's transport has no SCTP".into());
            }
        };
        let Some(stream) = consumer.sctp_stream_parameters().cloned() else {
            let _ = transport.close().await;
            return Err("the data pipe's consumer has no SCTP stream".into());
        };
        let answer = DataPipeAnswer {
            ice_parameters: transport.ice_parameters().clone(),
            ice_candidates: transport.ice_candidates().to_vec(),
            dtls_parameters: transport.dtls_parameters().clone(),
            sctp_parameters: sctp,
            stream,
            label: consumer.label().to_owned(),
            protocol: consumer.protocol().to_owned(),
            peer_id,
            app_data,
        };
        let key = (room_id.to_owned(), id.to_owned(), from.to_owned());
        let replaced = self
            .pipes()
            .outbound
            .insert(key.clone(), Outbound::Data(transport.clone()));
        if let Some(old) = replaced {
            tokio::spawn(async move { old.close().await });
        }
        let cluster = self.clone();
        let consumer_id = consumer.id().to_owned();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    MediaEvent::DataConsumerClosed {
                        data_consumer_id: c,
                        ..
                    } if c == consumer_id => break,
                    MediaEvent::TransportClosed { .. } => break,
                    _ => {}
                }
            }
            let _ = transport.close().await;
            let ours = {
                let mut pipes = cluster.pipes();
                let ours = pipes
                    .outbound
                    .get(&key)
                    .is_some_and(|t| t.id() == transport.id());
                if ours {
                    pipes.outbound.remove(&key);
                }
                ours
            };
            let update = Event::PipeUpdated {
                room: key.0.clone(),
                producer_id: key.1.clone(),
                from: cluster.node_id.clone(),
                to: key.2.clone(),
                state: PipeState::Closed,
            };
            if ours && let Err(e) = cluster.publish(&update).await {
                tracing::warn!(error = %e, "cannot tell a data pipe's target");
            }
        });
        Ok(answer)
    }

    /// `room` closed here: its pipes in are told to stop at their source, its pipes out close.
    async fn room_closed(&self, room: &str) {
        let (inbound, outbound) = {
            let mut pipes = self.pipes();
            let inbound: Vec<_> = pipes
                .inbound
                .keys()
                .filter(|k| k.0 == room)
                .cloned()
                .collect();
            let inbound: Vec<_> = inbound
                .into_iter()
                .filter_map(|k| pipes.inbound.remove(&k).map(|p| (k, p)))
                .collect();
            let outbound: Vec<_> = pipes
                .outbound
                .keys()
                .filter(|k| k.0 == room)
                .cloned()
                .collect();
            let outbound: Vec<_> = outbound
                .into_iter()
                .filter_map(|k| pipes.outbound.remove(&k))
                .collect();
            (inbound, outbound)
        };
        for ((room, producer_id), pipe) in inbound {
            pipe.close().await;
            self.close_source(&room, &producer_id, &pipe.node).await;
        }
        for transport in outbound {
            let _ = transport.close().await;
        }
    }

    /// Removes from Redis the entries of `room` that name this node but that it does not hold
    /// (peers that left, producers that closed), telling the others of each peer's leaving.
    async fn audit(&self, room: &Room) -> Result<(), ClusterError> {
        // Redis first: an entry there was announced after its peer joined here, so a peer
        // joining meanwhile is in the store read next.
        let announced = self.room_peers(&room.id).await?;
        let joined: HashSet<String> = room
            .store
            .read(|s| {
                s.peers
                    .iter()
                    .filter(|(_, p)| p.joined)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for (peer_id, peer) in announced {
            if peer.node == self.node_id && !joined.contains(&peer_id) {
                tracing::warn!(room = %room.id, peer = %peer_id, "removing a peer entry this node does not hold");
                self.peer_left(&room.id, &peer_id, &self.node_id).await?;
            }
        }
        self.sync_producers(room).await
    }

    /// Audits the next [`AUDIT_ROOMS_PER_HEARTBEAT`] of `rooms` (in turn, from `cursor`).
    async fn audit_some(&self, rooms: &[Arc<Room>], cursor: &mut usize) {
        if rooms.is_empty() {
            return;
        }
        for _ in 0..AUDIT_ROOMS_PER_HEARTBEAT.min(rooms.len()) {
            *cursor = (*cursor + 1) % rooms.len();
            let room = &rooms[*cursor];
            if let Err(e) = self.audit(room).await {
                tracing::warn!(room = %room.id, error = %e, "cannot audit the room's entries");
            }
        }
    }

    /// Makes Redis hold exactly this node's joined peers of `room`.
    async fn resync(&self, room: &Arc<Room>) -> Result<(), ClusterError> {
        self.audit(room).await?;
        let here: Vec<(String, String, Device)> = room
            .store
            .read(|s| {
                s.peers
                    .iter()
                    .filter(|(_, p)| p.joined)
                    .map(|(id, p)| (id.clone(), p.display_name.clone(), p.device.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (peer_id, name, device) in here {
            self.peer_joined(&room.id, &peer_id, &name, &device).await?;
        }
        Ok(())
    }

    /// Removes every peer `node` announced, in every room, telling the nodes.
    async fn forget_node(&self, node: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn();
        let rooms: Vec<String> = self.call(conn.smembers(node_rooms_key(node))).await?;
        for room in rooms {
            let producers: Vec<String> = self
                .room_producers(&room)
                .await?
                .into_iter()
                .filter(|(_, p)| p.node == node)
                .map(|(id, _)| id)
                .collect();
            if !producers.is_empty() {
                self.call(conn.hdel::<_, _, ()>(room_producers_key(&room), producers))
                    .await?;
            }
            let data_producers: Vec<String> = self
                .room_data_producers(&room)
                .await?
                .into_iter()
                .filter(|(_, p)| p.node == node)
                .map(|(id, _)| id)
                .collect();
            if !data_producers.is_empty() {
                self.call(conn.hdel::<_, _, ()>(room_data_producers_key(&room), data_producers))
                    .await?;
            }
            for (peer_id, peer) in self.room_peers(&room).await? {
                if peer.node == node {
                    self.peer_left(&room, &peer_id, node).await?;
                }
            }
        }
        self.call(conn.del::<_, ()>(node_rooms_key(node))).await?;
        self.call(conn.srem::<_, _, ()>(NODES, node)).await?;
        if node != self.node_id {
            self.publish(&Event::NodeLost {
                node: node.to_owned(),
            })
            .await?;
        }
        Ok(())
    }

    /// Starts this node's tasks: the heartbeat (registration, load, and the nodes that stopped)
    /// and the reader of the other nodes' events.
    pub fn start(self: &Arc<Self>, instance: Weak<Instance>) {
        let cluster = self.clone();
        let weak = instance.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cluster.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut renewed = tokio::time::Instant::now();
            let mut cut_off = false;
            let mut audited = 0;
            loop {
                tick.tick().await;
                let Some(instance) = weak.upgrade() else {
                    break;
                };
                if instance.is_draining() {
                    break;
                }
                let (load, peers) = instance.load_and_peers().await;
                let rooms = instance.rooms().await;
                if let Err(e) = cluster.register(load, peers).await {
                    tracing::warn!(error = %e, "cannot renew this node's registration");
                    if !cut_off && renewed.elapsed() >= cluster.ttl {
                        // The others have removed this node's peers by now: its clients are
                        // told to try again (1013), through /api/place.
                        cut_off = true;
                        tracing::warn!("this node lost the cluster's directory; closing its peers");
                        for room in instance.rooms().await {
                            room.close_all_peers(1013, "this node lost the cluster; join again");
                        }
                    }
                    continue;
                }
                drop(instance);
                renewed = tokio::time::Instant::now();
                cluster.count_pipes();
                cluster.audit_some(&rooms, &mut audited).await;
                drop(rooms);
                // What a pipe's source could not be told, it is told now.
                cluster.retell_demand(None).await;
                if cut_off {
                    cut_off = false;
                    tracing::info!("this node is back in the cluster's directory");
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
        let mut guard = replay::ReplayGuard::new(MAX_CLOCK_SKEW.as_millis() as u64);
        let mut subscribed_before = false;
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
            if subscribed_before {
                // Whatever the targets of this node's pipes said meanwhile was not heard.
                let cluster = self.clone();
                tokio::spawn(async move { cluster.ask_for_demand().await });
            }
            subscribed_before = true;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let refusal = match open::<Stamped<Event>>(&self.key, &payload) {
                    None => "signature",
                    Some(stamped) => match guard.accept(&stamped.stamp, now_ms()) {
                        Err(r) => r.label(),
                        Ok(()) => {
                            let Some(instance) = instance.upgrade() else {
                                return;
                            };
                            self.apply(&instance, stamped.event).await;
                            continue;
                        }
                    },
                };
                // Logged once in a thousand: whoever can publish on the channel cannot flood
                // the log either.
                let n = self
                    .metrics
                    .events_ignored
                    .get_or_create(&crate::metrics::ReasonLabels { reason: refusal })
                    .inc();
                if n % 1000 == 0 {
                    tracing::warn!(
                        ignored = n + 1,
                        reason = refusal,
                        "cluster events without a valid signature, replayed or too old were ignored"
                    );
                }
            }
            tracing::warn!("the cluster's event subscription ended; subscribing again");
        }
    }

    /// Answers offer `request` of node `to` with what `work` makes, in a task of its own: the
    /// events after it are not held up by the workers.
    fn answer_in_task(
        self: &Arc<Self>,
        to: String,
        request: String,
        work: impl std::future::Future<Output = Result<Answer, String>> + Send + 'static,
    ) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let (answer, error) = match work.await {
                Ok(a) => (Some(a), None),
                Err(e) => (None, Some(e)),
            };
            let answered = cluster
                .publish(&Event::PipeAnswered {
                    to,
                    request,
                    answer,
                    error,
                })
                .await;
            if let Err(e) = answered {
                tracing::warn!(error = %e, "cannot answer a pipe offer");
            }
        });
    }

    async fn apply(self: &Arc<Self>, instance: &Arc<Instance>, event: Event) {
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
                let here = instance.room(&room).await;
                let piped: Vec<_> = self
                    .pipes()
                    .inbound
                    .iter()
                    .filter(|(k, p)| k.0 == room && p.peer_id == peer_id)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in piped {
                    self.close_pipe_in(here.as_deref(), &key).await;
                }
                if let Some(room) = here {
                    room.remote_peer_left(&peer_id);
                }
            }
            Event::ProducerCreated {
                room,
                producer_id,
                producer,
            } if producer.node != self.node_id => {
                if let Some(room) = instance.room(&room).await {
                    self.spawn_pipe_in(&room, producer_id, Remote::Media(producer));
                }
            }
            Event::PipeOffer {
                room,
                producer_id,
                from,
                to,
                request,
                addr,
                key,
                suite,
            } if to == self.node_id => {
                let (cluster, instance) = (self.clone(), instance.clone());
                self.answer_in_task(from.clone(), request, async move {
                    let offer = PipeOfferRef {
                        room: &room,
                        producer_id: &producer_id,
                        from: &from,
                        addr,
                        key: &key,
                        suite,
                    };
                    let answer = cluster.pipe_out(&instance, offer).await?;
                    Ok(Answer::Media(Box::new(answer)))
                });
            }
            Event::PipeAnswered {
                to,
                request,
                answer,
                error,
            } if to == self.node_id => {
                if let Some(tx) = self.pipes().pending.remove(&request) {
                    let _ = tx.send(answer.ok_or_else(|| error.unwrap_or_default()));
                }
            }
            Event::PipeUpdated {
                room,
                producer_id,
                from,
                to,
                state,
            } if to == self.node_id => {
                let key = (room, producer_id);
                let producer = self
                    .pipes()
                    .inbound
                    .get(&key)
                    .filter(|p| p.node == from)
                    .map(|p| match &p.carrier {
                        Carrier::Media { producer, .. } => Some((**producer).clone()),
                        Carrier::Data { .. } => None,
                    });
                let Some(producer) = producer else { return };
                let done = match (state, producer) {
                    (PipeState::Paused, Some(p)) => p.pause().await,
                    (PipeState::Resumed, Some(p)) => p.resume().await,
                    (PipeState::Paused | PipeState::Resumed, None) => Ok(()),
                    (PipeState::Closed, _) => {
                        let here = instance.room(&key.0).await;
                        self.close_pipe_in(here.as_deref(), &key).await;
                        Ok(())
                    }
                };
                if let Err(e) = done {
                    tracing::warn!(error = %e, "cannot update a piped producer");
                }
            }
            Event::PipeDemand {
                room,
                producer_id,
                from,
                to,
                demanded,
            } if to == self.node_id => {
                let key = (room, producer_id, from);
                let outbound = self.pipes().outbound.get(&key).cloned();
                if let Some(Outbound::Media { consumer, .. }) = outbound {
                    // A resume asks the producer for a keyframe.
                    let done = if demanded {
                        consumer.resume().await
                    } else {
                        consumer.pause().await
                    };
                    match done {
                        Ok(()) => {
                            if let Some(Outbound::Media {
                                consumer: c,
                                paused,
                                ..
                            }) = self.pipes().outbound.get_mut(&key)
                                && c.id() == consumer.id()
                            {
                                *paused = !demanded;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot pause or resume a pipe"),
                    }
                }
            }
            Event::PipeDemandLost { from } if from != self.node_id => {
                self.retell_demand(Some(&from)).await;
            }
            Event::PipeClosed {
                room,
                producer_id,
                from,
                to,
            } if to == self.node_id => {
                let outbound = self.pipes().outbound.remove(&(room, producer_id, from));
                if let Some(o) = outbound {
                    o.close().await;
                }
            }
            Event::NodeLost { node } => {
                let transports: Vec<Outbound> = {
                    let mut pipes = self.pipes();
                    let keys: Vec<_> = pipes
                        .outbound
                        .keys()
                        .filter(|k| k.2 == node)
                        .cloned()
                        .collect();
                    keys.iter()
                        .filter_map(|k| pipes.outbound.remove(k))
                        .collect()
                };
                for t in transports {
                    t.close().await;
                }
            }
            Event::DataProducerCreated {
                room,
                data_producer_id,
                data_producer,
            } if data_producer.node != self.node_id => {
                if let Some(room) = instance.room(&room).await {
                    self.spawn_pipe_in(&room, data_producer_id, Remote::Data(data_producer));
                }
            }
            Event::DataPipeOffer {
                room,
                data_producer_id,
                from,
                to,
                request,
            } if to == self.node_id => {
                let (cluster, instance) = (self.clone(), instance.clone());
                self.answer_in_task(from.clone(), request, async move {
                    let answer = cluster
                        .data_pipe_out(&instance, &room, &data_producer_id, &from)
                        .await?;
                    Ok(Answer::Data(Box::new(answer)))
                });
            }
            Event::DataPipeConnect {
                room,
                data_producer_id,
                from,
                to,
                dtls_parameters,
            } if to == self.node_id => {
                let outbound = self
                    .pipes()
                    .outbound
                    .get(&(room, data_producer_id, from))
                    .cloned();
                if let Some(Outbound::Data(t)) = outbound
                    && let Err(e) = t.connect(dtls_parameters).await
                {
                    tracing::warn!(error = %e, "cannot connect a data pipe");
                }
            }
            _ => {}
        }
    }

    /// Before draining: this node leaves the directory, so no new peer is placed here.
    pub async fn unregister(&self) {
        let mut conn = self.conn();
        let removed = async {
            self.call(conn.del::<_, ()>(node_key(&self.node_id)))
                .await?;
            self.call(conn.srem::<_, _, ()>(NODES, &self.node_id)).await
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

/// An offer to pipe a producer, as [`Cluster::pipe_out`] reads it.
#[derive(Debug, Clone, Copy)]
struct PipeOfferRef<'a> {
    room: &'a str,
    producer_id: &'a str,
    from: &'a str,
    addr: SocketAddr,
    key: &'a str,
    suite: SrtpCryptoSuite,
}

/// The key that encrypts pipes' SRTP keys in Redis: SHA-256 of a label and the cluster secret.
fn pipe_key(secret: &str) -> aead::LessSafeKey {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"sluice cluster pipe keys\0");
    ctx.update(secret.as_bytes());
    let bytes = ctx.finish();
    // AES-256 takes the 32 bytes of a SHA-256 digest: a key of the right length, always.
    #[allow(clippy::expect_used)]
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, bytes.as_ref())
        .expect("a SHA-256 digest is an AES-256 key");
    aead::LessSafeKey::new(key)
}

/// `plain` encrypted with `key` (AES-256-GCM, a random nonce): base64 of nonce and ciphertext.
fn hide(key: &aead::LessSafeKey, plain: &str) -> String {
    let nonce: [u8; aead::NONCE_LEN] = rand::random();
    let mut sealed = plain.as_bytes().to_vec();
    // Sealing fails only for inputs over AES-GCM's limit (64 GiB); an SRTP key is 40 bytes.
    if key
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            &mut sealed,
        )
        .is_err()
    {
        return String::new();
    }
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// What [`hide`] encrypted, if `hidden` decrypts with `key`.
fn reveal(key: &aead::LessSafeKey, hidden: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(hidden)
        .ok()?;
    if bytes.len() < aead::NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut sealed = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::empty(), &mut sealed)
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
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
    fn pipe_keys_cross_redis_encrypted_and_open_only_with_the_clusters_secret() {
        let key = pipe_key("a cluster secret of at least thirty-two bytes");
        let srtp = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU2Nzg5";
        let hidden = hide(&key, srtp);
        assert!(!hidden.contains(srtp));
        assert_ne!(hide(&key, srtp), hidden, "a fresh nonce each time");
        assert_eq!(reveal(&key, &hidden).as_deref(), Some(srtp));
        let other = pipe_key("another cluster secret of thirty-two bytes or more");
        assert_eq!(reveal(&other, &hidden), None);
        assert_eq!(reveal(&key, "short"), None);
        assert_eq!(reveal(&key, ""), None);
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
                at_ms: 0,
            },
        )
        .unwrap();
        assert_eq!(open::<Event>(&key, &node), None);
    }

    #[test]
    fn an_event_goes_on_the_channel_signed_with_its_stamp() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let stamped = Stamped {
            stamp: replay::Stamp {
                node: "n1".into(),
                boot: 42,
                seq: 3,
                sent_ms: 1_700_000_000_000,
            },
            event: Event::NodeLost { node: "n2".into() },
        };
        let sealed = seal(&key, &stamped).unwrap();
        assert!(
            sealed.contains(r#""stamp":{"node":"n1","boot":42,"seq":3,"sentMs":1700000000000}"#),
            "{sealed}"
        );
        assert_eq!(open(&key, &sealed), Some(stamped));
        // Another stamp on the same signature does not open: the stamp is signed too.
        let restamped = sealed.replace(r#""seq":3"#, r#""seq":4"#);
        assert_eq!(open::<Stamped<Event>>(&key, &restamped), None);
        // An event without a stamp (as nodes before stamps sent them) is not taken.
        let bare = seal(&key, &Event::NodeLost { node: "n2".into() }).unwrap();
        assert_eq!(open::<Stamped<Event>>(&key, &bare), None);
    }

    #[test]
    fn a_node_record_written_longer_ago_than_its_ttl_and_the_clock_skew_is_not_live() {
        let ttl = Duration::from_secs(8);
        let record = |at_ms| NodeInfo {
            id: "n".into(),
            url: "u".into(),
            load: 0,
            peers: 0,
            at_ms,
        };
        let now = 1_700_000_000_000;
        let limit = (ttl + MAX_CLOCK_SKEW).as_millis() as u64;
        assert!(record(now).is_recent(now, ttl));
        assert!(record(now - limit).is_recent(now, ttl));
        assert!(record(now + limit).is_recent(now, ttl), "a clock ahead");
        assert!(!record(now - limit - 1).is_recent(now, ttl));
        assert!(!record(0).is_recent(now, ttl), "a record without a time");
    }
}
