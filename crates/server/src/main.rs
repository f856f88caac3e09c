//! `portcullis`: serve the login API, or apply database migrations.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_server::accounts::Accounts;
use portcullis_server::{Application, Settings, telemetry};

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
    }
    Ok(())
}
