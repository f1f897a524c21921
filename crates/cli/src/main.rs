//! `sluice`: Sluice's command line.
//!
//! Exit status: 0 success, 1 a sync (or benchmark) failed, 2 bad usage or an
//! internal error. Errors print once, with a `sluice:` prefix and their causes.

/// mimalloc instead of glibc's malloc: the API's reads are mostly small
/// allocations (JSON values, strings), which glibc's arenas serve at a
/// third of a read's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_containers;
mod bench_pg_to_pg;
mod bench_postgres;
mod bench_s3;
mod chaos;
mod load;
mod progress;
mod remote;
mod sync;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Airbyte-compatible data movement, fast and small")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one sync from a source to a destination on this machine, no server needed
    Sync(sync::SyncArgs),
    /// Measure the orchestrator against a raw pipe (and PyAirbyte, when installed)
    Bench(bench::BenchArgs),
    /// Run a reference connector: sluice connector source-faker spec
    #[command(disable_help_flag = true)]
    Connector {
        /// source-faker, destination-jsonl or destination-dev-null
        name: String,
        /// The connector's own arguments (spec, check, discover, read, write ...)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the platform on this machine: Config API, scheduler, launcher and monitor
    Up(up::UpArgs),
    /// A bounded load on a running platform's API: requests at a fixed rate, or N syncs at once
    Load(load::LoadArgs),
    /// Syncs killed at random moments (source, destination, orchestrator or
    /// bookkeeper, the supervisor), rerun to success, and checked for loss and duplicates
    Chaos(chaos::ChaosArgs),
    /// Workspaces on the platform (`sluice up`): list, get, create, update, delete
    Workspaces {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::Verb,
    },
    /// Connector definitions a workspace may use
    Definitions {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::DefinitionVerb,
    },
    /// Sources: list, get, create, update, delete, discover, check
    Sources {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::SourceVerb,
    },
    /// Destinations: list, get, create, update, delete, check
    Destinations {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::SourceVerb,
    },
    /// Connections: list, get, create, update, delete, sync, reset, state
    Connections {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::ConnectionVerb,
    },
    /// Jobs: list, get, cancel, logs, wait
    Jobs {
        #[command(flatten)]
        target: remote::Target,
        #[command(subcommand)]
        verb: remote::JobVerb,
    },
    /// Create (or find) the AWS resources the platform needs: tables, queues, bus, schedule group
    Provision(up::ProvisionArgs),
    /// Run one attempt from a sync config file, as the task's orchestrator does
    #[command(disable_help_flag = true)]
    Orchestrate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Commands::Connector { name, args } => run_reference_connector(&name, &args),
        Commands::Orchestrate { args } => sluice_orchestrator::cli::main_with(&args, "sluice orchestrate", run_attempt),
        Commands::Sync(args) => report(sync::run(args)),
        Commands::Bench(args) => report(bench::run(args)),
        Commands::Up(args) => report(up::run(args)),
        Commands::Load(args) => report(load::run(args)),
        Commands::Chaos(args) => report(chaos::run(args)),
        Commands::Provision(args) => report(up::provision(args)),
        Commands::Workspaces { target, verb } => report(remote::common(&target, "/workspaces", &["workspaceId", "name", "dataResidency"], verb)),
        Commands::Definitions { target, verb } => report(remote::definitions(&target, verb)),
        Commands::Sources { target, verb } => report(remote::sources(&target, verb)),
        Commands::Destinations { target, verb } => report(remote::destinations(&target, verb)),
        Commands::Connections { target, verb } => report(remote::connections(&target, verb)),
        Commands::Jobs { target, verb } => report(remote::jobs(&target, verb)),
    };
    std::process::exit(code);
}

fn run_reference_connector(name: &str, args: &[String]) -> i32 {
    match name {
        "source-faker" => sluice_source_faker::main(args),
        "destination-jsonl" => sluice_destination_jsonl::main(args),
        "destination-dev-null" => sluice_destination_dev_null::main(args),
        "source-empty" => sluice_source_empty::main(args),
        "destination-postgres" => sluice_destination_postgres::main(args),
        "source-postgres" => sluice_source_postgres::main(args),
        "destination-s3" => sluice_destination_s3::main(args),
        other => {
            eprintln!("sluice: no reference connector `{other}`; there are {}", sluice_connectors::REFERENCE_CONNECTORS.join(", "));
            2
        }
    }
}

/// Prints an error chain once, and maps it to the exit status.
fn report(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            2
        }
    }
}

/// Runs one attempt with the platform container its config calls for: the
/// bookkeeper for socket mode, the orchestrator for legacy mode.
pub fn run_attempt(config: &sluice_orchestrator::SyncConfig, reporter: &mut dyn sluice_orchestrator::Reporter, cancel: &std::sync::atomic::AtomicBool) -> sluice_orchestrator::Outcome {
    match config.data_channel {
        Some(_) => sluice_bookkeeper::run(config, reporter, cancel),
        None => sluice_orchestrator::run(config, reporter, cancel),
    }
}
