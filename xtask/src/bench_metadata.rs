//! `cargo xtask bench` — the agent's memory with Kubernetes metadata loaded (500 pods from the
//! test kubelet, 5,000 Services from the test apiserver; targets RSS ≤ 30 MiB, peak ≤ 36 MiB), measured by the
//! `bench-metadata` helper binary.

use anyhow::Result;

use crate::cmd::{agent_binary, cargo, status, target_dir};

pub const PODS: usize = 500;
pub const SERVICES: usize = 5_000;

pub fn run() -> Result<()> {
    status(
        cargo()?.args([
            "build",
            "--release",
            "-q",
            "-p",
            "sonde-tests",
            "--bin",
            "bench-metadata",
        ]),
        "building bench-metadata",
    )?;
    println!("Kubernetes metadata");
    status(
        std::process::Command::new(target_dir().join("release/bench-metadata"))
            .args([PODS.to_string(), SERVICES.to_string()])
            .env("SONDE_BIN", agent_binary(true)),
        "running bench-metadata",
    )?;
    println!();
    Ok(())
}
