//! `cargo xtask bench` — in-process micro-benchmarks (`agent/benches/*.rs`, harness = false):
//! each prints its own figures.

use anyhow::Result;

use crate::cmd::{cargo, status};

/// The benches, in the order they are reported.
pub const BENCHES: &[&str] = &["attribution", "remote_lookup", "metrics_scrape", "stream"];

pub fn run() -> Result<()> {
    for name in BENCHES {
        status(
            cargo()?.args(["bench", "-q", "-p", "sonde", "--bench", name]),
            &format!("running the {name} benchmark"),
        )?;
    }
    println!();
    Ok(())
}
