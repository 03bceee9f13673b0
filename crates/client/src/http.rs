//! The HTTP layer: typed ruma requests over hyper (rustls for https), with a
//! timeout on every request, retries with exponential back-off and jitter on
//! connection errors and 5xx, `M_LIMIT_EXCEEDED` honoured through
//! `retry_after_ms`, `M_UNKNOWN_TOKEN` reported as a logged-out session,
//! and a cap on the size of every answer read whole
//! ([`HttpSettings::max_response_bytes`]): a server cannot make the client
//! buffer without end.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client as HyperClient, connect::HttpConnector};
use ruma_common::api::{
    IncomingResponseExt, MatrixVersion, OutgoingRequest, OutgoingRequestExt, SupportedVersions,
    auth_scheme::{AuthScheme, SendAccessToken},
    error::FromHttpResponseError,
    path_builder::PathBuilder,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (bad URL, bad parameters).
    #[error("the request could not be built: {0}")]
    Build(String),
    /// The server could not be reached after all retries.
    #[error("the homeserver could not be reached: {0}")]
    Connection(String),
    /// The server did not answer in time.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
    /// The access token is no longer valid: the session was logged out.
    #[error("the session was logged out (M_UNKNOWN_TOKEN); log in again")]
    LoggedOut,
    /// The server answered with an error.
    #[error("the homeserver answered {status}: {errcode}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The Matrix error code, e.g. `M_FORBIDDEN`.
        errcode: String,
        /// The error message.
        message: String,
    },
    /// The request needs user-interactive authentication (HTTP 401 with
    /// flows): send it again with `auth` for one of the flows, naming the
    /// session.
    #[error("the homeserver asks for user-interactive auth (flows {flows:?}){}", errcode.as_deref().map(|c| format!(": {c}")).unwrap_or_default())]
    AuthRequired {
        /// The UIA session to name in the next attempt.
        session: Option<String>,
        /// The stage lists the server accepts, e.g. `[["m.login.password"]]`.
        flows: Vec<Vec<String>>,
        /// Set when an attempt's auth was refused (e.g. `M_FORBIDDEN`: wrong password).
        errcode: Option<String>,
    },
    /// The answer could not be understood.
    #[error("the homeserver's answer could not be parsed: {0}")]
    Response(String),
    /// The request was not sent: a check its caller makes before every
    /// attempt refused (e.g. the store lock's lease is too short to send
    /// under). Trying again later, once the check passes, may succeed.
    #[error("the request was not sent: {0}")]
    NotSent(String),
    /// The answer is larger than the client reads
    /// ([`HttpSettings::max_response_bytes`]); it was refused, unread
    /// beyond the limit. Not retried: the same request gets the same
    /// answer. A legitimately larger answer (a huge account's initial
    /// sync) needs a larger limit.
    #[error("the homeserver's answer is larger than {limit} bytes{}", declared.map(|n| format!(" (it declares {n})")).unwrap_or_default())]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The size the answer declared (`Content-Length`), if it did.
        declared: Option<u64>,
    },
}

/// The most an answer read whole by the media and discovery calls may
/// hold (an upload's answer, `/versions`, an error), and the answer of a
/// call that only acknowledges (see [`answers_small`]): a server cannot
/// make the client buffer without end.
const SMALL_ANSWER: usize = 1024 * 1024;

/// Calls whose answer only acknowledges (an empty object, an etag, a count
/// or an event id), by their ruma module: the engine sends many of them at
/// once (to-device messages, backup uploads), so each is held to
/// [`SMALL_ANSWER`], not to the limit a sync needs.
const SMALL_ANSWER_CALLS: [&str; 9] = [
    "::to_device::send_event_to_device::",
    "::backup::get_latest_backup_info::",
    "::backup::get_backup_keys_for_session::",
    "::keys::upload_keys::",
    "::keys::upload_signatures::",
    "::keys::upload_signing_keys::",
    "::backup::add_backup_keys::",
    "::message::send_message_event::",
    "::state::send_state_event::",
];

/// Whether the answer of request type `R` is one that only acknowledges.
fn answers_small<R>() -> bool {
    let name = std::any::type_name::<R>();
    SMALL_ANSWER_CALLS.iter().any(|call| name.contains(call))
}

/// How requests are sent.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Timeout of one attempt (a long-polling sync adds its own timeout to it).
    pub request_timeout: Duration,
    /// Attempts after the first on connection errors and 5xx.
    pub retries: u32,
    /// First back-off delay, doubled per retry, with up to 50% jitter.
    pub initial_backoff: Duration,
    /// The largest answer read whole (every Matrix API call, `/sync`
    /// included), in bytes; a larger one is [`HttpError::TooLarge`]. The
    /// default, [`DEFAULT_MAX_RESPONSE_BYTES`] (128 MiB), holds the initial
    /// sync of a large account; the answer is parsed after it is read, so
    /// peak memory is about twice the answer. Media downloads are streamed
    /// and not limited by it.
    pub max_response_bytes: usize,
}

/// The default [`HttpSettings::max_response_bytes`]: 128 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retries: 5,
            initial_backoff: Duration::from_millis(250),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

impl HttpError {
    /// Whether trying again later may succeed: the server could not be
    /// reached, did not answer in time, or answered 5xx or 429 after every
    /// retry. Not for a logged-out session, a refused request or an answer
    /// we cannot parse.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connection(_) | Self::Timeout(_) | Self::NotSent(_) => true,
            Self::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Sends typed Matrix requests to one homeserver.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: HyperClient<Connector, Full<Bytes>>,
    uploads: HyperClient<Connector, crate::media::UploadBody>,
    homeserver: String,
    settings: HttpSettings,
    versions: SupportedVersions,
}

enum Attempt<T> {
    Done(T),
    Retry { after: Option<Duration>, error: HttpError },
}

impl HttpClient {
    /// A client for `homeserver` (e.g. `https://matrix.example.org`).
    pub fn new(homeserver: &str, settings: HttpSettings) -> Result<Self, HttpError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| HttpError::Build(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(connector.clone());
        let uploads = HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let versions = SupportedVersions { versions: [MatrixVersion::V1_1].into(), features: Default::default() };
        Ok(Self { client, uploads, homeserver: homeserver.trim_end_matches('/').to_owned(), settings, versions })
    }

    /// How requests are sent.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Uploads a streamed body to `/_matrix/media/v3/upload`, once (a
    /// stream cannot be sent again). Each chunk must be taken within the
    /// request timeout. Returns the answer's body.
    pub(crate) async fn upload(
        &self,
        body: crate::media::UploadBody,
        name: Option<&str>,
        content_type: &str,
        token: &str,
    ) -> Result<Bytes, HttpError> {
        let filename: String = name
            .unwrap_or_default()
            .bytes()
            .flat_map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    vec![b as char]
                } else {
                    format!("%{b:02X}").chars().collect()
                }
            })
            .collect();
        let length = http_body::Body::size_hint(&body).exact().unwrap_or_default();
        let query = if filename.is_empty() { String::new() } else { format!("?filename={filename}") };
        let request = http::Request::post(format!("{}/_matrix/media/v3/upload{query}", self.homeserver))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, length)
            .body(body)
            .map_err(|e| HttpError::Build(e.to_string()))?;
        // The whole upload may take long, but not forever: the request
        // timeout plus a second per 64 KiB (a floor of 64 KiB/s).
        let allowed = self.settings.request_timeout.saturating_add(Duration::from_secs(length / (64 * 1024)));
        let response = tokio::time::timeout(allowed, self.uploads.request(request))
            .await
            .map_err(|_| HttpError::Timeout(allowed))?
            .map_err(|e| HttpError::Connection(e.to_string()))?;
        let (parts, body) = response.into_parts();
        check_status(parts.status.as_u16(), self.read_small(body).await?)
    }

    /// A GET of `path` without auth (e.g. `/_matrix/client/versions`),
    /// its JSON answer.
    pub(crate) async fn get_json(&self, path: &str) -> Result<serde_json::Value, HttpError> {
        let (status, body) = self.get(path, None).await?;
        let body = check_status(status, self.read_small(body).await?)?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Response(e.to_string()))
    }

    /// Starts a GET of `path` whose answer body is read as a stream by the
    /// caller; an error answer is read whole and classified.
    pub(crate) async fn get_stream(&self, path: &str, token: &str) -> Result<hyper::body::Incoming, HttpError> {
        let (status, body) = self.get(path, Some(token)).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        check_status(status, self.read_small(body).await?)?;
        Err(HttpError::Response(format!("status {status}")))
    }

    /// One GET of `path` (with the access token, if given): the answer's
    /// status and its body, not read yet.
    async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, hyper::body::Incoming), HttpError> {
        let mut request = http::Request::get(format!("{}{path}", self.homeserver));
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| HttpError::Build(e.to_string()))?;
        let timeout = self.settings.request_timeout;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
            .map_err(|e| HttpError::Connection(e.to_string()))?;
        let (parts, body) = response.into_parts();
        Ok((parts.status.as_u16(), body))
    }

    /// Reads a small answer whole: at most [`SMALL_ANSWER`] bytes, within the request timeout.
    async fn read_small(&self, body: hyper::body::Incoming) -> Result<Bytes, HttpError> {
        let timeout = self.settings.request_timeout;
        Ok(tokio::time::timeout(timeout, http_body_util::Limited::new(body, SMALL_ANSWER).collect())
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
            .map_err(|e| HttpError::Connection(e.to_string()))?
            .to_bytes())
    }

    /// The largest answer read whole.
    fn limit(&self) -> usize {
        self.settings.max_response_bytes
    }

    /// The homeserver URL.
    pub fn homeserver(&self) -> &str {
        &self.homeserver
    }

    /// Sends `request`, retrying transient failures. `extra_timeout` is added
    /// to the attempt timeout (for long-polling requests).
    pub async fn send<R>(
        &self,
        request: R,
        access_token: Option<&str>,
        extra_timeout: Duration,
    ) -> Result<R::IncomingResponse, HttpError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        self.send_checked(request, access_token, extra_timeout, || Ok(())).await
    }

    /// [`send`](Self::send), with `check` run before every attempt (the
    /// first and each retry): if it refuses, nothing more is sent and the
    /// answer is [`HttpError::NotSent`]. hush-client checks its store lock's
    /// lease this way before crypto requests and encrypted events, so one
    /// that waited (a slow connection, retries, `retry_after_ms`) past the
    /// lease never reaches the server.
    pub async fn send_checked<R>(
        &self,
        request: R,
        access_token: Option<&str>,
        extra_timeout: Duration,
        check: impl Fn() -> Result<(), String>,
    ) -> Result<R::IncomingResponse, HttpError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let mut backoff = self.settings.initial_backoff;
        let mut attempt = 0;
        loop {
            check().map_err(HttpError::NotSent)?;
            let (http_request, limit) = self.prepare(request.clone(), access_token)?;
            match self.attempt::<R>(http_request, self.settings.request_timeout + extra_timeout, limit).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { after, error } => {
                    if attempt >= self.settings.retries {
                        return Err(error);
                    }
                    attempt += 1;
                    let wait = after.unwrap_or_else(|| with_jitter(backoff));
                    tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "retrying a request");
                    tokio::time::sleep(wait).await;
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// [`send`](Self::send) made once, never retried: for a request whose
    /// lost answer may still have acted (creating a backup version), where
    /// a retry could act twice. A failed attempt returns its own error.
    pub async fn send_once<R>(
        &self,
        request: R,
        access_token: Option<&str>,
        extra_timeout: Duration,
    ) -> Result<R::IncomingResponse, HttpError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let (http_request, limit) = self.prepare(request, access_token)?;
        match self.attempt::<R>(http_request, self.settings.request_timeout + extra_timeout, limit).await {
            Attempt::Done(result) => result,
            Attempt::Retry { error, .. } => Err(error),
        }
    }

    /// One attempt's HTTP request for `request`, and the largest answer it
    /// may read.
    fn prepare<R>(&self, request: R, access_token: Option<&str>) -> Result<(http::Request<Vec<u8>>, usize), HttpError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let token = match access_token {
            Some(token) => SendAccessToken::IfRequired(token),
            None => SendAccessToken::None,
        };
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&self.homeserver, token, Cow::Borrowed(&self.versions))
            .map_err(|e| HttpError::Build(e.to_string()))?;
        let limit = if answers_small::<R>() { SMALL_ANSWER.min(self.limit()) } else { self.limit() };
        Ok((http_request, limit))
    }

    async fn attempt<R: OutgoingRequest>(
        &self,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        limit: usize,
    ) -> Attempt<Result<R::IncomingResponse, HttpError>> {
        let request = request.map(|body| Full::new(Bytes::from(body)));
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return Attempt::Retry { after: None, error: HttpError::Timeout(timeout) },
            Ok(Err(error)) => return Attempt::Retry { after: None, error: HttpError::Connection(error.to_string()) },
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let body = match read_capped(body, parts.headers.get(http::header::CONTENT_LENGTH), limit, timeout).await {
            Ok(body) => body,
            Err(error @ HttpError::TooLarge { .. }) => return Attempt::Done(Err(error)),
            Err(error) => return Attempt::Retry { after: None, error },
        };
        let status = parts.status.as_u16();
        let response = http::Response::from_parts(parts, body.as_ref());
        match <R::IncomingResponse as IncomingResponseExt>::try_from_http_response(response) {
            Ok(response) => Attempt::Done(Ok(response)),
            Err(FromHttpResponseError::Server(_)) | Err(FromHttpResponseError::Deserialization(_)) if status >= 400 => {
                classify_error(status, &body)
            }
            Err(error) => Attempt::Done(Err(HttpError::Response(error.to_string()))),
        }
    }
}

/// Reads an answer whole, at most `limit` bytes, within `timeout`: one that
/// declares a larger length is refused before a byte of its body is read,
/// one that runs past the limit as soon as it does.
async fn read_capped(
    body: hyper::body::Incoming,
    declared: Option<&http::HeaderValue>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let declared = declared.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(HttpError::TooLarge { limit, declared });
    }
    match tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(HttpError::TooLarge { limit, declared })
        }
        Ok(Err(error)) => Err(HttpError::Connection(error.to_string())),
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

/// The body of a 2xx answer, or the error an error answer means.
fn check_status(status: u16, body: Bytes) -> Result<Bytes, HttpError> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    match classify_error::<()>(status, &body) {
        Attempt::Done(Err(error)) | Attempt::Retry { error, .. } => Err(error),
        Attempt::Done(Ok(())) => Err(HttpError::Response(format!("status {status}"))),
    }
}

/// Maps an error answer to a retry or a final error.
fn classify_error<T>(status: u16, body: &[u8]) -> Attempt<Result<T, HttpError>> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let errcode = parsed.as_ref().and_then(|v| v["errcode"].as_str()).unwrap_or("").to_owned();
    let message = parsed.as_ref().and_then(|v| v["error"].as_str()).unwrap_or("").to_owned();
    let error = HttpError::Server { status, errcode: errcode.clone(), message };
    if status == 401 && errcode == "M_UNKNOWN_TOKEN" {
        return Attempt::Done(Err(HttpError::LoggedOut));
    }
    if status == 401
        && let Some(flows) = parsed.as_ref().and_then(|v| v["flows"].as_array())
    {
        let flows = flows
            .iter()
            .map(|flow| {
                let stages = flow["stages"].as_array().map(Vec::as_slice).unwrap_or_default();
                stages.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()
            })
            .collect();
        let session = parsed.as_ref().and_then(|v| v["session"].as_str()).map(str::to_owned);
        let errcode = (!errcode.is_empty()).then_some(errcode);
        return Attempt::Done(Err(HttpError::AuthRequired { session, flows, errcode }));
    }
    if status == 429 || errcode == "M_LIMIT_EXCEEDED" {
        let after = parsed.as_ref().and_then(|v| v["retry_after_ms"].as_u64()).map(Duration::from_millis);
        return Attempt::Retry { after: Some(after.unwrap_or(Duration::from_secs(1))), error };
    }
    if status >= 500 {
        return Attempt::Retry { after: None, error };
    }
    Attempt::Done(Err(error))
}

/// `delay` plus up to 50% random jitter.
fn with_jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = if getrandom::fill(&mut byte).is_ok() { f64::from(byte[0]) / 510.0 } else { 0.25 };
    delay.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let logged_out = classify_error::<()>(401, br#"{"errcode":"M_UNKNOWN_TOKEN","error":"gone"}"#);
        assert!(matches!(logged_out, Attempt::Done(Err(HttpError::LoggedOut))));
        let limited = classify_error::<()>(429, br#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#);
        assert!(matches!(limited, Attempt::Retry { after: Some(d), .. } if d == Duration::from_millis(1500)));
        assert!(matches!(classify_error::<()>(502, b"bad gateway"), Attempt::Retry { after: None, .. }));
        let forbidden = classify_error::<()>(403, br#"{"errcode":"M_FORBIDDEN","error":"no"}"#);
        assert!(matches!(forbidden, Attempt::Done(Err(HttpError::Server { status: 403, .. }))));
        let uia = classify_error::<()>(
            401,
            br#"{"session":"s1","flows":[{"stages":["m.login.password"]}],"params":{},"errcode":"M_FORBIDDEN"}"#,
        );
        let Attempt::Done(Err(HttpError::AuthRequired { session, flows, errcode })) = uia else {
            panic!("a UIA answer is AuthRequired");
        };
        assert_eq!((session.as_deref(), errcode.as_deref()), (Some("s1"), Some("M_FORBIDDEN")));
        assert_eq!(flows, vec![vec!["m.login.password".to_owned()]]);
    }

    #[test]
    fn calls_that_only_acknowledge_are_held_to_the_small_limit() {
        use ruma_client_api::{keys, message, sync::sync_events, to_device};
        assert!(answers_small::<to_device::send_event_to_device::v3::Request>());
        assert!(answers_small::<keys::upload_keys::v3::Request>());
        assert!(answers_small::<keys::upload_signatures::v3::Request>());
        assert!(answers_small::<message::send_message_event::v3::Request>());
        assert!(!answers_small::<sync_events::v3::Request>());
        assert!(!answers_small::<keys::get_keys::v3::Request>());
        assert!(!answers_small::<keys::claim_keys::v3::Request>());
        assert!(!answers_small::<message::get_message_events::v3::Request>());
    }

    #[test]
    fn jitter_stays_within_half_the_delay() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(151), "{d:?}");
        }
    }
}
