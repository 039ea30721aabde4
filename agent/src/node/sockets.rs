//! The start-up scan of TCP sockets, in every network namespace that has a process: netlink
//! `sock_diag` (entering each namespace on a short-lived thread), or `/proc/<pid>/net/tcp{,6}`
//! when sock_diag is not available. Sockets are joined to their owners by inode with the fd
//! table from the /proc scan.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

/// TCP states (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;

/// A TCP socket that exists at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedConn {
    pub netns: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// How a namespace's sockets were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    SockDiag,
    ProcNet,
}

#[derive(Debug, Default)]
pub struct SocketScan {
    /// Connections (not listeners, not TIME_WAIT or CLOSE).
    pub conns: Vec<ScannedConn>,
    /// (namespace, local port) of every listening socket: a connection on such a port is
    /// inbound.
    pub listeners: HashSet<(u64, u16)>,
    pub methods: HashMap<u64, Method>,
    /// The ephemeral port range (`net.ipv4.ip_local_port_range`) ports of outbound connections
    /// are chosen from.
    pub ephemeral: (u16, u16),
    /// Namespaces whose sockets could not be read at all, with the reason.
    pub failed: Vec<(u64, String)>,
}

/// Scans the namespaces in `members` (namespace inode -> a pid inside it), through `proc_root`.
pub fn scan(proc_root: &Path, members: &HashMap<u64, u32>) -> SocketScan {
    let mut out = SocketScan {
        ephemeral: ephemeral_range(proc_root),
        ..Default::default()
    };
    let own_ns = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| super::procfs::ns_inode(&l.to_string_lossy()));
    for (&netns, &pid) in members {
        let ns_file = proc_root.join(pid.to_string()).join("ns/net");
        let diag = if Some(netns) == own_ns {
            dump_all()
        } else {
            in_namespace(&ns_file, dump_all)
        };
        let sockets = match diag {
            Ok(sockets) => {
                out.methods.insert(netns, Method::SockDiag);
                sockets
            }
            Err(diag_err) => match proc_net(proc_root, pid) {
                Ok(sockets) => {
                    tracing::debug!(netns, %diag_err, "sock_diag unavailable; read /proc/net");
                    out.methods.insert(netns, Method::ProcNet);
                    sockets
                }
                Err(proc_err) => {
                    out.failed
                        .push((netns, format!("sock_diag: {diag_err}; /proc: {proc_err}")));
                    continue;
                }
            },
        };
        for (local, remote, state, inode) in sockets {
            match state {
                TCP_LISTEN => {
                    out.listeners.insert((netns, local.port()));
                }
                TCP_TIME_WAIT | TCP_CLOSE => {}
                _ => out.conns.push(ScannedConn {
                    netns,
                    local,
                    remote,
                    state,
                    inode,
                }),
            }
        }
    }
    out
}

/// Which side opened a connection found at start-up: `inbound` if its local port is one a
/// listener of its namespace uses, `outbound` if the remote port is; otherwise the ephemeral
/// port range decides (the side holding an ephemeral port connected); `unknown` when both or
/// neither port is ephemeral.
pub fn direction(c: &ScannedConn, scan: &SocketScan) -> &'static str {
    if scan.listeners.contains(&(c.netns, c.local.port())) {
        return "inbound";
    }
    if scan.listeners.contains(&(c.netns, c.remote.port())) && c.remote.ip().is_loopback() {
        return "outbound";
    }
    let (lo, hi) = scan.ephemeral;
    let ephemeral = |port: u16| (lo..=hi).contains(&port);
    match (ephemeral(c.local.port()), ephemeral(c.remote.port())) {
        (true, false) => "outbound",
        (false, true) => "inbound",
        _ => "unknown",
    }
}

/// `net.ipv4.ip_local_port_range`, or Linux's default when unreadable.
fn ephemeral_range(proc_root: &Path) -> (u16, u16) {
    std::fs::read_to_string(proc_root.join("sys/net/ipv4/ip_local_port_range"))
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

type RawSocket = (SocketAddr, SocketAddr, u8, u64);

/// Runs `f` on a thread that joined the network namespace `ns_file`.
fn in_namespace(
    ns_file: &Path,
    f: fn() -> std::io::Result<Vec<RawSocket>>,
) -> std::io::Result<Vec<RawSocket>> {
    let file = std::fs::File::open(ns_file)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("socket scan thread panicked")))
    })
}

fn dump_all() -> std::io::Result<Vec<RawSocket>> {
    let mut out = dump(AF_INET)?;
    out.extend(dump(AF_INET6)?);
    Ok(out)
}

/// One INET_DIAG dump of TCP sockets of `family` in the current namespace.
fn dump(family: u8) -> std::io::Result<Vec<RawSocket>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    let mut recv = Vec::with_capacity(64 * 1024);
    loop {
        recv.clear();
        let size = socket.recv(&mut recv, 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&recv[offset..size])
                .map_err(|e| std::io::Error::other(format!("sock_diag reply: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    out.push((
                        SocketAddr::new(id.source_address, id.source_port),
                        SocketAddr::new(id.destination_address, id.destination_port),
                        r.header.state,
                        r.header.inode as u64,
                    ));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(std::io::Error::other(format!("sock_diag error: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The fallback: /proc/<pid>/net/tcp and tcp6 (the namespace of that process).
fn proc_net(proc_root: &Path, pid: u32) -> Result<Vec<RawSocket>, procfs::ProcError> {
    let process = procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))?;
    let mut entries = process.tcp()?;
    entries.extend(process.tcp6().unwrap_or_default());
    Ok(entries
        .into_iter()
        .map(|e| {
            (
                e.local_address,
                e.remote_address,
                tcp_state_number(&e.state),
                e.inode,
            )
        })
        .collect())
}

fn tcp_state_number(state: &procfs::net::TcpState) -> u8 {
    use procfs::net::TcpState::*;
    match state {
        Established => 1,
        SynSent => 2,
        SynRecv => 3,
        FinWait1 => 4,
        FinWait2 => 5,
        TimeWait => 6,
        Close => 7,
        CloseWait => 8,
        LastAck => 9,
        Listen => 10,
        Closing => 11,
        NewSynRecv => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_diag_and_proc_net_see_the_same_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let local = client.local_addr().expect("local");
        let find = |sockets: &[RawSocket]| {
            sockets.iter().any(|(l, r, state, inode)| {
                *l == local && r.port() == port && *state == 1 && *inode > 0
            })
        };
        let diag = dump_all().expect("sock_diag works on the test machine");
        assert!(find(&diag), "sock_diag lists the connection");
        let proc = proc_net(Path::new("/proc"), std::process::id()).expect("/proc/net/tcp");
        assert!(find(&proc), "/proc/net/tcp lists the connection");
        assert!(
            diag.iter()
                .any(|(l, _, s, _)| l.port() == port && *s == TCP_LISTEN)
        );
        drop(client);
    }
}
