//! The fault proxy itself, with no homeserver: its upstream is a second
//! proxy that answers every request with 418 (so a forwarded request is
//! recognisable, and the upstream counts what reached it).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hush_testing::proxy::{Calls, Fault, FaultProxy, Rule};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An upstream answering 418 to everything, and a proxy in front of it.
async fn pair() -> (FaultProxy, FaultProxy, Http) {
    let upstream = FaultProxy::start("http://127.0.0.1:9").await;
    upstream.add(Rule::path("/").fault(Fault::Status(418)));
    let proxy = FaultProxy::start(&upstream.url()).await;
    (upstream, proxy, Client::builder(TokioExecutor::new()).build_http())
}

/// The status and body, or the error text if the exchange failed.
async fn post(http: &Http, proxy: &FaultProxy, path: &str) -> Result<(u16, serde_json::Value), String> {
    let request = hyper::Request::post(format!("{}{path}", proxy.url())).body(Full::new(Bytes::from("{}"))).unwrap();
    let response = http.request(request).await.map_err(|e| format!("request: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| format!("body: {e:?}"))?.to_bytes();
    Ok((status, serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))?))
}

#[tokio::test]
async fn requests_no_rule_catches_are_forwarded() {
    let (upstream, proxy, http) = pair().await;
    assert_eq!(post(&http, &proxy, "/keys/query").await.unwrap().0, 418);
    assert_eq!(upstream.requests(Some("POST"), "/keys/query"), 1);
    assert_eq!(proxy.requests(None, "/keys/query"), 1);
}

#[tokio::test]
async fn an_error_rule_answers_the_chosen_calls_without_forwarding() {
    let (upstream, proxy, http) = pair().await;
    let rule = proxy.add(Rule::path("/keys/query").method("POST").calls(Calls::First(2)).fault(Fault::Status(502)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&http, &proxy, "/keys/query").await.unwrap().0);
    }
    assert_eq!(statuses, [502, 502, 418]);
    assert_eq!((rule.matched(), rule.caught()), (3, 2));
    assert_eq!(upstream.requests(None, "/keys/query"), 1, "only the third call reached the server");
    assert_eq!(post(&http, &proxy, "/keys/upload").await.unwrap().0, 418, "another path is not caught");
}

#[tokio::test]
async fn a_rate_limit_carries_retry_after_ms() {
    let (_upstream, proxy, http) = pair().await;
    proxy.add(Rule::path("/sendToDevice").calls(Calls::Nth(1)).fault(Fault::RateLimit { retry_after_ms: 1234 }));
    let (status, body) = post(&http, &proxy, "/sendToDevice/m.room.encrypted/1").await.unwrap();
    assert_eq!(status, 429);
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert_eq!(body["retry_after_ms"], 1234);
}

#[tokio::test]
async fn a_dropped_request_closes_the_connection_and_never_reaches_the_server() {
    let (upstream, proxy, http) = pair().await;
    proxy.add(Rule::path("/keys/claim").fault(Fault::Drop));
    let error = post(&http, &proxy, "/keys/claim").await.unwrap_err();
    assert!(error.starts_with("request:"), "{error}");
    assert_eq!(upstream.requests(None, "/keys/claim"), 0);
}

#[tokio::test]
async fn a_cut_response_fails_mid_body_after_the_server_acted() {
    let (upstream, proxy, http) = pair().await;
    proxy.add(Rule::path("/keys/upload").fault(Fault::CutResponse));
    let error = post(&http, &proxy, "/keys/upload").await.unwrap_err();
    assert!(error.starts_with("body:"), "the head arrived, the body did not: {error}");
    assert_eq!(upstream.requests(None, "/keys/upload"), 1, "the server received the request");
}

#[tokio::test]
async fn a_held_response_waits_for_the_release() {
    let (upstream, proxy, http) = pair().await;
    let hold = proxy.add(Rule::path("/keys/upload").fault(Fault::Hold));
    let pending = {
        let (http, url) = (http.clone(), proxy.url());
        tokio::spawn(async move {
            let request = hyper::Request::post(format!("{url}/keys/upload")).body(Full::new(Bytes::new())).unwrap();
            http.request(request).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
        })
    };
    hold.wait_held().await;
    assert_eq!(upstream.requests(None, "/keys/upload"), 1, "the server already received it");
    assert!(!pending.is_finished(), "the response is still held");
    hold.release();
    assert_eq!(pending.await.unwrap(), Ok(418));
    assert_eq!(post(&http, &proxy, "/keys/upload").await.unwrap().0, 418, "after the release, nothing is held");
}

#[tokio::test]
async fn a_delay_still_forwards() {
    let (upstream, proxy, http) = pair().await;
    let rule = proxy.add(Rule::path("/sync").fault(Fault::Delay(std::time::Duration::from_millis(50))));
    assert_eq!(post(&http, &proxy, "/sync").await.unwrap().0, 418);
    assert_eq!(rule.caught(), 1);
    assert_eq!(upstream.requests(None, "/sync"), 1);
}

#[tokio::test]
async fn a_response_rule_acts_only_on_responses_containing_its_text() {
    let (upstream, proxy, http) = pair().await;
    let quiet = proxy.add(Rule::path("/sync").response_contains("not in it").fault(Fault::ReplaceResponse(504)));
    assert_eq!(post(&http, &proxy, "/sync").await.unwrap().0, 418, "the text is not in the response");
    quiet.remove();
    let replace = proxy.add(Rule::path("/sync").response_contains("M_UNKNOWN").fault(Fault::ReplaceResponse(504)));
    assert_eq!(post(&http, &proxy, "/sync").await.unwrap().0, 504);
    assert_eq!((quiet.caught(), replace.caught()), (0, 1));
    assert_eq!(upstream.requests(None, "/sync"), 2, "both reached the server");
}

#[tokio::test]
async fn a_rewrite_changes_the_json_body_and_a_token_rule_only_that_clients_requests() {
    let (_upstream, proxy, http) = pair().await;
    let rewrite = hush_testing::proxy::Rewrite(std::sync::Arc::new(|body| body["errcode"] = "M_REWRITTEN".into()));
    proxy.add(Rule::path("/sync").token("bob").fault(Fault::Rewrite(rewrite)));
    assert_eq!(post(&http, &proxy, "/sync").await.unwrap().1["errcode"], "M_UNKNOWN", "no token: not rewritten");
    let request = hyper::Request::post(format!("{}/sync", proxy.url()))
        .header("authorization", "Bearer bob")
        .body(Full::new(Bytes::from("{\"a\":1}")))
        .unwrap();
    let body = http.request(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errcode"], "M_REWRITTEN");
    let seen = proxy.seen(Some("POST"), "/sync");
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].token.as_deref(), seen[1].body.as_ref().map(|b| b["a"].clone())),
        (Some("bob"), Some(1.into()))
    );
}
