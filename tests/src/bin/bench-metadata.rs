//! `cargo xtask bench` — the agent's memory with Kubernetes metadata loaded: starts the test
//! kubelet (real HTTPS) serving a generated list of `<pods>` pods shaped like a real node's and
//! the test apiserver holding `<services>` Services with an EndpointSlice each, runs the real
//! agent against both (and, for comparison, without metadata), and prints the agent's resident
//! memory once they are loaded.
//!
//! ```text
//! SONDE_BIN=target/release/sonde bench-metadata <pods> <services>
//! ```

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use sonde_tests::{
    agent::{Agent, rss_and_peak_kib},
    kube_standin::{
        ApiserverStandin, KubeletStandin, Resource,
        apiserver::{FIXTURE_NODE, endpoint_slice, service},
        payloads,
    },
};

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
    let rss = rss_and_peak_kib(agent.pid());
    drop(agent);
    Ok(rss)
}

fn main() -> ExitCode {
    let arg = |i: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse::<usize>().ok())
    };
    let (Some(pods), Some(services)) = (arg(1), arg(2)) else {
        eprintln!("usage: bench-metadata <pods> <services>");
        return ExitCode::from(2);
    };
    let standin = KubeletStandin::start();
    standin.set_pods_bytes(payloads::generate_pod_list(pods));
    let apiserver = ApiserverStandin::start();
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
        let name = format!("svc-{i}");
        apiserver.apply(
            Resource::Services,
            service("bench", &name, &format!("10.96.{a}.{b}"), &[80, 443]),
        );
        let pods: Vec<(String, String)> = (0..4)
            .map(|e| (format!("10.{}.{a}.{b}", 100 + e), format!("{name}-pod-{e}")))
            .collect();
        let pods: Vec<(&str, &str)> = pods
            .iter()
            .map(|(ip, p)| (ip.as_str(), p.as_str()))
            .collect();
        apiserver.apply(
            Resource::EndpointSlices,
            endpoint_slice("bench", &format!("{name}-x"), &name, &pods),
        );
    }
    let kubeconfig = apiserver.kubeconfig();
    let mut flags = vec![
        "--kubeconfig".to_string(),
        kubeconfig.display().to_string(),
        "--node-name".into(),
        FIXTURE_NODE.into(),
    ];
    flags.extend(standin.agent_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let result = measure(&["--kubelet-enabled", "false"], || true).and_then(|bare| {
        let served = standin.pods_requests();
        let lists = apiserver.list_requests(Resource::EndpointSlices);
        let loaded = measure(&flags, || {
            standin.pods_requests() > served
                && apiserver.list_requests(Resource::EndpointSlices) > lists
        })?;
        Ok((bare, loaded))
    });
    match result {
        Ok(((bare_rss, bare_hwm), (rss, hwm))) => {
            println!(
                "agent memory with {pods} pods (kubelet) and {services} Services with 4 endpoints \
                 each (apiserver): RSS {:.1} MiB, peak {:.1} MiB (without metadata: RSS {:.1} \
                 MiB, peak {:.1} MiB; targets: RSS <= 30 MiB, peak <= 36 MiB)",
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
