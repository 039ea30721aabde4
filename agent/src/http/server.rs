//! The accept loop. Every connection is served by hyper's HTTP/1.1 state machine with:
//! - a **connection cap**: at most [`ServerOptions::max_connections`] at once; the next
//!   connection is accepted and held (one at most) until a slot frees, and those after it wait
//!   in the kernel's accept queue (counted in [`ServerStats::waited_at_cap`]). Nothing is
//!   refused: a client waits at most until the header timeout frees a slot held by a silent
//!   connection.
//! - a **header timeout**: hyper's header timer runs whenever the connection waits for a
//!   request head — from accept, and again after each response — so it is also the keep-alive
//!   idle timeout: a silent new connection, a half-sent request and an idle keep-alive
//!   connection are all closed after [`ServerOptions::header_timeout`] (counted in
//!   [`ServerStats::header_timeouts`]). It never runs while a response is being sent, so a
//!   long-lived stream is not cut, however quiet.
//! - optional **TLS** ([`ServerOptions::tls`]): the handshake must end within the header
//!   timeout too (a stalled one counts as a header timeout); a failed one is counted in
//!   [`ServerStats::tls_handshake_failures`] (a plain-HTTP client, an untrusting one).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    task::JoinHandle,
};

use super::{Conn, Handler};

/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// A client must send each request head within this by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Named in logs, e.g. "metrics".
    pub name: &'static str,
    pub max_connections: usize,
    /// For the request head, and for the idle wait between requests (see the module doc).
    pub header_timeout: Duration,
    /// How long a connection whose handler notified [`Conn::close`] stays open.
    pub close_grace: Duration,
    /// Kernel send buffer (`SO_SNDBUF`) of each connection; `None` leaves autotuning on.
    pub send_buffer: Option<usize>,
    /// Serve HTTPS with this certificate; `None`: plain HTTP.
    pub tls: Option<crate::tls::server::ServerTls>,
}

impl ServerOptions {
    /// The defaults, for the server named `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            close_grace: Duration::from_secs(2),
            send_buffer: None,
            tls: None,
        }
    }
}

/// What the server counted since it started; read with [`ServerStats::snapshot`].
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections that had to wait for a slot because the cap was reached.
    pub waited_at_cap: AtomicU64,
    /// Connections closed because a request head (or the next one, when idle) did not come in
    /// time.
    pub header_timeouts: AtomicU64,
    /// TLS handshakes that failed (plain HTTP sent to HTTPS, a client that distrusts the
    /// certificate, a protocol mismatch).
    pub tls_handshake_failures: AtomicU64,
}

/// A copy of [`ServerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections that waited for a slot (the cap was reached).
    pub waited_at_cap: u64,
    /// Connections closed because no request head came in time.
    pub header_timeouts: u64,
    /// TLS handshakes that failed.
    #[serde(default)]
    pub tls_handshake_failures: u64,
}

impl ServerStats {
    pub fn snapshot(&self) -> ServerCounts {
        ServerCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            waited_at_cap: self.waited_at_cap.load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Ordering::Relaxed),
        }
    }
}

/// Serves `handler` on `listener` until the task is aborted; the counters are shared with the
/// caller.
pub fn serve<H: Handler>(
    listener: TcpListener,
    opts: ServerOptions,
    handler: H,
) -> (JoinHandle<()>, Arc<ServerStats>) {
    let stats = Arc::new(ServerStats::default());
    let counters = Arc::clone(&stats);
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of fds and the like: back off instead of spinning; capture goes on.
                    tracing::warn!(%err, server = opts.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    counters.waited_at_cap.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(server = opts.name, %peer, "connection cap reached");
                    let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                        return;
                    };
                    permit
                }
            };
            if let Some(bytes) = opts.send_buffer {
                limit_send_buffer(&stream, bytes);
            }
            let conn = Conn {
                peer,
                close: Arc::new(Notify::new()),
            };
            let (handler, opts, counters) = (handler.clone(), opts.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                counters.active.fetch_add(1, Ordering::Relaxed);
                serve_connection(stream, conn, &opts, handler, &counters).await;
                counters.active.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    });
    (task, stats)
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    conn: Conn,
    opts: &ServerOptions,
    handler: H,
    stats: &ServerStats,
) {
    let Some(tls) = &opts.tls else {
        return serve_http(TokioIo::new(stream), conn, opts, handler, stats).await;
    };
    let peer = conn.peer;
    match tokio::time::timeout(opts.header_timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => serve_http(TokioIo::new(stream), conn, opts, handler, stats).await,
        Ok(Err(err)) => {
            stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server = opts.name, %peer, %err, "TLS handshake failed");
        }
        Err(_) => {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server = opts.name, %peer, "closed: no TLS handshake in time");
        }
    }
}

async fn serve_http<H, I>(io: I, conn: Conn, opts: &ServerOptions, handler: H, stats: &ServerStats)
where
    H: Handler,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let close = Arc::clone(&conn.close);
    let peer = conn.peer;
    let service = service_fn(move |req| {
        std::future::ready(Ok::<_, std::convert::Infallible>(
            handler.handle(req, &conn),
        ))
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .serve_connection(io, service);
    tokio::select! {
        result = served => match result {
            Err(err) if err.is_timeout() => {
                stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(server = opts.name, %peer, "closed: no request head in time");
            }
            Err(err) => tracing::debug!(server = opts.name, %peer, %err, "connection ended"),
            Ok(()) => {}
        },
        _ = async { close.notified().await; tokio::time::sleep(opts.close_grace).await } => {
            tracing::debug!(server = opts.name, %peer, "closed at the handler's request");
        }
    }
}

fn limit_send_buffer(stream: &TcpStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "SO_SNDBUF not set");
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Instant};

    use http::{Request, Response, StatusCode};
    use hyper::body::Incoming;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::http::{Body, plain};

    #[derive(Clone)]
    struct Hello;

    impl Handler for Hello {
        fn handle(&self, _req: Request<Incoming>, _conn: &Conn) -> Response<Body> {
            plain(StatusCode::OK, "hello\n")
        }
    }

    async fn start(opts: ServerOptions) -> (SocketAddr, JoinHandle<()>, Arc<ServerStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (task, stats) = serve(listener, opts, Hello);
        (addr, task, stats)
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("response");
        out
    }

    /// Reads until the server closes; fails after `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server kept the connection open for {within:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_request_head_not_finished_in_time_closes_the_connection() {
        let opts = ServerOptions {
            header_timeout: Duration::from_millis(300),
            ..ServerOptions::new("test")
        };
        let (addr, task, stats) = start(opts).await;
        let mut partial = TcpStream::connect(addr).await.expect("connect");
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        closed_within(&mut partial, Duration::from_secs(5)).await;
        closed_within(&mut silent, Duration::from_secs(5)).await;
        assert_eq!(
            stats.snapshot().header_timeouts,
            2,
            "{:?}",
            stats.snapshot()
        );
        // An idle keep-alive connection is closed the same way after its response.
        let mut keep = TcpStream::connect(addr).await.expect("connect");
        keep.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        closed_within(&mut keep, Duration::from_secs(5)).await;
        assert_eq!(
            stats.snapshot().header_timeouts,
            3,
            "{:?}",
            stats.snapshot()
        );
        task.abort();
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_for_a_slot() {
        let opts = ServerOptions {
            max_connections: 2,
            header_timeout: Duration::from_millis(500),
            ..ServerOptions::new("test")
        };
        let (addr, task, stats) = start(opts).await;
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Both slots are held by silent clients: this one waits until the header timeout
        // frees a slot, then is answered.
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get(addr))
            .await
            .expect("answered once a slot freed");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        let counts = stats.snapshot();
        assert_eq!(counts.waited_at_cap, 1, "{counts:?}");
        assert_eq!(counts.accepted, 3, "{counts:?}");
        // With slots free, an answer comes at once.
        let answer = tokio::time::timeout(Duration::from_millis(400), get(addr))
            .await
            .expect("answered at once");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        task.abort();
    }

    #[tokio::test]
    async fn a_quiet_stream_is_not_cut_and_close_ends_it() {
        #[derive(Clone)]
        struct Quiet;
        struct Never;
        impl crate::http::Chunks for Never {
            fn poll_chunk(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<bytes::Bytes, std::io::Error>>> {
                std::task::Poll::Pending
            }
        }
        impl Handler for Quiet {
            fn handle(&self, _req: Request<Incoming>, conn: &Conn) -> Response<Body> {
                let close = Arc::clone(&conn.close);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    close.notify_one();
                });
                Response::new(Body::stream(Never))
            }
        }
        let opts = ServerOptions {
            header_timeout: Duration::from_millis(200),
            close_grace: Duration::from_millis(100),
            ..ServerOptions::new("test")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let (task, stats) = serve(listener, opts, Quiet);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        closed_within(&mut s, Duration::from_secs(5)).await;
        // Open well past the header timeout (the stream was quiet), closed after the
        // handler's request plus the grace.
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(stats.snapshot().header_timeouts, 0);
        task.abort();
    }
}
