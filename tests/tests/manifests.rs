//! `manifests/` offline: every kustomization renders with the preinstalled kubectl (no cluster),
//! the rendered objects and each file alone validate strictly against the Kubernetes 1.33
//! schemas (PyPI kubernetes-validate, installed by `cargo xtask setup`), and the DaemonSet has
//! what a production install needs (probes on the metrics port, the downward API, control-plane
//! tolerations, no surge, explicit capabilities, read-only mounts of the host).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use sonde_tests::yaml;

/// The oldest Kubernetes the manifests must be valid for.
const KUBERNETES_VERSION: &str = "1.33.0";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// `kubectl kustomize DIR`, the rendered YAML.
fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl (preinstalled on the build machine): {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Validates `files` strictly; returns whether they passed, and what the validator said.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let pythonpath = std::env::var("SONDE_PYTHONPATH").expect(
        "SONDE_PYTHONPATH is not set: run the tests with `cargo xtask test` (setup installs \
         kubernetes-validate there)",
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .env("PYTHONPATH", pythonpath)
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("No module named"),
        "kubernetes-validate is missing: run `cargo xtask setup`\n{said}"
    );
    (out.status.success(), said)
}

fn kind_of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every YAML file under `dir` that is a Kubernetes object (not a kustomization).
fn object_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("manifests dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "host") {
                object_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_kustomization_renders_and_validates_and_so_does_each_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rendered = Vec::new();
    for k in ["", "overlays/tolerate-all", "overlays/control-plane"] {
        let yaml = kustomize(&manifests().join(k));
        let path = dir.path().join(format!("{}.yaml", k.replace('/', "-")));
        std::fs::write(&path, &yaml).expect("write rendered");
        rendered.push(path);
    }
    let (ok, said) = validate(&rendered);
    assert!(ok, "{said}");
    let mut files = Vec::new();
    object_files(&manifests(), &mut files);
    assert!(files.len() >= 8, "{files:?}");
    let (ok, said) = validate(&files);
    assert!(ok, "{said}");

    // The validator does reject what the schemas do not allow (this test can fail).
    let base = std::fs::read_to_string(&rendered[0]).expect("rendered");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, base.replace("hostPID: true", "hostPid: true")).expect("write");
    let (ok, said) = validate(&[typo]);
    assert!(!ok, "an unknown field passed strict validation: {said}");
}

#[test]
fn the_daemonset_has_what_a_production_node_needs() {
    let docs = yaml::documents(&kustomize(&manifests()));
    let ds = kind_of(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"].as_str(), Some("sonde"));
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        rolling["maxSurge"].as_i64(),
        Some(0),
        "two agents on one node"
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    let tolerated: Vec<&str> = pod["tolerations"]
        .as_array()
        .expect("tolerations")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(
        tolerated,
        [
            "node-role.kubernetes.io/control-plane",
            "node-role.kubernetes.io/master"
        ]
    );
    let c = &pod["containers"][0];
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("NODE_NAME", "spec.nodeName"),
            ("NODE_IP", "status.hostIP"),
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ]
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(9464));
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());
    assert!(
        c["resources"]["limits"]["cpu"].is_null(),
        "a CPU limit throttles the agent"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let caps = strings(&sc["capabilities"]["add"]);
    for needed in ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_CHROOT"] {
        assert!(caps.contains(&needed), "{needed} missing from {caps:?}");
    }
    // The host is mounted read-only, except the BPF filesystem.
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("{path} not mounted"))
    };
    for ro in [
        "/host/proc",
        "/host/sys/fs/cgroup",
        "/sys/kernel/tracing",
        "/sys/kernel/btf",
        "/etc/sonde",
    ] {
        assert_eq!(mount(ro)["readOnly"].as_bool(), Some(true), "{ro}");
    }
    mount("/sys/fs/bpf");

    // The configuration the pod runs with is one the agent accepts.
    let config = kind_of(&docs, "ConfigMap")["data"]["sonde.yaml"]
        .as_str()
        .expect("sonde.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sonde.yaml");
    std::fs::write(&file, config).expect("write config");
    let text = sonde_tests::agent::config_show(&file).to_string();
    assert!(
        text.contains("/host") && text.contains("0.0.0.0:9464"),
        "{text}"
    );
}

/// The control-plane overlay gives the agents the node's network (the components listen on its
/// loopback) and mounts, under the configured host_root, exactly where the controlplane.*
/// defaults read etcd's certificates and the static pod manifests.
#[test]
fn the_control_plane_overlay_mounts_what_the_checks_read() {
    use sonde::cluster::controlplane::{ControlPlaneConfig, STATIC_POD_DIR};
    let docs = yaml::documents(&kustomize(&manifests().join("overlays/control-plane")));
    let ds = kind_of(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    let config = kind_of(&docs, "ConfigMap");
    let sonde_yaml = config["data"]["sonde.yaml"].as_str().expect("sonde.yaml");
    let host_root = sonde_yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("host_root:"))
        .map(str::trim)
        .expect("host_root in the config");
    let mounts: Vec<(String, bool)> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap_or_default().to_string(),
                m["readOnly"].as_bool() == Some(true),
            )
        })
        .collect();
    let defaults = ControlPlaneConfig::default();
    let etcd_dir = defaults.etcd_ca_file.parent().expect("a directory");
    for dir in [etcd_dir, std::path::Path::new(STATIC_POD_DIR)] {
        let want = format!("{host_root}{}", dir.display());
        assert!(
            mounts.contains(&(want.clone(), true)),
            "{want} is not mounted read-only: {mounts:?}"
        );
    }
    for file in [&defaults.etcd_cert_file, &defaults.etcd_key_file] {
        assert_eq!(file.parent(), Some(etcd_dir), "{}", file.display());
    }
    // The base install does not take the node's network.
    let base = yaml::documents(&kustomize(&manifests()));
    assert!(kind_of(&base, "DaemonSet")["spec"]["template"]["spec"]["hostNetwork"].is_null());
}
