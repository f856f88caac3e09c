//! The Portcullis attack drill: plays a credential-stuffing scenario against a deployment and
//! measures what the defences stop (attempts refused before hashing, accounts compromised) and
//! what they cost (legitimate users refused, latency), optionally side by side with the same
//! traffic against a deployment whose policy is off.
//!
//! [`scenario`] reads the TOML file, [`plan`] turns it into concrete requests, [`deployment`]
//! brings up (or names) the target and seeds its accounts, [`traffic`] sends the requests
//! (solving challenges with [`solver`]), [`report`] and [`chart`] say what happened.

pub mod chart;
pub mod deployment;
pub mod leak;
pub mod passkeys;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod solver;
pub mod totp;
pub mod traffic;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::deployment::{CHEAP_ARGON2, DRILL_SOURCE, Deployment, StackOptions};
use crate::passkeys::Keyring;
use crate::plan::Plan;
use crate::report::{Comparison, DrillReport, RunReport, policy_label};
use crate::scenario::Scenario;

const MISSING_POLICY_OFF_URL: &str = "--policy-off with --url needs --policy-off-url";

/// Where the drill sends its traffic.
#[derive(Clone, Debug)]
pub enum Target {
    /// A local stack the drill brings up for each run (with `scripts/local-stack.sh`).
    LocalStack {
        /// The script.
        script: PathBuf,
    },
    /// Deployments already running: `url` with its policy on and, for a comparison,
    /// `policy_off_url` with `policy.enabled = false`.
    Running {
        /// The deployment under test.
        url: String,
        /// The same deployment with the defences off.
        policy_off_url: Option<String>,
        /// `PORTCULLIS__*` settings for seeding (the deployment's database), on top of this
        /// process's environment.
        seed_env: Vec<(String, String)>,
    },
    /// An application without Portcullis at `url` (examples/fastapi/seed_app.py): it holds the
    /// scenario's accounts already (`portcullis-drill accounts`), answers `POST /v1/login` with
    /// 200 or 401, and sets no device cookies. It has no defences, so its run is reported as
    /// policy off.
    PlainApp {
        /// Its base URL.
        url: String,
    },
}

/// How to run a drill.
#[derive(Clone, Debug)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// Where to send it.
    pub target: Target,
    /// The `portcullis` binary (for the stack and for seeding).
    pub bin: PathBuf,
    /// Also run the scenario with the defences off and compare.
    pub policy_off: bool,
    /// Seed accounts with cheap Argon2 parameters instead of the server's.
    pub cheap_seeding: bool,
    /// The address to send from (the deployment must trust it as a proxy); the local stack
    /// trusts [`DRILL_SOURCE`].
    pub source: Option<IpAddr>,
    /// Where the JSON report and the SVG charts go.
    pub out_dir: PathBuf,
}

/// Runs the drill, writes `<name>.json` and `<name>-policy-{on,off}.svg` into the output
/// directory, and returns the report.
pub async fn run(options: &Options) -> anyhow::Result<DrillReport> {
    let scenario = &options.scenario;
    if let Target::Running {
        policy_off_url: None,
        ..
    } = &options.target
    {
        anyhow::ensure!(!options.policy_off, MISSING_POLICY_OFF_URL);
    }
    if let Target::PlainApp { .. } = &options.target {
        anyhow::ensure!(
            !options.policy_off,
            "a plain application has no policy to turn off: its run is the policy-off one"
        );
        anyhow::ensure!(
            scenario.accounts.mfa_share == 0.0 && scenario.accounts.passkey_share == 0.0,
            "scenario {} gives accounts second factors or passkeys, which a plain application \
             does not have",
            scenario.name
        );
    }
    if let Target::Running { .. } | Target::PlainApp { .. } = &options.target {
        anyhow::ensure!(
            !scenario.attacker.known_leak,
            "scenario {} has attacker.known_leak: the drill builds the leak's filter for its own \
             stacks; a running deployment would need it in passwords.breached_filter (run it \
             against a local stack)",
            scenario.name
        );
        anyhow::ensure!(
            scenario.settings.is_empty(),
            "scenario {} sets [settings] for the drill's own stacks; a running deployment cannot \
             take them (run it against a local stack, or set them on the deployment and drop them \
             from the scenario)",
            scenario.name
        );
    }
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("creating {}", options.out_dir.display()))?;
    let plan = Arc::new(Plan::new(scenario));
    let mut settings = scenario.settings_env();
    if scenario.attacker.known_leak {
        let filter = leak::build_filter(&options.bin, &plan, &options.out_dir, &scenario.name)?;
        settings.push((
            deployment::BREACHED_FILTER.to_owned(),
            filter.display().to_string(),
        ));
    }
    let plain = matches!(options.target, Target::PlainApp { .. });
    let policies: &[bool] = if plain {
        &[false]
    } else if options.policy_off {
        &[true, false]
    } else {
        &[true]
    };
    let mut runs = Vec::new();
    let mut seeding_time = Duration::ZERO;
    for &policy in policies {
        let (deployment, source) = match &options.target {
            Target::LocalStack { script } => {
                let stack = StackOptions {
                    script: script.clone(),
                    bin: options.bin.clone(),
                    policy_enabled: policy,
                    settings: settings.clone(),
                };
                (
                    Deployment::local(&stack)?,
                    options.source.or(Some(DRILL_SOURCE)),
                )
            }
            Target::Running {
                url,
                policy_off_url,
                seed_env,
            } => {
                let url = if policy {
                    url
                } else {
                    policy_off_url.as_ref().context(MISSING_POLICY_OFF_URL)?
                };
                (Deployment::external(url, seed_env), options.source)
            }
            Target::PlainApp { url } => (Deployment::external(url, &[]), options.source),
        };
        let (keyring, passkeys) = Keyring::enrol(&plan.accounts, &deployment.passkey_origin()?)?;
        if !plain {
            seeding_time += deployment.seed(
                &options.bin,
                &plan.accounts,
                &passkeys,
                &options.out_dir,
                &scenario.name,
                options.cheap_seeding,
            )?;
        }
        let client = traffic::Client::new(deployment.url(), source, scenario.attacker.concurrency)?;
        let progress = ProgressBar::new(plan.attacks.len() as u64).with_message(format!(
            "{} (policy {})",
            scenario.name,
            policy_label(policy)
        ));
        progress.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let traffic = traffic::run(
            &client,
            scenario,
            plan.clone(),
            Arc::new(keyring),
            &progress,
            !plain,
        )
        .await?;
        progress.finish_and_clear();
        let mut run = RunReport::new(policy, deployment.url(), &plan, &traffic);
        if run.went_wrong() {
            let logs = options.out_dir.join(format!(
                "{}-policy-{}-logs",
                scenario.name,
                policy_label(policy)
            ));
            run.stack_logs = deployment
                .keep_logs(&logs)?
                .map(|d| d.display().to_string());
        }
        runs.push(run);
    }
    let comparison = match runs.as_slice() {
        [on, off] => Some(Comparison::new(on, off)),
        _ => None,
    };
    let report = DrillReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seeding: seeding_note(options, &plan.accounts, seeding_time),
        runs,
        comparison,
    };
    write(options, &report)?;
    Ok(report)
}

fn seeding_note(options: &Options, accounts: &[plan::Account], took: Duration) -> String {
    if let Target::PlainApp { .. } = options.target {
        return format!(
            "{} accounts the application loaded itself (`portcullis-drill accounts`)",
            accounts.len()
        );
    }
    let how = if options.cheap_seeding {
        let [(_, memory), (_, iterations)] = CHEAP_ARGON2;
        format!(
            "cheap Argon2 (m={memory} KiB, t={iterations}), not the server's: a wrong guess \
             against a seeded account costs less than in production, a right one rehashes"
        )
    } else {
        "the server's Argon2 parameters".to_owned()
    };
    let count = |f: fn(&plan::Account) -> bool| accounts.iter().filter(|a| f(a)).count();
    let totp = match count(|a| a.totp_secret.is_some()) {
        0 => String::new(),
        n => format!(" ({n} with a TOTP secret, `portcullis users import-totp`)"),
    };
    let passkeys = match count(|a| a.passkey_only) {
        0 => String::new(),
        n => format!(
            " ({n} with a soft passkey of the drill's and no password, `portcullis users \
             import-passkeys`)"
        ),
    };
    format!(
        "{} accounts per deployment{totp}{passkeys} with `portcullis users import` ({:.1} s in all), \
         hashed with {how}",
        accounts.len(),
        took.as_secs_f64()
    )
}

fn write(options: &Options, report: &DrillReport) -> anyhow::Result<()> {
    let base = options.out_dir.join(&report.scenario);
    let json = base.with_extension("json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    for run in &report.runs {
        let policy = policy_label(run.policy);
        let svg = options
            .out_dir
            .join(format!("{}-policy-{policy}.svg", report.scenario));
        let title = format!("{}: policy {policy}", report.scenario);
        chart::timeline(run, &title, &svg)?;
    }
    Ok(())
}
