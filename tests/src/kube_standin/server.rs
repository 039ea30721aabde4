//! A small HTTPS (or plain HTTP) test server on 127.0.0.1 with a path router.
//!
//! It runs on its own thread and tokio runtime: a test's runtime (or the lack of one) does not
//! matter, and stopping the server (drop) ends every connection, even one a handler is
//! deliberately stalling. HTTP/1.1 only, like the kubelet's clients.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    thread::JoinHandle,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// Response body type of every handler.
pub type Body = BoxBody<Bytes, io::Error>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
/// A route handler.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// A complete body.
/// The bearer token a request carries (`Authorization: Bearer <token>`).
pub fn bearer(request: &Request<Incoming>) -> Option<String> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value.strip_prefix("Bearer ").map(str::to_string)
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A plain-text answer, as Go's `http.Error` writes them.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer with the bytes as they are.
pub fn json(bytes: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A body that sends `head`, waits a moment (so the bytes really leave), then fails: the
/// server drops the connection mid-body. The caller sets a `Content-Length` promising more.
pub fn cut_body(head: Bytes) -> Body {
    CutBody {
        head: Some(head),
        pause: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))),
    }
    .boxed()
}

struct CutBody {
    head: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for CutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "stand-in cut the body",
            )))),
        }
    }
}

enum PathMatch {
    Exact(String),
    Prefix(String),
}

struct Route {
    method: Method,
    path: PathMatch,
    handler: Handler,
}

/// Routes by method and path (exact, or prefix for resource trees like `/api/v1/…`).
/// Unknown paths get the 404 Go's mux (and so the kubelet and apiserver) answers.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, method: Method, path: &str, handler: Handler) -> Self {
        self.routes.push(Route {
            method,
            path: PathMatch::Exact(path.to_string()),
            handler,
        });
        self
    }

    pub fn prefix(mut self, method: Method, prefix: &str, handler: Handler) -> Self {
        self.routes.push(Route {
            method,
            path: PathMatch::Prefix(prefix.to_string()),
            handler,
        });
        self
    }

    fn dispatch(&self, request: Request<Incoming>) -> HandlerFuture {
        let path = request.uri().path();
        let mut path_known = false;
        for route in &self.routes {
            let matches = match &route.path {
                PathMatch::Exact(p) => p == path,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            };
            if !matches {
                continue;
            }
            path_known = true;
            if route.method == request.method() {
                return (route.handler)(request);
            }
        }
        let response = if path_known {
            text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        } else {
            text(StatusCode::NOT_FOUND, "404 page not found")
        };
        Box::pin(async move { response })
    }
}

/// A running server. Dropping it stops it and every connection.
pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts serving `router` on 127.0.0.1 (a free port), over TLS when `tls` is given.
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>, router: Router) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("address"), tls, router)
    }

    /// Starts serving `router` on `bind` (e.g. the port of a server stopped earlier).
    pub fn start_at(
        bind: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        router: Router,
    ) -> Self {
        let listener =
            std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop_tx, stop_rx) = oneshot::channel();
        let is_tls = tls.is_some();
        let router = Arc::new(router);
        let thread = std::thread::Builder::new()
            .name(format!("standin-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stand-in runtime");
                runtime.block_on(serve(listener, tls.map(TlsAcceptor::from), router, stop_rx));
                // Connections still open (stalled handlers) end with the runtime.
                runtime.shutdown_background();
            })
            .expect("spawn stand-in thread");
        TestServer {
            addr,
            tls: is_tls,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>` (or `http://…`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    router: Arc<Router>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
        };
        let tls = tls.clone();
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = router.dispatch(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    // A failed handshake is the client's story (wrong CA, wrong name): the
                    // client reports it; the server just drops the connection.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
