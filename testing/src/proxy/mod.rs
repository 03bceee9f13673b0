//! A fault-injecting HTTP proxy for tests: it sits between a client and the
//! homeserver on loopback and, per [`Rule`], delays requests, drops them,
//! answers 5xx or 429 itself, cuts a response in the middle, or holds a
//! response until the test releases it. Requests no rule catches are
//! forwarded unchanged. Every request is counted by path.
//!
//! ```no_run
//! # async fn example() {
//! use hush_testing::proxy::{Calls, Fault, FaultProxy, Rule};
//! let proxy = FaultProxy::start("http://127.0.0.1:8008").await;
//! // The first two key queries fail with 502; the client must retry.
//! let rule = proxy.add(Rule::path("/keys/query").calls(Calls::First(2)).fault(Fault::Status(502)));
//! // ... point the client at proxy.url() ...
//! assert_eq!(rule.caught(), 2);
//! # }
//! ```

mod body;
mod rule;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rule::ActiveRule;
pub use rule::{Calls, Fault, Rewrite, Rule};
use tokio::net::TcpListener;

use body::ProxyBody;

/// Why the proxy gave up on a request: hyper closes the connection.
#[derive(Debug)]
struct Closed(&'static str);

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Closed {}

struct Shared {
    upstream: String,
    client: HyperClient<HttpConnector, Full<Bytes>>,
    rules: Mutex<Vec<Arc<ActiveRule>>>,
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<Vec<(String, String, u16)>>,
}

/// The proxy, serving until dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("addr", &self.addr).field("upstream", &self.shared.upstream).finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`
    /// (e.g. `http://127.0.0.1:8008`), in the current tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy on loopback");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            answers: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Self { shared, addr, server }
    }

    /// The URL to give the client as its homeserver.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts a rule in force (rules are tried in the order added; the first
    /// that catches a request applies).
    pub fn add(&self, rule: Rule) -> RuleHandle {
        let active = Arc::new(ActiveRule::new(rule));
        self.shared.rules.lock().expect("rules").push(active.clone());
        RuleHandle { rule: active, shared: self.shared.clone() }
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// How many requests whose path contains `path` the proxy received
    /// (of `method`, if given), caught or not.
    pub fn requests(&self, method: Option<&str>, path: &str) -> usize {
        self.seen(method, path).len()
    }

    /// The statuses the client was answered for requests whose path
    /// contains `path` (of `method`, if given), in the order answered; a
    /// dropped or cut request has none.
    pub fn answers(&self, method: Option<&str>, path: &str) -> Vec<u16> {
        let answers = self.shared.answers.lock().expect("answers");
        answers
            .iter()
            .filter(|(m, p, _)| p.contains(path) && method.is_none_or(|want| want == m))
            .map(|a| a.2)
            .collect()
    }

    /// The requests whose path contains `path` (of `method`, if given), in
    /// the order received, with their tokens and JSON bodies.
    pub fn seen(&self, method: Option<&str>, path: &str) -> Vec<Seen> {
        let seen = self.shared.seen.lock().expect("seen");
        seen.iter().filter(|s| s.path.contains(path) && method.is_none_or(|want| want == s.method)).cloned().collect()
    }
}

/// A rule in force: its counters, and the release of held responses.
#[derive(Clone)]
pub struct RuleHandle {
    rule: Arc<ActiveRule>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleHandle").field("rule", &self.rule.rule).finish()
    }
}

impl RuleHandle {
    /// Requests that matched the rule's method and path.
    pub fn matched(&self) -> u64 {
        self.rule.matched()
    }

    /// Requests the rule caught (the fault was applied).
    pub fn caught(&self) -> u64 {
        self.rule.caught()
    }

    /// Waits until at least one response is held by this rule (at most 60 s).
    pub async fn wait_held(&self) {
        assert!(self.wait_held_for(Duration::from_secs(60)).await, "no response was held within 60 s");
    }

    /// Waits up to `limit` until at least one response is held by this
    /// rule; whether one was.
    pub async fn wait_held_for(&self, limit: Duration) -> bool {
        let mut held = self.rule.held.subscribe();
        let wait = held.wait_for(|(count, _)| *count > 0);
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }

    /// Waits until the rule caught at least `n` requests (at most 60 s).
    pub async fn wait_caught(&self, n: u64) {
        for _ in 0..600 {
            if self.caught() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the rule {:?} caught {} requests, not {n}, within 60 s", self.rule.rule, self.caught());
    }

    /// The server's status for each request this rule caught after
    /// forwarding it (held, cut, replaced or rewritten), whether or not the
    /// answer reached the client.
    pub fn upstream_statuses(&self) -> Vec<u16> {
        self.rule.upstream()
    }

    /// Lets held responses go; later requests pass unheld.
    pub fn release(&self) {
        self.rule.held.send_modify(|(_, released)| *released = true);
    }

    /// Takes the rule out of force (held responses are released).
    pub fn remove(&self) {
        self.release();
        self.shared.rules.lock().expect("rules").retain(|r| !Arc::ptr_eq(r, &self.rule));
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(shared.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method, e.g. `PUT`.
    pub method: String,
    /// The path, e.g. `/_matrix/client/v3/sendToDevice/m.room.encrypted/1`.
    pub path: String,
    /// The access token it carried, if any.
    pub token: Option<String>,
    /// The body, if it was JSON.
    pub body: Option<serde_json::Value>,
}

/// Handles a request and records the status answered.
async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Closed> {
    let (method, path) = (request.method().as_str().to_owned(), request.uri().path().to_owned());
    let response = handle(shared.clone(), request).await;
    if let Ok(response) = &response
        && !response.body().is_cut()
    {
        shared.answers.lock().expect("answers").push((method, path, response.status().as_u16()));
    }
    response
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Closed> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| Closed("the request body could not be read"))?.to_bytes();
    let token = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(ToOwned::to_owned);
    let (method, path) = (parts.method.as_str().to_owned(), parts.uri.path().to_owned());
    shared.seen.lock().expect("seen").push(Seen {
        method: method.clone(),
        path: path.clone(),
        token: token.clone(),
        body: serde_json::from_slice(&body).ok(),
    });
    let rule = {
        let rules = shared.rules.lock().expect("rules");
        rules.iter().find(|r| r.catches(&method, &path, token.as_deref())).cloned()
    };
    let Some(rule) = rule else { return forward(&shared, parts, body).await.map(ProxyBody::whole) };
    if let Some(check) = &rule.rule.response {
        let response = forward(&shared, parts, body).await?;
        if !check.matches(response.body()) {
            return Ok(ProxyBody::whole(response));
        }
        rule.caught_one();
        return apply_to_response(&rule, response).await;
    }
    rule.caught_one();
    match rule.rule.fault.clone() {
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            forward(&shared, parts, body).await.map(ProxyBody::whole)
        }
        Fault::Drop => Err(Closed("dropped by a fault rule")),
        Fault::Status(status) => Ok(error_response(status, "M_UNKNOWN", "injected by the fault proxy", None)),
        Fault::Errcode { status, errcode } => Ok(error_response(status, &errcode, "injected by the fault proxy", None)),
        Fault::RateLimit { retry_after_ms } => {
            Ok(error_response(429, "M_LIMIT_EXCEEDED", "injected by the fault proxy", Some(retry_after_ms)))
        }
        Fault::CutResponse | Fault::ReplaceResponse(_) | Fault::Rewrite(_) | Fault::Hold | Fault::FlipByte(_) => {
            let response = forward(&shared, parts, body).await?;
            apply_to_response(&rule, response).await
        }
    }
}

/// Applies a rule's fault to the server's response.
async fn apply_to_response(rule: &ActiveRule, response: Response<Bytes>) -> Result<Response<ProxyBody>, Closed> {
    rule.record_upstream(response.status().as_u16());
    match &rule.rule.fault {
        Fault::CutResponse => Ok(ProxyBody::cut(response)),
        Fault::ReplaceResponse(status) => {
            Ok(error_response(*status, "M_UNKNOWN", "injected by the fault proxy after the server acted", None))
        }
        Fault::Rewrite(rewrite) => {
            let (mut parts, body) = response.into_parts();
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return Ok(ProxyBody::whole(Response::from_parts(parts, body)));
            };
            (rewrite.0)(&mut json);
            let body = Bytes::from(json.to_string());
            parts.headers.insert(hyper::header::CONTENT_LENGTH, body.len().into());
            Ok(ProxyBody::whole(Response::from_parts(parts, body)))
        }
        Fault::FlipByte(offset) => {
            let (parts, body) = response.into_parts();
            let mut body = body.to_vec();
            if let Some(byte) = body.get_mut(*offset) {
                *byte ^= 1;
            }
            Ok(ProxyBody::whole(Response::from_parts(parts, Bytes::from(body))))
        }
        Fault::Hold => {
            rule.held.send_modify(|(count, _)| *count += 1);
            let mut released = rule.held.subscribe();
            let _ = released.wait_for(|(_, released)| *released).await;
            rule.held.send_modify(|(count, _)| *count -= 1);
            Ok(ProxyBody::whole(response))
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(*delay).await;
            Ok(ProxyBody::whole(response))
        }
        Fault::Drop => Err(Closed("dropped by a fault rule")),
        Fault::Status(status) => Ok(error_response(*status, "M_UNKNOWN", "injected by the fault proxy", None)),
        Fault::Errcode { status, errcode } => Ok(error_response(*status, errcode, "injected by the fault proxy", None)),
        Fault::RateLimit { retry_after_ms } => {
            Ok(error_response(429, "M_LIMIT_EXCEEDED", "injected by the fault proxy", Some(*retry_after_ms)))
        }
    }
}

/// Sends the request upstream and reads the whole response.
async fn forward(
    shared: &Shared,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Bytes>, Closed> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{}{path}", shared.upstream).parse().map_err(|_| Closed("bad upstream URL"))?;
    parts.headers.remove(hyper::header::HOST);
    let response = shared
        .client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|_| Closed("the upstream could not be reached"))?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|_| Closed("the upstream response was cut"))?.to_bytes();
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.insert(hyper::header::CONTENT_LENGTH, body.len().into());
    Ok(Response::from_parts(parts, body))
}

fn error_response(status: u16, errcode: &str, error: &str, retry_after_ms: Option<u64>) -> Response<ProxyBody> {
    let mut body = serde_json::json!({ "errcode": errcode, "error": error });
    if let Some(after) = retry_after_ms {
        body["retry_after_ms"] = after.into();
    }
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(bytes);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    let length = response.body().len();
    response.headers_mut().insert(hyper::header::CONTENT_LENGTH, length.into());
    ProxyBody::whole(response)
}
