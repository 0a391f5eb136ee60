//! The client's DTLS certificate fingerprint, with every hash function mediasoup accepts.
//!
//! str0m 0.25 verifies a remote fingerprint only when it is sha-256 or sha-1, and it exposes the
//! peer's certificate only as its sha-256 fingerprint. Clients differ in what they send:
//! browsers send sha-256, but pymediasoup (aiortc) sends only the last of aiortc's fingerprints,
//! sha-512. So sluice builds every `Rtc` with str0m's verification off and checks the peer
//! itself when DTLS connects, before anything else of that transport is polled:
//!
//! - with a sha-256 fingerprint from the client, against the sha-256 fingerprint str0m computed
//!   of the certificate the handshake used;
//! - otherwise, the peer's certificate is read from the cleartext DTLS 1.2 handshake (epoch 0
//!   `Certificate` message, reassembled from its fragments), bound to the handshake by its sha-256
//!   (which must equal str0m's), and hashed with the client's algorithm.
//!
//! Either way a mismatch fails the transport closed.

use aws_lc_rs::digest;

/// Hash functions of a fingerprint (RFC 8122 §5, as mediasoup accepts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFunction {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashFunction {
    pub fn parse(name: &str) -> Option<HashFunction> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha-1" => HashFunction::Sha1,
            "sha-224" => HashFunction::Sha224,
            "sha-256" => HashFunction::Sha256,
            "sha-384" => HashFunction::Sha384,
            "sha-512" => HashFunction::Sha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            HashFunction::Sha1 => "sha-1",
            HashFunction::Sha224 => "sha-224",
            HashFunction::Sha256 => "sha-256",
            HashFunction::Sha384 => "sha-384",
            HashFunction::Sha512 => "sha-512",
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashFunction::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashFunction::Sha224 => &digest::SHA224,
            HashFunction::Sha256 => &digest::SHA256,
            HashFunction::Sha384 => &digest::SHA384,
            HashFunction::Sha512 => &digest::SHA512,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.algorithm(), data).as_ref().to_vec()
    }

    fn len(self) -> usize {
        self.algorithm().output_len()
    }
}

/// A fingerprint the client announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFingerprint {
    pub hash: HashFunction,
    pub bytes: Vec<u8>,
}

impl ExpectedFingerprint {
    /// Parses `algorithm` and `AB:CD:…`; `Err` says what is wrong.
    pub fn parse(algorithm: &str, value: &str) -> Result<ExpectedFingerprint, String> {
        let hash = HashFunction::parse(algorithm)
            .ok_or_else(|| format!("unsupported fingerprint algorithm {algorithm:?}"))?;
        let bytes = value
            .trim()
            .split(':')
            .map(|h| {
                if h.len() == 2 {
                    u8::from_str_radix(h, 16).ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("a {} fingerprint is colon-separated hex bytes", hash.name()))?;
        if bytes.len() != hash.len() {
            return Err(format!(
                "a {} fingerprint has {} bytes, not {}",
                hash.name(),
                hash.len(),
                bytes.len()
            ));
        }
        Ok(ExpectedFingerprint { hash, bytes })
    }

    /// `sha-256 AB:CD:…`.
    pub fn to_sdp(&self) -> String {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02X}")).collect();
        format!("{} {}", self.hash.name(), hex.join(":"))
    }

    pub fn matches(&self, certificate_der: &[u8]) -> bool {
        self.hash.digest(certificate_der) == self.bytes
    }
}

/// Largest `Certificate` handshake message reassembled (a chain of a few RSA certificates).
const MAX_CERTIFICATE_MESSAGE: usize = 64 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CERTIFICATE: u8 = 11;

/// Reads the peer's certificate out of the cleartext DTLS 1.2 handshake it sends.
#[derive(Debug, Default)]
pub struct PeerCertificateCapture {
    /// The `Certificate` message being reassembled: its body and the byte ranges received.
    message: Vec<u8>,
    received: Vec<(usize, usize)>,
    /// The first certificate (DER) of the first complete message.
    certificate: Option<Vec<u8>>,
}

impl PeerCertificateCapture {
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// Looks at one datagram from the peer; anything that is not an epoch-0 handshake record
    /// carrying a `Certificate` fragment is ignored. Never fails: a malformed datagram is
    /// str0m's to refuse.
    pub fn on_datagram(&mut self, mut data: &[u8]) {
        while self.certificate.is_none() && data.len() >= 13 {
            let content_type = data[0];
            let epoch = u16::from_be_bytes([data[3], data[4]]);
            let length = usize::from(u16::from_be_bytes([data[11], data[12]]));
            let Some(fragment) = data.get(13..13 + length) else {
                return;
            };
            if content_type == CONTENT_HANDSHAKE && epoch == 0 {
                self.on_handshake_record(fragment);
            }
            data = &data[13 + length..];
        }
    }

    fn on_handshake_record(&mut self, mut record: &[u8]) {
        while self.certificate.is_none() && record.len() >= 12 {
            let msg_type = record[0];
            let total = u24(&record[1..4]);
            let offset = u24(&record[6..9]);
            let len = u24(&record[9..12]);
            let Some(fragment) = record.get(12..12 + len) else {
                return;
            };
            if msg_type == HANDSHAKE_CERTIFICATE {
                self.on_certificate_fragment(total, offset, fragment);
            }
            record = &record[12 + len..];
        }
    }

    fn on_certificate_fragment(&mut self, total: usize, offset: usize, fragment: &[u8]) {
        if total > MAX_CERTIFICATE_MESSAGE || offset + fragment.len() > total {
            return;
        }
        if self.message.len() != total {
            // A first fragment, or one of another length: start over with this one.
            self.message = vec![0; total];
            self.received.clear();
        }
        self.message[offset..offset + fragment.len()].copy_from_slice(fragment);
        self.received.push((offset, offset + fragment.len()));
        self.received.sort_unstable();
        let mut covered = 0;
        for &(start, end) in &self.received {
            if start > covered {
                return;
            }
            covered = covered.max(end);
        }
        if covered < total {
            return;
        }
        // certificate_list<0..2^24-1>: the first entry is the peer's own certificate.
        let body = &self.message;
        if body.len() < 6 || u24(&body[0..3]) + 3 > body.len() {
            return;
        }
        let first = u24(&body[3..6]);
        if let Some(der) = body.get(6..6 + first)
            && !der.is_empty()
        {
            self.certificate = Some(der.to_vec());
        }
    }
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DER: &[u8] = b"0\x82\x01\x0a-not-really-a-certificate-but-bytes-to-hash";

    fn certificate_message(der: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let list = der.len() + 3;
        body.extend_from_slice(&[(list >> 16) as u8, (list >> 8) as u8, list as u8]);
        body.extend_from_slice(&[
            (der.len() >> 16) as u8,
            (der.len() >> 8) as u8,
            der.len() as u8,
        ]);
        body.extend_from_slice(der);
        body
    }

    /// One epoch-0 handshake record carrying `body[offset..offset + len]` of a message.
    fn record(msg_type: u8, epoch: u16, body: &[u8], offset: usize, len: usize) -> Vec<u8> {
        let mut hs = vec![msg_type];
        let t = body.len();
        hs.extend_from_slice(&[(t >> 16) as u8, (t >> 8) as u8, t as u8]);
        hs.extend_from_slice(&[0, 1]);
        hs.extend_from_slice(&[(offset >> 16) as u8, (offset >> 8) as u8, offset as u8]);
        hs.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
        hs.extend_from_slice(&body[offset..offset + len]);
        let mut r = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
        r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        r.extend_from_slice(&hs);
        r
    }

    #[test]
    fn every_hash_function_mediasoup_accepts_is_parsed_and_checked() {
        for name in ["sha-1", "SHA-224", "sha-256", "sha-384", "sha-512"] {
            let hash = HashFunction::parse(name).unwrap();
            let hex: Vec<String> = hash
                .digest(DER)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let f = ExpectedFingerprint::parse(name, &hex.join(":")).unwrap();
            assert!(f.matches(DER), "{name}");
            assert!(!f.matches(b"another certificate"), "{name}");
        }
    }

    #[test]
    fn bad_fingerprints_say_what_is_wrong() {
        let e = ExpectedFingerprint::parse("md5", "AB").unwrap_err();
        assert!(e.contains("unsupported"), "{e}");
        let e = ExpectedFingerprint::parse("sha-256", "AB:CD").unwrap_err();
        assert!(e.contains("32 bytes"), "{e}");
        let e = ExpectedFingerprint::parse("sha-256", "zz:").unwrap_err();
        assert!(e.contains("hex"), "{e}");
        let f = ExpectedFingerprint::parse("sha-256", &["0A"; 32].join(":")).unwrap();
        assert!(f.to_sdp().starts_with("sha-256 0A:0A"));
    }

    #[test]
    fn the_certificate_is_read_from_one_record_among_others() {
        let body = certificate_message(DER);
        let mut datagram = record(2, 0, &[0u8; 40], 0, 40); // ServerHello
        datagram.extend(record(HANDSHAKE_CERTIFICATE, 0, &body, 0, body.len()));
        let mut c = PeerCertificateCapture::default();
        c.on_datagram(&datagram);
        assert_eq!(c.certificate(), Some(DER));
    }

    #[test]
    fn the_certificate_is_reassembled_from_fragments_in_any_order_and_repeats() {
        let body = certificate_message(DER);
        let mut c = PeerCertificateCapture::default();
        c.on_datagram(&record(
            HANDSHAKE_CERTIFICATE,
            0,
            &body,
            20,
            body.len() - 20,
        ));
        assert_eq!(c.certificate(), None);
        c.on_datagram(&record(
            HANDSHAKE_CERTIFICATE,
            0,
            &body,
            20,
            body.len() - 20,
        ));
        assert_eq!(c.certificate(), None);
        c.on_datagram(&record(HANDSHAKE_CERTIFICATE, 0, &body, 0, 25));
        assert_eq!(c.certificate(), Some(DER));
    }

    #[test]
    fn encrypted_records_and_hostile_bytes_are_ignored() {
        let body = certificate_message(DER);
        let mut c = PeerCertificateCapture::default();
        c.on_datagram(&record(HANDSHAKE_CERTIFICATE, 1, &body, 0, body.len()));
        assert_eq!(c.certificate(), None);
        // Truncations and lengths pointing past the end.
        let whole = record(HANDSHAKE_CERTIFICATE, 0, &body, 0, body.len());
        for end in 0..whole.len() {
            c.on_datagram(&whole[..end]);
        }
        let mut lying = whole.clone();
        lying[14] = 0xff; // total length of the handshake message
        c.on_datagram(&lying);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut d = whole.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % d.len();
                d[i] = (x >> 32) as u8;
            }
            PeerCertificateCapture::default().on_datagram(&d);
        }
        assert_eq!(c.certificate(), None);
        c.on_datagram(&whole);
        assert_eq!(c.certificate(), Some(DER));
    }

    /// A DTLS 1.3 ClientHello (legacy record version, `supported_versions` naming DTLS 1.3) and
    /// the encrypted records that follow it in 1.3 (unified headers, epochs ≥ 2) carry no
    /// certificate in the clear: the capture finds none, and verification then refuses the peer
    /// ("not seen in the handshake") instead of trusting it.
    #[test]
    fn a_dtls_1_3_handshake_yields_no_certificate() {
        let mut hello = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        // legacy_version, random, session id, cookie, one cipher suite, no compression.
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 0, 2, 0x13, 0x01, 1, 0]);
        // extensions: supported_versions = [DTLS 1.3].
        body.extend_from_slice(&[0, 7, 0, 43, 0, 3, 2, 0xfe, 0xfc]);
        let len = body.len();
        hello[1..4].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        hello[9..12].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        hello.extend_from_slice(&body);
        let mut datagram = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
        datagram.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        datagram.extend_from_slice(&hello);
        let mut c = PeerCertificateCapture::default();
        c.on_datagram(&datagram);
        // A DTLS 1.3 ciphertext record: unified header 0b001CSLEE, sequence, length, bytes.
        let mut encrypted = vec![0x2e, 0x00, 0x05, 0x00, 0x40];
        encrypted.extend_from_slice(&[0x5a; 64]);
        c.on_datagram(&encrypted);
        assert_eq!(c.certificate(), None);
    }
}
