//! `cargo xtask bench` — the start-up bootstrap: how long Sonde's /proc and socket scan takes
//! on a host with 2,000 extra processes and 2,000 extra open TCP connections (`bench-load
//! hold`), read from the agent's `--stats-file` (`bootstrap.duration_ms`).

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::bench::{median, start_sonde, stop_sonde_stats};

pub const EXTRA_PROCESSES: usize = 2_000;
pub const EXTRA_CONNECTIONS: usize = 2_000;

pub fn run(load_bin: &Path, dir: &Path, rounds: usize) -> Result<()> {
    let mut hold = Command::new(load_bin)
        .args([
            "hold",
            &EXTRA_PROCESSES.to_string(),
            &EXTRA_CONNECTIONS.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting bench-load hold")?;
    let mut line = String::new();
    if let Some(out) = hold.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    if line.trim() != "ready" {
        let _ = hold.kill();
        bail!("bench-load hold did not get ready (raise the process or file limits?)");
    }
    let result = (|| {
        let mut durations = Vec::new();
        let mut found = (0, 0);
        for _ in 0..rounds {
            let sonde = start_sonde(dir)?;
            // The scan is merged shortly after readiness; give it time to finish.
            std::thread::sleep(std::time::Duration::from_secs(2));
            let stats = stop_sonde_stats(sonde)?;
            let boot = &stats["bootstrap"];
            let Some(ms) = boot["duration_ms"].as_f64() else {
                bail!("the start-up scan did not finish within 2 s (no bootstrap stats)");
            };
            durations.push(ms);
            found = (
                boot["processes_found"].as_u64().unwrap_or(0),
                boot["connections_found"].as_u64().unwrap_or(0),
            );
        }
        println!(
            "start-up bootstrap (+{EXTRA_PROCESSES} processes, +{EXTRA_CONNECTIONS} connections)"
        );
        println!(
            "  scan + sock_diag: median {:.1} ms over {rounds} starts (target <= 300 ms); found {} processes, {} connections\n",
            median(&mut durations),
            found.0,
            found.1
        );
        Ok(())
    })();
    // Closing stdin releases the held processes and sockets.
    if let Some(mut stdin) = hold.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = hold.wait();
    result
}
