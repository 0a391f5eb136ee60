//! A data consumer in the core: one data producer's messages sent to one client (over SCTP) or to the server
//! (on a `DirectTransport`), with bounded memory whatever the sender does.
//!
//! Messages go straight into SCTP while it has room; otherwise they wait in the consumer's
//! [`SendQueue`], bounded in bytes. When it is full, an unreliable consumer (`maxRetransmits` or
//! `maxPacketLifeTime`) drops its *oldest* messages, so a slow receiver gets fresh state instead
//! of a growing backlog; a reliable one refuses the newest and counts it (`dropped`), reporting
//! itself full. When SCTP's buffer falls below the low-water mark the queue drains and the
//! consumer reports `DataConsumerBufferedAmountLow`.
//!
//! Empty messages reach `DirectTransport` consumers; toward SCTP they are dropped and counted:
//! str0m 0.25 cannot send them (it writes no chunk but advances the stream sequence number,
//! which would stall an ordered stream).

use str0m::channel::ChannelId;

use crate::core::table::Identified;
use crate::message::{DataMessage, DataReceiver, SendQueue};
use crate::types::Key;

/// Where a data consumer's messages go.
#[derive(Debug)]
pub(crate) enum DataSink {
    Sctp { stream_id: u16, channel: ChannelId },
    Direct(DataReceiver),
}

/// A data consumer in its worker.
#[derive(Debug)]
pub(crate) struct DataConsumerState {
    pub id: String,
    pub data_producer: Key,
    pub transport: Key,
    pub label: String,
    pub protocol: String,
    pub paused: bool,
    pub sink: DataSink,
    pub queue: SendQueue,
    /// Most bytes kept inside SCTP's buffer for this consumer.
    pub max_buffered: usize,
    pub messages: u64,
    pub bytes: u64,
    pub last_buffered: usize,
    /// Report `BufferedAmountLow` once the queue drains (it had backed up).
    pub backed_up: bool,
}

/// str0m's channel configuration for a negotiated (out-of-band) SCTP stream.
pub(crate) fn channel_config(
    params: &sluice_ortc::SctpStreamParameters,
    label: &str,
    protocol: &str,
) -> str0m::channel::ChannelConfig {
    use str0m::channel::Reliability;
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let reliability = match (params.max_packet_life_time, params.max_retransmits) {
        (Some(lifetime), _) => Reliability::MaxPacketLifetime {
            lifetime: clamp(lifetime),
        },
        (None, Some(retransmits)) => Reliability::MaxRetransmits {
            retransmits: clamp(retransmits),
        },
        (None, None) => Reliability::Reliable,
    };
    str0m::channel::ChannelConfig {
        label: label.to_owned(),
        ordered: params.ordered.unwrap_or(true),
        reliability,
        negotiated: Some(params.stream_id),
        protocol: protocol.to_owned(),
    }
}

/// Writes one message into SCTP if the channel is open and holds less than `max_buffered`
/// bytes: beyond that a consumer's messages wait in its own queue, where an unreliable one drops
/// its oldest (SCTP's buffer would only add latency to stale state).
pub(crate) fn try_write(
    rtc: &mut str0m::Rtc,
    channel: str0m::channel::ChannelId,
    m: &DataMessage,
    max_buffered: usize,
) -> bool {
    match rtc.channel(channel) {
        Some(mut ch) => {
            let buffered = ch.buffered_amount();
            if buffered > 0 && buffered + m.data.len() > max_buffered {
                return false;
            }
            matches!(ch.write(m.binary, &m.data), Ok(true))
        }
        None => false,
    }
}

impl Identified for DataConsumerState {
    fn id(&self) -> &str {
        &self.id
    }
}
