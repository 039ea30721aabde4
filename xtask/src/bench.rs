//! `cargo xtask bench`: what tracing costs a workload, Sonde against its peers.
//!
//! Two workloads (`bench-load tcp`: loopback connect/send/recv/close; `bench-load exec`:
//! fork/exec/wait of /bin/true) run alternately with no tracer, with Sonde (release build,
//! NDJSON to /dev/null) and with the libbpf-tools peer (`tcplife`, `execsnoop`, output to
//! /dev/null), for several rounds. Reported: median throughput per configuration, the median of
//! the per-round traced/untraced ratios, the events Sonde lost, Sonde's CPU time and peak RSS.
//! Then the start-up bootstrap ([`crate::bench_bootstrap`]), memory with Kubernetes metadata
//! ([`crate::bench_metadata`]) and the in-process micro-benchmarks ([`crate::bench_micro`]).

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::cmd::{agent_binary, cargo, status, target_dir};

struct Workload {
    /// What `--only` names.
    key: &'static str,
    name: &'static str,
    load: &'static str,
    /// Its name in the report.
    peer: &'static str,
    kind: PeerKind,
}

/// What runs side by side with the host build of Sonde.
#[derive(Clone, Copy)]
enum PeerKind {
    /// A peer tracer from libbpf-tools, with its arguments.
    Tool(&'static [&'static str]),
    /// The image's static (musl) build of Sonde itself, so the two builds are compared in the
    /// same run.
    StaticSonde,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        key: "tcp",
        name: "TCP connect/send/recv/close",
        load: "tcp",
        peer: "tcplife",
        kind: PeerKind::Tool(&[]),
    },
    Workload {
        key: "exec",
        name: "fork/exec/exit",
        load: "exec",
        peer: "execsnoop",
        kind: PeerKind::Tool(&[]),
    },
    Workload {
        key: "image",
        name: "TCP connect/send/recv/close: host build vs the image's static (musl) build",
        load: "tcp",
        peer: "sonde-static",
        kind: PeerKind::StaticSonde,
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tracer {
    None,
    Sonde,
    Peer,
}

/// One Sonde run's own measurements.
#[derive(Default, Clone, Copy)]
struct SondeRun {
    lost: u64,
    events: u64,
    cpu_s: f64,
    peak_rss_kib: u64,
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn peer_path(name: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found: `cargo xtask setup` installs libbpf-tools")
}

fn run_load(bin: &Path, load: &str, seconds: f64) -> Result<f64> {
    let out = Command::new(bin)
        .args([load, &seconds.to_string()])
        .output()
        .context("running bench-load")?;
    if !out.status.success() {
        bail!(
            "bench-load {load} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("bench-load output")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the comm's closing parenthesis; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub struct Running {
    child: Child,
    stats: Option<PathBuf>,
    _dir: Option<PathBuf>,
}

pub fn start_sonde(dir: &Path) -> Result<Running> {
    start_sonde_binary(&agent_binary(true), dir)
}

/// [`start_sonde`] with another build of the agent.
fn start_sonde_binary(binary: &Path, dir: &Path) -> Result<Running> {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stats = dir.join("stats.json");
    let child = Command::new(binary)
        .args([
            "run",
            "--output",
            "json",
            "--log-level",
            "warn",
            // Metrics on (the default), on a free port so a running agent does not collide.
            "--metrics-listen",
            "127.0.0.1:0",
            // Idle, the API costs nothing; off, it cannot collide with an agent already running.
            "--api-listen",
            "off",
            "--stats-file",
        ])
        .arg(&stats)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting sonde")?;
    let mut running = Running {
        child,
        stats: Some(stats),
        _dir: None,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    loop {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
        {
            return Ok(running);
        }
        if running.child.try_wait()?.is_some() || Instant::now() > deadline {
            let _ = running.child.kill();
            bail!("sonde did not become ready");
        }
    }
}

fn start_peer(w: &Workload, args: &[&str]) -> Result<Running> {
    let child = Command::new(peer_path(w.peer)?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", w.peer))?;
    // The peers print no readiness signal; their load and attach take about a second.
    std::thread::sleep(Duration::from_secs(3));
    Ok(Running {
        child,
        stats: None,
        _dir: None,
    })
}

/// Stops a Sonde run (SIGINT) and returns its `--stats-file` JSON.
pub fn stop_sonde_stats(mut r: Running) -> Result<serde_json::Value> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
    let status = r.child.wait()?;
    if !status.success() {
        bail!("sonde exited with {status}");
    }
    let Some(stats) = r.stats else {
        bail!("not a sonde run");
    };
    Ok(serde_json::from_slice(&std::fs::read(&stats)?)?)
}

fn stop(mut r: Running) -> Result<Option<SondeRun>> {
    let pid = r.child.id();
    let peak = peak_rss_kib(pid);
    if r.stats.is_none() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        r.child.wait()?;
        return Ok(None);
    }
    let json = stop_sonde_stats(r)?;
    let events = json["events"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    Ok(Some(SondeRun {
        lost: json["lost"].as_u64().unwrap_or(u64::MAX),
        events,
        cpu_s: 0.0,
        peak_rss_kib: peak,
    }))
}

pub fn run(rounds: usize, seconds: f64, only: Option<&str>) -> Result<()> {
    status(
        cargo()?.args([
            "build",
            "--release",
            "-p",
            "sonde-tests",
            "--bin",
            "bench-load",
        ]),
        "building bench-load",
    )?;
    let load_bin = target_dir().join("release/bench-load");
    let dir = std::env::temp_dir().join(format!("sonde-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    println!("sonde bench: {rounds} rounds x {seconds} s per configuration, 2 cores\n");
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let static_binary = if wanted("image") {
        Some(crate::package::static_binary()?.0)
    } else {
        None
    };
    for w in WORKLOADS.iter().filter(|w| wanted(w.key)) {
        let mut rates: [Vec<f64>; 3] = Default::default();
        let mut ratio_sonde = Vec::new();
        let mut ratio_peer = Vec::new();
        let mut sonde_runs = Vec::new();
        let mut peer_runs = Vec::new();
        for round in 0..rounds {
            // Rotate the order each round so drift does not favour one configuration.
            let mut order = [Tracer::None, Tracer::Sonde, Tracer::Peer];
            order.rotate_left(round % 3);
            let mut round_rates = [0.0f64; 3];
            for tracer in order {
                let running = match tracer {
                    Tracer::None => None,
                    Tracer::Sonde => Some(start_sonde(&dir)?),
                    Tracer::Peer => Some(match (w.kind, &static_binary) {
                        (PeerKind::Tool(args), _) => start_peer(w, args)?,
                        (PeerKind::StaticSonde, Some(bin)) => start_sonde_binary(bin, &dir)?,
                        (PeerKind::StaticSonde, None) => bail!("the static build was not made"),
                    }),
                };
                let cpu_before = running.as_ref().map(|r| cpu_seconds(r.child.id()));
                let rate = run_load(&load_bin, w.load, seconds)?;
                let cpu_after = running.as_ref().map(|r| cpu_seconds(r.child.id()));
                if let Some(r) = running
                    && let Some(mut s) = stop(r)?
                {
                    s.cpu_s = cpu_after.unwrap_or(0.0) - cpu_before.unwrap_or(0.0);
                    if tracer == Tracer::Peer {
                        peer_runs.push(s);
                    } else {
                        sonde_runs.push(s);
                    }
                }
                let i = tracer as usize;
                round_rates[i] = rate;
                rates[i].push(rate);
            }
            ratio_sonde.push(round_rates[1] / round_rates[0]);
            ratio_peer.push(round_rates[2] / round_rates[0]);
            eprintln!(
                "  {} round {}: none {:.0}/s, sonde {:.0}/s, {} {:.0}/s",
                w.load,
                round + 1,
                round_rates[0],
                round_rates[1],
                w.peer,
                round_rates[2]
            );
        }
        println!("{}", w.name);
        println!(
            "  throughput (median ops/s): none {:.0}, sonde {:.0}, {} {:.0}",
            median(&mut rates[0]),
            median(&mut rates[1]),
            w.peer,
            median(&mut rates[2])
        );
        println!(
            "  traced/untraced (median of rounds): sonde {:.3} (cost {:.1}%), {} {:.3} (cost {:.1}%)",
            median(&mut ratio_sonde.clone()),
            (1.0 - median(&mut ratio_sonde)) * 100.0,
            w.peer,
            median(&mut ratio_peer.clone()),
            (1.0 - median(&mut ratio_peer)) * 100.0
        );
        for (label, runs) in [("sonde", &sonde_runs), (w.peer, &peer_runs)] {
            if runs.is_empty() {
                continue;
            }
            let lost: u64 = runs.iter().map(|s| s.lost).sum();
            let events: u64 = runs.iter().map(|s| s.events).sum();
            let mut cpu: Vec<f64> = runs.iter().map(|s| s.cpu_s / seconds).collect();
            let rss = runs.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
            println!(
                "  {label}: {events} events, {lost} lost, CPU {:.1}% of one core (median), peak RSS {:.1} MiB",
                median(&mut cpu) * 100.0,
                rss as f64 / 1024.0
            );
        }
        println!();
    }
    let result = (|| {
        if wanted("bootstrap") {
            crate::bench_bootstrap::run(&load_bin, &dir, rounds)?;
        }
        if wanted("metadata") {
            crate::bench_metadata::run()?;
        }
        if wanted("leader") {
            crate::bench_metadata::run_leader()?;
        }
        if wanted("micro") {
            crate::bench_micro::run()?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
