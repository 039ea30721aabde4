//! Work done once per cluster, not once per node: the agents elect one leader ([`leader`]),
//! which runs the cluster's duties while the others stand by.

pub mod leader;

use std::{path::Path, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::kube::apiserver::{KubernetesConfig, source::Credentials};

use leader::{ElectionConfig, Elector, LeaderElectionConfig};

/// How long stopping waits for the leader's Lease to be freed.
const LEASE_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The downward API's pod name and namespace.
pub const POD_NAME_ENV: &str = "POD_NAME";
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The namespace of the pod's service account, as Kubernetes mounts it.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The agent's namespace: `POD_NAMESPACE`, else the service account's, else
/// `kubernetes.namespace`.
pub fn own_namespace(kube: &KubernetesConfig) -> String {
    env(POD_NAMESPACE_ENV)
        .or_else(|| {
            std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_NAMESPACE))
                .ok()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| kube.namespace.clone())
}

/// This agent's name in the election: `POD_NAME`, else the host name.
pub fn identity() -> String {
    env(POD_NAME_ENV).unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| format!("sonde-{}", std::process::id()))
    })
}

/// Whether this agent contends: `leader_election.enabled`, else when it runs in a pod with
/// the apiserver source on.
pub fn election_wanted(election: &LeaderElectionConfig, kube: &KubernetesConfig) -> bool {
    election.enabled.unwrap_or_else(|| {
        kube.enabled
            && kube.has_credentials()
            && (env(POD_NAMESPACE_ENV).is_some() || Path::new(SERVICE_ACCOUNT_NAMESPACE).exists())
    })
}

/// Starts the election when wanted; a failure to build the client is logged and the agent
/// runs on as a stand-by that never leads (the reason is in the log and `/v1/status`).
pub async fn start_election(
    election: &LeaderElectionConfig,
    kube: &KubernetesConfig,
) -> Option<Elector> {
    if !election_wanted(election, kube) {
        return None;
    }
    let client = match Credentials::resolve(kube) {
        Ok(credentials) => match credentials.client().await {
            Ok((client, _)) => client,
            Err(reason) => {
                tracing::warn!(%reason, "leader election off: cannot build the apiserver client");
                return None;
            }
        },
        Err(err) => {
            tracing::warn!(%err, "leader election off");
            return None;
        }
    };
    let config = ElectionConfig {
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
        ..ElectionConfig::new(&own_namespace(kube), &identity())
    };
    tracing::info!(identity = %config.identity, namespace = %config.namespace,
        lease = %config.lease_name, "contending for the cluster's leader Lease");
    Some(Elector::spawn(client, config))
}

/// Frees the Lease as soon as `stop` turns true (or its sender goes), while the pipeline
/// drains, so another agent takes over at once; await the task before exiting.
pub fn release_on_stop(elector: Elector, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        elector.release(LEASE_RELEASE_WAIT).await;
    })
}
