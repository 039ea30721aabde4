//! The one HTTP/1.1 server (hyper 1) that `/metrics` and the API are handlers of: binding with
//! errors that name the cause and the fix, the accept loop with a connection cap and a header
//! timeout ([`server`]), and response bodies that are either whole or streamed ([`Body`]).

pub mod server;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::{net::TcpListener, sync::Notify};

pub use server::{ServerCounts, ServerOptions, ServerStats, serve};

/// A source of body chunks: `None` ends the body, an error breaks the response (the client
/// sees a broken transfer, never a silently truncated one).
pub trait Chunks: Send + 'static {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>>;
}

impl Chunks for tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.poll_recv(cx)
    }
}

/// A response body: one piece, or chunks as they come.
pub enum Body {
    Full(Option<Bytes>),
    Stream(Box<dyn Chunks>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    pub fn stream(chunks: impl Chunks) -> Self {
        Body::Stream(Box::new(chunks))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(chunks) => chunks.poll_chunk(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// What a handler knows of the connection its request came on.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Notify it to close the connection [`ServerOptions::close_grace`] later, whatever it is
    /// doing (the API's event stream uses it for a subscriber dropped as too slow).
    pub close: Arc<Notify>,
}

/// One endpoint's requests → responses. The server owns connections, limits and timeouts.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers at once; a body that takes time is a [`Body::stream`].
    fn handle(&self, req: Request<Incoming>, conn: &Conn) -> Response<Body>;
}

/// The endpoint a listener is for, as error messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What is served, e.g. "/metrics" or "the API".
    pub name: &'static str,
    /// The flag that sets the address, e.g. "--metrics-listen".
    pub flag: &'static str,
    /// Its default port, suggested when a low port is refused.
    pub default_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot serve {} on {addr}: the address is in use (another Sonde, or another program \
         on this port). Fix: stop it, choose another address with {} HOST:PORT, or turn it \
         off with {} off",
        endpoint.name, endpoint.flag, endpoint.flag
    )]
    AddrInUse {
        endpoint: Endpoint,
        addr: SocketAddr,
    },
    #[error(
        "cannot serve {} on {addr}: permission denied (ports below 1024 need root or \
         CAP_NET_BIND_SERVICE). Fix: use a port above 1024 (the default is {}) with {}, or \
         grant CAP_NET_BIND_SERVICE",
        endpoint.name, endpoint.default_port, endpoint.flag
    )]
    PermissionDenied {
        endpoint: Endpoint,
        addr: SocketAddr,
    },
    #[error(
        "cannot serve {} on {addr}: this host has no such address. Fix: use one of its \
         addresses, 127.0.0.1 (local only) or 0.0.0.0 (all), with {}",
        endpoint.name, endpoint.flag
    )]
    AddrNotAvailable {
        endpoint: Endpoint,
        addr: SocketAddr,
    },
    #[error("cannot serve {} on {addr}: {source}. Fix: check {}", endpoint.name, endpoint.flag)]
    Bind {
        endpoint: Endpoint,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the listening socket (before capture starts, so a bad address fails fast).
pub async fn bind(endpoint: Endpoint, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => BindError::AddrInUse { endpoint, addr },
            std::io::ErrorKind::PermissionDenied => BindError::PermissionDenied { endpoint, addr },
            std::io::ErrorKind::AddrNotAvailable => BindError::AddrNotAvailable { endpoint, addr },
            _ => BindError::Bind {
                endpoint,
                addr,
                source,
            },
        })
}

/// A `text/plain` response.
pub fn plain(status: http::StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Endpoint = Endpoint {
        name: "/test",
        flag: "--test-listen",
        default_port: 9464,
    };

    #[tokio::test]
    async fn bind_errors_name_the_cause_and_the_fix() {
        let taken = bind(TEST, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("a free port binds");
        let addr = taken.local_addr().expect("addr");
        let err = bind(TEST, addr).await.expect_err("the port is taken");
        assert!(matches!(err, BindError::AddrInUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("--test-listen off"),
            "{msg}"
        );
        // 192.0.2.0/24 is reserved for documentation: no host has it (binding sends nothing).
        let err = bind(TEST, "192.0.2.1:9464".parse().expect("addr"))
            .await
            .expect_err("not an address of this host");
        assert!(matches!(err, BindError::AddrNotAvailable { .. }), "{err:?}");
        assert!(err.to_string().contains("127.0.0.1"));
    }
}
