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
    client::{self, StatusFormat, StatusOptions},
    config::{
        self, Config, ConfigError, ConfigFile, Loaded, Overrides,
        flags::{GlobalKeys, KeyFlags, RunKeys, ShowKeys},
    },
    logging,
    run::{RunOptions, run},
};

#[derive(Parser)]
#[command(
    name = "sonde",
    version,
    about = "eBPF node agent: process and TCP lifecycles, attributed"
)]
struct Cli {
    /// `--log-level`, `--log-format`: from the schema, global.
    #[command(flatten)]
    log: KeyFlags<GlobalKeys>,
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
    /// Check this node for everything `sonde run` needs (kernel, privileges, cgroups, kubelet,
    /// ports): PASS / WARN / FAIL with the fix; exit code 1 on any FAIL.
    Diagnose(DiagnoseArgs),
}

#[derive(Args)]
struct DiagnoseArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
    /// The configuration `sonde run` would read (file and `--set`).
    #[command(flatten)]
    config: ConfigArgs,
    /// The flags of `sonde run` (its `--output` is `--event-output` here).
    #[command(flatten)]
    keys: KeyFlags<ShowKeys>,
}

#[derive(Args)]
struct StatusArgs {
    /// The agent's API address. Default: the api.listen of the configuration `sonde run` reads
    /// (the file, SONDE_API_LISTEN, --set), else 127.0.0.1:9465.
    #[arg(long, env = "SONDE_API")]
    api: Option<SocketAddr>,
    /// The API's bearer token file. Default: the api.token_file of that configuration.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The PEM CA that signed the agent's HTTPS certificate; turns HTTPS on. Default, when the
    /// configuration sets api.tls_cert_file: that file (enough for a self-signed certificate,
    /// or a chain file that holds its CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The name the agent's certificate must carry. Default: the address's IP.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// The configuration file and `--set` overrides, read for api.listen, api.token_file and
    /// api.tls_cert_file as `sonde run` reads them.
    #[command(flatten)]
    config: ConfigArgs,
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
    /// One flag per configuration key that has one (docs/configuration.md).
    #[command(flatten)]
    keys: KeyFlags<RunKeys>,
}

#[derive(Args)]
struct ShowArgs {
    /// How to print it.
    #[arg(long, value_enum, default_value = "yaml")]
    output: ShowFormat,
    #[command(flatten)]
    config: ConfigArgs,
    /// The flags of `sonde run`; `--event-output` is its `--output`.
    #[command(flatten)]
    keys: KeyFlags<ShowKeys>,
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
}

impl ConfigArgs {
    /// `--set` first, then the dedicated flags (global and the subcommand's), as the top
    /// configuration layer.
    fn load<S>(&self, cli: &Cli, keys: &KeyFlags<S>) -> Result<Loaded, ConfigError> {
        let mut o = self.overrides();
        cli.log.add_to(&mut o);
        keys.add_to(&mut o);
        Config::load(&ConfigFile::new(self.config.clone()), &o)
    }

    /// The file and `--set` alone (commands without the dedicated flags of `sonde run`).
    fn load_file_and_set(&self) -> Result<Loaded, ConfigError> {
        Config::load(&ConfigFile::new(self.config.clone()), &self.overrides())
    }

    fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        for arg in &self.set {
            o.set(arg.clone());
        }
        o
    }
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("sonde: {err}");
    ExitCode::from(err.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => match args.config.load(&cli, &args.keys) {
            Ok(loaded) => run_command(args, loaded),
            Err(err) => config_error(&err),
        },
        Command::Config(ConfigCommand::Show(args)) => match args.config.load(&cli, &args.keys) {
            Ok(loaded) => {
                let text = match args.output {
                    ShowFormat::Yaml => config::show::to_yaml(&loaded),
                    ShowFormat::Json => format!("{:#}\n", config::show::to_json(&loaded)),
                };
                print(&text)
            }
            Err(err) => config_error(&err),
        },
        Command::Config(ConfigCommand::Reference) => print(&config::show::reference()),
        Command::Status(args) => status_command(args),
        Command::Diagnose(args) => match args.config.load(&cli, &args.keys) {
            Ok(loaded) => diagnose_command(args, &loaded),
            Err(err) => config_error(&err),
        },
    }
}

/// The single-threaded runtime of the client commands (`status`, `diagnose`).
fn client_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("sonde: cannot start the async runtime: {err}");
            ExitCode::from(70)
        })
}

fn diagnose_command(args: &DiagnoseArgs, loaded: &Loaded) -> ExitCode {
    let runtime = match client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = runtime.block_on(sonde::diagnose::run(&loaded.config));
    let text = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(err) => {
                eprintln!("sonde: cannot encode the report: {err}");
                return ExitCode::from(70);
            }
        }
    } else {
        report.text()
    };
    let printed = print(&text);
    if report.failed() {
        ExitCode::from(1)
    } else {
        printed
    }
}

fn status_command(args: &StatusArgs) -> ExitCode {
    let loaded = match args.config.load_file_and_set() {
        Ok(loaded) => loaded,
        Err(err) => return config_error(&err),
    };
    let api = match client::api_address(args.api, &loaded) {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("sonde: error: {err}");
            return ExitCode::from(78);
        }
    };
    let token_file = args
        .token_file
        .clone()
        .or_else(|| loaded.config.api.token_file.clone());
    let token = match token_file.map(|p| sonde::api::auth::read_token(&p)) {
        Some(Ok(token)) => Some(token),
        Some(Err(err)) => {
            eprintln!("sonde: error: {err}");
            return ExitCode::from(78);
        }
        None => None,
    };
    let tls = args
        .ca_file
        .clone()
        .or_else(|| loaded.config.api.tls_cert_file.clone())
        .map(|ca_file| client::ClientTls {
            ca_file,
            server_name: args.tls_server_name.clone(),
        });
    let opts = StatusOptions {
        api,
        token,
        tls,
        watch: args.watch,
        format: args.output,
        clear: args.watch && std::io::stdout().is_terminal(),
        timeout: args.timeout,
    };
    let runtime = match client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
    let text_flag = loaded.source("output.format")
        == Some(&config::Source::Flag("--output".into()))
        && config.output.format == sonde::export::output::OutputFormatSetting::Text;
    if config.output.file.is_some() && text_flag {
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
                let flag = match (sub.get_name(), flag) {
                    // `config show --event-output`: `--output` is the show format.
                    ("show", "--output") => "--event-output",
                    _ => flag,
                };
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
            "127.0.0.2:2",
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
        let mut overrides = Overrides::default();
        cli.log.add_to(&mut overrides);
        args.keys.add_to(&mut overrides);
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
        assert_eq!(c.log.format, sonde::logging::LogFormat::Json);
        assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:1");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
