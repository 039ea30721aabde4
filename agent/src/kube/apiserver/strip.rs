//! What the join keeps of an object's metadata: its controlling owner (ReplicaSets and Jobs,
//! which are watched metadata-only) and its namespace/name. (Pods, Services and EndpointSlices
//! are decoded straight into small types: [`super::slim`].)

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::kube::{pods::OwnerRef, services::ObjectName};

/// The controlling owner (`controller: true`), else the first one: the kubelet parser's rule.
pub fn controller(meta: &ObjectMeta) -> Option<OwnerRef> {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
        .map(|o: &OwnerReference| OwnerRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        })
}

/// The object's namespace/name, if it has a name.
pub fn object_name(meta: &ObjectMeta) -> Option<ObjectName> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    Some(ObjectName::new(
        meta.namespace.as_deref().unwrap_or_default(),
        name,
    ))
}
