//! The ClusterRoles in `manifests/` against what the real agent asks: the test apiserver and
//! kubelet enforce the rules read from the files, the agent syncs every source with no request
//! refused, and the role grants nothing the agent did not use (both directions), with the
//! default configuration and with the label allow-lists (which need `components/labels`).

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use sonde_tests::{
    agent::Agent,
    api,
    kube_standin::{
        ApiserverStandin, KubeletStandin,
        apiserver::FIXTURE_NODE,
        rbac::{Grant, KUBELET_PODS, Policy},
    },
    poll::poll_until,
};

fn manifest(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(path)
}

const BASE_ROLE: &str = "base/clusterrole.yaml";
const LEADER_ROLE: &str = "base/leader-election-role.yaml";
const DUTIES_ROLES: &str = "base/cluster-duties-rbac.yaml";
const LABELS_ROLE: &str = "components/labels/clusterrole.yaml";

fn policy(files: &[&str]) -> Policy {
    let paths: Vec<PathBuf> = files.iter().map(|f| manifest(f)).collect();
    let paths: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
    let policy = Policy::from_cluster_roles(&paths);
    assert!(!policy.grants().is_empty(), "no rules read from {files:?}");
    policy
}

struct Cluster {
    apiserver: ApiserverStandin,
    kubelet: KubeletStandin,
}

impl Cluster {
    fn enforcing(policy: &Policy) -> Self {
        let apiserver = ApiserverStandin::start();
        let kubelet = KubeletStandin::start();
        apiserver.enforce(policy.clone());
        kubelet.enforce(policy.clone());
        Self { apiserver, kubelet }
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        self.agent_with_env(extra, &[])
    }

    fn agent_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut args = vec![
            "--kubeconfig".to_string(),
            self.apiserver.kubeconfig().display().to_string(),
            "--node-name".into(),
            FIXTURE_NODE.into(),
        ];
        args.extend(self.kubelet.agent_flags());
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_with_env(&args, env)
    }

    /// What the agent's requests needed: the apiserver's, and the kubelet's `GET /pods` (either
    /// of its two authorizations, as a kubelet of either mode needs one).
    fn used(&self) -> BTreeSet<Grant> {
        let mut used = self.apiserver.grants_used();
        if !self.kubelet.requests().is_empty() {
            used.extend(
                KUBELET_PODS
                    .iter()
                    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())),
            );
        }
        used
    }
}

/// The roles grant exactly what the agents used: nothing refused, nothing granted in vain.
#[track_caller]
fn assert_used_exactly(granted: &Policy, used: &BTreeSet<Grant>) {
    let unused: Vec<_> = granted.grants().difference(used).collect();
    let missing: Vec<_> = used.difference(granted.grants()).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "granted but never used: {unused:?}; used but not granted: {missing:?}"
    );
}

/// Waits until `/readyz` shows every part of `parts`; returns its body.
#[track_caller]
fn wait_readyz(agent: &mut Agent, parts: &[&str]) -> String {
    let addr = agent.metrics_addr();
    poll_until(
        format!("/readyz showing {parts:?}"),
        Duration::from_secs(20),
        || {
            let (_, body) = api::get(addr, "/readyz");
            if parts.iter().all(|p| body.contains(p)) {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
}

#[test]
fn the_default_agent_needs_exactly_the_base_cluster_role() {
    let granted = policy(&[BASE_ROLE]);
    let cluster = Cluster::enforcing(&granted);
    let mut agent = cluster.agent(&[]);
    wait_readyz(
        &mut agent,
        &["[+]kubelet synced: ", "[+]apiserver synced: 5 kinds"],
    );
    let refused = cluster.apiserver.forbidden_requests();
    assert!(refused.is_empty(), "refused by the role: {refused:#?}");
    assert_used_exactly(&granted, &cluster.used());
}

#[test]
fn label_allow_lists_need_the_labels_component_and_name_the_rule_without_it() {
    let labels = [
        "--set",
        "kubernetes.node_labels=topology.kubernetes.io/zone",
        "--set",
        "kubernetes.namespace_labels=kubernetes.io/metadata.name",
    ];
    // With the base role only, the node and namespace watches are refused: the agent still
    // turns ready, and says which rule is missing.
    let cluster = Cluster::enforcing(&policy(&[BASE_ROLE]));
    let mut agent = cluster.agent(&labels);
    let body = wait_readyz(&mut agent, &["[+]apiserver failing: ", "nodes"]);
    assert!(body.contains("namespaces"), "{body}");
    let refused: BTreeSet<&str> = cluster
        .apiserver
        .forbidden_requests()
        .iter()
        .map(|r| r.resource.plural())
        .collect();
    assert_eq!(refused, BTreeSet::from(["namespaces", "nodes"]));
    drop(agent);

    // With the component's role too: nothing refused, and nothing granted goes unused.
    let granted = policy(&[BASE_ROLE, LABELS_ROLE]);
    let cluster = Cluster::enforcing(&granted);
    let mut agent = cluster.agent(&labels);
    wait_readyz(
        &mut agent,
        &["[+]kubelet synced: ", "[+]apiserver synced: 7 kinds"],
    );
    let refused = cluster.apiserver.forbidden_requests();
    assert!(refused.is_empty(), "refused by the roles: {refused:#?}");
    assert_eq!(&cluster.used(), granted.grants());
}

/// Agents running as the DaemonSet's pods (`POD_NAME`, `POD_NAMESPACE`) also elect a leader:
/// together they need exactly the base ClusterRole, the leader-election Role and the
/// cluster-duties roles — the leader creates and renews the Lease, watches the cluster's events
/// and writes their token; the stand-by reads and watches the Lease.
#[test]
fn elected_agents_need_exactly_the_base_roles() {
    let granted = policy(&[BASE_ROLE, LEADER_ROLE, DUTIES_ROLES]);
    let cluster = Cluster::enforcing(&granted);
    let timings = [
        "--set",
        "leader_election.lease_duration=3s",
        "--set",
        "leader_election.renew_deadline=2s",
        "--set",
        "leader_election.retry_period=300ms",
        "--set",
        "kube_events.token_interval=1s",
    ];
    let mut agents: Vec<Agent> = ["agent-a", "agent-b"]
        .iter()
        .map(|name| {
            cluster.agent_with_env(&timings, &[("POD_NAME", name), ("POD_NAMESPACE", "sonde")])
        })
        .collect();
    for agent in &mut agents {
        wait_readyz(
            agent,
            &["[+]kubelet synced: ", "[+]apiserver synced: 5 kinds"],
        );
    }
    // The leader's duties: the Lease, the events, the token's ConfigMap (read, patched —
    // missing at first — and created).
    let wanted: [(&str, &str, &[&str]); 3] = [
        (
            "coordination.k8s.io",
            "leases",
            &["create", "update", "get", "watch", "list"],
        ),
        ("", "events", &["list", "watch"]),
        ("", "configmaps", &["get", "patch", "create"]),
    ];
    poll_until(
        "the Lease created, renewed and watched; the events watched; the token written",
        Duration::from_secs(20),
        || {
            let used = cluster.used();
            let all = wanted.iter().all(|(group, resource, verbs)| {
                verbs.iter().all(|verb| {
                    used.contains(&(group.to_string(), resource.to_string(), verb.to_string()))
                })
            });
            if all { Ok(()) } else { Err(used) }
        },
    );
    let refused = cluster.apiserver.forbidden_requests();
    let refused_objects = cluster.apiserver.forbidden_object_requests();
    assert!(
        refused.is_empty() && refused_objects.is_empty(),
        "refused by the roles: {refused:#?} {refused_objects:?}"
    );
    assert_used_exactly(&granted, &cluster.used());
}
