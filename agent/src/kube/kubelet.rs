//! The kubelet as a pod metadata source: `GET https://<node>:10250/pods` (or the read-only
//! `http://<node>:10255/pods`), authenticated with the service-account bearer token.
//!
//! - [`KubeletConfig`]: the `kubelet.*` configuration keys;
//! - [`KubeletClient`]: one HTTPS (or HTTP) request per fetch, with failures diagnosed
//!   precisely ([`KubeletError`]: each message names the cause and the fix);
//! - [`spawn_kubelet_source`]: the refresher task that keeps [`PodStore`]'s kubelet view
//!   current, on a timer and on demand, and never gives up or drops good data on errors.
//!
//! TLS is rustls with the ring provider only. The token is never logged: the header value is
//! marked sensitive and errors name the token's file, not its content.
//!
//! [`PodStore`]: super::store::PodStore

mod client;
mod error;
pub mod host;
mod source;
mod tls;
mod token;

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use client::KubeletClient;
pub use error::KubeletError;
pub use source::{KubeletHandle, KubeletSyncState, spawn_kubelet_source};

use super::node::{NODE_IP_ENV, resolve_node_name};

/// Where Kubernetes mounts the pod's service-account token.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where Kubernetes mounts the cluster CA next to the token.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The kubelet's authenticated HTTPS port.
pub const KUBELET_PORT: u16 = 10250;
/// The kubelet's unauthenticated read-only HTTP port (off unless the kubelet runs with
/// `--read-only-port=10255`).
pub const READ_ONLY_PORT: u16 = 10255;

/// The `kubelet.*` configuration (env `SONDE_KUBELET_URL`, `SONDE_KUBELET_TOKEN_FILE`, …).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeletConfig {
    /// `kubelet.enabled`: fetch pod metadata from the kubelet. `null` (default) decides at
    /// start: on when the host looks like a Kubernetes node ([`super::detect`]), off on a plain
    /// host.
    pub enabled: Option<bool>,
    /// `kubelet.url`: base URL of the kubelet; `/pods` is appended. `https://` without a port
    /// means 10250, `http://` means 10255. Default: `https://$NODE_IP:10250` (downward API
    /// `status.hostIP`), else `https://<node name>:10250`.
    pub url: Option<String>,
    /// `kubelet.token_file`: bearer token sent over HTTPS (never over plain HTTP), re-read
    /// when the file changes. `null` sends none.
    pub token_file: Option<PathBuf>,
    /// `kubelet.ca_file`: PEM CA bundle that signed the kubelet's serving certificate. Default:
    /// the service-account `ca.crt` (right when the cluster CA signs kubelet certificates,
    /// i.e. `serverTLSBootstrap: true`).
    pub ca_file: Option<PathBuf>,
    /// `kubelet.client_cert_file`, `kubelet.client_key_file`: a PEM client certificate (and
    /// its key) presented to the kubelet, e.g. the apiserver's kubelet client certificate on a
    /// control-plane node. `null`: none, or on a host install the node's own ([`host`]).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// `kubelet.tls_verify`: verify the kubelet's certificate. `false` is for kubelets with
    /// self-signed certificates; it is logged as a warning.
    pub tls_verify: bool,
    /// `kubelet.timeout`: limit for one whole request (connect, TLS, answer, body).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `kubelet.refresh_interval`: how often the pod list is fetched.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// `kubelet.min_refresh_interval`: on-demand refreshes (unknown container ids) are at most
    /// this frequent; also the first retry delay after a failure.
    #[serde(with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// `kubelet.max_body_bytes`: largest `/pods` body accepted (memory bound).
    pub max_body_bytes: u64,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            url: None,
            token_file: Some(PathBuf::from(DEFAULT_TOKEN_FILE)),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            tls_verify: true,
            timeout: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(15),
            min_refresh_interval: Duration::from_secs(1),
            max_body_bytes: 256 << 20,
        }
    }
}

impl KubeletConfig {
    /// `url`, else `https://$NODE_IP:10250`, else `https://<node name>:10250`.
    pub fn resolved_url(&self) -> String {
        if let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            return url.to_string();
        }
        let host = std::env::var(NODE_IP_ENV)
            .ok()
            .map(|ip| ip.trim().to_string())
            .filter(|ip| !ip.is_empty())
            .or_else(|| resolve_node_name(None).ok().map(|n| n.name))
            .unwrap_or_else(|| "127.0.0.1".into());
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("https://[{host}]:{KUBELET_PORT}"),
            Err(_) => format!("https://{host}:{KUBELET_PORT}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        let config: KubeletConfig = serde_json::from_str(
            r#"{"url": "https://node-1:10250", "token_file": "/t", "ca_file": "/ca.pem",
                "tls_verify": false, "timeout": "2s", "refresh_interval": "1m"}"#,
        )
        .expect("config parses");
        assert_eq!(config.url.as_deref(), Some("https://node-1:10250"));
        assert_eq!(config.token_file, Some(PathBuf::from("/t")));
        assert_eq!(config.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(!config.tls_verify);
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.refresh_interval, Duration::from_secs(60));
        assert_eq!(config.min_refresh_interval, Duration::from_secs(1));

        let config: KubeletConfig = serde_json::from_str(r#"{"token_file": null}"#).expect("null");
        assert_eq!(config.token_file, None);
        assert!(serde_json::from_str::<KubeletConfig>(r#"{"tls_verfy": false}"#).is_err());
        assert_eq!(
            KubeletConfig::default().token_file.as_deref(),
            Some(std::path::Path::new(DEFAULT_TOKEN_FILE))
        );
    }
}
