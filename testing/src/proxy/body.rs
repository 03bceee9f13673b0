//! The proxy's response body: whole, or cut after half its bytes (the
//! connection then fails, as when a server or network dies mid-response).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::Response;
use hyper::body::{Body, Frame};

/// A response body the proxy sends.
#[derive(Debug)]
pub(super) struct ProxyBody {
    /// Bytes still to send.
    rest: Option<Bytes>,
    /// Fail after sending `rest` (the response was cut).
    cut: bool,
    /// A pause before the cut, so that what was sent is flushed to the client first.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error that cuts a response.
#[derive(Debug)]
pub(super) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response cut by a fault rule")
    }
}

impl std::error::Error for Cut {}

impl ProxyBody {
    /// The response as it came.
    pub(super) fn whole(response: Response<Bytes>) -> Response<Self> {
        response.map(|bytes| Self { rest: Some(bytes), cut: false, pause: None })
    }

    /// Whether the body will be cut.
    pub(super) fn is_cut(&self) -> bool {
        self.cut
    }

    /// The response's head (with its full length) and half its body.
    pub(super) fn cut(response: Response<Bytes>) -> Response<Self> {
        response.map(|bytes| Self { rest: Some(bytes.slice(..bytes.len() / 2)), cut: true, pause: None })
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        if let Some(bytes) = self.rest.take()
            && !bytes.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if !self.cut {
            return Poll::Ready(None);
        }
        let pause =
            self.pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50))));
        if pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.cut = false;
        Poll::Ready(Some(Err(Cut)))
    }
}
