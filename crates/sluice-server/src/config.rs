//! Configuration: the embedded default, a TOML file, `SLUICE_*` environment variables and flags.
//!
//! Precedence, lowest to highest: the embedded default (`default.toml`) < the `--config` file <
//! environment variables < flags. The binary folds environment variables and flags into one
//! [`Overrides`] (a flag wins over its variable). Tables merge key by key; arrays replace.
//! Unknown keys and bad values are errors that name the key; `docs/config.md` lists every key.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_ortc::RtpCodecCapability;

use crate::auth::{DEV_SECRET, MIN_SECRET_BYTES};

/// The embedded default configuration (zero-config dev mode on loopback).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Environment variables the binary reads, each with the key it sets. Anything else starting
/// with `SLUICE_` is reported as unknown, so a typo does not go unnoticed.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SLUICE_CONFIG", "(path of the configuration file)"),
    ("SLUICE_LISTEN", "listen"),
    ("SLUICE_WORKERS", "workers"),
    ("SLUICE_ROOM_PLACEMENT", "placement.rooms"),
    ("SLUICE_CLUSTER_REDIS", "cluster.redis"),
    ("SLUICE_CLUSTER_SECRET", "cluster.secret"),
    ("SLUICE_NODE_ID", "cluster.node_id"),
    ("SLUICE_NODE_URL", "cluster.node_url"),
    ("SLUICE_LOG", "log"),
    ("SLUICE_RTC_IP", "rtc.ip"),
    ("SLUICE_RTC_ANNOUNCED_IP", "rtc.announced_ip"),
    ("SLUICE_RTC_PORT", "rtc.port"),
    ("SLUICE_RTC_TCP_PORT", "rtc.tcp_port"),
    ("SLUICE_AUTH_SECRET", "auth.secret"),
    ("SLUICE_TURN_SECRET", "turn.secret"),
];

/// Most worker threads a configuration may ask for.
pub const MAX_WORKERS: usize = 1024;

/// The whole configuration, after merging and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// Worker threads; 0 = one per core (see [`Config::worker_count`]).
    pub workers: usize,
    /// Log filter in tracing's EnvFilter syntax.
    pub log: String,
    pub rtc: RtcConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub router: RouterConfig,
    pub limits: Limits,
    pub signaling: SignalingConfig,
    pub data: DataConfig,
    /// Interest management: who hears and sees whom, from the players' positions.
    pub interest: InterestConfig,
    /// Game actions (`dispatchAction`): which types peers may send, how large, how often, and
    /// whether they may be cached. The first rule whose `type` matches applies; an action no
    /// rule matches is refused (403).
    #[serde(default)]
    pub actions: Vec<ActionRule>,
    /// TURN servers handed to clients (docs/config.md, "TURN").
    #[serde(default)]
    pub turn: TurnConfig,
    /// Recording through ffmpeg (docs/recording.md).
    #[serde(default)]
    pub recording: RecordingConfig,
    /// How rooms use the workers (docs/cluster.md).
    #[serde(default)]
    pub placement: PlacementConfig,
    /// Nodes sharing rooms through Redis (docs/cluster.md); absent `redis`: a single node.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: this node's place in a cluster whose directory is Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]`; absent: no cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Shared by the cluster's nodes (at least 32 bytes): they sign what they publish with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// This node's name in the cluster; absent: the host name and the listen port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The URL clients use for this node's signaling (`/api/place` answers it); absent:
    /// `http://` and the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_url: Option<String>,
    /// How often this node renews its registration and looks for nodes that stopped.
    pub heartbeat_secs: u64,
    /// A node that has not renewed its registration for this long is gone.
    pub node_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            secret: None,
            node_id: None,
            node_url: None,
            heartbeat_secs: 2,
            node_ttl_secs: 8,
        }
    }
}

/// How a room's peers are placed on the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomPlacement {
    /// A peer's transports go to a worker chosen by load; the room has a router on each worker
    /// it uses, and producers are piped between them.
    Spread,
    /// A room stays on the worker it opened on.
    Single,
}

/// `[placement]`: how rooms use the workers (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementConfig {
    pub rooms: RoomPlacement,
    /// With `spread`: a new peer goes to a worker its room already uses unless another worker
    /// carries fewer datagrams per second by more than this (0: always the least loaded).
    pub spread_above_datagrams_per_second: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            rooms: RoomPlacement::Spread,
            spread_above_datagrams_per_second: 2000,
        }
    }
}

/// `[recording]`: where recordings go, the ffmpeg that writes them, and the bounds on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordingConfig {
    /// Files go to `directory/<room>/` (created on first use).
    pub directory: PathBuf,
    /// The ffmpeg program (looked up on `PATH` without a `/`).
    pub ffmpeg: String,
    /// Bytes all recordings of one room may write; reaching it stops them (`sizeLimit`).
    pub max_bytes_per_room: u64,
    /// ffmpeg processes recording at once on this server; a recording beyond is refused (503).
    pub max_recorders: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            directory: PathBuf::from("recordings"),
            ffmpeg: "ffmpeg".to_owned(),
            max_bytes_per_room: 1 << 30,
            max_recorders: 16,
        }
    }
}

/// `[turn]`: TURN servers clients are told about, with credentials of the TURN REST API
/// (coturn's `use-auth-secret`): user name `expiry:peerId`, password the base64 HMAC-SHA1 of it
/// with the shared secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs (RFC 7065); empty: no TURN.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long a credential is valid.
    pub credential_ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            urls: Vec::new(),
            secret: None,
            credential_ttl_secs: 86_400,
        }
    }
}

/// Whether a room forwards by proximity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterestMode {
    /// Every producer to every peer, as mediasoup-demo expects (the default).
    Off,
    /// Consumers of producers out of range are paused (docs/interest.md).
    Proximity,
}

/// `[interest]`: interest management from the players' positions (docs/interest.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterestConfig {
    pub mode: InterestMode,
    /// Within this distance a player hears another (the game's units)…
    pub audio_radius: f32,
    /// …and sees its video.
    pub video_radius: f32,
    /// Players heard at most (the nearest).
    pub max_audible: usize,
    /// Players seen at most (the nearest).
    pub max_visible: usize,
    /// A player heard or seen stays so until this far beyond the radius.
    pub hysteresis: f32,
    /// Evaluations per second.
    pub rate_hz: u32,
    /// A seen player's video at a lower spatial layer the farther it is (top within a third of
    /// `video_radius`, layer 1 to two thirds, layer 0 beyond).
    #[serde(default = "InterestConfig::default_video_layers_by_distance")]
    pub video_layers_by_distance: bool,
}

impl InterestConfig {
    fn default_video_layers_by_distance() -> bool {
        true
    }

    pub fn settings(&self) -> crate::interest::InterestSettings {
        crate::interest::InterestSettings {
            audio_radius: self.audio_radius,
            video_radius: self.video_radius,
            max_audible: self.max_audible,
            max_visible: self.max_visible,
            hysteresis: self.hysteresis,
            video_layers_by_distance: self.video_layers_by_distance,
        }
    }
}

/// Who may dispatch the actions of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSender {
    /// Any joined peer.
    Any,
    /// Peers whose token grants `admin`.
    Admin,
    /// Only the server's own code (the Rust API); peers get 403.
    Server,
}

/// The policy of the game actions whose type matches `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRule {
    /// The types it covers: exact (`"game.flag.move"`), or a prefix ending in `*`
    /// (`"game.*"`; `"*"` matches every type).
    pub r#type: String,
    #[serde(default = "ActionRule::default_sender")]
    pub sender: ActionSender,
    /// Largest payload, as serialized JSON (413 beyond).
    #[serde(default = "ActionRule::default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Actions per second one peer may send under this rule (429 beyond); absent: no limit
    /// beyond `limits.requests_per_second`. May be fractional (`0.5`: one every two seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<f64>,
    /// Actions one peer may send at once before `max_per_second` applies (default: twice the
    /// rate, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Whether these actions may be cached for late joiners (`cache: true` otherwise: 403).
    #[serde(default)]
    pub cache: bool,
    /// Cached actions of one type a room keeps at most; the oldest of the type is evicted.
    #[serde(default = "ActionRule::default_max_cached")]
    pub max_cached: usize,
}

impl ActionRule {
    fn default_sender() -> ActionSender {
        ActionSender::Any
    }

    fn default_max_payload_bytes() -> usize {
        4096
    }

    fn default_max_cached() -> usize {
        64
    }

    /// Whether the rule covers `action_type`.
    pub fn matches(&self, action_type: &str) -> bool {
        match self.r#type.strip_suffix('*') {
            Some(prefix) => action_type.starts_with(prefix),
            None => self.r#type == action_type,
        }
    }
}

impl Config {
    /// The rule that applies to `action_type`: the first that matches.
    pub fn action_rule(&self, action_type: &str) -> Option<(usize, &ActionRule)> {
        self.actions
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(action_type))
    }
}

/// Every limit of the signaling server, each enforced with an error code (docs/limits.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Peers connected to one room; one more is refused at the upgrade with HTTP 429.
    pub peers_per_room: usize,
    /// WebRTC transports one peer may hold (429).
    pub transports_per_peer: usize,
    /// Audio/video producers one peer may hold (429).
    pub producers_per_peer: usize,
    /// Consumers one peer may hold; beyond it, new producers are not offered to it.
    pub consumers_per_peer: usize,
    /// Data producers (data channels it opens) one peer may hold (429).
    pub data_producers_per_peer: usize,
    /// Data consumers one peer may hold; beyond it, new data producers are not offered to it.
    pub data_consumers_per_peer: usize,
    /// Largest WebSocket message accepted; a larger one closes the socket with code 1009.
    pub max_message_bytes: usize,
    /// Requests per second a peer may send (bursts of twice that); beyond it 429, and a peer that
    /// keeps flooding is disconnected (close code 1008).
    pub requests_per_second: u32,
    /// Cached game actions one room keeps at most (all types); beyond it the oldest is evicted
    /// and counted.
    pub cached_actions_per_room: usize,
    /// Largest `appData` of a transport, producer or data producer, as serialized JSON (413):
    /// it is kept in the room's state and sent with every consumer of it.
    pub max_app_data_bytes: usize,
    /// Longest `displayName` (`join`, `changeDisplayName`, a broadcaster's), in UTF-8 bytes
    /// (413); control characters are refused (400). Every change is relayed to every peer.
    pub max_display_name_bytes: usize,
    /// Largest `device` of `join` (or of a broadcaster), as serialized JSON (413): kept in the
    /// room's state and sent to every peer. mediasoup-demo's is about 100 bytes.
    pub max_device_bytes: usize,
    /// Most `encodings` (simulcast streams) of a producer's `rtpParameters` (400); each becomes
    /// a spatial layer of every consumer. libwebrtc and mediasoup-demo send at most 3.
    pub max_encodings: usize,
    /// Largest `parameters` of one codec in a producer's `rtpParameters`, as serialized JSON
    /// (413): they go to every consumer of the producer. Opus's and H.264's are under 150 bytes.
    pub max_codec_parameters_bytes: usize,
    /// Longest `label` and `protocol` of `produceData`, each in UTF-8 bytes (413); control
    /// characters are refused (400). Both go to every data consumer.
    pub max_data_label_bytes: usize,
}

/// Timers of the signaling server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalingConfig {
    /// How often the server pings each WebSocket.
    pub ping_interval_secs: u64,
    /// A peer silent (no frame, no pong) for this long is removed.
    pub peer_timeout_secs: u64,
    /// How long the server waits for a client to answer `newConsumer` / `newDataConsumer`.
    pub request_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long peers get to leave before everything is closed.
    pub shutdown_grace_secs: u64,
}

/// Game-data settings: the optional registry of data-channel labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// When true, only labels listed in `data.labels` may be produced.
    pub label_registry: bool,
    /// Per-label rules (also applied, when present, with the registry off).
    #[serde(default)]
    pub labels: Vec<LabelRule>,
}

/// Where a label's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relay {
    /// To every other peer (and to server-side consumers).
    Peers,
    /// Only to server-side consumers (a DirectTransport of the game server).
    Server,
}

/// The rules of one data-channel label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRule {
    pub name: String,
    #[serde(default = "LabelRule::default_allowed")]
    pub allowed: bool,
    #[serde(default = "LabelRule::default_relay")]
    pub relay: Relay,
    /// Reliability of the relayed copies (absent: the producer's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u32>,
    /// Larger messages are dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    /// Messages per second per peer beyond which they are dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<u32>,
}

impl LabelRule {
    fn default_allowed() -> bool {
        true
    }

    fn default_relay() -> Relay {
        Relay::Peers
    }
}

impl DataConfig {
    /// The rule for `label`, or why it is refused.
    pub fn rule(&self, label: &str) -> Result<Option<&LabelRule>, String> {
        match self.labels.iter().find(|r| r.name == label) {
            Some(r) if !r.allowed => Err(format!("data label {label:?} is not allowed")),
            Some(r) => Ok(Some(r)),
            None if self.label_registry => Err(format!("data label {label:?} is not registered")),
            None => Ok(None),
        }
    }
}

/// Where the workers' UDP sockets live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtcConfig {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_ip: Option<IpAddr>,
    pub port: u16,
    /// How each transport estimates its egress bandwidth, from which simulcast layers are picked.
    pub bandwidth_estimation: BandwidthEstimationMode,
    /// Audio consumers' packets are written and SRTP-protected by sluice itself (docs/media.md,
    /// "Own egress"); `false` sends them through str0m as video is, at several times the CPU.
    #[serde(default = "RtcConfig::default_own_egress")]
    pub own_audio_egress: bool,
    /// The same for video consumers of single-encoding producers (NACKs answered with RTX by
    /// sluice); simulcast and SVC consumers go through str0m, whose estimator picks their layer.
    #[serde(default = "RtcConfig::default_own_egress")]
    pub own_video_egress: bool,
    /// ICE over TCP (RFC 6544 passive candidates): for clients whose network blocks UDP, and
    /// mediasoup-client's `forceTcp`.
    #[serde(default = "RtcConfig::default_tcp")]
    pub tcp: bool,
    /// First TCP port; worker i listens on tcp_port + i (0 = OS-assigned). Absent: each worker
    /// listens on the number of its UDP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
}

impl RtcConfig {
    fn default_own_egress() -> bool {
        true
    }

    fn default_tcp() -> bool {
        true
    }
}

/// `rtc.bandwidth_estimation`: `"twcc"`, `"remb"` or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BandwidthEstimationMode {
    /// Send side (transport-wide congestion control), with str0m's pacer and probing.
    Twcc,
    /// The receiving browser's REMB reports: no pacing, cheaper per packet.
    Remb,
    /// None: layers follow preferences and live layers only.
    Off,
}

impl From<BandwidthEstimationMode> for sluice_media::BandwidthEstimation {
    fn from(mode: BandwidthEstimationMode) -> Self {
        match mode {
            BandwidthEstimationMode::Twcc => sluice_media::BandwidthEstimation::Twcc,
            BandwidthEstimationMode::Remb => sluice_media::BandwidthEstimation::Remb,
            BandwidthEstimationMode::Off => sluice_media::BandwidthEstimation::Off,
        }
    }
}

/// Token verification and minting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// `None` = dev mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub token_ttl_secs: u64,
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpConfig {
    pub allowed_origins: Vec<String>,
    /// A connection that has not sent a request's whole header by then is closed (slowloris),
    /// as is a keep-alive connection idle that long. An upgraded WebSocket is past its header
    /// and is not affected.
    pub header_read_timeout_ms: u64,
    /// HTTP connections open at once, WebSockets included; one more is closed at once.
    pub max_connections: usize,
    /// HTTP connections open at once from one IP address, WebSockets included; one more from
    /// that address is closed at once. Players behind one NAT share an address.
    pub max_connections_per_ip: usize,
}

/// Settings of every router (room).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// Offer every producer of a room to every peer that can consume it (`newConsumer`, as
    /// mediasoup-demo does). Off: peers learn of producers from `newProducer` and ask for the
    /// ones they want with `consume` / `consumeData`.
    pub auto_consume: bool,
    pub media_codecs: Vec<RtpCodecCapability>,
}

/// Values from environment variables and flags, already typed by the command line parser.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub room_placement: Option<RoomPlacement>,
    pub cluster_redis: Option<String>,
    pub cluster_secret: Option<String>,
    pub node_id: Option<String>,
    pub node_url: Option<String>,
    pub log: Option<String>,
    pub rtc_ip: Option<IpAddr>,
    pub rtc_announced_ip: Option<IpAddr>,
    pub rtc_port: Option<u16>,
    pub rtc_tcp_port: Option<u16>,
    /// `--no-rtc-tcp`: `rtc.tcp = false`.
    pub no_rtc_tcp: bool,
    pub auth_secret: Option<String>,
    pub turn_secret: Option<String>,
}

/// Why a configuration could not be loaded. Every variant names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown configuration key{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    UnknownKeys(Vec<String>),
    #[error("bad value for `{key}`: {reason}")]
    BadValue { key: String, reason: String },
    #[error("unknown environment variable {name} (known: {known})")]
    UnknownEnvVar { name: String, known: String },
}

impl ConfigError {
    fn bad(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::BadValue {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Loads the configuration: the embedded default, merged with `file` if given, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file_table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Some(parse_table(&text, path)?)
            }
            None => None,
        };
        Self::from_tables(file_table, overrides)
    }

    /// Loads from TOML text instead of a file (tests, embedding).
    pub fn from_toml_str(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let table = parse_table(text, Path::new("<string>"))?;
        Self::from_tables(Some(table), overrides)
    }

    /// The embedded default with no overrides.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::from_tables(None, &Overrides::default())
    }

    fn from_tables(
        file: Option<toml::Table>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULT_TOML, Path::new("<embedded default>"))?;
        if let Some(file) = file {
            merge(&mut table, file);
        }
        apply_overrides(&mut table, overrides);
        let config = deserialize(table)?;
        config.validate()?;
        Ok(config)
    }

    /// True when no secret is configured: loopback only, dev secret, `/dev/token`.
    pub fn dev_mode(&self) -> bool {
        self.auth.secret.is_none()
    }

    /// The secret tokens are signed and checked with (the dev secret in dev mode).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let Some(url) = &c.redis else {
            return Ok(());
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::bad(
                "cluster.redis",
                "a redis:// or rediss:// URL",
            ));
        }
        if c.secret
            .as_deref()
            .is_none_or(|s| s.len() < MIN_SECRET_BYTES)
        {
            return Err(ConfigError::bad(
                "cluster.secret",
                format!("a cluster needs a secret of at least {MIN_SECRET_BYTES} bytes"),
            ));
        }
        if c.heartbeat_secs == 0 || c.node_ttl_secs <= c.heartbeat_secs {
            return Err(ConfigError::bad(
                "cluster.node_ttl_secs",
                "longer than cluster.heartbeat_secs, which is at least 1",
            ));
        }
        if c.node_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.len() > 128 || id.contains(char::is_whitespace))
        {
            return Err(ConfigError::bad(
                "cluster.node_id",
                "1 to 128 characters, no space",
            ));
        }
        Ok(())
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let turn = &self.turn;
        if turn.urls.is_empty() {
            return Ok(());
        }
        if let Some(bad) = turn
            .urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(ConfigError::bad(
                "turn.urls",
                format!("{bad:?} is not a turn: or turns: URL"),
            ));
        }
        if turn.secret.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::bad(
                "turn.secret",
                "TURN URLs need the secret shared with the TURN server",
            ));
        }
        if !(60..=7 * 86_400).contains(&turn.credential_ttl_secs) {
            return Err(ConfigError::bad(
                "turn.credential_ttl_secs",
                "between 60 s and 7 days",
            ));
        }
        Ok(())
    }

    pub fn auth_secret(&self) -> &str {
        self.auth.secret.as_deref().unwrap_or(DEV_SECRET)
    }

    /// The address put in ICE candidates.
    pub fn announced_ip(&self) -> IpAddr {
        self.rtc.announced_ip.unwrap_or(self.rtc.ip)
    }

    /// The number of worker threads to start: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The UDP port of worker `index`: `rtc.port + index`, or 0 (OS-assigned) when `rtc.port` is 0.
    pub fn worker_port(&self, index: usize) -> u16 {
        if self.rtc.port == 0 {
            return 0;
        }
        // validate() checked that rtc.port + worker_count() - 1 fits in a u16.
        u16::try_from(usize::from(self.rtc.port) + index).unwrap_or(0)
    }

    /// Where worker `index` listens for ICE over TCP.
    pub fn worker_tcp_port(&self, index: usize) -> sluice_media::TcpPort {
        match self.rtc.tcp_port {
            _ if !self.rtc.tcp => sluice_media::TcpPort::Off,
            None => sluice_media::TcpPort::SameAsUdp,
            Some(0) => sluice_media::TcpPort::Port(0),
            // validate() checked that rtc.tcp_port + worker_count() - 1 fits in a u16.
            Some(port) => {
                sluice_media::TcpPort::Port(u16::try_from(usize::from(port) + index).unwrap_or(0))
            }
        }
    }

    /// Checks rules that span keys or that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_turn()?;
        self.validate_cluster()?;
        if self.recording.ffmpeg.is_empty() {
            return Err(ConfigError::bad("recording.ffmpeg", "must name a program"));
        }
        if self.recording.max_recorders == 0 {
            return Err(ConfigError::bad(
                "recording.max_recorders",
                "must be at least 1",
            ));
        }
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::bad(
                "workers",
                format!("{} is more than the maximum {MAX_WORKERS}", self.workers),
            ));
        }
        let last_port = usize::from(self.rtc.port) + self.worker_count() - 1;
        if self.rtc.port != 0 && last_port > usize::from(u16::MAX) {
            return Err(ConfigError::bad(
                "rtc.port",
                format!(
                    "{} workers starting at port {} would need port {last_port}",
                    self.worker_count(),
                    self.rtc.port
                ),
            ));
        }
        if let Some(port) = self.rtc.tcp_port {
            let last = usize::from(port) + self.worker_count() - 1;
            if port != 0 && last > usize::from(u16::MAX) {
                return Err(ConfigError::bad(
                    "rtc.tcp_port",
                    format!(
                        "{} workers starting at port {port} would need port {last}",
                        self.worker_count()
                    ),
                ));
            }
        }
        if let Some(announced) = self.rtc.announced_ip {
            if announced.is_unspecified() {
                return Err(ConfigError::bad(
                    "rtc.announced_ip",
                    format!("{announced} cannot be announced to clients"),
                ));
            }
        } else if self.rtc.ip.is_unspecified() {
            return Err(ConfigError::bad(
                "rtc.announced_ip",
                format!(
                    "required when rtc.ip is {}: clients need an address to reach",
                    self.rtc.ip
                ),
            ));
        }
        match &self.auth.secret {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError::bad(
                    "auth.secret",
                    format!(
                        "{} bytes is too short; HS256 needs at least {MIN_SECRET_BYTES} (RFC 7518 §3.2)",
                        secret.len()
                    ),
                ));
            }
            Some(secret) if secret == DEV_SECRET => {
                return Err(ConfigError::bad(
                    "auth.secret",
                    "the well-known dev secret is not a real secret; leave the key out for dev mode",
                ));
            }
            Some(_) => {}
            None => {
                if !self.listen.ip().is_loopback() {
                    return Err(ConfigError::bad(
                        "listen",
                        format!(
                            "{} is not a loopback address, and dev mode (no auth.secret) is loopback only; set auth.secret",
                            self.listen
                        ),
                    ));
                }
                if !self.rtc.ip.is_loopback() {
                    return Err(ConfigError::bad(
                        "rtc.ip",
                        format!(
                            "{} is not a loopback address, and dev mode (no auth.secret) is loopback only; set auth.secret",
                            self.rtc.ip
                        ),
                    ));
                }
            }
        }
        if self.auth.token_ttl_secs == 0 {
            return Err(ConfigError::bad(
                "auth.token_ttl_secs",
                "must be at least 1 second",
            ));
        }
        for (i, origin) in self.http.allowed_origins.iter().enumerate() {
            if origin != "*" && !is_origin(origin) {
                return Err(ConfigError::bad(
                    &format!("http.allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is neither \"*\" nor an origin like \"https://game.example:8443\""
                    ),
                ));
            }
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.peers_per_room", l.peers_per_room),
            ("limits.transports_per_peer", l.transports_per_peer),
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.requests_per_second", l.requests_per_second as usize),
            ("limits.max_display_name_bytes", l.max_display_name_bytes),
            ("limits.max_encodings", l.max_encodings),
            ("limits.max_data_label_bytes", l.max_data_label_bytes),
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms as usize,
            ),
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::bad(key, "must be at least 1"));
            }
        }
        if l.max_message_bytes > 64 << 20 {
            return Err(ConfigError::bad(
                "limits.max_message_bytes",
                "must be at most 64 MiB",
            ));
        }
        let sig = &self.signaling;
        for (key, v) in [
            ("signaling.ping_interval_secs", sig.ping_interval_secs),
            ("signaling.peer_timeout_secs", sig.peer_timeout_secs),
            ("signaling.request_timeout_secs", sig.request_timeout_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::bad(key, "must be at least 1 second"));
            }
        }
        if sig.peer_timeout_secs <= sig.ping_interval_secs {
            return Err(ConfigError::bad(
                "signaling.peer_timeout_secs",
                "must be longer than signaling.ping_interval_secs",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.data.labels.iter().enumerate() {
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return Err(ConfigError::bad(
                    &format!("data.labels[{i}].name"),
                    format!("{:?} is empty or listed twice", rule.name),
                ));
            }
            if rule.max_retransmits.is_some() && rule.max_packet_life_time.is_some() {
                return Err(ConfigError::bad(
                    &format!("data.labels[{i}]"),
                    "max_retransmits and max_packet_life_time are exclusive",
                ));
            }
        }
        let interest = &self.interest;
        for (key, value) in [
            ("interest.audio_radius", interest.audio_radius),
            ("interest.video_radius", interest.video_radius),
        ] {
            if !value.is_finite() || value <= 0.0 {
                return Err(ConfigError::bad(key, "must be a positive number"));
            }
        }
        if !interest.hysteresis.is_finite() || interest.hysteresis < 0.0 {
            return Err(ConfigError::bad(
                "interest.hysteresis",
                "must be zero or a positive number",
            ));
        }
        if interest.rate_hz == 0 || interest.rate_hz > 100 {
            return Err(ConfigError::bad("interest.rate_hz", "must be 1 to 100"));
        }
        for (i, rule) in self.actions.iter().enumerate() {
            let pattern = rule.r#type.strip_suffix('*').unwrap_or(&rule.r#type);
            if rule.r#type.is_empty() || pattern.contains('*') {
                return Err(ConfigError::bad(
                    &format!("actions[{i}].type"),
                    format!(
                        "{:?}: an exact type, or a prefix ending in one '*'",
                        rule.r#type
                    ),
                ));
            }
            if rule.max_payload_bytes == 0 || rule.max_payload_bytes > self.limits.max_message_bytes
            {
                return Err(ConfigError::bad(
                    &format!("actions[{i}].max_payload_bytes"),
                    "must be between 1 and limits.max_message_bytes",
                ));
            }
            if rule
                .max_per_second
                .is_some_and(|r| !r.is_finite() || r <= 0.0)
            {
                return Err(ConfigError::bad(
                    &format!("actions[{i}].max_per_second"),
                    "must be a positive number",
                ));
            }
        }
        if self.router.media_codecs.is_empty() {
            return Err(ConfigError::bad(
                "router.media_codecs",
                "a router needs at least one media codec",
            ));
        }
        sluice_ortc::generate_router_rtp_capabilities(&self.router.media_codecs)
            .map_err(|e| ConfigError::bad("router.media_codecs", e.to_string()))?;
        Ok(())
    }
}

/// `scheme://host[:port]` with nothing after it.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
}

fn parse_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Merges `over` into `base`: tables key by key, anything else (arrays included) replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = match path.split_last() {
        Some(split) => split,
        None => return,
    };
    let mut table = table;
    for key in parents {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return; // unreachable: replaced by a table just above
        };
        table = inner;
    }
    table.insert(last.to_string(), value);
}

fn apply_overrides(table: &mut toml::Table, o: &Overrides) {
    let string = |v: &dyn ToString| toml::Value::String(v.to_string());
    if let Some(v) = &o.listen {
        set(table, &["listen"], string(v));
    }
    if let Some(v) = o.workers {
        set(table, &["workers"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = o.room_placement {
        let name = match v {
            RoomPlacement::Spread => "spread",
            RoomPlacement::Single => "single",
        };
        set(table, &["placement", "rooms"], string(&name));
    }
    for (value, key) in [
        (&o.cluster_redis, "redis"),
        (&o.cluster_secret, "secret"),
        (&o.node_id, "node_id"),
        (&o.node_url, "node_url"),
    ] {
        if let Some(v) = value {
            set(table, &["cluster", key], string(v));
        }
    }
    if let Some(v) = &o.log {
        set(table, &["log"], string(v));
    }
    if let Some(v) = &o.rtc_ip {
        set(table, &["rtc", "ip"], string(v));
    }
    if let Some(v) = &o.rtc_announced_ip {
        set(table, &["rtc", "announced_ip"], string(v));
    }
    if let Some(v) = o.rtc_port {
        set(table, &["rtc", "port"], toml::Value::Integer(i64::from(v)));
    }
    if let Some(v) = o.rtc_tcp_port {
        set(
            table,
            &["rtc", "tcp_port"],
            toml::Value::Integer(i64::from(v)),
        );
    }
    if o.no_rtc_tcp {
        set(table, &["rtc", "tcp"], toml::Value::Boolean(false));
    }
    if let Some(v) = &o.auth_secret {
        set(table, &["auth", "secret"], string(v));
    }
    if let Some(v) = &o.turn_secret {
        set(table, &["turn", "secret"], string(v));
    }
}

/// Deserialises the merged table, collecting every unknown key and naming the key of a bad value.
fn deserialize(table: toml::Table) -> Result<Config, ConfigError> {
    let mut unknown = BTreeSet::new();
    let mut track = serde_path_to_error::Track::new();
    let value = toml::Value::Table(table);
    let result = {
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        serde_ignored::deserialize(de, |path| {
            unknown.insert(path.to_string());
        })
    };
    match result {
        Ok(config) if unknown.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::UnknownKeys(unknown.into_iter().collect())),
        Err(e) => {
            let path = track.path().to_string();
            // The bare message: toml's Display appends an "in `key`" line we already give.
            Err(ConfigError::BadValue {
                key: path,
                reason: e.message().to_owned(),
            })
        }
    }
}

/// Checks the process environment for `SLUICE_*` variables the binary does not know.
pub fn check_env_vars(vars: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
    for name in vars {
        if name.starts_with("SLUICE_") && !ENV_VARS.iter().any(|(known, _)| *known == name) {
            let known = ENV_VARS
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::UnknownEnvVar { name, known });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, &Overrides::default())
    }

    #[test]
    fn embedded_default_is_dev_mode_on_loopback() {
        let c = Config::embedded_default().unwrap();
        assert!(c.dev_mode());
        assert!(c.listen.ip().is_loopback());
        assert!(c.rtc.ip.is_loopback());
        assert_eq!(c.auth_secret(), DEV_SECRET);
        assert_eq!(c.announced_ip(), c.rtc.ip);
        assert!(c.worker_count() >= 1);
        assert_eq!(c.http.allowed_origins, vec!["*".to_string()]);
        let mimes: Vec<_> = c
            .router
            .media_codecs
            .iter()
            .map(|m| m.mime_type.as_str())
            .collect();
        assert_eq!(
            mimes,
            ["audio/opus", "video/VP8", "video/VP9", "video/H264"]
        );
    }

    #[test]
    fn file_overrides_default_key_by_key() {
        let c = load("workers = 3\n[rtc]\nport = 50000\n").unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.rtc.port, 50000);
        // Untouched keys of the same table keep their defaults.
        assert_eq!(c.rtc.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.worker_port(0), 50000);
        assert_eq!(c.worker_port(2), 50002);
    }

    #[test]
    fn file_media_codecs_replace_the_default_list() {
        let c = load(
            "[[router.media_codecs]]\nkind = \"audio\"\nmimeType = \"audio/opus\"\nclockRate = 48000\nchannels = 2\n",
        )
        .unwrap();
        assert_eq!(c.router.media_codecs.len(), 1);
    }

    #[test]
    fn action_rules_replace_the_default_and_the_first_match_applies() {
        let default = load("").unwrap();
        assert_eq!(default.actions.len(), 1);
        assert_eq!(default.action_rule("anything").map(|(i, _)| i), Some(0));
        let c = load(
            "[[actions]]\ntype = \"game.flag.*\"\ncache = true\n\
             [[actions]]\ntype = \"game.*\"\nsender = \"admin\"\nmax_per_second = 0.5\n\
             [[actions]]\ntype = \"chat\"\n",
        )
        .unwrap();
        assert_eq!(c.actions.len(), 3);
        let pick = |t: &str| c.action_rule(t).map(|(i, _)| i);
        assert_eq!(pick("game.flag.move"), Some(0));
        assert_eq!(pick("game.flag."), Some(0));
        assert_eq!(pick("game.score"), Some(1));
        assert_eq!(pick("chat"), Some(2));
        assert_eq!(pick("chatter"), None, "an exact type is not a prefix");
        assert_eq!(pick("other"), None);
        let rule = &c.actions[1];
        assert_eq!(rule.sender, ActionSender::Admin);
        assert_eq!(rule.max_per_second, Some(0.5));
        assert_eq!(
            (rule.max_payload_bytes, rule.cache, rule.max_cached),
            (4096, false, 64)
        );
    }

    #[test]
    fn malformed_action_rules_are_named() {
        for (toml, key) in [
            ("[[actions]]\ntype = \"a*b\"\n", "actions[0].type"),
            ("[[actions]]\ntype = \"\"\n", "actions[0].type"),
            (
                "[[actions]]\ntype = \"a\"\n[[actions]]\ntype = \"b\"\nmax_payload_bytes = 0\n",
                "actions[1].max_payload_bytes",
            ),
            (
                "[[actions]]\ntype = \"a\"\nmax_per_second = -1.0\n",
                "actions[0].max_per_second",
            ),
        ] {
            let err = load(toml).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadValue { key: k, .. } if k == key),
                "{toml}: {err}"
            );
        }
        let err = load("[[actions]]\ntype = \"a\"\nsendr = \"any\"\n").unwrap_err();
        assert!(err.to_string().contains("actions.0.sendr"), "{err}");
    }

    #[test]
    fn overrides_win_over_file() {
        let o = Overrides {
            workers: Some(2),
            rtc_port: Some(41000),
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            turn_secret: Some("from-the-environment".into()),
            ..Default::default()
        };
        let c = Config::from_toml_str(
            "workers = 7\nlisten = \"127.0.0.1:1234\"\n[turn]\nurls = [\"turn:h\"]\nsecret = \"file\"\n",
            &o,
        )
        .unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.rtc.port, 41000);
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.turn.secret.as_deref(), Some("from-the-environment"));
    }

    #[test]
    fn unknown_keys_are_reported_by_name() {
        let err = load("wrokers = 2\n[rtc]\nprot = 1\n").unwrap_err();
        match err {
            ConfigError::UnknownKeys(keys) => assert_eq!(keys, ["rtc.prot", "wrokers"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_key_inside_a_media_codec_is_reported() {
        let err = load(
            "[[router.media_codecs]]\nkind = \"audio\"\nmimeType = \"audio/opus\"\nclockRate = 48000\nchannels = 2\nclokRate = 1\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("router.media_codecs"), "{msg}");
        assert!(msg.contains("clokRate"), "{msg}");
    }

    #[test]
    fn bad_value_names_its_key() {
        let err = load("[rtc]\nport = \"forty\"\n").unwrap_err();
        match &err {
            ConfigError::BadValue { key, .. } => assert_eq!(key, "rtc.port"),
            other => panic!("unexpected {other:?}"),
        }
        let err = load("listen = \"not an address\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "listen"),
            "{err}"
        );
        let err = load("[rtc]\nport = 70000\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.port"),
            "{err}"
        );
    }

    #[test]
    fn turn_urls_need_their_scheme_and_the_shared_secret() {
        assert!(load("").unwrap().turn.urls.is_empty());
        let ok = load(
            "[turn]\nurls = [\"turn:127.0.0.1:3478\", \"turns:t.example:5349\"]\nsecret = \"s3cret\"\n",
        )
        .unwrap();
        assert_eq!(ok.turn.urls.len(), 2);
        assert_eq!(ok.turn.credential_ttl_secs, 86_400);
        for (text, key) in [
            ("[turn]\nurls = [\"turn:h:3478\"]\n", "turn.secret"),
            (
                "[turn]\nurls = [\"http://h\"]\nsecret = \"s\"\n",
                "turn.urls",
            ),
            (
                "[turn]\nurls = [\"turn:h\"]\nsecret = \"s\"\ncredential_ttl_secs = 1\n",
                "turn.credential_ttl_secs",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadValue { key: k, .. } if k == key),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn the_own_video_egress_is_on_unless_turned_off() {
        assert!(load("").unwrap().rtc.own_video_egress);
        assert!(
            !load("[rtc]\nown_video_egress = false\n")
                .unwrap()
                .rtc
                .own_video_egress
        );
        let err = load("[rtc]\nown_video_egress = 1\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.own_video_egress"),
            "{err}"
        );
    }

    #[test]
    fn the_own_audio_egress_is_on_unless_turned_off() {
        assert!(load("").unwrap().rtc.own_audio_egress);
        assert!(
            !load("[rtc]\nown_audio_egress = false\n")
                .unwrap()
                .rtc
                .own_audio_egress
        );
        let err = load("[rtc]\nown_audio_egress = \"no\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.own_audio_egress"),
            "{err}"
        );
    }

    #[test]
    fn bandwidth_estimation_is_one_of_three_modes_and_defaults_to_twcc() {
        assert_eq!(
            load("").unwrap().rtc.bandwidth_estimation,
            BandwidthEstimationMode::Twcc
        );
        for (text, mode) in [
            ("remb", BandwidthEstimationMode::Remb),
            ("off", BandwidthEstimationMode::Off),
        ] {
            let c = load(&format!("[rtc]\nbandwidth_estimation = \"{text}\"\n")).unwrap();
            assert_eq!(c.rtc.bandwidth_estimation, mode);
        }
        for bad in ["true", "\"gcc\""] {
            let err = load(&format!("[rtc]\nbandwidth_estimation = {bad}\n")).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.bandwidth_estimation"),
                "{err}"
            );
        }
    }

    #[test]
    fn toml_syntax_error_is_reported() {
        let err = load("workers = \n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn missing_file_is_reported_with_its_path() {
        let err = Config::load(
            Some(Path::new("/nonexistent/sluice.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/sluice.toml"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_listen_without_secret_refuses_to_start() {
        let err = load("listen = \"0.0.0.0:8800\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "listen"),
            "{err}"
        );
        let err = load("[rtc]\nip = \"10.0.0.1\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.ip"),
            "{err}"
        );
    }

    #[test]
    fn non_loopback_listen_with_secret_is_production_mode() {
        let c = load(&format!(
            "listen = \"0.0.0.0:8800\"\n[rtc]\nip = \"0.0.0.0\"\nannounced_ip = \"203.0.113.7\"\n[auth]\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap();
        assert!(!c.dev_mode());
        assert_eq!(c.auth_secret(), SECRET);
        assert_eq!(c.announced_ip(), "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn short_or_dev_secret_is_rejected() {
        let err = load("[auth]\nsecret = \"short\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "auth.secret"),
            "{err}"
        );
        let err = load(&format!("[auth]\nsecret = \"{DEV_SECRET}\"\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "auth.secret"),
            "{err}"
        );
    }

    #[test]
    fn unspecified_rtc_ip_needs_an_announced_ip() {
        let err = load(&format!(
            "[rtc]\nip = \"0.0.0.0\"\n[auth]\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.announced_ip"),
            "{err}"
        );
    }

    #[test]
    fn tcp_listens_on_the_udp_port_numbers_unless_moved_or_turned_off() {
        let c = load("workers = 2\n[rtc]\nport = 41000\n").unwrap();
        assert_eq!(c.worker_tcp_port(1), sluice_media::TcpPort::SameAsUdp);
        let c = load("workers = 2\n[rtc]\ntcp_port = 42000\n").unwrap();
        assert_eq!(c.worker_tcp_port(1), sluice_media::TcpPort::Port(42001));
        let c = load("[rtc]\ntcp = false\ntcp_port = 42000\n").unwrap();
        assert_eq!(c.worker_tcp_port(0), sluice_media::TcpPort::Off);
        let err = load("workers = 2\n[rtc]\ntcp_port = 65535\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.tcp_port"),
            "{err}"
        );
    }

    #[test]
    fn worker_ports_must_fit_in_u16() {
        let err = load("workers = 4\n[rtc]\nport = 65534\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "rtc.port"),
            "{err}"
        );
        let c = load("workers = 2\n[rtc]\nport = 65534\n").unwrap();
        assert_eq!(c.worker_port(1), 65535);
    }

    #[test]
    fn port_zero_lets_every_worker_take_a_free_port() {
        let c = load("workers = 4\n[rtc]\nport = 0\n").unwrap();
        assert_eq!(c.worker_port(0), 0);
        assert_eq!(c.worker_port(3), 0);
    }

    #[test]
    fn too_many_workers_is_rejected() {
        let err = load("workers = 5000\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "workers"),
            "{err}"
        );
    }

    #[test]
    fn bad_origin_is_rejected_with_its_index() {
        let err = load("[http]\nallowed_origins = [\"*\", \"game.example\"]\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "http.allowed_origins[1]"),
            "{err}"
        );
        load("[http]\nallowed_origins = [\"https://game.example:8443\"]\n").unwrap();
    }

    #[test]
    fn unsupported_media_codec_is_rejected() {
        let err = load(
            "[[router.media_codecs]]\nkind = \"audio\"\nmimeType = \"audio/speex\"\nclockRate = 8000\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "router.media_codecs"),
            "{err}"
        );
        let err = load("[router]\nmedia_codecs = []\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "router.media_codecs"),
            "{err}"
        );
    }

    #[test]
    fn zero_token_ttl_is_rejected() {
        let err = load("[auth]\ntoken_ttl_secs = 0\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == "auth.token_ttl_secs"),
            "{err}"
        );
    }

    #[test]
    fn unknown_sluice_env_var_is_reported() {
        check_env_vars(["PATH".into(), "SLUICE_LISTEN".into()]).unwrap();
        let err = check_env_vars(["SLUICE_WORKER".into()]).unwrap_err();
        assert!(err.to_string().contains("SLUICE_WORKER"), "{err}");
        assert!(err.to_string().contains("SLUICE_WORKERS"), "{err}");
    }

    #[test]
    fn every_documented_key_of_the_default_round_trips() {
        // The embedded default serialises back to a table with exactly the documented top-level keys.
        let c = Config::embedded_default().unwrap();
        let table = toml::Table::try_from(&c).unwrap();
        let keys: Vec<_> = table.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "actions",
                "auth",
                "cluster",
                "data",
                "http",
                "interest",
                "limits",
                "listen",
                "log",
                "placement",
                "recording",
                "router",
                "rtc",
                "signaling",
                "turn",
                "workers"
            ]
        );
        let again: Config = table.try_into().unwrap();
        assert_eq!(again, c);
    }
}
