//! A TCP peer with exact, known byte counts, run as its own process so tests know which pid owns
//! each side of a connection.
//!
//! ```text
//! tcp-peer server <bind-addr> <conns> <recv-bytes> <send-bytes>   # prints "port N", serves, exits
//! tcp-peer client <addr:port> <conns> <send-bytes> <recv-bytes>   # connects conns times, exits
//! tcp-peer refused <addr:port>                                      # exit 0 iff refused
//! tcp-peer threads <n> <code>             # start n threads, then exit(code) while they run
//! tcp-peer accept-close <bind-addr> <conns>  # prints "port N", accepts conns, closes each at once
//! ```
//!
//! Each connection: the client writes its bytes and shuts down writing; the server reads until
//! EOF (checking the count), writes its bytes and closes; the client reads until EOF (checking
//! the count) and closes. Both ends see every byte, so the kernel's counters are exact.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
};

fn read_all(stream: &mut TcpStream) -> std::io::Result<usize> {
    let mut buf = [0u8; 65536];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

fn write_n(stream: &mut TcpStream, n: usize) -> std::io::Result<()> {
    let chunk = [b'x'; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        stream.write_all(&chunk[..k])?;
        left -= k;
    }
    Ok(())
}

fn parse<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn server(args: &[String]) -> Result<(), String> {
    let bind: SocketAddr = parse(args, 0, "bind address")?;
    let conns: usize = parse(args, 1, "connection count")?;
    let recv: usize = parse(args, 2, "bytes to receive")?;
    let send: usize = parse(args, 3, "bytes to send")?;
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("port {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    for _ in 0..conns {
        let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let got = read_all(&mut s).map_err(|e| format!("server read: {e}"))?;
        if got != recv {
            return Err(format!("server received {got} bytes, expected {recv}"));
        }
        write_n(&mut s, send).map_err(|e| format!("server write: {e}"))?;
        drop(s);
    }
    Ok(())
}

fn client(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = parse(args, 0, "address")?;
    let conns: usize = parse(args, 1, "connection count")?;
    let send: usize = parse(args, 2, "bytes to send")?;
    let recv: usize = parse(args, 3, "bytes to receive")?;
    for _ in 0..conns {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        write_n(&mut s, send).map_err(|e| format!("client write: {e}"))?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let got = read_all(&mut s).map_err(|e| format!("client read: {e}"))?;
        if got != recv {
            return Err(format!("client received {got} bytes, expected {recv}"));
        }
    }
    Ok(())
}

fn refused(args: &[String]) -> Result<(), String> {
    let addr: SocketAddr = parse(args, 0, "address")?;
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("expected refused, got {e}")),
        Ok(_) => Err(format!("expected refused, but {addr} accepted")),
    }
}

fn accept_close(args: &[String]) -> Result<(), String> {
    let bind: SocketAddr = parse(args, 0, "bind address")?;
    let conns: usize = parse(args, 1, "connection count")?;
    let listener = TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("port {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    for _ in 0..conns {
        let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        drop(s);
    }
    Ok(())
}

fn threads(args: &[String]) -> Result<(), String> {
    let n: usize = parse(args, 0, "thread count")?;
    let code: i32 = parse(args, 1, "exit code")?;
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(());
            std::thread::sleep(std::time::Duration::from_secs(30));
        });
    }
    for _ in 0..n {
        rx.recv().map_err(|e| e.to_string())?;
    }
    std::process::exit(code);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("client") => client(&args[1..]),
        Some("refused") => refused(&args[1..]),
        Some("threads") => threads(&args[1..]),
        Some("accept-close") => accept_close(&args[1..]),
        _ => Err("usage: tcp-peer server|client|refused ...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcp-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
