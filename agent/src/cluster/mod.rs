//! Work done once per cluster, not once per node: the agents elect one leader ([`leader`]),
//! which runs the cluster's duties ([`duties`]: the Kubernetes events, [`events`]; the
//! apiserver's health, [`controlplane`]) while the others stand by. Every agent on a
//! control-plane node also checks its own node's components ([`controlplane::components`]).

pub mod controlplane;
pub mod duties;
pub mod events;
pub mod leader;

use std::{path::Path, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::kube::apiserver::{KubernetesConfig, source::Credentials};

use controlplane::{
    ComponentHealth, ControlPlaneConfig, EndpointHealth, apiserver::ApiserverChecks,
};
use duties::{Duties, Duty};
use events::{
    EventFeed, KubeEventsConfig,
    collect::{Endpoint, KubeEventsState, Setup},
    token::TokenStore,
};
use leader::{ElectionConfig, ElectionState, Elector, LeaderElectionConfig};

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

/// The leader's reading of the apiserver's health: the endpoints, and `componentstatuses`.
pub type ApiserverHealth = (Vec<EndpointHealth>, Vec<ComponentHealth>);

/// The election and the leader's duties of a running agent.
pub struct Cluster {
    elector: Elector,
    duties: Duties,
    events: Option<watch::Receiver<KubeEventsState>>,
    apiserver_health: Option<watch::Receiver<ApiserverHealth>>,
}

impl Cluster {
    pub fn election(&self) -> watch::Receiver<ElectionState> {
        self.elector.subscribe()
    }

    /// The Kubernetes events collector's state, when it is on.
    pub fn events(&self) -> Option<watch::Receiver<KubeEventsState>> {
        self.events.clone()
    }

    /// The apiserver's health as the leader reads it, when on (`controlplane.enabled`).
    pub fn apiserver_health(&self) -> Option<watch::Receiver<ApiserverHealth>> {
        self.apiserver_health.clone()
    }

    /// Hands over as soon as `stop` turns true (or its sender goes), while the pipeline drains:
    /// the duties end gracefully (their last events delivered, the token written), then the
    /// Lease is freed so another agent takes over at once. Await the task before exiting.
    pub fn release_on_stop(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            self.duties.stop().await;
            self.elector.release(LEASE_RELEASE_WAIT).await;
        })
    }
}

/// Starts the election when wanted, and the leader's duties on it; the feed is the pipeline's
/// end of the Kubernetes events (`None` when `kube_events.enabled` is off). A failure to build
/// the client is logged and the agent runs on without (the reason is in the log).
pub async fn start(
    election: &LeaderElectionConfig,
    kube: &KubernetesConfig,
    events: &KubeEventsConfig,
    controlplane: &ControlPlaneConfig,
) -> Option<(Cluster, Option<EventFeed>)> {
    if !election_wanted(election, kube) {
        return None;
    }
    let credentials = match Credentials::resolve(kube) {
        Ok(credentials) => credentials,
        Err(err) => {
            tracing::warn!(%err, "leader election off");
            return None;
        }
    };
    let (client, server) = match credentials.client().await {
        Ok(built) => built,
        Err(reason) => {
            tracing::warn!(%reason, "leader election off: cannot build the apiserver client");
            return None;
        }
    };
    let namespace = own_namespace(kube);
    let identity = identity();
    let config = ElectionConfig {
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
        ..ElectionConfig::new(&namespace, &identity)
    };
    tracing::info!(identity = %config.identity, namespace = %config.namespace,
        lease = %config.lease_name, "contending for the cluster's leader Lease");
    let elector = Elector::spawn(client.clone(), config);
    let mut duties: Vec<Box<dyn Duty>> = Vec::new();
    let (mut feed, mut events_state) = (None, None);
    if events.enabled {
        let (sender, pipeline_end) = events::feed();
        let (state_tx, state_rx) = watch::channel(KubeEventsState::default());
        duties.push(Box::new(Setup {
            client: client.clone(),
            config: events.clone(),
            feed: sender,
            tokens: TokenStore::new(client.clone(), &namespace, &identity),
            endpoint: Endpoint {
                server,
                credentials: credentials.describe(),
            },
            state: state_tx,
            max_backoff: kube.max_backoff,
        }));
        feed = Some(pipeline_end);
        events_state = Some(state_rx);
    }
    let mut apiserver_health = None;
    if controlplane.enabled {
        let (tx, rx) = watch::channel(ApiserverHealth::default());
        duties.push(Box::new(ApiserverChecks {
            client,
            interval: controlplane.interval,
            componentstatuses: controlplane.componentstatuses,
            state: tx,
        }));
        apiserver_health = Some(rx);
    }
    let duties = Duties::spawn(elector.subscribe(), duties);
    Some((
        Cluster {
            elector,
            duties,
            events: events_state,
            apiserver_health,
        },
        feed,
    ))
}
