//! The /metrics HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` answers the Prometheus text
//! format (0.0.4). Encoding runs on a blocking thread and streams the body in chunks (bounded
//! memory per scrape); connections are bounded and a client that does not send its request in
//! time is dropped.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::{
    body::{Body, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{encoding::prometheus_text, registry::Registry};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};

use super::stream;

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks encoded ahead of the client: memory per scrape is about this many
/// [`stream::CHUNK_BYTES`].
const CHUNKS_IN_FLIGHT: usize = 4;
/// A client that takes longer than this to accept a chunk is cut off (the encoder holds the
/// series lock while streaming).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot serve /metrics on {addr}: the address is in use (another Sonde, or another \
         exporter on this port). Fix: stop it, choose another address with \
         --metrics-listen HOST:PORT, or disable the endpoint with --metrics-listen off"
    )]
    AddrInUse { addr: SocketAddr },
    #[error(
        "cannot serve /metrics on {addr}: permission denied (ports below 1024 need root or \
         CAP_NET_BIND_SERVICE). Fix: use a port above 1024 (the default is 9464) with \
         --metrics-listen, or grant CAP_NET_BIND_SERVICE"
    )]
    PermissionDenied { addr: SocketAddr },
    #[error(
        "cannot serve /metrics on {addr}: this host has no such address. Fix: use one of its \
         addresses, 127.0.0.1 (local only) or 0.0.0.0 (all), with --metrics-listen"
    )]
    AddrNotAvailable { addr: SocketAddr },
    #[error("cannot serve /metrics on {addr}: {source}. Fix: check --metrics-listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the listening socket (before capture starts, so a bad address fails fast).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => MetricsError::AddrInUse { addr },
            std::io::ErrorKind::PermissionDenied => MetricsError::PermissionDenied { addr },
            std::io::ErrorKind::AddrNotAvailable => MetricsError::AddrNotAvailable { addr },
            _ => MetricsError::Bind { addr, source },
        })
}

/// Serves `registry` on `listener` until the task is aborted.
pub fn spawn(listener: TcpListener, registry: Arc<Registry>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, Arc::clone(&registry)));
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(err) = served {
                    tracing::debug!(%peer, %err, "metrics connection ended with an error");
                }
                drop(permit);
            });
        }
    })
}

/// The response body: a fixed text, or the exposition streamed in chunks from the encoder.
/// An encoding failure ends the stream with an error, so the client sees a broken response,
/// never a silently truncated one.
pub enum MetricsBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl Body for MetricsBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            MetricsBody::Full(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            MetricsBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

/// Returns the scrape's freed memory to the system: scrapes run on blocking-pool threads whose
/// malloc arenas would otherwise keep their peak (the rendered labels of every series).
fn trim_heap() {
    crate::memory::trim_heap();
}

fn text(status: StatusCode, body: &'static str) -> Response<MetricsBody> {
    let mut resp = Response::new(MetricsBody::Full(Some(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn respond(
    req: Request<Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<MetricsBody>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "Sonde serves Prometheus metrics at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n"));
    }
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let encoded = stream::encode_chunked(&registry, |chunk| {
            handle
                .block_on(tx.send_timeout(Ok(chunk), SEND_TIMEOUT))
                .map_err(|_| ())
        });
        trim_heap();
        if encoded.is_err() {
            tracing::debug!(
                "a /metrics response was cut: the client stopped reading (or was slower than \
                 {SEND_TIMEOUT:?} per chunk), or encoding failed"
            );
            let failed = std::io::Error::other("encoding /metrics failed or the client stalled");
            let _ = handle.block_on(tx.send_timeout(Err(failed), SEND_TIMEOUT));
        }
    });
    let mut resp = Response::new(MetricsBody::Stream(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_errors_name_the_cause_and_the_fix() {
        let taken = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("a free port binds");
        let addr = taken.local_addr().expect("addr");
        let err = bind(addr).await.expect_err("the port is taken");
        assert!(matches!(err, MetricsError::AddrInUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("--metrics-listen off"));
        // 192.0.2.0/24 is reserved for documentation: no host has it (binding sends nothing).
        let err = bind("192.0.2.1:9464".parse().expect("addr"))
            .await
            .expect_err("not an address of this host");
        assert!(
            matches!(err, MetricsError::AddrNotAvailable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("127.0.0.1"));
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_other_paths() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let metrics = super::super::Metrics::new(&Default::default());
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        let server = spawn(listener, Arc::new(metrics.prometheus_registry()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .expect("request");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("response");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"));
        assert!(ok.contains("# TYPE sonde_events_total counter"));
        let missing = get("/").await;
        assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
        server.abort();
    }
}
