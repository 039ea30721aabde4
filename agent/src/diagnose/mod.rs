//! `sonde diagnose`: the troubleshooting guide as one command. Each check is PASS, WARN or FAIL
//! with what was seen and, when not PASS, the fix; grouped by area (kernel, privileges, node,
//! kubelet, apiserver ([`apiserver`]), ports). Nothing is loaded or attached and nothing is mounted: the checks ask the
//! same questions `sonde run` would, with the same configuration, and report every answer
//! instead of stopping at the first. docs/deploy.md's troubleshooting section lists them.

mod apiserver;

use std::{net::TcpListener, path::Path, time::Duration};

use serde::Serialize;

use crate::{
    capture::{btf, exclusive, preflight, probes, tracefs::Tracefs},
    config::Config,
    kube::KubeletClient,
    node::cgroup,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub area: &'static str,
    pub name: String,
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// What to do, when not PASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(area: &'static str, name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        area,
        name: name.into(),
        verdict: Verdict::Pass,
        detail: detail.into(),
        fix: None,
    }
}

fn not_pass(
    verdict: Verdict,
    area: &'static str,
    name: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        area,
        name: name.into(),
        verdict,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Every check's result, in the order they ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    /// The checks grouped by area, one line each (`PASS  name  detail`), fixes indented under.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut area = "";
        for c in &self.checks {
            if c.area != area {
                area = c.area;
                out.push_str(&format!("{area}\n"));
            }
            let verdict = match c.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            out.push_str(&format!("  {verdict}  {:<40} {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
        let count = |v| self.checks.iter().filter(|c| c.verdict == v).count();
        out.push_str(&format!(
            "\n{} passed, {} warnings, {} failed\n",
            count(Verdict::Pass),
            count(Verdict::Warn),
            count(Verdict::Fail)
        ));
        out
    }
}

/// Runs every check for `config` (the configuration `sonde run` would use).
pub async fn run(config: &Config) -> Report {
    let mut checks = Vec::new();
    kernel(config, &mut checks);
    privileges(config, &mut checks);
    node(config, &mut checks);
    kubelet(config, &mut checks).await;
    apiserver::checks(config, &mut checks).await;
    ports(config, &mut checks);
    Report { checks }
}

fn kernel(config: &Config, checks: &mut Vec<Check>) {
    const AREA: &str = "kernel";
    checks.push(match preflight::check_bpf_syscall() {
        Ok(()) => pass(AREA, "bpf()", "the bpf() system call works"),
        Err(err) => not_pass(
            Verdict::Fail,
            AREA,
            "bpf()",
            err.to_string(),
            "see the message",
        ),
    });
    checks.push(match preflight::check_ring_buffer() {
        Ok(()) => pass(AREA, "ring buffer", "BPF ring buffers are supported"),
        Err(err) => not_pass(
            Verdict::Fail,
            AREA,
            "ring buffer",
            err.to_string(),
            "Linux 5.8+",
        ),
    });
    let btf_path = config
        .capture
        .btf_path
        .clone()
        .unwrap_or_else(|| btf::VMLINUX_BTF.into());
    checks.push(match btf::Btf::from_file(&btf_path) {
        Ok(_) => pass(AREA, "BTF", format!("{} parses", btf_path.display())),
        Err(err) => not_pass(
            Verdict::Fail,
            AREA,
            "BTF",
            err.to_string(),
            "a kernel with CONFIG_DEBUG_INFO_BTF=y, or capture.btf_path pointing at the BTF of \
             this exact kernel build (e.g. from BTFHub)",
        ),
    });
    let tracefs = Tracefs::find();
    match &tracefs {
        Some(t) => checks.push(pass(
            AREA,
            "tracefs",
            format!("mounted at {}", t.root().display()),
        )),
        None => checks.push(not_pass(
            Verdict::Warn,
            AREA,
            "tracefs",
            "not mounted (sonde run mounts it at /sys/kernel/tracing, which needs CAP_SYS_ADMIN)",
            "mount -t tracefs tracefs /sys/kernel/tracing; in a container, mount the host's \
             /sys/kernel/tracing",
        )),
    }
    for probe in probes::PROBES {
        if config
            .capture
            .disabled_probes
            .iter()
            .any(|d| d == probe.program)
        {
            checks.push(pass(
                AREA,
                probe.hook.to_string(),
                "disabled by configuration",
            ));
            continue;
        }
        let present = tracefs.as_ref().map(|t| match probe.hook {
            probes::Hook::Tracepoint { category, name } => t.has_event(category, name),
            probes::Hook::RawTracepoint { name } => has_event_named(t.root(), name),
        });
        checks.push(match present {
            Some(true) => pass(
                AREA,
                probe.hook.to_string(),
                format!("present ({})", probe.provides),
            ),
            Some(false) => not_pass(
                Verdict::Fail,
                AREA,
                probe.hook.to_string(),
                format!("this kernel has no such tracepoint: no {}", probe.provides),
                "a newer kernel, or --disable-probe to run without it",
            ),
            None => not_pass(
                Verdict::Warn,
                AREA,
                probe.hook.to_string(),
                "not checked (tracefs is not mounted)",
                "mount tracefs",
            ),
        });
    }
    checks.push(memlock());
}

/// Whether any tracefs event category has an event called `name` (raw tracepoints are named
/// without their category).
fn has_event_named(root: &Path, name: &str) -> bool {
    std::fs::read_dir(root.join("events")).is_ok_and(|dirs| {
        dirs.filter_map(Result::ok)
            .any(|d| d.path().join(name).join("format").is_file())
    })
}

fn memlock() -> Check {
    const AREA: &str = "kernel";
    // Linux 5.11+ charges BPF memory to the memory cgroup: RLIMIT_MEMLOCK no longer matters.
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let shown = if limit == nix::sys::resource::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        format!("{} KiB", limit / 1024)
    };
    if version >= (5, 11) {
        pass(
            AREA,
            "memlock",
            format!(
                "kernel {release} charges BPF memory to the cgroup (RLIMIT_MEMLOCK {shown} is not used)"
            ),
        )
    } else if limit == nix::sys::resource::RLIM_INFINITY || limit >= 64 << 20 {
        pass(AREA, "memlock", format!("RLIMIT_MEMLOCK {shown}"))
    } else {
        not_pass(
            Verdict::Warn,
            AREA,
            "memlock",
            format!("kernel {release} counts BPF maps against RLIMIT_MEMLOCK {shown}"),
            "LimitMEMLOCK=infinity in the unit (manifests/host/sonde.service), or CAP_SYS_RESOURCE",
        )
    }
}

fn privileges(config: &Config, checks: &mut Vec<Check>) {
    const AREA: &str = "privileges";
    checks.push(match preflight::check_privileges() {
        Ok(()) => pass(
            AREA,
            "capabilities",
            "enough to load and attach eBPF programs",
        ),
        Err(err) => not_pass(
            Verdict::Fail,
            AREA,
            "capabilities",
            err.to_string(),
            "see the message",
        ),
    });
    checks.push(match exclusive::other_agent(&Default::default(), 0) {
        Ok(None) => pass(
            AREA,
            "one agent per node",
            "no other Sonde runs on this kernel",
        ),
        Ok(Some(other)) if config.capture.allow_other_agents => not_pass(
            Verdict::Warn,
            AREA,
            "one agent per node",
            format!(
                "another Sonde runs on this kernel ({other}); capture.allow_other_agents lets a \
                 second one start, and both count every event"
            ),
            "keep one agent per node",
        ),
        Ok(Some(other)) => not_pass(
            Verdict::Fail,
            AREA,
            "one agent per node",
            format!("another Sonde runs on this kernel ({other}): sonde run would refuse to start"),
            "stop it, or keep it and do not start a second one",
        ),
        Err(err) => not_pass(
            Verdict::Warn,
            AREA,
            "one agent per node",
            format!("cannot list the kernel's BPF programs: {err}"),
            "CAP_SYS_ADMIN lets Sonde notice a second agent",
        ),
    });
}

fn node(config: &Config, checks: &mut Vec<Check>) {
    const AREA: &str = "node";
    let host = config.node.host();
    let root = &config.node.host_root;
    checks.push(if root.join("proc/1").is_dir() {
        pass(
            AREA,
            "host root",
            format!("{} holds the host's /proc", root.display()),
        )
    } else {
        not_pass(
            Verdict::Fail,
            AREA,
            "host root",
            format!("{}/proc has no process 1", root.display()),
            "mount the host's /proc under node.host_root (the DaemonSet mounts it at /host/proc)",
        )
    });
    checks.push(match cgroup::find_v2_root(&host) {
        Ok(path) => {
            let layout = if path.ends_with("unified") {
                "hybrid (v1 controllers, v2 at .../unified)"
            } else {
                "pure cgroup v2"
            };
            pass(
                AREA,
                "cgroup layout",
                format!("{layout}: {}", path.display()),
            )
        }
        Err(err) => not_pass(
            Verdict::Fail,
            AREA,
            "cgroup layout",
            err.to_string(),
            "Sonde needs the cgroup v2 hierarchy (pure v2, or hybrid with v2 at \
             /sys/fs/cgroup/unified); mount the host's /sys/fs/cgroup under node.host_root",
        ),
    });
}

async fn kubelet(config: &Config, checks: &mut Vec<Check>) {
    const AREA: &str = "kubelet";
    let Some(kubelet) = crate::run::kubelet_options(config) else {
        checks.push(pass(
            AREA,
            "kubelet",
            "off (kubelet.enabled, or no Kubernetes detected on this host)",
        ));
        return;
    };
    let url = kubelet.resolved_url();
    let mut client = match KubeletClient::new(&kubelet) {
        Ok(client) => client,
        Err(err) => {
            checks.push(not_pass(
                Verdict::Fail,
                AREA,
                "configuration",
                err.to_string(),
                "see the message",
            ));
            return;
        }
    };
    let fetch = tokio::time::timeout(
        kubelet.timeout + Duration::from_secs(1),
        client.fetch_pods(),
    )
    .await;
    checks.push(match fetch {
        Ok(Ok(pods)) => pass(
            AREA,
            "GET /pods",
            format!("{url}: {} pods, TLS and token accepted", pods.pods.len()),
        ),
        Ok(Err(err)) => not_pass(
            Verdict::Fail,
            AREA,
            "GET /pods",
            err.to_string(),
            "see the message; docs/deploy.md has the kubelet section",
        ),
        Err(_) => not_pass(
            Verdict::Fail,
            AREA,
            "GET /pods",
            format!("{url} did not answer within {:?}", kubelet.timeout),
            "check the address (in a DaemonSet NODE_IP from status.hostIP), firewalls \
             between the pod network and port 10250, or hostNetwork",
        ),
    });
}

fn ports(config: &Config, checks: &mut Vec<Check>) {
    const AREA: &str = "ports";
    let listeners = [
        ("metrics", config.metrics.enabled, config.metrics.listen),
        ("api", config.api.enabled, config.api.listen),
    ];
    for (name, enabled, addr) in listeners {
        if !enabled {
            checks.push(pass(AREA, name, "off"));
            continue;
        }
        checks.push(match TcpListener::bind(addr) {
            Ok(_) => pass(AREA, name, format!("{addr} is free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => not_pass(
                Verdict::Warn,
                AREA,
                name,
                format!("{addr} is in use (a running Sonde, or another program)"),
                format!("if it is not Sonde, choose another {name}.listen"),
            ),
            Err(e) => not_pass(
                Verdict::Fail,
                AREA,
                name,
                format!("cannot listen on {addr}: {e}"),
                format!("choose another {name}.listen"),
            ),
        });
    }
}
