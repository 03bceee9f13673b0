//! Fault rules: which requests a rule catches (method, path, which calls,
//! a seeded probability) and what it does to them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// A change made to a JSON response body by [`Fault::Rewrite`].
#[derive(Clone)]
pub struct Rewrite(pub Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>);

impl std::fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rewrite(..)")
    }
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Rewrite {}

/// What a rule does to a request it catches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Waits this long, then forwards the request.
    Delay(Duration),
    /// Closes the connection without forwarding the request or answering.
    Drop,
    /// Answers with this status and a Matrix error body, without forwarding.
    Status(u16),
    /// Answers this status and Matrix error code, without forwarding.
    Errcode {
        /// The HTTP status.
        status: u16,
        /// The error code, e.g. `M_UNKNOWN_POS`.
        errcode: String,
    },
    /// Answers 429 `M_LIMIT_EXCEEDED` with this `retry_after_ms`, without forwarding.
    RateLimit {
        /// The `retry_after_ms` of the answer.
        retry_after_ms: u64,
    },
    /// Forwards the request (the server acts on it), then sends the
    /// response's head and half its body and cuts the connection.
    CutResponse,
    /// Forwards the request (the server acts on it), then answers this
    /// status instead of the server's response.
    ReplaceResponse(u16),
    /// Forwards the request, then changes the JSON response body.
    Rewrite(Rewrite),
    /// Forwards the request, then flips the lowest bit of the response
    /// body's byte at this offset (if the body is that long): a file
    /// changed in transit or in the server's store.
    FlipByte(usize),
    /// Forwards the request (the server acts on it), then holds the
    /// response until the rule is released; a request arriving after the
    /// release is forwarded as usual.
    Hold,
}

/// Which of the matching calls a rule catches (counted from 1, per rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// Every matching call.
    Every,
    /// Only the `n`th.
    Nth(u64),
    /// The first `n`.
    First(u64),
}

/// Which responses a rule acts on.
#[derive(Clone)]
pub(super) enum ResponseMatch {
    Contains(String),
    Json(Arc<dyn Fn(&serde_json::Value) -> bool + Send + Sync>),
}

impl ResponseMatch {
    pub(super) fn matches(&self, body: &[u8]) -> bool {
        match self {
            Self::Contains(text) => String::from_utf8_lossy(body).contains(text.as_str()),
            Self::Json(check) => serde_json::from_slice(body).is_ok_and(|json| check(&json)),
        }
    }
}

impl std::fmt::Debug for ResponseMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Contains(text) => write!(f, "Contains({text:?})"),
            Self::Json(_) => f.write_str("Json(..)"),
        }
    }
}

/// A fault rule, built with [`Rule::path`] and the methods after it.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(super) method: Option<String>,
    pub(super) path: String,
    pub(super) token: Option<String>,
    pub(super) response: Option<ResponseMatch>,
    pub(super) calls: Calls,
    /// Per mille, with the generator's seed.
    pub(super) probability: Option<(u32, u64)>,
    pub(super) fault: Fault,
}

impl Rule {
    /// A rule for requests whose path contains `path` (e.g. `/keys/query`);
    /// by default it catches every such call and delays it by nothing.
    pub fn path(path: &str) -> Self {
        Self {
            method: None,
            path: path.to_owned(),
            token: None,
            response: None,
            calls: Calls::Every,
            probability: None,
            fault: Fault::Delay(Duration::ZERO),
        }
    }

    /// Only requests with this method (e.g. `POST`).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests made with this access token (one client's requests).
    pub fn token(mut self, access_token: &str) -> Self {
        self.token = Some(access_token.to_owned());
        self
    }

    /// Only requests whose response (from the server) contains `text`: the
    /// request is forwarded first, and the fault is applied to the response
    /// (for [`Fault::Hold`], [`Fault::CutResponse`],
    /// [`Fault::ReplaceResponse`], [`Fault::Rewrite`]).
    pub fn response_contains(mut self, text: &str) -> Self {
        self.response = Some(ResponseMatch::Contains(text.to_owned()));
        self
    }

    /// Only requests whose JSON response satisfies `check` (forwarded
    /// first, as for [`Rule::response_contains`]).
    pub fn response_json(mut self, check: impl Fn(&serde_json::Value) -> bool + Send + Sync + 'static) -> Self {
        self.response = Some(ResponseMatch::Json(Arc::new(check)));
        self
    }

    /// Which matching calls are caught.
    pub fn calls(mut self, calls: Calls) -> Self {
        self.calls = calls;
        self
    }

    /// Catches each call (that [`Rule::calls`] lets through) with
    /// probability `per_mille / 1000`, from a generator seeded with `seed`.
    pub fn probability(mut self, per_mille: u32, seed: u64) -> Self {
        self.probability = Some((per_mille.min(1000), seed | 1));
        self
    }

    /// What is done to a caught call.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }
}

/// A rule in force, with its counters.
#[derive(Debug)]
pub(super) struct ActiveRule {
    pub(super) rule: Rule,
    matched: AtomicU64,
    caught: AtomicU64,
    rng: Mutex<u64>,
    /// For [`Fault::Hold`]: how many responses are held now, and whether
    /// the rule was released.
    pub(super) held: watch::Sender<(u64, bool)>,
    /// The server's status for each request the rule caught after it was
    /// forwarded (a held answer may never reach its client).
    upstream: Mutex<Vec<u16>>,
}

impl ActiveRule {
    pub(super) fn new(rule: Rule) -> Self {
        let seed = rule.probability.map_or(1, |(_, seed)| seed);
        Self {
            rule,
            matched: AtomicU64::new(0),
            caught: AtomicU64::new(0),
            rng: Mutex::new(seed),
            held: watch::channel((0, false)).0,
            upstream: Mutex::new(Vec::new()),
        }
    }

    /// Whether this rule may catch the request (its method, path and
    /// token match, and its call filter and probability let it through),
    /// counting the match. The fault is applied, and counted with
    /// [`ActiveRule::caught_one`], unless the rule also looks at the response.
    pub(super) fn catches(&self, method: &str, path: &str, token: Option<&str>) -> bool {
        if !path.contains(&self.rule.path)
            || self.rule.method.as_deref().is_some_and(|m| m != method)
            || self.rule.token.as_deref().is_some_and(|t| Some(t) != token)
        {
            return false;
        }
        if self.rule.fault == Fault::Hold && self.held.borrow().1 {
            return false;
        }
        let n = self.matched.fetch_add(1, Ordering::SeqCst) + 1;
        let by_count = match self.rule.calls {
            Calls::Every => true,
            Calls::Nth(k) => n == k,
            Calls::First(k) => n <= k,
        };
        let by_chance = match self.rule.probability {
            None => true,
            Some((per_mille, _)) => {
                let mut state = self.rng.lock().expect("rule generator");
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state % 1000) < u64::from(per_mille)
            }
        };
        by_count && by_chance
    }

    /// Counts a request the fault was applied to.
    pub(super) fn caught_one(&self) {
        self.caught.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn matched(&self) -> u64 {
        self.matched.load(Ordering::SeqCst)
    }

    /// Records the server's status for a caught request it answered.
    pub(super) fn record_upstream(&self, status: u16) {
        self.upstream.lock().expect("upstream statuses").push(status);
    }

    pub(super) fn upstream(&self) -> Vec<u16> {
        self.upstream.lock().expect("upstream statuses").clone()
    }

    pub(super) fn caught(&self) -> u64 {
        self.caught.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_catches_by_method_path_and_call_number() {
        let rule = ActiveRule::new(Rule::path("/keys/query").method("post").calls(Calls::Nth(2)));
        assert!(!rule.catches("GET", "/_matrix/client/v3/keys/query", None));
        assert!(!rule.catches("POST", "/_matrix/client/v3/keys/upload", None));
        assert!(!rule.catches("POST", "/_matrix/client/v3/keys/query", None), "the first call");
        assert!(rule.catches("POST", "/_matrix/client/v3/keys/query", None), "the second call");
        assert!(!rule.catches("POST", "/_matrix/client/v3/keys/query", None), "the third call");
        assert_eq!(rule.matched(), 3);
        let mine = ActiveRule::new(Rule::path("/sync").token("abc"));
        assert!(!mine.catches("GET", "/sync", Some("xyz")) && !mine.catches("GET", "/sync", None));
        assert!(mine.catches("GET", "/sync", Some("abc")));
    }

    #[test]
    fn a_seeded_probability_replays_and_is_roughly_right() {
        let pattern = |seed| {
            let rule = ActiveRule::new(Rule::path("/sync").probability(300, seed));
            (0..1000).map(|_| rule.catches("GET", "/sync", None)).collect::<Vec<_>>()
        };
        assert_eq!(pattern(7), pattern(7), "the same seed, the same calls caught");
        assert_ne!(pattern(7), pattern(8));
        let caught = pattern(7).iter().filter(|c| **c).count();
        assert!((200..400).contains(&caught), "{caught} of 1000 at 30%");
    }
}
