//! /metrics scrape cost with 1,000 containers' series: each container has run programs (exec,
//! exits ok and by signal), made outbound connections to one remote and accepted inbound ones,
//! with a refused connection among them — 1 workload + 2 connection keys + 1 failure reason
//! each. Run by `cargo xtask bench`; prints the median and p90 time per scrape (target ≤ 20 ms)
//! and the extra resident memory of the series and of a scrape (target ≤ 5 MiB).

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::Instant,
};

use sonde::{
    enrich::Attribution,
    event::{ConnEvent, ConnPhase, Event},
    export::metrics::{Metrics, MetricsConfig, health::SelfUsage, http, stream},
    node::{cgroup::CgroupInfo, cgroup_path},
};
use sonde_common::record::{ConnRecord, ExecRecord, ExitRecord, conn_flags, direction};

const CONTAINERS: u64 = 1_000;
const SCRAPES: usize = 30;

fn rss() -> u64 {
    SelfUsage::read().map_or(0, |u| u.resident_bytes)
}

/// CPU time of this thread, in ms: unlike wall time, not inflated by other load on the machine.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let rss_start = rss() as i64;
    let metrics = Metrics::new(&MetricsConfig {
        // Remotes named by address, as with an allow-list: the label values are distinct.
        remote_ip_allowlist: vec!["10.0.0.0/8".parse().expect("cidr")],
        ..MetricsConfig::default()
    });
    let mut acc = metrics.accumulator();
    // SAFETY: all-zero is a valid value of these plain-data records.
    let (exec, mut exit, mut conn): (ExecRecord, ExitRecord, ConnRecord) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
    conn.family = sonde_common::AF_INET;
    conn.flags = conn_flags::OWNER_KNOWN;
    conn.opened_ns = 1_000_000;
    conn.established_ns = 1_250_000;
    conn.bytes_sent = 1_000;
    conn.bytes_received = 10_000;
    conn.srtt_us = 80;
    let started = Instant::now();
    // 2 x 5 opens and closes, a failure, an exec and two exits per container.
    let events = CONTAINERS * 24;
    for c in 0..CONTAINERS {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08}_0000_0000_0000_000000000000.slice/cri-containerd-{c:064x}.scope"
        );
        let attr = Attribution {
            cgroup: Some(Arc::new(CgroupInfo {
                id: 1_000_000 + c,
                identity: cgroup_path::parse(&path),
                path: path.into(),
            })),
            ..Attribution::default()
        };
        let remote = 10 + (c % 200) as u8;
        for (dir, addr) in [
            (direction::OUTBOUND, [10, 1, remote, 1]),
            (direction::INBOUND, [10, 2, remote, 2]),
        ] {
            conn.direction = dir;
            conn.daddr[..4].copy_from_slice(&addr);
            conn.error = 0;
            for _ in 0..5 {
                for phase in [ConnPhase::Open, ConnPhase::Close] {
                    acc.record(
                        &Event::Conn(ConnEvent {
                            phase,
                            record: &conn,
                        }),
                        &attr,
                    );
                }
            }
        }
        conn.direction = direction::OUTBOUND;
        conn.daddr[..4].copy_from_slice(&[10, 1, remote, 1]);
        conn.error = libc::ECONNREFUSED;
        acc.record(
            &Event::Conn(ConnEvent {
                phase: ConnPhase::Fail,
                record: &conn,
            }),
            &attr,
        );
        acc.record(&Event::Exec(&exec), &attr);
        exit.exit_code = 0;
        acc.record(&Event::Exit(&exit), &attr);
        exit.exit_code = 9;
        acc.record(&Event::Exit(&exit), &attr);
        if c % 100 == 99 {
            acc.publish();
        }
    }
    acc.publish();
    let fill = started.elapsed();
    // Steady state: the same containers' connections again, published every 512 events (a
    // drain batch), as the pipeline does.
    let attrs: Vec<Attribution> = (0..CONTAINERS)
        .map(|c| {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{c:08}_0000_0000_0000_000000000000.slice/cri-containerd-{c:064x}.scope"
            );
            Attribution {
                cgroup: Some(Arc::new(CgroupInfo {
                    id: 1_000_000 + c,
                    identity: cgroup_path::parse(&path),
                    path: path.into(),
                })),
                ..Attribution::default()
            }
        })
        .collect();
    conn.error = 0;
    conn.direction = direction::OUTBOUND;
    let steady_events = 200_000u64;
    let started = Instant::now();
    let cpu_started = thread_cpu_ms();
    for i in 0..steady_events {
        let c = (i * 7919) % CONTAINERS;
        conn.daddr[..4].copy_from_slice(&[10, 1, 10 + (c % 200) as u8, 1]);
        acc.record(
            &Event::Conn(ConnEvent {
                phase: ConnPhase::Close,
                record: &conn,
            }),
            &attrs[c as usize],
        );
        if i % 512 == 511 {
            acc.publish();
        }
    }
    acc.publish();
    let steady = started.elapsed();
    let steady_cpu_ms = thread_cpu_ms() - cpu_started;
    let rss_series = rss() as i64;
    let registry = Arc::new(metrics.prometheus_registry());
    // As served: streamed in chunks (the consumer here drops them).
    let mut times = Vec::with_capacity(SCRAPES);
    let mut cpu = Vec::with_capacity(SCRAPES);
    let mut size = 0;
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let cpu_started = thread_cpu_ms();
        let mut bytes = 0;
        stream::encode_chunked(&registry, |chunk| {
            bytes += chunk.len();
            Ok(())
        })
        .expect("encodes");
        times.push(started.elapsed().as_secs_f64() * 1e3);
        cpu.push(thread_cpu_ms() - cpu_started);
        size = bytes;
    }
    let rss_after = rss() as i64;
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    // End to end: GET /metrics from the real endpoint over loopback.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(http::bind("127.0.0.1:0".parse().expect("addr")))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = {
        let _entered = runtime.enter();
        http::spawn(
            listener,
            http::server_options(sonde::http::server::DEFAULT_HEADER_TIMEOUT),
            Arc::clone(&registry),
            Arc::default(),
        )
    };
    let rss_serving = rss() as i64;
    let mut http_times = Vec::with_capacity(SCRAPES);
    // The client reads into a fixed buffer: the RSS measured is the agent side's.
    let mut buf = vec![0u8; 256 << 10];
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut total = 0;
        let mut first = true;
        loop {
            let n = s.read(&mut buf).expect("response");
            if n == 0 {
                break;
            }
            if first {
                assert!(buf.starts_with(b"HTTP/1.0 200"), "scrape failed");
                first = false;
            }
            total += n;
        }
        assert!(total > size, "short response: {total} bytes");
        http_times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let rss_http = rss() as i64;
    http_times.sort_by(f64::total_cmp);
    let lines = {
        let text = metrics.encode().expect("encodes");
        text.lines().filter(|l| !l.starts_with('#')).count()
    };
    println!(
        "metrics scrape: {CONTAINERS} containers, {} label sets, {lines} samples, {:.1} MiB \
         exposition",
        metrics.registry.series(),
        size as f64 / (1 << 20) as f64
    );
    println!(
        "metrics scrape: encode median {:.2} ms (p90 {:.2} ms), {:.2} ms of CPU; GET /metrics \
         over loopback median {:.2} ms (p90 {:.2} ms) (target <= 20 ms)",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        cpu[cpu.len() / 2],
        http_times[http_times.len() / 2],
        http_times[http_times.len() * 9 / 10],
    );
    println!(
        "metrics scrape: first {events} events of {CONTAINERS} containers (creating every \
         series) {:.0} ns/event; steady state {:.0} ns/event counted and published (per 512), \
         {:.0} ns/event of CPU",
        fill.as_secs_f64() * 1e9 / events as f64,
        steady.as_secs_f64() * 1e9 / steady_events as f64,
        steady_cpu_ms * 1e6 / steady_events as f64
    );
    println!(
        "metrics scrape: extra RSS {:.2} MiB for the series, {:.2} MiB after {SCRAPES} encodes, \
         +{:.2} MiB more after {SCRAPES} HTTP scrapes (target <= 5 MiB in all)",
        mib(rss_series - rss_start),
        mib(rss_after - rss_start),
        mib(rss_http - rss_serving)
    );
}
