//! Control-plane health: the leader reads the apiserver's `/readyz?verbose` and
//! `/livez?verbose` (a failing etcd sub-check shows as 0 in its gauge, and recovers) and, when
//! enabled, the componentstatuses; an agent
//! on a control-plane node checks a real etcd (Debian `etcd-server`, TLS with client
//! certificates made by the test) and scheduler and controller-manager stand-ins over TLS:
//! etcd stopped → its gauge goes to 0 with the error in `/v1/status`; restarted → 1.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use http::{Method, Response};
use sonde_tests::{
    agent::Agent,
    api,
    cluster::start_contender,
    kube_standin::{
        ApiserverStandin, Resource, TestCa,
        apiserver::component_status,
        server::{Handler, Router, TestServer, full},
    },
    metrics::{Exposition, free_port, scrape},
    poll::poll_until,
};

fn gauge(agent: &mut Agent, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = scrape(agent.metrics_addr());
    let found = Exposition::parse(&text);
    found.find(name, labels).first().map(|s| s.value)
}

#[track_caller]
fn wait_gauge(agent: &mut Agent, name: &str, labels: &[(&str, &str)], want: f64) {
    poll_until(
        format!("{name}{labels:?} = {want}"),
        Duration::from_secs(10),
        || match gauge(agent, name, labels) {
            Some(v) if v == want => Ok(()),
            other => Err(other),
        },
    );
}

#[test]
fn a_failing_etcd_check_of_the_apiserver_shows_in_its_gauge_on_the_leader() {
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    apiserver.apply(
        Resource::ComponentStatuses,
        component_status("scheduler", None),
    );
    apiserver.apply(
        Resource::ComponentStatuses,
        component_status(
            "etcd-0",
            Some("dial tcp 127.0.0.1:2379: connect: connection refused"),
        ),
    );
    let (mut agent, addr) = start_contender(
        &apiserver,
        "agent-a",
        &[
            "--set",
            "controlplane.interval=1s",
            "--set",
            "controlplane.componentstatuses=true",
        ],
    );
    // componentstatuses, opt-in: each one's Healthy condition.
    wait_gauge(
        &mut agent,
        "sonde_controlplane_component_up",
        &[("component", "scheduler")],
        1.0,
    );
    wait_gauge(
        &mut agent,
        "sonde_controlplane_component_up",
        &[("component", "etcd-0")],
        0.0,
    );
    for endpoint in ["readyz", "livez"] {
        wait_gauge(
            &mut agent,
            "sonde_controlplane_check_up",
            &[("endpoint", endpoint), ("check", "etcd")],
            1.0,
        );
    }
    wait_gauge(
        &mut agent,
        "sonde_controlplane_endpoint_up",
        &[("endpoint", "readyz")],
        1.0,
    );
    apiserver.fail_health_check("etcd", true);
    for endpoint in ["readyz", "livez"] {
        wait_gauge(
            &mut agent,
            "sonde_controlplane_check_up",
            &[("endpoint", endpoint), ("check", "etcd")],
            0.0,
        );
    }
    // Only etcd fails; the endpoint as a whole answers 500.
    assert_eq!(
        gauge(
            &mut agent,
            "sonde_controlplane_check_up",
            &[("endpoint", "readyz"), ("check", "ping")]
        ),
        Some(1.0)
    );
    wait_gauge(
        &mut agent,
        "sonde_controlplane_endpoint_up",
        &[("endpoint", "readyz")],
        0.0,
    );
    let status = poll_until(
        "the failing check named in the status",
        Duration::from_secs(5),
        || {
            let c = api::status(addr)["agent"]["controlplane"].clone();
            let error = c["apiserver"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if error.contains("failing etcd") {
                Ok(c)
            } else {
                Err(c)
            }
        },
    );
    assert_eq!(status["apiserver"][0]["endpoint"], "readyz", "{status}");
    // sonde status prints it.
    let out = std::process::Command::new(sonde_tests::agent::sonde_bin())
        .args(["status", "--api", &addr.to_string()])
        .output()
        .expect("sonde status");
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("Control plane: "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("readyz failing etcd") && line.contains("scheduler up"),
        "{line}"
    );
    assert!(table.contains("Kubernetes events: collecting"), "{table}");
    apiserver.fail_health_check("etcd", false);
    wait_gauge(
        &mut agent,
        "sonde_controlplane_check_up",
        &[("endpoint", "readyz"), ("check", "etcd")],
        1.0,
    );
    agent.stop();
}

/// A real etcd serving TLS on 127.0.0.1, requiring client certificates signed by `ca`.
struct Etcd {
    child: Child,
    args: Vec<String>,
}

impl Etcd {
    fn start(dir: &Path, client_port: u16) -> Self {
        let peer_port = free_port();
        let path = |name: &str| dir.join(name).display().to_string();
        let client = format!("https://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name".into(),
            "sonde-test".into(),
            "--data-dir".into(),
            path("data"),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("sonde-test={peer}"),
            "--cert-file".into(),
            path("server.crt"),
            "--key-file".into(),
            path("server.key"),
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            path("ca.crt"),
        ];
        let child = Self::spawn(&args);
        Self { child, args }
    }

    fn spawn(args: &[String]) -> Child {
        Command::new("etcd")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian etcd-server, installed by cargo xtask setup)")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = Self::spawn(&self.args);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scheduler or controller-manager stand-in: `/healthz` over TLS (its own CA, as kubeadm's
/// self-signed serving certificates).
fn component_standin(name: &str) -> TestServer {
    let ca = TestCa::new(&format!("{name}-ca"));
    let tls = ca.issue_server_cert(&["127.0.0.1"]).server_config();
    let handler: Handler = Arc::new(|_| Box::pin(async { Response::new(full("ok")) }));
    TestServer::start(
        Some(tls),
        Router::new().route(Method::GET, "/healthz", handler),
    )
}

#[test]
fn this_nodes_etcd_scheduler_and_controller_manager_are_checked_and_etcd_recovers() {
    sonde_tests::require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("etcd-ca");
    ca.write_pem(&dir.path().join("ca.crt"));
    ca.issue_server_cert(&["127.0.0.1", "localhost"]).write_pem(
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    );
    ca.issue_client_cert("kube-etcd-healthcheck-client")
        .write_pem(
            &dir.path().join("healthcheck-client.crt"),
            &dir.path().join("healthcheck-client.key"),
        );
    let port = free_port();
    let mut etcd = Etcd::start(dir.path(), port);
    let scheduler = component_standin("scheduler");
    let manager = component_standin("controller-manager");

    let file = |name: &str| dir.path().join(name).display().to_string();
    let settings = [
        "controlplane.interval=1s".to_string(),
        "controlplane.node_components=on".into(),
        format!("controlplane.etcd_url=https://127.0.0.1:{port}/health"),
        format!("controlplane.etcd_ca_file={}", file("ca.crt")),
        format!(
            "controlplane.etcd_cert_file={}",
            file("healthcheck-client.crt")
        ),
        format!(
            "controlplane.etcd_key_file={}",
            file("healthcheck-client.key")
        ),
        format!("controlplane.scheduler_url={}/healthz", scheduler.url()),
        format!(
            "controlplane.controller_manager_url={}/healthz",
            manager.url()
        ),
    ];
    let mut args = Vec::new();
    for s in &settings {
        args.push("--set".into());
        args.push(s.clone());
    }
    let addr = api::free_loopback_addr();
    args.push("--api-listen".into());
    args.push(addr.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&args);
    for component in ["etcd", "scheduler", "controller-manager"] {
        wait_gauge(
            &mut agent,
            "sonde_controlplane_component_up",
            &[("component", component)],
            1.0,
        );
    }

    etcd.stop();
    wait_gauge(
        &mut agent,
        "sonde_controlplane_component_up",
        &[("component", "etcd")],
        0.0,
    );
    let error = poll_until("etcd's error in the status", Duration::from_secs(5), || {
        let c = api::status(addr)["agent"]["controlplane"]["components"].clone();
        let etcd = c
            .as_array()
            .and_then(|a| a.iter().find(|x| x["component"] == "etcd"))
            .cloned()
            .unwrap_or_default();
        match etcd["error"].as_str() {
            Some(e) if e.contains("cannot connect") => Ok(e.to_string()),
            _ => Err(c),
        }
    });
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    // The others are unaffected.
    assert_eq!(
        gauge(
            &mut agent,
            "sonde_controlplane_component_up",
            &[("component", "scheduler")]
        ),
        Some(1.0)
    );

    etcd.restart();
    wait_gauge(
        &mut agent,
        "sonde_controlplane_component_up",
        &[("component", "etcd")],
        1.0,
    );
    agent.stop();
}
