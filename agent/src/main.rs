//! `sonde`: the command line. Parsing and dispatch only; the work lives in the library.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use sonde::{
    api::{ApiOptions, DEFAULT_LISTEN},
    capture::CaptureOptions,
    client::{self, StatusFormat, StatusOptions},
    export::fanout::DEFAULT_MAX_SUBSCRIBERS,
    export::{OutputFormat, rotate::RotateOptions},
    logging::{self, LogFormat},
    node::{NodeOptions, hostfs::HostRoot},
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
    /// Log level or tracing filter (error, warn, info, debug, trace, or e.g. "sonde=debug").
    #[arg(long, global = true, env = "SONDE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "SONDE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture process and TCP events on this host and stream them to stdout.
    Run(RunArgs),
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

#[derive(Args)]
struct RunArgs {
    /// Output format: readable lines, or NDJSON (one object per line). Default: text on a
    /// terminal, json otherwise.
    #[arg(long, env = "SONDE_OUTPUT", value_enum)]
    output: Option<OutputFormat>,
    /// Show a live per-container / per-service table (refreshed every second) instead of the
    /// event stream.
    #[arg(long)]
    summary: bool,
    /// Where the host's / is mounted, when running in a container (e.g. /host with the host's
    /// /proc and /sys/fs/cgroup under it).
    #[arg(long, env = "SONDE_HOST_ROOT", default_value = "/")]
    host_root: PathBuf,
    /// Stop after this long (e.g. 30s, 5m); default: run until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Kernel ring buffer size (power of two, e.g. 8MiB).
    #[arg(long, default_value = "2MiB", value_parser = parse_ring_size)]
    ring_buffer_size: u32,
    /// TCP connections tracked at once by the kernel (LRU).
    #[arg(long, default_value_t = 65_536)]
    max_connections: u32,
    /// Bytes waiting in the ring buffer before the kernel wakes the agent.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    wakeup_bytes: u64,
    /// The agent drains the ring buffer at least this often.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    drain_interval: Duration,
    /// Kernel BTF file (default /sys/kernel/btf/vmlinux); for kernels built without BTF, give
    /// the BTF of the exact kernel build, e.g. from BTFHub.
    #[arg(long, env = "SONDE_BTF_PATH")]
    btf_path: Option<PathBuf>,
    /// Do not attach this program (repeatable): sonde_exec, sonde_fork, sonde_exit,
    /// sonde_tcp_state, sonde_accept.
    #[arg(long = "disable-probe", value_name = "PROGRAM")]
    disabled_probes: Vec<String>,
    /// Write capture statistics (events, losses, probes) as JSON to this file when stopping.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Write the NDJSON event stream to this file instead of stdout, rotated by size.
    #[arg(long, value_name = "PATH", conflicts_with = "summary")]
    output_file: Option<PathBuf>,
    /// Rotate the output file before it would exceed this size.
    #[arg(long, default_value = "100MiB", value_parser = parse_size, requires = "output_file")]
    output_rotate_size: u64,
    /// Rotated output files kept (PATH.1 newest … PATH.N oldest).
    #[arg(long, default_value_t = 5, requires = "output_file")]
    output_rotate_keep: u32,
    /// The HTTP API (GET /v1/events, GET /v1/status): an address to listen on, or `off`.
    /// (Temporary flag: becomes `api.listen` in the configuration file.)
    #[arg(long, value_name = "ADDR|off", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    api_listen: Listen,
    /// Concurrent /v1/events readers; more get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    api_max_subscribers: usize,
}

#[derive(Clone, Copy, Debug)]
struct Listen(Option<SocketAddr>);

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen(None));
    }
    text.parse().map(|a| Listen(Some(a))).map_err(|_| {
        format!("{text:?} is not an address to listen on: give IP:PORT (e.g. 127.0.0.1:9465, [::1]:9465) or off")
    })
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("sonde: {err}");
        return ExitCode::from(64);
    }
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Status(args) => status_command(args),
    }
}

fn status_command(args: StatusArgs) -> ExitCode {
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

fn run_command(args: RunArgs) -> ExitCode {
    if args.output_file.is_some() && args.output == Some(OutputFormat::Text) {
        eprintln!(
            "sonde: error: --output-file writes NDJSON only. Fix: drop `--output text`, or drop \
             --output-file to read text on stdout"
        );
        return ExitCode::from(2);
    }
    let output = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputFormat::Text
    } else {
        OutputFormat::Json
    });
    let opts = RunOptions {
        capture: CaptureOptions {
            ring_buffer_bytes: args.ring_buffer_size,
            max_connections: args.max_connections,
            wakeup_bytes: args.wakeup_bytes,
            drain_interval: args.drain_interval,
            btf_path: args.btf_path,
            disabled_probes: args.disabled_probes,
        },
        node: NodeOptions {
            host: HostRoot::new(args.host_root),
            ..NodeOptions::default()
        },
        output,
        summary: args.summary.then(|| std::io::stdout().is_terminal()),
        duration: args.duration,
        stats_file: args.stats_file,
        output_file: args.output_file.map(|path| RotateOptions {
            path,
            max_bytes: args.output_rotate_size,
            keep: args.output_rotate_keep,
        }),
        api: args.api_listen.0.map(|listen| ApiOptions {
            listen,
            max_subscribers: args.api_max_subscribers,
            ..ApiOptions::default()
        }),
    };
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
    match runtime.block_on(run(opts, Box::new(std::io::stdout()))) {
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
