//! Helpers shared by Sonde's integration tests (tests/tests/*.rs). Everything here drives real
//! things: the agent binary on the real kernel, real processes, sockets and runc containers, and
//! a test kubelet over real HTTPS ([`kube_standin`]).

pub mod agent;
pub mod api;
pub mod cgroup;
pub mod cluster;
pub mod containerd;
pub mod events;
pub mod kube_standin;
pub mod metrics;
pub mod peer;
pub mod poll;
pub mod runc;
pub mod yaml;

/// Fails the test, clearly, when it cannot do what it must: these tests need root and BPF, and
/// a test that silently skips proves nothing.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) to load eBPF programs \
             and create cgroups: run the suite as root with `cargo xtask test`"
        );
    }
}
