//! What the forwarding logic needs to know of an RTP payload: does it start a keyframe, which
//! temporal layer is it, and (VP8) its picture id and TL0PICIDX. Pure functions on bytes that
//! never panic, whatever the input.

use str0m::format::Codec;
use str0m::rtp::Vp8Descriptor;

/// Per-packet facts about a video payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The packet begins a keyframe (decodable on its own).
    pub keyframe_start: bool,
    /// Temporal layer id, when the codec says.
    pub temporal_id: Option<u8>,
    /// A switch up to this temporal layer is safe here (VP8 `Y` bit, or a keyframe).
    pub layer_sync: bool,
    /// VP8 picture id and whether it uses the 15-bit form.
    pub picture_id: Option<(u16, bool)>,
    /// VP8 TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
}

/// Which codecs the forwarder can find keyframes in.
pub fn detects_keyframes(codec: Codec) -> bool {
    matches!(codec, Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::H265)
}

/// Inspects `payload` of `codec`.
pub fn inspect(codec: Codec, payload: &[u8]) -> PayloadInfo {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => PayloadInfo {
            keyframe_start: h264_keyframe(payload),
            ..Default::default()
        },
        Codec::H265 => PayloadInfo {
            keyframe_start: h265_keyframe(payload),
            ..Default::default()
        },
        _ => PayloadInfo::default(),
    }
}

/// RFC 7741 §4.2: X|R|N|S|R|PID, then I|L|T|K, PictureID, TL0PICIDX, TID|Y|KEYIDX.
fn vp8(payload: &[u8]) -> PayloadInfo {
    let Ok(desc) = Vp8Descriptor::parse(payload) else {
        return PayloadInfo::default();
    };
    let mut info = PayloadInfo {
        keyframe_start: desc.starts_keyframe(payload),
        tl0_pic_idx: desc.tl0_pic_idx(),
        ..Default::default()
    };
    if let (Some(pid), Some(&b)) = (desc.picture_id(), payload.get(2)) {
        // Parse succeeded, so the I byte exists when there is a picture id at offset 2.
        info.picture_id = Some((pid, b & 0x80 != 0));
    }
    // Find the TID|Y|KEYIDX byte ourselves (str0m's descriptor does not expose TID).
    if payload.first().is_some_and(|b| b & 0x80 != 0)
        && let Some(&ext) = payload.get(1)
    {
        let mut offset = 2;
        if ext & 0x80 != 0 {
            let long = payload.get(offset).is_some_and(|b| b & 0x80 != 0);
            offset += if long { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1;
        }
        if ext & 0x20 != 0
            && let Some(&tid) = payload.get(offset)
        {
            info.temporal_id = Some(tid >> 6);
            info.layer_sync = tid & 0x20 != 0;
        }
    }
    if info.keyframe_start {
        info.layer_sync = true;
    }
    info
}

/// Writes a rewritten picture id and TL0PICIDX into a VP8 payload descriptor in place
/// (RFC 7741 §4.2); each field keeps its width (a 7-bit picture id takes the low seven bits). A
/// field the descriptor lacks is left out; a short payload is left as it is.
pub fn patch_vp8(payload: &mut [u8], picture_id: Option<u16>, tl0_pic_idx: Option<u8>) {
    if payload.first().is_none_or(|b| b & 0x80 == 0) {
        return;
    }
    let Some(&ext) = payload.get(1) else {
        return;
    };
    let mut offset = 2;
    if ext & 0x80 != 0 {
        let Some(&first) = payload.get(2) else {
            return;
        };
        let long = first & 0x80 != 0;
        if long && payload.len() < 4 {
            return;
        }
        if let Some(pid) = picture_id {
            if long {
                payload[2] = 0x80 | ((pid >> 8) as u8 & 0x7f);
                payload[3] = pid as u8;
            } else {
                payload[2] = pid as u8 & 0x7f;
            }
        }
        offset += if long { 2 } else { 1 };
    }
    if ext & 0x40 != 0
        && let Some(tl0) = tl0_pic_idx
        && let Some(b) = payload.get_mut(offset)
    {
        *b = tl0;
    }
}

/// RFC 9628 §4.2: I|P|L|F|B|E|V|Z; with L, TID|U|SID|D follows the picture id.
fn vp9(payload: &[u8]) -> PayloadInfo {
    let Some(&b0) = payload.first() else {
        return PayloadInfo::default();
    };
    let inter_picture = b0 & 0x40 != 0;
    let start_of_frame = b0 & 0x08 != 0;
    let mut info = PayloadInfo::default();
    let mut offset = 1;
    if b0 & 0x80 != 0 {
        let long = payload.get(offset).is_some_and(|b| b & 0x80 != 0);
        offset += if long { 2 } else { 1 };
    }
    let mut spatial_id = 0;
    if b0 & 0x20 != 0
        && let Some(&l) = payload.get(offset)
    {
        info.temporal_id = Some(l >> 5);
        info.layer_sync = l & 0x10 != 0;
        spatial_id = (l >> 1) & 0x07;
    }
    info.keyframe_start = !inter_picture && start_of_frame && spatial_id == 0;
    if info.keyframe_start {
        info.layer_sync = true;
    }
    info
}

fn h264_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match b0 & 0x1f {
        // STAP-A: 16-bit size, then the NAL unit.
        24 => {
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                if size == 0 {
                    return false;
                }
                if is_key(payload[i + 2] & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: start bit and the fragmented NAL's type.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

fn h265_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let is_key = |t: u8| (16..=21).contains(&t) || (32..=34).contains(&t);
    match (b0 >> 1) & 0x3f {
        // Aggregation packet: look at the first NAL unit.
        48 => payload.get(4).is_some_and(|b| is_key((b >> 1) & 0x3f)),
        // Fragmentation unit: start bit and type.
        49 => payload
            .get(2)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x3f)),
        t => is_key(t),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A VP8 payload: descriptor with 15-bit picture id, TL0PICIDX and TID, then a VP8 header.
    pub fn vp8_packet(keyframe: bool, pid: u16, tl0: u8, tid: u8, sync: bool) -> Vec<u8> {
        let mut p = vec![
            0x90, // X=1, S=1, PID=0
            0xe0, // I, L, T
            0x80 | ((pid >> 8) as u8 & 0x7f),
            pid as u8,
            tl0,
            (tid << 6) | if sync { 0x20 } else { 0 },
        ];
        p.push(if keyframe { 0x00 } else { 0x01 });
        p.extend_from_slice(&[0; 9]);
        p
    }

    #[test]
    fn vp8_descriptor_fields_are_read() {
        let info = inspect(Codec::Vp8, &vp8_packet(true, 1234, 7, 0, false));
        assert!(info.keyframe_start);
        assert_eq!(info.picture_id, Some((1234, true)));
        assert_eq!(info.tl0_pic_idx, Some(7));
        assert_eq!(info.temporal_id, Some(0));
        assert!(info.layer_sync);

        let info = inspect(Codec::Vp8, &vp8_packet(false, 99, 8, 2, true));
        assert!(!info.keyframe_start);
        assert_eq!(info.temporal_id, Some(2));
        assert!(info.layer_sync);
    }

    #[test]
    fn a_vp8_patch_rewrites_picture_id_and_tl0_in_place_keeping_their_width() {
        let mut p = vp8_packet(true, 1234, 7, 1, true);
        patch_vp8(&mut p, Some(0x7abc), Some(200));
        let info = inspect(Codec::Vp8, &p);
        assert_eq!(info.picture_id, Some((0x7abc, true)));
        assert_eq!(info.tl0_pic_idx, Some(200));
        assert_eq!(info.temporal_id, Some(1), "the bytes after are untouched");
        assert!(info.keyframe_start);
        // A 7-bit picture id (no TL0PICIDX): the low seven bits, nothing else moves.
        let mut short = vec![0x90, 0x80, 0x05, 0x00, 1, 2];
        patch_vp8(&mut short, Some(0x1ff), Some(9));
        assert_eq!(short, vec![0x90, 0x80, 0x7f, 0x00, 1, 2]);
        // Without an extension byte, or truncated: left as it is, no panic.
        let mut plain = vec![0x10, 0x00, 0x01];
        patch_vp8(&mut plain, Some(5), Some(5));
        assert_eq!(plain, vec![0x10, 0x00, 0x01]);
        for len in 0..4 {
            let mut cut = vp8_packet(false, 300, 1, 0, false)[..len].to_vec();
            let before = cut.clone();
            patch_vp8(&mut cut, Some(1), Some(1));
            assert_eq!(cut.len(), before.len());
        }
    }

    #[test]
    fn vp8_continuation_packet_is_not_a_keyframe_start() {
        let mut p = vp8_packet(true, 1, 0, 0, false);
        p[0] = 0x80; // S=0
        assert!(!inspect(Codec::Vp8, &p).keyframe_start);
    }

    #[test]
    fn h264_keyframes_are_found_in_single_stap_a_and_fu_a() {
        assert!(inspect(Codec::H264, &[0x65, 1, 2]).keyframe_start);
        assert!(!inspect(Codec::H264, &[0x41, 1, 2]).keyframe_start);
        // STAP-A with SPS.
        assert!(inspect(Codec::H264, &[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]).keyframe_start);
        // FU-A start of IDR, and its continuation.
        assert!(inspect(Codec::H264, &[0x7c, 0x85, 0]).keyframe_start);
        assert!(!inspect(Codec::H264, &[0x7c, 0x05, 0]).keyframe_start);
    }

    #[test]
    fn vp9_keyframe_is_a_non_inter_start_of_frame() {
        assert!(inspect(Codec::Vp9, &[0x08, 0]).keyframe_start);
        assert!(!inspect(Codec::Vp9, &[0x48, 0]).keyframe_start);
        assert!(!inspect(Codec::Vp9, &[0x00, 0]).keyframe_start);
    }

    #[test]
    fn hostile_payloads_never_panic() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..64 {
            for _ in 0..200 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        seed as u8
                    })
                    .collect();
                for codec in [
                    Codec::Vp8,
                    Codec::Vp9,
                    Codec::H264,
                    Codec::H265,
                    Codec::Opus,
                ] {
                    let _ = inspect(codec, &data);
                }
            }
        }
    }
}
