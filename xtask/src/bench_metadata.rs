//! `cargo xtask bench` — what runs in a helper binary against the test kubelet and apiserver:
//! the agent's memory with Kubernetes metadata loaded (500 pods from the test kubelet, 5,000
//! Services from the test apiserver; targets RSS ≤ 30 MiB, peak ≤ 36 MiB: `bench-metadata`),
//! and the leader's cost for the cluster's Kubernetes events at 100 events/s beside a stand-by
//! in the same run (`bench-leader`).

use anyhow::Result;

use crate::cmd::{agent_binary, cargo, status, target_dir};

pub const PODS: usize = 500;
pub const SERVICES: usize = 5_000;
/// Kubernetes events created per second, and for how long, in the leader's benchmark.
pub const EVENTS_PER_SECOND: usize = 100;
pub const LEADER_SECONDS: usize = 30;

/// Builds and runs helper binary `bin` with `args` against the release agent.
fn helper(bin: &str, args: &[String], title: &str) -> Result<()> {
    status(
        cargo()?.args([
            "build",
            "--release",
            "-q",
            "-p",
            "sonde-tests",
            "--bin",
            bin,
        ]),
        &format!("building {bin}"),
    )?;
    println!("{title}");
    status(
        std::process::Command::new(target_dir().join("release").join(bin))
            .args(args)
            .env("SONDE_BIN", agent_binary(true)),
        &format!("running {bin}"),
    )?;
    println!();
    Ok(())
}

pub fn run() -> Result<()> {
    helper(
        "bench-metadata",
        &[PODS.to_string(), SERVICES.to_string()],
        "Kubernetes metadata",
    )
}

pub fn run_leader() -> Result<()> {
    helper(
        "bench-leader",
        &[EVENTS_PER_SECOND.to_string(), LEADER_SECONDS.to_string()],
        "Leader: the cluster's Kubernetes events",
    )
}
