//! What a subscriber of the event stream asks for: `?namespace=&pod=&container=&unit=&type=`,
//! matched against the keys each event carries ([`FilterKeys`]) without looking at its JSON.

use std::sync::Arc;

use crate::{cluster::events::KubeEvent, kube::ContainerRef, node::cgroup::CgroupInfo};

/// Event types of the stream, in a fixed order: a type filter is a bit mask over it.
pub const EVENT_TYPES: [&str; 8] = [
    "process_exec",
    "process_fork",
    "process_exit",
    "process_found",
    "tcp_open",
    "tcp_close",
    "tcp_fail",
    crate::pipeline::sink::KUBE_EVENT,
];

/// Index of `name` in [`EVENT_TYPES`]; unknown types get the last bit (never matched by a
/// type filter, always by no filter).
pub fn type_index(name: &str) -> u8 {
    EVENT_TYPES
        .iter()
        .position(|t| *t == name)
        .map_or(EVENT_TYPES.len() as u8, |i| i as u8)
}

/// The attributed fields a filter looks at, carried next to each line (two `Arc`s: no
/// allocation per event).
#[derive(Clone, Debug, Default)]
pub struct FilterKeys {
    /// Container id, pod UID, systemd unit (from the cgroup path).
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// Namespace, pod and container name: `None` until the Kubernetes metadata knows the
    /// container.
    pub kube: Option<ContainerRef>,
    /// A Kubernetes event: its namespace (the involved object's) and pod, if about one.
    pub event: Option<Arc<KubeEvent>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "unknown query parameter {0:?}. Fix: use namespace, pod, container, unit or type \
         (e.g. /v1/events?container=3f2a&type=exec)"
    )]
    UnknownParameter(String),
    #[error("unknown event type {0:?}. Fix: use one of {types} (or exec, fork, exit, found, open, close, fail, event, process, tcp, kube)", types = EVENT_TYPES.join(", "))]
    UnknownType(String),
    #[error("{0} is given twice. Fix: give it once (only type takes several values)")]
    Repeated(&'static str),
    #[error("{0} is empty. Fix: give a value, or leave the parameter out")]
    Empty(&'static str),
    #[error("the query is not valid percent-encoding: {0:?}")]
    Encoding(String),
}

/// A parsed subscription filter; every given parameter must match (AND), type values are
/// alternatives (OR).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Bit i set: `EVENT_TYPES[i]` wanted. `None`: every type.
    types: Option<u16>,
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    unit: Option<String>,
}

/// The bits a `type=` value selects: a full name, its short form (`exec`, `open`…) or a family
/// (`process`, `tcp`).
fn type_bits(value: &str) -> Option<u16> {
    let mut bits = 0u16;
    for (i, name) in EVENT_TYPES.iter().enumerate() {
        let (family, short) = name.split_once('_').unwrap_or((name, name));
        if value == *name || value == short || value == family {
            bits |= 1 << i;
        }
    }
    (bits != 0).then_some(bits)
}

fn percent_decode(raw: &str) -> Result<String, FilterError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| FilterError::Encoding(raw.to_string()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FilterError::Encoding(raw.to_string()))
}

impl Filter {
    /// Parses a URL query string (without the `?`).
    pub fn parse(query: &str) -> Result<Self, FilterError> {
        let mut f = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)?;
            let value = percent_decode(value)?;
            let (slot, name) = match key.as_str() {
                "type" => {
                    for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                        let bits =
                            type_bits(v).ok_or_else(|| FilterError::UnknownType(v.into()))?;
                        f.types = Some(f.types.unwrap_or(0) | bits);
                    }
                    if f.types.is_none() {
                        return Err(FilterError::Empty("type"));
                    }
                    continue;
                }
                "namespace" => (&mut f.namespace, "namespace"),
                "pod" => (&mut f.pod, "pod"),
                "container" => (&mut f.container, "container"),
                "unit" => (&mut f.unit, "unit"),
                _ => return Err(FilterError::UnknownParameter(key)),
            };
            if value.is_empty() {
                return Err(FilterError::Empty(name));
            }
            if slot.replace(value).is_some() {
                return Err(FilterError::Repeated(name));
            }
        }
        Ok(f)
    }

    /// Every event passes.
    pub fn is_all(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether an event of type `type_index` with `keys` passes.
    pub fn matches(&self, type_index: u8, keys: &FilterKeys) -> bool {
        if let Some(bits) = self.types
            && (usize::from(type_index) >= EVENT_TYPES.len() || bits & (1 << type_index) == 0)
        {
            return false;
        }
        let id = keys.cgroup.as_ref().map(|c| &c.identity);
        let kube = keys.kube.as_ref();
        let event = keys.event.as_deref();
        if let Some(ns) = &self.namespace
            && kube.is_none_or(|k| k.pod.namespace != *ns)
            && event.is_none_or(|e| e.filter_namespace() != ns)
        {
            return false;
        }
        if let Some(pod) = &self.pod {
            let by_name = kube.is_some_and(|k| k.pod.name == *pod)
                || event.is_some_and(|e| e.pod() == Some(pod.as_str()));
            let by_uid = id.and_then(|i| i.pod_uid.as_deref()) == Some(pod.as_str());
            if !by_name && !by_uid {
                return false;
            }
        }
        if let Some(ctr) = &self.container {
            let by_name = kube.is_some_and(|k| k.container().name == *ctr);
            let by_id = id
                .and_then(|i| i.container_id.as_deref())
                .is_some_and(|cid| cid.starts_with(ctr.as_str()));
            if !by_name && !by_id {
                return false;
            }
        }
        if let Some(unit) = &self.unit {
            let have = id.and_then(|i| i.systemd_unit.as_deref());
            let matches = have
                .is_some_and(|u| u == unit || u.strip_suffix(".service") == Some(unit.as_str()));
            if !matches {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::cgroup_path::CgroupIdentity;

    fn keys(container: Option<&str>, pod_uid: Option<&str>, unit: Option<&str>) -> FilterKeys {
        FilterKeys {
            cgroup: Some(Arc::new(CgroupInfo {
                id: 7,
                path: "/x".into(),
                identity: CgroupIdentity {
                    container_id: container.map(Into::into),
                    pod_uid: pod_uid.map(Into::into),
                    systemd_unit: unit.map(Into::into),
                    ..CgroupIdentity::default()
                },
            })),
            kube: None,
            event: None,
        }
    }

    #[test]
    fn types_accept_full_short_family_and_comma_or_repeated_forms() {
        let exec = type_index("process_exec");
        let open = type_index("tcp_open");
        let close = type_index("tcp_close");
        let k = FilterKeys::default();
        let f = Filter::parse("type=exec").unwrap();
        assert!(f.matches(exec, &k) && !f.matches(open, &k));
        let f = Filter::parse("type=exec,tcp_open").unwrap();
        assert!(f.matches(exec, &k) && f.matches(open, &k) && !f.matches(close, &k));
        let f = Filter::parse("type=open&type=close").unwrap();
        assert!(!f.matches(exec, &k) && f.matches(open, &k) && f.matches(close, &k));
        let f = Filter::parse("type=tcp").unwrap();
        assert!(!f.matches(exec, &k) && f.matches(close, &k));
        assert!(!f.matches(type_index("something_new"), &k));
        assert!(
            Filter::parse("")
                .unwrap()
                .matches(type_index("something_new"), &k)
        );
        assert_eq!(
            Filter::parse("type=nope"),
            Err(FilterError::UnknownType("nope".into()))
        );
    }

    #[test]
    fn container_is_an_id_prefix_or_a_kube_name() {
        let k = keys(Some("3f2a9c00"), None, None);
        let any = type_index("process_exec");
        assert!(Filter::parse("container=3f2a").unwrap().matches(any, &k));
        assert!(!Filter::parse("container=3f2b").unwrap().matches(any, &k));
        assert!(
            !Filter::parse("container=web")
                .unwrap()
                .matches(any, &FilterKeys::default())
        );
        let mut named = k.clone();
        let pod = crate::kube::pods::parse_pod(
            r#"{"metadata":{"name":"web-0","namespace":"shop","uid":"u"},
                "spec":{"containers":[{"name":"web","image":"web:1"}]},"status":{}}"#,
        )
        .expect("pod");
        named.kube = Some(ContainerRef {
            pod: Arc::new(pod),
            index: 0,
            source: crate::kube::PodSource::Kubelet,
        });
        assert!(Filter::parse("container=web").unwrap().matches(any, &named));
        assert!(
            Filter::parse("namespace=shop&pod=web-0")
                .unwrap()
                .matches(any, &named)
        );
        // No kube metadata yet: a namespace filter matches nothing.
        assert!(!Filter::parse("namespace=shop").unwrap().matches(any, &k));
    }

    #[test]
    fn pod_matches_the_uid_and_unit_the_name_with_or_without_service() {
        let any = type_index("tcp_open");
        let k = keys(None, Some("0a1b-2c"), Some("nginx.service"));
        assert!(Filter::parse("pod=0a1b-2c").unwrap().matches(any, &k));
        assert!(
            Filter::parse("unit=nginx.service")
                .unwrap()
                .matches(any, &k)
        );
        assert!(Filter::parse("unit=nginx").unwrap().matches(any, &k));
        assert!(!Filter::parse("unit=sshd").unwrap().matches(any, &k));
        assert!(
            Filter::parse("unit=nginx%2Eservice")
                .unwrap()
                .matches(any, &k)
        );
    }

    #[test]
    fn bad_queries_say_what_to_fix() {
        assert_eq!(
            Filter::parse("contianer=1"),
            Err(FilterError::UnknownParameter("contianer".into()))
        );
        assert_eq!(
            Filter::parse("pod=a&pod=b"),
            Err(FilterError::Repeated("pod"))
        );
        assert_eq!(Filter::parse("unit="), Err(FilterError::Empty("unit")));
        assert!(matches!(
            Filter::parse("unit=%zz"),
            Err(FilterError::Encoding(_))
        ));
        assert!(Filter::parse("").unwrap().is_all());
    }
}
