//! A host install on a Kubernetes node (not in a pod, so no service-account token): the
//! kubelet credentials a node already has, used when the configuration names none.
//! - the client certificate of the kubelet's own kubeconfig
//!   ([`NODE_KUBECONFIGS`](crate::kube::apiserver::config::NODE_KUBECONFIGS): kubeadm's
//!   `kubelet.conf` names `/var/lib/kubelet/pki/kubelet-client-current.pem`), which the
//!   kubelet authenticates as `system:node:<name>`; it is authorized for `nodes/proxy` only
//!   if a ClusterRoleBinding grants it (docs/deploy.md) — a 403 names the rule;
//! - to verify the kubelet: its self-signed serving certificate
//!   (`/var/lib/kubelet/pki/kubelet.crt`, kubeadm's default), else the cluster CA of that
//!   kubeconfig (right with `serverTLSBootstrap: true`).
//!
//! Explicit keys (`kubelet.token_file`, `kubelet.client_cert_file`, `kubelet.ca_file`) win.

use std::path::{Path, PathBuf};

use super::{DEFAULT_CA_FILE, DEFAULT_TOKEN_FILE, KubeletConfig};
use crate::kube::apiserver::config::{NODE_KUBECONFIGS, node_kubeconfig};

/// The kubelet's self-signed serving certificate on kubeadm nodes (with its CA in the file).
pub const KUBELET_SERVING_CERT: &str = "/var/lib/kubelet/pki/kubelet.crt";

/// What a node's kubeconfig holds for a client of the kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCredentials {
    pub kubeconfig: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The cluster CA file it names, if any.
    pub cluster_ca: Option<PathBuf>,
}

/// The current context's client certificate and key files of the kubeconfig at `path`
/// (relative paths are relative to the kubeconfig, as kubectl reads them). `None` when it has
/// none (a token, embedded data, an exec plugin).
pub fn node_credentials(path: &Path) -> Option<NodeCredentials> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).ok()?;
    let context_name = kubeconfig
        .current_context
        .clone()
        .or_else(|| kubeconfig.contexts.first().map(|c| c.name.clone()))?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)?
        .context
        .clone()?;
    let user = context.user.as_deref()?;
    let auth = kubeconfig
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .clone()?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let resolve = |p: &str| dir.join(p);
    let cluster_ca = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority.as_deref())
        .map(resolve);
    Some(NodeCredentials {
        kubeconfig: path.to_path_buf(),
        client_cert: resolve(auth.client_certificate.as_deref()?),
        client_key: resolve(auth.client_key.as_deref()?),
        cluster_ca,
    })
}

/// `config` with the node's credentials filled in where it names none, when not in a pod
/// (no service-account token at [`DEFAULT_TOKEN_FILE`]).
pub fn with_host_defaults(config: KubeletConfig) -> KubeletConfig {
    with_defaults_from(
        config,
        Path::new(DEFAULT_TOKEN_FILE).exists(),
        Path::new(DEFAULT_CA_FILE).exists(),
        node_kubeconfig(NODE_KUBECONFIGS).and_then(|p| node_credentials(&p)),
        Some(PathBuf::from(KUBELET_SERVING_CERT)).filter(|p| p.is_file()),
    )
}

fn with_defaults_from(
    mut config: KubeletConfig,
    in_pod: bool,
    pod_ca: bool,
    node: Option<NodeCredentials>,
    serving_cert: Option<PathBuf>,
) -> KubeletConfig {
    if in_pod {
        return config;
    }
    let default_token = config.token_file.as_deref() == Some(Path::new(DEFAULT_TOKEN_FILE));
    if default_token
        && config.client_cert_file.is_none()
        && let Some(node) = &node
    {
        tracing::info!(
            kubeconfig = %node.kubeconfig.display(),
            cert = %node.client_cert.display(),
            "not in a pod: the kubelet client uses the node's client certificate"
        );
        config.token_file = None;
        config.client_cert_file = Some(node.client_cert.clone());
        config.client_key_file = Some(node.client_key.clone());
    }
    if config.ca_file.is_none() && !pod_ca {
        config.ca_file = serving_cert.or_else(|| node.and_then(|n| n.cluster_ca));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority: pki/ca.crt\ncontexts:\n- name: system:node:n1@kubernetes\n  context:\n    cluster: kubernetes\n    user: system:node:n1\ncurrent-context: system:node:n1@kubernetes\nusers:\n- name: system:node:n1\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n";

    fn kubeadm() -> (tempfile::TempDir, NodeCredentials) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubelet.conf");
        std::fs::write(&path, KUBEADM).expect("write");
        let creds = node_credentials(&path).expect("client certificate found");
        (dir, creds)
    }

    #[test]
    fn a_kubeadm_kubelet_conf_names_the_rotated_client_certificate() {
        let (dir, creds) = kubeadm();
        let pem = PathBuf::from("/var/lib/kubelet/pki/kubelet-client-current.pem");
        assert_eq!(creds.client_cert, pem);
        assert_eq!(creds.client_key, pem);
        assert_eq!(creds.cluster_ca, Some(dir.path().join("pki/ca.crt")));
    }

    #[test]
    fn a_token_kubeconfig_has_no_client_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let text = KUBEADM.replace(
            "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
            "    token: abc\n",
        );
        std::fs::write(&path, text).expect("write");
        assert_eq!(node_credentials(&path), None);
    }

    #[test]
    fn host_defaults_apply_outside_a_pod_only_and_never_over_explicit_keys() {
        let (_dir, creds) = kubeadm();
        let serving = Some(PathBuf::from(KUBELET_SERVING_CERT));
        let host = with_defaults_from(
            KubeletConfig::default(),
            false,
            false,
            Some(creds.clone()),
            serving.clone(),
        );
        assert_eq!(host.token_file, None);
        assert_eq!(host.client_cert_file, Some(creds.client_cert.clone()));
        assert_eq!(
            host.ca_file, serving,
            "the self-signed serving certificate first"
        );
        let no_serving = with_defaults_from(
            KubeletConfig::default(),
            false,
            false,
            Some(creds.clone()),
            None,
        );
        assert_eq!(no_serving.ca_file, creds.cluster_ca);

        let pod = with_defaults_from(
            KubeletConfig::default(),
            true,
            true,
            Some(creds.clone()),
            serving.clone(),
        );
        assert_eq!(pod, KubeletConfig::default());

        let explicit = KubeletConfig {
            token_file: Some("/etc/sonde/kubelet-token".into()),
            ca_file: Some("/etc/sonde/kubelet-ca.crt".into()),
            ..KubeletConfig::default()
        };
        assert_eq!(
            with_defaults_from(explicit.clone(), false, false, Some(creds), serving),
            explicit
        );
    }
}
