//! Kubelet payloads: the vendored fixtures (tests/fixtures/kubelet, see its README) and large
//! pod lists generated from real pods.

use std::path::PathBuf;

use serde_json::Value;

/// The directory of the vendored kubelet payloads.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/kubelet")
}

pub fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// A fixture's bytes, exactly as vendored.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Every `podlist_*.json` fixture name, sorted.
pub fn pod_list_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("podlist_") && n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The real pods every generated list is made from: the k8s 1.35 containerd capture.
pub const TEMPLATE_FIXTURE: &str = "podlist_containerd_k8s-1.35.json";

/// Pod `i`'s uid in a generated list.
pub fn generated_uid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

/// The id of container `c` of pod `i` in a generated list (64 hex digits, no runtime prefix).
pub fn generated_container_id(i: usize, c: usize) -> String {
    format!("{:032x}{:032x}", i as u128 + 1, c as u128 + 1)
}

/// A PodList of `n` pods: the template's real pods cycled, each given a unique name, uid and
/// container ids (`containerd://` + [`generated_container_id`]); everything else (specs,
/// statuses, managed fields) is the real pod's, so size and shape are a real node's.
pub fn generate_pod_list(n: usize) -> Vec<u8> {
    let template: Value = serde_json::from_slice(&fixture(TEMPLATE_FIXTURE)).expect("template");
    let templates = template["items"]
        .as_array()
        .expect("template items")
        .clone();
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let mut pod = templates[i % templates.len()].clone();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or("pod")
            .to_string();
        pod["metadata"]["name"] = Value::String(format!("{name}-{i}"));
        pod["metadata"]["uid"] = Value::String(generated_uid(i));
        let mut c = 0;
        for key in ["initContainerStatuses", "containerStatuses"] {
            if let Some(statuses) = pod["status"][key].as_array_mut() {
                for status in statuses {
                    if status.get("containerID").is_some() {
                        status["containerID"] =
                            Value::String(format!("containerd://{}", generated_container_id(i, c)));
                    }
                    if let Some(last) = status.get_mut("lastState")
                        && let Some(obj) = last.as_object_mut()
                    {
                        obj.clear();
                    }
                    c += 1;
                }
            }
        }
        items.push(pod);
    }
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    serde_json::to_vec(&list).expect("serialize generated list")
}
