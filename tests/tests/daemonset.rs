//! The DaemonSet, run for real as far as this machine allows: the image `cargo xtask image`
//! built (`SONDE_IMAGE`, set by `cargo xtask test`) is unpacked and run with runc the way a
//! kubelet would run `manifests/base/daemonset.yaml` — its container's args, environment
//! (downward API values filled in), capabilities, security context, host mounts and ConfigMap
//! are read from the manifest and turned into the runc config, in a network namespace of its
//! own as a pod's. Then: `/readyz` turns ready, a host process, another runc container and a TCP
//! connection are captured and attributed, and SIGTERM stops it cleanly within the grace period.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sonde_tests::{
    agent::collect_text,
    api,
    cgroup::TestCgroup,
    events::EventLog,
    poll::poll_until,
    runc::{Bundle, container_id, unique_id},
    yaml,
};

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base")
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of the pod's own (as a pod without hostNetwork has), loopback up.
struct PodNetwork {
    name: String,
}

impl PodNetwork {
    fn create() -> Self {
        let name = unique_id("sonde-ds");
        run_checked(
            Command::new("ip").args(["netns", "add", &name]),
            "ip netns add",
        );
        run_checked(
            Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]),
            "ip link set lo up",
        );
        Self { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread inside the namespace (to reach the pod's ports).
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in the pod's netns")
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// The image's root filesystem and runc config, from the OCI archive.
fn unpack_image(dir: &Path) -> PathBuf {
    let archive = std::env::var("SONDE_IMAGE").expect(
        "SONDE_IMAGE is not set: run the tests with `cargo xtask test` (it builds the image)",
    );
    let layout = dir.join("oci");
    run_checked(
        Command::new("skopeo").args([
            "copy",
            &format!("oci-archive:{archive}"),
            &format!("oci:{}:sonde", layout.display()),
        ]),
        "skopeo copy",
    );
    let bundle = dir.join("bundle");
    run_checked(
        Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:sonde", layout.display())])
            .arg(&bundle),
        "umoci unpack",
    );
    bundle
}

/// What the kubelet would fill in for a `fieldRef`.
fn field_ref(path: &str) -> &'static str {
    match path {
        "spec.nodeName" => "sonde-test-node",
        // The node's address as seen from the pod's own namespace: none reaches the host here,
        // so the kubelet is unreachable and readiness must say so rather than wait.
        "status.hostIP" => "192.0.2.1",
        "metadata.name" => "sonde-test-pod",
        "metadata.namespace" => "sonde",
        other => panic!("fieldRef {other} is not one the test knows how to fill"),
    }
}

/// Turns the DaemonSet's pod spec into the runc config of `bundle`.
fn pod_to_runc(bundle: &Path, pod: &Value, configmap: &Value, netns: &Path, work: &Path) {
    let config_path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config.json"))
            .expect("config.json is JSON");
    let c = &pod["containers"][0];
    let entrypoint = config["process"]["args"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut args: Vec<Value> = entrypoint.into_iter().take(1).collect();
    args.extend(c["args"].as_array().cloned().unwrap_or_default());
    config["process"]["args"] = json!(args);
    config["process"]["terminal"] = json!(false);
    let mut env = vec![json!("PATH=/usr/local/bin:/usr/bin:/bin")];
    for e in c["env"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().expect("env name");
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => field_ref(
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .expect("fieldRef"),
            )
            .to_string(),
        };
        env.push(json!(format!("{name}={value}")));
    }
    config["process"]["env"] = json!(env);

    let sc = &c["securityContext"];
    assert_eq!(
        sc["privileged"],
        json!(false),
        "the test runs the unprivileged spec"
    );
    // A capability this machine's own bounding set lacks cannot be granted here (this sandbox
    // has no CAP_SYS_RESOURCE, needed only for memlock on kernels older than 5.11): it is left
    // out, and said.
    let bounding = own_bounding_set();
    let (caps, lacking): (Vec<String>, Vec<String>) = sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("capability")))
        .partition(|c| capability_bit(c).is_some_and(|bit| bounding & (1 << bit) != 0));
    if !lacking.is_empty() {
        eprintln!("this machine cannot grant {lacking:?} (not in its bounding set): left out");
    }
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
    });
    config["process"]["noNewPrivileges"] = json!(sc["allowPrivilegeEscalation"] == json!(false));
    config["process"]["user"] = json!({"uid": sc["runAsUser"].as_u64().unwrap_or(0), "gid": 0});
    config["root"]["readonly"] = json!(sc["readOnlyRootFilesystem"] == json!(true));
    if sc["seccompProfile"]["type"] == "Unconfined" {
        config["linux"]
            .as_object_mut()
            .expect("linux")
            .remove("seccomp");
    }

    // hostPID: no pid namespace; the pod's network namespace.
    let host_pid = pod["hostPID"] == json!(true);
    let namespaces: Vec<Value> = config["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !(host_pid && n["type"] == "pid") && n["type"] != "network")
        .chain(std::iter::once(json!({"type": "network", "path": netns})))
        .collect();
    config["linux"]["namespaces"] = json!(namespaces);
    let cgroup = unique_id("sonde-ds-pod");
    config["linux"]["cgroupsPath"] = json!(format!("/sonde-test/{cgroup}"));

    // Volumes: hostPath binds, the ConfigMap as files.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mut mounts = config["mounts"].as_array().cloned().unwrap_or_default();
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("mount name");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name} not declared"));
        let source = if let Some(path) = volume["hostPath"]["path"].as_str() {
            PathBuf::from(path)
        } else if volume["configMap"].is_object() {
            let dir = work.join(format!("configmap-{name}"));
            std::fs::create_dir_all(&dir).expect("configmap dir");
            for (file, text) in configmap["data"].as_object().expect("configmap data") {
                std::fs::write(dir.join(file), text.as_str().expect("text")).expect("write");
            }
            dir
        } else {
            panic!("volume {name}: only hostPath and configMap are known to the test");
        };
        let mut options = vec!["rbind"];
        if m["readOnly"] == json!(true) {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m["mountPath"], "type": "bind",
            "source": source, "options": options,
        }));
    }
    config["mounts"] = json!(mounts);
    std::fs::write(&config_path, config.to_string()).expect("write config.json");
}

/// This process's capability bounding set.
fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapBnd")
}

/// The bit of a capability the DaemonSet may add.
fn capability_bit(name: &str) -> Option<u32> {
    Some(match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_CHROOT" => 18,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        _ => return None,
    })
}

#[test]
fn the_daemonsets_pod_runs_from_the_image_captures_and_stops_on_sigterm() {
    sonde_tests::require_root();
    let docs = yaml::file(&manifests().join("daemonset.yaml"));
    let pod = &docs[0]["spec"]["template"]["spec"];
    let configmap = &yaml::file(&manifests().join("configmap.yaml"))[0];
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));

    let work = tempfile::tempdir().expect("tempdir");
    let bundle = unpack_image(work.path());
    let net = PodNetwork::create();
    pod_to_runc(&bundle, pod, configmap, &net.path(), work.path());

    let id = unique_id("sonde-ds");
    let mut runc = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runc run");
    let _cleanup = Cleanup(id.clone());
    let events = EventLog::default();
    let sink = events.clone();
    let stdout = runc.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(v) => sink.push(v),
                Err(e) => panic!("the agent wrote a line that is not JSON ({e}): {line}"),
            }
        }
    });
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    collect_text(
        runc.stderr.take().expect("stderr"),
        std::sync::Arc::clone(&log),
    );
    let logs = || log.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // Ready, as the readiness probe sees it (the pod's port, from its own namespace).
    let port = pod["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .expect("containerPort") as u16;
    let path = pod["containers"][0]["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("readiness path")
        .to_string();
    poll_until(
        "the pod's /readyz to answer 200",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = runc.try_wait() {
                panic!("the agent exited ({status}):\n{}", logs());
            }
            let path = path.clone();
            let (code, body) = net.enter(move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(_) => api::get(addr, &path),
                    Err(e) => (0, e.to_string()),
                }
            });
            if code == 200 {
                Ok(body)
            } else {
                Err(format!("{code} {body}\n{}", logs()))
            }
        },
    );

    // A host process (pids are the host's: hostPID).
    let marker = unique_id("host-marker");
    let host = Command::new("/bin/sh")
        .args(["-c", &format!("exit 0 # {marker}")])
        .spawn()
        .expect("host process");
    let host_pid = host.id();
    let _ = host.wait_with_output();
    // Another container, Docker-shaped so that its id is in its cgroup path.
    let cid = container_id();
    let top = unique_id("sonde-ds-other");
    let other_cgroup = TestCgroup::create(&format!("{top}/system.slice/docker-{cid}.scope"));
    let other = Bundle::new(&["/bin/sh", "-c", "exit 3"], &other_cgroup.rel);
    assert_eq!(other.run(&unique_id("sonde-ds-other")).code(), Some(3));
    // A TCP connection on the host's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let server_port = listener.local_addr().expect("addr").port();
    let client = std::net::TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    drop(client);
    drop(accepted);

    let me = std::process::id();
    poll_until(
        "the host process, the other container and the connection",
        Duration::from_secs(30),
        || {
            let evs = events.snapshot();
            let host_seen = evs.iter().any(|e| {
                e["type"] == "process_exec"
                    && e["pid"].as_u64() == Some(u64::from(host_pid))
                    && e["args"].to_string().contains(&marker)
            });
            let other_seen = evs.iter().any(|e| {
                e["type"] == "process_exit"
                    && e["container_id"] == json!(cid)
                    && e["runtime"] == "docker"
                    && e["exit_code"] == json!(3)
            });
            let conn_seen = evs.iter().any(|e| {
                e["type"] == "tcp_close"
                    && e["pid"].as_u64() == Some(u64::from(me))
                    && e["local_port"].as_u64() != Some(u64::from(server_port))
                    && e["remote_port"].as_u64() == Some(u64::from(server_port))
            });
            if host_seen && other_seen && conn_seen {
                Ok(())
            } else {
                let tcp: Vec<&Value> = evs.iter().filter(|e| e["type"] == "tcp_close").collect();
                Err(format!(
                    "host process {host_seen}, other container {other_seen}, connection \
                     {conn_seen}; {} events; tcp_close: {tcp:?}",
                    evs.len()
                ))
            }
        },
    );

    // SIGTERM, as the kubelet stops a pod: a clean exit within the grace period.
    let started = Instant::now();
    run_checked(
        Command::new("runc").args(["kill", &id, "TERM"]),
        "runc kill TERM",
    );
    let status = poll_until("the agent to stop on SIGTERM", grace, || {
        match runc.try_wait() {
            Ok(Some(status)) => Ok(status),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(status.success(), "exit {status} after SIGTERM:\n{}", logs());
    assert!(started.elapsed() < grace);
    assert!(logs().contains("capture stopped"), "{}", logs());
}

/// Deletes the container however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}
