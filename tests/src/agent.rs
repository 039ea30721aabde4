//! Runs the real `sonde` binary (`sonde run --output json`) and collects its NDJSON events.
//!
//! Readiness is the systemd notification protocol: the harness listens on a datagram socket
//! passed as `NOTIFY_SOCKET` and waits for `READY=1`, which the agent sends once every probe is
//! attached.

use std::{
    cell::Cell,
    fmt::Display,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use crate::{
    events::EventLog,
    poll::{Shown, poll_until},
};

/// How long an agent may take to start capturing (BTF parsing and probe loading on a busy
/// host).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The agent binary: `SONDE_BIN` (set by `cargo xtask test`), else next to the test binary's
/// target directory.
/// Appends every line `pipe` yields to `text` (a child's stderr, read while it runs) until it
/// closes.
pub fn collect_text(pipe: impl Read + Send + 'static, text: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = String::new();
        let mut reader = BufReader::new(pipe);
        loop {
            buf.clear();
            match reader.read_line(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&buf),
            }
        }
    })
}

/// `sonde config show --output json --config FILE`, which must accept the file.
#[track_caller]
pub fn config_show(file: &Path) -> Value {
    let out = Command::new(sonde_bin())
        .args(["config", "show", "--output", "json", "--config"])
        .arg(file)
        .output()
        .expect("sonde config show");
    assert!(
        out.status.success(),
        "{} rejected: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sonde config show prints JSON")
}

/// Runs a `sonde` client command (`status --output json`, `diagnose --json`, …) that must
/// succeed, and parses its JSON output; fails with its stderr otherwise.
#[track_caller]
pub fn client_json(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run sonde");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn sonde_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SONDE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/sonde
    let guess = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("sonde"));
    match guess {
        Some(path) if path.is_file() => path,
        _ => panic!(
            "the sonde binary was not found (SONDE_BIN unset, nothing at target/<profile>/sonde): \
             run the tests with `cargo xtask test`, which builds it"
        ),
    }
}

/// `sonde run` without its HTTP endpoints (tests run agents in parallel: the default ports
/// would collide); add the test's own arguments.
pub fn sonde_run() -> Command {
    let mut cmd = Command::new(sonde_bin());
    cmd.args(["run", "--api-listen", "off", "--metrics-listen", "off"]);
    cmd
}

/// The same, as a shell command line (for tests that start the agent from a script).
pub const SONDE_RUN_ARGS: &str = "run --api-listen off --metrics-listen off";

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmRSS` and `VmHWM` (the peak) of `pid`, in KiB (0 when unreadable).
pub fn rss_and_peak_kib(pid: u32) -> (u64, u64) {
    let field = |name| status_kib(pid, name).unwrap_or(0);
    (field("VmRSS"), field("VmHWM"))
}

/// User + system CPU time of `pid` so far, in seconds (0 when unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the comm's closing parenthesis; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The systemd notification socket a test passes to the agent as `NOTIFY_SOCKET`: the agent
/// sends `READY=1` on it once every probe is attached.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    ready: Cell<bool>,
}

impl NotifySocket {
    /// Binds `notify.sock` in `dir`.
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_nonblocking(true)
            .expect("non-blocking notify socket");
        NotifySocket {
            socket,
            path,
            ready: Cell::new(false),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `READY=1` has arrived (reads every notification waiting).
    pub fn ready(&self) -> bool {
        let mut buf = [0u8; 512];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                self.ready.set(true);
            }
        }
        self.ready.get()
    }

    /// Waits for `READY=1` from `child`; `Err` with its exit status if it exits first. Fails
    /// the test, showing `log()`, when it is not ready within [`READY_TIMEOUT`].
    #[track_caller]
    pub fn wait_ready(
        &self,
        child: &mut Child,
        log: impl Fn() -> String,
    ) -> Result<(), ExitStatus> {
        poll_until("READY=1 from sonde", READY_TIMEOUT, || {
            if self.ready() {
                Ok(Ok(()))
            } else if let Ok(Some(status)) = child.try_wait() {
                Ok(Err(status))
            } else {
                Err(Shown(format!("no READY=1 yet; its log:\n{}", log())))
            }
        })
    }
}

pub struct Agent {
    child: Child,
    /// Where it serves /metrics, once known (from its log).
    metrics: Option<std::net::SocketAddr>,
    api: Option<SocketAddr>,
    events: EventLog,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stats_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a stopped agent produced.
pub struct Stopped {
    pub events: Vec<Value>,
    /// The `--stats-file` JSON.
    pub stats: Value,
    pub stderr: String,
}

impl Agent {
    /// Starts `sonde run --output json` with its HTTP API on a free loopback port (see
    /// [`Self::api`]) and `extra` arguments.
    pub fn start_with_api(extra: &[&str]) -> Self {
        let addr = crate::api::free_loopback_addr();
        let listen = addr.to_string();
        let mut args = vec!["--api-listen", listen.as_str()];
        args.extend_from_slice(extra);
        let mut agent = Self::start(&args);
        agent.api = Some(addr);
        agent
    }

    /// The API address of an agent started with [`Self::start_with_api`].
    pub fn api(&self) -> SocketAddr {
        self.api
            .expect("this agent runs without its API: start it with Agent::start_with_api")
    }

    /// Starts `sonde run --output json` with `extra` arguments and waits until it is capturing.
    /// Unless `extra` says otherwise, /metrics is served on a free loopback port (see
    /// [`Agent::metrics_addr`]), so agents of concurrent tests never collide.
    /// The HTTP API is off unless `extra` sets `--api-listen` (tests run agents in parallel).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`Self::start`] with these environment variables set (e.g. the downward API's).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        crate::require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let notify = NotifySocket::bind(dir.path());
        let stats_file = dir.path().join("stats.json");
        let mut child = Command::new(sonde_bin())
            .args(["run", "--output", "json", "--drain-interval", "20ms"])
            .arg("--stats-file")
            .arg(&stats_file)
            .args(if extra.contains(&"--api-listen") {
                &[][..]
            } else {
                &["--api-listen", "off"][..]
            })
            .args(extra)
            .args(if extra.contains(&"--metrics-listen") {
                &[][..]
            } else {
                &["--metrics-listen", "127.0.0.1:0"][..]
            })
            .env("NOTIFY_SOCKET", notify.path())
            .env("SONDE_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", sonde_bin().display()));

        let events = EventLog::default();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let err_pipe = child.stderr.take().expect("stderr");
        let ev = events.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent wrote invalid JSON ({e}): {line}"));
                ev.push(value);
            }
        });
        let err_reader = collect_text(err_pipe, Arc::clone(&stderr));

        let mut agent = Agent {
            child,
            metrics: None,
            api: None,
            events,
            stderr,
            readers: vec![out_reader, err_reader],
            stats_file,
            _dir: dir,
        };
        // (not ready in time: the panic drops `agent`, which kills it)
        let stderr = Arc::clone(&agent.stderr);
        let log = move || stderr.lock().expect("lock").clone();
        if let Err(status) = notify.wait_ready(&mut agent.child, log) {
            for r in agent.readers.drain(..) {
                let _ = r.join();
            }
            panic!(
                "sonde exited ({status}) before it was ready:\n{}",
                agent.stderr.lock().expect("lock")
            );
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the agent logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// The address of the agent's /metrics endpoint, from its "serving Prometheus metrics at
    /// http://ADDR/metrics" log line.
    pub fn metrics_addr(&mut self) -> std::net::SocketAddr {
        if let Some(addr) = self.metrics {
            return addr;
        }
        let addr = self.wait_log(
            "the agent to log where it serves /metrics",
            Duration::from_secs(10),
            |log| {
                log.split("http://")
                    .skip(1)
                    .find_map(|rest| rest.split_once("/metrics")?.0.parse().ok())
            },
        );
        self.metrics = Some(addr);
        addr
    }

    /// Waits until `find` finds what it looks for in the agent's log (its stderr so far), and
    /// returns it. Fails the test, showing the log, when `timeout` passes first.
    #[track_caller]
    pub fn wait_log<T>(
        &self,
        what: impl Display,
        timeout: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> T {
        poll_until(what, timeout, || {
            let log = self.stderr.lock().expect("lock");
            find(&log).ok_or_else(|| Shown(log.clone()))
        })
    }

    /// Waits for a log line containing `text`.
    #[track_caller]
    pub fn wait_log_line(&self, text: &str, timeout: Duration) {
        self.wait_log(format!("the log line {text:?}"), timeout, |log| {
            log.contains(text).then_some(())
        })
    }

    /// Resident memory of the agent now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS").expect("VmRSS in /proc/<agent>/status")
    }

    /// Events received so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.snapshot()
    }

    /// Waits until `done` holds over the events received, and returns them; fails the test
    /// when `timeout` passes first (see [`EventLog::wait_for`]).
    #[track_caller]
    pub fn wait_for(
        &self,
        what: impl Display,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.events.wait_for(what, timeout, done)
    }

    /// SIGTERM, wait for a clean exit, and return everything it produced.
    pub fn stop(mut self) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // (not stopped in time: the panic drops `self`, which kills it)
        let status = poll_until(
            "sonde to stop after SIGTERM",
            Duration::from_secs(30),
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                _ => Err(Shown(self.stderr.lock().expect("lock").clone())),
            },
        );
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().expect("lock").clone();
        assert!(status.success(), "sonde exited with {status}:\n{stderr}");
        let mut stats = String::new();
        std::fs::File::open(&self.stats_file)
            .and_then(|mut f| f.read_to_string(&mut stats))
            .unwrap_or_else(|e| panic!("no stats file from sonde ({e}):\n{stderr}"));
        Stopped {
            events: self.events.snapshot(),
            stats: serde_json::from_str(&stats).expect("stats JSON"),
            stderr,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Stopped {
    /// Asserts the agent lost nothing: no kernel ring buffer loss, no decode error, no output
    /// drop.
    pub fn assert_nothing_lost(&self) {
        assert_eq!(
            self.stats["lost"], 0,
            "the agent lost events: {}",
            self.stats
        );
    }
}
