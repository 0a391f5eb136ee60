//! SRTP for the packets sluice writes itself (the own egress of audio consumers, issue 13): the
//! keys a transport's DTLS handshake exports, RFC 3711's key derivation, and protection with
//! `AES_CM_128_HMAC_SHA1_80` (RFC 3711 §4) or `AEAD_AES_128_GCM` / `AEAD_AES_256_GCM`
//! (RFC 7714), on aws-lc-rs's AES and HMAC.
//!
//! str0m keeps its SRTP contexts private, but its DTLS comes from a pluggable provider: every
//! transport's `Rtc` is built with [`provider`], whose DTLS is str0m's default one wrapped to copy
//! the keying material it exports (and whether we are the DTLS client) into the transport's
//! [`KeySlot`] as str0m reads it. Nothing else of the handshake changes.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use str0m::crypto::CryptoError;

use crate::types::SrtpCryptoSuite;
use str0m::crypto::CryptoProvider;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};

/// RFC 3711 §4.3.1 key derivation labels: SRTP's (encryption, authentication, salt)…
const LABELS_RTP: [u8; 3] = [0, 1, 2];
/// …and SRTCP's.
const LABELS_RTCP: [u8; 3] = [3, 4, 5];
/// SRTCP's E flag and index after the packet (RFC 3711 §3.4).
const SRTCP_INDEX_LEN: usize = 4;

/// `AES_CM_128_HMAC_SHA1_80`: the authentication tag's length.
const HMAC_TAG_LEN: usize = 10;
/// AEAD-AES-GCM's tag length (RFC 7714 §14.2).
pub(crate) const GCM_TAG_LEN: usize = 16;

/// Why no SRTP sender could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SrtpError {
    #[error("{got} bytes of keying material for {profile}, which needs {want}")]
    MaterialLength {
        profile: SrtpProfile,
        got: usize,
        want: usize,
    },
    #[error("the SRTP profile {0} is not supported")]
    Profile(SrtpProfile),
    #[error("the cipher refused a key or a packet")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for SrtpError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        SrtpError::Crypto
    }
}

/// What a DTLS handshake exported for SRTP (RFC 5764 §4.2).
#[derive(Clone)]
pub(crate) struct ExportedKeys {
    /// client key | server key | client salt | server salt.
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    /// We are the DTLS client (so we send with the client's key).
    pub active: bool,
}

impl ExportedKeys {
    /// The master key and salt of one side: the DTLS client's (`client`) or the server's.
    fn master(&self, client: bool) -> Result<(&[u8], &[u8]), SrtpError> {
        let (key_len, salt_len) = match self.profile {
            SrtpProfile::AES128_CM_SHA1_80 => (16, 14),
            SrtpProfile::AEAD_AES_128_GCM => (16, 12),
            SrtpProfile::AEAD_AES_256_GCM => (32, 12),
            other => return Err(SrtpError::Profile(other)),
        };
        let want = 2 * (key_len + salt_len);
        if self.material.len() != want {
            return Err(SrtpError::MaterialLength {
                profile: self.profile,
                got: self.material.len(),
                want,
            });
        }
        let m = &self.material;
        Ok(if client {
            (&m[..key_len], &m[2 * key_len..2 * key_len + salt_len])
        } else {
            (
                &m[key_len..2 * key_len],
                &m[2 * key_len + salt_len..2 * (key_len + salt_len)],
            )
        })
    }
}

impl std::fmt::Debug for ExportedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("ExportedKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where a transport's DTLS puts its exported keys.
#[derive(Debug, Default)]
pub(crate) struct KeySlot(Mutex<Option<ExportedKeys>>);

impl KeySlot {
    fn put(&self, keys: ExportedKeys) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(keys);
        }
    }

    /// The keys of the latest handshake, if one exported them since the last call.
    pub fn take(&self) -> Option<ExportedKeys> {
        self.0.lock().ok()?.take()
    }
}

thread_local! {
    /// The slot of the `Rtc` being built on this thread (see [`with_key_slot`]).
    static NEXT_SLOT: RefCell<Option<Arc<KeySlot>>> = const { RefCell::new(None) };
}

/// The crypto provider of every transport: str0m's default one, whose DTLS also fills the slot
/// given to [`with_key_slot`].
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = str0m::crypto::from_feature_flags();
            // Made once per process: str0m's providers are `&'static`.
            let dtls: &'static KeyExportingDtls =
                Box::leak(Box::new(KeyExportingDtls(p.dtls_provider)));
            p.dtls_provider = dtls;
            Arc::new(p)
        })
        .clone()
}

/// Runs `build`, which builds one `Rtc` with [`provider`], so that its DTLS exports its keys
/// into `slot` (str0m makes the DTLS instance inside `RtcConfig::build`, on this thread).
pub(crate) fn with_key_slot<T>(slot: Arc<KeySlot>, build: impl FnOnce() -> T) -> T {
    NEXT_SLOT.with(|s| *s.borrow_mut() = Some(slot));
    let built = build();
    NEXT_SLOT.with(|s| *s.borrow_mut() = None);
    built
}

/// str0m's DTLS provider, whose instances report their exported keys.
#[derive(Debug)]
struct KeyExportingDtls(&'static dyn DtlsProvider);

impl DtlsProvider for KeyExportingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.0.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.0.new_dtls(cert, now, dtls_version, mtu)?;
        match NEXT_SLOT.with(|s| s.borrow_mut().take()) {
            Some(slot) => Ok(Box::new(KeyExportingInstance { inner, slot })),
            None => Ok(inner),
        }
    }

    fn is_test(&self) -> bool {
        self.0.is_test()
    }
}

#[derive(Debug)]
struct KeyExportingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: Arc<KeySlot>,
}

impl DtlsInstance for KeyExportingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &output {
            self.slot.put(ExportedKeys {
                material: material.to_vec(),
                profile: *profile,
                active: self.inner.is_active(),
            });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// RFC 3711 §4.3.1 with a key derivation rate of zero: `out.len()` bytes of the AES-CM
/// keystream under the master key, from the IV `(label · 2^48 XOR master salt) · 2^16`. The
/// label sits in byte 7 of the salt whatever its length (14 bytes, or RFC 7714's 12).
fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    let salt = master_salt
        .get(..master_salt.len().min(14))
        .unwrap_or_default();
    iv[..salt.len()].copy_from_slice(salt);
    iv[7] ^= label;
    let algorithm = if master_key.len() == 32 {
        &AES_256
    } else {
        &AES_128
    };
    let key = EncryptingKey::ctr(UnboundCipherKey::new(algorithm, master_key)?)?;
    out.fill(0);
    key.less_safe_encrypt(out, EncryptionContext::Iv128(iv.into()))?;
    Ok(())
}

/// `AES_CM_128_HMAC_SHA1_80`'s session keys (boxed in [`Cipher`]: the AES and HMAC key
/// schedules are ten times the size of the GCM variant).
struct CmSha1 {
    ctr: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; 14],
}

enum Cipher {
    /// `AES_CM_128_HMAC_SHA1_80`.
    CmSha1(Box<CmSha1>),
    /// `AEAD_AES_128_GCM` or `AEAD_AES_256_GCM`.
    Gcm { key: LessSafeKey, salt: [u8; 12] },
}

/// Protects the RTP and RTCP packets one transport sends itself.
pub(crate) struct SrtpSender {
    cipher: Cipher,
    rtcp: Cipher,
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let profile = match self.cipher {
            Cipher::CmSha1(_) => "AES_CM_128_HMAC_SHA1_80",
            Cipher::Gcm { .. } => "AEAD_AES_GCM",
        };
        f.debug_struct("SrtpSender")
            .field("profile", &profile)
            .finish_non_exhaustive()
    }
}

impl SrtpSender {
    /// The sender of our side of a handshake's keys.
    pub fn new(keys: &ExportedKeys) -> Result<SrtpSender, SrtpError> {
        let (key, salt) = keys.master(keys.active)?;
        Self::from_master(keys.profile, key, salt)
    }

    /// The sender of an SDES-style key (a plain transport's own `srtpParameters`).
    pub fn from_suite(
        suite: SrtpCryptoSuite,
        key_and_salt: &[u8],
    ) -> Result<SrtpSender, SrtpError> {
        let (key, salt) = split_key(suite, key_and_salt)?;
        Self::from_master(suite.profile(), key, salt)
    }

    /// The sender of a master key and salt (RFC 3711 §8.2's SRTP master key).
    fn from_master(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpSender, SrtpError> {
        Ok(SrtpSender {
            cipher: Cipher::derive(profile, master_key, master_salt, LABELS_RTP)?,
            rtcp: Cipher::derive(profile, master_key, master_salt, LABELS_RTCP)?,
        })
    }
}

/// A suite's master key and master salt out of `key_and_salt` (mediasoup's `keyBase64`,
/// decoded: the key, then the salt).
fn split_key(suite: SrtpCryptoSuite, key_and_salt: &[u8]) -> Result<(&[u8], &[u8]), SrtpError> {
    let (key_len, salt_len) = suite.key_and_salt_len();
    if key_and_salt.len() != key_len + salt_len {
        return Err(SrtpError::MaterialLength {
            profile: suite.profile(),
            got: key_and_salt.len(),
            want: key_len + salt_len,
        });
    }
    Ok(key_and_salt.split_at(key_len))
}

/// Checks and decrypts the SRTP and SRTCP a plain transport's remote sends (RFC 3711 §3.3,
/// §3.4, RFC 7714).
pub(crate) struct SrtpReceiver {
    cipher: Cipher,
    rtcp: Cipher,
}

impl std::fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpReceiver").finish_non_exhaustive()
    }
}

impl SrtpReceiver {
    /// The receiver of the other side of a handshake's keys (what the client sends us).
    pub fn new(keys: &ExportedKeys) -> Result<SrtpReceiver, SrtpError> {
        let (key, salt) = keys.master(!keys.active)?;
        Ok(SrtpReceiver {
            cipher: Cipher::derive(keys.profile, key, salt, LABELS_RTP)?,
            rtcp: Cipher::derive(keys.profile, key, salt, LABELS_RTCP)?,
        })
    }

    /// The receiver of the remote's SDES-style key (its `srtpParameters`).
    pub fn from_suite(
        suite: SrtpCryptoSuite,
        key_and_salt: &[u8],
    ) -> Result<SrtpReceiver, SrtpError> {
        let (key, salt) = split_key(suite, key_and_salt)?;
        Ok(SrtpReceiver {
            cipher: Cipher::derive(suite.profile(), key, salt, LABELS_RTP)?,
            rtcp: Cipher::derive(suite.profile(), key, salt, LABELS_RTCP)?,
        })
    }

    /// Authenticates and decrypts one SRTCP packet in place (what [`SrtpSender::protect_rtcp`]
    /// makes): answers the length of the plain (compound) RTCP packet; a packet that does not
    /// authenticate is an error. Replayed packets are not detected (a plain transport reads
    /// only keyframe requests from RTCP, which are idempotent).
    pub fn unprotect_rtcp(&self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let len = packet.len();
        match &self.rtcp {
            Cipher::CmSha1(keys) => {
                let end = len
                    .checked_sub(SRTCP_INDEX_LEN + HMAC_TAG_LEN)
                    .filter(|end| *end >= 8)
                    .ok_or(SrtpError::Crypto)?;
                let CmSha1 { ctr, auth, salt } = &**keys;
                let tag = hmac::sign(auth, &packet[..end + SRTCP_INDEX_LEN]);
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    &tag.as_ref()[..HMAC_TAG_LEN],
                    &packet[end + SRTCP_INDEX_LEN..],
                )?;
                let e_and_index = [
                    packet[end],
                    packet[end + 1],
                    packet[end + 2],
                    packet[end + 3],
                ];
                if e_and_index[0] & 0x80 != 0 {
                    let index = u32::from_be_bytes(e_and_index) & 0x7fff_ffff;
                    let mut iv = [0u8; 16];
                    iv[..14].copy_from_slice(salt);
                    for (b, s) in iv[4..8].iter_mut().zip(&packet[4..8]) {
                        *b ^= s;
                    }
                    for (b, s) in iv[10..14].iter_mut().zip(index.to_be_bytes()) {
                        *b ^= s;
                    }
                    ctr.less_safe_encrypt(
                        &mut packet[8..end],
                        EncryptionContext::Iv128(iv.into()),
                    )?;
                }
                Ok(end)
            }
            Cipher::Gcm { key, salt } => {
                let end = len
                    .checked_sub(SRTCP_INDEX_LEN)
                    .filter(|end| *end >= 8 + GCM_TAG_LEN)
                    .ok_or(SrtpError::Crypto)?;
                let e_and_index = [
                    packet[end],
                    packet[end + 1],
                    packet[end + 2],
                    packet[end + 3],
                ];
                if e_and_index[0] & 0x80 == 0 {
                    // Authenticated only (RFC 7714 §9.2): not what a sluice node sends.
                    return Err(SrtpError::Crypto);
                }
                let index = u32::from_be_bytes(e_and_index) & 0x7fff_ffff;
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&packet[4..8]);
                iv[8..12].copy_from_slice(&index.to_be_bytes());
                for (b, s) in iv.iter_mut().zip(salt) {
                    *b ^= s;
                }
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&e_and_index);
                let (_, body) = packet.split_at_mut(8);
                let plain = key.open_in_place(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad[..]),
                    &mut body[..end - 8],
                )?;
                Ok(8 + plain.len())
            }
        }
    }

    /// Authenticates and decrypts one SRTP packet in place: `header_len` bytes of header (with
    /// CSRCs and extension), the encrypted payload, the tag. `roc` and `seq` make the packet
    /// index. Answers the length of the plain RTP packet (the tag cut off); a packet that does
    /// not authenticate is an error and is left as it came.
    pub fn unprotect_rtp(
        &self,
        packet: &mut [u8],
        header_len: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<usize, SrtpError> {
        match &self.cipher {
            Cipher::CmSha1(keys) => {
                let end = packet
                    .len()
                    .checked_sub(HMAC_TAG_LEN)
                    .filter(|end| *end >= header_len)
                    .ok_or(SrtpError::Crypto)?;
                let CmSha1 { ctr, auth, salt } = &**keys;
                let mut mac = hmac::Context::with_key(auth);
                mac.update(&packet[..end]);
                mac.update(&roc.to_be_bytes());
                let tag = mac.sign();
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    &tag.as_ref()[..HMAC_TAG_LEN],
                    &packet[end..],
                )?;
                // AES-CM is its own inverse: the keystream XORed again.
                ctr.less_safe_encrypt(
                    &mut packet[header_len..end],
                    EncryptionContext::Iv128(cm_iv(salt, ssrc, roc, seq).into()),
                )?;
                Ok(end)
            }
            Cipher::Gcm { key, salt } => {
                if packet.len() < header_len + GCM_TAG_LEN {
                    return Err(SrtpError::Crypto);
                }
                let (header, rest) = packet.split_at_mut(header_len);
                let plain = key.open_in_place(
                    Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, roc, seq)),
                    Aad::from(&*header),
                    rest,
                )?;
                Ok(header_len + plain.len())
            }
        }
    }
}

/// AES-CM's IV: salt·2^16 XOR SSRC·2^64 XOR index·2^16 (RFC 3711 §4.1.1).
fn cm_iv(salt: &[u8; 14], ssrc: u32, roc: u32, seq: u16) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    let index = (u64::from(roc) << 16) | u64::from(seq);
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// AEAD-AES-GCM's IV: (0x0000 || SSRC || ROC || SEQ) XOR salt (RFC 7714 §8.1).
fn gcm_iv(salt: &[u8; 12], ssrc: u32, roc: u32, seq: u16) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

impl Cipher {
    /// The session keys of one direction and kind (`labels`: RTP's or RTCP's).
    fn derive(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
        labels: [u8; 3],
    ) -> Result<Cipher, SrtpError> {
        let [label_encryption, label_authentication, label_salt] = labels;
        let cipher = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let mut enc = [0u8; 16];
                let mut auth = [0u8; 20];
                let mut salt = [0u8; 14];
                derive(master_key, master_salt, label_encryption, &mut enc)?;
                derive(master_key, master_salt, label_authentication, &mut auth)?;
                derive(master_key, master_salt, label_salt, &mut salt)?;
                Cipher::CmSha1(Box::new(CmSha1 {
                    ctr: EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &enc)?)?,
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth),
                    salt,
                }))
            }
            SrtpProfile::AEAD_AES_128_GCM | SrtpProfile::AEAD_AES_256_GCM => {
                let mut enc = vec![0u8; master_key.len()];
                let mut salt = [0u8; 12];
                derive(master_key, master_salt, label_encryption, &mut enc)?;
                derive(master_key, master_salt, label_salt, &mut salt)?;
                let algorithm = if enc.len() == 32 {
                    &AES_256_GCM
                } else {
                    &AES_128_GCM
                };
                Cipher::Gcm {
                    key: LessSafeKey::new(UnboundKey::new(algorithm, &enc)?),
                    salt,
                }
            }
            other => return Err(SrtpError::Profile(other)),
        };
        Ok(cipher)
    }
}

impl SrtpSender {
    /// Bytes the protection adds after the payload.
    pub fn overhead(&self) -> usize {
        match self.cipher {
            Cipher::CmSha1(_) => HMAC_TAG_LEN,
            Cipher::Gcm { .. } => GCM_TAG_LEN,
        }
    }

    /// Protects one RTP packet in place: `packet` is its `header_len` bytes of header (with
    /// extensions) and its payload; the payload is encrypted and the tag appended. `roc` and
    /// `seq` make the packet index (RFC 3711 §3.3.1).
    pub fn protect_rtp(
        &self,
        packet: &mut Vec<u8>,
        header_len: usize,
        ssrc: u32,
        roc: u32,
        seq: u16,
    ) -> Result<(), SrtpError> {
        if header_len > packet.len() {
            return Err(SrtpError::Crypto);
        }
        match &self.cipher {
            Cipher::CmSha1(keys) => {
                let CmSha1 { ctr, auth, salt } = &**keys;
                ctr.less_safe_encrypt(
                    &mut packet[header_len..],
                    EncryptionContext::Iv128(cm_iv(salt, ssrc, roc, seq).into()),
                )?;
                // The tag covers the packet and the ROC (RFC 3711 §4.2).
                let mut mac = hmac::Context::with_key(auth);
                mac.update(packet);
                mac.update(&roc.to_be_bytes());
                let tag = mac.sign();
                packet.extend_from_slice(&tag.as_ref()[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm { key, salt } => {
                let (header, payload) = packet.split_at_mut(header_len);
                let tag = key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(gcm_iv(salt, ssrc, roc, seq)),
                    Aad::from(&*header),
                    payload,
                )?;
                packet.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    /// Bytes SRTCP protection adds.
    pub fn rtcp_overhead(&self) -> usize {
        SRTCP_INDEX_LEN
            + match self.rtcp {
                Cipher::CmSha1(_) => HMAC_TAG_LEN,
                Cipher::Gcm { .. } => GCM_TAG_LEN,
            }
    }

    /// Protects one (compound) RTCP packet in place with SRTCP index `index` (31 bits; its
    /// sender's count of SRTCP packets, RFC 3711 §3.4): all after the first 8 bytes is
    /// encrypted, then the E flag with the index and the tag are appended.
    pub fn protect_rtcp(&self, packet: &mut Vec<u8>, index: u32) -> Result<(), SrtpError> {
        if packet.len() < 8 {
            return Err(SrtpError::Crypto);
        }
        let index = index & 0x7fff_ffff;
        let e_and_index = (0x8000_0000 | index).to_be_bytes();
        let ssrc = [packet[4], packet[5], packet[6], packet[7]];
        match &self.rtcp {
            Cipher::CmSha1(keys) => {
                let CmSha1 { ctr, auth, salt } = &**keys;
                // The RTP IV with the SRTCP index for the packet index (RFC 3711 §4.1.1).
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(salt);
                for (b, s) in iv[4..8].iter_mut().zip(ssrc) {
                    *b ^= s;
                }
                for (b, s) in iv[10..14].iter_mut().zip(index.to_be_bytes()) {
                    *b ^= s;
                }
                ctr.less_safe_encrypt(&mut packet[8..], EncryptionContext::Iv128(iv.into()))?;
                packet.extend_from_slice(&e_and_index);
                let tag = hmac::sign(auth, packet);
                packet.extend_from_slice(&tag.as_ref()[..HMAC_TAG_LEN]);
            }
            Cipher::Gcm { key, salt } => {
                // IV = (0x0000 || SSRC || 0x0000 || index) XOR salt; the AAD is the first 8
                // bytes and the E flag with the index (RFC 7714 §9.1, §9.3).
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[8..12].copy_from_slice(&index.to_be_bytes());
                for (b, s) in iv.iter_mut().zip(salt) {
                    *b ^= s;
                }
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&packet[..8]);
                aad[8..].copy_from_slice(&e_and_index);
                let tag = key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad[..]),
                    &mut packet[8..],
                )?;
                packet.extend_from_slice(tag.as_ref());
                packet.extend_from_slice(&e_and_index);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a test failure.

    use super::*;

    #[test]
    fn srtcp_protected_by_a_sender_unprotects_with_its_key_and_not_when_altered() {
        for suite in [
            SrtpCryptoSuite::AesCm128HmacSha1_80,
            SrtpCryptoSuite::AeadAes128Gcm,
            SrtpCryptoSuite::AeadAes256Gcm,
        ] {
            let (key_len, salt_len) = suite.key_and_salt_len();
            let master: Vec<u8> = (0..key_len + salt_len).map(|i| (i * 7) as u8).collect();
            let sender = SrtpSender::from_suite(suite, &master).unwrap();
            let receiver = SrtpReceiver::from_suite(suite, &master).unwrap();
            // A PLI: V=2, FMT=1, PT=206, length 2; sender SSRC 1, media SSRC 0x0a0b0c0d.
            let pli = vec![0x81, 206, 0, 2, 0, 0, 0, 1, 0x0a, 0x0b, 0x0c, 0x0d];
            let mut packet = pli.clone();
            sender.protect_rtcp(&mut packet, 5).unwrap();
            assert_eq!(packet.len(), pli.len() + sender.rtcp_overhead());
            assert_ne!(
                &packet[8..12],
                &pli[8..12],
                "{suite:?}: the body is encrypted"
            );
            let mut altered = packet.clone();
            altered[9] ^= 1;
            assert!(receiver.unprotect_rtcp(&mut altered).is_err(), "{suite:?}");
            let len = receiver.unprotect_rtcp(&mut packet).unwrap();
            assert_eq!(&packet[..len], &pli[..], "{suite:?}");
            assert!(
                receiver.unprotect_rtcp(&mut [0u8; 10]).is_err(),
                "{suite:?}"
            );
            let other: Vec<u8> = master.iter().map(|b| b ^ 1).collect();
            let mut packet = pli.clone();
            SrtpSender::from_suite(suite, &other)
                .unwrap()
                .protect_rtcp(&mut packet, 6)
                .unwrap();
            assert!(receiver.unprotect_rtcp(&mut packet).is_err(), "{suite:?}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const MASTER_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139";
    const MASTER_SALT: &str = "0ec675ad498afeebb6960b3aabe6";

    #[test]
    fn keys_derive_as_rfc_3711_appendix_b3_says() {
        let (key, salt) = (hex(MASTER_KEY), hex(MASTER_SALT));
        let mut enc = [0u8; 16];
        derive(&key, &salt, LABELS_RTP[0], &mut enc).unwrap();
        assert_eq!(enc.to_vec(), hex("c61e7a93744f39ee10734afe3ff7a087"));
        let mut session_salt = [0u8; 14];
        derive(&key, &salt, LABELS_RTP[2], &mut session_salt).unwrap();
        assert_eq!(session_salt.to_vec(), hex("30cbbc08863d8c85d49db34a9ae1"));
        let mut auth = [0u8; 20];
        derive(&key, &salt, LABELS_RTP[1], &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            hex("cebe321f6ff7716b6fd4ab49af256a156d38baa4")
        );
    }

    #[test]
    fn an_aes_cm_packet_matches_the_reference_vector() {
        // libsrtp's validation packet: SSRC 0xcafebabe, sequence number 0x1234, sixteen 0xab.
        let sender = SrtpSender::from_master(
            SrtpProfile::AES128_CM_SHA1_80,
            &hex(MASTER_KEY),
            &hex(MASTER_SALT),
        )
        .unwrap();
        let mut packet = hex("800f1234decafbadcafebabe");
        packet.extend_from_slice(&[0xab; 16]);
        sender
            .protect_rtp(&mut packet, 12, 0xcafe_babe, 0, 0x1234)
            .unwrap();
        assert_eq!(
            packet,
            hex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb")
        );
        assert_eq!(sender.overhead(), 10);
    }

    fn rtcp_reference() -> Vec<u8> {
        let mut p = hex("81c8000bcafebabe");
        p.extend_from_slice(&[0xab; 16]);
        p
    }

    #[test]
    fn an_aes_cm_rtcp_packet_matches_the_reference_vector() {
        let sender = SrtpSender::from_master(
            SrtpProfile::AES128_CM_SHA1_80,
            &hex(MASTER_KEY),
            &hex(MASTER_SALT),
        )
        .unwrap();
        let mut packet = rtcp_reference();
        sender.protect_rtcp(&mut packet, 1).unwrap();
        assert_eq!(
            packet,
            hex("81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798")
        );
        assert_eq!(sender.rtcp_overhead(), 14);
    }

    #[test]
    fn gcm_packets_match_the_reference_vectors() {
        // libsrtp's AEAD_AES_128_GCM validation: key 00…0f, salt a0…ab.
        let sender = SrtpSender::from_master(
            SrtpProfile::AEAD_AES_128_GCM,
            &hex("000102030405060708090a0b0c0d0e0f"),
            &hex("a0a1a2a3a4a5a6a7a8a9aaab"),
        )
        .unwrap();
        let mut rtp = hex("800f1234decafbadcafebabe");
        rtp.extend_from_slice(&[0xab; 16]);
        sender
            .protect_rtp(&mut rtp, 12, 0xcafe_babe, 0, 0x1234)
            .unwrap();
        assert_eq!(
            rtp,
            hex(
                "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392"
            )
        );
        let mut rtcp = rtcp_reference();
        sender.protect_rtcp(&mut rtcp, 1).unwrap();
        assert_eq!(
            rtcp,
            hex(
                "81c8000bcafebabec98b8b5df0392a55852b6c21ac8e7025c52c6fbea2b3b446ea31123ba88ce61e80000001"
            )
        );
        assert_eq!(sender.rtcp_overhead(), 20);
    }

    #[test]
    fn the_reference_packets_decrypt_and_a_changed_byte_or_index_is_refused() {
        let plain = {
            let mut p = hex("800f1234decafbadcafebabe");
            p.extend_from_slice(&[0xab; 16]);
            p
        };
        let cases = [
            (
                SrtpCryptoSuite::AesCm128HmacSha1_80,
                [hex(MASTER_KEY), hex(MASTER_SALT)].concat(),
                "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb",
            ),
            (
                SrtpCryptoSuite::AeadAes128Gcm,
                hex("000102030405060708090a0b0c0d0e0fa0a1a2a3a4a5a6a7a8a9aaab"),
                "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392",
            ),
        ];
        for (suite, key, protected) in cases {
            let receiver = SrtpReceiver::from_suite(suite, &key).unwrap();
            let mut packet = hex(protected);
            let len = receiver
                .unprotect_rtp(&mut packet, 12, 0xcafe_babe, 0, 0x1234)
                .unwrap();
            assert_eq!(&packet[..len], &plain[..], "{suite:?}");
            // One flipped payload bit, or another rollover counter: not authentic.
            let mut tampered = hex(protected);
            tampered[20] ^= 1;
            assert!(
                receiver
                    .unprotect_rtp(&mut tampered, 12, 0xcafe_babe, 0, 0x1234)
                    .is_err()
            );
            let mut later = hex(protected);
            assert!(
                receiver
                    .unprotect_rtp(&mut later, 12, 0xcafe_babe, 1, 0x1234)
                    .is_err()
            );
            // Shorter than a header and a tag.
            assert!(
                receiver
                    .unprotect_rtp(
                        &mut hex("800f1234decafbadcafebabe00"),
                        12,
                        0xcafe_babe,
                        0,
                        1
                    )
                    .is_err()
            );
        }
    }

    #[test]
    fn a_key_of_the_wrong_length_for_its_suite_is_refused() {
        assert!(SrtpReceiver::from_suite(SrtpCryptoSuite::AesCm128HmacSha1_80, &[0; 28]).is_err());
        assert!(SrtpSender::from_suite(SrtpCryptoSuite::AeadAes256Gcm, &[0; 30]).is_err());
        assert!(SrtpSender::from_suite(SrtpCryptoSuite::AeadAes256Gcm, &[0; 44]).is_ok());
    }

    #[test]
    fn each_side_sends_with_its_own_half_of_the_keying_material() {
        // client key | server key | client salt | server salt, for AES_CM (16 + 16 + 14 + 14).
        let mut material = hex(MASTER_KEY);
        material.extend_from_slice(&[0x11; 16]);
        material.extend_from_slice(&hex(MASTER_SALT));
        material.extend_from_slice(&[0x22; 14]);
        let packet = || {
            let mut p = hex("800f1234decafbadcafebabe");
            p.extend_from_slice(&[0xab; 16]);
            p
        };
        let keys = |active| ExportedKeys {
            material: material.clone(),
            profile: SrtpProfile::AES128_CM_SHA1_80,
            active,
        };
        let mut as_client = packet();
        SrtpSender::new(&keys(true))
            .unwrap()
            .protect_rtp(&mut as_client, 12, 0xcafe_babe, 0, 0x1234)
            .unwrap();
        assert_eq!(&as_client[12..16], &hex("4e55dc4c")[..], "the client's key");
        let mut as_server = packet();
        SrtpSender::new(&keys(false))
            .unwrap()
            .protect_rtp(&mut as_server, 12, 0xcafe_babe, 0, 0x1234)
            .unwrap();
        assert_ne!(as_server, as_client, "the server's key");
        let short = ExportedKeys {
            material: vec![0; 59],
            ..keys(true)
        };
        assert!(matches!(
            SrtpSender::new(&short),
            Err(SrtpError::MaterialLength {
                got: 59,
                want: 60,
                ..
            })
        ));
    }

    #[test]
    fn what_one_side_of_a_handshake_protects_the_other_side_reads() {
        for (profile, len) in [
            (SrtpProfile::AES128_CM_SHA1_80, 60),
            (SrtpProfile::AEAD_AES_128_GCM, 56),
            (SrtpProfile::AEAD_AES_256_GCM, 88),
        ] {
            let material: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let keys = |active| ExportedKeys {
                material: material.clone(),
                profile,
                active,
            };
            let report = || {
                let mut r = hex("81c90007cafebabe");
                r.extend_from_slice(&[0x5a; 24]);
                r
            };
            let mut from_client = report();
            SrtpSender::new(&keys(true))
                .unwrap()
                .protect_rtcp(&mut from_client, 7)
                .unwrap();
            let server = SrtpReceiver::new(&keys(false)).unwrap();
            let mut copy = from_client.clone();
            let plain = server.unprotect_rtcp(&mut copy).unwrap();
            assert_eq!(&copy[..plain], &report()[..], "{profile:?}");
            // The server does not read its own half as the client's.
            let mut own = report();
            SrtpSender::new(&keys(false))
                .unwrap()
                .protect_rtcp(&mut own, 7)
                .unwrap();
            assert!(server.unprotect_rtcp(&mut own).is_err(), "{profile:?}");
        }
    }

    #[test]
    fn a_gcm_packet_authenticates_its_header_and_grows_by_the_tag() {
        for (profile, key_len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 32),
        ] {
            let sender = SrtpSender::from_master(profile, &vec![7; key_len], &[9; 12]).unwrap();
            let mut packet = hex("800f1234decafbadcafebabe");
            packet.extend_from_slice(&[0xab; 16]);
            sender
                .protect_rtp(&mut packet, 12, 0xcafe_babe, 1, 0x1234)
                .unwrap();
            assert_eq!(packet.len(), 12 + 16 + GCM_TAG_LEN);
            assert_eq!(&packet[..12], &hex("800f1234decafbadcafebabe")[..]);
            assert_ne!(&packet[12..28], &[0xab; 16][..]);
            // Another ROC is another IV: another ciphertext.
            let mut other = hex("800f1234decafbadcafebabe");
            other.extend_from_slice(&[0xab; 16]);
            sender
                .protect_rtp(&mut other, 12, 0xcafe_babe, 2, 0x1234)
                .unwrap();
            assert_ne!(other[12..], packet[12..]);
        }
    }
}
