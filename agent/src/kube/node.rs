//! Which Kubernetes node this agent runs on.
//!
//! In order: `NODE_NAME` (the DaemonSet sets it from the downward API, `spec.nodeName`), the
//! kubelet's kubeconfig (its user `system:node:<name>`, when a path is given), the hostname
//! (lowercased, as the kubelet does when it registers the node).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Environment variable the DaemonSet fills from `spec.nodeName`.
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// Environment variable the DaemonSet fills from `status.hostIP`.
pub const NODE_IP_ENV: &str = "NODE_IP";

const NODE_USER_PREFIX: &str = "system:node:";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeName {
    pub name: String,
    pub source: NodeNameSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeNameSource {
    Env,
    Kubeconfig(PathBuf),
    Hostname,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot tell which node this is: {NODE_NAME_ENV} is unset{kubeconfig} and the hostname is \
     unavailable ({reason}). Fix: set {NODE_NAME_ENV} (in a DaemonSet: env valueFrom fieldRef \
     spec.nodeName)"
)]
pub struct NodeNameError {
    kubeconfig: String,
    reason: String,
}

/// Resolves the node name from the environment, then `kubelet_kubeconfig`, then the hostname.
pub fn resolve_node_name(kubelet_kubeconfig: Option<&Path>) -> Result<NodeName, NodeNameError> {
    let hostname = || {
        nix::unistd::gethostname()
            .map_err(|e| e.to_string())
            .and_then(|h| h.into_string().map_err(|_| "not UTF-8".to_string()))
    };
    resolve_from(
        std::env::var(NODE_NAME_ENV).ok(),
        kubelet_kubeconfig,
        hostname,
    )
}

fn resolve_from(
    env: Option<String>,
    kubeconfig: Option<&Path>,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<NodeName, NodeNameError> {
    if let Some(name) = env.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) {
        return Ok(NodeName {
            name,
            source: NodeNameSource::Env,
        });
    }
    let mut tried = String::new();
    if let Some(path) = kubeconfig {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Some(name) = node_user_in_kubeconfig(&text) {
                    return Ok(NodeName {
                        name,
                        source: NodeNameSource::Kubeconfig(path.to_path_buf()),
                    });
                }
                tried = format!(", {} names no system:node: user", path.display());
            }
            Err(err) => tried = format!(", {} is unreadable ({err})", path.display()),
        }
    }
    match hostname() {
        Ok(name) if !name.trim().is_empty() => Ok(NodeName {
            name: name.trim().to_lowercase(),
            source: NodeNameSource::Hostname,
        }),
        Ok(_) => Err(NodeNameError {
            kubeconfig: tried,
            reason: "empty hostname".into(),
        }),
        Err(reason) => Err(NodeNameError {
            kubeconfig: tried,
            reason,
        }),
    }
}

/// The node in a kubelet kubeconfig: its user (or client certificate subject) is
/// `system:node:<name>`. A plain text scan: the name is a DNS subdomain, so it ends at the
/// first character that cannot be in one (quote, space, `@` of a context name).
fn node_user_in_kubeconfig(text: &str) -> Option<String> {
    text.match_indices(NODE_USER_PREFIX).find_map(|(at, _)| {
        let rest = &text[at + NODE_USER_PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        (!name.is_empty()).then(|| name.to_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM_KUBELET_CONF: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://10.0.0.1:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:worker-1.example
  name: system:node:worker-1.example@kubernetes
current-context: system:node:worker-1.example@kubernetes
kind: Config
users:
- name: system:node:worker-1.example
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
";

    #[test]
    fn env_wins() {
        let name = resolve_from(Some("node-a".into()), None, || Ok("host".into()));
        assert_eq!(
            name.ok(),
            Some(NodeName {
                name: "node-a".into(),
                source: NodeNameSource::Env
            })
        );
    }

    #[test]
    fn kubeconfig_user() {
        assert_eq!(
            node_user_in_kubeconfig(KUBEADM_KUBELET_CONF).as_deref(),
            Some("worker-1.example")
        );
        let dir = std::env::temp_dir().join(format!("sonde-node-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tempdir");
        let path = dir.join("kubelet.conf");
        std::fs::write(&path, KUBEADM_KUBELET_CONF).expect("write");
        let name = resolve_from(Some(" ".into()), Some(&path), || Ok("host".into()));
        let _ = std::fs::remove_dir_all(&dir);
        let name = name.expect("resolved");
        assert_eq!(name.name, "worker-1.example");
        assert_eq!(name.source, NodeNameSource::Kubeconfig(path));
    }

    #[test]
    fn hostname_last() {
        let name = resolve_from(None, Some(Path::new("/nonexistent/kubelet.conf")), || {
            Ok("Worker-2\n".into())
        });
        assert_eq!(name.map(|n| n.name).ok().as_deref(), Some("worker-2"));
        let err = resolve_from(None, Some(Path::new("/nonexistent/kubelet.conf")), || {
            Err("EPERM".into())
        })
        .expect_err("no name");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/kubelet.conf is unreadable"),
            "{text}"
        );
        assert!(text.contains("Fix: set NODE_NAME"), "{text}");
    }
}
