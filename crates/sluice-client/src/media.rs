//! Synthetic media: real VP8 payload structure (descriptor with picture id, TL0PICIDX and
//! temporal layer; keyframe / interframe payload header) and opus-sized audio, each carrying a
//! [`Stamp`] (frame, packet, send time) so a receiver can check every payload arrived intact and
//! measure one-way latency without decoding anything.

use std::time::{SystemTime, UNIX_EPOCH};

/// Marks the start of a stamp inside a payload.
pub const STAMP_MAGIC: [u8; 4] = *b"SLCE";

/// Bytes of a stamp: magic, layer, frame, packet index, packet count, send time.
pub const STAMP_LEN: usize = 4 + 1 + 4 + 2 + 2 + 8;

/// What a synthetic payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Simulcast layer (0 without simulcast).
    pub layer: u8,
    pub frame: u32,
    /// Index of this packet within its frame, and the frame's packet count.
    pub index: u16,
    pub count: u16,
    /// Send time, microseconds since the UNIX epoch.
    pub sent_us: u64,
}

impl Stamp {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&STAMP_MAGIC);
        out.push(self.layer);
        out.extend_from_slice(&self.frame.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.sent_us.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Stamp> {
        let b = bytes.get(..STAMP_LEN)?;
        if b[..4] != STAMP_MAGIC {
            return None;
        }
        Some(Stamp {
            layer: b[4],
            frame: u32::from_be_bytes(b[5..9].try_into().ok()?),
            index: u16::from_be_bytes(b[9..11].try_into().ok()?),
            count: u16::from_be_bytes(b[11..13].try_into().ok()?),
            sent_us: u64::from_be_bytes(b[13..21].try_into().ok()?),
        })
    }
}

/// Microseconds since the UNIX epoch (shared by sender and receiver on one machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Filler bytes that depend on the stamp, so a corrupted byte anywhere is noticed.
fn filler(stamp: &Stamp, i: usize) -> u8 {
    (stamp.frame as usize)
        .wrapping_mul(31)
        .wrapping_add(i.wrapping_mul(7))
        .wrapping_add(usize::from(stamp.index))
        .wrapping_add(usize::from(stamp.layer)) as u8
}

fn body(stamp: &Stamp, size: usize, out: &mut Vec<u8>) {
    stamp.write(out);
    let start = out.len();
    for i in 0..size.saturating_sub(STAMP_LEN) {
        out.push(filler(stamp, start + i));
    }
}

fn check_body(stamp: &Stamp, payload: &[u8], start: usize) -> bool {
    payload[start + STAMP_LEN..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == filler(stamp, start + STAMP_LEN + i))
}

/// VP8 payload descriptor fields of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Fields {
    pub picture_id: u16,
    pub tl0_pic_idx: u8,
    pub temporal_id: u8,
    pub layer_sync: bool,
}

/// One VP8 RTP payload: a descriptor (X, S on the first packet; I with a 15-bit picture id, L,
/// T), a one-byte payload header on the first packet (P bit clear on keyframes), then the body.
pub fn vp8_payload(keyframe: bool, fields: Vp8Fields, stamp: Stamp, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(STAMP_LEN) + 8);
    let first = stamp.index == 0;
    p.push(0x80 | if first { 0x10 } else { 0 });
    p.push(0xe0);
    p.push(0x80 | ((fields.picture_id >> 8) as u8 & 0x7f));
    p.push(fields.picture_id as u8);
    p.push(fields.tl0_pic_idx);
    p.push((fields.temporal_id << 6) | if fields.layer_sync { 0x20 } else { 0 });
    if first {
        // VP8 payload header, size bits zero: P = 0 for a keyframe.
        p.push(if keyframe { 0x00 } else { 0x01 });
    }
    let header = p.len();
    body(&stamp, size.saturating_sub(header), &mut p);
    p
}

/// The length of a VP8 payload descriptor (0 when malformed).
pub fn vp8_descriptor_len(payload: &[u8]) -> usize {
    let Some(&b0) = payload.first() else { return 0 };
    let mut len = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(1) else { return 0 };
        len += 1;
        if x & 0x80 != 0 {
            len += if payload.get(len).is_some_and(|b| b & 0x80 != 0) {
                2
            } else {
                1
            };
        }
        if x & 0x40 != 0 {
            len += 1;
        }
        if x & 0x30 != 0 {
            len += 1;
        }
    }
    len
}

/// Reads a VP8 payload's descriptor fields (picture id, TL0PICIDX, TID, Y).
pub fn vp8_fields(payload: &[u8]) -> Option<Vp8Fields> {
    if payload.len() < 6 || payload[0] & 0x80 == 0 || payload[1] & 0xe0 != 0xe0 {
        return None;
    }
    let picture_id = (u16::from(payload[2] & 0x7f) << 8) | u16::from(payload[3]);
    Some(Vp8Fields {
        picture_id,
        tl0_pic_idx: payload[4],
        temporal_id: payload[5] >> 6,
        layer_sync: payload[5] & 0x20 != 0,
    })
}

/// Whether a VP8 payload starts a keyframe.
pub fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let d = vp8_descriptor_len(payload);
    payload.first().is_some_and(|b| b & 0x10 != 0) && payload.get(d).is_some_and(|b| b & 1 == 0)
}

/// The stamp of a synthetic VP8 payload, if its body is intact.
pub fn vp8_stamp(payload: &[u8]) -> Option<Stamp> {
    let mut start = vp8_descriptor_len(payload);
    if payload.first().is_some_and(|b| b & 0x10 != 0) {
        start += 1;
    }
    let stamp = Stamp::read(payload.get(start..)?)?;
    check_body(&stamp, payload, start).then_some(stamp)
}

/// An opus-sized audio payload carrying a stamp.
pub fn audio_payload(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(STAMP_LEN));
    body(&stamp, size, &mut p);
    p
}

/// The stamp of a synthetic audio payload, if intact.
pub fn audio_stamp(payload: &[u8]) -> Option<Stamp> {
    let stamp = Stamp::read(payload)?;
    check_body(&stamp, payload, 0).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(index: u16) -> Stamp {
        Stamp {
            layer: 1,
            frame: 42,
            index,
            count: 3,
            sent_us: 123_456_789,
        }
    }

    #[test]
    fn vp8_payloads_round_trip_and_carry_their_descriptor() {
        let fields = Vp8Fields {
            picture_id: 0x1234,
            tl0_pic_idx: 9,
            temporal_id: 2,
            layer_sync: true,
        };
        let first = vp8_payload(true, fields, stamp(0), 1200);
        assert_eq!(first.len(), 1200);
        assert!(vp8_is_keyframe(&first));
        assert_eq!(vp8_fields(&first), Some(fields));
        assert_eq!(vp8_stamp(&first), Some(stamp(0)));
        let second = vp8_payload(true, fields, stamp(1), 1200);
        assert!(!vp8_is_keyframe(&second));
        assert_eq!(vp8_stamp(&second), Some(stamp(1)));
        assert!(!vp8_is_keyframe(&vp8_payload(false, fields, stamp(0), 500)));
    }

    #[test]
    fn a_corrupted_byte_invalidates_the_stamp() {
        let mut p = audio_payload(stamp(0), 100);
        assert_eq!(audio_stamp(&p), Some(stamp(0)));
        p[60] ^= 1;
        assert_eq!(audio_stamp(&p), None);
    }

    #[test]
    fn sluice_media_reads_the_same_vp8_fields() {
        // The server's payload inspection and this generator must agree.
        let fields = Vp8Fields {
            picture_id: 300,
            tl0_pic_idx: 4,
            temporal_id: 1,
            layer_sync: false,
        };
        let p = vp8_payload(true, fields, stamp(0), 200);
        let info = sluice_media::payload::inspect(str0m::format::Codec::Vp8, &p);
        assert!(info.keyframe_start);
        assert_eq!(info.picture_id, Some((300, true)));
        assert_eq!(info.tl0_pic_idx, Some(4));
        assert_eq!(info.temporal_id, Some(1));
    }
}
