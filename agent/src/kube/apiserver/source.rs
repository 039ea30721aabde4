//! The apiserver source: builds the client, starts one watch per kind, and hands out the
//! views they fill.
//!
//! Configuration that cannot work (source disabled, unreadable kubeconfig, no in-cluster
//! service account) is refused at once by [`spawn_apiserver_source`]. Everything else (an
//! unreachable apiserver, 401, 403, a broken stream) is retried with backoff and reported per
//! kind in [`ApiserverSyncState`]; the views keep what they had.

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    batch::v1::Job,
    core::v1::{Namespace, Node},
};
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        watcher::{self, watcher},
    },
};
use tokio::{sync::watch, task::JoinSet};

use super::{
    ApiserverError, KubernetesConfig,
    config::{NODE_KUBECONFIGS, node_kubeconfig},
    kind::WatchKind,
    labels::{LabelIndex, Labels},
    owners::{OwnerIndex, OwnerLink},
    sinks::{NamespaceSink, NodeSink, OwnerSink, PodSink, ServiceSink, SliceSink},
    slim::{EndpointSlice, Pod, Service},
    sync::ApiserverSyncState,
    watch::{WatchContext, run},
};
use crate::kube::{
    pods::OwnerRef,
    services::RemoteIndex,
    source::{Backoff, SourceHandle},
    store::PodStore,
};

/// Objects per list page.
const LIST_PAGE_SIZE: u32 = 500;

/// First retry delay of a failing watch or client build.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The running apiserver source: a [`SourceHandle`] (state, subscribe, wait_for; dropping it
/// stops every watch, the views keep their data) with the views the watches fill.
pub struct ApiserverHandle {
    source: SourceHandle<ApiserverSyncState>,
    owners: Arc<OwnerIndex>,
    labels: Arc<LabelIndex>,
}

impl std::ops::Deref for ApiserverHandle {
    type Target = SourceHandle<ApiserverSyncState>;

    fn deref(&self) -> &Self::Target {
        &self.source
    }
}

impl ApiserverHandle {
    /// The workload a pod's owner belongs to (a ReplicaSet's or Job's controller, of any
    /// kind); see [`OwnerIndex::workload`].
    pub fn workload(&self, owner: &OwnerRef, namespace: &str) -> OwnerRef {
        self.owners.workload(owner, namespace)
    }

    /// The owner links, shareable with the enrichment.
    pub fn owners(&self) -> Arc<OwnerIndex> {
        Arc::clone(&self.owners)
    }

    /// Node and namespace labels, shareable with the enrichment.
    pub fn labels(&self) -> Arc<LabelIndex> {
        Arc::clone(&self.labels)
    }

    /// This node's labels, once the node was seen.
    pub fn node_labels(&self) -> Option<Labels> {
        self.labels.node()
    }
}

/// How the client is made.
pub(crate) enum Credentials {
    Kubeconfig {
        path: PathBuf,
        kubeconfig: Box<Kubeconfig>,
        context: Option<String>,
    },
    InCluster(Box<kube::Config>),
}

impl Credentials {
    /// The credentials `config` names: its kubeconfig, else the in-cluster service account,
    /// else (a host install on a node) the kubelet's kubeconfig.
    pub(crate) fn resolve(config: &KubernetesConfig) -> Result<Self, ApiserverError> {
        let read = |path: &std::path::Path| {
            Kubeconfig::read_from(path).map_err(|e| ApiserverError::Kubeconfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        if let Some(path) = &config.kubeconfig {
            return Ok(Credentials::Kubeconfig {
                path: path.clone(),
                kubeconfig: Box::new(read(path)?),
                context: config.context.clone(),
            });
        }
        match kube::Config::incluster() {
            Ok(incluster) => Ok(Credentials::InCluster(Box::new(incluster))),
            // Not in a pod: a host install on a node uses the kubelet's kubeconfig.
            Err(e) => match node_kubeconfig(NODE_KUBECONFIGS) {
                Some(path) => {
                    let kubeconfig = read(&path)?;
                    tracing::info!(
                        path = %path.display(),
                        "not in a pod: using the kubelet's kubeconfig for the apiserver"
                    );
                    Ok(Credentials::Kubeconfig {
                        path,
                        kubeconfig: Box::new(kubeconfig),
                        context: config.context.clone(),
                    })
                }
                None => Err(ApiserverError::InCluster {
                    reason: e.to_string(),
                }),
            },
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Credentials::Kubeconfig { path, .. } => format!("kubeconfig {}", path.display()),
            Credentials::InCluster(_) => "the in-cluster service account".into(),
        }
    }

    /// A client and the server's URL.
    pub(crate) async fn client(&self) -> Result<(Client, String), String> {
        let config = match self {
            Credentials::Kubeconfig {
                kubeconfig,
                context,
                ..
            } => {
                let options = KubeConfigOptions {
                    context: context.clone(),
                    ..KubeConfigOptions::default()
                };
                kube::Config::from_custom_kubeconfig((**kubeconfig).clone(), &options)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Credentials::InCluster(config) => (**config).clone(),
        };
        let server = config.cluster_url.to_string();
        let server = server.trim_end_matches('/').to_string();
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        Ok((client, server))
    }
}

/// Starts the apiserver source on the current tokio runtime: one watch per kind — this
/// node's pods (`spec.nodeName=<node_name>`) into `pod_store` ([`PodSource::Apiserver`]),
/// this node and the namespaces (labels), ReplicaSets and Jobs (owner links), Services and
/// EndpointSlices into `remote`.
///
/// Errors only for configuration that cannot work; see [`ApiserverError`].
///
/// [`PodSource::Apiserver`]: crate::kube::store::PodSource::Apiserver
pub fn spawn_apiserver_source(
    config: KubernetesConfig,
    node_name: &str,
    pod_store: Arc<PodStore>,
    remote: Arc<RemoteIndex>,
) -> Result<ApiserverHandle, ApiserverError> {
    if !config.enabled {
        return Err(ApiserverError::Disabled);
    }
    let credentials = Credentials::resolve(&config)?;
    let (tx, rx) = watch::channel(ApiserverSyncState {
        credentials: credentials.describe(),
        ..ApiserverSyncState::default()
    });
    let owners = Arc::new(OwnerIndex::new());
    let labels = Arc::new(LabelIndex::new(
        config.node_labels.clone(),
        config.namespace_labels.clone(),
    ));
    let supervisor = Supervisor {
        config,
        node_name: node_name.to_string(),
        credentials,
        pod_store,
        remote,
        owners: Arc::clone(&owners),
        labels: Arc::clone(&labels),
        state: tx,
    };
    let task = tokio::spawn(supervisor.run());
    Ok(ApiserverHandle {
        source: SourceHandle::new(rx, task),
        owners,
        labels,
    })
}

struct Supervisor {
    config: KubernetesConfig,
    node_name: String,
    credentials: Credentials,
    pod_store: Arc<PodStore>,
    remote: Arc<RemoteIndex>,
    owners: Arc<OwnerIndex>,
    labels: Arc<LabelIndex>,
    state: watch::Sender<ApiserverSyncState>,
}

impl Supervisor {
    async fn run(self) {
        let mut backoff = Backoff::new(FIRST_BACKOFF, self.config.max_backoff);
        let describe = self.credentials.describe();
        let (client, server) = loop {
            match self.credentials.client().await {
                Ok(built) => break built,
                Err(reason) => {
                    let error = ApiserverError::Client {
                        credentials: describe.clone(),
                        reason,
                    };
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %error, retry_in = ?wait,
                        "cannot build the apiserver client");
                    self.state
                        .send_modify(|s| s.client_error = Some(error.to_string()));
                    tokio::time::sleep(wait).await;
                }
            }
        };
        tracing::info!(%server, credentials = %describe, node = %self.node_name,
            "apiserver client ready; starting watches");
        self.state.send_modify(|s| {
            s.server = server.clone();
            s.client_error = None;
        });

        let mut tasks = JoinSet::new();
        let cx = |kind: WatchKind| {
            self.state.send_modify(|s| {
                s.kinds.entry(kind).or_default();
            });
            WatchContext {
                kind,
                server: server.clone(),
                credentials: describe.clone(),
                state: self.state.clone(),
            }
        };
        let backoff = || Backoff::new(FIRST_BACKOFF, self.config.max_backoff);
        // The cached list (resourceVersion=0) is served from the apiserver's watch cache, not
        // etcd: cheap when every node's agent lists at once. Lists are asked for in pages of
        // LIST_PAGE_SIZE, so a large cluster's Services arrive (and are decoded) a page at a
        // time; an apiserver too old to paginate its watch cache sends the whole list at once.
        let base = watcher::Config::default()
            .any_semantic()
            .page_size(LIST_PAGE_SIZE);

        let pods = watcher(
            Api::<Pod>::all(client.clone()),
            base.clone()
                .fields(&format!("spec.nodeName={}", self.node_name)),
        )
        .backoff(backoff());
        let sink = PodSink {
            store: Arc::clone(&self.pod_store),
            listed: Vec::new(),
        };
        tasks.spawn(run(pods, sink, cx(WatchKind::Pods)));

        // The node and namespaces only for the labels the configuration shows.
        if WatchKind::Node.wanted(&self.config) {
            let node = watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                base.clone()
                    .fields(&format!("metadata.name={}", self.node_name)),
            )
            .backoff(backoff());
            let sink = NodeSink {
                labels: Arc::clone(&self.labels),
                node_name: self.node_name.clone(),
                listed: None,
            };
            tasks.spawn(run(node, sink, cx(WatchKind::Node)));
        }
        if WatchKind::Namespaces.wanted(&self.config) {
            let namespaces = watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                base.clone(),
            )
            .backoff(backoff());
            let sink = NamespaceSink {
                labels: Arc::clone(&self.labels),
                listed: Vec::new(),
            };
            tasks.spawn(run(namespaces, sink, cx(WatchKind::Namespaces)));
        }

        if WatchKind::ReplicaSets.wanted(&self.config) {
            let replica_sets = watcher(
                Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
                base.clone(),
            )
            .backoff(backoff());
            let sink = OwnerSink {
                owners: Arc::clone(&self.owners),
                link: OwnerLink::ReplicaSet,
                listed: Vec::new(),
            };
            tasks.spawn(run(replica_sets, sink, cx(WatchKind::ReplicaSets)));

            let jobs = watcher(
                Api::<PartialObjectMeta<Job>>::all(client.clone()),
                base.clone(),
            )
            .backoff(backoff());
            let sink = OwnerSink {
                owners: Arc::clone(&self.owners),
                link: OwnerLink::Job,
                listed: Vec::new(),
            };
            tasks.spawn(run(jobs, sink, cx(WatchKind::Jobs)));
        }

        if WatchKind::Services.wanted(&self.config) {
            let services =
                watcher(Api::<Service>::all(client.clone()), base.clone()).backoff(backoff());
            let sink = ServiceSink {
                remote: Arc::clone(&self.remote),
                listed: Vec::new(),
            };
            tasks.spawn(run(services, sink, cx(WatchKind::Services)));

            let slices =
                watcher(Api::<EndpointSlice>::all(client.clone()), base.clone()).backoff(backoff());
            let sink = SliceSink {
                remote: Arc::clone(&self.remote),
                listed: Vec::new(),
            };
            tasks.spawn(run(slices, sink, cx(WatchKind::EndpointSlices)));
        }

        // The watches never end; a panic in one is logged and the others go on.
        while let Some(result) = tasks.join_next().await {
            if let Err(err) = result
                && err.is_panic()
            {
                tracing::error!(error = %err, "an apiserver watch task panicked (a bug)");
            }
        }
    }
}
