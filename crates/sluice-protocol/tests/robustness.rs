//! Property-style checks: truncated and mutated frames never make the decoders panic.

use sluice_protocol::{ClientRequest, DecodeError, Message, ServerNotification, ServerRequest};

const VALID: &[&str] = &[
    r#"{"request":true,"id":5467892,"method":"produce","data":{"transportId":"t1","kind":"audio","rtpParameters":{"codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""}]}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}}],"encodings":[{"ssrc":1541519226,"dtx":false}],"rtcp":{"cname":"abc","reducedSize":true},"mid":"0"},"appData":{"source":"mic"}}}"#,
    r#"{"request":true,"id":12,"method":"join","data":{"displayName":"Alice","device":{"flag":"chrome","name":"Chrome","version":"120"},"sctpCapabilities":{"numStreams":{"OS":1024,"MIS":1024}}}}"#,
    r#"{"response":true,"id":12,"ok":false,"errorCode":404,"errorReason":"not found"}"#,
    r#"{"notification":true,"method":"consumerScore","data":{"consumerId":"c1","score":{"score":10,"producerScore":9,"producerScores":[9]}}}"#,
];

/// A tiny deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses a frame and, if it is a message, runs every typed decoder over it.
fn decode_everything(text: &str) -> Result<(), DecodeError> {
    let message = Message::parse(text)?;
    let _ = message.to_json();
    if let Message::Request { method, data, .. } = &message {
        let _ = ClientRequest::decode(method, data.clone());
        let _ = ServerRequest::decode(method, data.clone());
    }
    if let Message::Notification { method, data } = &message {
        let _ = ServerNotification::decode(method, data.clone());
    }
    Ok(())
}

#[test]
fn every_truncated_prefix_is_an_error_not_a_panic() {
    for valid in VALID {
        decode_everything(valid).unwrap();
        for end in 0..valid.len() {
            if let Some(prefix) = valid.get(..end) {
                assert!(
                    decode_everything(prefix).is_err(),
                    "prefix parsed: {prefix}"
                );
            }
        }
    }
}

#[test]
fn random_byte_mutations_never_panic() {
    const ALPHABET: &[u8] = b"{}[]\":,0123456789-.eE truefalsnul\\";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 2];
    for round in 0..20_000 {
        let valid = VALID[round % VALID.len()];
        let mut bytes = valid.as_bytes().to_vec();
        for _ in 0..=rng.below(4) {
            let pos = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[pos] = ALPHABET[rng.below(ALPHABET.len())],
                1 => {
                    bytes.remove(pos);
                }
                _ => bytes.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        outcomes[usize::from(decode_everything(&text).is_ok())] += 1;
    }
    // Both outcomes occur: the mutations reach the typed decoders, not just the JSON parser.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        r#"{{"request":true,"id":1,"method":"join","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        Message::parse(&deep),
        Err(DecodeError::NotJson(_))
    ));
    let deep_obj = format!("{}{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    assert!(Message::parse(&deep_obj).is_err());
}
