//! The agent's HTTP API on `api.listen` (default 127.0.0.1:9465): `GET /v1/events` (the live
//! NDJSON event stream, filtered) and `GET /v1/status` (health and per-workload table).
//!
//! Plain hyper 1 (HTTP/1.1), already a dependency for the kubelet client: two GET routes and a
//! streaming body need no router or middleware, so axum/tower would add weight, not function.
//! See docs/api.md.

pub mod auth;
pub mod body;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

use crate::{
    export::{
        fanout::{EventsConfig, StreamHandle, SubscribeError},
        filter::Filter,
        status::Status,
    },
    http::{
        self as server, BindError, Body, Conn, Endpoint, Handler, ServerOptions, ServerStats,
        server::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS},
    },
};

/// Where the API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";
/// How bind errors name this endpoint.
const ENDPOINT: Endpoint = Endpoint {
    name: "the API",
    flag: "--api-listen",
    default_port: 9465,
};
/// A subscriber dropped for falling behind gets this long to read its last line before its
/// connection is closed (a stalled reader would otherwise hold it open for ever).
const DROP_GRACE: Duration = Duration::from_secs(2);
/// Kernel send buffer of an API connection. Bounded (no autotuning to megabytes), so a
/// stalled event reader fills it quickly and is dropped by its queue instead of parking
/// megabytes in the kernel; ample for loopback and LAN readers.
const SEND_BUFFER: usize = 256 << 10;

/// `api.*`: the status API and the HTTP event stream (its fan-out limits are `events.*`,
/// [`EventsConfig`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// A client must send each request head within this (see [`crate::http::server`]).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A file holding the bearer token every request must carry ([`auth`]); required when
    /// `listen` is not a loopback address.
    pub token_file: Option<std::path::PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM) and [`Self::tls_key_file`]; `None`:
    /// plain HTTP.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ApiConfig {
    /// The certificate and key to serve HTTPS with, when both are set (the configuration's
    /// validation refuses one without the other).
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The server's limits: those of /metrics, except the connection cap, which is
    /// `max_subscribers` plus the /metrics cap — streams hold their connection for as long as
    /// they read, and with a cap of only `max_subscribers` a full set of readers would leave
    /// no room for `/v1/status` or for answering the next reader `503`.
    pub fn server_options(
        &self,
        events: &EventsConfig,
        tls: Option<crate::tls::server::ServerTls>,
    ) -> ServerOptions {
        ServerOptions {
            max_connections: events
                .max_subscribers
                .saturating_add(DEFAULT_MAX_CONNECTIONS),
            header_timeout: self.header_timeout,
            close_grace: DROP_GRACE,
            send_buffer: Some(SEND_BUFFER),
            tls,
            ..ServerOptions::new("api")
        }
    }
}

/// Bind errors of the API (they name `--api-listen`).
pub type ApiError = BindError;

/// What the handlers read: the stream to subscribe to and the latest status snapshot.
#[derive(Clone)]
pub struct ApiState {
    /// Serve HTTPS with it (`api.tls_cert_file`).
    pub tls: Option<crate::tls::server::ServerTls>,
    pub stream: StreamHandle,
    /// When set, every request must carry this bearer token.
    pub token: Option<Arc<auth::BearerToken>>,
    /// The health model, serialised per request ([`Status::from_health`]).
    pub status: crate::pipeline::health::HealthReceiver,
}

/// Binds the listener (so a taken port fails the run before capture starts).
pub async fn bind(opts: &ApiConfig) -> Result<TcpListener, ApiError> {
    server::bind(ENDPOINT, opts.listen).await
}

/// Serves the API on `listener` until the task is aborted.
pub fn serve(
    listener: TcpListener,
    opts: &ApiConfig,
    events: &EventsConfig,
    state: ApiState,
) -> (JoinHandle<()>, Arc<ServerStats>) {
    if let Ok(addr) = listener.local_addr() {
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "API listening (GET /v1/events, GET /v1/status)");
    }
    server::serve(
        listener,
        opts.server_options(events, state.tls.clone()),
        state,
    )
}

impl Handler for ApiState {
    fn handle(&self, req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        handle(req, self, Arc::clone(&conn.close))
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    server::plain(status, text + "\n")
}

fn handle(req: Request<Incoming>, state: &ApiState, kill: Arc<Notify>) -> Response<Body> {
    if let Some(token) = &state.token
        && !token.allows(req.headers())
    {
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            "this API requires a bearer token (api.token_file): send `Authorization: Bearer \
             <token>` (sonde status reads api.token_file, or --token-file)"
                .into(),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"sonde\""),
        );
        return resp;
    }
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
                    let mut resp = Response::new(Body::full(json));
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

fn events(query: &str, state: &ApiState, kill: Arc<Notify>) -> Response<Body> {
    let filter = match Filter::parse(query) {
        Ok(f) => f,
        Err(err) => return plain(StatusCode::BAD_REQUEST, err.to_string()),
    };
    match state.stream.subscribe(filter, kill) {
        Ok(sub) => {
            tracing::debug!(query, "event stream subscriber connected");
            let mut resp = Response::new(Body::stream(sub));
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
