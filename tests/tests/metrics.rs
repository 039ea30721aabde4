//! /metrics against the real agent and kernel: exact per-workload TCP and process counts for
//! processes placed in Docker-shaped test cgroups, every documented family with its documented
//! labels, `promtool check metrics`, a real Prometheus server scraping the agent and answering
//! PromQL, the series cap, and a clear bind error.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sonde_tests::{
    agent::{Agent, sonde_bin},
    cgroup::TestCgroup,
    metrics::{
        Exposition, PrometheusServer, WORKLOAD_LABELS, documented_families, promtool_check, scrape,
    },
    peer::read_port,
    poll::{Shown, poll_until},
    runc::{container_id, unique_id},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcp-peer");

/// A Docker-shaped cgroup (`/<top>/system.slice/docker-<id>.scope`) and its container id.
fn docker_cgroup(top: &str) -> (TestCgroup, String) {
    let id = container_id();
    let cg = TestCgroup::create(&format!("{top}/system.slice/docker-{id}.scope"));
    (cg, id)
}

/// Spawns `tcp-peer args` inside `cgroup`: the child moves itself there before exec, so its
/// exec, connections and exit are all the cgroup's.
fn peer_in(cgroup: &TestCgroup, args: &[&str]) -> Child {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.dir.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("open {}/cgroup.procs: {e}", cgroup.dir.display()));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
    let mut cmd = Command::new(PEER);
    cmd.args(args).stdout(Stdio::piped());
    // SAFETY: only write(2) on an already-open fd runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn tcp-peer");
    drop(procs);
    child
}

struct Exchange {
    client: String,
    server: String,
    conns: u64,
    sent: u64,
    received: u64,
    _cgroups: Vec<TestCgroup>,
}

/// `conns` loopback connections from a client container to a server container, the client
/// sending `sent` bytes and receiving `received` bytes on each; both processes have exited.
fn exchange(top: &str, conns: u64, sent: u64, received: u64) -> Exchange {
    let (server_cg, server) = docker_cgroup(top);
    let (client_cg, client) = docker_cgroup(top);
    let (n, s, r) = (conns.to_string(), sent.to_string(), received.to_string());
    let mut srv = peer_in(&server_cg, &["server", "127.0.0.1:0", &n, &s, &r]);
    let port = read_port(&mut srv);
    let addr = format!("127.0.0.1:{port}");
    let status = peer_in(&client_cg, &["client", &addr, &n, &s, &r])
        .wait()
        .expect("client");
    assert!(status.success(), "client failed: {status}");
    assert!(srv.wait().expect("server").success(), "server failed");
    Exchange {
        client,
        server,
        conns,
        sent,
        received,
        _cgroups: vec![client_cg, server_cg],
    }
}

/// Scrapes until `done` holds, returning that exposition; fails the test, showing the last
/// one, when 15 s pass first.
#[track_caller]
fn scrape_until(
    agent: &mut Agent,
    what: &str,
    done: impl Fn(&Exposition) -> bool,
) -> (String, Exposition) {
    let addr = agent.metrics_addr();
    poll_until(what, Duration::from_secs(15), || {
        let text = scrape(addr);
        let exp = Exposition::parse(&text);
        if done(&exp) {
            Ok((text, exp))
        } else {
            Err(Shown(text))
        }
    })
}

/// Starts the agent and waits until its start-up scan is merged (`process_found` events
/// counted): a connection opening while the scan runs could otherwise be seen twice, by the
/// kernel and by the scan.
fn start_agent(extra: &[&str]) -> Agent {
    let mut agent = Agent::start(extra);
    let (text, exp) = scrape_until(&mut agent, "the start-up scan merged", |exp| {
        exp.value_or_zero("sonde_events_total", &[("type", "process_found")]) > 0.0
    });
    assert!(
        exp.value_or_zero("sonde_events_total", &[("type", "process_found")]) > 0.0,
        "the start-up scan was not merged within 15 s:\n{text}"
    );
    agent
}

fn opened(exp: &Exposition, container: &str, direction: &str) -> f64 {
    exp.value_or_zero(
        "sonde_tcp_connections_opened_total",
        &[("container_id", container), ("direction", direction)],
    )
}

fn closed(exp: &Exposition, container: &str, direction: &str) -> f64 {
    exp.value_or_zero(
        "sonde_tcp_connections_closed_total",
        &[("container_id", container), ("direction", direction)],
    )
}

#[test]
fn tcp_and_process_counters_of_a_workload_are_exact() {
    let top = format!("sonde-test-{}", unique_id("metrics-exact"));
    let mut agent = start_agent(&[]);
    let ex = exchange(&top, 7, 12_345, 54_321);
    let n = ex.conns as f64;
    let (text, exp) = scrape_until(&mut agent, "every connection closed, both sides", |exp| {
        closed(exp, &ex.client, "outbound") >= n && closed(exp, &ex.server, "inbound") >= n
    });
    let client = [
        ("container_id", ex.client.as_str()),
        ("runtime", "docker"),
        ("direction", "outbound"),
        ("remote", "unknown"),
    ];
    let server = [
        ("container_id", ex.server.as_str()),
        ("runtime", "docker"),
        ("direction", "inbound"),
        ("remote", "unknown"),
    ];
    for (labels, sent, received) in [
        (&client, ex.sent, ex.received),
        (&server, ex.received, ex.sent),
    ] {
        let v = |name: &str| exp.value(name, labels);
        assert_eq!(
            v("sonde_tcp_connections_opened_total"),
            n,
            "{labels:?}\n{text}"
        );
        assert_eq!(v("sonde_tcp_connections_closed_total"), n, "{labels:?}");
        assert_eq!(
            v("sonde_tcp_sent_bytes_total"),
            (ex.conns * sent) as f64,
            "{labels:?}"
        );
        assert_eq!(
            v("sonde_tcp_received_bytes_total"),
            (ex.conns * received) as f64,
            "{labels:?}"
        );
        assert_eq!(
            v("sonde_tcp_connect_duration_seconds_count"),
            n,
            "{labels:?}"
        );
        assert_eq!(v("sonde_tcp_rtt_seconds_count"), n, "{labels:?}");
        assert!(
            exp.find("sonde_tcp_connections_failed_total", labels)
                .is_empty(),
            "no failures: {labels:?}"
        );
        // Nothing in the other direction for either side.
    }
    assert_eq!(opened(&exp, &ex.client, "inbound"), 0.0);
    assert_eq!(opened(&exp, &ex.server, "outbound"), 0.0);
    // Each container ran one program (tcp-peer), which exited with 0.
    for id in [&ex.client, &ex.server] {
        let w = [("container_id", id.as_str())];
        assert_eq!(exp.value("sonde_process_starts_total", &w), 1.0, "{text}");
        let exits = |class| {
            exp.value(
                "sonde_process_exits_total",
                &[("container_id", id.as_str()), ("exit_class", class)],
            )
        };
        assert_eq!(
            (exits("ok"), exits("error"), exits("signal")),
            (1.0, 0.0, 0.0)
        );
    }
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool rejects the exposition: {e}"));
    agent.stop().assert_nothing_lost();
}

#[test]
fn refused_connections_count_as_failures_with_their_reason() {
    let top = format!("sonde-test-{}", unique_id("metrics-refused"));
    let mut agent = start_agent(&[]);
    let (cg, id) = docker_cgroup(&top);
    // A port nothing listens on.
    let port = sonde_tests::metrics::free_port();
    for _ in 0..3 {
        let status = peer_in(&cg, &["refused", &format!("127.0.0.1:{port}")])
            .wait()
            .expect("refused");
        assert!(status.success(), "the connection was not refused");
    }
    let labels = [
        ("container_id", id.as_str()),
        ("direction", "outbound"),
        ("reason", "refused"),
    ];
    let (text, exp) = scrape_until(&mut agent, "the three failed connects", |exp| {
        exp.value_or_zero("sonde_tcp_connections_failed_total", &labels) >= 3.0
    });
    assert_eq!(
        exp.value("sonde_tcp_connections_failed_total", &labels),
        3.0,
        "{text}"
    );
    assert_eq!(opened(&exp, &id, "outbound"), 0.0);
    agent.stop();
}

#[test]
fn every_documented_family_is_exposed_with_its_documented_labels() {
    let top = format!("sonde-test-{}", unique_id("metrics-docs"));
    let mut agent = start_agent(&[]);
    let ex = exchange(&top, 2, 100, 200);
    let (cg, refused_id) = docker_cgroup(&top);
    let port = sonde_tests::metrics::free_port();
    peer_in(&cg, &["refused", &format!("127.0.0.1:{port}")])
        .wait()
        .expect("refused");
    let (text, exp) = scrape_until(&mut agent, "the closes and the refused connect", |exp| {
        closed(exp, &ex.client, "outbound") >= 2.0
            && !exp
                .find(
                    "sonde_tcp_connections_failed_total",
                    &[("container_id", refused_id.as_str())],
                )
                .is_empty()
    });
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let families = documented_families(&doc);
    assert!(
        families.len() >= 25,
        "docs/metrics.md lists {} families",
        families.len()
    );
    for (name, ty, labels) in &families {
        if [
            "sonde_kubelet_",
            "sonde_apiserver_",
            "sonde_leader",
            "sonde_kube_events",
            "sonde_controlplane_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            // Only with a kubelet or apiserver source, or a leader election; this agent has
            // none (tests/tests/leader_agents.rs scrapes sonde_leader, kube_events.rs
            // sonde_kube_events_total, controlplane.rs sonde_controlplane_*).
            assert!(
                !exp.types.contains_key(name.as_str()),
                "{name} without a kubelet or apiserver source or an election"
            );
            continue;
        }
        // Counters are declared under their `_total` name by this encoder, histograms under
        // their base name; samples of histograms carry `_bucket`, `_sum`, `_count`.
        assert_eq!(
            exp.types.get(name.as_str()).map(String::as_str),
            Some(ty.as_str()),
            "family {name} ({ty}) in:\n{text}"
        );
        let samples: Vec<_> = exp
            .samples
            .iter()
            .filter(|s| {
                s.name == *name
                    || (ty == "histogram"
                        && [
                            format!("{name}_count"),
                            format!("{name}_sum"),
                            format!("{name}_bucket"),
                        ]
                        .contains(&s.name))
            })
            .collect();
        assert!(!samples.is_empty(), "no sample of {name}");
        for s in samples {
            let mut got: Vec<&str> = s
                .labels
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "le")
                .collect();
            got.sort();
            let mut want: Vec<&str> = labels.iter().map(String::as_str).collect();
            want.sort();
            assert_eq!(got, want, "labels of {s:?}");
        }
    }
    // And nothing undocumented.
    for name in exp.types.keys() {
        assert!(
            families.iter().any(|(f, _, _)| f == name),
            "{name} is exposed but not in docs/metrics.md"
        );
    }
    // Workload series carry the workload labels, in this order.
    let line = text
        .lines()
        .find(|l| l.starts_with("sonde_process_starts_total{"))
        .expect("a starts sample");
    let order: Vec<usize> = WORKLOAD_LABELS
        .iter()
        .map(|l| line.find(&format!("{l}=\"")).expect("label present"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{line}");
    promtool_check(&text).unwrap_or_else(|e| panic!("promtool rejects the exposition: {e}"));
    agent.stop();
}

#[test]
fn a_real_prometheus_scrapes_sonde_and_answers_promql() {
    let top = format!("sonde-test-{}", unique_id("metrics-prom"));
    let mut agent = start_agent(&[]);
    let ex = exchange(&top, 5, 1_000, 2_000);
    scrape_until(&mut agent, "the five connections closed", |exp| {
        closed(exp, &ex.client, "outbound") >= 5.0
    });
    let prometheus = PrometheusServer::start(&[agent.metrics_addr()]);
    let query = format!(
        "sum(sonde_tcp_connections_opened_total{{container_id=\"{}\"}})",
        ex.client
    );
    let bytes = format!(
        "sum by (direction) (sonde_tcp_received_bytes_total{{container_id=\"{}\"}})",
        ex.server
    );
    let result = poll_until(
        "prometheus to have scraped the connections",
        Duration::from_secs(60),
        || {
            let result = prometheus.query(&query);
            if result.is_empty() {
                Err(Shown(format!(
                    "{query} → nothing; targets: {}",
                    prometheus.targets()
                )))
            } else {
                Ok(result)
            }
        },
    );
    assert_eq!(
        result.len(),
        1,
        "{query} → {result:?}; targets: {}\n{}",
        prometheus.targets(),
        prometheus.log()
    );
    assert_eq!(result[0].1, 5.0, "{query}");
    let by_direction = prometheus.query(&bytes);
    assert_eq!(by_direction.len(), 1, "{bytes} → {by_direction:?}");
    assert_eq!(by_direction[0].0["direction"], "inbound");
    assert_eq!(by_direction[0].1, 5_000.0);
    // The scrape itself is healthy.
    let up = prometheus.query("up{job=\"sonde\"}");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "target down: {}", prometheus.targets());
    agent.stop();
}

#[test]
fn the_series_cap_refuses_new_workloads_and_counts_them() {
    let top = format!("sonde-test-{}", unique_id("metrics-cap"));
    let mut agent = start_agent(&["--metrics-max-series", "2"]);
    // Fill the registry with containers until it is full, then one more must be refused.
    let mut exchanges = Vec::new();
    let (text, exp) = loop {
        exchanges.push(exchange(&top, 1, 10, 10));
        let last = &exchanges[exchanges.len() - 1];
        let what = "the new container counted or refused";
        let (text, exp) = scrape_until(&mut agent, what, |exp| {
            exp.value("sonde_metrics_series_refused_total", &[]) > 0.0
                || closed(exp, &last.client, "outbound") >= 1.0
        });
        if exp.value("sonde_metrics_series_refused_total", &[]) > 0.0 || exchanges.len() >= 4 {
            break (text, exp);
        }
    };
    assert!(
        exp.value("sonde_metrics_series_refused_total", &[]) > 0.0,
        "nothing refused with max 2:\n{text}"
    );
    assert!(exp.value("sonde_metrics_series", &[]) <= 2.0);
    assert_eq!(exp.value("sonde_metrics_series_limit", &[]), 2.0);
    let workloads: std::collections::HashSet<&String> = exp
        .samples
        .iter()
        .filter(|s| s.name == "sonde_process_starts_total")
        .filter_map(|s| s.labels.get("container_id"))
        .collect();
    assert!(workloads.len() <= 2, "{workloads:?}");
    agent.stop();
}

#[test]
fn an_address_in_use_is_a_clear_error_before_anything_is_loaded() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(sonde_bin())
        .args(["run", "--duration", "2s", "--metrics-listen", &addr])
        .stdout(Stdio::null())
        .output()
        .expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains(&addr),
        "{stderr}"
    );
    assert!(
        stderr.contains("--metrics-listen off"),
        "names the fix: {stderr}"
    );
    assert!(!stderr.contains("capture running"), "{stderr}");
}

#[test]
fn metrics_listen_off_serves_nothing() {
    let agent = Agent::start(&["--metrics-listen", "off"]);
    let stopped = agent.stop();
    assert!(
        !stopped.stderr.contains("serving Prometheus metrics"),
        "{}",
        stopped.stderr
    );
}
