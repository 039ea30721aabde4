//! The `tcp-peer` helper binary's protocol: a server prints `port <N>` once it listens.

use std::{
    io::{BufRead, BufReader},
    process::Child,
};

/// Reads the `port <N>` line a `tcp-peer` server prints on stdout (spawned with a piped stdout).
pub fn read_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("tcp-peer stdout is piped"))
        .read_line(&mut line)
        .expect("port line");
    line.trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected tcp-peer output {line:?}"))
}
