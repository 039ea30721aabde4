//! Why a kubelet request failed, in words that name the cause and the fix.

use std::{path::PathBuf, time::Duration};

use humantime::format_duration;

use crate::kube::pods::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    // --- configuration -------------------------------------------------------------------
    #[error(
        "invalid kubelet.url {url:?}: {reason}. Fix: use https://<node>:10250 (or the read-only \
         http://<node>:10255)"
    )]
    InvalidUrl { url: String, reason: String },
    #[error(
        "cannot use the CA file {path} (kubelet.ca_file): {reason}. Fix: point kubelet.ca_file \
         at a PEM file holding the CA certificate that signed the kubelet's serving \
         certificate, or set kubelet.tls_verify: false"
    )]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "no CA to verify the kubelet's certificate with: kubelet.ca_file is unset and the \
         service-account CA {default} does not exist. Fix: set kubelet.ca_file, or set \
         kubelet.tls_verify: false for kubelets with self-signed certificates"
    )]
    NoCa { default: PathBuf },
    #[error(
        "cannot use the kubelet client certificate {cert} with the key {key} \
         (kubelet.client_cert_file, kubelet.client_key_file): {reason}. Fix: point both at \
         readable PEM files of one pair (on kubeadm nodes \
         /var/lib/kubelet/pki/kubelet-client-current.pem holds both), or unset them and use \
         kubelet.token_file"
    )]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error(
        "cannot read the bearer token from {path} (kubelet.token_file): {source}. Fix: mount a \
         service-account token there (automountServiceAccountToken: true), or set \
         kubelet.token_file to the token's path"
    )]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the bearer token file {path} (kubelet.token_file) {reason}. Fix: point \
         kubelet.token_file at a service-account token file"
    )]
    TokenUnusable { path: PathBuf, reason: &'static str },

    // --- network -------------------------------------------------------------------------
    #[error(
        "cannot resolve the kubelet host {host}: {source}. Fix: set kubelet.url to the node's IP \
         (in a DaemonSet: env NODE_IP from status.hostIP) or to a resolvable name"
    )]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "the kubelet at {addr} refused the connection: nothing listens there. Fix: check \
         kubelet.url (the kubelet's HTTPS port is 10250; the read-only port 10255 is usually \
         disabled) and that the agent can reach the node (hostNetwork: true, or the node IP)"
    )]
    ConnectRefused { addr: String },
    #[error(
        "connecting to the kubelet at {addr} timed out after {} (kubelet.timeout). Fix: check \
         that {addr} is this node's address and that no firewall or network policy blocks \
         the port",
        format_duration(*timeout)
    )]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error(
        "cannot connect to the kubelet at {addr}: {source}. Fix: check kubelet.url and the \
         network path to the node"
    )]
    Connect {
        addr: String,
        source: std::io::Error,
    },

    // --- TLS -----------------------------------------------------------------------------
    #[error(
        "the kubelet at {addr} presented a certificate not trusted by the CA in {ca_file} \
         ({detail}). Fix: set kubelet.ca_file to the CA that signed the kubelet's serving \
         certificate; kubelets with self-signed certificates have none: then set \
         kubelet.tls_verify: false, or enable serverTLSBootstrap so that the cluster CA signs \
         them"
    )]
    CertificateUntrusted {
        addr: String,
        ca_file: PathBuf,
        detail: String,
    },
    #[error(
        "the kubelet's certificate at {addr} is not valid for the name {name}, which Sonde \
         connected with (the certificate holds: {presented}). Fix: set kubelet.url to a name \
         the certificate holds, usually the node name (https://<node-name>:10250), or set \
         kubelet.tls_verify: false"
    )]
    CertificateNameMismatch {
        addr: String,
        name: String,
        presented: String,
    },
    #[error(
        "the kubelet's certificate at {addr} is expired or not yet valid ({detail}). Fix: check \
         the clocks of the node, and renew the kubelet's serving certificate"
    )]
    CertificateExpired { addr: String, detail: String },
    #[error("TLS handshake with the kubelet at {addr} failed: {detail}. Fix: {fix}")]
    Tls {
        addr: String,
        detail: String,
        fix: &'static str,
    },

    // --- HTTP ----------------------------------------------------------------------------
    #[error(
        "the kubelet at {url} did not {stage} within {} (kubelet.timeout): it is overloaded or \
         stuck. Fix: raise kubelet.timeout, or check the kubelet's health on the node \
         (journalctl -u kubelet)",
        format_duration(*timeout)
    )]
    Timeout {
        url: String,
        stage: &'static str,
        timeout: Duration,
    },
    #[error(
        "the kubelet at {url} rejected the bearer token read from {token_file} (401 \
         Unauthorized): the token is invalid or expired. Fix: make sure {token_file} \
         (kubelet.token_file) holds a current service-account token (Sonde re-reads it before \
         each request, so rotation is picked up) and that the kubelet authenticates tokens \
         (--authentication-token-webhook=true)"
    )]
    Unauthorized { url: String, token_file: PathBuf },
    #[error(
        "the kubelet at {url} requires authentication (401 Unauthorized) and no token was sent: \
         kubelet.token_file is unset. Fix: set kubelet.token_file to a service-account token"
    )]
    UnauthorizedNoToken { url: String },
    #[error(
        "the kubelet at {url} refused to list pods (403 Forbidden{said}): the agent's identity \
         lacks RBAC permission; the kubelet authorizes GET /pods as the node subresource \
         nodes/proxy. Fix: bind the agent's service account to a ClusterRole with the rule \
         {{apiGroups: [\"\"], resources: [\"nodes/proxy\"], verbs: [\"get\"]}} (Kubernetes \
         1.32+ with KubeletFineGrainedAuthz also accepts resources: [\"nodes/pods\"]), or use \
         the kubelet's read-only port, which needs no authorization: kubelet.url: \
         http://<node>:10255 (only if the kubelet runs with --read-only-port=10255)"
    )]
    Forbidden { url: String, said: String },
    #[error(
        "the kubelet at {url} answered {status}{said}. Fix: check that kubelet.url points at \
         the kubelet (GET {url} must return a PodList)"
    )]
    Status {
        url: String,
        status: http::StatusCode,
        said: String,
    },
    #[error(
        "HTTP exchange with the kubelet at {url} failed: {detail}. Fix: check that kubelet.url \
         points at the kubelet and its scheme (https for 10250, http for 10255) is right"
    )]
    Http { url: String, detail: String },
    #[error(
        "the kubelet at {url} closed the connection after {received} of {expected} bytes of the \
         /pods body ({detail}); Sonde keeps its last good pod list and retries. Fix: if it \
         repeats, check the kubelet's logs and any proxy between"
    )]
    BodyCut {
        url: String,
        received: u64,
        expected: String,
        detail: String,
    },
    #[error(
        "the kubelet's /pods body at {url} exceeds {limit} bytes (kubelet.max_body_bytes). Fix: \
         raise kubelet.max_body_bytes"
    )]
    BodyTooLarge { url: String, limit: u64 },
    #[error(
        "the kubelet at {url} sent a malformed /pods body ({len} bytes, starting {start:?}): \
         {source}; Sonde keeps its last good pod list. Fix: check that kubelet.url points at a \
         kubelet, not at a proxy or another service"
    )]
    Malformed {
        url: String,
        len: usize,
        start: String,
        source: ParseError,
    },
    #[error("internal error talking to the kubelet: {0} (a bug; please report it)")]
    Internal(String),
}

impl KubeletError {
    /// A configuration problem: retrying without a config or file change will not help.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            KubeletError::InvalidUrl { .. }
                | KubeletError::CaFile { .. }
                | KubeletError::NoCa { .. }
                | KubeletError::ClientCert { .. }
                | KubeletError::TokenFile { .. }
                | KubeletError::TokenUnusable { .. }
        )
    }
}

/// Up to `max` characters of a peer's bytes, on one line, for an error message.
pub(super) fn snippet(bytes: &[u8], max: usize) -> String {
    crate::kube::snippet(&String::from_utf8_lossy(bytes), max)
}
