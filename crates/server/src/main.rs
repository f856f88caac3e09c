//! `portcullis`: serve the login API, check its settings, apply database migrations, import
//! accounts, build a breached-password filter, or measure Argon2 throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portcullis_accounts::accounts::Accounts;
use portcullis_accounts::passwords::{PasswordHasher, breached};
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
    /// Load and validate the settings, then exit: 0 when the service would start with them.
    CheckConfig,
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Password screening.
    Passwords {
        #[command(subcommand)]
        command: PasswordsCommand,
    },
}

#[derive(Subcommand)]
enum PasswordsCommand {
    /// Build a breached-password filter (`passwords.breached_filter`) from a Have I Been Pwned
    /// download: `SHA1HEX:COUNT` lines.
    BuildFilter {
        /// The HIBP file (SHA-1, uppercase hex, `HASH:COUNT` per line).
        file: PathBuf,
        /// Where to write the filter.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure raw Argon2id verifications per second with the configured parameters on as many
    /// threads as the hashing pool has (capacity planning; prints one JSON line).
    Throughput {
        /// How long to measure, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create accounts from a file of `username,password` lines, hashing in parallel.
    Import {
        /// The file (a first line `username,password` is a header).
        file: PathBuf,
    },
    /// Give existing accounts their TOTP secrets from a file of `username,secret` lines
    /// (base32), as confirmed second factors.
    ImportTotp {
        /// The file (a first line `username,totp_secret` is a header).
        file: PathBuf,
    },
    /// Give existing accounts passkeys registered for this relying party elsewhere, from a file
    /// of JSON lines `{"username", "name", "credential", "passkey_only"}`.
    ImportPasskeys {
        /// The file.
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
    let _log_writer = telemetry::init(settings.log_format, &settings.log_level);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::CheckConfig => println!("settings are valid"),
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
                "imported {}, skipped {} existing, rejected {} invalid lines and {} weak passwords",
                report.imported, report.existing, report.invalid, report.weak
            );
        }
        Command::Users {
            command: UsersCommand::ImportTotp { file },
        } => {
            let report = import::import_totp(&settings, &file).await?;
            println!(
                "imported {} second factors, kept {} existing, {} unknown accounts, rejected {} \
                 invalid lines",
                report.imported, report.existing, report.unknown, report.invalid
            );
        }
        Command::Users {
            command: UsersCommand::ImportPasskeys { file },
        } => {
            let report = import::import_passkeys(&settings, &file).await?;
            println!(
                "imported {} passkeys, kept {} registered already, {} unknown accounts, rejected \
                 {} invalid lines",
                report.imported, report.existing, report.unknown, report.invalid
            );
        }
        Command::Passwords {
            command: PasswordsCommand::BuildFilter { file, out },
        } => {
            let report = breached::build_filter(&file, &out)?;
            println!(
                "wrote {}: {} hashes in {} bytes ({:.1} bits per hash)",
                out.display(),
                report.entries,
                report.bytes,
                report.bytes as f64 * 8.0 / report.entries as f64
            );
        }
        Command::Passwords {
            command: PasswordsCommand::Throughput { seconds },
        } => {
            let hasher = PasswordHasher::new(&settings.argon2)?;
            let rate = hasher.raw_verify_rate(Duration::from_secs(seconds))?;
            println!(
                "{}",
                serde_json::json!({
                    "path": "raw-argon2",
                    "workers": hasher.workers(),
                    "seconds": seconds,
                    "verifications_per_sec": rate,
                })
            );
        }
    }
    Ok(())
}
