//! ICE and DTLS parameters of a WebRTC transport, in mediasoup's JSON shape.

use serde::{Deserialize, Serialize};

/// `{ usernameFragment, password, iceLite }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    pub username_fragment: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ice_lite: Option<bool>,
}

/// `"udp"` or `"tcp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

/// ICE candidate type; an ICE-lite server only has host candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

/// TCP candidate type (RFC 6544); a server's TCP candidates are passive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateTcpType {
    Passive,
}

/// One ICE candidate. mediasoup 3.12+ writes both `address` and the deprecated `ip` (same value);
/// mediasoup-client reads either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub foundation: String,
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub address: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(rename = "type")]
    pub r#type: IceCandidateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_type: Option<IceCandidateTcpType>,
}

/// DTLS role: the server answers `auto` and the client picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    Auto,
    Client,
    Server,
}

/// `{ algorithm, value }`, e.g. `{algorithm:"sha-256", value:"AB:CD:…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsFingerprint {
    pub algorithm: String,
    pub value: String,
}

/// `{ role?, fingerprints }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DtlsRole>,
    pub fingerprints: Vec<DtlsFingerprint>,
}
