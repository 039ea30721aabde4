//! The apiserver checks of `sonde diagnose`: the credentials `sonde run` would use, whether the
//! apiserver answers and accepts them (the agent's own first request: this node's pods), who
//! they authenticate as (a SelfSubjectReview), and a SelfSubjectAccessReview for every
//! permission the configuration needs — each watched kind's list and watch, and the kubelet's
//! `nodes/proxy` (or fine-grained `nodes/pods`) when the kubelet is used — each denial naming
//! the RBAC rule to add.

use std::time::Duration;

use k8s_openapi::api::{
    authentication::v1::SelfSubjectReview,
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::Pod,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};

use super::{Check, Verdict, not_pass, pass};
use crate::{
    config::Config,
    kube::apiserver::{
        WatchKind,
        error::{Context, client_error},
        source::Credentials,
    },
};

const AREA: &str = "apiserver";
/// Longest wait for one apiserver request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the agent's roles live, as a fix names them.
const BASE_ROLES: &str = "manifests/base/clusterrole.yaml";
const LEADER_ROLE: &str = "manifests/base/leader-election-role.yaml";
const DUTIES_ROLES: &str = "manifests/base/cluster-duties-rbac.yaml";

/// One permission asked about: the rule a ClusterRole needs for it.
struct Permission {
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
}

impl Permission {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    fn name(&self) -> String {
        let resource = self.resource_path();
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!("{}/", self.group)
        };
        format!("RBAC {} {group}{resource}", self.verbs.join(", "))
    }

    fn rule(&self) -> String {
        crate::kube::apiserver::kind::rbac_rule(self.group, &self.resource_path(), self.verbs)
    }
}

/// The kubelet's `GET /pods` is authorized as `get nodes/proxy`, or `get nodes/pods` with
/// fine-grained kubelet authorization (Kubernetes ≥ 1.32); either is enough.
const KUBELET_PODS: [Permission; 2] = [
    Permission {
        group: "",
        resource: "nodes",
        subresource: "proxy",
        verbs: &["get"],
    },
    Permission {
        group: "",
        resource: "nodes",
        subresource: "pods",
        verbs: &["get"],
    },
];

/// Leader election: the Lease in the agent's namespace (the Role `sonde-leader-election`).
/// The leader's Kubernetes events, and their token's ConfigMap.
const EVENTS: Permission = Permission {
    group: "",
    resource: "events",
    subresource: "",
    verbs: &["list", "watch"],
};
const TOKEN_CONFIGMAP: Permission = Permission {
    group: "",
    resource: "configmaps",
    subresource: "",
    verbs: &["get", "create", "patch"],
};

const LEASES: Permission = Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    subresource: "",
    verbs: &["get", "create", "update", "list", "watch"],
};

async fn bounded<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Option<kube::Error>> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(Some),
        Err(_) => Err(None),
    }
}

pub(super) async fn checks(config: &Config, checks: &mut Vec<Check>) {
    let kube = &config.kubernetes;
    if !kube.enabled {
        checks.push(pass(AREA, "apiserver", "off (kubernetes.enabled: false)"));
        return;
    }
    if !kube.has_credentials() {
        checks.push(pass(
            AREA,
            "apiserver",
            "off: no kubernetes.kubeconfig, not in a pod, and no kubelet kubeconfig on this host",
        ));
        return;
    }
    let credentials = match Credentials::resolve(kube) {
        Ok(c) => c,
        Err(err) => {
            checks.push(not_pass(
                Verdict::Fail,
                AREA,
                "credentials",
                err.to_string(),
                "see the message",
            ));
            return;
        }
    };
    let described = credentials.describe();
    checks.push(pass(AREA, "credentials", described.clone()));
    let (client, server) = match credentials.client().await {
        Ok(built) => built,
        Err(reason) => {
            checks.push(not_pass(
                Verdict::Fail,
                AREA,
                "client",
                format!("cannot build a client from {described}: {reason}"),
                "check the server URL, CA and credentials it names",
            ));
            return;
        }
    };
    let node = match &config.node_name {
        Some(name) => name.clone(),
        None => match crate::kube::resolve_node_name(None) {
            Ok(n) => n.name,
            Err(err) => {
                checks.push(not_pass(
                    Verdict::Fail,
                    AREA,
                    "node name",
                    err.to_string(),
                    "set node_name (NODE_NAME from the downward API in a DaemonSet)",
                ));
                return;
            }
        },
    };
    if !reachable(&client, &server, &described, &node, checks).await {
        return;
    }
    for kind in WatchKind::ALL {
        if !kind.wanted(kube) {
            continue;
        }
        let permission = Permission {
            group: kind.api_group(),
            resource: kind.resource(),
            subresource: "",
            verbs: &["list", "watch"],
        };
        checks.push(access(&client, &[permission], None, BASE_ROLES).await);
    }
    if crate::run::kubelet_options(config).is_some() {
        checks.push(access(&client, &KUBELET_PODS, None, BASE_ROLES).await);
    }
    if crate::cluster::election_wanted(&config.leader_election, kube) {
        let namespace = crate::cluster::own_namespace(kube);
        checks.push(access(&client, &[LEASES], Some(&namespace), LEADER_ROLE).await);
        if config.kube_events.enabled {
            checks.push(access(&client, &[EVENTS], None, DUTIES_ROLES).await);
            checks.push(access(&client, &[TOKEN_CONFIGMAP], Some(&namespace), DUTIES_ROLES).await);
        }
    }
}

/// The agent's first request — this node's pods, one item — proves the apiserver answers and
/// takes the credentials; the SelfSubjectReview names who they are.
async fn reachable(
    client: &Client,
    server: &str,
    credentials: &str,
    node: &str,
    checks: &mut Vec<Check>,
) -> bool {
    let pods: Api<Pod> = Api::all(client.clone());
    let params = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .limit(1);
    let listed = bounded(pods.list_metadata(&params)).await;
    let failure = match listed {
        Ok(_) => None,
        // Forbidden: reachable and authenticated; the RBAC check of pods says the rest.
        Err(Some(kube::Error::Api(status))) if status.code == 403 => None,
        Err(Some(err)) => Some(
            client_error(
                &err,
                "list",
                &Context {
                    server,
                    credentials,
                    kind: WatchKind::Pods,
                },
            )
            .to_string(),
        ),
        Err(None) => Some(format!(
            "{server} did not answer within {REQUEST_TIMEOUT:?}. Fix: check the server URL in \
             {credentials} and the network path to it"
        )),
    };
    if let Some(detail) = failure {
        checks.push(not_pass(
            Verdict::Fail,
            AREA,
            "reachable, authenticated",
            detail,
            "see the message",
        ));
        return false;
    }
    let review = SelfSubjectReview::default();
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let who = match bounded(reviews.create(&PostParams::default(), &review)).await {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .map_or_else(|| "an unnamed user".to_string(), |u| format!("as {u}")),
        // Kubernetes < 1.28 has no SelfSubjectReview: the list above proved authentication.
        Err(_) => "(the apiserver does not say as whom)".to_string(),
    };
    checks.push(pass(
        AREA,
        "reachable, authenticated",
        format!("{server} answers; authenticated {who}"),
    ));
    true
}

/// A SelfSubjectAccessReview for each verb of the permissions (in `namespace`, or cluster-wide):
/// PASS when every verb of any of them is allowed (they are alternatives), else FAIL naming
/// the first one's rule.
/// Whether the credentials may do each verb of one of `alternatives` (in `namespace`, or
/// cluster-wide); a denial's fix names the rule and `file`, where the manifests hold it.
async fn access(
    client: &Client,
    alternatives: &[Permission],
    namespace: Option<&str>,
    file: &str,
) -> Check {
    let Some(first) = alternatives.first() else {
        return pass(AREA, "RBAC", "nothing to check");
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    for permission in alternatives {
        let mut all = true;
        for verb in permission.verbs {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(permission.group.to_string()),
                        resource: Some(permission.resource.to_string()),
                        subresource: (!permission.subresource.is_empty())
                            .then(|| permission.subresource.to_string()),
                        verb: Some(verb.to_string()),
                        namespace: namespace.map(str::to_string),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            match bounded(reviews.create(&PostParams::default(), &review)).await {
                Ok(answer) => {
                    let status = answer.status.unwrap_or_default();
                    if !status.allowed {
                        all = false;
                        let why = status
                            .reason
                            .filter(|r| !r.is_empty())
                            .map_or_else(String::new, |r| format!(" ({r})"));
                        denied.push(format!("{verb} {} denied{why}", permission.name()));
                    }
                }
                Err(err) => {
                    let detail = err.map_or_else(
                        || format!("no answer within {REQUEST_TIMEOUT:?}"),
                        |e| e.to_string(),
                    );
                    return not_pass(
                        Verdict::Warn,
                        AREA,
                        first.name(),
                        format!("cannot ask the apiserver (SelfSubjectAccessReview): {detail}"),
                        "every authenticated user may create SelfSubjectAccessReviews \
                         (system:basic-user); check the apiserver",
                    );
                }
            }
        }
        if all {
            return pass(AREA, permission.name(), "allowed (SelfSubjectAccessReview)");
        }
    }
    let role = match namespace {
        None => format!("the agent's ClusterRole ({file})"),
        Some(ns) => format!("the agent's Role in the namespace {ns} ({file})"),
    };
    not_pass(
        Verdict::Fail,
        AREA,
        first.name(),
        denied.join("; "),
        format!(
            "add the rule {} to {role} and bind it to the agent's identity",
            first.rule()
        ),
    )
}
