//! Leader election in `sonde run`: two agents against the test apiserver (as pods: `POD_NAME`,
//! `POD_NAMESPACE`) elect exactly one leader, which `/v1/status`, `sonde status` and `/metrics`
//! (`sonde_leader`) name; stopping the leader (SIGTERM) frees the Lease and the other leads
//! within 2 s; the Lease in the apiserver names the new holder.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use sonde_tests::{
    agent::{Agent, sonde_bin},
    api,
    cluster::start_contender,
    kube_standin::{ApiserverStandin, Resource},
    poll::poll_until,
};

fn leader_state(addr: SocketAddr) -> Value {
    api::status(addr)["agent"]["leader"].clone()
}

#[test]
fn two_agents_elect_one_leader_and_a_stopped_leader_hands_over_at_once() {
    sonde_tests::require_root();
    let apiserver = ApiserverStandin::start();
    let (a, a_api) = start_contender(&apiserver, "agent-a", &[]);
    let (b, b_api) = start_contender(&apiserver, "agent-b", &[]);

    let (leader, follower) =
        poll_until("one leader, seen by both", Duration::from_secs(15), || {
            let (la, lb) = (leader_state(a_api), leader_state(b_api));
            let leading = (la["leader"] == true, lb["leader"] == true);
            let same_holder = la["holder"] == lb["holder"] && !la["holder"].is_null();
            match leading {
                (true, false) if same_holder => Ok(("a", "b")),
                (false, true) if same_holder => Ok(("b", "a")),
                _ => Err((la, lb)),
            }
        });
    let (mut leader_agent, leader_api, mut follower_agent, follower_api) = if leader == "a" {
        (a, a_api, b, b_api)
    } else {
        (b, b_api, a, a_api)
    };
    let state = leader_state(leader_api);
    assert_eq!(state["identity"], format!("agent-{leader}"));
    assert_eq!(state["lease"], "sonde/sonde-leader-election");
    assert_eq!(
        leader_state(follower_api)["holder"],
        format!("agent-{leader}")
    );

    // /metrics: 1 on the leader, 0 on the stand-by.
    let gauge = |agent: &mut Agent| {
        let (_, text) = api::get(agent.metrics_addr(), "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("sonde_leader "))
            .map(str::to_string)
    };
    assert_eq!(gauge(&mut leader_agent).as_deref(), Some("1"));
    assert_eq!(gauge(&mut follower_agent).as_deref(), Some("0"));
    // sonde status names the role and the holder.
    let out = Command::new(sonde_bin())
        .args(["status", "--api", &leader_api.to_string()])
        .output()
        .expect("sonde status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("Cluster: leader (agent-{leader}")),
        "{table}"
    );

    // SIGTERM: the leader frees the Lease at once, while it drains; the stand-by leads within
    // 2 s as /v1/status shows it (the status snapshot is up to a second old; the logs show
    // the hand-over itself takes milliseconds).
    let stopping = Instant::now();
    let pid = nix::unistd::Pid::from_raw(leader_agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    poll_until("the stand-by leads", Duration::from_secs(5), || {
        let s = leader_state(follower_api);
        if s["leader"] == true { Ok(()) } else { Err(s) }
    });
    let handover = stopping.elapsed();
    eprintln!("hand-over from SIGTERM: {handover:?}");
    let stopped = leader_agent.stop();
    assert!(
        stopped.stderr.contains("Lease released"),
        "{}",
        stopped.stderr
    );
    assert!(
        handover < Duration::from_secs(2),
        "hand-over took {handover:?} from SIGTERM"
    );
    let lease = apiserver
        .get(Resource::Leases, "sonde", "sonde-leader-election")
        .expect("the Lease");
    assert_eq!(
        lease["spec"]["holderIdentity"],
        format!("agent-{follower}"),
        "{lease}"
    );
    assert!(
        lease["spec"]["leaseTransitions"].as_i64() >= Some(1),
        "{lease}"
    );
    follower_agent.stop();
}
