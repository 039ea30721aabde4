//! Is this a Kubernetes node? Decides whether the kubelet source starts when
//! `kubelet.enabled` is left to auto-detection: a plain host runs without it and without
//! warnings about an unreachable kubelet.

use std::path::Path;

use crate::node::hostfs::HostRoot;

/// Why this looks like a Kubernetes node, or `None`.
///
/// Signs, in order: running in a pod (`KUBERNETES_SERVICE_HOST`), the downward-API node name
/// (`NODE_NAME`), a service-account token, or on the host the kubelet's state directory
/// (`/var/lib/kubelet`, created by the kubelet package before `kubeadm init`, so the bootstrap
/// phase counts) or its kubeconfig.
pub fn kubernetes_node(host: &HostRoot, token_file: Option<&Path>) -> Option<String> {
    for var in ["KUBERNETES_SERVICE_HOST", "NODE_NAME"] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Some(format!("{var} is set"));
        }
    }
    if let Some(token) = token_file
        && token.exists()
    {
        return Some(format!("{} exists", token.display()));
    }
    for path in ["/var/lib/kubelet", "/etc/kubernetes/kubelet.conf"] {
        if host.join(path).exists() {
            return Some(format!("{path} exists on the host"));
        }
    }
    None
}
