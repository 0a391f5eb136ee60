//! TURN credentials for clients (`[turn]`): the TURN REST API form that coturn checks with
//! `use-auth-secret`. The user name is `expiry:peerId` (expiry in Unix seconds) and the password
//! the base64 of HMAC-SHA1 of the user name keyed by the shared secret, so the TURN server can
//! check a credential without asking sluice, and it stops working at its expiry.

use aws_lc_rs::hmac;
use base64::Engine;
use sluice_protocol::IceServer;

use crate::config::TurnConfig;

/// The `iceServers` for `peer_id` at `now_unix` (empty without TURN URLs and a secret).
pub fn ice_servers(turn: &TurnConfig, peer_id: &str, now_unix: u64) -> Vec<IceServer> {
    let Some(secret) = turn.secret.as_deref().filter(|_| !turn.urls.is_empty()) else {
        return Vec::new();
    };
    let username = format!(
        "{}:{peer_id}",
        now_unix.saturating_add(turn.credential_ttl_secs)
    );
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let credential =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()));
    vec![IceServer {
        urls: turn.urls.clone(),
        username,
        credential,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(urls: &[&str], secret: Option<&str>) -> TurnConfig {
        TurnConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            secret: secret.map(str::to_owned),
            credential_ttl_secs: 3600,
        }
    }

    #[test]
    fn credentials_are_the_turn_rest_api_form_coturn_checks() {
        let servers = ice_servers(
            &turn(&["turn:127.0.0.1:3478"], Some("coturn-shared-secret")),
            "alice",
            1_700_082_800,
        );
        // Python: base64(hmac.new(b"coturn-shared-secret", b"1700086400:alice", sha1).digest())
        assert_eq!(
            servers,
            vec![IceServer {
                urls: vec!["turn:127.0.0.1:3478".into()],
                username: "1700086400:alice".into(),
                credential: "BptBXEECUc4aF1huCrjGND+FqW4=".into(),
            }]
        );
    }

    #[test]
    fn without_urls_or_a_secret_there_is_no_turn() {
        assert!(ice_servers(&turn(&[], Some("s")), "alice", 0).is_empty());
        assert!(ice_servers(&turn(&["turn:h"], None), "alice", 0).is_empty());
    }
}
