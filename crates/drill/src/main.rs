//! `portcullis-drill`: run an attack scenario and report what the defences stopped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};

/// The Portcullis attack drill.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (drill/scenarios/*.toml) and write its report.
    Run(RunArgs),
    /// Print a scenario's accounts as `username,password` lines (what `portcullis users
    /// import` takes), for an application without Portcullis to load (`run --plain-app`).
    Accounts {
        /// The scenario file.
        scenario: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Also run it with the defences off (`policy.enabled = false`) and report the reduction.
    #[arg(long)]
    policy_off: bool,
    /// A running deployment to use instead of a local stack brought up for the run; it must
    /// trust --source as a proxy, and seeding uses this shell's PORTCULLIS__* settings.
    #[arg(long)]
    url: Option<String>,
    /// With --url and --policy-off: the same deployment with its policy off.
    #[arg(long, requires = "url")]
    policy_off_url: Option<String>,
    /// --url is an application without Portcullis (examples/fastapi/seed_app.py) that loaded
    /// the scenario's accounts itself (`accounts`) and sets no device cookies; its run is
    /// reported as policy off.
    #[arg(long, requires = "url", conflicts_with_all = ["policy_off", "policy_off_url"])]
    plain_app: bool,
    /// The address to send from (default 127.0.0.3 for the local stack).
    #[arg(long)]
    source: Option<IpAddr>,
    /// Seed accounts with the server's Argon2 parameters instead of cheap ones.
    #[arg(long)]
    full_cost_seeding: bool,
    /// The `portcullis` binary (default: next to this one).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The stack script (default: the repository's scripts/local-stack.sh).
    #[arg(long)]
    stack_script: Option<PathBuf>,
    /// Where the JSON report and SVG charts go.
    #[arg(long, default_value = "target/drill")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Accounts { scenario } => accounts(&scenario),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portcullis-drill: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn accounts(scenario: &Path) -> anyhow::Result<()> {
    let plan = portcullis_drill::plan::Plan::new(&Scenario::load(scenario)?);
    for account in &plan.accounts {
        println!("{},{}", account.username, account.password);
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let bin = match args.bin {
        Some(bin) => bin,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("portcullis"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it (cargo build --release -p portcullis-server) or pass --bin",
        bin.display()
    );
    let target = match args.url {
        Some(url) if args.plain_app => Target::PlainApp { url },
        Some(url) => Target::Running {
            url,
            policy_off_url: args.policy_off_url,
            seed_env: Vec::new(),
        },
        None => Target::LocalStack {
            script: args.stack_script.unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/local-stack.sh")
            }),
        },
    };
    let options = Options {
        scenario,
        target,
        bin,
        policy_off: args.policy_off,
        cheap_seeding: !args.full_cost_seeding,
        source: args.source,
        out_dir: args.out,
    };
    let report = portcullis_drill::run(&options).await?;
    print!("{}", report.table());
    println!(
        "report: {}/{}.json and {}-policy-*.svg",
        options.out_dir.display(),
        report.scenario,
        report.scenario
    );
    Ok(())
}
