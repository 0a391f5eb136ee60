//! Reading the RTCP a remote sends about the streams sluice writes itself (the own egress and
//! plain transports' consumers): receiver report blocks (RFC 3550 §6.4), generic NACKs
//! (RFC 4585 §6.2.1), PLIs (RFC 4585 §6.3.1) and FIRs (RFC 5104 §4.3.1). Everything else in a
//! compound packet is skipped; a malformed packet ends the reading where it breaks. And writing
//! the generic NACK a pipe's producer sends its source ([`nack`]).

/// One piece of feedback about a media SSRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// A report block: the fraction of packets lost since the last report, in 1/256ths.
    Report { ssrc: u32, fraction_lost: u8 },
    /// Sequence numbers the receiver lacks.
    Nack { ssrc: u32, lost: Vec<u16> },
    /// A picture loss indication.
    Pli { ssrc: u32 },
    /// A full intra request.
    Fir { ssrc: u32 },
}

impl Feedback {
    /// The media SSRC it is about.
    pub fn ssrc(&self) -> u32 {
        match self {
            Feedback::Report { ssrc, .. }
            | Feedback::Nack { ssrc, .. }
            | Feedback::Pli { ssrc }
            | Feedback::Fir { ssrc } => *ssrc,
        }
    }

    /// Whether it asks for a keyframe.
    pub fn is_keyframe_request(&self) -> bool {
        matches!(self, Feedback::Pli { .. } | Feedback::Fir { .. })
    }
}

/// Whether a datagram of the RTP range is RTCP (RFC 5761 §4: packet types 192–223).
pub(crate) fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && (192..=223).contains(&data[1])
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The feedback in a (compound) RTCP packet, at most `max_nacked` sequence numbers in all.
pub(crate) fn read(data: &[u8], max_nacked: usize) -> Vec<Feedback> {
    let mut out = Vec::new();
    let mut nacked = 0usize;
    let mut rest = data;
    while rest.len() >= 4 {
        if rest[0] >> 6 != 2 {
            break;
        }
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        let Some(packet) = rest.get(..len) else {
            break;
        };
        let count = usize::from(packet[0] & 0x1f);
        match packet[1] {
            // SR (sender info first) and RR: `count` report blocks of 24 bytes.
            200 | 201 => {
                let start = if packet[1] == 200 { 28 } else { 8 };
                let blocks = packet.get(start..).unwrap_or_default();
                for block in blocks.chunks_exact(24).take(count) {
                    if let Some(ssrc) = u32_at(block, 0) {
                        out.push(Feedback::Report {
                            ssrc,
                            fraction_lost: block[4],
                        });
                    }
                }
            }
            // Generic NACK: FCI entries of a packet id and a bitmask of the 16 after it.
            205 if count == 1 => {
                let Some(ssrc) = u32_at(packet, 8) else {
                    break;
                };
                let mut lost = Vec::new();
                for entry in packet.get(12..).unwrap_or_default().chunks_exact(4) {
                    let pid = u16::from_be_bytes([entry[0], entry[1]]);
                    let blp = u16::from_be_bytes([entry[2], entry[3]]);
                    lost.push(pid);
                    for bit in 0..16u16 {
                        if blp & (1 << bit) != 0 {
                            lost.push(pid.wrapping_add(bit + 1));
                        }
                    }
                }
                lost.truncate(max_nacked.saturating_sub(nacked));
                nacked += lost.len();
                if !lost.is_empty() {
                    out.push(Feedback::Nack { ssrc, lost });
                }
            }
            206 if count == 1 => {
                if let Some(ssrc) = u32_at(packet, 8) {
                    out.push(Feedback::Pli { ssrc });
                }
            }
            // FIR: FCI entries of 8 bytes (SSRC, sequence number, reserved).
            206 if count == 4 => {
                for entry in packet.get(12..).unwrap_or_default().chunks_exact(8) {
                    if let Some(ssrc) = u32_at(entry, 0) {
                        out.push(Feedback::Fir { ssrc });
                    }
                }
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    out
}

/// A generic NACK (RFC 4585 §6.2.1) for `lost` sequence numbers of `media_ssrc`, in the
/// order given: each FCI entry names a packet and the 16 after it that are lost too. The sender
/// SSRC is 1, as a plain transport has no stream of its own to name.
pub(crate) fn nack(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let mut entries: Vec<(u16, u16)> = Vec::new();
    for &seq in lost {
        match entries.last_mut() {
            Some((pid, blp)) if seq.wrapping_sub(*pid) >= 1 && seq.wrapping_sub(*pid) <= 16 => {
                *blp |= 1 << (seq.wrapping_sub(*pid) - 1);
            }
            _ => entries.push((seq, 0)),
        }
    }
    // The length field counts 32-bit words after the first, a u16: far more entries than a
    // datagram carries are refused by the caller's budget, so at most 16,000 are written.
    entries.truncate(16_000);
    let words = 2 + entries.len();
    let mut p = Vec::with_capacity(4 + 4 * words);
    p.extend_from_slice(&[0x81, 205]);
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&media_ssrc.to_be_bytes());
    for (pid, blp) in entries {
        p.extend_from_slice(&pid.to_be_bytes());
        p.extend_from_slice(&blp.to_be_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nack_written_reads_back_as_the_same_sequence_numbers() {
        let lost = [100, 101, 103, 116, 117, 65_535, 0, 4];
        let packet = nack(0xdead_beef, &lost);
        // 100 with 101, 103, 116 in its mask; 117 starts an entry; 65535 with 0 and 4 (across
        // the wrap) in its mask.
        assert_eq!(packet.len(), 12 + 3 * 4);
        assert_eq!(
            read(&packet, 1000),
            vec![Feedback::Nack {
                ssrc: 0xdead_beef,
                lost: vec![100, 101, 103, 116, 117, 65_535, 0, 4],
            }]
        );
        assert_eq!(nack(5, &[]).len(), 12);
    }

    #[test]
    fn reports_nacks_plis_and_firs_are_read_from_a_compound_packet() {
        let mut compound = Vec::new();
        // RR from 9 with two blocks: SSRC 0x0a0b0c0d lost 25/256, SSRC 7 nothing.
        compound.extend_from_slice(&[0x82, 201, 0, 13, 0, 0, 0, 9]);
        compound.extend_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d, 25]);
        compound.extend_from_slice(&[0; 19]);
        compound.extend_from_slice(&[0, 0, 0, 7, 0]);
        compound.extend_from_slice(&[0; 19]);
        // NACK for SSRC 5: 100 and (bitmask 0b101) 101, 103; then 65535 and 0 across the wrap.
        compound.extend_from_slice(&[0x81, 205, 0, 4, 0, 0, 0, 9, 0, 0, 0, 5]);
        compound.extend_from_slice(&[0, 100, 0, 0b101, 0xff, 0xff, 0, 1]);
        // PLI for 6, FIR with entries for 7 and 8.
        compound.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 9, 0, 0, 0, 6]);
        compound.extend_from_slice(&[0x84, 206, 0, 6, 0, 0, 0, 9, 0, 0, 0, 0]);
        compound.extend_from_slice(&[0, 0, 0, 7, 1, 0, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0]);
        assert_eq!(
            read(&compound, 100),
            vec![
                Feedback::Report {
                    ssrc: 0x0a0b_0c0d,
                    fraction_lost: 25
                },
                Feedback::Report {
                    ssrc: 7,
                    fraction_lost: 0
                },
                Feedback::Nack {
                    ssrc: 5,
                    lost: vec![100, 101, 103, 65535, 0]
                },
                Feedback::Pli { ssrc: 6 },
                Feedback::Fir { ssrc: 7 },
                Feedback::Fir { ssrc: 8 },
            ]
        );
        // The cap on NACKed sequence numbers holds across the packet.
        let capped = read(&compound, 2);
        assert!(capped.contains(&Feedback::Nack {
            ssrc: 5,
            lost: vec![100, 101]
        }));
    }

    #[test]
    fn a_sender_reports_blocks_come_after_its_sender_info() {
        let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 9];
        sr.extend_from_slice(&[0xee; 20]);
        sr.extend_from_slice(&[0, 0, 0, 42, 128]);
        sr.extend_from_slice(&[0; 19]);
        assert_eq!(
            read(&sr, 10),
            vec![Feedback::Report {
                ssrc: 42,
                fraction_lost: 128
            }]
        );
    }

    #[test]
    fn malformed_packets_yield_what_came_before_them_and_never_panic() {
        assert!(read(&[0x81, 206, 0, 9, 0, 0, 0, 1], 10).is_empty());
        assert!(read(&[0x41, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2], 10).is_empty());
        assert!(read(&[0x81], 10).is_empty());
        // A report count larger than the blocks present reads the blocks present.
        let rr = [0x9f, 201, 0, 1, 0, 0, 0, 9];
        assert!(read(&rr, 10).is_empty());
        // A short NACK (no media SSRC) ends the reading.
        let mut data = vec![0x81, 206, 0, 2, 0, 0, 0, 9, 0, 0, 0, 6];
        data.extend_from_slice(&[0x81, 205, 0, 1, 0, 0, 0, 9]);
        assert_eq!(read(&data, 10), vec![Feedback::Pli { ssrc: 6 }]);
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x80) as u8).collect();
            let _ = read(&junk, 10);
        }
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_its_packet_type() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x81, 206]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80, 0xe0]));
        assert!(!is_rtcp(&[0x80]));
    }
}
