//! Leader election over a `coordination.k8s.io/v1` Lease, the protocol client-go's
//! leaderelection implements (and the reference agent uses): optimistic concurrency on the
//! Lease's resourceVersion, expiry judged on this agent's own monotonic clock (the time it saw
//! the Lease change, never the holder's timestamps, so clock skew between nodes does not
//! matter), and three durations:
//! - `lease_duration`: how long a Lease that stopped changing is respected before another
//!   agent takes it;
//! - `renew_deadline`: a leader that could not renew for this long stands down, by its own
//!   clock, before any other agent can take over (`renew_deadline < lease_duration`);
//! - `retry_period`: how often the leader renews and a stand-by tries.
//!
//! A stand-by also watches the Lease, so a release (on SIGTERM: [`Elector::release`]) is taken
//! over at once instead of a retry period later.
//!
//! Hand-written rather than kube-lease-manager 0.13.1, which was tried: its `watch()` keeps
//! reporting leadership while the apiserver is unreachable (no renew deadline), it does not
//! watch the Lease (a release is noticed up to a lease duration later), and its default field
//! manager is shared by every instance, which voids server-side apply's conflict protection.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::Serialize;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

/// The Lease every agent of a cluster contends for.
pub const LEASE_NAME: &str = "sonde-leader-election";

/// `leader_election.*`: whether this agent contends, and the timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// `null`: on in a pod whose apiserver metadata is on (`POD_NAMESPACE` or a service
    /// account namespace), off on a host.
    pub enabled: Option<bool>,
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_secs(30),
            retry_period: Duration::from_secs(15),
        }
    }
}

impl LeaderElectionConfig {
    /// `lease_duration > renew_deadline > retry_period`, as the protocol needs: the failing
    /// key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.renew_deadline >= self.lease_duration {
            return Err((
                "leader_election.renew_deadline",
                format!(
                    "{:?} must be shorter than leader_election.lease_duration ({:?}), so that a \
                     leader that cannot renew stands down before another may take over",
                    self.renew_deadline, self.lease_duration
                ),
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err((
                "leader_election.retry_period",
                format!(
                    "{:?} must be above 0 and shorter than leader_election.renew_deadline ({:?}), \
                     so that a leader tries to renew more than once before it stands down",
                    self.retry_period, self.renew_deadline
                ),
            ));
        }
        Ok(())
    }
}

/// The election's timing and its Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub namespace: String,
    /// This agent's name in the Lease (`POD_NAME`, else the host name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The reference agent's timing: 60 s, 30 s, 15 s.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            lease_name: LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_secs(30),
            retry_period: Duration::from_secs(15),
        }
    }
}

/// What the election looks like from this agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ElectionState {
    /// This agent's name in the Lease.
    pub identity: String,
    /// `<namespace>/<name>` of the Lease.
    pub lease: String,
    /// This agent leads: its leader-only tasks may run.
    pub leader: bool,
    /// The Lease's holder as last seen (`None`: free, or not read yet).
    pub holder: Option<String>,
    /// The Lease's `leaseTransitions` as last seen.
    pub transitions: i32,
    /// Times this agent became leader.
    pub terms: u64,
    /// The last failure to read or write the Lease, cleared by the next success.
    pub error: Option<String>,
}

/// The running election; dropping it stops it without releasing the Lease.
pub struct Elector {
    state: watch::Receiver<ElectionState>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts contending for the Lease on the current runtime.
    pub fn spawn(client: Client, config: ElectionConfig) -> Self {
        let (tx, rx) = watch::channel(ElectionState {
            identity: config.identity.clone(),
            lease: format!("{}/{}", config.namespace, config.lease_name),
            ..ElectionState::default()
        });
        let (release_tx, release_rx) = oneshot::channel();
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let task = tokio::spawn(run(api, config, tx, release_rx));
        Self {
            state: rx,
            release: Some(release_tx),
            task,
        }
    }

    /// The election's state, updated as it changes.
    pub fn subscribe(&self) -> watch::Receiver<ElectionState> {
        self.state.clone()
    }

    pub fn state(&self) -> ElectionState {
        self.state.borrow().clone()
    }

    /// Stops contending and, when leading, frees the Lease so another agent takes over at once
    /// (waits at most `within`). The state turns `leader: false` before the Lease is freed.
    pub async fn release(mut self, within: Duration) {
        if let Some(release) = self.release.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if release.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(within, done_rx).await;
            }
        }
        self.task.abort();
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Lease as last seen, and when this agent saw it change.
struct Observed {
    resource_version: Option<String>,
    spec: LeaseSpec,
    at: Instant,
}

enum Attempt {
    /// This agent holds the Lease (acquired or renewed).
    Held,
    /// Another agent holds it, or another agent's write came first.
    Lost,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

async fn attempt(
    api: &Api<Lease>,
    config: &ElectionConfig,
    observed: &mut Option<Observed>,
) -> Result<Attempt, kube::Error> {
    let current = tokio::time::timeout(config.retry_period, api.get_opt(&config.lease_name))
        .await
        .map_err(|_| timeout_error("get"))??;
    let Some(lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds(config.lease_duration)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                note(observed, &created);
                Ok(Attempt::Held)
            }
            Err(err) if conflict(&err) => Ok(Attempt::Lost),
            Err(err) => Err(err),
        };
    };
    note(observed, &lease);
    let seen = observed.as_ref().map(|o| o.at).unwrap_or_else(Instant::now);
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let ours = holder.as_deref() == Some(config.identity.as_str());
    let held_for = spec
        .lease_duration_seconds
        .map_or(config.lease_duration, |s| {
            Duration::from_secs(s.max(0) as u64)
        });
    if holder.is_some() && !ours && seen.elapsed() < held_for {
        return Ok(Attempt::Lost);
    }
    let mut next = spec.clone();
    next.holder_identity = Some(config.identity.clone());
    next.lease_duration_seconds = Some(seconds(config.lease_duration));
    next.renew_time = Some(now());
    if !ours {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    let mut replacement = lease.clone();
    replacement.spec = Some(next);
    let params = PostParams::default();
    let write = api.replace(&config.lease_name, &params, &replacement);
    match tokio::time::timeout(config.retry_period, write).await {
        Err(_) => Err(timeout_error("update")),
        Ok(Ok(updated)) => {
            note(observed, &updated);
            Ok(Attempt::Held)
        }
        Ok(Err(err)) if conflict(&err) => Ok(Attempt::Lost),
        Ok(Err(err)) => Err(err),
    }
}

fn timeout_error(verb: &str) -> kube::Error {
    kube::Error::Service(format!("the Lease {verb} did not answer within the retry period").into())
}

/// Records the Lease as seen now, restarting its expiry clock when it changed.
fn note(observed: &mut Option<Observed>, lease: &Lease) {
    let rv = lease.metadata.resource_version.clone();
    if observed.as_ref().is_some_and(|o| o.resource_version == rv) {
        return;
    }
    *observed = Some(Observed {
        resource_version: rv,
        spec: lease.spec.clone().unwrap_or_default(),
        at: Instant::now(),
    });
}

/// Frees the Lease if this agent still holds it.
async fn free(api: &Api<Lease>, config: &ElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    api.replace(&config.lease_name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

async fn run(
    api: Api<Lease>,
    config: ElectionConfig,
    tx: watch::Sender<ElectionState>,
    mut release: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut observed: Option<Observed> = None;
    let mut renewed: Option<Instant> = None;
    let watch_config =
        watcher::Config::default().fields(&format!("metadata.name={}", config.lease_name));
    let mut changes = watcher(api.clone(), watch_config).default_backoff().boxed();
    loop {
        // A leader stands down, on its own clock, when it has not renewed for renew_deadline:
        // an attempt is never allowed to run past that.
        let stand_down = renewed
            .filter(|_| tx.borrow().leader)
            .map(|at| at + config.renew_deadline);
        let bounded = tokio::time::timeout_at(
            stand_down.unwrap_or_else(|| Instant::now() + 4 * config.retry_period),
            attempt(&api, &config, &mut observed),
        );
        let result = match bounded.await {
            Ok(result) => result,
            Err(_) => Err(timeout_error("attempt")),
        };
        tx.send_modify(|s| {
            if let Some(o) = &observed {
                s.holder = o.spec.holder_identity.clone().filter(|h| !h.is_empty());
                s.transitions = o.spec.lease_transitions.unwrap_or(0);
            }
            match &result {
                Ok(Attempt::Held) => {
                    renewed = Some(Instant::now());
                    if !s.leader {
                        s.leader = true;
                        s.terms += 1;
                        tracing::info!(identity = %config.identity, lease = %config.lease_name,
                            "became the leader");
                    }
                    s.error = None;
                }
                Ok(Attempt::Lost) => {
                    if s.leader {
                        s.leader = false;
                        tracing::warn!(holder = ?s.holder, "the Lease was taken over: no longer the leader");
                    }
                    s.error = None;
                }
                Err(err) => {
                    s.error = Some(err.to_string());
                    tracing::debug!(%err, "Lease attempt failed");
                    if s.leader && stand_down.is_some_and(|d| d <= Instant::now()) {
                        s.leader = false;
                        tracing::warn!(deadline = ?config.renew_deadline, %err,
                            "could not renew the Lease within the renew deadline: no longer the leader");
                    }
                }
            }
        });
        let leader = tx.borrow().leader;
        let stand_down = renewed
            .filter(|_| leader)
            .map(|at| at + config.renew_deadline);
        let next_try = Instant::now() + config.retry_period;
        tokio::select! {
            done = &mut release => {
                let was_leader = tx.borrow().leader;
                tx.send_modify(|s| s.leader = false);
                if was_leader {
                    match tokio::time::timeout(config.retry_period, free(&api, &config)).await {
                        Ok(Ok(())) => tracing::info!(lease = %config.lease_name, "Lease released"),
                        Ok(Err(err)) => tracing::warn!(%err, "cannot release the Lease; another agent takes it over when it expires"),
                        Err(_) => tracing::warn!("releasing the Lease timed out; another agent takes it over when it expires"),
                    }
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            _ = tokio::time::sleep_until(stand_down.unwrap_or(next_try)), if stand_down.is_some_and(|d| d < next_try) => {
                tx.send_modify(|s| {
                    if s.leader {
                        s.leader = false;
                        tracing::warn!(deadline = ?config.renew_deadline, error = ?s.error,
                            "could not renew the Lease within the renew deadline: no longer the leader");
                    }
                });
            }
            _ = tokio::time::sleep_until(next_try) => {}
            // A stand-by tries at once when the Lease changes (a release).
            Some(_) = changes.next(), if !leader => {}
        }
    }
}
