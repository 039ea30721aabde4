//! A small HTTP/1.1 client for the agent's API, on std sockets: `GET /v1/status`, a live
//! `/v1/events` reader (chunked NDJSON, collected on a thread), and a reader that connects and
//! never reads.

use std::{
    fmt::Display,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use crate::events::EventLog;

/// A loopback address nothing listens on now (bound then released).
pub fn free_loopback_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Status code, headers (lower-case names) and the buffered reader positioned at the body.
fn request(addr: SocketAddr, target: &str) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    request_with(addr, target, "")
}

/// [`request`] with extra header lines (each ending in `\r\n`).
fn request_with(
    addr: SocketAddr,
    target: &str,
    extra_headers: &str,
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .expect("send request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (code, headers, reader)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads the next chunk of a chunked body; `None` at the end (or when the connection drops).
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    if reader.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
    if n == 0 {
        return None;
    }
    let mut data = vec![0u8; n + 2];
    reader.read_exact(&mut data).ok()?;
    data.truncate(n);
    Some(data)
}

/// Status code and whole body of a GET.
pub fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    let (code, headers, mut reader) = request(addr, target);
    let body = read_body(&headers, &mut reader);
    (code, body)
}

/// The whole body: chunked, or up to the end of the connection.
fn read_body(headers: &[(String, String)], reader: &mut BufReader<TcpStream>) -> String {
    let mut body = Vec::new();
    if header(headers, "transfer-encoding") == Some("chunked") {
        while let Some(c) = read_chunk(reader) {
            body.extend_from_slice(&c);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Status code, headers and whole body of a GET sending `Authorization: Bearer
/// <token>`.
pub fn get_with_token(
    addr: SocketAddr,
    target: &str,
    token: &str,
) -> (u16, Vec<(String, String)>, String) {
    let (code, headers, mut reader) =
        request_with(addr, target, &format!("Authorization: Bearer {token}\r\n"));
    let body = read_body(&headers, &mut reader);
    (code, headers, body)
}

/// `GET /v1/status`, parsed.
pub fn status(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/v1/status");
    assert_eq!(code, 200, "GET /v1/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
}

/// A live `/v1/events` reader collecting the events on a thread.
pub struct EventStream {
    events: EventLog,
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
}

impl EventStream {
    /// Opens `/v1/events?<query>`; panics unless the agent answers 200 with NDJSON.
    pub fn open(addr: SocketAddr, query: &str) -> Self {
        let (code, headers, mut reader) = request(addr, &format!("/v1/events?{query}"));
        assert_eq!(code, 200, "GET /v1/events?{query}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/x-ndjson")
        );
        let stream = reader.get_ref().try_clone().expect("clone socket");
        let events = EventLog::default();
        let sink = events.clone();
        let thread = std::thread::spawn(move || {
            let mut pending = Vec::new();
            while let Some(chunk) = read_chunk(&mut reader) {
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let value: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                        panic!(
                            "invalid stream line ({e}): {}",
                            String::from_utf8_lossy(&line)
                        )
                    });
                    sink.push(value);
                }
            }
        });
        Self {
            events,
            stream,
            reader: Some(thread),
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.snapshot()
    }

    /// How many events were received so far.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Waits until `done` holds over the events received, and returns them; fails the test
    /// when `timeout` passes first (see [`EventLog::wait_for`]).
    #[track_caller]
    pub fn wait_for(
        &self,
        what: impl Display,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.events.wait_for(what, timeout, done)
    }

    /// Closes the connection and returns everything received.
    pub fn close(mut self) -> Vec<Value> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
        self.events()
    }
}

/// Connects to `/v1/events` and never reads: the agent must drop it, not wait for it.
pub struct StalledReader {
    stream: TcpStream,
}

impl StalledReader {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));

        (&stream)
            .write_all(format!("GET /v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("send request");
        Self { stream }
    }

    /// Reads what the agent has sent so far (without waiting); true once it has closed the
    /// connection. Poll it with [`crate::poll::poll_until`].
    pub fn closed_by_agent(&self) -> bool {
        self.stream
            .set_nonblocking(true)
            .expect("non-blocking socket");
        let mut buf = vec![0u8; 1 << 16];
        let mut s = &self.stream;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}
