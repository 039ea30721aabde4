//! `sonde`: the command line. Parsing and dispatch only; the work lives in the library.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sonde::{
    api::DEFAULT_LISTEN,
    client::{self, StatusFormat, StatusOptions},
    config::{self, Config, ConfigError, ConfigFile, Loaded, Overrides},
    export::OutputFormat,
    logging::{self, LogFormat},
    run::{RunOptions, run},
    units::parse_size,
};

#[derive(Parser)]
#[command(
    name = "sonde",
    version,
    about = "eBPF node agent: process and TCP lifecycles, attributed"
)]
struct Cli {
    /// Log level or tracing filter (error, warn, info, debug, trace, or e.g. "sonde=debug");
    /// key log.level, env SONDE_LOG_LEVEL. Default: info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format on stderr; key log.format, env SONDE_LOG_FORMAT. Default: text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture process and TCP events on this host and stream them to stdout.
    Run(Box<RunArgs>),
    /// The configuration: the effective values and where they come from, or the reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show a running agent's health and per-container / per-service table (GET /v1/status).
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The agent's API address (its api.listen / --api-listen).
    #[arg(long, env = "SONDE_API", default_value = DEFAULT_LISTEN)]
    api: SocketAddr,
    /// Refresh every second (in place on a terminal).
    #[arg(long)]
    watch: bool,
    /// A table for people, or the JSON document.
    #[arg(long, value_enum, default_value = "table")]
    output: StatusFormat,
    /// Give up on an agent that does not answer within this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of `sonde run` (file, environment and these flags)
    /// and, for every key, where its value came from.
    Show(Box<ShowArgs>),
    /// Print the reference of every key (the content of docs/configuration.md).
    Reference,
}

#[derive(Args)]
struct RunArgs {
    /// Output format: readable lines, or NDJSON (one object per line); key output.format.
    /// Default: text on a terminal, json otherwise.
    #[arg(long, value_enum)]
    output: Option<OutputFormat>,
    /// Show a live per-container / per-service table (refreshed every second) instead of the
    /// event stream.
    #[arg(long)]
    summary: bool,
    /// Stop after this long (e.g. 30s, 5m); default: run until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Write capture statistics (events, losses, probes) as JSON to this file when stopping.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Args)]
struct ShowArgs {
    /// How to print it.
    #[arg(long, value_enum, default_value = "yaml")]
    output: ShowFormat,
    /// The event format `sonde run --output` would be given (key output.format).
    #[arg(long, value_enum, value_name = "FORMAT")]
    event_output: Option<OutputFormat>,
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShowFormat {
    Yaml,
    Json,
}

/// The configuration file and the flags that override its keys (see docs/configuration.md).
#[derive(Args)]
struct ConfigArgs {
    /// Configuration file (YAML). Default: /etc/sonde/sonde.yaml if it exists.
    #[arg(long, env = config::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set any configuration key, e.g. --set metrics.listen=0.0.0.0:9464 (repeatable; lists
    /// comma-separated).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where the host's / is mounted, when running in a container (e.g. /host with the host's
    /// /proc and /sys/fs/cgroup under it); key node.host_root.
    #[arg(long)]
    host_root: Option<PathBuf>,
    /// Kernel ring buffer size (power of two, e.g. 8MiB); key capture.ring_buffer_size.
    #[arg(long, value_parser = parse_ring_size)]
    ring_buffer_size: Option<u32>,
    /// TCP connections tracked at once by the kernel (LRU); key capture.max_connections.
    #[arg(long)]
    max_connections: Option<u32>,
    /// Bytes waiting in the ring buffer before the kernel wakes the agent; key
    /// capture.wakeup_bytes.
    #[arg(long, value_parser = parse_size)]
    wakeup_bytes: Option<u64>,
    /// The agent drains the ring buffer at least this often; key capture.drain_interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_interval: Option<Duration>,
    /// Kernel BTF file (default /sys/kernel/btf/vmlinux); for kernels built without BTF, give
    /// the BTF of the exact kernel build, e.g. from BTFHub; key capture.btf_path.
    #[arg(long)]
    btf_path: Option<PathBuf>,
    /// Do not attach this program (repeatable): sonde_exec, sonde_fork, sonde_exit,
    /// sonde_tcp_state, sonde_accept; key capture.disabled_probes.
    #[arg(long = "disable-probe", value_name = "PROGRAM")]
    disabled_probes: Vec<String>,
    /// Write the event stream (NDJSON) to this file instead of stdout; key output.file.
    #[arg(long, value_name = "FILE")]
    output_file: Option<PathBuf>,
    /// Rotate the output file before it would pass this size; key output.rotate_size.
    #[arg(long, value_parser = parse_size)]
    output_rotate_size: Option<u64>,
    /// Rotated output files kept; key output.rotate_keep.
    #[arg(long)]
    output_rotate_keep: Option<u32>,
    /// This node's Kubernetes name; key node_name.
    #[arg(long)]
    node_name: Option<String>,
    /// Fetch pod metadata from the kubelet (true, false; default: when the host looks like a
    /// Kubernetes node); key kubelet.enabled.
    #[arg(long)]
    kubelet_enabled: Option<bool>,
    /// Base URL of the kubelet; key kubelet.url.
    #[arg(long)]
    kubelet_url: Option<String>,
    /// Bearer token file for the kubelet; key kubelet.token_file.
    #[arg(long, value_name = "FILE")]
    kubelet_token_file: Option<PathBuf>,
    /// CA bundle of the kubelet's serving certificate; key kubelet.ca_file.
    #[arg(long, value_name = "FILE")]
    kubelet_ca_file: Option<PathBuf>,
    /// Kubeconfig for the apiserver; key kubernetes.kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Metrics endpoint address, or `off`; key metrics.listen (`off`: metrics.enabled=false).
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_listen)]
    metrics_listen: Option<Listen>,
    /// Most metric label sets kept; key metrics.max_series.
    #[arg(long)]
    metrics_max_series: Option<usize>,
    /// Status and event stream API address, or `off`; key api.listen (`off`: api.enabled=false).
    #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_listen)]
    api_listen: Option<Listen>,
    /// Concurrent /v1/events readers (more get 503); key events.max_subscribers.
    #[arg(long)]
    api_max_subscribers: Option<usize>,
}

/// A listen address, or `off`.
#[derive(Clone, Copy, Debug)]
struct Listen(Option<SocketAddr>);

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    text.parse().map(|a| Listen(Some(a))).map_err(|_| {
        format!("{text:?} is not an address to listen on: give IP:PORT (e.g. 127.0.0.1:9464, [::1]:9464) or off")
    })
}

/// Sets the `listen` key from `flag`, or the `enabled` key to false for `off`.
fn listen_flag(
    o: &mut Overrides,
    (listen, enabled): (&'static str, &'static str),
    flag: &'static str,
    value: Listen,
) {
    match value.0 {
        Some(addr) => o.flag(listen, flag, addr.to_string()),
        None => o.flag(enabled, flag, false),
    }
}

impl ConfigArgs {
    /// The flags as the top configuration layer.
    fn overrides(&self, cli: &Cli, output: Option<OutputFormat>) -> Overrides {
        let mut o = Overrides::default();
        for arg in &self.set {
            o.set(arg.clone());
        }
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(v) = &cli.log_level {
            o.flag("log.level", "--log-level", v.clone());
        }
        if let Some(v) = cli.log_format {
            o.flag("log.format", "--log-format", value_name(v));
        }
        if let Some(v) = output {
            o.flag("output.format", "--output", value_name(v));
        }
        if let Some(v) = &self.output_file {
            o.flag("output.file", "--output-file", path(v));
        }
        if let Some(v) = self.ring_buffer_size {
            o.flag("capture.ring_buffer_size", "--ring-buffer-size", v);
        }
        if let Some(v) = self.max_connections {
            o.flag("capture.max_connections", "--max-connections", v);
        }
        if let Some(v) = self.wakeup_bytes {
            o.flag("capture.wakeup_bytes", "--wakeup-bytes", v);
        }
        if let Some(v) = self.drain_interval {
            let text = humantime::format_duration(v).to_string();
            o.flag("capture.drain_interval", "--drain-interval", text);
        }
        if let Some(v) = &self.btf_path {
            o.flag("capture.btf_path", "--btf-path", path(v));
        }
        if !self.disabled_probes.is_empty() {
            o.flag(
                "capture.disabled_probes",
                "--disable-probe",
                self.disabled_probes.clone(),
            );
        }
        if let Some(v) = &self.host_root {
            o.flag("node.host_root", "--host-root", path(v));
        }
        if let Some(v) = &self.node_name {
            o.flag("node_name", "--node-name", v.clone());
        }
        if let Some(v) = self.kubelet_enabled {
            o.flag("kubelet.enabled", "--kubelet-enabled", v);
        }
        if let Some(v) = &self.kubelet_url {
            o.flag("kubelet.url", "--kubelet-url", v.clone());
        }
        if let Some(v) = &self.kubelet_token_file {
            o.flag("kubelet.token_file", "--kubelet-token-file", path(v));
        }
        if let Some(v) = &self.kubelet_ca_file {
            o.flag("kubelet.ca_file", "--kubelet-ca-file", path(v));
        }
        if let Some(v) = self.output_rotate_size {
            o.flag("output.rotate_size", "--output-rotate-size", v);
        }
        if let Some(v) = self.output_rotate_keep {
            o.flag("output.rotate_keep", "--output-rotate-keep", v);
        }
        if let Some(v) = self.metrics_max_series {
            o.flag("metrics.max_series", "--metrics-max-series", v);
        }
        if let Some(v) = self.api_max_subscribers {
            o.flag("events.max_subscribers", "--api-max-subscribers", v);
        }
        if let Some(v) = &self.kubeconfig {
            o.flag("kubernetes.kubeconfig", "--kubeconfig", path(v));
        }
        if let Some(v) = self.metrics_listen {
            listen_flag(
                &mut o,
                ("metrics.listen", "metrics.enabled"),
                "--metrics-listen",
                v,
            );
        }
        if let Some(v) = self.api_listen {
            listen_flag(&mut o, ("api.listen", "api.enabled"), "--api-listen", v);
        }
        o
    }

    fn load(&self, cli: &Cli, output: Option<OutputFormat>) -> Result<Loaded, ConfigError> {
        Config::load(
            &ConfigFile::new(self.config.clone()),
            &self.overrides(cli, output),
        )
    }
}

/// The word clap uses for an enum value (`text`, `json`).
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

fn parse_ring_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    let n = u32::try_from(n).map_err(|_| format!("{text} is too large (max 2GiB)"))?;
    if !n.is_power_of_two() || n < 4096 {
        return Err(format!(
            "{text} is not a power of two of at least 4KiB (e.g. 4MiB, 8MiB, 16MiB)"
        ));
    }
    Ok(n)
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("sonde: {err}");
    ExitCode::from(err.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => match args.config.load(&cli, args.output) {
            Ok(loaded) => run_command(args, loaded),
            Err(err) => config_error(&err),
        },
        Command::Config(ConfigCommand::Show(args)) => {
            match args.config.load(&cli, args.event_output) {
                Ok(loaded) => {
                    let text = match args.output {
                        ShowFormat::Yaml => config::show::to_yaml(&loaded),
                        ShowFormat::Json => format!("{:#}\n", config::show::to_json(&loaded)),
                    };
                    print(&text)
                }
                Err(err) => config_error(&err),
            }
        }
        Command::Config(ConfigCommand::Reference) => print(&config::show::reference()),
        Command::Status(args) => status_command(args),
    }
}

fn status_command(args: &StatusArgs) -> ExitCode {
    let opts = StatusOptions {
        api: args.api,
        watch: args.watch,
        format: args.output,
        clear: args.watch && std::io::stdout().is_terminal(),
        timeout: args.timeout,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("sonde: cannot start the async runtime: {err}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(client::run(opts, &mut std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sonde: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: cannot write to stdout: {e}");
            ExitCode::from(74)
        }
    }
}

fn run_command(args: &RunArgs, loaded: Loaded) -> ExitCode {
    let config = &loaded.config;
    if let Err(err) = logging::init(&config.log.level, config.log.format) {
        eprintln!("sonde: {err}");
        return ExitCode::from(64);
    }
    tracing::info!(
        file = loaded.file.as_ref().map(|p| p.display().to_string()),
        "configuration loaded"
    );
    for var in config::unknown_env_vars(std::env::vars_os().map(|(k, _)| k)) {
        tracing::warn!(
            variable = var,
            "{var} is not a configuration variable and is ignored (see docs/configuration.md)"
        );
    }
    if config.output.file.is_some() && args.output == Some(OutputFormat::Text) {
        eprintln!(
            "sonde: error: --output-file writes NDJSON only. Fix: drop `--output text`, or drop \
             --output-file to read text on stdout"
        );
        return ExitCode::from(2);
    }
    let to_terminal = config.output.file.is_none() && std::io::stdout().is_terminal();
    let dest: Box<dyn Write + Send> = Box::new(std::io::stdout());
    let mut opts = RunOptions::from_config(config, to_terminal);
    opts.summary = args.summary.then_some(to_terminal);
    opts.duration = args.duration;
    opts.stats_file = args.stats_file.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sonde")
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("sonde: cannot start the async runtime: {err}");
            return ExitCode::from(70);
        }
    };
    match runtime.block_on(run(opts, dest)) {
        Ok(stats) => {
            tracing::info!(
                events = stats.events.values().sum::<u64>(),
                lost = stats.lost,
                kernel = ?stats.kernel_counters,
                "capture stopped"
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sonde: error: {err}");
            ExitCode::from(err.exit_code().clamp(1, 255) as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every dedicated flag the reference documents exists on `sonde run` and `config show`.
    #[test]
    fn documented_flags_exist() {
        let cmd = Cli::command();
        for sub in [
            cmd.find_subcommand("run").expect("run"),
            cmd.find_subcommand("config")
                .and_then(|c| c.find_subcommand("show"))
                .expect("config show"),
        ] {
            let longs: Vec<String> = sub
                .get_arguments()
                .chain(cmd.get_arguments())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect();
            for key in config::schema::KEYS {
                let Some(flag) = key.flag else { continue };
                if sub.get_name() == "show" && flag == "--output" {
                    continue; // `config show --event-output`: `--output` is the show format
                }
                assert!(
                    longs.iter().any(|l| l == flag),
                    "{} documents flag {flag}, which `sonde {}` lacks",
                    key.path,
                    sub.get_name()
                );
            }
        }
    }

    /// Each dedicated flag sets the key the reference says it sets.
    #[test]
    fn flags_set_their_documented_keys() {
        let cli = Cli::try_parse_from([
            "sonde",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "run",
            "--output",
            "json",
            "--output-file",
            "/tmp/events",
            "--ring-buffer-size",
            "8MiB",
            "--max-connections",
            "7",
            "--wakeup-bytes",
            "1KiB",
            "--drain-interval",
            "1s",
            "--btf-path",
            "/btf",
            "--disable-probe",
            "sonde_accept",
            "--host-root",
            "/host",
            "--node-name",
            "n1",
            "--kubelet-url",
            "https://k:10250",
            "--kubeconfig",
            "/kc",
            "--metrics-listen",
            "0.0.0.0:1",
            "--api-listen",
            "0.0.0.0:2",
            "--output-rotate-size",
            "1MiB",
            "--output-rotate-keep",
            "2",
            "--kubelet-enabled",
            "true",
            "--kubelet-token-file",
            "/t",
            "--kubelet-ca-file",
            "/ca",
            "--metrics-max-series",
            "9",
            "--api-max-subscribers",
            "3",
        ])
        .expect("flags parse");
        let Command::Run(args) = &cli.command else {
            panic!("not run")
        };
        let overrides = args.config.overrides(&cli, args.output);
        let loaded = config::load::merge(None, &|_| None, &overrides).expect("flags load");
        for key in config::schema::KEYS {
            if let Some(flag) = key.flag {
                assert_eq!(
                    loaded.source(key.path),
                    Some(&config::Source::Flag(flag.into())),
                    "{flag} should set {}",
                    key.path
                );
            }
        }
        let c = &loaded.config;
        assert_eq!(c.capture.ring_buffer_size, 8 << 20);
        assert_eq!(c.capture.drain_interval, Duration::from_secs(1));
        assert_eq!(c.capture.disabled_probes, ["sonde_accept"]);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:1");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
