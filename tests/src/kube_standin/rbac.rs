//! RBAC as the apiserver and the kubelet enforce it, from ClusterRoles read from YAML files
//! (`manifests/`): a request is allowed when a rule names its API group, resource (with
//! subresource, `nodes/proxy`) and verb. Wildcards are not understood — the manifests must not
//! use them, and a `*` here matches nothing, so a test using one fails.
//!
//! The stand-ins record what each allowed request needed ([`Grant`]), so a test can compare
//! what the role grants with what the agent used, both ways.

use std::{collections::BTreeSet, path::Path};

/// One permission: `(api group, resource, verb)`, e.g. `("apps", "replicasets", "watch")`.
pub type Grant = (String, String, String);

/// The union of the rules of some ClusterRoles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    grants: BTreeSet<Grant>,
}

impl Policy {
    /// The rules of every ClusterRole and Role in `files` (other kinds in them are ignored; a
    /// Role's namespace and `resourceNames` are not modelled: the stand-ins serve one
    /// namespace and the agent asks for one name).
    pub fn from_cluster_roles(files: &[&Path]) -> Self {
        let mut grants = BTreeSet::new();
        for path in files {
            for doc in crate::yaml::file(path) {
                if !matches!(doc["kind"].as_str(), Some("ClusterRole" | "Role")) {
                    continue;
                }
                for rule in doc["rules"].as_array().cloned().unwrap_or_default() {
                    let list = |key: &str| -> Vec<String> {
                        rule[key]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    for group in list("apiGroups") {
                        for resource in list("resources") {
                            for verb in list("verbs") {
                                grants.insert((group.clone(), resource.clone(), verb));
                            }
                        }
                    }
                }
            }
        }
        Self { grants }
    }

    pub fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.grants
            .contains(&(group.to_string(), resource.to_string(), verb.to_string()))
    }

    /// This policy without any verb on `group`/`resource` (a role missing that rule).
    pub fn without(&self, group: &str, resource: &str) -> Self {
        Self {
            grants: self
                .grants
                .iter()
                .filter(|(g, r, _)| !(g == group && r == resource))
                .cloned()
                .collect(),
        }
    }

    /// Every permission granted.
    pub fn grants(&self) -> &BTreeSet<Grant> {
        &self.grants
    }
}

/// The kubelet's authorization of `GET /pods`: `nodes/proxy` get (coarse), or `nodes/pods` get
/// (fine-grained kubelet authorization, Kubernetes ≥ 1.32).
pub const KUBELET_PODS: [(&str, &str, &str); 2] =
    [("", "nodes/proxy", "get"), ("", "nodes/pods", "get")];
