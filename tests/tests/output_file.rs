//! `--output-file` with a small `--output-rotate-size`: every line lands whole in exactly one
//! file, no file passes the limit, only `--output-rotate-keep` rotated files remain, and the
//! newest events are all there, in order (nothing lost at a rotation).

use std::{process::Command, time::Duration};

use serde_json::Value;
use sonde_tests::{agent::Agent, poll::poll_until};

// Large enough that other processes on a busy host do not push the test's own events out of
// the retained files, small enough that the test's events rotate several times.
const LIMIT: usize = 64 << 10;
const KEEP: u32 = 5;
const EXECS: usize = 400;

fn rotated(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    name.into()
}

#[test]
fn the_output_file_rotates_by_size_without_losing_or_splitting_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.ndjson");
    let agent = Agent::start(&[
        "--output-file",
        path.to_str().expect("utf-8 path"),
        "--output-rotate-size",
        "64KiB",
        "--output-rotate-keep",
        &KEEP.to_string(),
    ]);
    // Sequential, so their exec events are in pid order of spawning.
    let mut pids = Vec::new();
    for _ in 0..EXECS {
        let child = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        pids.push(child.id() as u64);
        let mut child = child;
        assert!(child.wait().expect("wait").success());
    }
    // The last exec written out (in the current file, or the one just rotated away).
    let last = pids[pids.len() - 1];
    poll_until(
        "the last exec in the output file",
        Duration::from_secs(10),
        || {
            let written = [path.clone(), rotated(&path, 1)].iter().any(|file| {
                std::fs::read_to_string(file).is_ok_and(|text| {
                    text.lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .any(|e| e["type"] == "process_exec" && e["pid"] == last)
                })
            });
            if written { Ok(()) } else { Err("not yet") }
        },
    );
    let stopped = agent.stop();
    assert!(
        stopped.events.is_empty(),
        "stdout stays empty with --output-file"
    );
    stopped.assert_nothing_lost();

    assert!(
        !rotated(&path, KEEP + 1).exists(),
        "more than {KEEP} rotated files"
    );
    let mut events: Vec<Value> = Vec::new();
    for file in (1..=KEEP)
        .rev()
        .map(|n| rotated(&path, n))
        .chain([path.clone()])
    {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} ({EXECS} execs fill more than {KEEP} files)",
                file.display()
            )
        });
        assert!(
            text.len() <= LIMIT,
            "{} has {} bytes",
            file.display(),
            text.len()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            file.display()
        );
        for line in text.lines() {
            events.push(serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("split or invalid line in {}: {e}: {line}", file.display())
            }));
        }
    }
    let seen: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "process_exec" && e["filename"] == "/bin/true")
        .filter_map(|e| e["pid"].as_u64())
        .filter(|pid| pids.contains(pid))
        .collect();
    assert!(
        seen.len() >= 10,
        "too few of the test's execs kept: {seen:?}"
    );
    // What the retained files hold is exactly the newest of the test's execs, in order.
    assert_eq!(
        seen,
        pids[pids.len() - seen.len()..],
        "a gap: events lost at a rotation"
    );
}
