//! The workload a pod belongs to, from the pod alone (kubelet data, no apiserver): a
//! ReplicaSet named `<deployment>-<pod-template-hash>` whose pods carry that hash label belongs
//! to the Deployment; a Job named `<cronjob>-<scheduled minute>` belongs to the CronJob. Other
//! owners (StatefulSet, DaemonSet, a bare ReplicaSet or Job, a Node for mirror pods) are the
//! workload themselves. The apiserver's owner chain, when available, is authoritative.

use super::pods::PodMeta;

/// Label the Deployment controller puts on its ReplicaSets' pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The top-level controller of `pod` (kind, name), or `None` for a bare pod. Borrowed from the
/// pod: no allocation on the event path.
pub fn workload(pod: &PodMeta) -> Option<(&str, &str)> {
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
    Some(parent.unwrap_or((owner.kind.as_str(), owner.name.as_str())))
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
        p
    }

    fn kind_name(o: Option<(&str, &str)>) -> Option<(String, String)> {
        o.map(|(k, n)| (k.to_string(), n.to_string()))
    }

    #[test]
    fn resolves_deployments_and_cronjobs_from_names_and_labels() {
        let w = |o, h| kind_name(workload(&pod(o, h)));
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
}
