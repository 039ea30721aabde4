//! Start-up and deployment: processes started while Sonde starts are reported exactly once;
//! run like a DaemonSet (own pid and mount namespaces, the host's /proc and /sys under a host
//! root) it still reports host pids and finds the host's processes; the summary view shows each
//! container with its processes.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use sonde_tests::{
    agent::{Agent, NotifySocket, SONDE_RUN_ARGS, sonde_bin, sonde_run},
    cgroup::{remove_everywhere, v2_root},
    poll::poll_until,
    runc::{Bundle, container_id, unique_id},
};

/// How many of the storm's processes or connections exist before the agent starts.
const BEFORE: usize = 20;

/// Waits until the storm has made [`BEFORE`] of its processes or connections.
fn wait_storm<T>(made: &Mutex<Vec<T>>) {
    poll_until(
        format!("{BEFORE} made before the agent starts"),
        Duration::from_secs(10),
        || match made.lock().expect("lock").len() {
            n if n >= BEFORE => Ok(()),
            n => Err(n),
        },
    );
}

/// Starts the agent during a storm, and returns once its start-up scan is merged and at least
/// `after` more of the storm came since (so the storm straddles the whole start-up).
fn start_during<T>(made: &Mutex<Vec<T>>, after: usize) -> Agent {
    wait_storm(made);
    let agent = Agent::start(&[]);
    agent.wait_log_line("start-up scan merged", Duration::from_secs(15));
    let merged = made.lock().expect("lock").len();
    poll_until(
        format!("{after} more made after the scan merged"),
        Duration::from_secs(10),
        || match made.lock().expect("lock").len() - merged {
            n if n >= after => Ok(()),
            n => Err(n),
        },
    );
    agent
}

fn kill_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn processes_started_during_startup_appear_exactly_once() {
    sonde_tests::require_root();
    // Long-lived processes started before, during and after the agent's start-up (probes
    // attached, /proc scanned, scan merged): each must show up once, as found or as forked.
    let stop = Arc::new(AtomicBool::new(false));
    let children = Arc::new(Mutex::new(Vec::<Child>::new()));
    let spawner = {
        let (stop, children) = (Arc::clone(&stop), Arc::clone(&children));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let child = Command::new("/bin/sleep")
                    .arg("30")
                    .spawn()
                    .expect("spawn sleep");
                children.lock().expect("lock").push(child);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // The scan finishes and merges while processes keep coming.
    let agent = start_during(&children, BEFORE);
    stop.store(true, Ordering::Relaxed);
    spawner.join().expect("spawner");
    let pids: Vec<u64> = children
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.id() as u64)
        .collect();
    // Every process is reported (found, forked or exec'd) before the agent stops.
    let seen = |ev: &[Value], pid: u64| {
        ev.iter().any(|e| {
            e["pid"] == pid
                && (e["type"] == "process_found"
                    || e["type"] == "process_fork"
                    || e["type"] == "process_exec")
        })
    };
    agent.wait_for(
        "every process of the storm",
        Duration::from_secs(15),
        |ev| pids.iter().all(|&p| seen(ev, p)),
    );
    let stopped = agent.stop();
    let mut children = std::mem::take(&mut *children.lock().expect("lock"));
    kill_all(&mut children);
    stopped.assert_nothing_lost();

    let count = |ty: &str, pid: u64| {
        stopped
            .events
            .iter()
            .filter(|e| e["type"] == ty && e["pid"] == pid)
            .count()
    };
    let (mut found, mut forked) = (0, 0);
    for &pid in &pids {
        let (f, k) = (count("process_found", pid), count("process_fork", pid));
        // Forked before the probes were attached but exec'd after: the kernel's exec record
        // introduced it, and the scan's copy is merged into it, not reported again.
        let exec_only = f + k == 0 && count("process_exec", pid) == 1;
        assert!(
            f + k == 1 || exec_only,
            "pid {pid}: found {f} times, forked {k} times, exec {} times",
            count("process_exec", pid)
        );
        found += f;
        forked += k;
    }
    // The storm really did straddle the start-up.
    assert!(found > 0 && forked > 0, "found {found}, forked {forked}");
}

#[test]
fn connections_opened_during_startup_appear_exactly_once() {
    sonde_tests::require_root();
    // Connections opened (and held) before, during and after the start-up scan: each must be
    // reported open once — by the kernel, or by the scan if it predates the probes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Mutex::new(Vec::new()));
    // Accepts for the rest of the test process (detached), keeping the server ends open.
    std::thread::spawn(move || {
        let accepted: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(accepted);
    });
    let connector = {
        let (stop, held) = (Arc::clone(&stop), Arc::clone(&held));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                held.lock().expect("lock").push(s);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let agent = start_during(&held, BEFORE);
    stop.store(true, Ordering::Relaxed);
    connector.join().expect("connector");
    let clients: Vec<u16> = held
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.local_addr().expect("local").port())
        .collect();
    // Every connection is reported open before the agent stops.
    let opened = |ev: &[Value], cport: u16| {
        ev.iter().any(|e| {
            e["type"] == "tcp_open" && e["local_port"] == cport && e["remote_port"] == port
        })
    };
    agent.wait_for(
        "every connection of the storm",
        Duration::from_secs(15),
        |ev| clients.iter().all(|&c| opened(ev, c)),
    );
    let stopped = agent.stop();
    drop(held);
    stopped.assert_nothing_lost();

    let (mut found, mut live) = (0, 0);
    for cport in &clients {
        let opens: Vec<&Value> = stopped
            .events
            .iter()
            .filter(|e| {
                e["type"] == "tcp_open" && e["local_port"] == *cport && e["remote_port"] == port
            })
            .collect();
        assert_eq!(opens.len(), 1, "client port {cport}: {opens:#?}");
        if opens[0]["found_at_start"] == true {
            found += 1;
        } else {
            live += 1;
        }
    }
    assert!(found > 0 && live > 0, "found {found}, live {live}");
}

#[test]
fn in_its_own_pid_namespace_with_a_host_root_it_reports_host_pids() {
    sonde_tests::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("proc")).expect("mkdir");
    std::fs::create_dir_all(root.join("sys")).expect("mkdir");
    let stats = root.join("stats.json");
    let notify = NotifySocket::bind(root);
    let marker = Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("a host process to find");
    // Like a DaemonSet pod: private mounts with the host's /proc and /sys under the host root,
    // then a new pid namespace with its own /proc.
    let script = format!(
        "mount --rbind /proc {r}/proc && mount --rbind /sys {r}/sys && \
         exec unshare --pid --fork --mount-proc {bin} {SONDE_RUN_ARGS} --output json --duration 4s \
         --host-root {r} --stats-file {stats}",
        r = root.display(),
        bin = sonde_bin().display(),
        stats = stats.display(),
    );
    let mut agent = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &script,
        ])
        .env("NOTIFY_SOCKET", notify.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sonde in namespaces");
    // Run the workload once the agent says it captures (sd_notify READY=1), not after a guess.
    if let Err(status) = notify.wait_ready(&mut agent, String::new) {
        let out = agent.wait_with_output().expect("sonde");
        panic!(
            "sonde exited ({status}) before it was ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut workload = Command::new("/bin/true").spawn().expect("workload");
    assert!(workload.wait().expect("wait").success());
    let out = agent.wait_with_output().expect("sonde");
    let mut marker = marker;
    let _ = marker.kill();
    let _ = marker.wait();
    assert!(
        out.status.success(),
        "sonde failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let has = |ty: &str, pid: u64| events.iter().any(|e| e["type"] == ty && e["pid"] == pid);
    assert!(
        has("process_exec", workload.id() as u64),
        "exec of the workload under its host pid"
    );
    assert!(
        has("process_found", marker.id() as u64),
        "the host's processes found through the host root"
    );
    assert!(
        has("process_found", 1),
        "the host's init, pid 1 on the host"
    );
}

#[test]
fn summary_shows_each_container_with_its_processes() {
    let top = format!("sonde-test-{}", unique_id("summary"));
    let id = container_id();
    let path = format!("/{top}/system.slice/docker-{id}.scope");
    let bundle = Bundle::new(&["/bin/sh", "-c", "sleep 30 & sleep 30 & wait"], &path);
    let container = bundle.spawn(&unique_id("sum"));
    // The shell and its two sleeps are in the container's cgroup before the agent looks.
    let procs = v2_root().join(&path[1..]).join("cgroup.procs");
    poll_until(
        "the container's three processes",
        Duration::from_secs(10),
        || {
            let members = std::fs::read_to_string(&procs).unwrap_or_default();
            match members.lines().count() {
                3 => Ok(()),
                n => Err(n),
            }
        },
    );
    let out = sonde_run()
        .args(["--summary", "--duration", "3s"])
        .stderr(Stdio::null())
        .output()
        .expect("sonde --summary");
    drop(container);
    remove_everywhere(&format!("{top}/system.slice/x"), "");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let label = format!("docker:{}", &id[..12]);
    let row = text
        .lines()
        .rev()
        .find(|l| l.starts_with(&label))
        .unwrap_or_else(|| panic!("no row for {label} in:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // WORKLOAD POD PROCS ...: the shell and its two sleeps.
    assert_eq!(cols[1], "-", "{row}");
    assert_eq!(cols[2], "3", "{row}");
    assert!(text.contains("WORKLOAD"), "{text}");
}
