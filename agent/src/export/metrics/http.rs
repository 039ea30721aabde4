//! The /metrics HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` answers the Prometheus text
//! format (0.0.4). Encoding runs on a blocking thread and streams the body in chunks (bounded
//! memory per scrape). Connections, their cap and timeouts are [`crate::http::server`]'s.
//! The same listener answers `GET /healthz` and `GET /readyz` (what a DaemonSet's probes and
//! Prometheus both reach), read off the health model ([`crate::pipeline::readiness`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::{encoding::prometheus_text, registry::Registry};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use super::{health::Health, stream};
use crate::{
    http::{self as server, BindError, Body, Conn, Endpoint, Handler, ServerOptions, ServerStats},
    pipeline::readiness,
};

/// How bind errors name this endpoint.
const ENDPOINT: Endpoint = Endpoint {
    name: "/metrics",
    flag: "--metrics-listen",
    default_port: 9464,
};
/// Chunks encoded ahead of the client: memory per scrape is about this many
/// [`stream::CHUNK_BYTES`].
const CHUNKS_IN_FLIGHT: usize = 4;
/// A client that takes longer than this to accept a chunk is cut off (the encoder holds the
/// series lock while streaming).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind errors of /metrics (they name `--metrics-listen`).
pub type MetricsError = BindError;

/// Binds the listening socket (before capture starts, so a bad address fails fast).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    server::bind(ENDPOINT, addr).await
}

/// The server's limits for /metrics: the defaults of [`ServerOptions`] with `header_timeout`.
pub fn server_options(header_timeout: Duration) -> ServerOptions {
    ServerOptions {
        header_timeout,
        ..ServerOptions::new("metrics")
    }
}

/// Serves `registry`, and the liveness and readiness of `health`, on `listener` until the task
/// is aborted.
pub fn spawn(
    listener: TcpListener,
    opts: ServerOptions,
    registry: Arc<Registry>,
    health: Arc<Health>,
) -> (JoinHandle<()>, Arc<ServerStats>) {
    server::serve(listener, opts, Scrape { registry, health })
}

/// The /metrics, /healthz and /readyz handler.
#[derive(Clone)]
struct Scrape {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

impl Handler for Scrape {
    fn handle(&self, req: Request<Incoming>, _conn: &Conn) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" || path == "/readyz" {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return server::plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
            }
            let model = self.health.model();
            let checks = if path == "/healthz" {
                model.liveness(std::time::SystemTime::now())
            } else {
                model.readiness()
            };
            let (ok, text) = readiness::report(&checks);
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return server::plain(status, text);
        }
        respond(&req, &self.registry)
    }
}

/// Returns the scrape's freed memory to the system: scrapes run on blocking-pool threads whose
/// malloc arenas would otherwise keep their peak (the rendered labels of every series).
fn trim_heap() {
    crate::memory::trim_heap();
}

fn respond(req: &Request<Incoming>, registry: &Arc<Registry>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return server::plain(
            StatusCode::NOT_FOUND,
            "Sonde serves Prometheus metrics at /metrics, liveness at /healthz, readiness at \
             /readyz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return server::plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n");
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let handle = tokio::runtime::Handle::current();
    let registry = Arc::clone(registry);
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
    let mut resp = Response::new(Body::stream(rx));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    resp
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
        assert!(matches!(err, BindError::AddrInUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("--metrics-listen off"));
        // 192.0.2.0/24 is reserved for documentation: no host has it (binding sends nothing).
        let err = bind("192.0.2.1:9464".parse().expect("addr"))
            .await
            .expect_err("not an address of this host");
        assert!(matches!(err, BindError::AddrNotAvailable { .. }), "{err:?}");
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
        let (server, _) = spawn(
            listener,
            server_options(crate::http::server::DEFAULT_HEADER_TIMEOUT),
            Arc::new(metrics.prometheus_registry()),
            Arc::clone(&metrics.health),
        );
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
