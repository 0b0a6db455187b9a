//! `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header; docs/design/http.md): the key is
//! the record's message id on a topic with `dedup.source=header:NAME`, so the topic's dedup index
//! — durable, for the topic's whole dedup window — is the key store. Beside the id the record
//! carries the request's fingerprint, so that a retry can be told from a different request that
//! reuses the key without any index memory of its own. Requests with the same key in flight at once
//! are refused with 409 by [`InFlight`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};

use crate::problem::Problem;

/// The record header that carries the request's fingerprint.
pub const FINGERPRINT_HEADER: &str = "once-http-fingerprint";
/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 255;

/// The request's `Idempotency-Key`, if any: an sf-string (`"…"`, as the draft writes it) or a bare
/// token (as Stripe's clients send it), 1–255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Problem::bad_request("more than one Idempotency-Key header"));
    }
    let text = value.to_str().map_err(|_| Problem::bad_request("Idempotency-Key is not visible ASCII"))?.trim();
    let key = match text.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .filter(|inner| !inner.contains(['"', '\\']))
            .ok_or_else(|| Problem::bad_request("Idempotency-Key: an sf-string must be one quoted string"))?,
        None => text,
    };
    if key.is_empty() || key.len() > KEY_BYTES_MAX || !key.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {KEY_BYTES_MAX} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

/// The fingerprint of a request: method, path and body, each length-prefixed, hashed with BLAKE3.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [method.as_bytes(), path.as_bytes(), body] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex().to_string()
}

/// How a request whose key was already stored is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The same request: the original response.
    Replay,
    /// The key was used for another request: 422.
    Reused,
}

/// Compares the stored original's fingerprint header (if it has one) with this request's.
pub fn judge(stored: Option<&[u8]>, ours: &str) -> Verdict {
    if stored == Some(ours.as_bytes()) {
        Verdict::Replay
    } else {
        Verdict::Reused
    }
}

pub fn reused(key: &str, topic: &str, why: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key was used for a different request",
        format!("Idempotency-Key '{key}' on topic '{topic}' {why}; use a new key for a new request"),
    )
}

/// The keys of requests in progress, per topic (per principal once authentication exists).
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<(String, String)>>,
}

/// Holds a key in flight until dropped.
pub struct Held {
    in_flight: Arc<InFlight>,
    entry: (String, String),
}

impl InFlight {
    /// Holds `(topic, key)`, or refuses with 409 when a request with it is in progress.
    pub fn hold(self: &Arc<Self>, topic: &str, key: &str) -> Result<Held, Problem> {
        let entry = (topic.to_string(), key.to_string());
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !keys.insert(entry.clone()) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "A request with this Idempotency-Key is in progress",
                format!("Idempotency-Key '{key}' on topic '{topic}' is being processed; retry after it is answered"),
            )
            .retry_after(1));
        }
        Ok(Held { in_flight: Arc::clone(self), entry })
    }

    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut keys = self.in_flight.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let removed = keys.remove(&self.entry);
        assert!(removed, "a held key is in the set until its holder drops");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(IDEMPOTENCY_KEY, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn keys_as_sf_strings_or_tokens() {
        assert_eq!(key_of(&headers(&[])), Ok(None));
        assert_eq!(key_of(&headers(&["\"8e03978e-40d5\""])), Ok(Some("8e03978e-40d5".into())));
        assert_eq!(key_of(&headers(&["charge-17"])), Ok(Some("charge-17".into())));
        for bad in [&["\"\""][..], &["\"open"], &["a", "b"], &["\"a\"b\""]] {
            assert!(key_of(&headers(bad)).is_err(), "{bad:?}");
        }
        let long = "k".repeat(KEY_BYTES_MAX + 1);
        assert!(key_of(&headers(&[&long])).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let base = fingerprint("POST", "/v3/clusters/c/topics/t/records", b"{}");
        assert_eq!(base, fingerprint("POST", "/v3/clusters/c/topics/t/records", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v3/clusters/c/topics/u/records", b"{}"));
        assert_ne!(base, fingerprint("POST", "/v3/clusters/c/topics/t/records", b"{ }"));
        // Length prefixes: moving a byte from the path to the body is another request.
        assert_ne!(fingerprint("POST", "/a", b"b"), fingerprint("POST", "/", b"ab"));
        assert_eq!(judge(Some(base.as_bytes()), &base), Verdict::Replay);
        assert_eq!(judge(Some(b"other"), &base), Verdict::Reused);
        assert_eq!(judge(None, &base), Verdict::Reused, "a record stored without a fingerprint is another request");
    }

    #[test]
    fn a_key_is_held_once_until_its_request_ends() {
        let in_flight = Arc::new(InFlight::default());
        let held = in_flight.hold("t", "k").expect("first");
        let refused = in_flight.hold("t", "k").err().expect("second while the first is in flight");
        assert_eq!(refused.status, StatusCode::CONFLICT);
        let other_topic = in_flight.hold("u", "k").expect("keys are per topic");
        drop(held);
        drop(other_topic);
        assert!(in_flight.is_empty());
        let _again = in_flight.hold("t", "k").expect("free after the first was answered");
    }
}
