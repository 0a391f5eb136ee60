//! The mediasoup-demo methods: what each client request does, and how media events become
//! actions. Errors are protoo error responses with a stable code ([`SignalError`]).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use sluice_media::ortc::{NumSctpStreams, RtpParameters, validate_scalability_mode};
use sluice_media::{
    CloseReason, ConsumerLayers, DataProducer, DataProducerOptions, MediaEvent, ProducerOptions,
    WebRtcTransport, WebRtcTransportOptions,
};
use sluice_protocol::{
    ClientRequest, CreateWebRtcTransportResponse, Device, DispatchActionResponse, ErrorCode,
    IdResponse, JoinInterest, JoinResponse, ProduceDataRequest, ServerNotification,
    TransportClosed,
};

use crate::actions;
pub use crate::error::SignalError;
use crate::instance::Instance;
use crate::peer::Peer;
use crate::room::{Owned, Room, TransportEntry};
use crate::store::Action;

/// What the connection does after answering a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// The peer joined: offer it what the others produce.
    Joined,
}

type Handled = (Result<Value, SignalError>, Option<FollowUp>);

fn to_value<T: Serialize>(v: &T) -> Result<Value, SignalError> {
    serde_json::to_value(v).map_err(|e| SignalError::internal(e.to_string()))
}

/// `appData` as kept in the room's state, if it is within `limits.max_app_data_bytes` (413).
pub(crate) fn app_data(
    data: serde_json::Map<String, Value>,
    limits: &crate::config::Limits,
) -> Result<Value, SignalError> {
    let data = Value::Object(data);
    let size = actions::serialized_len(&data);
    if size > limits.max_app_data_bytes {
        return Err(too_large("appData", size, limits.max_app_data_bytes));
    }
    Ok(data)
}

/// A `displayName` within `limits.max_display_name_bytes` (413) and without control
/// characters (400): it is kept in the room's state and relayed to every peer.
pub(crate) fn display_name(
    name: String,
    limits: &crate::config::Limits,
) -> Result<String, SignalError> {
    short_text("displayName", name, limits.max_display_name_bytes)
}

/// A `device` within `limits.max_device_bytes` as serialized JSON (413): it is kept in the
/// room's state and sent to every peer.
pub(crate) fn device(
    device: Device,
    limits: &crate::config::Limits,
) -> Result<Device, SignalError> {
    let size = serde_json::to_vec(&device).map_or(usize::MAX, |v| v.len());
    if size > limits.max_device_bytes {
        return Err(too_large("device", size, limits.max_device_bytes));
    }
    Ok(device)
}

/// 413: `field` is `size` bytes, over `max`.
fn too_large(field: &str, size: usize, max: usize) -> SignalError {
    SignalError::new(
        ErrorCode::TooLarge,
        format!("{field} of {size} bytes is over the limit of {max}"),
    )
}

/// `text` (a name or label the room relays) if it is within `max` UTF-8 bytes (413) and has no
/// control characters (400).
fn short_text(field: &str, text: String, max: usize) -> Result<String, SignalError> {
    if text.len() > max {
        return Err(too_large(field, text.len(), max));
    }
    if text.chars().any(char::is_control) {
        return Err(SignalError::new(
            ErrorCode::BadRequest,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(text)
}

/// What the server checks of a producer's `rtpParameters` beyond their validity (which the
/// media layer checks): the number of encodings (400), each encoding's `scalabilityMode` (400)
/// and the size of each codec's `parameters` (413), all of which reach every consumer.
pub(crate) fn producer_rtp_parameters(
    params: &RtpParameters,
    limits: &crate::config::Limits,
) -> Result<(), SignalError> {
    if params.encodings.len() > limits.max_encodings {
        return Err(SignalError::new(
            ErrorCode::BadRequest,
            format!(
                "rtpParameters.encodings: {} encodings, at most {} are allowed",
                params.encodings.len(),
                limits.max_encodings
            ),
        ));
    }
    for (i, encoding) in params.encodings.iter().enumerate() {
        if let Some(mode) = &encoding.scalability_mode {
            validate_scalability_mode(mode).map_err(|reason| {
                SignalError::new(
                    ErrorCode::BadRequest,
                    format!("rtpParameters.encodings[{i}].scalabilityMode: {reason}"),
                )
            })?;
        }
    }
    for (i, codec) in params.codecs.iter().enumerate() {
        let size = serde_json::to_vec(&codec.parameters).map_or(usize::MAX, |v| v.len());
        if size > limits.max_codec_parameters_bytes {
            return Err(too_large(
                &format!("rtpParameters.codecs[{i}].parameters"),
                size,
                limits.max_codec_parameters_bytes,
            ));
        }
    }
    Ok(())
}

/// `produceData` on `transport` for member `owner` (a peer, or a broadcaster through its REST
/// API), whose grants the caller checked: the label's rules, the limits, the room's record,
/// and the server's own labels.
pub(crate) async fn produce_data(
    instance: &Instance,
    room: &Arc<Room>,
    owner: &str,
    transport: &WebRtcTransport,
    req: ProduceDataRequest,
) -> Result<DataProducer, SignalError> {
    let limits = &instance.config.limits;
    let mut req = req;
    req.label = short_text("label", req.label, limits.max_data_label_bytes)?;
    req.protocol = short_text("protocol", req.protocol, limits.max_data_label_bytes)?;
    if room.is_game_output(&req.label) {
        // Players receive the game's copies from `peerId: null`; one of theirs on the same
        // label would pass for the server's.
        return Err(SignalError::forbidden(format!(
            "data label {:?} is the game's output",
            req.label
        )));
    }
    let rule = instance
        .config
        .data
        .rule(&req.label)
        .map_err(SignalError::forbidden)?
        .cloned();
    if room.objects().count_of(owner)[3] >= limits.data_producers_per_peer {
        return Err(SignalError::limit("data producers per peer"));
    }
    let app_data = app_data(req.app_data, limits)?;
    let mut options = DataProducerOptions::sctp(req.sctp_stream_parameters, &req.label);
    options.protocol = req.protocol.clone();
    if let Some(rule) = &rule {
        if let Some(max) = rule.max_message_size {
            options.max_message_size = max;
        }
        options.max_messages_per_second = rule.max_messages_per_second;
    }
    let dp = transport.produce_data(options).await?;
    room.objects().data_producers.insert(
        dp.id().to_owned(),
        Owned {
            peer_id: owner.to_owned(),
            object: dp.clone(),
            app_data: app_data.clone(),
        },
    );
    room.dispatch(Action::DataProducerCreated {
        peer_id: owner.to_owned(),
        transport_id: req.transport_id,
        data_producer_id: dp.id().to_owned(),
        label: req.label,
        protocol: req.protocol,
        app_data,
    });
    room.read_server_labels(owner, &dp).await?;
    Ok(dp)
}

fn need_joined(peer: &Peer) -> Result<(), SignalError> {
    if peer.is_joined() {
        Ok(())
    } else {
        Err(SignalError::conflict("not joined yet"))
    }
}

/// Handles one client request.
pub async fn handle(
    instance: &Arc<Instance>,
    room: &Arc<Room>,
    peer: &Arc<Peer>,
    request: ClientRequest,
) -> Handled {
    if let ClientRequest::Join(join) = request {
        // Checked before the peer counts as joined, so a refused join can be retried.
        let limits = &instance.config.limits;
        let checked = display_name(join.display_name, limits)
            .and_then(|name| Ok((name, device(join.device, limits)?)));
        let (name, device) = match checked {
            Ok(checked) => checked,
            Err(e) => return (Err(e), None),
        };
        if !peer.set_joined(join.rtp_capabilities.clone(), join.sctp_capabilities) {
            return (Err(SignalError::conflict("already joined")), None);
        }
        if let Some(caps) = &join.rtp_capabilities
            && let Err(e) = sluice_media::ortc::validate_rtp_capabilities(caps)
        {
            return (
                Err(SignalError::new(
                    ErrorCode::BadRequest,
                    format!("rtpCapabilities: {e}"),
                )),
                None,
            );
        }
        let mut peers = room.joined_peer_infos(&peer.id);
        peers.extend(room.remote_peer_infos(&peer.id));
        room.dispatch(Action::PeerJoined {
            peer_id: peer.id.clone(),
            display_name: name,
            device,
        });
        let interest = (instance.config.interest.mode == crate::config::InterestMode::Proximity)
            .then(|| JoinInterest {
                audio_radius: instance.config.interest.audio_radius,
                video_radius: instance.config.interest.video_radius,
            });
        return (
            to_value(&JoinResponse { peers, interest }),
            Some(FollowUp::Joined),
        );
    }
    (handle_request(instance, room, peer, request).await, None)
}

async fn handle_request(
    instance: &Arc<Instance>,
    room: &Arc<Room>,
    peer: &Arc<Peer>,
    request: ClientRequest,
) -> Result<Value, SignalError> {
    let limits = &instance.config.limits;
    match request {
        ClientRequest::GetRouterRtpCapabilities(_) => to_value(room.router.rtp_capabilities()),
        ClientRequest::Join(_) => Err(SignalError::internal("join is handled above")),
        ClientRequest::CreateWebRtcTransport(req) => {
            if room.objects().count_of(&peer.id)[0] >= limits.transports_per_peer {
                return Err(SignalError::limit("transports per peer"));
            }
            // Neither flag (an older client): the transport may do both; with one given, the
            // other is false (mediasoup-demo always sends both).
            let (producing, consuming) = match (req.producing, req.consuming) {
                (None, None) => (true, true),
                (p, c) => (p.unwrap_or(false), c.unwrap_or(false)),
            };
            if !producing && !consuming {
                return Err(SignalError::new(
                    ErrorCode::BadRequest,
                    "producing and consuming are both false: a transport does at least one",
                ));
            }
            let app_data = app_data(req.app_data, limits)?;
            let streams = req
                .sctp_capabilities
                .map_or(NumSctpStreams::default(), |c| c.num_streams);
            // A transport that only produces sends no media, so it has nothing to estimate
            // bandwidth for; without estimation its str0m session keeps no pacer, which woke
            // the worker 25 times a second per transport, idle or not. (Its publisher still
            // gets transport-wide-cc feedback: that is the receiving side.)
            let bandwidth_estimation = if consuming {
                instance.config.rtc.bandwidth_estimation.into()
            } else {
                sluice_media::BandwidthEstimation::Off
            };
            let transport = instance
                .router_for(room, &peer.id)
                .await?
                .create_webrtc_transport(WebRtcTransportOptions {
                    // forceTcp: TCP candidates only (an error when the server has no TCP).
                    enable_udp: !req.force_tcp,
                    num_sctp_streams: NumSctpStreams {
                        os: streams.os.clamp(1, 65535),
                        mis: streams.mis.clamp(1, 65535),
                    },
                    events: Some(peer.events.clone()),
                    bandwidth_estimation,
                    ..Default::default()
                })
                .await?;
            if transport.sctp_parameters().is_some() {
                peer.set_sctp_transport();
            }
            room.objects().transports.insert(
                transport.id().to_owned(),
                Owned {
                    peer_id: peer.id.clone(),
                    object: TransportEntry {
                        transport: transport.clone(),
                        producing,
                        consuming,
                    },
                    app_data: app_data.clone(),
                },
            );
            room.dispatch(Action::TransportCreated {
                peer_id: peer.id.clone(),
                transport_id: transport.id().to_owned(),
                producing,
                consuming,
                sctp: transport.sctp_parameters().is_some(),
                ice_parameters: transport.ice_parameters().clone(),
                ice_candidates: transport.ice_candidates().to_vec(),
                dtls_parameters: transport.dtls_parameters().clone(),
                sctp_parameters: transport.sctp_parameters().cloned(),
                app_data,
            });
            to_value(&CreateWebRtcTransportResponse {
                id: transport.id().to_owned(),
                ice_parameters: transport.ice_parameters().clone(),
                ice_candidates: transport.ice_candidates().to_vec(),
                dtls_parameters: transport.dtls_parameters().clone(),
                sctp_parameters: transport.sctp_parameters().cloned(),
                ice_servers: crate::turn::ice_servers(
                    &instance.config.turn,
                    &peer.id,
                    crate::auth::unix_now(),
                ),
            })
        }
        ClientRequest::ConnectWebRtcTransport(req) => {
            let transport = room.transport_of(&peer.id, &req.transport_id)?;
            transport.connect(req.dtls_parameters).await?;
            room.dispatch(Action::TransportConnected {
                peer_id: peer.id.clone(),
                transport_id: req.transport_id,
            });
            Ok(json!({}))
        }
        ClientRequest::RestartIce(req) => {
            let transport = room.transport_of(&peer.id, &req.transport_id)?;
            let ice_parameters = transport.restart_ice().await?;
            room.dispatch(Action::TransportIceRestarted {
                peer_id: peer.id.clone(),
                transport_id: req.transport_id,
                ice_parameters: ice_parameters.clone(),
            });
            to_value(&ice_parameters)
        }
        ClientRequest::Produce(req) => {
            need_joined(peer)?;
            if !peer.grants.publish {
                return Err(SignalError::forbidden("the token does not grant publish"));
            }
            let transport = room.producing_transport_of(&peer.id, &req.transport_id)?;
            if room.objects().count_of(&peer.id)[1] >= limits.producers_per_peer {
                return Err(SignalError::limit("producers per peer"));
            }
            producer_rtp_parameters(&req.rtp_parameters, limits)?;
            let app_data = app_data(req.app_data, limits)?;
            let producer = transport
                .produce(ProducerOptions::new(req.kind, req.rtp_parameters))
                .await?;
            room.objects().producers.insert(
                producer.id().to_owned(),
                Owned {
                    peer_id: peer.id.clone(),
                    object: producer.clone(),
                    app_data: app_data.clone(),
                },
            );
            room.dispatch(Action::ProducerCreated {
                peer_id: peer.id.clone(),
                transport_id: req.transport_id,
                producer_id: producer.id().to_owned(),
                kind: producer.kind(),
                producer_type: producer.r#type().as_str().to_owned(),
                paused: false,
                app_data,
            });
            to_value(&IdResponse {
                id: producer.id().to_owned(),
            })
        }
        ClientRequest::CloseProducer(req) => {
            let producer = room.producer_of(&peer.id, &req.producer_id)?;
            producer.close().await?;
            room.objects().producers.remove(&req.producer_id);
            room.dispatch(Action::ProducerClosed {
                peer_id: peer.id.clone(),
                producer_id: req.producer_id,
            });
            Ok(json!({}))
        }
        ClientRequest::PauseProducer(req) => {
            let producer = room.producer_of(&peer.id, &req.producer_id)?;
            producer.pause().await?;
            room.dispatch(Action::ProducerPaused {
                peer_id: peer.id.clone(),
                producer_id: req.producer_id,
            });
            Ok(json!({}))
        }
        ClientRequest::ResumeProducer(req) => {
            let producer = room.producer_of(&peer.id, &req.producer_id)?;
            producer.resume().await?;
            room.dispatch(Action::ProducerResumed {
                peer_id: peer.id.clone(),
                producer_id: req.producer_id,
            });
            Ok(json!({}))
        }
        ClientRequest::ProduceData(req) => {
            need_joined(peer)?;
            if !peer.grants.data {
                return Err(SignalError::forbidden("the token does not grant data"));
            }
            let transport = room.producing_transport_of(&peer.id, &req.transport_id)?;
            let dp = produce_data(instance, room, &peer.id, &transport, req).await?;
            to_value(&IdResponse {
                id: dp.id().to_owned(),
            })
        }
        ClientRequest::PauseConsumer(req) => {
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            consumer.pause().await?;
            room.dispatch(Action::ConsumerPaused {
                peer_id: peer.id.clone(),
                consumer_id: req.consumer_id,
            });
            Ok(json!({}))
        }
        ClientRequest::ResumeConsumer(req) => {
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            // Out of range, it stays paused on the wire until interest management resumes it.
            if !room.interest_paused(&peer.id, &req.consumer_id) {
                consumer.resume().await?;
            }
            room.dispatch(Action::ConsumerResumed {
                peer_id: peer.id.clone(),
                consumer_id: req.consumer_id,
            });
            Ok(json!({}))
        }
        ClientRequest::SetConsumerPreferredLayers(req) => {
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            let layers = ConsumerLayers {
                spatial_layer: req.spatial_layer,
                temporal_layer: req.temporal_layer.unwrap_or(u8::MAX),
            };
            room.set_preferred_layers(&consumer, layers).await?;
            Ok(json!({}))
        }
        ClientRequest::SetConsumerPriority(req) => {
            if req.priority == 0 {
                return Err(SignalError::new(
                    ErrorCode::BadRequest,
                    "priority must be 1..=255",
                ));
            }
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            consumer.set_priority(req.priority).await?;
            Ok(json!({}))
        }
        ClientRequest::RequestConsumerKeyFrame(req) => {
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            consumer.request_key_frame().await?;
            Ok(json!({}))
        }
        ClientRequest::ChangeDisplayName(req) => {
            need_joined(peer)?;
            let display_name = display_name(req.display_name, limits)?;
            let old = room
                .store
                .read(|s| s.peers.get(&peer.id).map(|p| p.display_name.clone()))
                .flatten()
                .unwrap_or_default();
            room.dispatch(Action::DisplayNameChanged {
                peer_id: peer.id.clone(),
                display_name,
                old_display_name: old,
            });
            Ok(json!({}))
        }
        ClientRequest::GetTransportStats(req) => {
            let transport = room.transport_of(&peer.id, &req.transport_id)?;
            to_value(&vec![transport.get_stats().await?])
        }
        ClientRequest::GetProducerStats(req) => {
            let producer = room.producer_of(&peer.id, &req.producer_id)?;
            to_value(&producer.get_stats().await?)
        }
        ClientRequest::GetConsumerStats(req) => {
            let consumer = room.consumer_of(&peer.id, &req.consumer_id)?;
            to_value(&consumer.get_stats().await?)
        }
        ClientRequest::GetDataProducerStats(req) => {
            let dp = room.data_producer_of(&peer.id, &req.data_producer_id)?;
            to_value(&dp.get_stats().await?)
        }
        ClientRequest::GetDataConsumerStats(req) => {
            let dc = room.data_consumer_of(&peer.id, &req.data_consumer_id)?;
            to_value(&dc.get_stats().await?)
        }
        ClientRequest::Consume(req) => {
            need_joined(peer)?;
            to_value(&room.consume(peer, &req.producer_id).await?)
        }
        ClientRequest::ConsumeData(req) => {
            need_joined(peer)?;
            to_value(&room.consume_data(peer, &req.data_producer_id).await?)
        }
        ClientRequest::DispatchAction(req) => {
            need_joined(peer)?;
            let (draft, bounds) =
                actions::check(&instance.config, peer, req, std::time::Instant::now())?;
            let seq = room
                .dispatch_game(draft, bounds)
                .ok_or_else(|| SignalError::internal("the room's store is unavailable"))?;
            to_value(&DispatchActionResponse { seq })
        }
    }
}

/// A close reason as `transportClosed` names it: the media plane's camelCase name
/// (`remoteClosed`, `dtlsFailed`, `sessionError`, …).
fn close_reason_name(reason: CloseReason) -> String {
    match serde_json::to_value(reason) {
        Ok(Value::String(name)) => name,
        _ => format!("{reason:?}"),
    }
}

/// Turns one media event of `peer`'s transports into actions (and so notifications).
pub fn on_media_event(room: &Arc<Room>, peer: &Arc<Peer>, event: MediaEvent) {
    let peer_id = peer.id.clone();
    match event {
        MediaEvent::ConsumerClosed { consumer_id, .. } => {
            if room.objects().consumers.remove(&consumer_id).is_some() {
                room.dispatch(Action::ConsumerClosed {
                    peer_id,
                    consumer_id,
                    notify: true,
                });
            }
        }
        MediaEvent::ConsumerProducerPaused { consumer_id, .. } => {
            room.dispatch(Action::ConsumerProducerPaused {
                peer_id,
                consumer_id,
            });
        }
        MediaEvent::ConsumerProducerResumed { consumer_id, .. } => {
            room.dispatch(Action::ConsumerProducerResumed {
                peer_id,
                consumer_id,
            });
        }
        MediaEvent::ConsumerScore {
            consumer_id, score, ..
        } => room.dispatch(Action::ConsumerScoreChanged {
            peer_id,
            consumer_id,
            score,
        }),
        MediaEvent::ConsumerLayersChange {
            consumer_id,
            layers,
            ..
        } => room.dispatch(Action::ConsumerLayersChanged {
            peer_id,
            consumer_id,
            layers,
        }),
        MediaEvent::ProducerScore {
            producer_id,
            scores,
            ..
        } => room.dispatch(Action::ProducerScoreChanged {
            peer_id,
            producer_id,
            score: scores,
        }),
        MediaEvent::ProducerClosed { producer_id, .. } => {
            if room.objects().producers.remove(&producer_id).is_some() {
                room.dispatch(Action::ProducerClosed {
                    peer_id,
                    producer_id,
                });
            }
        }
        MediaEvent::DataProducerClosed {
            data_producer_id, ..
        } => {
            if room
                .objects()
                .data_producers
                .remove(&data_producer_id)
                .is_some()
            {
                room.dispatch(Action::DataProducerClosed {
                    peer_id,
                    data_producer_id,
                });
            }
        }
        MediaEvent::DataConsumerClosed {
            data_consumer_id,
            reason,
            ..
        } => {
            if room
                .objects()
                .data_consumers
                .remove(&data_consumer_id)
                .is_some()
            {
                room.dispatch(Action::DataConsumerClosed {
                    peer_id,
                    data_consumer_id,
                    // The client closed it itself: nothing to tell it.
                    notify: reason != CloseReason::RemoteClosed,
                });
            }
        }
        MediaEvent::TransportClosed {
            transport_id,
            reason,
        } => {
            // Still registered: the media plane closed it (DTLS close_notify, a certificate that
            // does not match the fingerprint, a session error), not its owner's request or
            // leaving. The owner is told, or its next request would just find no such transport.
            if room.objects().transports.remove(&transport_id).is_some() {
                let reason = close_reason_name(reason);
                tracing::info!(
                    room = %room.id, peer = %peer_id, transport = %transport_id, %reason,
                    "transport closed by the media plane; its owner is notified"
                );
                peer.notify(&ServerNotification::TransportClosed(TransportClosed {
                    transport_id: transport_id.clone(),
                    reason,
                }));
                room.dispatch(Action::TransportClosed {
                    peer_id,
                    transport_id,
                });
            }
        }
        MediaEvent::IceStateChange {
            transport_id,
            state,
        } => room.dispatch(Action::TransportStateChanged {
            peer_id,
            transport_id,
            ice_state: Some(format!("{state:?}").to_lowercase()),
            dtls_state: None,
        }),
        MediaEvent::DtlsStateChange {
            transport_id,
            state,
        } => room.dispatch(Action::TransportStateChanged {
            peer_id,
            transport_id,
            ice_state: None,
            dtls_state: Some(format!("{state:?}").to_lowercase()),
        }),
        MediaEvent::BandwidthEstimate {
            transport_id,
            bitrate,
            desired_bitrate,
            effective_desired_bitrate,
        } => {
            // Only changes of more than 10 % are worth a notification.
            let last = room
                .store
                .read(|s| {
                    s.peers
                        .get(&peer_id)
                        .and_then(|p| p.transports.get(&transport_id))
                        .and_then(|t| t.available_bitrate)
                })
                .flatten();
            if last.is_some_and(|l| bitrate.abs_diff(l) * 10 < l) {
                return;
            }
            room.dispatch(Action::DownlinkBwe {
                peer_id,
                transport_id,
                desired_bitrate,
                effective_desired_bitrate,
                available_bitrate: bitrate,
            })
        }
        // A peer's producer feeds no pipe: its demand concerns nobody here.
        MediaEvent::IceSelectedTupleChange { .. }
        | MediaEvent::SctpStateChange { .. }
        | MediaEvent::DataConsumerBufferedAmountLow { .. }
        | MediaEvent::ProducerDemandChange { .. }
        | MediaEvent::ActiveSpeaker { .. } => {}
    }
}
