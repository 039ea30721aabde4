//! This node's control-plane components: the scheduler's and the controller-manager's
//! `/healthz` (their serving certificates are self-signed under kubeadm: accepted unless
//! `controlplane.components_ca_file` is set) and etcd's `/health` with the node's etcd client
//! certificate. Each is checked every `controlplane.interval`; the files are read at each check,
//! so a renewed certificate is used at once.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::watch, task::JoinHandle, time::timeout};
use tokio_rustls::TlsConnector;

use super::{ComponentHealth, ControlPlaneConfig, NodeComponents, STATIC_POD_DIR};

/// A check that takes longer fails.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// An `https://host:port/path` to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| {
            format!("{url:?} is not a URL ({e}). Fix: write https://host:port/path")
        })?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{url:?} is not an https:// URL. Fix: write https://host:port/path (the components serve HTTPS only)"
            ));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Self { host, port, path })
    }
}

/// One component to check.
#[derive(Clone, Debug)]
struct Component {
    name: &'static str,
    /// Its kubeadm static pod manifest (for `auto`).
    manifest: &'static str,
    url: String,
    roots: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    /// The body must say `"health":"true"` (etcd).
    etcd: bool,
}

fn under(host_root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(relative) if host_root != Path::new("/") => host_root.join(relative),
        _ => path.to_path_buf(),
    }
}

fn components(config: &ControlPlaneConfig, host_root: &Path) -> Vec<Component> {
    let ca = config
        .components_ca_file
        .as_ref()
        .map(|p| under(host_root, p));
    let all = [
        Component {
            name: "scheduler",
            manifest: "kube-scheduler.yaml",
            url: config.scheduler_url.clone(),
            roots: ca.clone(),
            client: None,
            etcd: false,
        },
        Component {
            name: "controller-manager",
            manifest: "kube-controller-manager.yaml",
            url: config.controller_manager_url.clone(),
            roots: ca,
            client: None,
            etcd: false,
        },
        Component {
            name: "etcd",
            manifest: "etcd.yaml",
            url: config.etcd_url.clone(),
            roots: Some(under(host_root, &config.etcd_ca_file)),
            client: Some((
                under(host_root, &config.etcd_cert_file),
                under(host_root, &config.etcd_key_file),
            )),
            etcd: true,
        },
    ];
    let manifests = under(host_root, Path::new(STATIC_POD_DIR));
    all.into_iter()
        .filter(|c| match config.node_components {
            NodeComponents::On => true,
            NodeComponents::Off => false,
            NodeComponents::Auto => manifests.join(c.manifest).exists(),
        })
        .collect()
}

/// Starts checking this node's components, when there are any to check.
pub fn spawn(
    config: &ControlPlaneConfig,
    host_root: &Path,
) -> Option<(JoinHandle<()>, watch::Receiver<Vec<ComponentHealth>>)> {
    let list = components(config, host_root);
    if list.is_empty() {
        return None;
    }
    let names: Vec<&str> = list.iter().map(|c| c.name).collect();
    tracing::info!(?names, "checking this node's control-plane components");
    let (tx, rx) = watch::channel(
        list.iter()
            .map(|c| ComponentHealth {
                component: c.name.to_string(),
                url: c.url.clone(),
                ..ComponentHealth::default()
            })
            .collect(),
    );
    let interval = config.interval;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, c) in list.iter().enumerate() {
                let started = Instant::now();
                let result = check(c).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1e3;
                tx.send_modify(|all: &mut Vec<ComponentHealth>| {
                    let h = &mut all[i];
                    h.checks += 1;
                    h.latency_ms = latency_ms;
                    match &result {
                        Ok(()) => {
                            if !h.up && h.checks > 1 {
                                tracing::info!(component = c.name, "control-plane component healthy again");
                            }
                            h.up = true;
                            h.error = None;
                        }
                        Err(err) => {
                            if h.up || h.checks == 1 {
                                tracing::warn!(component = c.name, error = %err, "control-plane component unhealthy");
                            }
                            h.up = false;
                            h.failures += 1;
                            h.error = Some(err.clone());
                        }
                    }
                });
            }
        }
    });
    Some((task, rx))
}

async fn check(c: &Component) -> Result<(), String> {
    let target = Target::parse(&c.url)?;
    let roots = c
        .roots
        .as_ref()
        .map(|p| crate::tls::load_roots(p).map_err(|e| format!("the CA file {e}")))
        .transpose()?;
    let client = c
        .client
        .as_ref()
        .map(|(cert, key)| {
            let chain =
                crate::tls::load_certs(cert).map_err(|e| format!("the client certificate {e}"))?;
            let key = crate::tls::load_key(key).map_err(|e| format!("the client key {e}"))?;
            Ok::<_, String>((chain, key))
        })
        .transpose()?;
    let tls = crate::tls::client::config(roots, client).map_err(|e| format!("TLS setup: {e}"))?;
    match timeout(CHECK_TIMEOUT, get(&target, tls)).await {
        Err(_) => Err(format!("{} did not answer within {CHECK_TIMEOUT:?}", c.url)),
        Ok(Err(err)) => Err(format!("{}: {err}", c.url)),
        Ok(Ok((status, body))) => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if !status.is_success() {
                return Err(format!("{} answered {status}: {text}", c.url));
            }
            if c.etcd {
                let health: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    format!("{} answered {text:?}, not etcd's health JSON ({e})", c.url)
                })?;
                if health["health"] != "true" {
                    return Err(format!("etcd reports itself unhealthy: {text}"));
                }
            }
            Ok(())
        }
    }
}

async fn get(
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(http::StatusCode, Bytes), String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect ({e})"))?;
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| format!("{} is not a valid TLS name: {e}", target.host))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get(target.path.as_str())
        .header(
            http::header::HOST,
            format!("{}:{}", target.host, target.port),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    super::status_and_body(response).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_files_resolve_under_the_host_root() {
        let t = Target::parse("https://127.0.0.1:2379/health").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 2379, "/health")
        );
        assert!(Target::parse("http://127.0.0.1:10259/healthz").is_err());
        assert_eq!(
            under(
                Path::new("/host"),
                Path::new("/etc/kubernetes/pki/etcd/ca.crt")
            ),
            Path::new("/host/etc/kubernetes/pki/etcd/ca.crt")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/etc/x")),
            Path::new("/etc/x")
        );
    }

    #[test]
    fn auto_checks_the_components_whose_static_pods_are_on_this_node() {
        let root = tempfile::tempdir().unwrap();
        let config = ControlPlaneConfig::default();
        assert!(components(&config, root.path()).is_empty());
        let dir = root.path().join("etc/kubernetes/manifests");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("etcd.yaml"), "kind: Pod").unwrap();
        let names: Vec<&str> = components(&config, root.path())
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["etcd"]);
        let on = ControlPlaneConfig {
            node_components: NodeComponents::On,
            ..config
        };
        assert_eq!(components(&on, root.path()).len(), 3);
    }
}
