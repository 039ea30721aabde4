//! Leader election (`sonde::cluster::leader`) against the test apiserver's Leases (optimistic
//! concurrency on resourceVersion, 409 on a stale write), with short timings: three electors
//! contend and exactly one leads at every sample; a release hands over within 2 s; a leader
//! that vanishes is replaced after the lease duration; a leader that cannot reach the apiserver
//! stands down at its renew deadline, before the Lease could expire for anyone else.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, config::KubeConfigOptions};
use sonde::cluster::leader::{ElectionConfig, Elector, LEASE_NAME};
use sonde_tests::kube_standin::ApiserverStandin;

const NAMESPACE: &str = "sonde";
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(400);

async fn client(apiserver: &ApiserverStandin) -> Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(apiserver.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

fn config(identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..ElectionConfig::new(NAMESPACE, identity)
    }
}

async fn start(apiserver: &ApiserverStandin, identity: &str) -> Elector {
    Elector::spawn(client(apiserver).await, config(identity))
}

/// The electors leading now, by index.
fn leaders(electors: &[Option<Elector>]) -> Vec<usize> {
    electors
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_ref().is_some_and(|e| e.state().leader))
        .map(|(i, _)| i)
        .collect()
}

/// Samples every 10 ms for `within`: never two leaders; returns the one leading at the end
/// (`None` if nobody was leading then), or fails with the history when `want` never holds.
async fn watch_leaders(
    electors: &[Option<Elector>],
    within: Duration,
    want: impl Fn(&[usize]) -> bool,
) -> (Vec<usize>, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let now = leaders(electors);
        assert!(
            now.len() <= 1,
            "two leaders at once: {now:?} (history {seen:?})"
        );
        if want(&now) {
            return (now, start.elapsed());
        }
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        assert!(
            start.elapsed() < within,
            "not reached within {within:?}; leaders seen over time: {seen:?}; states: {:?}",
            electors
                .iter()
                .map(|e| e.as_ref().map(Elector::state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_release_hands_over_at_once_and_a_vanished_leader_is_replaced() {
    let apiserver = ApiserverStandin::start();
    let mut electors = Vec::new();
    for name in ["agent-a", "agent-b", "agent-c"] {
        electors.push(Some(start(&apiserver, name).await));
    }
    let (first, _) = watch_leaders(&electors, Duration::from_secs(10), |l| l.len() == 1).await;
    // Stable: the same one leads through several renewals.
    let hold = Instant::now();
    while hold.elapsed() < LEASE + RETRY {
        assert_eq!(leaders(&electors), first, "leadership moved without cause");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lease = Api::<Lease>::namespaced(client(&apiserver).await, NAMESPACE)
        .get(LEASE_NAME)
        .await
        .expect("the Lease exists");
    let spec = lease.spec.expect("spec");
    let names = ["agent-a", "agent-b", "agent-c"];
    assert_eq!(spec.holder_identity.as_deref(), Some(names[first[0]]));
    assert_eq!(spec.lease_duration_seconds, Some(3));

    // SIGTERM: the leader releases; another leads within 2 s (the stand-bys watch the Lease).
    let leader = electors[first[0]].take().expect("leader");
    let released = Instant::now();
    leader.release(Duration::from_secs(2)).await;
    let (second, _) = watch_leaders(&electors, Duration::from_secs(2), |l| l.len() == 1).await;
    let handover = released.elapsed();
    eprintln!("hand-over after a release: {handover:?}");
    assert!(
        handover < Duration::from_secs(2),
        "hand-over took {handover:?}"
    );
    let state = electors[second[0]].as_ref().expect("leader").state();
    assert_eq!(state.holder.as_deref(), Some(names[second[0]]));
    assert!(state.transitions >= 1, "{state:?}");

    // SIGKILL: the leader vanishes without releasing; another leads after the lease duration
    // (the Lease must look stale to the others first), within one more retry.
    let vanished = Instant::now();
    drop(electors[second[0]].take());
    let (third, _) = watch_leaders(&electors, LEASE + 4 * RETRY + Duration::from_secs(1), |l| {
        l.len() == 1
    })
    .await;
    let took = vanished.elapsed();
    assert!(
        took >= LEASE - RETRY,
        "took over after {took:?}, before the lease duration {LEASE:?} could pass"
    );
    assert_ne!(third, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stands_down_at_its_renew_deadline() {
    let apiserver = ApiserverStandin::start();
    let electors = vec![
        Some(start(&apiserver, "agent-a").await),
        Some(start(&apiserver, "agent-b").await),
    ];
    watch_leaders(&electors, Duration::from_secs(10), |l| l.len() == 1).await;
    // Right after a renewal, the apiserver stops answering.
    let leader = leaders(&electors)[0];
    let mut state = electors[leader].as_ref().expect("leader").subscribe();
    let renewed_before = apiserver.object_requests().len();
    while apiserver.object_requests().len() == renewed_before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    apiserver.set_unavailable(true);
    let cut = Instant::now();
    tokio::time::timeout(RENEW + RETRY + Duration::from_secs(1), async {
        while state.borrow_and_update().leader {
            state.changed().await.expect("elector alive");
        }
    })
    .await
    .expect("the leader stands down");
    let stood_down = cut.elapsed();
    assert!(
        stood_down <= RENEW + RETRY,
        "stood down {stood_down:?} after the cut (renew deadline {RENEW:?})"
    );
    assert!(
        stood_down < LEASE,
        "stand-down must come before the Lease can expire for the others"
    );
    let error = electors[leader].as_ref().expect("elector").state().error;
    assert!(
        // kube's client retries a 503 a few times, so with this short retry period the
        // attempt may time out first.
        error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable") || e.contains("did not answer")),
        "the cause is kept: {error:?}"
    );
    // While the apiserver is unreachable, nobody leads.
    let hold = Instant::now();
    while hold.elapsed() < LEASE {
        assert!(
            leaders(&electors).is_empty(),
            "a leader without an apiserver"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Back: one leads again.
    apiserver.set_unavailable(false);
    watch_leaders(&electors, LEASE + Duration::from_secs(3), |l| l.len() == 1).await;
    let refused = apiserver
        .object_requests()
        .iter()
        .filter(|(_, _, unavailable)| *unavailable)
        .count();
    assert!(refused > 0, "the outage was exercised");
}
