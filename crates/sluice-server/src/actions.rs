//! Game actions (`dispatchAction`): the checks a peer's action passes before the room numbers,
//! stores and delivers it (`Room::dispatch_game`). Every check has its error code: a type no
//! rule allows or a sender the rule does not admit 403, an oversize payload 413, a flood 429,
//! a malformed request 400. Nothing is relayed unchecked.

use std::time::Instant;

use sluice_protocol::{DispatchActionRequest, ErrorCode};

use crate::config::{ActionRule, ActionSender, Config};
use crate::error::SignalError;
use crate::peer::Peer;
use crate::rate::TokenBucket;
use crate::store::{CacheBounds, GameDraft};

/// Longest action type and cache key, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most peers one action may name in `to`.
pub const MAX_RECIPIENTS: usize = 256;

fn bad(reason: impl Into<String>) -> SignalError {
    SignalError::new(ErrorCode::BadRequest, reason)
}

/// Checks `request` from `peer` at `now` against the configuration's rules and the peer's
/// rate; on success, the draft for the store and the cache bounds of its rule.
pub fn check(
    config: &Config,
    peer: &Peer,
    request: DispatchActionRequest,
    now: Instant,
) -> Result<(GameDraft, CacheBounds), SignalError> {
    let DispatchActionRequest {
        r#type,
        payload,
        cache,
        cache_key,
        to,
    } = request;
    if r#type.is_empty() || r#type.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "type: 1 to {MAX_NAME_BYTES} bytes, not {}",
            r#type.len()
        )));
    }
    let Some((index, rule)) = config.action_rule(&r#type) else {
        return Err(SignalError::forbidden(format!(
            "action type {:?} is not allowed",
            r#type
        )));
    };
    check_sender(rule, peer, &r#type)?;
    if let Some(key) = &cache_key {
        if !cache {
            return Err(bad("cacheKey without cache"));
        }
        if key.is_empty() || key.len() > MAX_NAME_BYTES {
            return Err(bad(format!("cacheKey: 1 to {MAX_NAME_BYTES} bytes")));
        }
    }
    if let Some(to) = &to {
        if cache {
            return Err(bad("an action to some peers cannot be cached"));
        }
        if to.is_empty() || to.len() > MAX_RECIPIENTS {
            return Err(bad(format!("to: 1 to {MAX_RECIPIENTS} peer ids")));
        }
    }
    if cache && !rule.cache {
        return Err(SignalError::forbidden(format!(
            "actions of type {:?} may not be cached",
            r#type
        )));
    }
    let size = serialized_len(&payload);
    if size > rule.max_payload_bytes {
        return Err(SignalError::new(
            ErrorCode::TooLarge,
            format!(
                "payload of {size} bytes is over the {} of {:?}",
                rule.max_payload_bytes, r#type
            ),
        ));
    }
    if let Some(rate) = rule.max_per_second {
        let burst = rule.burst.map_or((rate * 2.0).max(1.0), f64::from).max(1.0);
        let mut buckets = peer
            .action_buckets
            .lock()
            .map_err(|_| SignalError::internal("action rate state poisoned"))?;
        let bucket = buckets
            .entry(index)
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        if !bucket.take(now) {
            return Err(SignalError::limit(&format!(
                "actions of type {:?} per second",
                r#type
            )));
        }
    }
    let bounds = CacheBounds {
        per_type: rule.max_cached,
        per_room: config.limits.cached_actions_per_room,
    };
    let draft = GameDraft {
        peer_id: peer.id.clone(),
        action_type: r#type,
        payload,
        cache: cache.then_some(cache_key),
        to,
    };
    Ok((draft, bounds))
}

/// The size of `value` as serialized JSON (what a size limit counts).
pub fn serialized_len(value: &serde_json::Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

fn check_sender(rule: &ActionRule, peer: &Peer, action_type: &str) -> Result<(), SignalError> {
    match rule.sender {
        ActionSender::Any => Ok(()),
        ActionSender::Admin if peer.grants.admin => Ok(()),
        ActionSender::Admin => Err(SignalError::forbidden(format!(
            "actions of type {action_type:?} need the admin grant"
        ))),
        ActionSender::Server => Err(SignalError::forbidden(format!(
            "actions of type {action_type:?} are sent by the server only"
        ))),
    }
}
