//! Build orchestration, the only place for it:
//! `cargo xtask <setup|build|run|test|bench|image|dist|lint>`.
//! `run`, `test` and `bench` call `setup` first, so a fresh clone needs nothing else.

mod bench;
mod bench_bootstrap;
mod bench_metadata;
mod bench_micro;
mod cmd;
mod package;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Sonde's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install and check everything the project needs (idempotent): nightly rust-src,
    /// bpf-linker, Debian packages used by tests, tracefs and bpffs mounts.
    Setup,
    /// Set up and build the agent (debug, or --release).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build (release) and run the agent on this host; extra arguments go to `sonde run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build and run every test (unit and integration, on the real kernel). Extra
    /// arguments go to `cargo test`, e.g. `cargo xtask test -- --test capture_tcp`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build (release) and benchmark Sonde against no tracer and the libbpf-tools peers.
    Bench {
        /// Measurement rounds per configuration.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Only this part: tcp, exec, image (the TCP loop under the host build and the image's
        /// static musl build, side by side), bootstrap (start-up scan), metadata (memory with
        /// 500 pods), leader (the leader's cost for 100 Kubernetes events/s beside a stand-by)
        /// or micro (in-process benches: attribution,
        /// Kubernetes join, /metrics scrape, event stream
        /// throughput).
        #[arg(long)]
        only: Option<String>,
    },
    /// Set up and build the container image: the static binary alone in an OCI archive
    /// (`target/package/sonde-<version>.oci.tar`, image `localhost/sonde:<version>`).
    Image,
    /// Set up and build the host install's tarball (static binary, systemd unit, sonde.yaml,
    /// README): `target/package/sonde-<version>-x86_64-linux.tar.gz`.
    Dist,
    /// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::run()?;
            cmd::build_agent(release)
        }
        Command::Run { args } => {
            setup::run()?;
            cmd::build_agent(true)?;
            cmd::run_agent(&args)
        }
        Command::Test { args } => {
            setup::run()?;
            cmd::test(&args)
        }
        Command::Bench {
            rounds,
            seconds,
            only,
        } => {
            setup::run()?;
            cmd::build_agent(true)?;
            bench::run(rounds, seconds, only.as_deref())
        }
        Command::Image => {
            setup::run()?;
            package::image().map(drop)
        }
        Command::Dist => {
            setup::run()?;
            package::dist().map(drop)
        }
        Command::Lint => cmd::lint(),
    }
}
