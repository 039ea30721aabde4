//! The leader's reading of the apiserver's health: `/readyz?verbose` and `/livez?verbose`
//! (one result per sub-check; a failing check answers 500 with the same list), and, when
//! enabled, the deprecated `componentstatuses`. Stand-bys read nothing (their state is empty).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ComponentStatus;
use kube::{Api, Client, api::ListParams};
use tokio::{sync::watch, task::JoinHandle};

use super::{ComponentHealth, EndpointHealth, parse_verbose, status_and_body};
use crate::cluster::duties::Duty;

/// The endpoints read.
pub const ENDPOINTS: [&str; 2] = ["readyz", "livez"];

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The leader's apiserver checks.
#[derive(Clone)]
pub struct ApiserverChecks {
    pub client: Client,
    pub interval: Duration,
    pub componentstatuses: bool,
    pub state: watch::Sender<(Vec<EndpointHealth>, Vec<ComponentHealth>)>,
}

impl Duty for ApiserverChecks {
    fn start(&self, _term: u64, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.round().await,
                    _ = stop.changed() => break,
                }
            }
            // A stand-by shows nothing it did not read.
            this.state.send_replace((Vec::new(), Vec::new()));
        })
    }
}

impl ApiserverChecks {
    async fn round(&self) {
        let mut endpoints = Vec::new();
        for endpoint in ENDPOINTS {
            endpoints.push(self.endpoint(endpoint).await);
        }
        let statuses = if self.componentstatuses {
            self.componentstatuses().await
        } else {
            Vec::new()
        };
        self.state.send_replace((endpoints, statuses));
    }

    async fn endpoint(&self, endpoint: &str) -> EndpointHealth {
        let started = Instant::now();
        let mut health = EndpointHealth {
            endpoint: endpoint.to_string(),
            ..EndpointHealth::default()
        };
        let request = http::Request::get(format!("/{endpoint}?verbose"))
            .body(kube::client::Body::empty())
            .expect("a static request");
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = self.client.send(request).await.map_err(|e| e.to_string())?;
            let (status, body) = status_and_body(response).await?;
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        })
        .await;
        health.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        match answer {
            Err(_) => {
                health.error = Some(format!(
                    "/{endpoint} did not answer within {REQUEST_TIMEOUT:?}"
                ))
            }
            Ok(Err(err)) => health.error = Some(format!("cannot read /{endpoint}: {err}")),
            Ok(Ok((status, body))) => {
                health.up = status.is_success();
                health.checks = parse_verbose(&body);
                if !health.up {
                    let failing: Vec<&str> = health
                        .checks
                        .iter()
                        .filter(|c| !c.up)
                        .map(|c| c.name.as_str())
                        .collect();
                    health.error = Some(if failing.is_empty() {
                        format!("/{endpoint} answered {status}: {}", body.trim())
                    } else {
                        format!(
                            "/{endpoint} answered {status}: failing {}",
                            failing.join(", ")
                        )
                    });
                }
            }
        }
        health
    }

    async fn componentstatuses(&self) -> Vec<ComponentHealth> {
        let started = Instant::now();
        let api: Api<ComponentStatus> = Api::all(self.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(|cs| {
                    let healthy = cs
                        .conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == "Healthy");
                    let up = healthy.is_some_and(|c| c.status == "True");
                    ComponentHealth {
                        component: cs.metadata.name.clone().unwrap_or_default(),
                        url: "componentstatuses".into(),
                        up,
                        latency_ms: started.elapsed().as_secs_f64() * 1e3,
                        error: (!up).then(|| {
                            healthy
                                .and_then(|c| c.error.clone().or(c.message.clone()))
                                .unwrap_or_else(|| "no Healthy condition".into())
                        }),
                        checks: 1,
                        failures: u64::from(!up),
                    }
                })
                .collect(),
            Err(err) => vec![ComponentHealth {
                component: "componentstatuses".into(),
                url: "componentstatuses".into(),
                error: Some(format!(
                    "cannot list componentstatuses ({err}); the cluster may no longer serve \
                     them. Fix: set controlplane.componentstatuses: false, or grant \
                     {{apiGroups: [\"\"], resources: [\"componentstatuses\"], verbs: [\"list\"]}}"
                )),
                checks: 1,
                failures: 1,
                ..ComponentHealth::default()
            }],
        }
    }
}
