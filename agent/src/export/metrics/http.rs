//! The /metrics HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` answers the Prometheus text
//! format (0.0.4). Encoding runs on a blocking thread; connections are bounded and a client
//! that does not send its request in time is dropped.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{encoding::prometheus_text, registry::Registry};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "Sonde serves Prometheus metrics at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n"));
    }
    let encoded = tokio::task::spawn_blocking(move || {
        let mut out = String::with_capacity(64 << 10);
        prometheus_text::encode(&mut out, &registry).map(|()| out)
    })
    .await;
    Ok(match encoded {
        Ok(Ok(body)) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
            );
            resp
        }
        Ok(Err(_)) | Err(_) => {
            tracing::error!("encoding /metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed; see the agent's log\n",
            )
        }
    })
}
