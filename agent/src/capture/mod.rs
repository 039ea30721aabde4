//! Kernel capture: check the node, compute the kernel layout, load the embedded eBPF object,
//! attach what this kernel offers, and hand out the ring buffer reader and drop counters.

pub mod btf;
pub mod counters;
pub mod decode;
pub mod exclusive;
pub mod layout;
pub mod logger;
pub mod object;
pub mod preflight;
pub mod probes;
pub mod ringbuf;
pub mod tracefs;

use std::{collections::BTreeSet, time::Duration};

use aya::maps::{PerCpuArray, RingBuf};
use sonde_common::names;

pub use counters::{CounterValues, KernelCounters};
pub use probes::{ProbeState, ProbeStatus};
pub use ringbuf::{EventReader, RecordSink};

/// `capture.*`: sizes and timings of the capture. Defaults suit a busy node; see
/// docs/configuration.md.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Ring buffer size in bytes: a power of two, at least one page, at most 2 GiB.
    #[serde(with = "crate::units::size")]
    pub ring_buffer_size: u64,
    /// Connections tracked at once (LRU; an evicted one closes flagged `seen_open: false`).
    pub max_connections: u32,
    /// The kernel wakes the agent once this many bytes wait in the ring buffer.
    #[serde(with = "crate::units::size")]
    pub wakeup_bytes: u64,
    /// The agent drains the ring buffer at least this often.
    #[serde(with = "humantime_serde")]
    pub drain_interval: Duration,
    /// Kernel BTF to read struct layouts from; default `/sys/kernel/btf/vmlinux`. For kernels
    /// built without BTF, a file for the exact kernel build (e.g. from BTFHub) works.
    pub btf_path: Option<std::path::PathBuf>,
    /// Programs not to attach (names as in `sonde run` probe reports, e.g. `sonde_accept`).
    pub disabled_probes: Vec<String>,
    /// Start even when another Sonde's programs are loaded in this kernel ([`exclusive`]).
    pub allow_other_agents: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            ring_buffer_size: 2 << 20,
            max_connections: 65_536,
            wakeup_bytes: 256 << 10,
            drain_interval: Duration::from_millis(50),
            btf_path: None,
            disabled_probes: Vec::new(),
            allow_other_agents: false,
        }
    }
}

impl CaptureConfig {
    /// The ring buffer size as the kernel takes it (see [`ring_buffer_size_ok`]).
    pub fn ring_buffer_bytes(&self) -> Result<u32, CaptureError> {
        u32::try_from(self.ring_buffer_size)
            .ok()
            .filter(|&s| ring_buffer_size_ok(u64::from(s)))
            .ok_or(CaptureError::RingBufferSize(self.ring_buffer_size))
    }
}

/// Whether the kernel takes `bytes` as a ring buffer size: a power of two from one page (4 KiB)
/// to 2 GiB.
pub fn ring_buffer_size_ok(bytes: u64) -> bool {
    bytes.is_power_of_two() && (4096..=1 << 31).contains(&bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(
        "invalid ring buffer size {0} bytes: it must be a power of two from one page (4096) \
         to 2GiB. Fix: e.g. --ring-buffer-size 8MiB"
    )]
    RingBufferSize(u64),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no map {0} (build bug)")]
    MissingMap(&'static str),
    #[error("cannot use map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot poll the ring buffer: {0}")]
    Poll(std::io::Error),
    #[error(
        "no probe could be attached, so nothing would be captured: {0}. Fix: see the reasons \
         above; `sonde run --log-level debug` shows the verifier's output"
    )]
    NothingAttached(String),
    #[error(
        "another Sonde already runs on this kernel ({0}): a second one would count every event \
         twice. Fix: stop it (a pod stuck terminating: `kubectl delete pod --grace-period=0 \
         --force`; a host install: `systemctl stop sonde`), or start this one anyway with \
         --set capture.allow_other_agents=true"
    )]
    AnotherAgent(exclusive::OtherAgent),
}

impl CaptureError {
    /// Process exit code for this error (sysexits.h), so scripts can tell causes apart.
    pub fn exit_code(&self) -> i32 {
        match self {
            CaptureError::Preflight(preflight::PreflightError::NotPrivileged { .. }) => 77,
            CaptureError::Preflight(_)
            | CaptureError::Tracefs(_)
            | CaptureError::Btf(_)
            | CaptureError::NothingAttached(_) => 69,
            CaptureError::RingBufferSize(_) => 78,
            // EX_TEMPFAIL: the other agent may go away (the kubelet retries with a backoff).
            CaptureError::AnotherAgent(_) => 75,
            _ => 70,
        }
    }
}

/// Fails when [`exclusive::other_agent`] finds another agent (programs other than `ours`, with
/// an id below `below`; 0: any). A kernel that refuses the listing is logged and let through
/// (degraded, with the reason).
fn refuse_another_agent(ours: &BTreeSet<u32>, below: u32) -> Result<(), CaptureError> {
    match exclusive::other_agent(ours, below) {
        Ok(None) => Ok(()),
        Ok(Some(other)) => Err(CaptureError::AnotherAgent(other)),
        Err(err) => {
            tracing::warn!(
                %err,
                "cannot list the kernel's BPF programs (needs CAP_SYS_ADMIN), so a second Sonde \
                 on this node would not be noticed"
            );
            Ok(())
        }
    }
}

/// Returns memory freed after start-up's large transient allocations (BTF parsing) to the
/// system, so the agent's resident size reflects what it keeps.
fn release_freed_memory() {
    crate::memory::trim_heap();
}

/// A running capture. Dropping it detaches every program.
pub struct Capture {
    _ebpf: aya::Ebpf,
    pub reader: EventReader,
    pub counters: KernelCounters,
    pub probes: Vec<ProbeStatus>,
    /// Kernel fields this kernel lacks (features degraded, not lost).
    pub missing_fields: Vec<String>,
    _logger: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    /// Checks the node, loads and attaches. Must run inside a tokio runtime.
    pub fn start(opts: &CaptureConfig) -> Result<Self, CaptureError> {
        preflight::check()?;
        if !opts.allow_other_agents {
            refuse_another_agent(&BTreeSet::new(), 0)?;
        }
        let size = opts.ring_buffer_bytes()?;
        // A loader that never parses the kernel's BTF (see object::loader): our own much
        // smaller index gives the offsets.
        let mut loader = object::loader();
        release_freed_memory();
        let tracefs = tracefs::Tracefs::find_or_mount()?;
        // The BTF index is dropped once the offsets are known.
        let layout = {
            let btf = match &opts.btf_path {
                Some(path) => btf::Btf::from_file(path)?,
                None => btf::Btf::from_kernel()?,
            };
            layout::Layout::compute(&btf, &tracefs, opts.wakeup_bytes)
        };
        for field in &layout.missing {
            tracing::warn!(field = %field, "kernel field not available; dependent data degraded");
        }

        release_freed_memory();
        let mut ebpf = loader
            .map_max_entries(names::EVENTS_MAP, size)
            .map_max_entries(names::CONNS_MAP, opts.max_connections.max(1))
            .override_global(names::LAYOUT_GLOBAL, &layout.abi, true)
            .load(object::BYTES)?;
        let logger = logger::spawn(&mut ebpf);

        let probes = probes::attach_all(&mut ebpf, &tracefs, &layout, &opts.disabled_probes);
        for p in &probes {
            match &p.state {
                ProbeState::Attached => {
                    tracing::info!(program = p.program, hook = %p.hook, "probe attached")
                }
                ProbeState::Disabled => {
                    tracing::info!(program = p.program, hook = %p.hook, "probe disabled by configuration")
                }
                ProbeState::Unavailable(reason) => tracing::warn!(
                    program = p.program, hook = %p.hook, lost = p.provides, %reason,
                    "probe unavailable"
                ),
                ProbeState::Failed(reason) => tracing::error!(
                    program = p.program, hook = %p.hook, lost = p.provides, %reason,
                    "probe failed"
                ),
            }
        }
        if !probes.iter().any(|p| p.state == ProbeState::Attached) {
            let reasons: Vec<String> = probes
                .iter()
                .map(|p| format!("{}: {:?}", p.hook, p.state))
                .collect();
            return Err(CaptureError::NothingAttached(reasons.join("; ")));
        }

        if !opts.allow_other_agents {
            // Two agents started at the same moment both passed the first check: the one whose
            // programs were loaded first (lower ids) stays.
            let ours: BTreeSet<u32> = ebpf
                .programs()
                .filter_map(|(_, p)| p.info().ok().map(|i| i.id()))
                .collect();
            refuse_another_agent(&ours, ours.first().copied().unwrap_or(u32::MAX))?;
        }

        let events = ebpf
            .take_map(names::EVENTS_MAP)
            .ok_or(CaptureError::MissingMap(names::EVENTS_MAP))?;
        let events = RingBuf::try_from(events).map_err(|source| CaptureError::Map {
            name: names::EVENTS_MAP,
            source,
        })?;
        let counters = ebpf
            .take_map(names::COUNTERS_MAP)
            .ok_or(CaptureError::MissingMap(names::COUNTERS_MAP))?;
        let counters = PerCpuArray::try_from(counters).map_err(|source| CaptureError::Map {
            name: names::COUNTERS_MAP,
            source,
        })?;
        Ok(Self {
            _ebpf: ebpf,
            reader: EventReader::new(events, opts.drain_interval).map_err(CaptureError::Poll)?,
            counters: KernelCounters::new(counters),
            probes,
            missing_fields: layout.missing,
            _logger: logger,
        })
    }
}
