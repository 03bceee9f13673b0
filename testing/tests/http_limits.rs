//! Issue 30, finding 5: a hostile homeserver answering with more than the
//! client can hold. Every answer read whole is capped
//! (`HttpSettings::max_response_bytes`): one that declares a larger length
//! is refused before its body is read, one that streams past the limit as
//! soon as it does, with a typed error and no retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hush_client::http::{DEFAULT_MAX_RESPONSE_BYTES, HttpClient, HttpError, HttpSettings};
use ruma_client_api::sync::sync_events;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: u64 = 1024 * 1024;

/// A server that answers every request with 200, then `body` bytes of
/// JSON whitespace made on the fly (chunked), after a `Content-Length` of
/// `declared` if given. Returns its URL, the body bytes it managed to
/// write, and a receiver told when it stopped writing.
async fn hostile_server(
    declared: Option<u64>,
    body: u64,
) -> (String, Arc<AtomicU64>, tokio::sync::oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let (done, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let length = match declared {
            Some(n) => format!("Content-Length: {n}\r\n"),
            None => "Transfer-Encoding: chunked\r\n".to_owned(),
        };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n");
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut written = 0;
        while written < body {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if socket.write_all(&framed).await.is_err() {
                break;
            }
            written += chunk.len() as u64;
            counter.store(written, Ordering::SeqCst);
        }
        if written >= body && declared.is_none() {
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
        let _ = done.send(());
    });
    (url, sent, stopped)
}

fn settings(max_response_bytes: usize) -> HttpSettings {
    HttpSettings { retries: 0, request_timeout: Duration::from_secs(30), max_response_bytes, ..Default::default() }
}

async fn sync(url: &str, settings: HttpSettings) -> Result<sync_events::v3::Response, HttpError> {
    let client = HttpClient::new(url, settings).expect("client");
    client.send(sync_events::v3::Request::new(), Some("token"), Duration::ZERO).await
}

/// Attack: a `/sync` answer that declares 300 MiB (and then sends
/// nothing). It is refused at the headers, before its body is awaited.
#[tokio::test]
async fn an_answer_declaring_more_than_the_limit_is_refused_unread() {
    let (url, _, _) = hostile_server(Some(300 * MIB), 0).await;
    let error = sync(&url, HttpSettings::default()).await.expect_err("too large");
    assert!(
        matches!(error, HttpError::TooLarge { limit: DEFAULT_MAX_RESPONSE_BYTES, declared: Some(n) } if n == 300 * MIB),
        "{error:?}"
    );
    assert!(!error.is_transient(), "a refused answer is not retried");
}

/// Attack: a `/sync` answer streamed without a length, 300 MiB of it,
/// against a client allowing 1 MiB. The client stops reading at the limit
/// (the server manages to write only what the socket buffers hold beyond
/// it) and reports `TooLarge`. Before, it read all 300 MiB into memory.
#[tokio::test]
async fn an_answer_streaming_past_the_limit_is_cut_off_there() {
    let (url, sent, stopped) = hostile_server(None, 300 * MIB).await;
    let error = sync(&url, settings(MIB as usize)).await.expect_err("too large");
    assert!(matches!(error, HttpError::TooLarge { limit, declared: None } if limit == MIB as usize), "{error:?}");
    stopped.await.expect("the server stops once the client hangs up");
    let written = sent.load(Ordering::SeqCst);
    assert!(written < 64 * MIB, "the client went on reading: the server wrote {written} bytes");
}

/// An answer within the limit is read as before.
#[tokio::test]
async fn an_answer_within_the_limit_is_read() {
    let (url, _, _) = hostile_server(None, MIB).await;
    // A megabyte of whitespace is no sync answer: it is read whole, then refused as unparsable.
    let error = sync(&url, settings(2 * MIB as usize)).await.expect_err("not JSON");
    assert!(matches!(error, HttpError::Response(_)), "{error:?}");
}
