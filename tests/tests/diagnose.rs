//! `sonde diagnose` against the real kernel and the test kubelet: this machine passes every
//! kernel, privilege and node check (each probe's tracepoint found); a missing BTF file and a
//! kubelet that refuses the token or the RBAC rule are FAILs naming the cause and the fix, and
//! the exit code is 1 then; `--json` is the same report. (Other agents may run on the kernel at
//! the same time: `cargo xtask test` allows it, which the one-agent check reports as a WARN.)
//! Against the test apiserver enforcing the ClusterRole of `manifests/`: a SelfSubjectAccessReview
//! for exactly the permissions the configuration needs, each PASS; a role missing a rule, a
//! rejected token and an unreachable apiserver are FAILs naming the rule, the kubeconfig, the
//! address.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_json::Value;
use sonde_tests::{
    agent::sonde_bin,
    kube_standin::{
        ApiserverStandin, Fault, KubeletStandin,
        apiserver::{AGENT_USER, FIXTURE_NODE},
        rbac::Policy,
    },
};

fn diagnose(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(sonde_bin())
        .args(["diagnose", "--json"])
        .args(args)
        .output()
        .expect("sonde diagnose");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn check<'a>(report: &'a Value, area: &str, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["area"] == area && c["name"] == name)
        .unwrap_or_else(|| panic!("no {area}/{name} check in {report:#}"))
}

#[test]
fn this_machine_passes_the_kernel_privilege_and_node_checks() {
    sonde_tests::require_root();
    let (code, report) = diagnose(&[
        "--kubelet-enabled",
        "false",
        "--metrics-listen",
        "off",
        "--api-listen",
        "off",
    ]);
    assert_eq!(code, Some(0), "{report:#}");
    for c in report["checks"].as_array().expect("checks") {
        if ["kernel", "privileges", "node"].contains(&c["area"].as_str().unwrap_or_default()) {
            // Agents of other tests may share the kernel (allowed under `cargo xtask test`).
            let shared = c["name"] == "one agent per node" && c["verdict"] == "WARN";
            assert!(c["verdict"] == "PASS" || shared, "{c}");
        }
    }
    let probes = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.contains("tracepoint/"))
        })
        .count();
    assert!(probes >= 7, "every probe's hook is checked: {report:#}");
    assert_eq!(check(&report, "node", "cgroup layout")["verdict"], "PASS");
}

#[test]
fn a_missing_btf_file_fails_with_the_fix() {
    sonde_tests::require_root();
    let (code, report) = diagnose(&[
        "--kubelet-enabled",
        "false",
        "--btf-path",
        "/nonexistent/vmlinux",
    ]);
    assert_eq!(code, Some(1), "{report:#}");
    let btf = check(&report, "kernel", "BTF");
    assert_eq!(btf["verdict"], "FAIL");
    assert!(
        btf["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("/nonexistent/vmlinux")
    );
    assert!(
        btf["fix"].as_str().unwrap_or_default().contains("BTFHub"),
        "{btf}"
    );
}

fn kubelet_check(standin: &KubeletStandin) -> (Option<i32>, Value) {
    let mut args = vec!["--node-name".to_string(), FIXTURE_NODE.into()];
    args.extend(standin.agent_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report) = diagnose(&args);
    (code, check(&report, "kubelet", "GET /pods").clone())
}

#[test]
fn the_kubelet_check_names_what_the_kubelet_refused() {
    sonde_tests::require_root();
    let standin = KubeletStandin::start();
    let (code, ok) = kubelet_check(&standin);
    assert_eq!(ok["verdict"], "PASS", "{ok}");
    assert_eq!(code, Some(0), "{ok}");

    standin.set_fault(Fault::Forbidden);
    let (code, forbidden) = kubelet_check(&standin);
    assert_eq!(code, Some(1));
    assert_eq!(forbidden["verdict"], "FAIL");
    assert!(
        forbidden["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("nodes/proxy"),
        "the missing RBAC rule is named: {forbidden}"
    );

    standin.set_fault(Fault::None);
    standin.set_valid_tokens(&["a-token-the-agent-does-not-have"]);
    let (code, unauthorized) = kubelet_check(&standin);
    assert_eq!(code, Some(1));
    let detail = unauthorized["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("401") && detail.contains(&standin.token_file().display().to_string()),
        "the token file is named: {unauthorized}"
    );
}

fn base_policy() -> Policy {
    let role = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/base/clusterrole.yaml");
    Policy::from_cluster_roles(&[role.as_path()])
}

fn apiserver_report(
    kubeconfig: &std::path::Path,
    kubelet: &KubeletStandin,
) -> (Option<i32>, Value) {
    let mut args = vec![
        "--node-name".to_string(),
        FIXTURE_NODE.into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ];
    args.extend(kubelet.agent_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    diagnose(&args)
}

#[test]
fn the_apiserver_checks_ask_for_every_permission_and_name_what_is_missing() {
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    apiserver.enforce(base_policy());
    let kubelet = KubeletStandin::start();
    let (code, report) = apiserver_report(&apiserver.kubeconfig(), &kubelet);
    assert_eq!(code, Some(0), "{report:#}");
    let reachable = check(&report, "apiserver", "reachable, authenticated");
    assert_eq!(reachable["verdict"], "PASS", "{reachable}");
    assert!(
        reachable["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(AGENT_USER),
        "who the credentials are: {reachable}"
    );
    let kinds = [
        "pods",
        "apps/replicasets",
        "batch/jobs",
        "services",
        "discovery.k8s.io/endpointslices",
    ];
    for kind in kinds {
        let c = check(&report, "apiserver", &format!("RBAC list, watch {kind}"));
        assert_eq!(c["verdict"], "PASS", "{c}");
    }
    assert_eq!(
        check(&report, "apiserver", "RBAC get nodes/proxy")["verdict"],
        "PASS"
    );
    // Exactly what this configuration needs (no node or namespace labels: not asked).
    let asked: BTreeSet<_> = apiserver.access_reviews().into_iter().collect();
    let mut want = BTreeSet::new();
    for (group, resource) in [
        ("", "pods"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
    ] {
        for verb in ["list", "watch"] {
            want.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    want.insert(("".into(), "nodes/proxy".into(), "get".into()));
    assert_eq!(asked, want);

    // A ClusterRole without the EndpointSlices rule: that check FAILs with the rule to add.
    apiserver.enforce(base_policy().without("discovery.k8s.io", "endpointslices"));
    let (code, report) = apiserver_report(&apiserver.kubeconfig(), &kubelet);
    assert_eq!(code, Some(1), "{report:#}");
    let missing = check(
        &report,
        "apiserver",
        "RBAC list, watch discovery.k8s.io/endpointslices",
    );
    assert_eq!(missing["verdict"], "FAIL", "{missing}");
    let fix = missing["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("resources: [\"endpointslices\"]") && fix.contains("clusterrole.yaml"),
        "{missing}"
    );
    assert_eq!(
        check(&report, "apiserver", "RBAC list, watch pods")["verdict"],
        "PASS"
    );

    // A token the apiserver rejects: 401, naming the kubeconfig it came from.
    apiserver.set_token("a-token-the-agent-does-not-have");
    let (code, report) = apiserver_report(&apiserver.kubeconfig(), &kubelet);
    assert_eq!(code, Some(1));
    let rejected = check(&report, "apiserver", "reachable, authenticated");
    let detail = rejected["detail"].as_str().unwrap_or_default();
    assert!(
        rejected["verdict"] == "FAIL"
            && detail.contains("401")
            && detail.contains(&apiserver.kubeconfig().display().to_string()),
        "{rejected}"
    );

    // An apiserver that is not there: the address is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let text = std::fs::read_to_string(apiserver.kubeconfig()).expect("kubeconfig");
    let url = apiserver.url();
    let down = apiserver.dir().join("down.kubeconfig");
    std::fs::write(
        &down,
        text.replace(&url, &format!("https://127.0.0.1:{port}")),
    )
    .expect("write");
    let (code, report) = apiserver_report(&down, &kubelet);
    assert_eq!(code, Some(1));
    let unreachable = check(&report, "apiserver", "reachable, authenticated");
    let detail = unreachable["detail"].as_str().unwrap_or_default();
    assert!(
        unreachable["verdict"] == "FAIL" && detail.contains(&port.to_string()),
        "{unreachable}"
    );
}

/// A client certificate instead of a token (a host install using the node's certificate, or
/// the apiserver's kubelet client certificate): the kubelet that requires one accepts it, and
/// one from another CA is a FAIL naming the handshake's rejection.
#[test]
fn a_kubelet_client_certificate_authenticates_without_a_token() {
    sonde_tests::require_root();
    let standin = KubeletStandin::start_with(sonde_tests::kube_standin::KubeletOptions {
        client_certs: true,
        ..Default::default()
    });
    let run = |pem: &std::path::Path| {
        let pem = pem.display().to_string();
        let cert = format!("kubelet.client_cert_file={pem}");
        let key = format!("kubelet.client_key_file={pem}");
        let url = standin.url();
        let ca = standin.ca_file().display().to_string();
        let args = [
            "--node-name",
            FIXTURE_NODE,
            "--kubelet-url",
            url.as_str(),
            "--kubelet-ca-file",
            ca.as_str(),
            "--set",
            "kubelet.token_file=null",
            "--set",
            cert.as_str(),
            "--set",
            key.as_str(),
        ];
        let (code, report) = diagnose(&args);
        (code, check(&report, "kubelet", "GET /pods").clone())
    };
    let (code, ok) = run(&standin.write_client_cert("system:node:n1", true));
    assert_eq!(ok["verdict"], "PASS", "{ok}");
    assert_eq!(code, Some(0));
    assert!(
        standin.requests().iter().all(|r| r.bearer.is_none()),
        "no token sent: {:?}",
        standin.requests()
    );

    let (code, rejected) = run(&standin.write_client_cert("stranger", false));
    assert_eq!(code, Some(1));
    let detail = rejected["detail"].as_str().unwrap_or_default();
    assert!(
        rejected["verdict"] == "FAIL" && detail.contains("rejected the handshake"),
        "{rejected}"
    );

    // A key file without a certificate is a configuration error naming the key.
    let out = Command::new(sonde_bin())
        .args([
            "diagnose",
            "--set",
            "kubelet.client_key_file=/etc/sonde/key.pem",
        ])
        .output()
        .expect("sonde diagnose");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("kubelet.client_key_file"), "{stderr}");
}

/// An agent that would contend for the leader Lease (a pod: `POD_NAMESPACE`) is checked for
/// the leader-election Role and the cluster duties' roles too (the events, their token): PASS
/// with them, FAIL naming the file without them.
#[test]
fn the_leader_election_role_is_checked_in_a_pod() {
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    let role = |file: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../manifests/base/{file}"))
    };
    let report = |policy: Policy| {
        apiserver.enforce(policy);
        let out = Command::new(sonde_bin())
            .args([
                "diagnose",
                "--json",
                "--kubelet-enabled",
                "false",
                "--node-name",
            ])
            .arg(FIXTURE_NODE)
            .arg("--kubeconfig")
            .arg(apiserver.kubeconfig())
            .env("POD_NAMESPACE", "sonde")
            .env("POD_NAME", "agent-a")
            .output()
            .expect("sonde diagnose");
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (out.status.code(), report)
    };
    let name = "RBAC get, create, update, list, watch coordination.k8s.io/leases";
    let both = Policy::from_cluster_roles(&[
        role("clusterrole.yaml").as_path(),
        role("leader-election-role.yaml").as_path(),
        role("cluster-duties-rbac.yaml").as_path(),
    ]);
    let (events, token) = (
        "RBAC list, watch events",
        "RBAC get, create, patch configmaps",
    );
    let (code, ok) = report(both);
    for name in [name, events, token] {
        assert_eq!(check(&ok, "apiserver", name)["verdict"], "PASS", "{ok:#}");
    }
    assert_eq!(code, Some(0), "{ok:#}");
    let (code, missing) = report(base_policy());
    for (name, file) in [
        (name, "leader-election-role.yaml"),
        (events, "cluster-duties-rbac.yaml"),
        (token, "cluster-duties-rbac.yaml"),
    ] {
        let c = check(&missing, "apiserver", name);
        assert_eq!(c["verdict"], "FAIL", "{c}");
        assert!(c["fix"].as_str().unwrap_or_default().contains(file), "{c}");
    }
    assert_eq!(code, Some(1));
}
