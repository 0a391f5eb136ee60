//! Typed payloads of mediasoup-demo's methods: client→server requests and their responses,
//! server→client requests, and server→client notifications.
//!
//! Every payload reads and writes the camelCase JSON mediasoup-demo and mediasoup-client exchange.
//! Unknown fields are ignored (clients differ); a missing required field or a wrong type is a
//! [`DecodeError::MalformedPayload`] naming the method. `appData` is any JSON object and defaults
//! to `{}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sluice_ortc::{
    DtlsParameters, IceCandidate, IceParameters, MediaKind, RtpCapabilities, RtpParameters,
    SctpCapabilities, SctpParameters, SctpStreamParameters,
};

use crate::envelope::Message;
use crate::error::DecodeError;

/// Application data attached to a transport, producer or consumer: any JSON object.
pub type AppData = Map<String, Value>;

/// The result of the `get*Stats` methods: an array of mediasoup stats objects, kept as JSON.
pub type Stats = Vec<Value>;

/// Reads `appData`, taking `null` as `{}`.
fn app_data<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AppData, D::Error> {
    Ok(Option::<AppData>::deserialize(deserializer)?.unwrap_or_default())
}

/// An empty payload, written as `{}`; reads any object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// What a peer says about its device (mediasoup-demo shows it next to the peer's name). Members
/// other than `flag`, `name` and `version` (mediasoup-demo also sends `os`, `platform`, …) are kept
/// in `extra` so a server can relay them unchanged, or drop them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// A short tag, e.g. `"chrome"`, `"firefox"`, `"broadcaster"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{ transportId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportRef {
    pub transport_id: String,
}

/// `{ producerId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRef {
    pub producer_id: String,
}

/// `{ consumerId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    pub consumer_id: String,
}

/// `{ dataProducerId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerRef {
    pub data_producer_id: String,
}

/// `{ dataConsumerId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerRef {
    pub data_consumer_id: String,
}

/// `{ peerId }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRef {
    pub peer_id: String,
}

/// `{ id }`: the answer to `produce` and `produceData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdResponse {
    pub id: String,
}

// ---------------------------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------------------------

/// `join` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub display_name: String,
    #[serde(default)]
    pub device: Device,
    /// The device's receive capabilities (mediasoup-client's `device.recvRtpCapabilities`); absent
    /// when the peer will not consume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_capabilities: Option<RtpCapabilities>,
    /// Absent when the peer does not use data channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
}

/// One peer already in the room, as `join` lists it and `newPeer` announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub device: Device,
}

/// `join` response: the peers already joined (not including the caller), and the room's
/// interest radii when it has interest management (an extension; absent otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub peers: Vec<PeerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest: Option<JoinInterest>,
}

/// The interest radii of a room with interest management, in the game's units: a page can
/// fade the players it hears and sees as they near the edge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinInterest {
    pub audio_radius: f32,
    pub video_radius: f32,
}

/// `createWebRtcTransport` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWebRtcTransportRequest {
    /// Offer only TCP candidates.
    #[serde(default)]
    pub force_tcp: bool,
    /// The transport will send media and data (a send transport). With neither flag given, a
    /// transport does both; with one given, the other is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producing: Option<bool>,
    /// The transport will receive media and data (a receive transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consuming: Option<bool>,
    /// Present to open an SCTP association (data channels) on the transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
    #[serde(
        default,
        deserialize_with = "app_data",
        skip_serializing_if = "Map::is_empty"
    )]
    pub app_data: AppData,
}

/// `createWebRtcTransport` response: what mediasoup-client's `createSendTransport` /
/// `createRecvTransport` need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWebRtcTransportResponse {
    pub id: String,
    pub ice_parameters: IceParameters,
    pub ice_candidates: Vec<IceCandidate>,
    pub dtls_parameters: DtlsParameters,
    /// Present when the request carried `sctpCapabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_parameters: Option<SctpParameters>,
    /// TURN servers for the client's `RTCPeerConnection` (`[turn]` configured), with
    /// time-limited credentials; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// `connectWebRtcTransport` request: the client's DTLS role and fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectWebRtcTransportRequest {
    pub transport_id: String,
    pub dtls_parameters: DtlsParameters,
}

/// `produce` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceRequest {
    pub transport_id: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
}

/// `produceData` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceDataRequest {
    pub transport_id: String,
    pub sctp_stream_parameters: SctpStreamParameters,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
}

/// `setConsumerPreferredLayers` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConsumerPreferredLayersRequest {
    pub consumer_id: String,
    pub spatial_layer: u8,
    /// Absent means the highest temporal layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_layer: Option<u8>,
}

/// `setConsumerPriority` request; mediasoup's priorities run from 1 to 255.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConsumerPriorityRequest {
    pub consumer_id: String,
    pub priority: u8,
}

/// `changeDisplayName` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeDisplayNameRequest {
    pub display_name: String,
}

/// `consume` request: a consumer of one producer, on the caller's receive transport. The answer
/// is what `newConsumer` carries ([`NewConsumerRequest`]); the consumer starts paused, and the
/// client resumes it with `resumeConsumer` once it has set it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeRequest {
    pub producer_id: String,
}

/// `consumeData` request: a data consumer of one data producer. The answer is what
/// `newDataConsumer` carries ([`NewDataConsumerRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeDataRequest {
    pub data_producer_id: String,
}

/// `dispatchAction` request: a game action for the room (or for the peers in `to`). The server
/// checks it against the room's action policies, numbers it, applies it to the room's store and
/// delivers it as an `action` notification to the other joined peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchActionRequest {
    /// The action's type, e.g. `"game.flag.move"`: what the policies match.
    pub r#type: String,
    /// Any JSON; its serialized size counts against the policy's limit.
    #[serde(default)]
    pub payload: Value,
    /// Keep it for late joiners (if the policy allows caching).
    #[serde(default)]
    pub cache: bool,
    /// With `cache`: replaces the cached action of the same type and key, so the cache holds
    /// state rather than history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Only these peers receive it (never cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
}

/// The answer to `dispatchAction`: the action's sequence number in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchActionResponse {
    pub seq: u64,
}

// ---------------------------------------------------------------------------------------------
// Server → client requests
// ---------------------------------------------------------------------------------------------

/// The kind of a consumer, as mediasoup names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerType {
    Simple,
    Simulcast,
    Svc,
    Pipe,
}

/// `newConsumer` request: the server created a (paused) consumer for the peer; the client makes the
/// matching mediasoup-client consumer and answers `{}`, after which the server resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewConsumerRequest {
    /// The peer whose producer this consumes.
    pub peer_id: String,
    pub producer_id: String,
    pub id: String,
    pub kind: MediaKind,
    pub rtp_parameters: RtpParameters,
    #[serde(rename = "type")]
    pub r#type: ConsumerType,
    /// The producer's `appData` (mediasoup-demo passes it on).
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
    pub producer_paused: bool,
}

/// `newDataConsumer` request; the client answers `{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDataConsumerRequest {
    /// The peer owning the data producer; `null` for a server-side data producer.
    #[serde(default)]
    pub peer_id: Option<String>,
    pub data_producer_id: String,
    pub id: String,
    pub sctp_stream_parameters: SctpStreamParameters,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
}

// ---------------------------------------------------------------------------------------------
// Server → client notifications
// ---------------------------------------------------------------------------------------------

/// `peerDisplayNameChanged` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerDisplayNameChanged {
    pub peer_id: String,
    pub display_name: String,
    pub old_display_name: String,
}

/// The score of one stream of a producer (0 = unusable … 10 = perfect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStreamScore {
    pub encoding_idx: u32,
    pub ssrc: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    pub score: u8,
}

/// `producerScore` notification, sent to the producer's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerScore {
    pub producer_id: String,
    pub score: Vec<ProducerStreamScore>,
}

/// A consumer's score: its own, its producer's current stream's, and every producer stream's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerScoreValue {
    pub score: u8,
    pub producer_score: u8,
    #[serde(default)]
    pub producer_scores: Vec<u8>,
}

/// `consumerScore` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerScore {
    pub consumer_id: String,
    pub score: ConsumerScoreValue,
}

/// `consumerLayersChanged` notification; both layers are `null` when the consumer receives
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLayersChanged {
    pub consumer_id: String,
    #[serde(default)]
    pub spatial_layer: Option<u8>,
    #[serde(default)]
    pub temporal_layer: Option<u8>,
}

/// `action` notification: a game action of the room, stamped by the server with its sender
/// (`from`: a peer id, or `null` for the server's own) and its sequence number in the room,
/// which grows by one per action of the room. A late joiner receives the room's cached actions
/// this way, oldest first, right after its `join` is answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionNotification {
    pub r#type: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub from: Option<String>,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

/// `newProducer` notification (routers without `auto_consume`): another peer's producer that
/// the client may `consume`. Peers that join later receive one per existing producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewProducer {
    pub peer_id: String,
    pub producer_id: String,
    pub kind: MediaKind,
    pub paused: bool,
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
}

/// `newDataProducer` notification (routers without `auto_consume`): another peer's data producer
/// that the client may `consumeData`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDataProducer {
    pub peer_id: String,
    pub data_producer_id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, deserialize_with = "app_data")]
    pub app_data: AppData,
}

/// `activeSpeaker` notification: the loudest peer, or `peerId: null` (and no volume) on silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSpeaker {
    #[serde(default)]
    pub peer_id: Option<String>,
    /// Audio level in dBov (−127 … 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<i32>,
}

/// `downlinkBwe` notification: the receive transport's bandwidth estimation, in bits per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownlinkBwe {
    pub desired_bitrate: u64,
    pub effective_desired_bitrate: u64,
    pub available_bitrate: u64,
}

/// `transportClosed` notification (sluice's own; mediasoup-demo has none): one of the peer's
/// transports was closed by the server without the peer asking, e.g. after a DTLS close_notify
/// or a certificate that does not match the fingerprint. Its producers, consumers and data
/// objects are gone with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportClosed {
    pub transport_id: String,
    /// Why: `remoteClosed` (DTLS close_notify), `dtlsFailed` (handshake failure, a certificate
    /// that does not match the fingerprint), `sessionError`, or another of the media plane's
    /// close reasons.
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Method enums
// ---------------------------------------------------------------------------------------------

/// Decodes `data` as the payload of `method`, turning serde's error into
/// [`DecodeError::MalformedPayload`]. Use it for responses, whose type the caller knows from the
/// method it sent: `decode_payload::<JoinResponse>("join", data)`.
pub fn decode_payload<T: DeserializeOwned>(
    method: &'static str,
    data: Value,
) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(data).map_err(|e| DecodeError::malformed(method, &e))
}

/// A payload as a JSON value.
pub fn encode_payload<T: Serialize>(payload: &T) -> Value {
    // Cannot fail for this crate's payloads: every map key is a string, and serde_json's value
    // serialiser turns non-finite floats into null rather than erroring.
    serde_json::to_value(payload).expect("a protocol payload always serialises to JSON")
}

/// Request and notification payloads are objects; `null` (protoo's "no data") counts as `{}`.
/// serde would otherwise also read a struct from a JSON array, positionally.
fn request_object(method: &'static str, data: Value) -> Result<Value, DecodeError> {
    match data {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(data),
        _ => Err(DecodeError::MalformedPayload {
            method,
            reason: "data must be a JSON object".to_owned(),
        }),
    }
}

macro_rules! method_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($payload:ty) = $method:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($payload), )*
        }

        impl $name {
            /// Every method name of this enum, in declaration order.
            pub const METHODS: &'static [&'static str] = &[$($method),*];

            /// The protoo method name.
            pub fn method(&self) -> &'static str {
                match self {
                    $( $name::$variant(_) => $method, )*
                }
            }

            /// Decodes the payload of `method`. An unknown method is
            /// [`DecodeError::UnknownMethod`]; a payload that does not fit is
            /// [`DecodeError::MalformedPayload`]. Never panics.
            pub fn decode(method: &str, data: Value) -> Result<Self, DecodeError> {
                match method {
                    $( $method => decode_payload::<$payload>($method, request_object($method, data)?)
                        .map($name::$variant), )*
                    other => Err(DecodeError::unknown_method(other)),
                }
            }

            /// The payload as the message's `data`.
            pub fn data(&self) -> Value {
                match self {
                    $( $name::$variant(payload) => encode_payload(payload), )*
                }
            }
        }
    };
}

method_enum! {
    /// A request a client sends to the server. The response payload of each method is named on its
    /// variant; a method without a result answers `{}` ([`Empty`]).
    pub enum ClientRequest {
        /// → [`RtpCapabilities`] of the room's router.
        GetRouterRtpCapabilities(Empty) = "getRouterRtpCapabilities",
        /// → [`JoinResponse`].
        Join(JoinRequest) = "join",
        /// → [`CreateWebRtcTransportResponse`].
        CreateWebRtcTransport(CreateWebRtcTransportRequest) = "createWebRtcTransport",
        /// → `{}`.
        ConnectWebRtcTransport(ConnectWebRtcTransportRequest) = "connectWebRtcTransport",
        /// → the new [`IceParameters`].
        RestartIce(TransportRef) = "restartIce",
        /// → [`IdResponse`] (the producer id).
        Produce(ProduceRequest) = "produce",
        /// → `{}`.
        CloseProducer(ProducerRef) = "closeProducer",
        /// → `{}`.
        PauseProducer(ProducerRef) = "pauseProducer",
        /// → `{}`.
        ResumeProducer(ProducerRef) = "resumeProducer",
        /// → [`IdResponse`] (the data producer id).
        ProduceData(ProduceDataRequest) = "produceData",
        /// → `{}`.
        PauseConsumer(ConsumerRef) = "pauseConsumer",
        /// → `{}`.
        ResumeConsumer(ConsumerRef) = "resumeConsumer",
        /// → `{}`.
        SetConsumerPreferredLayers(SetConsumerPreferredLayersRequest) = "setConsumerPreferredLayers",
        /// → `{}`.
        SetConsumerPriority(SetConsumerPriorityRequest) = "setConsumerPriority",
        /// → `{}`.
        RequestConsumerKeyFrame(ConsumerRef) = "requestConsumerKeyFrame",
        /// → `{}`.
        ChangeDisplayName(ChangeDisplayNameRequest) = "changeDisplayName",
        /// → [`Stats`].
        GetTransportStats(TransportRef) = "getTransportStats",
        /// → [`Stats`].
        GetProducerStats(ProducerRef) = "getProducerStats",
        /// → [`Stats`].
        GetConsumerStats(ConsumerRef) = "getConsumerStats",
        /// → [`Stats`].
        GetDataProducerStats(DataProducerRef) = "getDataProducerStats",
        /// → [`Stats`].
        GetDataConsumerStats(DataConsumerRef) = "getDataConsumerStats",
        /// → [`DispatchActionResponse`].
        DispatchAction(DispatchActionRequest) = "dispatchAction",
        /// → [`NewConsumerRequest`] (the consumer's parameters; it starts paused).
        Consume(ConsumeRequest) = "consume",
        /// → [`NewDataConsumerRequest`].
        ConsumeData(ConsumeDataRequest) = "consumeData",
    }
}

method_enum! {
    /// A request the server sends to a client; the client answers `{}` ([`Empty`]) once it has set
    /// up its side, or an error to refuse.
    pub enum ServerRequest {
        NewConsumer(NewConsumerRequest) = "newConsumer",
        NewDataConsumer(NewDataConsumerRequest) = "newDataConsumer",
    }
}

method_enum! {
    /// A notification the server sends to a client.
    pub enum ServerNotification {
        /// A peer joined the room.
        NewPeer(PeerInfo) = "newPeer",
        /// A peer left the room.
        PeerClosed(PeerRef) = "peerClosed",
        PeerDisplayNameChanged(PeerDisplayNameChanged) = "peerDisplayNameChanged",
        ProducerScore(ProducerScore) = "producerScore",
        /// The consumer is gone (its producer or transport closed).
        ConsumerClosed(ConsumerRef) = "consumerClosed",
        /// The consumer's producer paused.
        ConsumerPaused(ConsumerRef) = "consumerPaused",
        /// The consumer's producer resumed.
        ConsumerResumed(ConsumerRef) = "consumerResumed",
        ConsumerScore(ConsumerScore) = "consumerScore",
        ConsumerLayersChanged(ConsumerLayersChanged) = "consumerLayersChanged",
        DataConsumerClosed(DataConsumerRef) = "dataConsumerClosed",
        ActiveSpeaker(ActiveSpeaker) = "activeSpeaker",
        DownlinkBwe(DownlinkBwe) = "downlinkBwe",
        /// One of the peer's transports was closed by the server (DTLS closed or failed).
        TransportClosed(TransportClosed) = "transportClosed",
        /// A game action (`dispatchAction`), or a cached one replayed to a late joiner.
        Action(ActionNotification) = "action",
        /// Without `auto_consume`: a producer the client may `consume`…
        NewProducer(NewProducer) = "newProducer",
        /// …and when it is gone.
        ProducerClosed(ProducerRef) = "producerClosed",
        /// Without `auto_consume`: a data producer the client may `consumeData`…
        NewDataProducer(NewDataProducer) = "newDataProducer",
        /// …and when it is gone.
        DataProducerClosed(DataProducerRef) = "dataProducerClosed",
    }
}

impl ClientRequest {
    /// The request as a protoo message with the given id.
    pub fn to_message(&self, id: u64) -> Message {
        Message::request(id, self.method(), self.data())
    }

    /// Decodes a request message; the id is returned alongside.
    pub fn from_message(message: &Message) -> Result<(u64, ClientRequest), DecodeError> {
        match message {
            Message::Request { id, method, data } => {
                Ok((*id, ClientRequest::decode(method, data.clone())?))
            }
            _ => Err(DecodeError::UnexpectedKind {
                expected: "request",
            }),
        }
    }
}

impl ServerRequest {
    /// The request as a protoo message with the given id.
    pub fn to_message(&self, id: u64) -> Message {
        Message::request(id, self.method(), self.data())
    }

    /// Decodes a request message; the id is returned alongside.
    pub fn from_message(message: &Message) -> Result<(u64, ServerRequest), DecodeError> {
        match message {
            Message::Request { id, method, data } => {
                Ok((*id, ServerRequest::decode(method, data.clone())?))
            }
            _ => Err(DecodeError::UnexpectedKind {
                expected: "request",
            }),
        }
    }
}

impl ServerNotification {
    /// The notification as a protoo message.
    pub fn to_message(&self) -> Message {
        Message::notification(self.method(), self.data())
    }

    /// Decodes a notification message.
    pub fn from_message(message: &Message) -> Result<ServerNotification, DecodeError> {
        match message {
            Message::Notification { method, data } => {
                ServerNotification::decode(method, data.clone())
            }
            _ => Err(DecodeError::UnexpectedKind {
                expected: "notification",
            }),
        }
    }
}

impl From<ServerNotification> for Message {
    fn from(notification: ServerNotification) -> Message {
        notification.to_message()
    }
}

impl TryFrom<&Message> for ServerNotification {
    type Error = DecodeError;

    fn try_from(message: &Message) -> Result<Self, DecodeError> {
        ServerNotification::from_message(message)
    }
}
