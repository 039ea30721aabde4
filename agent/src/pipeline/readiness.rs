//! Liveness and readiness, read off the one health model: `GET /healthz` (the pipeline is
//! alive: it rebuilds the model every second, idle or not, so a model that stops changing
//! means a stuck agent) and `GET /readyz` (probes attached, start-up scan merged, each
//! configured metadata source synced — or failing with a reason: the agent captures without
//! metadata and says why, so a broken kubelet must not keep the DaemonSet from rolling out).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::health::Health;
use crate::{capture::ProbeState, kube::ApiserverSyncState};

/// How old the model may be before `/healthz` calls the agent stuck (it is rebuilt every
/// [`super::health::HEALTH_INTERVAL`]).
pub const LIVENESS_STALE: Duration = Duration::from_secs(30);

/// One condition of liveness or readiness, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok,
            detail: detail.into(),
        }
    }
}

/// Whether every check passed, and the checks as a text body (`[+]name detail` per line, the
/// Kubernetes components' style).
pub fn report(checks: &[Check]) -> (bool, String) {
    let mut text = String::new();
    for c in checks {
        let mark = if c.ok { '+' } else { '-' };
        text.push_str(&format!("[{mark}]{} {}\n", c.name, c.detail));
    }
    let ok = checks.iter().all(|c| c.ok);
    text.push_str(if ok { "ok\n" } else { "not ok\n" });
    (ok, text)
}

impl Health {
    /// `/healthz`: the pipeline published its model within [`LIVENESS_STALE`] of `now`.
    pub fn liveness(&self, now: SystemTime) -> Vec<Check> {
        let age = now.duration_since(self.generated_at).unwrap_or_default();
        let ok = age <= LIVENESS_STALE;
        let detail = if ok {
            format!("health model {:.1} s old", age.as_secs_f64())
        } else {
            format!(
                "the pipeline has not rebuilt its health model for {} s (it does every second): \
                 the agent is stuck",
                age.as_secs()
            )
        };
        vec![Check::new("pipeline", ok, detail)]
    }

    /// `/readyz`: probes, start-up scan, and each configured metadata source.
    pub fn readiness(&self) -> Vec<Check> {
        let mut checks = vec![self.probes_check(), self.scan_check()];
        if let Some(k) = &self.kubelet {
            let sync = &k.sync;
            checks.push(match (&sync.last_success, &sync.last_error) {
                (_, Some(err)) if !sync.ok() => {
                    Check::new("kubelet", true, format!("failing: {err}"))
                }
                (Some(_), _) => Check::new("kubelet", true, format!("synced: {} pods", k.pods)),
                _ => Check::new("kubelet", false, "waiting for the first pod list"),
            });
        }
        if let Some(a) = &self.apiserver {
            checks.push(apiserver_check(a));
        }
        checks
    }

    fn probes_check(&self) -> Check {
        let attached = self
            .probes
            .iter()
            .filter(|p| p.state == ProbeState::Attached)
            .count();
        let missing: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.state != ProbeState::Attached)
            .map(|p| format!("{} {}", p.program, p.state.name()))
            .collect();
        let mut detail = format!("{attached} of {} attached", self.probes.len());
        if !missing.is_empty() {
            detail.push_str(&format!(" ({})", missing.join(", ")));
        }
        Check::new("probes", attached > 0, detail)
    }

    fn scan_check(&self) -> Check {
        match &self.bootstrap {
            Some(b) => Check::new(
                "scan",
                true,
                format!(
                    "start-up scan merged: {} processes, {} connections in {:.0} ms",
                    b.processes_found, b.connections_found, b.duration_ms
                ),
            ),
            None => Check::new("scan", false, "start-up scan not merged yet"),
        }
    }
}

fn apiserver_check(a: &ApiserverSyncState) -> Check {
    if let Some(err) = &a.client_error {
        return Check::new("apiserver", true, format!("failing: {err}"));
    }
    if a.kinds.is_empty() {
        return Check::new("apiserver", false, "starting its watches");
    }
    let waiting: Vec<String> = a
        .kinds
        .iter()
        .filter(|(_, k)| !k.synced && k.sync.last_error.is_none())
        .map(|(kind, _)| kind.to_string())
        .collect();
    let failing: Vec<String> = a
        .kinds
        .iter()
        .filter(|(_, k)| !k.sync.ok())
        .filter_map(|(kind, k)| Some(format!("{kind}: {}", k.sync.last_error.as_deref()?)))
        .collect();
    if !waiting.is_empty() {
        return Check::new(
            "apiserver",
            false,
            format!("waiting for the first list of {}", waiting.join(", ")),
        );
    }
    if failing.is_empty() {
        let objects: usize = a.kinds.values().map(|k| k.objects).sum();
        Check::new(
            "apiserver",
            true,
            format!("synced: {} kinds, {objects} objects", a.kinds.len()),
        )
    } else {
        Check::new(
            "apiserver",
            true,
            format!("failing: {}", failing.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kube::{KindSyncState, KubeletSyncState, WatchKind},
        pipeline::health::BootstrapStats,
    };

    fn names(checks: &[Check]) -> Vec<(&'static str, bool)> {
        checks.iter().map(|c| (c.name, c.ok)).collect()
    }

    #[test]
    fn ready_once_the_scan_is_merged_and_sources_have_answered() {
        let mut h = Health::default();
        // No probe attached and no scan yet: not ready, and the body says why.
        let (ok, text) = report(&h.readiness());
        assert!(!ok);
        assert!(
            text.contains("[-]scan start-up scan not merged yet"),
            "{text}"
        );
        assert!(text.contains("[-]probes 0 of 0 attached"), "{text}");

        h.probes.push(crate::capture::ProbeStatus {
            program: "sched_process_exec",
            hook: "tracepoint/sched/sched_process_exec".into(),
            provides: "exec events",
            state: ProbeState::Attached,
        });
        h.bootstrap = Some(BootstrapStats::default());
        h.kubelet = Some(KubeletSyncState::default());
        assert_eq!(
            names(&h.readiness()),
            [("probes", true), ("scan", true), ("kubelet", false)]
        );
        // A kubelet that fails is a reason, not a wait: ready, and the reason is shown.
        if let Some(k) = &mut h.kubelet {
            k.sync
                .failed("401 Unauthorized: the token ... Fix: ...".into());
        }
        let (ok, text) = report(&h.readiness());
        assert!(ok, "{text}");
        assert!(text.contains("[+]kubelet failing: 401"), "{text}");

        // The apiserver: waiting until every kind listed once or failed.
        let mut a = ApiserverSyncState::default();
        a.kinds.insert(WatchKind::Pods, KindSyncState::default());
        h.apiserver = Some(a.clone());
        let (ok, text) = report(&h.readiness());
        assert!(
            !ok && text.contains("waiting for the first list of"),
            "{text}"
        );
        if let Some(k) = a.kinds.get_mut(&WatchKind::Pods) {
            k.synced = true;
            k.sync.succeeded();
        }
        h.apiserver = Some(a);
        assert!(report(&h.readiness()).0);
    }

    #[test]
    fn a_model_not_rebuilt_for_30_s_is_not_alive() {
        let h = Health::default();
        let now = h.generated_at;
        assert!(report(&h.liveness(now + Duration::from_secs(2))).0);
        let (ok, text) = report(&h.liveness(now + LIVENESS_STALE + Duration::from_secs(1)));
        assert!(!ok);
        assert!(text.contains("stuck"), "{text}");
    }
}
