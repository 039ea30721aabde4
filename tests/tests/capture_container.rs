//! A process in a real runc container is attributed, in the kernel, to the container's cgroup:
//! its events carry the inode of the container's cgroup v2 directory.

use std::time::Duration;

use sonde_tests::{
    agent::Agent,
    cgroup::TestCgroup,
    events::{str_of, u64_of},
    runc::{Bundle, unique_id},
};

#[test]
fn events_from_a_runc_container_carry_its_cgroup_id() {
    let id = unique_id("sonde-capture");
    // The directory exists before runc starts, so its inode is known; runc joins it.
    let cgroup = TestCgroup::create(&format!("sonde-test/{id}"));
    let cgroup_id = cgroup.id();
    let bundle = Bundle::new(
        &["/bin/sh", "-c", "/bin/true; /bin/sleep 0.05; exit 5"],
        &cgroup.rel,
    );

    let agent = Agent::start(&[]);
    let status = bundle.run(&id);
    assert_eq!(status.code(), Some(5), "container exit status");

    let in_cgroup = |ev: &serde_json::Value| ev["cgroup_id"].as_u64() == Some(cgroup_id);
    agent.wait_for("the container's exit 5", Duration::from_secs(10), |ev| {
        ev.iter()
            .any(|e| in_cgroup(e) && e["type"] == "process_exit" && e["exit_code"] == 5)
    });
    let stopped = agent.stop();
    stopped.assert_nothing_lost();
    let mine: Vec<_> = stopped.events.iter().filter(|e| in_cgroup(e)).collect();

    let exec_of = |file: &str| {
        mine.iter()
            .filter(|e| e["type"] == "process_exec" && e["filename"] == file)
            .count()
    };
    assert_eq!(exec_of("/bin/sh"), 1, "container init exec: {mine:#?}");
    assert_eq!(exec_of("/bin/true"), 1, "{mine:#?}");
    assert_eq!(exec_of("/bin/sleep"), 1, "{mine:#?}");
    // The shell's exit (status 5) and its children's exits, all in the container's cgroup.
    let sh_exit = mine
        .iter()
        .find(|e| e["type"] == "process_exit" && e["exit_code"] == 5)
        .unwrap_or_else(|| panic!("no exit 5 in the container cgroup: {mine:#?}"));
    let sh_exec = mine
        .iter()
        .find(|e| e["type"] == "process_exec" && e["filename"] == "/bin/sh")
        .expect("sh exec");
    assert_eq!(u64_of(sh_exit, "pid"), u64_of(sh_exec, "pid"));
    let true_exec = mine
        .iter()
        .find(|e| e["type"] == "process_exec" && e["filename"] == "/bin/true")
        .expect("true exec");
    // /bin/true is the shell's child: host pids, parent chain intact.
    assert_eq!(u64_of(true_exec, "ppid"), u64_of(sh_exec, "pid"));
    assert_eq!(str_of(true_exec, "comm"), "true");
    // Nothing of the container's processes leaked into another cgroup.
    let sh_pid = u64_of(sh_exec, "pid");
    let elsewhere: Vec<_> = stopped
        .events
        .iter()
        .filter(|e| e["ppid"].as_u64() == Some(sh_pid) && !in_cgroup(e))
        .collect();
    assert!(elsewhere.is_empty(), "{elsewhere:#?}");
}
