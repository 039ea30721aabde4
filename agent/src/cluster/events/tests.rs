use super::*;

fn core(json: serde_json::Value) -> CoreEvent {
    serde_json::from_value(json).expect("an Event")
}

#[test]
fn a_core_event_gives_every_field_of_the_stream() {
    let e = core(serde_json::json!({
        "metadata": {"name": "web-1.17f", "namespace": "shop", "uid": "u-1",
                     "resourceVersion": "4711", "creationTimestamp": "2026-12-03T10:00:00Z"},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "p-1",
                           "fieldPath": "spec.containers{web}"},
        "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning",
        "count": 7, "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": "2026-12-03T10:00:00Z", "lastTimestamp": "2026-12-03T10:05:00Z"
    }));
    let k = KubeEvent::from_core(&e);
    assert_eq!(
        (
            k.uid.as_str(),
            k.event_type.as_str(),
            k.reason.as_str(),
            k.count
        ),
        ("u-1", "Warning", "BackOff", 7)
    );
    assert_eq!(
        (
            k.involved_kind.as_str(),
            k.involved_namespace.as_str(),
            k.involved_name.as_str()
        ),
        ("Pod", "shop", "web-1")
    );
    assert_eq!(
        (k.source_component.as_str(), k.source_host.as_str()),
        ("kubelet", "node-a")
    );
    assert_eq!(k.first_seen, "2026-12-03T10:00:00Z");
    assert_eq!(k.last_seen, "2026-12-03T10:05:00Z");
    assert_eq!(k.resource_version, "4711");
    assert_eq!(k.pod(), Some("web-1"));
    assert_eq!(k.filter_namespace(), "shop");
}

#[test]
fn a_new_style_event_takes_its_count_and_times_from_the_series() {
    let e = core(serde_json::json!({
        "metadata": {"name": "n.1", "namespace": "default", "uid": "u-2", "resourceVersion": "9"},
        "involvedObject": {"kind": "Node", "name": "node-a"},
        "reason": "NodeNotReady", "type": "Normal", "reportingComponent": "node-controller",
        "eventTime": "2026-12-03T11:00:00.123456Z",
        "series": {"count": 3, "lastObservedTime": "2026-12-03T11:09:00.000000Z"}
    }));
    let k = KubeEvent::from_core(&e);
    assert_eq!(k.count, 3);
    assert_eq!(k.source_component, "node-controller");
    assert_eq!(k.first_seen, "2026-12-03T11:00:00.123456Z");
    assert_eq!(k.last_seen, "2026-12-03T11:09:00Z");
    assert_eq!(k.pod(), None);
    // A cluster-scoped object: the event's own namespace is what a filter matches.
    assert_eq!(k.filter_namespace(), "default");
}

#[test]
fn a_long_message_is_cut_at_a_character_boundary_and_flagged() {
    let long = "é".repeat(MAX_MESSAGE_BYTES);
    let e = core(
        serde_json::json!({"metadata": {"uid": "u"}, "involvedObject": {},
                                    "message": long}),
    );
    let k = KubeEvent::from_core(&e);
    assert!(k.message_truncated);
    assert!(k.message.len() <= MAX_MESSAGE_BYTES && k.message.len() > MAX_MESSAGE_BYTES - 2);
    assert_eq!(k.count, 1, "an event without a count happened once");
}

#[test]
fn exclusions_become_a_negated_field_selector_and_bad_terms_name_the_fix() {
    let config = KubeEventsConfig {
        exclude: vec!["reason=BackOff".into(), "involvedObject.kind!=Node".into()],
        ..KubeEventsConfig::default()
    };
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(
        config.field_selector().as_deref(),
        Some("reason!=BackOff,involvedObject.kind!=Node")
    );
    assert_eq!(KubeEventsConfig::default().field_selector(), None);
    for (term, says) in [
        ("reason", "not a field=value term"),
        (
            "spec.foo=bar",
            "not a field the apiserver selects events by",
        ),
        ("reason=a,b", "holds a comma"),
    ] {
        let bad = KubeEventsConfig {
            exclude: vec![term.into()],
            ..KubeEventsConfig::default()
        };
        let (key, reason) = bad.validate().expect_err(term);
        assert_eq!(key, "kube_events.exclude");
        assert!(reason.contains(says), "{term}: {reason}");
    }
}

#[test]
fn allow_lists_match_kind_and_reason() {
    let event = KubeEvent {
        involved_kind: "Pod".into(),
        reason: "Killing".into(),
        ..KubeEvent::default()
    };
    assert!(KubeEventsConfig::default().allows(&event));
    let kinds = |k: &[&str], r: &[&str]| KubeEventsConfig {
        kinds: k.iter().map(|s| s.to_string()).collect(),
        reasons: r.iter().map(|s| s.to_string()).collect(),
        ..KubeEventsConfig::default()
    };
    assert!(kinds(&["Pod"], &[]).allows(&event));
    assert!(!kinds(&["Node"], &[]).allows(&event));
    assert!(kinds(&["Pod"], &["Killing", "BackOff"]).allows(&event));
    assert!(!kinds(&[], &["BackOff"]).allows(&event));
}

#[test]
fn seen_tells_new_repeat_and_unchanged_and_is_bounded() {
    let mut seen = Seen::new(2);
    assert_eq!(seen.verdict("a", 1), Verdict::New);
    seen.record("a", 1);
    assert_eq!(seen.verdict("a", 1), Verdict::Unchanged);
    assert_eq!(seen.verdict("a", 2), Verdict::Repeat);
    seen.record("a", 2);
    seen.record("a", 1);
    assert_eq!(
        seen.verdict("a", 2),
        Verdict::Unchanged,
        "the highest count is kept"
    );
    seen.record("b", 1);
    seen.record("c", 1);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen.untracked, 1);
    assert_eq!(seen.verdict("c", 1), Verdict::New);
    seen.retain_listed(&[Seen::key("b")].into_iter().collect());
    assert_eq!(
        seen.verdict("a", 2),
        Verdict::New,
        "a deleted event is forgotten"
    );
    seen.forget("b");
    assert!(seen.is_empty());
}

#[test]
fn token_interval_and_cap_are_validated() {
    let short = KubeEventsConfig {
        token_interval: Duration::from_millis(200),
        ..KubeEventsConfig::default()
    };
    assert_eq!(
        short.validate().unwrap_err().0,
        "kube_events.token_interval"
    );
    let none = KubeEventsConfig {
        max_tracked: 0,
        ..KubeEventsConfig::default()
    };
    assert_eq!(none.validate().unwrap_err().0, "kube_events.max_tracked");
}
