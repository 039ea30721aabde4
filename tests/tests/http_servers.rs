//! The agent's HTTP servers (`/metrics` and the API share one) against slow and silent clients:
//! a connection that sends nothing, or half a request head, is closed after the header timeout
//! on both ports and counted; clients holding every `/metrics` slot delay a scrape but never
//! block it; a quiet event stream is not cut by the header timeout.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    api::{self, EventStream},
    poll::{Shown, poll_until},
};

/// The header timeout the agents of these tests run with.
const HEADER_TIMEOUT: &str = "1s";

fn start_agent() -> Agent {
    Agent::start_with_api(&[
        "--set",
        &format!("metrics.header_timeout={HEADER_TIMEOUT}"),
        "--set",
        &format!("api.header_timeout={HEADER_TIMEOUT}"),
    ])
}

/// Reads until the agent closes the connection; fails the test after `within`. Returns how long
/// the connection stayed open.
#[track_caller]
fn closed_by_agent(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return started.elapsed();
            }
            Err(e) => panic!(
                "the agent kept a silent connection open for {:?} ({e})",
                started.elapsed()
            ),
        }
    }
}

/// `agent.servers.<server>.<field>` of the agent's status.
fn server_count(status: &Value, server: &str, field: &str) -> u64 {
    status["agent"]["servers"][server][field]
        .as_u64()
        .unwrap_or(0)
}

/// The value of `family{server="<server>"}` in a scrape, 0 when absent.
fn scraped(metrics: &str, family: &str, server: &str) -> u64 {
    let prefix = format!("{family}{{server=\"{server}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn silent_and_half_sent_clients_are_closed_on_both_ports_and_counted() {
    let mut agent = start_agent();
    let ports: [(&str, SocketAddr); 2] = [("metrics", agent.metrics_addr()), ("api", agent.api())];
    for (server, addr) in ports {
        let connected = Instant::now();
        let mut silent = TcpStream::connect(addr).expect("connect");
        let mut half = TcpStream::connect(addr).expect("connect");
        half.write_all(b"GET /v1/status HTTP/1.1\r\nHost: sonde\r\n")
            .expect("half a request head");
        for (what, conn) in [("silent", &mut silent), ("half-sent", &mut half)] {
            closed_by_agent(conn, Duration::from_secs(15));
            let open = connected.elapsed();
            // Closed by the timeout, not at once for some other reason.
            assert!(
                open >= Duration::from_millis(500),
                "{server}: the {what} connection was closed after only {open:?}"
            );
        }
    }
    // Both servers still answer, and the timeouts are in the health model: /v1/status and
    // /metrics show the same counters.
    let metrics_addr = agent.metrics_addr();
    poll_until(
        "two header timeouts per server in /v1/status and /metrics",
        Duration::from_secs(10),
        || {
            let status = api::status(agent.api());
            let (code, metrics) = api::get(metrics_addr, "/metrics");
            let ok = code == 200
                && ["metrics", "api"].iter().all(|s| {
                    server_count(&status, s, "header_timeouts") >= 2
                        && scraped(&metrics, "sonde_http_header_timeouts_total", s) >= 2
                });
            if ok {
                Ok(())
            } else {
                Err(Shown(format!(
                    "servers: {:#}\nmetrics: {}",
                    status["agent"]["servers"],
                    metrics
                        .lines()
                        .filter(|l| l.starts_with("sonde_http_"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )))
            }
        },
    );
    agent.stop().assert_nothing_lost();
}

#[test]
fn clients_holding_every_metrics_slot_delay_a_scrape_but_never_block_it() {
    let mut agent = start_agent();
    let addr = agent.metrics_addr();
    // The /metrics server serves 16 connections at once: hold them all with silent clients.
    let _silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let started = Instant::now();
    let (code, body) = api::get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("sonde_events_total"), "{body}");
    // It was answered once the header timeout freed a slot (well before the 30 s read timeout).
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "answered after {:?}: the silent clients did not hold the slots",
        started.elapsed()
    );
    poll_until(
        "the wait for a slot counted in /v1/status",
        Duration::from_secs(10),
        || {
            let status = api::status(agent.api());
            if server_count(&status, "metrics", "waited_at_cap") >= 1 {
                Ok(())
            } else {
                Err(Shown(format!("{:#}", status["agent"]["servers"])))
            }
        },
    );
    agent.stop().assert_nothing_lost();
}

#[test]
fn a_quiet_event_stream_outlives_the_header_timeout() {
    let agent = start_agent();
    let addr = agent.api();
    // A filter no event matches: the stream stays quiet.
    let stream = EventStream::open(addr, "container=0000000000000000000000000000000000000000");
    // Time passes beyond the header timeout: a silent connection opened after the stream is
    // closed by it.
    let mut silent = TcpStream::connect(addr).expect("connect");
    closed_by_agent(&mut silent, Duration::from_secs(15));
    let status = api::status(addr);
    assert_eq!(
        status["agent"]["stream"]["subscribers"], 1,
        "the quiet stream was cut: {:#}",
        status["agent"]
    );
    assert!(stream.is_empty(), "{:?}", stream.events());
    drop(stream);
    agent.stop().assert_nothing_lost();
}
