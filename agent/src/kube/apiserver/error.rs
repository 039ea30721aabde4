//! Why the apiserver source cannot do its job, in words that name the cause and the fix.

use std::path::PathBuf;

use kube::runtime::watcher;

use super::kind::WatchKind;

#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    // --- configuration -------------------------------------------------------------------
    #[error(
        "the apiserver source is disabled (kubernetes.enabled: false); pods are named from the \
         kubelet only, and remote addresses and workloads are not resolved"
    )]
    Disabled,
    #[error(
        "cannot use the kubeconfig {path} (kubernetes.kubeconfig): {reason}. Fix: point \
         kubernetes.kubeconfig at a readable kubeconfig holding the apiserver's URL, its CA and \
         the agent's credentials, or unset it to use the in-cluster service account"
    )]
    Kubeconfig { path: PathBuf, reason: String },
    #[error(
        "no apiserver configuration: kubernetes.kubeconfig is unset, the in-cluster service \
         account cannot be used ({reason}) and no kubelet kubeconfig was found \
         (/etc/kubernetes/kubelet.conf, /var/lib/kubelet/kubeconfig, \
         /var/lib/rancher/k3s/agent/kubelet.kubeconfig). Fix: run the agent as a pod with a \
         service account (automountServiceAccountToken: true), or set kubernetes.kubeconfig, or \
         set kubernetes.enabled: false on hosts without Kubernetes"
    )]
    InCluster { reason: String },
    #[error(
        "cannot build an apiserver client from {credentials}: {reason}. Fix: check the server \
         URL, CA and credentials it names"
    )]
    Client { credentials: String, reason: String },

    // --- network and TLS -----------------------------------------------------------------
    #[error(
        "cannot reach the apiserver at {server} to {verb} {kind}: {detail}. Fix: check the \
         server URL in {credentials} and that the node can reach it (network policy, firewall, \
         the apiserver being up); Sonde keeps retrying"
    )]
    Unreachable {
        server: String,
        credentials: String,
        kind: WatchKind,
        verb: &'static str,
        detail: String,
    },
    #[error(
        "TLS with the apiserver at {server} failed: {detail}. Fix: the CA in {credentials} \
         (certificate-authority, or the service account's ca.crt) must be the one that signed \
         the apiserver's serving certificate, and the server URL must be a name or IP the \
         certificate holds"
    )]
    Tls {
        server: String,
        credentials: String,
        detail: String,
    },

    // --- HTTP ----------------------------------------------------------------------------
    #[error(
        "the apiserver at {server} rejected the agent's credentials from {credentials} (401 \
         Unauthorized{said}): the token is invalid, expired or for another cluster. Fix: give \
         the agent a current service-account token (in-cluster tokens are re-read as the \
         kubelet rotates them; a kubeconfig's token must be replaced by hand)"
    )]
    Unauthorized {
        server: String,
        credentials: String,
        said: String,
    },
    #[error(
        "the apiserver at {server} forbids the agent to {verb} {kind} (403 Forbidden{said}): \
         the agent's identity lacks RBAC permission. Fix: add the rule {rule} to the agent's \
         ClusterRole (and bind it to the agent's service account with a ClusterRoleBinding)"
    )]
    Forbidden {
        server: String,
        kind: WatchKind,
        verb: &'static str,
        rule: String,
        said: String,
    },
    #[error(
        "the apiserver at {server} does not serve {kind} (API group {group:?}) (404 Not \
         Found{said}). Fix: Sonde needs Kubernetes 1.21 or newer (discovery.k8s.io/v1 \
         EndpointSlices, batch/v1 Jobs); on older clusters set kubernetes.watch_services: false"
    )]
    NotServed {
        server: String,
        kind: WatchKind,
        group: &'static str,
        said: String,
    },
    #[error(
        "the apiserver at {server} answered {code} to {verb} {kind}{said}. Fix: check the \
         apiserver's health (kubectl get --raw /readyz); Sonde keeps retrying"
    )]
    Status {
        server: String,
        kind: WatchKind,
        verb: &'static str,
        code: u16,
        said: String,
    },
    #[error(
        "the {kind} answer from the apiserver at {server} was unusable ({detail}). Fix: check \
         that the server URL points at a Kubernetes apiserver, not at a proxy or another \
         service"
    )]
    Malformed {
        server: String,
        kind: WatchKind,
        detail: String,
    },
    #[error(
        "{verb} {kind} at the apiserver {server} failed: {detail}. Fix: check the apiserver's \
         health and the network path to it; Sonde keeps retrying"
    )]
    Other {
        server: String,
        kind: WatchKind,
        verb: &'static str,
        detail: String,
    },
}

/// What a watcher error means for the watch.
#[derive(Debug)]
pub(super) enum Diagnosis {
    /// `410 Gone`: the resourceVersion was compacted; the watcher re-lists by itself.
    Expired,
    /// The watch stream broke mid-way; the watcher resumes from the last resourceVersion.
    StreamBroken(String),
    /// A real failure, recorded and retried with backoff.
    Failure(ApiserverError),
}

/// Where a failure happened, for its message.
pub(crate) struct Context<'a> {
    pub server: &'a str,
    pub credentials: &'a str,
    pub kind: WatchKind,
}

pub(super) fn diagnose(err: &watcher::Error, cx: &Context<'_>) -> Diagnosis {
    match err {
        watcher::Error::InitialListFailed(e) => Diagnosis::Failure(client_error(e, "list", cx)),
        watcher::Error::WatchStartFailed(e) => Diagnosis::Failure(client_error(e, "watch", cx)),
        watcher::Error::WatchError(status) if status.code == 410 => Diagnosis::Expired,
        watcher::Error::WatchError(status) => {
            Diagnosis::Failure(status_error(status.code, &status.message, "watch", cx))
        }
        watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => {
                Diagnosis::Failure(status_error(status.code, &status.message, "watch", cx))
            }
            other => Diagnosis::StreamBroken(chain(other)),
        },
        watcher::Error::NoResourceVersion => Diagnosis::Failure(ApiserverError::Malformed {
            server: cx.server.to_string(),
            kind: cx.kind,
            detail: "a list without metadata.resourceVersion".into(),
        }),
    }
}

/// A failed request of `verb` on `cx.kind`, named by its cause.
pub(crate) fn client_error(
    err: &kube::Error,
    verb: &'static str,
    cx: &Context<'_>,
) -> ApiserverError {
    if let kube::Error::Api(status) = err {
        return status_error(status.code, &status.message, verb, cx);
    }
    if let kube::Error::SerdeError(e) = err {
        return ApiserverError::Malformed {
            server: cx.server.to_string(),
            kind: cx.kind,
            detail: e.to_string(),
        };
    }
    let detail = chain(err);
    if has_source::<rustls::Error>(err) || mentions_tls(&detail) {
        return ApiserverError::Tls {
            server: cx.server.to_string(),
            credentials: cx.credentials.to_string(),
            detail,
        };
    }
    if is_unreachable(err, &detail) {
        return ApiserverError::Unreachable {
            server: cx.server.to_string(),
            credentials: cx.credentials.to_string(),
            kind: cx.kind,
            verb,
            detail,
        };
    }
    ApiserverError::Other {
        server: cx.server.to_string(),
        kind: cx.kind,
        verb,
        detail,
    }
}

fn status_error(code: u16, message: &str, verb: &'static str, cx: &Context<'_>) -> ApiserverError {
    let said = if message.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", crate::kube::snippet(message, 300))
    };
    let server = cx.server.to_string();
    match code {
        401 => ApiserverError::Unauthorized {
            server,
            credentials: cx.credentials.to_string(),
            said,
        },
        403 => ApiserverError::Forbidden {
            server,
            kind: cx.kind,
            verb,
            rule: cx.kind.rbac_rule(),
            said,
        },
        404 => ApiserverError::NotServed {
            server,
            kind: cx.kind,
            group: cx.kind.api_group(),
            said,
        },
        _ => ApiserverError::Status {
            server,
            kind: cx.kind,
            verb,
            code,
            said,
        },
    }
}

/// The error and its sources, joined (deduplicated: wrappers often repeat their source).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    crate::kube::snippet(&parts.join(": "), 500)
}

fn has_source<T: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<T>().is_some() {
            return true;
        }
        next = e.source();
    }
    false
}

fn mentions_tls(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|w| lower.contains(w))
}

fn is_unreachable(err: &(dyn std::error::Error + 'static), detail: &str) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        next = e.source();
    }
    let lower = detail.to_ascii_lowercase();
    [
        "connection refused",
        "dns error",
        "timed out",
        "unreachable",
        "error trying to connect",
    ]
    .iter()
    .any(|w| lower.contains(w))
}
