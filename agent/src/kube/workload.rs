//! The workload a pod belongs to. With the apiserver, its owner chain says it: the controller
//! of the pod's ReplicaSet or Job, whatever its kind (a Deployment, a CronJob, an Argo Rollout
//! or any other custom controller), from the [`OwnerIndex`]. Without it (the kubelet alone, or
//! an owner the index does not know yet) the pod's own fields imply it ([`by_name`]): a
//! ReplicaSet named `<deployment>-<pod-template-hash>` whose pods carry that hash label belongs
//! to the Deployment; a Job named `<cronjob>-<scheduled minute>` belongs to the CronJob. Other
//! owners (StatefulSet, DaemonSet, a bare ReplicaSet or Job, a Node for mirror pods) are the
//! workload themselves.

use std::sync::Arc;

use super::{
    apiserver::OwnerIndex,
    pods::{OwnerRef, PodMeta},
};

/// Label the Deployment controller puts on its ReplicaSets' pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The top-level controller of `pod` as its own fields imply it, or `None` for a bare pod.
/// Computed once, when the pod is decoded ([`PodMeta::workload`]).
pub fn by_name(pod: &PodMeta) -> Option<OwnerRef> {
    let owner = pod.owner.as_ref()?;
    let parent = match owner.kind.as_str() {
        "ReplicaSet" => pod
            .labels
            .get(POD_TEMPLATE_HASH)
            .and_then(|hash| owner.name.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|name| !name.is_empty())
            .map(|name| ("Deployment", name)),
        "Job" => owner
            .name
            .rsplit_once('-')
            .filter(|(name, minute)| {
                !name.is_empty() && minute.len() >= 8 && minute.bytes().all(|b| b.is_ascii_digit())
            })
            .map(|(name, _)| ("CronJob", name)),
        _ => None,
    };
    let (kind, name) = parent.unwrap_or((owner.kind.as_str(), owner.name.as_str()));
    Some(OwnerRef {
        kind: kind.to_string(),
        name: name.to_string(),
    })
}

/// Names a pod's workload: the apiserver's owner chain when it runs and knows the owner, else
/// what the pod's fields imply. Shared by the join (once per event) and the metrics' scrape-time
/// labels, so both name the same workload.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    owners: Option<Arc<OwnerIndex>>,
}

impl Workloads {
    /// Name rules only (no apiserver).
    pub fn by_name_only() -> Self {
        Self::default()
    }

    /// The owner chain of `owners` first, the name rules as the fallback.
    pub fn with_owners(owners: Arc<OwnerIndex>) -> Self {
        Self {
            owners: Some(owners),
        }
    }

    /// Changes of the owner chain so far (0 without the apiserver): a workload memoised at one
    /// generation is still right at the same one.
    pub fn generation(&self) -> u64 {
        self.owners.as_ref().map_or(0, |o| o.generation())
    }

    /// The workload of `pod`, or `None` for a bare pod. No allocation: a shared reference.
    pub fn of(&self, pod: &PodMeta) -> Option<Arc<OwnerRef>> {
        if let (Some(owners), Some(owner)) = (&self.owners, &pod.owner)
            && let Some(workload) = owners.workload_of(owner, &pod.namespace)
        {
            return Some(workload);
        }
        pod.workload.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::pods::OwnerRef;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> PodMeta {
        let mut p = crate::kube::pods::parse_pod(
            r#"{"metadata":{"name":"p","namespace":"n","uid":"u"},"spec":{},"status":{}}"#,
        )
        .expect("minimal pod");
        p.owner = owner.map(|(kind, name)| OwnerRef {
            kind: kind.into(),
            name: name.into(),
        });
        if let Some(h) = hash {
            p.labels.insert(POD_TEMPLATE_HASH.into(), h.into());
        }
        // As the decoder does once the owner and labels are known.
        p.workload = by_name(&p).map(Arc::new);
        p
    }

    #[test]
    fn resolves_deployments_and_cronjobs_from_names_and_labels() {
        let w = |o, h| by_name(&pod(o, h)).map(|o| (o.kind, o.name));
        let pair = |k: &str, n: &str| Some((k.to_string(), n.to_string()));
        assert_eq!(
            w(
                Some(("ReplicaSet", "coredns-5d78c9869d")),
                Some("5d78c9869d")
            ),
            pair("Deployment", "coredns")
        );
        // Without the hash label the ReplicaSet is its own workload.
        assert_eq!(
            w(Some(("ReplicaSet", "coredns-5d78c9869d")), None),
            pair("ReplicaSet", "coredns-5d78c9869d")
        );
        assert_eq!(
            w(Some(("Job", "backup-28735200")), None),
            pair("CronJob", "backup")
        );
        assert_eq!(
            w(Some(("Job", "migrate-1")), None),
            pair("Job", "migrate-1")
        );
        assert_eq!(
            w(Some(("DaemonSet", "kube-proxy")), None),
            pair("DaemonSet", "kube-proxy")
        );
        assert_eq!(w(None, None), None);
    }

    #[test]
    fn the_owner_chain_wins_over_the_name_rules_and_they_remain_the_fallback() {
        use crate::kube::apiserver::OwnerLink;
        // A ReplicaSet made by an Argo Rollout looks like a Deployment's to the name rules.
        let canary = pod(Some(("ReplicaSet", "canary-6f8d9c7b5")), Some("6f8d9c7b5"));
        let web = pod(Some(("ReplicaSet", "web-5d78c9869d")), Some("5d78c9869d"));
        let pair = |w: Option<Arc<OwnerRef>>| w.map(|w| (w.kind.clone(), w.name.clone()));
        let owned = |k: &str, n: &str| Some((k.to_string(), n.to_string()));
        let names = Workloads::by_name_only();
        assert_eq!(pair(names.of(&canary)), owned("Deployment", "canary"));
        let owners = Arc::new(OwnerIndex::new());
        owners.set(
            OwnerLink::ReplicaSet,
            "n",
            "canary-6f8d9c7b5",
            Some(OwnerRef {
                kind: "Rollout".into(),
                name: "canary".into(),
            }),
        );
        let chain = Workloads::with_owners(Arc::clone(&owners));
        assert_eq!(pair(chain.of(&canary)), owned("Rollout", "canary"));
        // An owner the index does not know (yet): the name rules.
        assert_eq!(pair(chain.of(&web)), owned("Deployment", "web"));
        assert_eq!(chain.of(&pod(None, None)), None);
    }
}
