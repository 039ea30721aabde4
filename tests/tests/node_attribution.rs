//! Attribution: events from real runc containers placed at kubelet-, Docker- and Podman-shaped
//! cgroup paths carry the right runtime, container id and pod UID — including processes that
//! live under a millisecond and containers gone before anyone could look at their cgroup;
//! connections between containers are attributed on each side; processes and connections that
//! existed before Sonde started are found with their owners; host services are named by their
//! systemd unit.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    agent::Agent,
    cgroup::{remove_everywhere, v2_root},
    events::{str_of, u64_of},
    peer::read_port,
    runc::{Bundle, container_id, pod_uid, unique_id, wait_listening},
};

const PEER: &str = env!("CARGO_BIN_EXE_tcp-peer");

/// `tcp-peer accept-close`: accepts `n` connections and closes each at once.
fn accept_close_server(n: usize) -> (Child, u16) {
    let mut child = Command::new(PEER)
        .args(["accept-close", "127.0.0.1:0", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let port = read_port(&mut child);
    (child, port)
}

/// A free port below the ephemeral range, as servers use.
fn server_port() -> u16 {
    (0..200u16)
        .map(|i| 20_000 + (std::process::id() as u16 % 5_000) + i * 7)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000-26400")
}

/// Events whose cgroup is `path`.
fn in_cgroup<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["cgroup_path"].as_str() == Some(path))
        .collect()
}

struct Layout {
    name: &'static str,
    /// cgroupsPath relative to a per-test top directory.
    path: String,
    runtime: Option<&'static str>,
    id: String,
    pod: Option<String>,
    qos: Option<&'static str>,
}

fn layouts() -> Vec<Layout> {
    let mut out = Vec::new();
    let (id, pod) = (container_id(), pod_uid());
    out.push(Layout {
        name: "kubelet systemd driver, containerd",
        path: format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            pod.replace('-', "_")
        ),
        runtime: Some("containerd"),
        id,
        pod: Some(pod),
        qos: Some("Burstable"),
    });
    let (id, pod) = (container_id(), pod_uid());
    out.push(Layout {
        name: "kubelet cgroupfs driver",
        path: format!("kubepods/besteffort/pod{pod}/{id}"),
        // A bare id under /kubepods does not say which runtime made it.
        runtime: None,
        id,
        pod: Some(pod),
        qos: Some("BestEffort"),
    });
    let id = container_id();
    out.push(Layout {
        name: "Docker, systemd driver",
        path: format!("system.slice/docker-{id}.scope"),
        runtime: Some("docker"),
        id,
        pod: None,
        qos: None,
    });
    let id = container_id();
    out.push(Layout {
        name: "Podman",
        path: format!("machine.slice/libpod-{id}.scope"),
        runtime: Some("podman"),
        id,
        pod: None,
        qos: None,
    });
    out
}

#[test]
fn containers_at_kubelet_docker_and_podman_paths_are_attributed() {
    let top = format!("sonde-test-{}", unique_id("layouts"));
    let layouts = layouts();
    let (mut server, port) = accept_close_server(layouts.len());
    let agent = Agent::start(&[]);

    for layout in &layouts {
        // Five short execs, five forked subshells that live well under a millisecond, then a
        // connection made by a process that exits as soon as it is closed. runc creates the
        // cgroup and removes it when the container ends: Sonde learns it from the kernel.
        let script = format!(
            "for i in 1 2 3 4 5; do /bin/true; (exit 0); done; \
             nc 127.0.0.1 {port} </dev/null; exit 0"
        );
        let bundle = Bundle::new(
            &["/bin/sh", "-c", &script],
            &format!("/{top}/{}", layout.path),
        );
        let status = bundle.run(&unique_id("ctr"));
        assert!(
            status.success(),
            "{}: container failed: {status}",
            layout.name
        );
    }
    assert!(server.wait().expect("server").success());
    for layout in &layouts {
        let path = format!("/{top}/{}", layout.path);
        assert!(
            !v2_root().join(&path[1..]).exists(),
            "runc removed the container's cgroup"
        );
    }
    let paths: Vec<String> = layouts
        .iter()
        .map(|l| format!("/{top}/{}", l.path))
        .collect();
    agent.wait_for(
        "a closed nc connection in every layout",
        Duration::from_secs(10),
        |ev| {
            paths.iter().all(|p| {
                in_cgroup(ev, p)
                    .iter()
                    .any(|e| e["type"] == "tcp_close" && e["comm"] == "nc")
            })
        },
    );
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    remove_everywhere(
        &format!("{top}/kubepods.slice/kubepods-burstable.slice/x"),
        "",
    );
    remove_everywhere(&format!("{top}/kubepods/besteffort/x"), "");
    remove_everywhere(&format!("{top}/system.slice/x"), "");
    remove_everywhere(&format!("{top}/machine.slice/x"), "");

    for layout in &layouts {
        let path = format!("/{top}/{}", layout.path);
        let mine = in_cgroup(&stopped.events, &path);
        let check = |e: &Value| {
            assert_eq!(
                e["container_id"],
                layout.id.as_str(),
                "{}: {e}",
                layout.name
            );
            assert_eq!(
                e["runtime"].as_str(),
                layout.runtime,
                "{}: {e}",
                layout.name
            );
            assert_eq!(
                e["pod_uid"].as_str(),
                layout.pod.as_deref(),
                "{}: {e}",
                layout.name
            );
            assert_eq!(e["qos"].as_str(), layout.qos, "{}: {e}", layout.name);
            assert!(e["systemd_unit"].is_null(), "{}: {e}", layout.name);
        };
        let trues: Vec<&&Value> = mine
            .iter()
            .filter(|e| e["type"] == "process_exec" && e["filename"] == "/bin/true")
            .collect();
        assert_eq!(
            trues.len(),
            5,
            "{}: exec of /bin/true: {mine:#?}",
            layout.name
        );
        trues.iter().for_each(|e| check(e));
        let true_exits = mine
            .iter()
            .filter(|e| e["type"] == "process_exit" && e["comm"] == "true")
            .count();
        assert_eq!(true_exits, 5, "{}: {mine:#?}", layout.name);
        let lifetimes: Vec<u64> = mine
            .iter()
            .filter(|e| e["type"] == "process_exit")
            .map(|e| u64_of(e, "lifetime_ns"))
            .collect();
        assert!(
            lifetimes.iter().any(|&ns| ns < 1_000_000),
            "{}: no process under 1 ms: {lifetimes:?}",
            layout.name
        );
        for ty in ["tcp_open", "tcp_close"] {
            let conns: Vec<&&Value> = mine
                .iter()
                .filter(|e| e["type"] == ty && e["remote_port"] == port)
                .collect();
            assert_eq!(conns.len(), 1, "{}: {ty}: {mine:#?}", layout.name);
            check(conns[0]);
            assert_eq!(str_of(conns[0], "comm"), "nc");
            assert_eq!(str_of(conns[0], "direction"), "outbound");
        }
        // Every event from the container is attributed.
        mine.iter().for_each(|e| check(e));
    }
}

#[test]
fn a_connection_between_two_containers_is_attributed_on_each_side() {
    let top = format!("sonde-test-{}", unique_id("pair"));
    let (server_id, client_id) = (container_id(), container_id());
    let server_path = format!("/{top}/system.slice/docker-{server_id}.scope");
    let client_path = format!("/{top}/system.slice/docker-{client_id}.scope");
    let port = server_port();
    let agent = Agent::start(&[]);
    let server = Bundle::new(&["/bin/nc", "-l", "-p", &port.to_string()], &server_path);
    let server = server.spawn(&unique_id("srv"));
    wait_listening(port);
    let script = format!("echo hello | nc 127.0.0.1 {port}");
    let client = Bundle::new(&["/bin/sh", "-c", &script], &client_path);
    let client = client.spawn(&unique_id("cli"));

    let events = agent.wait_for(
        "the connection open on both sides",
        Duration::from_secs(10),
        |ev| {
            let opens = |path: &str| in_cgroup(ev, path).iter().any(|e| e["type"] == "tcp_open");
            opens(&server_path) && opens(&client_path)
        },
    );
    drop(client);
    drop(server);
    let stopped = agent.stop();
    remove_everywhere(&format!("{top}/system.slice/x"), "");
    let _ = events;

    let open_in = |path: &str| -> Value {
        let opens: Vec<&Value> = in_cgroup(&stopped.events, path)
            .into_iter()
            .filter(|e| e["type"] == "tcp_open")
            .collect();
        assert_eq!(opens.len(), 1, "{path}: {:#?}", stopped.events);
        opens[0].clone()
    };
    let inbound = open_in(&server_path);
    let outbound = open_in(&client_path);
    assert_eq!(str_of(&inbound, "direction"), "inbound");
    assert_eq!(str_of(&inbound, "comm"), "nc");
    assert_eq!(inbound["container_id"], server_id.as_str());
    assert_eq!(inbound["runtime"], "docker");
    assert_eq!(u64_of(&inbound, "local_port"), port as u64);
    assert_eq!(str_of(&outbound, "direction"), "outbound");
    assert_eq!(str_of(&outbound, "comm"), "nc");
    assert_eq!(outbound["container_id"], client_id.as_str());
    assert_eq!(u64_of(&outbound, "remote_port"), port as u64);
    // The two records are the two ends of one connection.
    assert_eq!(outbound["local_port"], inbound["remote_port"]);
}

#[test]
fn processes_and_connections_that_predate_sonde_are_found_with_their_owners() {
    let top = format!("sonde-test-{}", unique_id("before"));
    let (id, pod) = (container_id(), pod_uid());
    let path = format!(
        "/{top}/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
        pod.replace('-', "_")
    );
    let port = server_port();
    let script = format!("sleep 60 & exec nc -l -p {port}");
    let bundle = Bundle::new(&["/bin/sh", "-c", &script], &path);
    let container = bundle.spawn(&unique_id("old"));
    wait_listening(port);
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the container");
    let client_port = stream.local_addr().expect("local").port() as u64;

    // Everything above exists before the agent starts.
    let agent = Agent::start(&[]);
    let events = agent.wait_for(
        "the container's connection found at start",
        Duration::from_secs(15),
        |ev| {
            in_cgroup(ev, &path)
                .iter()
                .any(|e| e["type"] == "tcp_open" && e["found_at_start"] == true)
        },
    );
    let found = in_cgroup(&events, &path);
    let procs: Vec<&str> = found
        .iter()
        .filter(|e| e["type"] == "process_found")
        .map(|e| str_of(e, "comm"))
        .collect();
    assert!(
        procs.contains(&"sleep") && procs.contains(&"nc"),
        "{found:#?}"
    );
    for e in &found {
        assert_eq!(e["container_id"], id.as_str(), "{e}");
        assert_eq!(e["pod_uid"], pod.as_str(), "{e}");
        assert_eq!(e["qos"], "Guaranteed", "{e}");
    }
    let inbound: Vec<&&Value> = found
        .iter()
        .filter(|e| e["type"] == "tcp_open" && e["local_port"] == port)
        .collect();
    assert_eq!(inbound.len(), 1, "{found:#?}");
    assert_eq!(inbound[0]["found_at_start"], true);
    assert_eq!(inbound[0]["direction"], "inbound");
    assert_eq!(inbound[0]["comm"], "nc");
    assert_eq!(inbound[0]["remote_port"], client_port);
    // The test's own end of it: found too, owned by this process.
    let me = std::process::id() as u64;
    let outbound: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"] == "tcp_open" && e["found_at_start"] == true && e["local_port"] == client_port
        })
        .collect();
    assert_eq!(outbound.len(), 1, "{events:#?}");
    assert_eq!(outbound[0]["pid"], me);
    assert_eq!(outbound[0]["direction"], "outbound");

    // Closing it now: the kernel never saw it open, the scan names the owner.
    drop(stream);
    agent.wait_for(
        "the close of the found connection",
        Duration::from_secs(10),
        |ev| {
            in_cgroup(ev, &path)
                .iter()
                .any(|e| e["type"] == "tcp_close")
        },
    );
    let stopped = agent.stop();
    drop(container);
    remove_everywhere(&format!("{top}/kubepods.slice/x"), "");
    let closes: Vec<&Value> = in_cgroup(&stopped.events, &path)
        .into_iter()
        .filter(|e| e["type"] == "tcp_close")
        .collect();
    assert_eq!(closes.len(), 1, "{closes:#?}");
    let close = closes[0];
    assert_eq!(close["seen_open"], false);
    assert_eq!(close["found_at_start"], true);
    assert_eq!(close["comm"], "nc");
    assert_eq!(close["conn_id"], inbound[0]["conn_id"]);
    assert_eq!(close["container_id"], id.as_str());
}

#[test]
fn a_process_in_a_systemd_like_unit_is_attributed_to_the_unit() {
    let unit = format!("{}.service", unique_id("sonde-test-unit"));
    let rel = format!("system.slice/{unit}");
    let dir = v2_root().join(&rel);
    std::fs::create_dir_all(&dir).expect("create the unit's cgroup (tests run as root)");
    let agent = Agent::start(&[]);
    let procs = dir.join("cgroup.procs");
    let script = format!("echo $$ > {} && exec /bin/true", procs.display());
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .expect("spawn");
    assert!(child.wait().expect("wait").success());
    let pid = child.id() as u64;
    agent.wait_for(
        "the exit of the unit's process",
        Duration::from_secs(10),
        |ev| {
            ev.iter()
                .any(|e| e["type"] == "process_exit" && e["pid"] == pid)
        },
    );
    let stopped = agent.stop();
    let _ = std::fs::remove_dir(&dir);
    let exec: Vec<&Value> = stopped
        .events
        .iter()
        .filter(|e| e["type"] == "process_exec" && e["pid"] == pid && e["filename"] == "/bin/true")
        .collect();
    assert_eq!(exec.len(), 1, "{:#?}", stopped.events);
    let e = exec[0];
    assert_eq!(e["systemd_unit"], unit.as_str(), "{e}");
    assert_eq!(e["systemd_slice"], "system.slice", "{e}");
    assert_eq!(e["cgroup_path"], format!("/{rel}").as_str(), "{e}");
    assert!(e["container_id"].is_null(), "{e}");
}
