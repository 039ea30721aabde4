//! `GET /v1/status` and `sonde status` against the real agent: a runc container that receives
//! a connection is listed with its process count and exact bytes; `--output json` parses; no
//! agent gives a clear error.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    agent::{Agent, client_json, sonde_bin},
    api::{self, free_loopback_addr},
    cgroup::{remove_everywhere, v2_root},
    poll::{Shown, poll_until},
    runc::{Bundle, container_id, unique_id, wait_listening},
};

const SENT: usize = 10_000;

fn server_port() -> u16 {
    (0..200u16)
        .map(|i| 26_500 + (std::process::id() as u16 % 5_000) + i * 7)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port")
}

fn sonde_status(addr: &str, extra: &[&str]) -> std::process::Output {
    Command::new(sonde_bin())
        .args(["status", "--api", addr])
        .args(extra)
        .output()
        .expect("run sonde status")
}

fn workload<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["container_id"] == id)
}

#[test]
fn sonde_status_lists_the_container_with_its_processes_and_bytes() {
    let top = format!("sonde-test-{}", unique_id("status"));
    let id = container_id();
    let path = format!("/{top}/system.slice/docker-{id}.scope");
    let port = server_port();
    let agent = Agent::start_with_api(&[]);
    let addr = agent.api();
    let script = format!("sleep 60 & sleep 60 & nc -l -p {port} > /dev/null; exec sleep 60");
    let bundle = Bundle::new(&["/bin/sh", "-c", &script], &path);
    let container = bundle.spawn(&unique_id("st"));
    wait_listening(port);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(&[b'x'; SENT]).expect("send");
    drop(stream);

    // The container's processes, as the kernel sees them: its cgroup's member list.
    let procs_file = v2_root().join(&path[1..]).join("cgroup.procs");
    let members = || {
        std::fs::read_to_string(&procs_file)
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0)
    };
    let what = "the container listed with its processes and bytes";
    let (status, expected) = poll_until(what, Duration::from_secs(15), || {
        let s = api::status(addr);
        let expected = members();
        let w = workload(&s, &id);
        let ready = w.is_some_and(|w| {
            w["bytes_in"] == SENT as u64 && w["processes"] == expected && expected > 0
        });
        if ready {
            Ok((s, expected))
        } else {
            Err(Shown(format!("{expected} members; {s:#}")))
        }
    });
    let w = workload(&status, &id).unwrap_or_else(|| panic!("container not listed: {status:#}"));
    assert_eq!(w["processes"], expected, "{w:#}");
    assert_eq!(w["bytes_in"], SENT as u64, "{w:#}");
    assert_eq!(w["runtime"], "docker");
    assert_eq!(w["kind"], "container");
    assert_eq!(w["connections_opened"], 1, "{w:#}");
    assert_eq!(w["connections_open"], 0, "{w:#}");
    assert_eq!(w["cgroup_path"], path.as_str());
    assert!(w["last_activity"].is_string());
    let health = &status["agent"];
    assert!(
        health["probes"]["attached"].as_u64() >= Some(5),
        "{health:#}"
    );
    assert!(health["uptime_seconds"].as_f64() > Some(0.0));
    assert!(health["events"]["process_exec"].as_u64() >= Some(1));
    assert!(health["metadata"]["kubelet"].is_null());

    // The table: the container's row, by its short id, with its process count and bytes.
    let out = sonde_status(&addr.to_string(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("Sonde "), "{text}");
    assert!(text.contains("probes "), "{text}");
    let header = text
        .lines()
        .find(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("no header: {text}"));
    for col in [
        "NAMESPACE",
        "RUNTIME",
        "CONTAINER",
        "PROCS",
        "CONNS",
        "BYTES IN",
        "BYTES OUT",
        "LAST ACTIVITY",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = text
        .lines()
        .find(|l| l.contains(&format!(" {} ", &id[..12])))
        .unwrap_or_else(|| panic!("no row for the container {}:\n{text}", &id[..12]));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], format!("docker:{}", &id[..12]), "{row}");
    assert_eq!(cells[2], "docker", "{row}");
    // PROCS CONNS BYTES-IN BYTES-OUT follow the CONTAINER column.
    assert_eq!(cells[4], expected.to_string(), "{row}");
    assert_eq!(cells[5], "0", "{row}");
    assert_eq!(cells[6], "9.8KiB", "{row}");

    // JSON output parses, and is the same document.
    let out = sonde_status(&addr.to_string(), &["--output", "json"]);
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("sonde status --output json");
    assert!(workload(&doc, &id).is_some(), "{doc:#}");

    // --watch redraws every second; not a terminal, so no ANSI clear. Each frame is timed as
    // it arrives: three frames, two redraws about a second apart.
    let mut watch = Command::new(sonde_bin())
        .args(["status", "--watch", "--api", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sonde status --watch");
    let seen = Arc::new(Mutex::new((String::new(), Vec::<Instant>::new())));
    let reader = {
        let (stdout, seen) = (watch.stdout.take().expect("stdout"), Arc::clone(&seen));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut seen = seen.lock().expect("lock");
                if line.contains("Sonde ") {
                    seen.1.push(Instant::now());
                }
                seen.0.push_str(&line);
                seen.0.push('\n');
            }
        })
    };
    let frames = poll_until(
        "three frames of sonde status --watch",
        Duration::from_secs(10),
        || {
            let seen = seen.lock().expect("lock");
            if seen.1.len() >= 3 {
                Ok(seen.1.clone())
            } else {
                Err(Shown(seen.0.clone()))
            }
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();
    reader.join().expect("watch reader");
    let text = seen.lock().expect("lock").0.clone();
    let redraws = frames[2] - frames[0];
    assert!(
        (Duration::from_millis(1500)..=Duration::from_secs(3)).contains(&redraws),
        "two redraws took {redraws:?}, not about 2 s:\n{text}"
    );
    assert!(!text.contains('\x1b'), "ANSI codes on a pipe: {text:?}");

    drop(container);
    agent.stop().assert_nothing_lost();
    remove_everywhere(&format!("{top}/system.slice/x"), "");
}

#[test]
fn sonde_status_without_an_agent_names_the_address_and_the_fix() {
    let addr = free_loopback_addr().to_string();
    let out = sonde_status(&addr, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("no Sonde agent answers on {addr}"))
            && stderr.contains("is `sonde run` running?")
            && stderr.contains("api.listen"),
        "{stderr}"
    );
}

/// `sonde status` finds the agent through the configuration `sonde run` read (the file's
/// `api.listen`, `SONDE_API_LISTEN`), not only through its own `--api`.
#[test]
fn sonde_status_finds_the_agent_through_the_run_configuration() {
    let agent = Agent::start_with_api(&[]);
    let addr = agent.api();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sonde.yaml");
    std::fs::write(&file, format!("api:\n  listen: {addr}\n")).expect("config file");
    let status = |cmd: &mut Command| {
        let doc = client_json(cmd.args(["--output", "json"]).env_remove("SONDE_API"));
        assert!(doc["workloads"].is_array(), "not a status document: {doc}");
    };
    let sonde = || {
        let mut cmd = Command::new(sonde_bin());
        cmd.arg("status").env_remove("SONDE_API_LISTEN");
        cmd
    };
    status(sonde().arg("--config").arg(&file));
    status(sonde().env("SONDE_API_LISTEN", addr.to_string()));
    status(sonde().arg("--set").arg(format!("api.listen={addr}")));
    // A configuration with the API off says so, with where that came from.
    std::fs::write(&file, "api:\n  enabled: false\n").expect("config file");
    let out = Command::new(sonde_bin())
        .arg("status")
        .arg("--config")
        .arg(&file)
        .env_remove("SONDE_API")
        .output()
        .expect("run sonde status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("api.enabled: false") && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
}

/// The API beyond loopback needs a bearer token: without `api.token_file` the agent refuses
/// to start; with it, requests without the token get 401 and `sonde status` sends it.
#[test]
fn the_api_beyond_loopback_requires_a_bearer_token() {
    let port = free_loopback_addr().port();
    let listen = format!("0.0.0.0:{port}");
    let out = Command::new(sonde_bin())
        .args(["run", "--api-listen", &listen, "--metrics-listen", "off"])
        .output()
        .expect("run sonde");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("api.listen") && stderr.contains("api.token_file"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken-for-the-test\n").expect("token");
    let set = format!("api.token_file={}", token_file.display());
    let agent = Agent::start(&["--api-listen", &listen, "--set", &set]);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (code, headers, body) = api::get_with_token(addr, "/v1/status", "wrong");
    assert_eq!(code, 401, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")),
        "{headers:?}"
    );
    assert!(body.contains("api.token_file"), "{body}");
    let (code, _) = api::get(addr, "/v1/status");
    assert_eq!(code, 401, "no token");
    let (code, _, body) = api::get_with_token(addr, "/v1/status", "t0ken-for-the-test");
    assert_eq!(code, 200, "{body}");
    let out = sonde_status(&addr.to_string(), &["--output", "json"]);
    assert!(!out.status.success(), "status without the token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    client_json(
        Command::new(sonde_bin())
            .args(["status", "--api", &addr.to_string(), "--output", "json"])
            .arg("--token-file")
            .arg(&token_file),
    );
    // /metrics stays scrapable without it.
    let mut agent = agent;
    let (code, _) = api::get(agent.metrics_addr(), "/metrics");
    assert_eq!(code, 200);
}
