//! `portcullis`: serve the login API, apply database migrations, or import accounts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_server::accounts::Accounts;
use portcullis_server::{Application, Settings, import, telemetry};

/// The Portcullis login service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML file with the same structure as the `PORTCULLIS__...` settings.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create accounts from a file of `username,password` lines, hashing in parallel.
    Import {
        /// The file (a first line `username,password` is a header).
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line naming the setting or the failing step, with its causes; no backtrace.
            eprintln!("portcullis: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(settings.log_format, &settings.log_level);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => {
            Accounts::connect(&settings.database)
                .await?
                .migrate()
                .await?;
            tracing::info!("migrations applied");
        }
        Command::Users {
            command: UsersCommand::Import { file },
        } => {
            let report = import::import(&settings, &file).await?;
            println!(
                "imported {}, skipped {} existing, rejected {} invalid lines",
                report.imported, report.existing, report.invalid
            );
        }
    }
    Ok(())
}
