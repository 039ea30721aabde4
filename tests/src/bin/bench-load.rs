//! Load generators for `cargo xtask bench`. Each runs for a given time and prints one number:
//! operations completed per second.
//!
//! ```text
//! bench-load tcp <seconds>   # loopback connect / send 64 B / recv 64 B / close, one conn per op
//! bench-load exec <seconds>  # fork + exec /bin/true + wait, one process per op
//! bench-load hold <procs> <conns>  # keeps <procs> sleeping processes and <conns> open
//!                                  # loopback connections until stdin closes; prints "ready"
//! ```
//!
//! The TCP load runs in a network namespace of its own (created here, gone when it exits), so
//! the TIME_WAIT sockets of earlier runs cannot slow later ones: every run starts from the same
//! state. Within a run, the client binds each connection to one of many loopback source
//! addresses (`IP_BIND_ADDRESS_NO_PORT`, port chosen at connect) so TIME_WAIT never exhausts
//! ports.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

const MSG: usize = 64;

fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket syscalls on a fd we own; every return value is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let local = sockaddr(SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(dst);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::from(owned))
    }
}

/// Moves this process into a new network namespace and brings its loopback up.
fn fresh_netns() -> Result<(), String> {
    // SAFETY: unshare and the interface ioctls on a socket we own; results checked.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {} (the benchmark runs as root)",
                std::io::Error::last_os_error()
            ));
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(format!(
                "SIOCSIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        drop(sock);
    }
    Ok(())
}

fn tcp(seconds: f64) -> Result<f64, String> {
    fresh_netns()?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let dst = match listener.local_addr().map_err(|e| e.to_string())? {
        std::net::SocketAddr::V4(a) => a,
        other => return Err(format!("unexpected listener address {other}")),
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; MSG];
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut ops = 0u64;
    let mut buf = [7u8; MSG];
    while Instant::now() < deadline {
        let src = Ipv4Addr::new(127, 0, 1 + (ops / 250 % 200) as u8, 1 + (ops % 250) as u8);
        let mut s = connect_from(src, dst).map_err(|e| format!("connect: {e}"))?;
        s.write_all(&buf).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        drop(s);
        ops += 1;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn exec(seconds: f64) -> Result<f64, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut ops = 0u64;
    while Instant::now() < deadline {
        let status = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("/bin/true exited with {status}"));
        }
        ops += 1;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

/// Holds `procs` child processes and `conns` established loopback connections (both ends in
/// this process) until stdin reaches EOF: the start-up state the bootstrap benchmark scans.
fn hold(procs: usize, conns: usize) -> Result<(), String> {
    let want = (2 * conns + 64) as u64;
    let limit = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit with a valid struct; failure is reported below by accept/connect.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let mut children = Vec::with_capacity(procs);
    let result = (|| {
        for _ in 0..procs {
            let child = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn sleep: {e}"))?;
            children.push(child);
        }
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut sockets = Vec::with_capacity(2 * conns);
        for _ in 0..conns {
            sockets.push(TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?);
            sockets.push(listener.accept().map_err(|e| format!("accept: {e}"))?.0);
        }
        println!("ready");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        drop(sockets);
        Ok(())
    })();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hold") {
        let count = |i: usize| args.get(i).and_then(|s| s.parse::<usize>().ok());
        let (Some(procs), Some(conns)) = (count(1), count(2)) else {
            eprintln!("usage: bench-load hold <procs> <conns>");
            return ExitCode::from(2);
        };
        return match hold(procs, conns) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-load: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let seconds: f64 = match args.get(1).and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None => {
            eprintln!("usage: bench-load tcp|exec <seconds>");
            return ExitCode::from(2);
        }
    };
    let result = match args[0].as_str() {
        "tcp" => tcp(seconds),
        "exec" => exec(seconds),
        other => Err(format!("unknown load {other}")),
    };
    match result {
        Ok(rate) => {
            println!("{rate:.1}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::FAILURE
        }
    }
}
