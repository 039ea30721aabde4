//! TCP connection capture on the real kernel: loopback connections between two processes, IPv4
//! and IPv6, with exact byte counts, 4-tuples and owners on both sides; refused connections.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    events::{str_of, u64_of},
    peer::read_port,
};

const PEER: &str = env!("CARGO_BIN_EXE_tcp-peer");

/// Starts `tcp-peer server` and returns it with its port.
fn server(bind: &str, conns: usize, recv: usize, send: usize) -> (Child, u16) {
    let mut child = Command::new(PEER)
        .args([
            "server",
            bind,
            &conns.to_string(),
            &recv.to_string(),
            &send.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let port = read_port(&mut child);
    (child, port)
}

fn client(addr: &str, conns: usize, send: usize, recv: usize) -> Child {
    Command::new(PEER)
        .args([
            "client",
            addr,
            &conns.to_string(),
            &send.to_string(),
            &recv.to_string(),
        ])
        .spawn()
        .expect("spawn client")
}

/// Connection events touching `port` on either end.
fn on_port<'a>(events: &'a [Value], ty: &str, port: u16) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == ty
                && (e["local_port"].as_u64() == Some(port as u64)
                    || e["remote_port"].as_u64() == Some(port as u64))
        })
        .collect()
}

fn exchange(family: &str, bind: &str, connect_host: &str) {
    const N: usize = 6;
    const UP: usize = 1_000_003; // client -> server, several segments
    const DOWN: usize = 4_099; // server -> client
    let agent = Agent::start(&[]);
    let (mut srv, port) = server(bind, N, UP, DOWN);
    let mut cli = client(&format!("{connect_host}:{port}"), N, UP, DOWN);
    assert!(cli.wait().expect("client").success(), "client failed");
    assert!(srv.wait().expect("server").success(), "server failed");
    let (srv_pid, cli_pid) = (srv.id() as u64, cli.id() as u64);

    agent.wait_for(
        "both ends of every connection closed",
        Duration::from_secs(10),
        |ev| on_port(ev, "tcp_close", port).len() >= 2 * N,
    );
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    let ev = &stopped.events;

    let opens = on_port(ev, "tcp_open", port);
    let closes = on_port(ev, "tcp_close", port);
    let fails = on_port(ev, "tcp_fail", port);
    assert!(fails.is_empty(), "{fails:?}");
    assert_eq!(opens.len(), 2 * N, "opens: {opens:#?}");
    assert_eq!(closes.len(), 2 * N, "closes: {closes:#?}");

    for (phase, list) in [("open", &opens), ("close", &closes)] {
        let outbound: Vec<_> = list
            .iter()
            .filter(|e| e["direction"] == "outbound")
            .collect();
        let inbound: Vec<_> = list
            .iter()
            .filter(|e| e["direction"] == "inbound")
            .collect();
        assert_eq!(outbound.len(), N, "{phase} outbound: {outbound:#?}");
        assert_eq!(inbound.len(), N, "{phase} inbound: {inbound:#?}");
        for e in &outbound {
            assert_eq!(u64_of(e, "pid"), cli_pid, "client side owner: {e}");
            assert_eq!(str_of(e, "comm"), "tcp-peer");
            assert_eq!(u64_of(e, "remote_port"), port as u64, "{e}");
            assert_eq!(str_of(e, "family"), family, "{e}");
            assert_eq!(
                str_of(e, "remote_addr"),
                connect_host.trim_matches(['[', ']'])
            );
            assert_eq!(e["seen_open"], true);
        }
        for e in &inbound {
            // The accepting process, not whoever the softirq interrupted.
            assert_eq!(u64_of(e, "pid"), srv_pid, "server side owner: {e}");
            assert_eq!(u64_of(e, "local_port"), port as u64, "{e}");
            assert_eq!(str_of(e, "family"), family, "{e}");
            assert_eq!(e["accepted"], true, "{e}");
        }
        // Each client port appears once on each side: the 4-tuples pair up.
        let mut client_ports: Vec<u64> = outbound.iter().map(|e| u64_of(e, "local_port")).collect();
        let mut peer_ports: Vec<u64> = inbound.iter().map(|e| u64_of(e, "remote_port")).collect();
        client_ports.sort_unstable();
        peer_ports.sort_unstable();
        client_ports.dedup();
        assert_eq!(client_ports.len(), N, "distinct client ports");
        assert_eq!(client_ports, peer_ports, "{phase}: 4-tuples do not pair up");
    }

    for e in &closes {
        let (sent, received) = if e["direction"] == "outbound" {
            (UP, DOWN)
        } else {
            (DOWN, UP)
        };
        assert_eq!(u64_of(e, "bytes_sent"), sent as u64, "bytes sent: {e}");
        assert_eq!(
            u64_of(e, "bytes_received"),
            received as u64,
            "bytes received: {e}"
        );
        assert!(e["error"].is_null(), "{e}");
        assert!(u64_of(e, "duration_ns") > 0, "{e}");
    }
    for e in opens.iter().filter(|e| e["direction"] == "outbound") {
        assert!(u64_of(e, "connect_latency_ns") > 0, "{e}");
    }
    // Open and close of one connection share its id.
    for e in &opens {
        let id = str_of(e, "conn_id");
        assert_eq!(
            closes.iter().filter(|c| c["conn_id"] == id).count(),
            1,
            "no single close for {e}"
        );
    }
}

#[test]
fn ipv4_loopback_connections_with_exact_bytes_and_owners() {
    exchange("ipv4", "127.0.0.1:0", "127.0.0.1");
}

#[test]
fn ipv6_loopback_connections_with_exact_bytes_and_owners() {
    exchange("ipv6", "[::1]:0", "[::1]");
}

#[test]
fn refused_connection_is_one_failure_and_never_established() {
    let agent = Agent::start(&[]);
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cli = Command::new(PEER)
        .args(["refused", &format!("127.0.0.1:{port}")])
        .spawn()
        .expect("spawn");
    assert!(
        cli.wait().expect("wait").success(),
        "connect was not refused"
    );
    let cli_pid = cli.id() as u64;
    agent.wait_for("the refused connect", Duration::from_secs(10), |ev| {
        !on_port(ev, "tcp_fail", port).is_empty()
    });
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    let fails = on_port(&stopped.events, "tcp_fail", port);
    assert_eq!(fails.len(), 1, "{fails:?}");
    let f = fails[0];
    assert_eq!(str_of(f, "error"), "refused");
    assert_eq!(u64_of(f, "pid"), cli_pid);
    assert_eq!(str_of(f, "direction"), "outbound");
    assert_eq!(u64_of(f, "remote_port"), port as u64);
    // The local port is released before the socket reaches CLOSE; it must still be reported.
    assert!(u64_of(f, "local_port") > 0, "{f}");
    assert!(on_port(&stopped.events, "tcp_open", port).is_empty());
    assert!(on_port(&stopped.events, "tcp_close", port).is_empty());
}
