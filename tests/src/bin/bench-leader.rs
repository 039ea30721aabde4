//! `cargo xtask bench --only leader` — the leader's cost for the cluster's Kubernetes events:
//! two agents contend against the test apiserver (default token interval, 5 s), `<rate>`
//! events a second are created for `<seconds>` s (one in five a repeat), and the leader's CPU
//! and RSS are printed beside the stand-by's (both capture the same kernel events, so the
//! difference is the leader's duties), with the events delivered and the token's write rate.
//!
//! ```text
//! SONDE_BIN=target/release/sonde bench-leader <rate> <seconds>
//! ```

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use sonde_tests::{
    agent::{cpu_seconds, rss_and_peak_kib},
    api,
    cluster::{emitted, start_contender},
    kube_standin::{ApiserverStandin, Resource},
};

fn main() -> ExitCode {
    let arg = |i: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse::<usize>().ok())
    };
    let (Some(rate), Some(seconds)) = (arg(1), arg(2)) else {
        eprintln!("usage: bench-leader <events per second> <seconds>");
        return ExitCode::from(2);
    };
    let apiserver = ApiserverStandin::start();
    // (two agents on one kernel: allowed here, as the test suite does)
    let token = [
        "--set",
        "kube_events.token_interval=5s",
        "--set",
        "capture.allow_other_agents=true",
    ];
    let (a, a_api) = start_contender(&apiserver, "bench-a", &token);
    let (b, b_api) = start_contender(&apiserver, "bench-b", &token);
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        let leads = |addr| api::status(addr)["agent"]["leader"]["leader"] == true;
        if leads(a_api) {
            break 0;
        }
        if leads(b_api) {
            break 1;
        }
        if Instant::now() > deadline {
            eprintln!("bench-leader: no leader within 15 s");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let agents = [&a, &b];
    let (lead, standby) = (agents[leader], agents[1 - leader]);
    let patches = || {
        apiserver
            .object_requests()
            .iter()
            .filter(|(r, verb, _)| *r == Resource::ConfigMaps && *verb == "patch")
            .count()
    };
    let (patches_before, cpu_before) = (
        patches(),
        [cpu_seconds(lead.pid()), cpu_seconds(standby.pid())],
    );
    let started = Instant::now();
    let total = rate * seconds;
    for i in 0..total {
        let (name, count) = if i % 5 == 4 {
            (format!("pod-{}.ev", i - 4), 2)
        } else {
            (format!("pod-{i}.ev"), 1)
        };
        apiserver.apply_event("bench", &name, "Pod", "web", "BackOff", count);
        let due = started + Duration::from_secs_f64((i + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = [
        cpu_seconds(lead.pid()) - cpu_before[0],
        cpu_seconds(standby.pid()) - cpu_before[1],
    ];
    std::thread::sleep(Duration::from_secs(1));
    let delivered: usize = emitted(&lead.events()).values().sum();
    let writes = patches() - patches_before;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (lead_rss, lead_hwm) = rss_and_peak_kib(lead.pid());
    let (standby_rss, standby_hwm) = rss_and_peak_kib(standby.pid());
    println!(
        "{total} events in {elapsed:.1} s ({:.0}/s): leader CPU {:.2}% of one core, stand-by \
         {:.2}% (leader's duties: {:+.2} points); RSS leader {:.1} MiB (peak {:.1}), stand-by \
         {:.1} MiB (peak {:.1}); {delivered} kube_events delivered; token written {writes} times \
         ({:.1}/min)",
        total as f64 / elapsed,
        cpu[0] / elapsed * 100.0,
        cpu[1] / elapsed * 100.0,
        (cpu[0] - cpu[1]) / elapsed * 100.0,
        mib(lead_rss),
        mib(lead_hwm),
        mib(standby_rss),
        mib(standby_hwm),
        writes as f64 / elapsed * 60.0,
    );
    ExitCode::SUCCESS
}
