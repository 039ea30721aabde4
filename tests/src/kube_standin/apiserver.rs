//! A test apiserver: list + watch over real HTTPS, as the Kubernetes apiserver serves them.
//!
//! - Resources: pods, nodes, namespaces, services (core/v1), replicasets (apps/v1), jobs
//!   (batch/v1), endpointslices (discovery.k8s.io/v1), cluster-wide paths only (what Sonde
//!   asks for).
//! - Lists carry the current `resourceVersion`; watches replay the history after the version
//!   asked for, then stream live `ADDED`/`MODIFIED`/`DELETED` events (one JSON object per
//!   line, chunked), a `BOOKMARK` at start and on [`ApiserverStandin::send_bookmarks`] when
//!   `allowWatchBookmarks=true`. A version older than the compaction point gets the apiserver's
//!   answer: HTTP 200 with one `ERROR` event whose Status has code 410 (`Expired`).
//! - `fieldSelector` with `a.b=value` terms is honoured (`spec.nodeName`, `metadata.name`).
//! - Lists are paginated when asked (`limit`, then `continue` tokens, in name order), as the
//!   apiserver does from etcd, and recent ones also from their watch cache
//!   (`resourceVersion=0`; older ones ignore `limit` there and send the whole list).
//! - Metadata-only requests (`Accept: …;as=PartialObjectMetadata…`) get
//!   `PartialObjectMetadata(List)` answers.
//! - Authentication: a bearer token; anything else gets the apiserver's 401 Status.
//!   Authorization: resources marked forbidden, or (with [`ApiserverStandin::enforce`]) what a
//!   ClusterRole policy does not grant, get the RBAC 403 Status naming verb, resource and API
//!   group; every request records what it needed ([`ApiserverStandin::grants_used`]).
//! - Faults: [`ApiserverStandin::cut_next_event`] cuts the next watch event mid-object (the
//!   connection drops); [`ApiserverStandin::pause_watches`] holds events back from open
//!   watches (a partition); [`ApiserverStandin::cut_watches`] ends every open watch;
//!   [`ApiserverStandin::compact`] makes every older version `410 Gone`.
//! - [`ApiserverStandin::write_kubeconfig`] writes a kubeconfig (server, CA file, token) so the
//!   agent uses its real kubeconfig path.
//!
//! Objects start from the real pods of the kubelet fixture (`podlist_containerd_k8s-1.35.json`)
//! and the objects they imply (their node, namespaces, ReplicaSets → Deployments, Jobs →
//! CronJobs); tests add Services, EndpointSlices and more.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, CONTENT_TYPE},
};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    payloads,
    pki::TestCa,
    rbac::{Grant, Policy},
    server::{Body, Handler, Router, TestServer, bearer, json as json_response},
};

/// The node the fixture's pods run on.
pub const FIXTURE_NODE: &str = "datagen-1-35";

/// A resource the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Pods,
    Nodes,
    Namespaces,
    ReplicaSets,
    Jobs,
    Services,
    EndpointSlices,
    /// Namespaced, also served by name: get, create, replace (see [`NAMESPACED`]).
    Leases,
    /// core/v1 events, listed and watched in all namespaces (what the leader collects).
    Events,
    /// Namespaced, also served by name: get, create, replace, merge-patch.
    ConfigMaps,
    /// The deprecated componentstatuses (cluster-scoped, list only).
    ComponentStatuses,
}

/// The namespaced resources the stand-in also serves per object, under
/// `<prefix><namespace>/<plural>[/<name>]`: get, list and watch in a namespace, create (409
/// AlreadyExists), replace (409 Conflict unless `metadata.resourceVersion` is current) and
/// JSON merge patch (404 when missing).
pub const NAMESPACED: [(Resource, &str); 2] = [
    (Resource::Leases, "/apis/coordination.k8s.io/v1/namespaces/"),
    (Resource::ConfigMaps, "/api/v1/namespaces/"),
];

impl Resource {
    /// The kinds the agent's apiserver metadata source watches (one watch each).
    pub const SOURCE_KINDS: [Resource; 7] = [
        Resource::Pods,
        Resource::Nodes,
        Resource::Namespaces,
        Resource::ReplicaSets,
        Resource::Jobs,
        Resource::Services,
        Resource::EndpointSlices,
    ];

    /// Every kind served: the source's, then the leader's.
    pub const ALL: [Resource; 11] = {
        let leaders = [
            Resource::Leases,
            Resource::Events,
            Resource::ConfigMaps,
            Resource::ComponentStatuses,
        ];
        let mut all = [Resource::Leases; 11];
        let mut i = 0;
        while i < Self::SOURCE_KINDS.len() {
            all[i] = Self::SOURCE_KINDS[i];
            i += 1;
        }
        while i < all.len() {
            all[i] = leaders[i - Self::SOURCE_KINDS.len()];
            i += 1;
        }
        all
    };

    /// The cluster-wide collection path.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Pods => "/api/v1/pods",
            Resource::Nodes => "/api/v1/nodes",
            Resource::Namespaces => "/api/v1/namespaces",
            Resource::Services => "/api/v1/services",
            Resource::ReplicaSets => "/apis/apps/v1/replicasets",
            Resource::Jobs => "/apis/batch/v1/jobs",
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Resource::Leases => "/apis/coordination.k8s.io/v1/leases",
            Resource::Events => "/api/v1/events",
            Resource::ConfigMaps => "/api/v1/configmaps",
            Resource::ComponentStatuses => "/api/v1/componentstatuses",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Nodes => "Node",
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::ReplicaSets => "ReplicaSet",
            Resource::Jobs => "Job",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Leases => "Lease",
            Resource::Events => "Event",
            Resource::ConfigMaps => "ConfigMap",
            Resource::ComponentStatuses => "ComponentStatus",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Pods
            | Resource::Nodes
            | Resource::Namespaces
            | Resource::Services
            | Resource::Events
            | Resource::ConfigMaps
            | Resource::ComponentStatuses => "v1",
            Resource::ReplicaSets => "apps/v1",
            Resource::Jobs => "batch/v1",
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            Resource::Leases => "coordination.k8s.io/v1",
        }
    }

    pub fn group(self) -> &'static str {
        match self.api_version().split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// The plural resource name (RBAC, URLs).
    pub fn plural(self) -> &'static str {
        self.path().rsplit('/').next().unwrap_or_default()
    }
}

/// A request as the stand-in saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenApiRequest {
    pub resource: Resource,
    pub watch: bool,
    /// The raw query string.
    pub query: String,
    pub bearer: Option<String>,
    /// Metadata-only (`as=PartialObjectMetadata`).
    pub metadata_only: bool,
    /// Refused by authorization (403).
    pub forbidden: bool,
}

impl SeenApiRequest {
    /// `list` or `watch` (the stand-in serves collections only).
    pub fn verb(&self) -> &'static str {
        if self.watch { "watch" } else { "list" }
    }

    /// The permission this request needs.
    pub fn grant(&self) -> Grant {
        (
            self.resource.group().to_string(),
            self.resource.plural().to_string(),
            self.verb().to_string(),
        )
    }

    /// A query parameter's (percent-decoded) value.
    pub fn param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

enum Chunk {
    Data(Bytes),
    /// Send these bytes, then drop the connection.
    Cut(Bytes),
}

struct LiveWatch {
    resource: Resource,
    selector: Vec<Term>,
    metadata_only: bool,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Chunk>,
}

struct HistoryEvent {
    rv: u64,
    resource: Resource,
    kind: &'static str,
    object: Value,
}

type Key = (Resource, String, String);

struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<HistoryEvent>,
    /// Watches from a version older than this get `410 Gone`.
    compacted: u64,
    watches: Vec<LiveWatch>,
    paused: bool,
    cut_next: Option<Resource>,
    /// Watch events cut mid-object so far.
    cuts: usize,
    token: String,
    forbidden: BTreeSet<Resource>,
    /// With a policy, only what it grants is allowed ([`ApiserverStandin::enforce`]).
    policy: Option<Policy>,
    seen: Vec<SeenApiRequest>,
    /// SelfSubjectAccessReviews asked: (group, resource[/subresource], verb).
    access_reviews: Vec<Grant>,
    /// Per-object requests (get, create, update) and whether they were refused as unavailable.
    object_requests: Vec<(Resource, &'static str, bool)>,
    /// Every per-object request answers 503 ([`ApiserverStandin::set_unavailable`]).
    unavailable: bool,
    /// Per-object requests refused with 403.
    forbidden_objects: Vec<(Resource, &'static str)>,
    /// Health sub-checks made to fail ([`ApiserverStandin::fail_health_check`]).
    failing_checks: BTreeSet<String>,
}

impl State {
    fn authorized(&self, resource: Resource, verb: &str) -> bool {
        self.allows(resource.group(), resource.plural(), verb)
    }

    /// `resource` may be `resource/subresource`, as RBAC names it.
    fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        !self
            .forbidden
            .iter()
            .any(|r| r.group() == group && r.plural() == resource)
            && self
                .policy
                .as_ref()
                .is_none_or(|p| p.allows(group, resource, verb))
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct ApiserverStandin {
    server: TestServer,
    state: Shared,
    ca: TestCa,
    dir: tempfile::TempDir,
}

/// The bearer token the stand-in accepts at start.
pub const STANDIN_TOKEN: &str = "sonde-test-apiserver-token";

impl ApiserverStandin {
    /// An HTTPS apiserver on 127.0.0.1 holding the fixture's pods and what they imply.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("sonde-test-apiserver-ca");
        ca.write_pem(&dir.path().join("ca.crt"));
        let state: Shared = Arc::new(Mutex::new(State {
            rv: 1000,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            watches: Vec::new(),
            paused: false,
            cut_next: None,
            cuts: 0,
            token: STANDIN_TOKEN.into(),
            forbidden: BTreeSet::new(),
            policy: None,
            access_reviews: Vec::new(),
            object_requests: Vec::new(),
            unavailable: false,
            forbidden_objects: Vec::new(),
            failing_checks: BTreeSet::new(),
            seen: Vec::new(),
        }));
        let tls = ca
            .issue_server_cert(&["127.0.0.1", "localhost"])
            .server_config();
        let server = TestServer::start(Some(tls), routes(Arc::clone(&state)));
        let standin = ApiserverStandin {
            server,
            state,
            ca,
            dir,
        };
        standin.seed_fixture();
        // The seed is the starting point, not history a watch could replay.
        standin.compact();
        standin
    }

    fn seed_fixture(&self) {
        let list: Value = serde_json::from_slice(&payloads::fixture(payloads::TEMPLATE_FIXTURE))
            .expect("fixture pod list");
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        let mut namespaces = BTreeSet::new();
        for pod in &pods {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
            namespaces.insert(ns.to_string());
            for owner in pod["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let name = owner["name"].as_str().unwrap_or_default();
                match owner["kind"].as_str() {
                    Some("ReplicaSet") => {
                        // <deployment>-<pod-template-hash>
                        let deployment = name.rsplit_once('-').map_or(name, |(d, _)| d);
                        self.apply(Resource::ReplicaSets, replica_set(ns, name, deployment));
                    }
                    Some("Job") => {
                        let cronjob = name
                            .rsplit_once('-')
                            .filter(|(_, suffix)| suffix.chars().all(|c| c.is_ascii_digit()))
                            .map(|(c, _)| c);
                        self.apply(Resource::Jobs, job(ns, name, cronjob));
                    }
                    _ => {}
                }
            }
            self.apply(Resource::Pods, pod.clone());
        }
        for ns in namespaces {
            self.apply(
                Resource::Namespaces,
                json!({"metadata": {"name": ns, "uid": format!("ns-{ns}"),
                       "labels": {"kubernetes.io/metadata.name": ns}}}),
            );
        }
        self.apply(
            Resource::Nodes,
            json!({"metadata": {"name": FIXTURE_NODE, "uid": "node-uid-1",
                   "labels": {"kubernetes.io/hostname": FIXTURE_NODE,
                              "topology.kubernetes.io/zone": "zone-a"}}}),
        );
    }

    /// Base URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// PEM file of the CA that signed the serving certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig for this server (its CA file and `token`) to `<dir>/<name>`.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: \
             {url}\n    certificate-authority: {ca}\nusers:\n- name: sonde\n  user:\n    token: \
             {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: \
             sonde\ncurrent-context: standin\n",
            url = self.url(),
            ca = self.ca_file().display(),
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kubeconfig with the valid token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.write_kubeconfig("kubeconfig", STANDIN_TOKEN)
    }

    /// Adds or replaces an object (keyed by namespace and name): an `ADDED` or `MODIFIED`
    /// event. Returns its new resourceVersion.
    pub fn apply(&self, resource: Resource, mut object: Value) -> u64 {
        let mut s = lock(&self.state);
        s.rv += 1;
        let rv = s.rv;
        object["kind"] = json!(resource.kind());
        object["apiVersion"] = json!(resource.api_version());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(resource, &object);
        let kind = if s.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.publish(HistoryEvent {
            rv,
            resource,
            kind,
            object,
        });
        rv
    }

    /// Adds or replaces the event [`kube_event`] makes; returns its resourceVersion.
    pub fn apply_event(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
        involved: &str,
        reason: &str,
        count: u32,
    ) -> u64 {
        self.apply(
            Resource::Events,
            kube_event(namespace, name, kind, involved, reason, count),
        )
    }

    /// Deletes an object: a `DELETED` event. Returns whether it existed.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> bool {
        let mut s = lock(&self.state);
        let key = (resource, namespace.to_string(), name.to_string());
        let Some(mut object) = s.objects.remove(&key) else {
            return false;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.publish(HistoryEvent {
            rv,
            resource,
            kind: "DELETED",
            object,
        });
        true
    }

    /// The stored object, as the stand-in holds it.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = (resource, namespace.to_string(), name.to_string());
        lock(&self.state).objects.get(&key).cloned()
    }

    /// All stored objects of a resource.
    pub fn objects(&self, resource: Resource) -> Vec<Value> {
        lock(&self.state)
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).rv
    }

    /// Forgets history: watches from any version older than the current one get `410 Gone`.
    pub fn compact(&self) {
        let mut s = lock(&self.state);
        s.compacted = s.rv;
        let compacted = s.compacted;
        s.history.retain(|e| e.rv > compacted);
    }

    /// While paused, changes are recorded but not sent to open watches (a partition).
    pub fn pause_watches(&self, paused: bool) {
        lock(&self.state).paused = paused;
    }

    /// Ends every open watch (cleanly, as the apiserver's watch timeout does).
    pub fn cut_watches(&self) {
        lock(&self.state).watches.clear();
    }

    /// Open watches, per resource.
    pub fn open_watches(&self, resource: Resource) -> usize {
        let mut s = lock(&self.state);
        s.watches.retain(|w| !w.tx.is_closed());
        s.watches.iter().filter(|w| w.resource == resource).count()
    }

    /// The next event for a watch of `resource` is sent half-way, then the connection drops.
    pub fn cut_next_event(&self, resource: Resource) {
        lock(&self.state).cut_next = Some(resource);
    }

    /// Sends `line` (plus a newline) as is to every open watch of `resource`: a malformed
    /// event.
    pub fn send_raw_line(&self, resource: Resource, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        let bytes = Bytes::from(bytes);
        lock(&self.state)
            .watches
            .retain(|w| w.resource != resource || w.tx.send(Chunk::Data(bytes.clone())).is_ok());
    }

    /// How many watch events were cut mid-object so far.
    pub fn cuts(&self) -> usize {
        lock(&self.state).cuts
    }

    /// Watch requests for `resource` so far.
    pub fn watch_requests(&self, resource: Resource) -> usize {
        lock(&self.state)
            .seen
            .iter()
            .filter(|r| r.resource == resource && r.watch)
            .count()
    }

    /// A `BOOKMARK` at the current version to every open watch that asked for bookmarks.
    pub fn send_bookmarks(&self) {
        let mut s = lock(&self.state);
        let rv = s.rv;
        s.watches.retain(|w| {
            !w.bookmarks
                || w.tx
                    .send(Chunk::Data(bookmark_line(w.resource, w.metadata_only, rv)))
                    .is_ok()
        });
    }

    /// Only `token` is accepted from now on.
    pub fn set_token(&self, token: &str) {
        lock(&self.state).token = token.to_string();
    }

    /// Requests for `resource` get the RBAC 403 (or, with `false`, are allowed again).
    pub fn forbid(&self, resource: Resource, forbidden: bool) {
        let mut s = lock(&self.state);
        if forbidden {
            s.forbidden.insert(resource);
        } else {
            s.forbidden.remove(&resource);
        }
    }

    /// From now on, only what `policy` grants is allowed; the rest gets the RBAC 403.
    pub fn enforce(&self, policy: Policy) {
        lock(&self.state).policy = Some(policy);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<SeenApiRequest> {
        lock(&self.state).seen.clone()
    }

    /// What the requests so far needed (`(group, resource, verb)`), allowed or not.
    pub fn grants_used(&self) -> BTreeSet<Grant> {
        let s = lock(&self.state);
        let objects = s.object_requests.iter().map(|(r, verb, _)| {
            (
                r.group().to_string(),
                r.plural().to_string(),
                verb.to_string(),
            )
        });
        s.seen
            .iter()
            .map(SeenApiRequest::grant)
            .chain(objects)
            .collect()
    }

    /// From now on, every per-object request (get, create, replace) answers 503, as an
    /// apiserver that cannot reach etcd does.
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.state).unavailable = unavailable;
    }

    /// The health sub-check `name` (`etcd`, `ping`, …) fails in `/readyz` and `/livez` (or,
    /// with `false`, passes again).
    pub fn fail_health_check(&self, name: &str, failing: bool) {
        let mut s = lock(&self.state);
        if failing {
            s.failing_checks.insert(name.to_string());
        } else {
            s.failing_checks.remove(name);
        }
    }

    /// Per-object requests so far: (resource, verb, answered 503).
    pub fn object_requests(&self) -> Vec<(Resource, &'static str, bool)> {
        lock(&self.state).object_requests.clone()
    }

    /// Per-object requests refused with 403: (resource, verb).
    pub fn forbidden_object_requests(&self) -> Vec<(Resource, &'static str)> {
        lock(&self.state).forbidden_objects.clone()
    }

    /// The SelfSubjectAccessReviews asked so far, in order.
    pub fn access_reviews(&self) -> Vec<Grant> {
        lock(&self.state).access_reviews.clone()
    }

    /// The list and watch requests so far that were refused with 403 (per-object ones:
    /// [`Self::forbidden_object_requests`]).
    pub fn forbidden_requests(&self) -> Vec<SeenApiRequest> {
        lock(&self.state)
            .seen
            .iter()
            .filter(|r| r.forbidden)
            .cloned()
            .collect()
    }

    /// List (not watch) requests for `resource` so far.
    pub fn list_requests(&self, resource: Resource) -> usize {
        lock(&self.state)
            .seen
            .iter()
            .filter(|r| r.resource == resource && !r.watch)
            .count()
    }
}

impl State {
    fn publish(&mut self, event: HistoryEvent) {
        if !self.paused {
            let cut = &mut self.cut_next;
            let cuts = &mut self.cuts;
            self.watches.retain(|w| {
                if w.resource != event.resource || !matches(&event.object, &w.selector) {
                    return !w.tx.is_closed();
                }
                let line = event_line(event.kind, &event.object, w.metadata_only);
                let chunk = if *cut == Some(w.resource) {
                    *cut = None;
                    *cuts += 1;
                    Chunk::Cut(line.slice(..line.len() / 2))
                } else {
                    Chunk::Data(line)
                };
                w.tx.send(chunk).is_ok()
            });
        }
        self.history.push(event);
    }
}

fn key_of(resource: Resource, object: &Value) -> Key {
    let meta = &object["metadata"];
    (
        resource,
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// A ReplicaSet owned by a Deployment.
pub fn replica_set(namespace: &str, name: &str, deployment: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace, "uid": format!("rs-{name}"),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
            "uid": format!("deploy-{deployment}"), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": deployment}}}})
}

/// A Job, owned by a CronJob when `cronjob` is given.
pub fn job(namespace: &str, name: &str, cronjob: Option<&str>) -> Value {
    let owners: Vec<Value> = cronjob
        .map(|c| {
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": c,
                   "uid": format!("cronjob-{c}"), "controller": true})
        })
        .into_iter()
        .collect();
    json!({"metadata": {"name": name, "namespace": namespace, "uid": format!("job-{name}"),
        "ownerReferences": owners},
        "spec": {"template": {"spec": {"containers": [{"name": "job", "image": "busybox"}]}}}})
}

/// A core/v1 Event about `kind` `namespace/involved`, as a controller reports it (UID
/// `ev-<namespace>-<name>`, `count` times, the time fields in RFC 3339).
pub fn kube_event(
    namespace: &str,
    name: &str,
    kind: &str,
    involved: &str,
    reason: &str,
    count: u32,
) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace,
                        "uid": format!("ev-{namespace}-{name}"),
                        "creationTimestamp": "2026-12-03T10:00:00Z"},
           "involvedObject": {"kind": kind, "namespace": namespace, "name": involved,
                              "uid": format!("obj-{involved}")},
           "reason": reason, "message": format!("{reason} of {kind} {involved}"),
           "type": if reason.starts_with("Failed") || reason == "BackOff" { "Warning" } else { "Normal" },
           "count": count, "source": {"component": "kubelet", "host": FIXTURE_NODE},
           "firstTimestamp": "2026-12-03T10:00:00Z",
           "lastTimestamp": format!("2026-12-03T10:{:02}:00Z", count.min(59))})
}

/// A componentstatus as the apiserver reports it: `Healthy` True, or False with `error`.
pub fn component_status(name: &str, error: Option<&str>) -> Value {
    let condition = match error {
        None => json!({"type": "Healthy", "status": "True", "message": "ok"}),
        Some(e) => json!({"type": "Healthy", "status": "False", "error": e}),
    };
    json!({"metadata": {"name": name}, "conditions": [condition]})
}

/// A ClusterIP Service.
pub fn service(namespace: &str, name: &str, cluster_ip: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("p{p}"), "port": p, "protocol": "TCP", "targetPort": p}))
        .collect();
    json!({"metadata": {"name": name, "namespace": namespace, "uid": format!("svc-{name}")},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": ports, "selector": {"app": name}}})
}

/// An EndpointSlice of `service`: one endpoint per `(address, pod name)`.
pub fn endpoint_slice(namespace: &str, name: &str, service: &str, pods: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(ip, pod)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
                   "nodeName": FIXTURE_NODE,
                   "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace,
                                 "uid": format!("pod-{pod}")}})
        })
        .collect();
    json!({"metadata": {"name": name, "namespace": namespace, "uid": format!("eps-{name}"),
        "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

// --- HTTP ---------------------------------------------------------------------------------

fn routes(state: Shared) -> Router {
    let mut router = Router::new();
    for resource in Resource::ALL {
        let state = Arc::clone(&state);
        let handler: Handler =
            Arc::new(move |request| Box::pin(serve(Arc::clone(&state), resource, request)));
        router = router.route(Method::GET, resource.path(), handler);
    }
    let prefixes: BTreeSet<&'static str> = NAMESPACED.iter().map(|(_, p)| *p).collect();
    for prefix in prefixes {
        for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH] {
            let state = Arc::clone(&state);
            let handler: Handler = Arc::new(move |request| {
                Box::pin(object_route(Arc::clone(&state), prefix, request))
            });
            router = router.prefix(method, prefix, handler);
        }
    }
    for endpoint in HEALTH_ENDPOINTS {
        let state = Arc::clone(&state);
        let handler: Handler =
            Arc::new(move |request| Box::pin(health(Arc::clone(&state), endpoint, request)));
        router = router.route(Method::GET, &format!("/{endpoint}"), handler);
    }
    for path in [SELF_SUBJECT_REVIEWS, SELF_SUBJECT_ACCESS_REVIEWS] {
        let state = Arc::clone(&state);
        let handler: Handler =
            Arc::new(move |request| Box::pin(review(Arc::clone(&state), path, request)));
        router = router.route(Method::POST, path, handler);
    }
    router
}

/// One object of a [`NAMESPACED`] resource: `GET` (one, or the namespace's list and watch),
/// `POST` (create), `PUT` (replace, with the resourceVersion precondition), `PATCH` (a JSON
/// merge patch of an existing object).
async fn object_route(
    state: Shared,
    prefix: &'static str,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let rest = path.strip_prefix(prefix).unwrap_or_default();
    let mut parts = rest.split('/');
    let (namespace, plural, name) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default(),
        parts.next().map(str::to_string),
    );
    let Some(resource) = NAMESPACED
        .iter()
        .find(|(r, p)| *p == prefix && r.plural() == plural)
        .map(|(r, _)| *r)
    else {
        return status_response(
            404,
            &status(404, "NotFound", "no such resource", json!(null)),
        );
    };
    let method = request.method().clone();
    if method == Method::GET && name.is_none() {
        return serve_in(state, resource, Some(namespace), request).await;
    }
    let bearer = bearer(&request);
    let Some(body) = read_body(request).await else {
        return status_response(400, &status(400, "BadRequest", "body", json!(null)));
    };
    let verb = match (&method, &name) {
        (&Method::GET, _) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        _ => return status_response(405, &status(405, "MethodNotAllowed", "method", json!(null))),
    };
    let mut s = lock(&state);
    let unavailable = s.unavailable;
    s.object_requests.push((resource, verb, unavailable));
    if s.unavailable {
        return status_response(
            503,
            &status(
                503,
                "ServiceUnavailable",
                "the stand-in is unavailable",
                json!(null),
            ),
        );
    }
    if bearer.as_deref() != Some(s.token.as_str()) {
        return unauthorized();
    }
    if !s.allows(resource.group(), resource.plural(), verb) {
        s.forbidden_objects.push((resource, verb));
        return forbidden_response(resource, verb, &format!("in the namespace \"{namespace}\""));
    }
    let not_found = |name: &str| {
        status_response(
            404,
            &status(
                404,
                "NotFound",
                &format!("{} \"{name}\" not found", resource.plural()),
                json!({"name": name, "kind": resource.plural()}),
            ),
        )
    };
    let key = |name: &str| (resource, namespace.clone(), name.to_string());
    match verb {
        "get" => {
            let name = name.unwrap_or_default();
            match s.objects.get(&key(&name)) {
                Some(object) => json_response(serde_json::to_vec(object).unwrap_or_default()),
                None => not_found(&name),
            }
        }
        _ => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return status_response(400, &status(400, "BadRequest", "not JSON", json!(null)));
            };
            let object_name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let target = name.clone().unwrap_or_else(|| object_name.clone());
            let current = s.objects.get(&key(&target)).cloned();
            match (verb, &current) {
                ("create", Some(_)) => {
                    return status_response(
                        409,
                        &status(
                            409,
                            "AlreadyExists",
                            "already exists",
                            json!({"name": target}),
                        ),
                    );
                }
                ("update" | "patch", None) => return not_found(&target),
                ("patch", Some(current)) => {
                    let mut merged = current.clone();
                    merge_patch(&mut merged, &object);
                    object = merged;
                }
                ("update", Some(current)) => {
                    let sent = object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default();
                    let stored = current["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default();
                    if sent != stored {
                        return status_response(
                            409,
                            &status(
                                409,
                                "Conflict",
                                "Operation cannot be fulfilled: the object has been modified; \
                                 please apply your changes to the latest version and try again",
                                json!({"name": target}),
                            ),
                        );
                    }
                }
                _ => {}
            }
            s.rv += 1;
            let rv = s.rv;
            object["kind"] = json!(resource.kind());
            object["apiVersion"] = json!(resource.api_version());
            object["metadata"]["namespace"] = json!(namespace);
            object["metadata"]["name"] = json!(target);
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.objects.insert(key(&target), object.clone());
            s.publish(HistoryEvent {
                rv,
                resource,
                kind: if current.is_some() {
                    "MODIFIED"
                } else {
                    "ADDED"
                },
                object: object.clone(),
            });
            let mut response = json_response(serde_json::to_vec(&object).unwrap_or_default());
            if verb == "create" {
                *response.status_mut() = StatusCode::CREATED;
            }
            response
        }
    }
}

/// The apiserver's health endpoints, and their sub-checks as a 1.3x apiserver lists them.
const HEALTH_ENDPOINTS: [&str; 2] = ["readyz", "livez"];
const HEALTH_CHECKS: [&str; 6] = [
    "ping",
    "log",
    "etcd",
    "informer-sync",
    "poststarthook/start-apiserver-admission-initializer",
    "shutdown",
];

/// `GET /readyz` or `/livez`: `ok` (200), or with `?verbose` one line per sub-check; a failing
/// check answers 500, as the apiserver does.
async fn health(
    state: Shared,
    endpoint: &'static str,
    request: Request<Incoming>,
) -> Response<Body> {
    let verbose = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let failing = lock(&state).failing_checks.clone();
    let mut body = String::new();
    for check in HEALTH_CHECKS {
        if failing.contains(check) {
            body.push_str(&format!("[-]{check} failed: reason withheld\n"));
        } else {
            body.push_str(&format!("[+]{check} ok\n"));
        }
    }
    let ok = HEALTH_CHECKS.iter().all(|c| !failing.contains(*c));
    let text = match (verbose, ok) {
        (false, true) => "ok".to_string(),
        (true, true) => format!("{body}{endpoint} check passed\n"),
        (_, false) => format!("{body}{endpoint} check failed\n"),
    };
    let mut response = Response::new(super::server::full(text.into_bytes()));
    if !ok {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    response
}

const SELF_SUBJECT_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const SELF_SUBJECT_ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
/// Who the test token authenticates as.
pub const AGENT_USER: &str = "system:serviceaccount:sonde:sonde";

/// `POST` of a SelfSubjectReview (who am I) or a SelfSubjectAccessReview (may I), answered as
/// the apiserver does: after authentication, open to every authenticated user, the access
/// decided by the same policy as the requests.
async fn review(state: Shared, path: &'static str, request: Request<Incoming>) -> Response<Body> {
    let bearer = bearer(&request);
    let Some(body) = read_body(request).await else {
        return status_response(400, &status(400, "BadRequest", "body", json!(null)));
    };
    let object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = lock(&state);
    if bearer.as_deref() != Some(s.token.as_str()) {
        return unauthorized();
    }
    let answer = if path == SELF_SUBJECT_REVIEWS {
        json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {}, "status": {"userInfo": {"username": AGENT_USER,
               "groups": ["system:serviceaccounts", "system:authenticated"]}}})
    } else {
        let attrs = &object["spec"]["resourceAttributes"];
        let text = |key: &str| attrs[key].as_str().unwrap_or_default().to_string();
        let resource = match text("subresource").as_str() {
            "" => text("resource"),
            sub => format!("{}/{sub}", text("resource")),
        };
        let (group, verb) = (text("group"), text("verb"));
        let allowed = s.allows(&group, &resource, &verb);
        s.access_reviews.push((group, resource, verb));
        let mut answer = object.clone();
        answer["status"] = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"sonde\""})
        } else {
            json!({"allowed": false})
        };
        answer
    };
    let mut response = json_response(serde_json::to_vec(&answer).unwrap_or_default());
    *response.status_mut() = StatusCode::CREATED;
    response
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One term of a field selector: `path=value` (or `==`), or `path!=value` (`negated`).
#[derive(Clone, Debug)]
struct Term {
    path: String,
    value: String,
    negated: bool,
}

/// `a.b=value,c!=d` → the terms, ANDed.
fn parse_selector(text: &str) -> Vec<Term> {
    text.split(',')
        .filter_map(|term| {
            let (path, value, negated) = match term.split_once("!=") {
                Some((p, v)) => (p, v, true),
                None => {
                    let (p, v) = term.split_once('=')?;
                    (p, v.trim_start_matches('='), false)
                }
            };
            Some(Term {
                path: path.trim().to_string(),
                value: value.trim().to_string(),
                negated,
            })
        })
        .collect()
}

fn matches(object: &Value, selector: &[Term]) -> bool {
    selector.iter().all(|t| {
        let mut v = object;
        for part in t.path.split('.') {
            v = &v[part];
        }
        let have = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (have == t.value) != t.negated
    })
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

/// The apiserver's 401: no valid token.
fn unauthorized() -> Response<Body> {
    status_response(
        401,
        &status(401, "Unauthorized", "Unauthorized", json!(null)),
    )
}

/// The RBAC 403 naming the verb, resource, API group and `scope` ("at the cluster scope", "in
/// the namespace …").
fn forbidden_response(resource: Resource, verb: &str, scope: &str) -> Response<Body> {
    let message = format!(
        "{plural} is forbidden: User \"{AGENT_USER}\" cannot {verb} resource \"{plural}\" in API \
         group \"{group}\" {scope}",
        plural = resource.plural(),
        group = resource.group(),
    );
    status_response(
        403,
        &status(
            403,
            "Forbidden",
            &message,
            json!({"kind": resource.plural(), "group": resource.group()}),
        ),
    )
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(map) = target.as_object_mut() {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// A request's whole body; `None` if it broke off.
async fn read_body(request: Request<Incoming>) -> Option<Bytes> {
    request
        .into_body()
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

fn status_response(code: u16, body: &Value) -> Response<Body> {
    let mut response = json_response(serde_json::to_vec(body).unwrap_or_default());
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

/// The object as a list item or watch object: whole, or metadata only.
fn shape(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": object["metadata"]})
    } else {
        object.clone()
    }
}

fn event_line(kind: &str, object: &Value, metadata_only: bool) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": shape(object, metadata_only)}))
            .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(resource: Resource, metadata_only: bool, rv: u64) -> Bytes {
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    } else {
        (resource.kind(), resource.api_version())
    };
    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()}}}))
    .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn serve(state: Shared, resource: Resource, request: Request<Incoming>) -> Response<Body> {
    serve_in(state, resource, None, request).await
}

/// List or watch `resource`, in `namespace` when given.
async fn serve_in(
    state: Shared,
    resource: Resource,
    namespace: Option<String>,
    request: Request<Incoming>,
) -> Response<Body> {
    let query = request.uri().query().unwrap_or_default().to_string();
    let bearer = bearer(&request);
    let metadata_only = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let watch = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
    let rv_param = query_param(&query, "resourceVersion").unwrap_or_default();
    let mut selector = parse_selector(&query_param(&query, "fieldSelector").unwrap_or_default());
    if let Some(namespace) = namespace {
        selector.push(Term {
            path: "metadata.namespace".into(),
            value: namespace,
            negated: false,
        });
    }
    let bookmarks = query_param(&query, "allowWatchBookmarks").as_deref() == Some("true");

    let mut s = lock(&state);
    let verb = if watch { "watch" } else { "list" };
    let forbidden = !s.authorized(resource, verb);
    s.seen.push(SeenApiRequest {
        resource,
        watch,
        query: query.clone(),
        bearer: bearer.clone(),
        metadata_only,
        forbidden,
    });
    // The apiserver authenticates, then authorizes, then serves.
    if bearer.as_deref() != Some(s.token.as_str()) {
        return unauthorized();
    }
    if forbidden {
        return forbidden_response(resource, verb, "at the cluster scope");
    }

    if !watch {
        // Pagination as the apiserver does it: `limit` items per page in key order, and a
        // `continue` token naming the list's version and the last key sent.
        let limit: usize = query_param(&query, "limit")
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > 0)
            .unwrap_or(usize::MAX);
        let after = query_param(&query, "continue").and_then(|token| {
            let (rv, key) = token.split_once('/')?;
            let (namespace, name) = key.split_once('/')?;
            Some((
                rv.parse::<u64>().ok()?,
                namespace.to_string(),
                name.to_string(),
            ))
        });
        let list_rv = after.as_ref().map_or(s.rv, |(rv, _, _)| *rv);
        let mut matching = s
            .objects
            .iter()
            .filter(|((r, _, _), o)| *r == resource && matches(o, &selector))
            .filter(|((_, namespace, name), _)| {
                after
                    .as_ref()
                    .is_none_or(|(_, ns, n)| (namespace, name) > (ns, n))
            });
        let page: Vec<(&Key, &Value)> = matching.by_ref().take(limit).collect();
        let remaining = matching.count();
        let next = page
            .last()
            .filter(|_| remaining > 0)
            .map(|((_, ns, n), _)| format!("{list_rv}/{ns}/{n}"));
        let items: Vec<Value> = page
            .into_iter()
            .map(|(_, o)| {
                let mut item = shape(o, metadata_only);
                if !metadata_only && let Some(map) = item.as_object_mut() {
                    // List items carry no kind/apiVersion, as the apiserver sends them.
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                item
            })
            .collect();
        let (kind, api_version) = if metadata_only {
            ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
        } else {
            (format!("{}List", resource.kind()), resource.api_version())
        };
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(remaining);
        }
        let list = json!({"kind": kind, "apiVersion": api_version,
                          "metadata": metadata, "items": items});
        return json_response(serde_json::to_vec(&list).unwrap_or_default());
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let from: u64 = rv_param.parse().unwrap_or(0);
    if from != 0 && from < s.compacted {
        let gone = status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({})", s.compacted),
            json!(null),
        );
        let mut line =
            serde_json::to_vec(&json!({"type": "ERROR", "object": gone})).unwrap_or_default();
        line.push(b'\n');
        let _ = tx.send(Chunk::Data(Bytes::from(line)));
        drop(tx);
        return watch_response(rx);
    }
    if from == 0 {
        // "Any version": synthetic ADDED events for the current state.
        for ((r, _, _), o) in &s.objects {
            if *r == resource && matches(o, &selector) {
                let _ = tx.send(Chunk::Data(event_line("ADDED", o, metadata_only)));
            }
        }
    } else {
        for event in &s.history {
            if event.rv > from && event.resource == resource && matches(&event.object, &selector) {
                let _ = tx.send(Chunk::Data(event_line(
                    event.kind,
                    &event.object,
                    metadata_only,
                )));
            }
        }
    }
    if bookmarks {
        let _ = tx.send(Chunk::Data(bookmark_line(resource, metadata_only, s.rv)));
    }
    s.watches.push(LiveWatch {
        resource,
        selector,
        metadata_only,
        bookmarks,
        tx,
    });
    drop(s);
    watch_response(rx)
}

fn watch_response(rx: mpsc::UnboundedReceiver<Chunk>) -> Response<Body> {
    let body = WatchBody { rx, pause: None }.boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A chunked watch body fed by the stand-in; ends when the watch is dropped, fails (the
/// connection drops) after a cut chunk.
struct WatchBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for WatchBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(pause) = self.pause.as_mut() {
            return match pause.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "stand-in cut the watch mid-object",
                )))),
            };
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Chunk::Data(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Chunk::Cut(bytes))) => {
                // Let the half object leave before the connection drops.
                self.pause = Some(Box::pin(tokio::time::sleep(
                    std::time::Duration::from_millis(100),
                )));
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
        }
    }
}
