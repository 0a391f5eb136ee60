//! mediasoup-demo's broadcaster REST API: tools without a protoo connection (ffmpeg, GStreamer,
//! as in mediasoup-demo's `broadcasters/ffmpeg.sh`, or a WebRTC stack driven over HTTP) join a
//! room as a *broadcaster* and send media to plain or WebRTC transports; the room's peers see a
//! new peer and consume its producers as any other's (docs/broadcaster.md).
//!
//! - `POST /rooms/{roomId}/broadcasters` `{id, displayName, device}`: joins; answers `{peers}`.
//! - `DELETE /rooms/{roomId}/broadcasters/{broadcasterId}`: leaves (its producers close).
//! - `POST …/{broadcasterId}/transports` `{type: "plain", comedia, rtcpMux, enableSrtp}`:
//!   answers `{id, ip, port, rtcpPort, srtpParameters}`; `{type: "webrtc", sctpCapabilities}`:
//!   `{id, iceParameters, iceCandidates, dtlsParameters, sctpParameters}`.
//! - `POST …/transports/{transportId}/connect` `{ip, port, srtpParameters}` (plain) or
//!   `{dtlsParameters}` (WebRTC).
//! - `POST …/transports/{transportId}/producers` `{kind, rtpParameters, appData}`: `{id}`; on a
//!   plain transport each encoding needs its `ssrc`.
//! - `POST …/transports/{transportId}/produce/data` `{sctpStreamParameters, label, protocol,
//!   appData}`: `{id}` (WebRTC transports; the data grant).
//! - `POST …/transports/{transportId}/consume?producerId=P`: `{id, producerId, kind,
//!   rtpParameters, type}`: the producer's RTP is sent to the transport's remote (needs
//!   `rtpCapabilities` when joining, and the subscribe grant).
//!
//! Every request carries a token (`Authorization: Bearer`, or `?token=`) for that room whose
//! subject is the broadcaster's id, as `/ws` does for peers; producing needs the publish grant.
//! Errors are `{"error": reason}` with the status of the matching protoo error code.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_media::ortc::{
    DtlsParameters, MediaKind, NumSctpStreams, RtpCapabilities, RtpParameters, SctpCapabilities,
    SctpStreamParameters,
};
use sluice_media::{
    Consumer, ConsumerOptions, PlainTransport, PlainTransportConnect, PlainTransportOptions,
    Producer, ProducerOptions, SrtpCryptoSuite, SrtpParameters, WebRtcTransport,
    WebRtcTransportOptions,
};
use sluice_protocol::{Device, ErrorCode, ProduceDataRequest};

use crate::auth::Grants;
use crate::error::{SignalError, clip, clip_reason};
use crate::instance::Instance;
use crate::room::{BroadcasterEntry, Owned, Room, TransportEntry};
use crate::store::Action;
use crate::ws::{bearer, room_id_error, valid_id};

/// A refused request: its status and why.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Reasons may quote the client's values (serde's messages, ids): kept short.
        (self.0, Json(json!({ "error": clip_reason(&self.1) }))).into_response()
    }
}

impl From<SignalError> for Refusal {
    fn from(e: SignalError) -> Self {
        let status = StatusCode::from_u16(e.code.as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
        Refusal(status, e.reason)
    }
}

impl From<sluice_media::MediaError> for Refusal {
    fn from(e: sluice_media::MediaError) -> Self {
        SignalError::from(e).into()
    }
}

pub(crate) type Answer = Result<Json<Value>, Refusal>;

/// `?token=` (the header is the other way).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBroadcaster {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    device: Option<Device>,
    #[serde(default)]
    rtp_capabilities: Option<RtpCapabilities>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateTransport {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    comedia: bool,
    #[serde(default = "yes")]
    rtcp_mux: bool,
    #[serde(default)]
    enable_srtp: bool,
    #[serde(default)]
    srtp_crypto_suite: Option<SrtpCryptoSuite>,
    /// WebRTC: SCTP (data channels) with these stream counts.
    #[serde(default)]
    sctp_capabilities: Option<SctpCapabilities>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connect {
    /// Not with `comedia` (the transport learns the tuple).
    #[serde(default)]
    ip: Option<IpAddr>,
    #[serde(default)]
    port: Option<u16>,
    /// The broadcaster's SRTP key, for a transport made with `enableSrtp`.
    #[serde(default)]
    srtp_parameters: Option<SrtpParameters>,
    /// WebRTC: the broadcaster's DTLS role and fingerprints.
    #[serde(default)]
    dtls_parameters: Option<DtlsParameters>,
}

/// `produce/data`'s body (the transport is in the path).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProduceData {
    sctp_stream_parameters: SctpStreamParameters,
    #[serde(default)]
    label: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    app_data: sluice_protocol::AppData,
}

/// A broadcaster's transport of either kind.
enum BroadcasterTransport {
    Plain(PlainTransport),
    WebRtc(WebRtcTransport),
}

impl BroadcasterTransport {
    async fn produce(
        &self,
        options: ProducerOptions,
    ) -> Result<Producer, sluice_media::MediaError> {
        match self {
            BroadcasterTransport::Plain(t) => t.produce(options).await,
            BroadcasterTransport::WebRtc(t) => t.produce(options).await,
        }
    }

    async fn consume(
        &self,
        options: ConsumerOptions,
    ) -> Result<Consumer, sluice_media::MediaError> {
        match self {
            BroadcasterTransport::Plain(t) => t.consume(options).await,
            BroadcasterTransport::WebRtc(t) => t.consume(options).await,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Produce {
    kind: MediaKind,
    rtp_parameters: RtpParameters,
    #[serde(default)]
    app_data: serde_json::Map<String, Value>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// The grants of the request's token for broadcaster `id` of room `room_id`.
fn authorize(
    instance: &Instance,
    headers: &HeaderMap,
    query: &TokenQuery,
    room_id: &str,
    id: &str,
) -> Result<Grants, Refusal> {
    if !valid_id(room_id) || !valid_id(id) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "roomId and broadcasterId: 1 to 128 visible ASCII characters".into(),
        ));
    }
    if let Some(reason) = room_id_error(room_id) {
        return Err(Refusal(StatusCode::BAD_REQUEST, reason));
    }
    let token = query
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
        .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "no token".into()))?;
    let claims = instance.auth.authorize(&token, room_id, id).map_err(|e| {
        Refusal(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
            e.to_string(),
        )
    })?;
    Ok(claims.grants)
}

/// The room of a broadcaster that exists.
async fn room_of(instance: &Instance, room_id: &str, id: &str) -> Result<Arc<Room>, Refusal> {
    let room = instance
        .room(room_id)
        .await
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no room {room_id}")))?;
    if !room.broadcasters().contains_key(id) {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no broadcaster {id} in room {room_id}"),
        ));
    }
    Ok(room)
}

/// `POST /rooms/{roomId}/broadcasters`
pub(crate) async fn create(
    State(instance): State<Arc<Instance>>,
    Path(room_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let request: CreateBroadcaster = parse(&body)?;
    authorize(&instance, &headers, &query, &room_id, &request.id)?;
    if let Some(caps) = &request.rtp_capabilities {
        sluice_media::ortc::validate_rtp_capabilities(caps)
            .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("rtpCapabilities: {e}")))?;
    }
    let limits = &instance.config.limits;
    let display_name = match request.display_name {
        Some(name) => crate::signaling::display_name(name, limits)?,
        None => request.id.clone(),
    };
    let mut device = crate::signaling::device(request.device.unwrap_or_default(), limits)?;
    let room = instance
        .room_or_create(&room_id)
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if room.peer(&request.id).is_some() {
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!("{} is a connected peer of room {room_id}", request.id),
        ));
    }
    {
        let mut broadcasters = room.broadcasters();
        if broadcasters.contains_key(&request.id) {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("broadcaster {} already exists", request.id),
            ));
        }
        if room.peer_count() + broadcasters.len() >= instance.config.limits.peers_per_room {
            return Err(SignalError::limit("peers per room").into());
        }
        broadcasters.insert(
            request.id.clone(),
            BroadcasterEntry {
                transports: Default::default(),
                rtp_capabilities: request.rtp_capabilities.clone(),
            },
        );
    }
    let peers = room.joined_peer_infos(&request.id);
    device.flag.get_or_insert_with(|| "broadcaster".to_owned());
    room.dispatch(Action::PeerConnected {
        peer_id: request.id.clone(),
    });
    room.dispatch(Action::PeerJoined {
        peer_id: request.id.clone(),
        display_name,
        device,
    });
    tracing::info!(room = %room_id, broadcaster = %request.id, "broadcaster joined");
    Ok(Json(json!({ "peers": peers })))
}

/// `DELETE /rooms/{roomId}/broadcasters/{broadcasterId}`
pub(crate) async fn delete(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, Refusal> {
    authorize(&instance, &headers, &query, &room_id, &id)?;
    let room = room_of(&instance, &room_id, &id).await?;
    let Some(entry) = room.broadcasters().remove(&id) else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no broadcaster {id}"),
        ));
    };
    let (producers, data_producers, webrtc) = {
        let mut objects = room.objects();
        let owned = |ids: Vec<(&String, &String)>| -> Vec<String> {
            ids.into_iter()
                .filter(|(_, owner)| **owner == id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let producers = owned(
            objects
                .producers
                .iter()
                .map(|(k, o)| (k, &o.peer_id))
                .collect(),
        );
        let data_producers = owned(
            objects
                .data_producers
                .iter()
                .map(|(k, o)| (k, &o.peer_id))
                .collect(),
        );
        (producers, data_producers, objects.remove_peer(&id))
    };
    // Closing a transport closes its producers and tells their consumers.
    for transport in entry.transports.values() {
        let _ = transport.close().await;
    }
    for transport in webrtc {
        let _ = transport.close().await;
    }
    for producer_id in producers {
        room.dispatch(Action::ProducerClosed {
            peer_id: id.clone(),
            producer_id,
        });
    }
    for data_producer_id in data_producers {
        room.dispatch(Action::DataProducerClosed {
            peer_id: id.clone(),
            data_producer_id,
        });
    }
    room.dispatch(Action::PeerLeft {
        peer_id: id.clone(),
        joined: true,
    });
    instance.close_room_if_empty(&room).await;
    tracing::info!(room = %room_id, broadcaster = %id, "broadcaster left");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn create_transport(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id)): Path<(String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&instance, &headers, &query, &room_id, &id)?;
    let request: CreateTransport = parse(&body)?;
    let room = room_of(&instance, &room_id, &id).await?;
    let plain = match request.kind.as_str() {
        "plain" => true,
        "webrtc" => false,
        other => {
            return Err(SignalError::new(
                ErrorCode::BadRequest,
                format!("transport type {other:?}: \"plain\" or \"webrtc\""),
            )
            .into());
        }
    };
    let count = room
        .broadcasters()
        .get(&id)
        .map_or(0, |b| b.transports.len())
        + room.objects().count_of(&id)[0];
    if count >= instance.config.limits.transports_per_peer {
        return Err(SignalError::limit("transports per peer").into());
    }
    if !plain {
        return create_webrtc_transport(&instance, &room, &id, request).await;
    }
    let transport = room
        .router
        .create_plain_transport(PlainTransportOptions {
            comedia: request.comedia,
            rtcp_mux: request.rtcp_mux,
            enable_srtp: request.enable_srtp,
            srtp_crypto_suite: request
                .srtp_crypto_suite
                .unwrap_or(SrtpCryptoSuite::AesCm128HmacSha1_80),
            events: None,
        })
        .await?;
    let answer = json!({
        "id": transport.id(),
        "ip": transport.ip().to_string(),
        "port": transport.port(),
        "rtcpPort": transport.rtcp_port(),
        "srtpParameters": transport.srtp_parameters(),
    });
    let kept = match room.broadcasters().get_mut(&id) {
        Some(b) => {
            b.transports
                .insert(transport.id().to_owned(), transport.clone());
            true
        }
        None => false,
    };
    if !kept {
        // The broadcaster left meanwhile.
        let _ = transport.close().await;
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no broadcaster {id}"),
        ));
    }
    Ok(Json(answer))
}

/// A WebRTC transport for broadcaster `id` (mediasoup-demo's `type: "webrtc"`), kept with the
/// room's transports under its id, as a peer's are.
async fn create_webrtc_transport(
    instance: &Instance,
    room: &Arc<Room>,
    id: &str,
    request: CreateTransport,
) -> Answer {
    let streams = request
        .sctp_capabilities
        .as_ref()
        .map_or(NumSctpStreams::default(), |c| c.num_streams);
    let transport = room
        .router
        .create_webrtc_transport(WebRtcTransportOptions {
            enable_sctp: request.sctp_capabilities.is_some(),
            num_sctp_streams: NumSctpStreams {
                os: streams.os.clamp(1, 65535),
                mis: streams.mis.clamp(1, 65535),
            },
            bandwidth_estimation: instance.config.rtc.bandwidth_estimation.into(),
            ..Default::default()
        })
        .await?;
    let kept = room.broadcasters().contains_key(id);
    if !kept {
        let _ = transport.close().await;
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no broadcaster {id}"),
        ));
    }
    room.objects().transports.insert(
        transport.id().to_owned(),
        Owned {
            peer_id: id.to_owned(),
            object: TransportEntry {
                transport: transport.clone(),
                producing: true,
                consuming: true,
            },
            app_data: Value::Object(Default::default()),
        },
    );
    room.dispatch(Action::TransportCreated {
        peer_id: id.to_owned(),
        transport_id: transport.id().to_owned(),
        producing: true,
        consuming: true,
        sctp: transport.sctp_parameters().is_some(),
        ice_parameters: transport.ice_parameters().clone(),
        ice_candidates: transport.ice_candidates().to_vec(),
        dtls_parameters: transport.dtls_parameters().clone(),
        sctp_parameters: transport.sctp_parameters().cloned(),
        app_data: Value::Object(Default::default()),
    });
    Ok(Json(json!({
        "id": transport.id(),
        "iceParameters": transport.ice_parameters(),
        "iceCandidates": transport.ice_candidates(),
        "dtlsParameters": transport.dtls_parameters(),
        "sctpParameters": transport.sctp_parameters(),
    })))
}

/// The transport `transport_id` of broadcaster `id`, plain or WebRTC.
fn transport_of(
    room: &Room,
    id: &str,
    transport_id: &str,
) -> Result<BroadcasterTransport, Refusal> {
    if let Some(t) = room
        .broadcasters()
        .get(id)
        .and_then(|b| b.transports.get(transport_id).cloned())
    {
        return Ok(BroadcasterTransport::Plain(t));
    }
    match room.objects().transports.get(transport_id) {
        Some(o) if o.peer_id == id => Ok(BroadcasterTransport::WebRtc(o.object.transport.clone())),
        _ => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no transport {} of broadcaster {id}", clip(transport_id)),
        )),
    }
}

/// `POST …/transports/{transportId}/connect`
pub(crate) async fn connect(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&instance, &headers, &query, &room_id, &id)?;
    let request: Connect = parse(&body)?;
    let room = room_of(&instance, &room_id, &id).await?;
    let transport = match transport_of(&room, &id, &transport_id)? {
        BroadcasterTransport::Plain(t) => t,
        BroadcasterTransport::WebRtc(t) => {
            let dtls = request.dtls_parameters.ok_or_else(|| {
                SignalError::new(
                    ErrorCode::BadRequest,
                    "connect: a WebRTC transport needs dtlsParameters",
                )
            })?;
            t.connect(dtls).await?;
            room.dispatch(Action::TransportConnected {
                peer_id: id,
                transport_id,
            });
            return Ok(Json(json!({})));
        }
    };
    let remote = match (request.ip, request.port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
        (None, None) => None,
        _ => {
            return Err(SignalError::new(
                ErrorCode::BadRequest,
                "connect: ip and port go together",
            )
            .into());
        }
    };
    transport
        .connect_with(PlainTransportConnect {
            remote,
            srtp_parameters: request.srtp_parameters,
        })
        .await?;
    Ok(Json(json!({})))
}

/// `POST …/transports/{transportId}/producers`
pub(crate) async fn produce(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let grants = authorize(&instance, &headers, &query, &room_id, &id)?;
    if !grants.publish {
        return Err(SignalError::forbidden("the token does not grant publish").into());
    }
    let request: Produce = parse(&body)?;
    let room = room_of(&instance, &room_id, &id).await?;
    let transport = transport_of(&room, &id, &transport_id)?;
    let limits = &instance.config.limits;
    if room.objects().count_of(&id)[1] >= limits.producers_per_peer {
        return Err(SignalError::limit("producers per peer").into());
    }
    crate::signaling::producer_rtp_parameters(&request.rtp_parameters, limits)?;
    let app_data = crate::signaling::app_data(request.app_data, limits)?;
    let producer = transport
        .produce(ProducerOptions::new(request.kind, request.rtp_parameters))
        .await?;
    room.objects().producers.insert(
        producer.id().to_owned(),
        Owned {
            peer_id: id.clone(),
            object: producer.clone(),
            app_data: app_data.clone(),
        },
    );
    room.dispatch(Action::ProducerCreated {
        peer_id: id,
        transport_id,
        producer_id: producer.id().to_owned(),
        kind: producer.kind(),
        producer_type: producer.r#type().as_str().to_owned(),
        paused: false,
        app_data,
    });
    Ok(Json(json!({ "id": producer.id() })))
}

/// `POST …/transports/{transportId}/produce/data`: a data producer on a WebRTC transport's SCTP
/// association, as a peer's `produceData` (the label's rules, the limits, the data grant).
pub(crate) async fn produce_data(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let grants = authorize(&instance, &headers, &query, &room_id, &id)?;
    if !grants.data {
        return Err(SignalError::forbidden("the token does not grant data").into());
    }
    let request: ProduceData = parse(&body)?;
    let room = room_of(&instance, &room_id, &id).await?;
    let BroadcasterTransport::WebRtc(transport) = transport_of(&room, &id, &transport_id)? else {
        return Err(SignalError::new(
            ErrorCode::Unsupported,
            "data producers need a WebRTC transport (plain transports have no SCTP)",
        )
        .into());
    };
    let dp = crate::signaling::produce_data(
        &instance,
        &room,
        &id,
        &transport,
        ProduceDataRequest {
            transport_id,
            sctp_stream_parameters: request.sctp_stream_parameters,
            label: request.label,
            protocol: request.protocol,
            app_data: request.app_data,
        },
    )
    .await?;
    Ok(Json(json!({ "id": dp.id() })))
}

/// `?producerId=` of a consume request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConsumeQuery {
    producer_id: Option<String>,
    token: Option<String>,
}

/// `POST …/transports/{transportId}/consume?producerId=P`
pub(crate) async fn consume(
    State(instance): State<Arc<Instance>>,
    Path((room_id, id, transport_id)): Path<(String, String, String)>,
    Query(query): Query<ConsumeQuery>,
    headers: HeaderMap,
) -> Answer {
    let token = TokenQuery {
        token: query.token.clone(),
    };
    let grants = authorize(&instance, &headers, &token, &room_id, &id)?;
    if !grants.subscribe {
        return Err(SignalError::forbidden("the token does not grant subscribe").into());
    }
    let producer_id = query
        .producer_id
        .ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, "producerId is required".into()))?;
    let room = room_of(&instance, &room_id, &id).await?;
    let transport = transport_of(&room, &id, &transport_id)?;
    let caps = room
        .broadcasters()
        .get(&id)
        .and_then(|b| b.rtp_capabilities.clone())
        .ok_or_else(|| {
            SignalError::new(
                ErrorCode::Unsupported,
                "the broadcaster joined without rtpCapabilities: it cannot consume",
            )
        })?;
    let Some(producer_worker) = room
        .objects()
        .producers
        .get(&producer_id)
        .map(|p| p.object.worker_index())
    else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no producer {}", clip(&producer_id)),
        ));
    };
    let limits = &instance.config.limits;
    if room.objects().count_of(&id)[2] >= limits.consumers_per_peer {
        return Err(SignalError::limit("consumers per peer").into());
    }
    let mut options = ConsumerOptions::new(producer_id.clone(), caps);
    options.paused = false;
    // A broadcaster's transports are on the room's first router.
    let lease = room
        .routers
        .pipe(&producer_id, producer_worker, room.worker_index)
        .await?;
    let consumer = transport.consume(options).await?;
    room.routers.hold(&id, consumer.id(), lease);
    room.objects().consumers.insert(
        consumer.id().to_owned(),
        Owned {
            peer_id: id,
            object: consumer.clone(),
            app_data: Value::Object(Default::default()),
        },
    );
    Ok(Json(json!({
        "id": consumer.id(),
        "producerId": producer_id,
        "kind": consumer.kind(),
        "rtpParameters": consumer.rtp_parameters(),
        "type": consumer.r#type().as_str(),
    })))
}
