//! The agent's HTTP API on `api.listen` (default 127.0.0.1:9465): `GET /v1/events` (the live
//! NDJSON event stream, filtered) and `GET /v1/status` (health and per-workload table).
//!
//! Plain hyper 1 (HTTP/1.1), already a dependency for the kubelet client: two GET routes and a
//! streaming body need no router or middleware, so axum/tower would add weight, not function.
//! See docs/api.md.

pub mod body;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode, header};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

use crate::export::{
    fanout::{self, StreamHandle, SubscribeError},
    filter::Filter,
    status::Status,
};
use body::ApiBody;

/// Where the API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";
/// A subscriber dropped for falling behind gets this long to read its last line before its
/// connection is closed (a stalled reader would otherwise hold it open for ever).
const DROP_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    pub listen: SocketAddr,
    /// Concurrent `/v1/events` readers; more get 503.
    pub max_subscribers: usize,
    /// Batches (≤ 128 KiB each) queued per reader before it is dropped as too slow.
    pub subscriber_queue: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            max_subscribers: fanout::DEFAULT_MAX_SUBSCRIBERS,
            subscriber_queue: fanout::DEFAULT_QUEUE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot listen on {addr} for the API: {source}. Fix: stop what uses that port (another \
         `sonde run`?), choose another address with --api-listen (api.listen), or turn the API \
         off with --api-listen off"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers read: the stream to subscribe to and the latest status snapshot.
#[derive(Clone)]
pub struct ApiState {
    pub stream: StreamHandle,
    /// The health model, serialised per request ([`Status::from_health`]).
    pub status: crate::pipeline::health::HealthReceiver,
}

/// Binds the listener (so a taken port fails the run before capture starts).
pub async fn bind(opts: &ApiOptions) -> Result<TcpListener, ApiError> {
    TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ApiError::Bind {
            addr: opts.listen,
            source,
        })
}

/// Serves the API on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, state: ApiState) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "API listening (GET /v1/events, GET /v1/status)");
    }
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(err) => {
                    // Out of fds and the like: wait and go on, the capture is unaffected.
                    tracing::warn!(%err, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            limit_send_buffer(&stream);
            let state = state.clone();
            tokio::spawn(async move {
                let kill = Arc::new(Notify::new());
                let conn_kill = Arc::clone(&kill);
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    let kill = Arc::clone(&conn_kill);
                    async move { Ok::<_, std::convert::Infallible>(handle(req, &state, kill)) }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    result = conn => {
                        if let Err(err) = result {
                            tracing::debug!(%peer, %err, "API connection ended");
                        }
                    }
                    _ = async { kill.notified().await; tokio::time::sleep(DROP_GRACE).await } => {
                        tracing::debug!(%peer, "closed the connection of a dropped event subscriber");
                    }
                }
            });
        }
    })
}

/// Kernel send buffer of an API connection. Bounded (no autotuning to megabytes), so a
/// stalled event reader fills it quickly and is dropped by its queue instead of parking
/// megabytes in the kernel; ample for loopback and LAN readers.
const SEND_BUFFER: libc::c_int = 256 << 10;

fn limit_send_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SEND_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "SO_SNDBUF not set");
    }
}

fn plain(status: StatusCode, text: String) -> Response<ApiBody> {
    let mut resp = Response::new(ApiBody::full(text + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn handle(req: Request<Incoming>, state: &ApiState, kill: Arc<Notify>) -> Response<ApiBody> {
    let path = req.uri().path();
    let known = matches!(path, "/v1/events" | "/v1/status");
    if !known {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no such endpoint {path}: the API serves GET /v1/events and GET /v1/status"),
        );
    }
    if req.method() != Method::GET {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes GET only"),
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return resp;
    }
    match path {
        "/v1/status" => {
            // The snapshot is up to a second old; the stream's own counters are read live.
            let mut status = Status::from_health(&state.status.borrow());
            let live = state.stream.stats();
            status.agent.stream.subscribers = live.subscribers;
            status.agent.stream.events_subscribers_dropped = live.subscribers_dropped;
            status.agent.stream.events_published = live.events_published;
            status.agent.lost.events_subscribers_dropped = live.subscribers_dropped;
            match serde_json::to_vec(&status) {
                Ok(json) => {
                    let mut resp = Response::new(ApiBody::full(json));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    resp
                }
                Err(err) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the status: {err}"),
                ),
            }
        }
        _ => events(req.uri().query().unwrap_or(""), state, kill),
    }
}

fn events(query: &str, state: &ApiState, kill: Arc<Notify>) -> Response<ApiBody> {
    let filter = match Filter::parse(query) {
        Ok(f) => f,
        Err(err) => return plain(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match state.stream.subscribe(filter, kill) {
        Ok(sub) => {
            tracing::debug!(query, "event stream subscriber connected");
            let mut resp = Response::new(ApiBody::Events(sub));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-ndjson"),
            );
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(err @ SubscribeError::Full { .. }) => {
            let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
    }
}
