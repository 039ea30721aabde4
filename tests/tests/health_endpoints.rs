//! `GET /healthz` and `GET /readyz` on the metrics listener (what a DaemonSet's probes reach),
//! against the real agent: alive and ready once its probes are attached and the start-up scan is
//! merged; a kubelet that has not answered yet holds readiness back, one that answers turns it
//! ready, and one that fails is a reason shown, not a wait.

use std::time::Duration;

use sonde_tests::{
    agent::Agent,
    api,
    kube_standin::{KubeletStandin, apiserver::FIXTURE_NODE, kubelet::Fault},
    poll::poll_until,
};

/// How long an agent may take to turn ready (the start-up scan on a busy, cold machine).
const READY_WITHIN: Duration = Duration::from_secs(20);

fn kubelet_flags(standin: &KubeletStandin) -> Vec<String> {
    let mut flags = vec!["--node-name".into(), FIXTURE_NODE.into()];
    flags.extend(standin.agent_flags());
    flags
}

fn start(flags: &[String]) -> Agent {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Agent::start(&flags)
}

/// Polls `target` until its status is `code` and its body contains every one of `parts`;
/// returns the body.
#[track_caller]
fn wait_answer(agent: &mut Agent, target: &str, code: u16, parts: &[&str]) -> String {
    let addr = agent.metrics_addr();
    poll_until(
        format!("{target} answering {code} with {parts:?}"),
        READY_WITHIN,
        || {
            let (status, body) = api::get(addr, target);
            if status == code && parts.iter().all(|p| body.contains(p)) {
                Ok(body)
            } else {
                Err((status, body))
            }
        },
    )
}

#[test]
fn an_agent_without_metadata_is_alive_and_turns_ready() {
    let mut agent = start(&["--kubelet-enabled".into(), "false".into()]);
    let body = wait_answer(
        &mut agent,
        "/readyz",
        200,
        &["[+]probes ", "[+]scan start-up scan merged: ", "\nok\n"],
    );
    assert!(!body.contains("kubelet"), "no kubelet configured: {body}");
    let body = wait_answer(&mut agent, "/healthz", 200, &["[+]pipeline "]);
    assert!(body.ends_with("ok\n"), "{body}");
    let (status, body) = api::get(agent.metrics_addr(), "/nowhere");
    assert_eq!(status, 404);
    assert!(
        body.contains("/readyz") && body.contains("/healthz"),
        "{body}"
    );
}

#[test]
fn a_kubelet_not_answered_yet_holds_readiness_until_its_pods_arrive() {
    let standin = KubeletStandin::start();
    // The first pod list takes 10 s (a kubelet still starting): not ready meanwhile.
    standin.set_fault(Fault::Delay(Duration::from_secs(10)));
    let mut flags = kubelet_flags(&standin);
    flags.extend(["--set".into(), "kubelet.timeout=30s".into()]);
    let mut agent = start(&flags);
    let body = wait_answer(
        &mut agent,
        "/readyz",
        503,
        &["[-]kubelet waiting for the first pod list", "not ok"],
    );
    assert!(!body.contains("[+]kubelet"), "{body}");
    standin.set_fault(Fault::None);
    wait_answer(
        &mut agent,
        "/readyz",
        200,
        &["[+]kubelet synced: ", "[+]scan ", "\nok\n"],
    );
}

#[test]
fn a_failing_kubelet_is_a_reason_shown_not_a_wait() {
    let standin = KubeletStandin::start();
    standin.set_fault(Fault::Forbidden);
    let mut agent = start(&kubelet_flags(&standin));
    let body = wait_answer(
        &mut agent,
        "/readyz",
        200,
        &["[+]kubelet failing: ", "\nok\n"],
    );
    assert!(
        body.contains("nodes/proxy"),
        "the reason names the RBAC rule: {body}"
    );
}
