//! `cargo xtask bench` — the agent's memory with Kubernetes metadata loaded: starts the test
//! kubelet (real HTTPS) serving a generated list of `<pods>` pods shaped like a real node's,
//! runs the real agent against it (and, for comparison, without metadata), and prints the
//! agent's resident memory once the list is loaded.
//!
//! ```text
//! SONDE_BIN=target/release/sonde bench-metadata <pods>
//! ```

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use sonde_tests::{
    agent::Agent,
    kube_standin::{KubeletStandin, payloads},
};

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure(args: &[&str], settle: impl Fn() -> bool) -> Result<(u64, u64), String> {
    let agent = Agent::start(args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !settle() {
        if Instant::now() > deadline {
            return Err("the agent did not load the pod list within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the refresher swap the store in and the allocator settle.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(agent.pid());
    drop(agent);
    Ok(rss)
}

fn main() -> ExitCode {
    let pods: usize = match std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        Some(n) => n,
        None => {
            eprintln!("usage: bench-metadata <pods>");
            return ExitCode::from(2);
        }
    };
    let standin = KubeletStandin::start();
    standin.set_pods_bytes(payloads::generate_pod_list(pods));
    let flags = [
        "--kubelet-url".to_string(),
        standin.url(),
        "--kubelet-ca-file".into(),
        standin.ca_file().display().to_string(),
        "--kubelet-token-file".into(),
        standin.token_file().display().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let result = measure(&["--kubelet-enabled", "false"], || true).and_then(|bare| {
        let served = standin.pods_requests();
        let loaded = measure(&flags, || standin.pods_requests() > served)?;
        Ok((bare, loaded))
    });
    match result {
        Ok(((bare_rss, bare_hwm), (rss, hwm))) => {
            println!(
                "agent memory with {pods} pods from the kubelet: RSS {:.1} MiB, peak {:.1} MiB \
                 (without metadata: RSS {:.1} MiB, peak {:.1} MiB; target <= 40 MiB)",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0,
                bare_rss as f64 / 1024.0,
                bare_hwm as f64 / 1024.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-metadata: {e}");
            ExitCode::FAILURE
        }
    }
}
