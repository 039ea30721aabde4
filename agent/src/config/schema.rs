//! Every configuration key: its type, flag, environment variable and description. The one list
//! the loader checks keys against, that env and `--set` values are parsed by, and that
//! `docs/configuration.md` is generated from (defaults come from `Config::default()`).

use serde_json::Value;

/// The type of a key's value, as written in YAML, in an environment variable or a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    /// A tracing filter: a level, or directives such as `sonde=debug,aya=info`.
    Filter,
    Size,
    Duration,
    Str,
    Path,
    /// `address:port`.
    Addr,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A list of strings (comma-separated in env and flags).
    Strings,
    /// A list of CIDRs (comma-separated in env and flags).
    Cidrs,
}

impl Kind {
    /// What a value must look like, for error messages and the reference.
    pub fn expected(self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Int => "a non-negative integer".into(),
            Kind::Filter => {
                "a level (error, warn, info, debug, trace) or a filter such as sonde=debug".into()
            }
            Kind::Size => "a size such as 4096, 256KiB, 8MiB or 1GiB".into(),
            Kind::Duration => "a duration such as 50ms, 10s or 5m".into(),
            Kind::Str => "a string".into(),
            Kind::Path => "a file path".into(),
            Kind::Addr => "an address:port such as 127.0.0.1:9464 or [::1]:9464".into(),
            Kind::Enum(words) => format!("one of: {}", words.join(", ")),
            Kind::Strings => "a list of strings".into(),
            Kind::Cidrs => "a list of CIDRs such as 10.0.0.0/8, fd00::/8".into(),
        }
    }

    /// Short type name for the reference table.
    pub fn name(self) -> String {
        match self {
            Kind::Bool => "bool".into(),
            Kind::Int => "integer".into(),
            Kind::Filter => "level or filter".into(),
            Kind::Size => "size".into(),
            Kind::Duration => "duration".into(),
            Kind::Str => "string".into(),
            Kind::Path => "path".into(),
            Kind::Addr => "address:port".into(),
            Kind::Enum(words) => words.join(" \\| "),
            Kind::Strings => "list of strings".into(),
            Kind::Cidrs => "list of CIDRs".into(),
        }
    }
}

/// A key's own check of a value given as text.
pub type Check = fn(&str) -> Result<(), String>;

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// Dotted path, e.g. `metrics.listen`.
    pub path: &'static str,
    pub kind: Kind,
    /// `null` (or an empty env value) means "not set".
    pub nullable: bool,
    /// The dedicated `sonde run` flag, if any (every key can also be given with `--set`).
    pub flag: Option<&'static str>,
    /// Another environment variable read for this key, below the `SONDE_…` one: older names
    /// (`SONDE_OUTPUT`) and the Kubernetes downward API (`NODE_NAME`).
    pub env_alias: Option<&'static str>,
    pub doc: &'static str,
    /// A check a value must pass beyond its kind (e.g. a power of two), applied to flags by
    /// the command-line parser (a usage error) and to every source by `Config::validate`.
    pub check: Option<Check>,
}

impl Key {
    /// `SONDE_` + the path upper-cased, dots as `_`.
    pub fn env(&self) -> String {
        env_var(self.path)
    }

    /// Parses a value given as text (env variable, `--set`) into the tree's JSON form; the
    /// typed check happens when the merged tree is deserialized.
    pub fn parse_text(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        if self.nullable && matches!(t, "" | "null" | "~") {
            return Ok(Value::Null);
        }
        match self.kind {
            Kind::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("{text:?} is not a boolean")),
            },
            Kind::Int => t
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| format!("{text:?} is not a non-negative integer")),
            Kind::Strings | Kind::Cidrs => Ok(Value::Array(
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            )),
            _ => Ok(Value::String(t.to_string())),
        }
    }
}

impl Key {
    /// A flag's value checked as the command line gives it (a bad one is a usage error): its
    /// kind, then the key's own check. For an address key with an `enabled` sibling, `off`
    /// means that key set to false ([`Key::off_key`]); the caller handles it.
    pub fn parse_flag(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        match self.kind {
            Kind::Size => {
                crate::units::parse_size(t)?;
            }
            Kind::Duration => {
                humantime::parse_duration(t)
                    .map_err(|e| format!("{text:?} is not a duration ({e}): e.g. 50ms, 10s"))?;
            }
            Kind::Addr => {
                t.parse::<std::net::SocketAddr>().map_err(|_| {
                    let off = if self.off_key().is_some() {
                        " or off"
                    } else {
                        ""
                    };
                    format!(
                        "{text:?} is not an address to listen on: give IP:PORT (e.g. \
                         127.0.0.1:9464, [::1]:9464){off}"
                    )
                })?;
            }
            Kind::Enum(words) if !words.contains(&t) => {
                return Err(format!("{text:?} is not {}", self.kind.expected()));
            }
            Kind::Filter => crate::logging::check_level(t)?,
            _ => {}
        }
        if let Some(check) = self.check {
            check(t)?;
        }
        self.parse_text(t)
    }

    /// For an address key (`metrics.listen`): the `enabled` key of its section, which the
    /// flag's value `off` sets to false.
    pub fn off_key(&self) -> Option<&'static str> {
        if self.kind != Kind::Addr {
            return None;
        }
        let section = self.path.rsplit_once('.')?.0;
        KEYS.iter()
            .find(|k| k.path.strip_prefix(section) == Some(".enabled"))
            .map(|k| k.path)
    }

    /// What the flag's value looks like, for `--help`.
    pub fn value_name(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "BOOL",
            Kind::Int => "N",
            Kind::Filter => "FILTER",
            Kind::Size => "SIZE",
            Kind::Duration => "DURATION",
            Kind::Str => "TEXT",
            Kind::Path => "FILE",
            Kind::Addr if self.off_key().is_some() => "ADDR:PORT|off",
            Kind::Addr => "ADDR:PORT",
            Kind::Enum(_) => "WORD",
            Kind::Strings => "NAME",
            Kind::Cidrs => "CIDR",
        }
    }
}

/// The environment variable of a key path.
pub fn env_var(path: &str) -> String {
    format!("SONDE_{}", path.to_ascii_uppercase().replace('.', "_"))
}

/// Looks a key up by its dotted path.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Whether `prefix` names a section (`metrics`), i.e. keys live under it.
pub fn is_section(prefix: &str) -> bool {
    KEYS.iter().any(|k| {
        k.path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The names allowed directly under `prefix` (`""` for the top level), in reference order.
pub fn children(prefix: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for k in KEYS {
        let rest = if prefix.is_empty() {
            Some(k.path)
        } else {
            k.path
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let name = rest.split('.').next().unwrap_or(rest);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

const fn key(path: &'static str, kind: Kind, flag: Option<&'static str>, doc: &'static str) -> Key {
    Key {
        path,
        kind,
        nullable: false,
        flag,
        env_alias: None,
        doc,
        check: None,
    }
}

const fn checked(k: Key, check: Check) -> Key {
    Key {
        check: Some(check),
        ..k
    }
}

/// `capture.ring_buffer_size`: a power of two between 4KiB and 2GiB.
pub fn ring_buffer_size(text: &str) -> Result<(), String> {
    let n = crate::units::parse_size(text)?;
    if !crate::capture::ring_buffer_size_ok(n) {
        return Err(format!(
            "{} is not a power of two between 4KiB and 2GiB (e.g. 4MiB, 8MiB, 16MiB)",
            crate::units::format_size(n)
        ));
    }
    Ok(())
}

const fn nullable(k: Key) -> Key {
    Key {
        nullable: true,
        ..k
    }
}

const fn alias(k: Key, env: &'static str) -> Key {
    Key {
        env_alias: Some(env),
        ..k
    }
}

const TEXT_JSON: &[&str] = &["text", "json"];

/// Every key, in the order of the reference.
pub static KEYS: &[Key] = &[
    key(
        "log.level",
        Kind::Filter,
        Some("--log-level"),
        "Log level or tracing filter for the logs on stderr: error, warn, info, debug, trace, or e.g. `sonde=debug`.",
    ),
    key(
        "log.format",
        Kind::Enum(TEXT_JSON),
        Some("--log-format"),
        "Format of the logs on stderr.",
    ),
    alias(
        key(
            "output.format",
            Kind::Enum(&["auto", "text", "json"]),
            Some("--output"),
            "Event stream format: readable lines, or NDJSON (one object per line). `auto`: text on a terminal, json otherwise.",
        ),
        "SONDE_OUTPUT",
    ),
    nullable(key(
        "output.file",
        Kind::Path,
        Some("--output-file"),
        "Write the event stream to this file (appended) instead of stdout.",
    )),
    key(
        "output.rotate_size",
        Kind::Size,
        Some("--output-rotate-size"),
        "With `output.file`: start a new file once the current one reaches this size (`0`: never).",
    ),
    key(
        "output.rotate_keep",
        Kind::Int,
        Some("--output-rotate-keep"),
        "With `output.file`: rotated files kept (`FILE.1` is the newest).",
    ),
    checked(
        key(
            "capture.ring_buffer_size",
            Kind::Size,
            Some("--ring-buffer-size"),
            "Kernel → agent ring buffer: a power of two, at least 4KiB.",
        ),
        ring_buffer_size,
    ),
    key(
        "capture.max_connections",
        Kind::Int,
        Some("--max-connections"),
        "TCP connections tracked at once by the kernel (LRU; an evicted one still closes, flagged `seen_open: false`).",
    ),
    key(
        "capture.wakeup_bytes",
        Kind::Size,
        Some("--wakeup-bytes"),
        "The kernel wakes the agent once this much waits in the ring buffer (batched wake-ups).",
    ),
    key(
        "capture.drain_interval",
        Kind::Duration,
        Some("--drain-interval"),
        "The agent drains the ring buffer at least this often.",
    ),
    alias(
        nullable(key(
            "capture.btf_path",
            Kind::Path,
            Some("--btf-path"),
            "Kernel BTF file; `null` is `/sys/kernel/btf/vmlinux`. For kernels built without BTF, the BTF of the exact kernel build (e.g. from BTFHub).",
        )),
        "SONDE_BTF_PATH",
    ),
    key(
        "capture.disabled_probes",
        Kind::Strings,
        Some("--disable-probe"),
        "Programs not to attach: sonde_exec, sonde_fork, sonde_exit, sonde_cgroup_mkdir, sonde_cgroup_rmdir, sonde_tcp_state, sonde_accept.",
    ),
    key(
        "capture.allow_other_agents",
        Kind::Bool,
        None,
        "Start even when another Sonde's eBPF programs are loaded in this kernel (then both count every event). `false`: refuse, naming the other agent (pid, pod or unit), exit code 75.",
    ),
    alias(
        key(
            "node.host_root",
            Kind::Path,
            Some("--host-root"),
            "Where the host's / is mounted when running in a container (e.g. `/host`, with the host's /proc and /sys/fs/cgroup under it).",
        ),
        "SONDE_HOST_ROOT",
    ),
    key(
        "node.max_processes",
        Kind::Int,
        None,
        "Processes kept in the process table (oldest exited ones are evicted first).",
    ),
    key(
        "node.max_cgroups",
        Kind::Int,
        None,
        "Cgroups kept in the cgroup index.",
    ),
    alias(
        nullable(key(
            "node_name",
            Kind::Str,
            Some("--node-name"),
            "This node's Kubernetes name; `null`: the kubelet kubeconfig's user, else the hostname.",
        )),
        "NODE_NAME",
    ),
    nullable(key(
        "kubelet.enabled",
        Kind::Bool,
        Some("--kubelet-enabled"),
        "Fetch pod metadata from the kubelet. `null`: when the host looks like a Kubernetes node (in a pod, `NODE_NAME` set, a service-account token, `/var/lib/kubelet` or `/etc/kubernetes/kubelet.conf` on the host).",
    )),
    nullable(key(
        "kubelet.url",
        Kind::Str,
        Some("--kubelet-url"),
        "Base URL of the kubelet (`/pods` is appended). `null`: `https://$NODE_IP:10250`, else `https://<node name>:10250`.",
    )),
    nullable(key(
        "kubelet.token_file",
        Kind::Path,
        Some("--kubelet-token-file"),
        "Bearer token sent to the kubelet over HTTPS, re-read when it changes; `null` sends none.",
    )),
    nullable(key(
        "kubelet.ca_file",
        Kind::Path,
        Some("--kubelet-ca-file"),
        "PEM CA bundle that signed the kubelet's serving certificate; `null`: the service-account `ca.crt`; on a host install, the kubelet's self-signed `/var/lib/kubelet/pki/kubelet.crt`, else the cluster CA of the kubelet's kubeconfig.",
    )),
    nullable(key(
        "kubelet.client_cert_file",
        Kind::Path,
        None,
        "PEM client certificate presented to the kubelet (with `kubelet.client_key_file`), e.g. `/etc/kubernetes/pki/apiserver-kubelet-client.crt` on a control-plane node. `null`: none; on a host install with no service-account token, the client certificate of the kubelet's kubeconfig.",
    )),
    nullable(key(
        "kubelet.client_key_file",
        Kind::Path,
        None,
        "The PEM private key of `kubelet.client_cert_file` (may be the same file).",
    )),
    key(
        "kubelet.tls_verify",
        Kind::Bool,
        None,
        "Verify the kubelet's certificate (`false` for self-signed kubelet certificates; logged as a warning).",
    ),
    key(
        "kubelet.timeout",
        Kind::Duration,
        None,
        "Limit for one whole kubelet request (connect, TLS, answer, body).",
    ),
    key(
        "kubelet.refresh_interval",
        Kind::Duration,
        None,
        "How often the kubelet's pod list is fetched.",
    ),
    key(
        "kubelet.min_refresh_interval",
        Kind::Duration,
        None,
        "On-demand refreshes (unknown container ids) are at most this frequent; also the first retry delay.",
    ),
    key(
        "kubelet.max_body_bytes",
        Kind::Int,
        None,
        "Largest `/pods` body accepted from the kubelet, in bytes.",
    ),
    key(
        "kubernetes.enabled",
        Kind::Bool,
        None,
        "Watch the apiserver (pods of this node, owners, Services, EndpointSlices). Without a kubeconfig and outside a pod it is skipped with a log line.",
    ),
    nullable(key(
        "kubernetes.kubeconfig",
        Kind::Path,
        Some("--kubeconfig"),
        "Kubeconfig for the apiserver; `null`: the in-cluster service account, else (a host install on a node) the kubelet's kubeconfig: `/etc/kubernetes/kubelet.conf` (kubeadm), `/var/lib/kubelet/kubeconfig` (EKS, GKE), `/var/lib/rancher/k3s/agent/kubelet.kubeconfig` (k3s).",
    )),
    key(
        "kubernetes.pod_labels",
        Kind::Strings,
        None,
        "Pod label keys copied onto events (`pod_labels`), an allow-list: other labels are never shown.",
    ),
    key(
        "kubernetes.namespace_labels",
        Kind::Strings,
        None,
        "Namespace label keys copied onto the events of a pod (`namespace_labels`), an allow-list. Empty: namespaces are not watched.",
    ),
    key(
        "kubernetes.node_labels",
        Kind::Strings,
        None,
        "This node's label keys copied onto every event (`node_labels`), e.g. `topology.kubernetes.io/zone`; an allow-list. Empty: the node is not watched.",
    ),
    nullable(key(
        "kubernetes.context",
        Kind::Str,
        None,
        "The kubeconfig context to use; `null`: its current context.",
    )),
    key(
        "kubernetes.watch_services",
        Kind::Bool,
        None,
        "Watch Services and EndpointSlices (all namespaces) to name remote addresses.",
    ),
    key(
        "kubernetes.watch_owners",
        Kind::Bool,
        None,
        "Watch ReplicaSets and Jobs (metadata only) to resolve a pod's owner to its controller (a Deployment, a CronJob, any custom controller kind).",
    ),
    key(
        "kubernetes.namespace",
        Kind::Str,
        None,
        "The agent's own namespace (where its leader-election Lease lives) when neither `POD_NAMESPACE` (downward API) nor the service account's namespace file says.",
    ),
    key(
        "kubernetes.max_backoff",
        Kind::Duration,
        None,
        "Longest wait between retries of a failing watch.",
    ),
    nullable(key(
        "leader_election.enabled",
        Kind::Bool,
        None,
        "Contend for the cluster's leader Lease `sonde-leader-election` (one agent does the cluster's duties). `null`: on in a pod with apiserver metadata on, off on a host.",
    )),
    key(
        "leader_election.lease_duration",
        Kind::Duration,
        None,
        "How long the others respect a Lease that stopped being renewed before taking it over.",
    ),
    key(
        "leader_election.renew_deadline",
        Kind::Duration,
        None,
        "A leader that could not renew for this long stands down (shorter than `lease_duration`, so it stops before another starts).",
    ),
    key(
        "leader_election.retry_period",
        Kind::Duration,
        None,
        "How often the leader renews and a stand-by retries (a stand-by also watches the Lease, so a release is taken over at once).",
    ),
    key(
        "kube_events.enabled",
        Kind::Bool,
        None,
        "Collect the cluster's Kubernetes events on the leader (`kube_event` in the stream, `sonde_kube_events_total`), resuming from the ConfigMap `sonde-events-token`.",
    ),
    key(
        "kube_events.token_interval",
        Kind::Duration,
        None,
        "How often the leader writes the resume token when it moved (at least 1s; also written before the Lease is released on stop).",
    ),
    key(
        "kube_events.exclude",
        Kind::Strings,
        None,
        "Events to leave out, as `field=value` terms the apiserver filters on (sent as `field!=value`), e.g. `reason=BackOff`, `involvedObject.kind=Node`.",
    ),
    key(
        "kube_events.kinds",
        Kind::Strings,
        None,
        "Only events about these kinds of object, e.g. `Pod, Node` (empty: all).",
    ),
    key(
        "kube_events.reasons",
        Kind::Strings,
        None,
        "Only events with these reasons, e.g. `BackOff, OOMKilling` (empty: all).",
    ),
    key(
        "kube_events.max_tracked",
        Kind::Int,
        None,
        "Events whose last count is remembered at most (to emit repeats and skip unchanged ones after a relist).",
    ),
    key(
        "controlplane.enabled",
        Kind::Bool,
        None,
        "The leader reads the apiserver's `/readyz?verbose` and `/livez?verbose` (`sonde_controlplane_check_up` per sub-check).",
    ),
    key(
        "controlplane.interval",
        Kind::Duration,
        None,
        "How often the control-plane checks run (at least 1s).",
    ),
    key(
        "controlplane.componentstatuses",
        Kind::Bool,
        None,
        "The leader also lists the deprecated `componentstatuses` (needs `componentstatuses` list in RBAC).",
    ),
    key(
        "controlplane.node_components",
        Kind::Enum(&["auto", "on", "off"]),
        None,
        "Check this node's scheduler, controller-manager and etcd: `auto` checks those whose kubeadm static pod manifest is in `<host-root>/etc/kubernetes/manifests`.",
    ),
    key(
        "controlplane.scheduler_url",
        Kind::Str,
        None,
        "The scheduler's health URL on this node.",
    ),
    key(
        "controlplane.controller_manager_url",
        Kind::Str,
        None,
        "The controller-manager's health URL on this node.",
    ),
    key(
        "controlplane.etcd_url",
        Kind::Str,
        None,
        "etcd's health URL on this node (checked with the etcd client certificate below).",
    ),
    key(
        "controlplane.etcd_ca_file",
        Kind::Path,
        None,
        "The CA of etcd's serving certificate (read under `--host-root`).",
    ),
    key(
        "controlplane.etcd_cert_file",
        Kind::Path,
        None,
        "The client certificate etcd accepts (kubeadm's health-check client; read under `--host-root`).",
    ),
    key(
        "controlplane.etcd_key_file",
        Kind::Path,
        None,
        "Its private key.",
    ),
    nullable(key(
        "controlplane.components_ca_file",
        Kind::Path,
        None,
        "The CA of the scheduler's and controller-manager's serving certificates; `null`: their self-signed certificates (kubeadm's default) are accepted.",
    )),
    key(
        "metrics.enabled",
        Kind::Bool,
        None,
        "Serve Prometheus metrics.",
    ),
    key(
        "metrics.listen",
        Kind::Addr,
        Some("--metrics-listen"),
        "Address of the metrics endpoint (`/metrics`); the flag also takes `off` (`metrics.enabled: false`).",
    ),
    key(
        "metrics.max_series",
        Kind::Int,
        Some("--metrics-max-series"),
        "Most time series kept; past it new series are dropped and counted.",
    ),
    key(
        "metrics.remote_ip_allowlist",
        Kind::Cidrs,
        None,
        "Remote addresses kept as a label on connection metrics; others are aggregated (bounded cardinality).",
    ),
    key(
        "metrics.header_timeout",
        Kind::Duration,
        None,
        "A client of `/metrics` must send its request head within this, counted from connecting and again after each response (so it is also the keep-alive idle timeout); else the connection is closed.",
    ),
    key(
        "api.enabled",
        Kind::Bool,
        None,
        "Serve the status API and the event stream over HTTP.",
    ),
    key(
        "api.listen",
        Kind::Addr,
        Some("--api-listen"),
        "Address of the status API and event stream (`/v1/status`, `/v1/events`); the flag also takes `off` (`api.enabled: false`).",
    ),
    key(
        "api.header_timeout",
        Kind::Duration,
        None,
        "A client of the API must send its request head within this, counted from connecting and again after each response (so it is also the keep-alive idle timeout; an event stream being read is never cut by it); else the connection is closed.",
    ),
    nullable(key(
        "api.token_file",
        Kind::Path,
        None,
        "File holding the bearer token every API request must carry (`Authorization: Bearer …`), re-read when it changes; required when `api.listen` is not a loopback address (the event stream and status show every process's arguments). `/metrics` needs none.",
    )),
    nullable(key(
        "api.tls_cert_file",
        Kind::Path,
        None,
        "Serve the API over HTTPS with this PEM certificate chain (server certificate first; `tls.crt` of a Secret), re-read when it changes; needs `api.tls_key_file`. `null`: plain HTTP. `/metrics` stays plain.",
    )),
    nullable(key(
        "api.tls_key_file",
        Kind::Path,
        None,
        "The PEM private key of `api.tls_cert_file`, re-read with it.",
    )),
    key(
        "events.max_subscribers",
        Kind::Int,
        Some("--api-max-subscribers"),
        "Event stream subscribers served at once.",
    ),
    key(
        "events.subscriber_buffer",
        Kind::Int,
        None,
        "Batches of events (up to 128 KiB each) queued per `/v1/events` reader; a reader that falls this far behind is disconnected and counted.",
    ),
];
