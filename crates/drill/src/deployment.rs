//! Where a run's traffic goes, and how its accounts get there.
//!
//! By default the drill brings up its own local stack with `scripts/local-stack.sh` (Redis,
//! PostgreSQL, three replicas behind nginx: the docker-compose topology) and takes it down
//! afterwards; the replicas are told to trust the drill's source address as a proxy, so the
//! attacker's `X-Forwarded-For` addresses are the clients they see. A deployment someone else
//! runs can be named by URL instead; it must trust the drill's address itself.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::plan::Account;

/// The address the drill sends from on loopback: the stack's nginx appends it to
/// `X-Forwarded-For`, and the replicas trust it next to nginx's own 127.0.0.2.
pub const DRILL_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Argon2 parameters for seeding: fast, so thousands of accounts take seconds. Logins with the
/// right password rehash to the server's parameters; wrong guesses against a seeded account
/// cost the seeding parameters, so the report says which were used.
pub const CHEAP_ARGON2: [(&str, &str); 2] = [
    ("PORTCULLIS__ARGON2__MEMORY_KIB", "1024"),
    ("PORTCULLIS__ARGON2__ITERATIONS", "1"),
];

/// The setting that names the breached-password filter (see [`crate::leak`]).
pub const BREACHED_FILTER: &str = "PORTCULLIS__PASSWORDS__BREACHED_FILTER";

/// How to bring up a local stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// `scripts/local-stack.sh`.
    pub script: PathBuf,
    /// The `portcullis` binary.
    pub bin: PathBuf,
    /// Whether the replicas apply the policy (`--policy-off` runs with `false`).
    pub policy_enabled: bool,
    /// `PORTCULLIS__*` settings of the scenario's, for the replicas.
    pub settings: Vec<(String, String)>,
}

/// A deployment the drill sends to.
pub struct Deployment {
    url: String,
    /// The origin passkeys are made for: pages at this address (see [`Deployment::local`]).
    passkey_origin: String,
    /// The stack's state directory and script, when the drill brought it up.
    stack: Option<(TempDir, PathBuf)>,
    /// `PORTCULLIS__*` settings for seeding, on top of the caller's environment (a local
    /// stack's are its replicas').
    env: Vec<(String, String)>,
}

impl Deployment {
    /// Brings up a local stack.
    pub fn local(options: &StackOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-drill-")
            .tempdir()
            .context("creating the stack's state directory")?;
        let state = dir.path().join("stack");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for nginx")?
            .port();
        let passkey_origin = format!("http://localhost:{port}");
        let output = Command::new("bash")
            .arg(&options.script)
            .arg("up")
            .env("PORTCULLIS_STACK_DIR", &state)
            .env("PORTCULLIS_STACK_PORT", port.to_string())
            .env("PORTCULLIS_BIN", &options.bin)
            // Trusted next to nginx: the addresses the drill writes in X-Forwarded-For count.
            .env(
                "PORTCULLIS__SERVER__TRUSTED_PROXIES",
                DRILL_SOURCE.to_string(),
            )
            // Plain HTTP on loopback: a Secure device cookie would never come back.
            .env("PORTCULLIS__DEVICE__SECURE_COOKIE", "false")
            // Passkeys need a domain: `localhost` on nginx's port, whatever address is dialled.
            .env("PORTCULLIS__WEBAUTHN__RP_ID", "localhost")
            .env("PORTCULLIS__WEBAUTHN__RP_ORIGINS", &passkey_origin)
            .env(
                "PORTCULLIS__POLICY__ENABLED",
                options.policy_enabled.to_string(),
            )
            .env("PORTCULLIS__LOG_LEVEL", "warn")
            .envs(options.settings.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running {}", options.script.display()))?;
        let mut deployment = Self {
            url: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            passkey_origin,
            stack: Some((dir, options.script.clone())),
            env: Vec::new(),
        };
        // From here on, dropping `deployment` takes down whatever part of the stack came up.
        if !output.status.success() {
            bail!(
                "{} up failed: {}",
                options.script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let env = std::fs::read_to_string(state.join("env")).context("reading the stack's env")?;
        deployment.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(deployment)
    }

    /// A deployment running elsewhere; seeding uses the caller's `PORTCULLIS__*` environment
    /// with `env` on top. Its passkeys are made for its own URL (its `webauthn.rp_origins`,
    /// or its `server.public_url`, must name it).
    pub fn external(url: &str, env: &[(String, String)]) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            passkey_origin: url.trim_end_matches('/').to_owned(),
            stack: None,
            env: env.to_vec(),
        }
    }

    /// The base URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The origin the deployment's passkeys are made for and sign in from.
    pub fn passkey_origin(&self) -> anyhow::Result<url::Url> {
        url::Url::parse(&self.passkey_origin)
            .with_context(|| format!("the passkey origin `{}`", self.passkey_origin))
    }

    /// Copies the logs of the stack the drill brought up (its replicas', Redis's and nginx's
    /// errors) into `to`, before taking the stack down removes them; `None` for a deployment
    /// someone else runs, whose logs are theirs.
    pub fn keep_logs(&self, to: &Path) -> anyhow::Result<Option<PathBuf>> {
        let Some((dir, _)) = &self.stack else {
            return Ok(None);
        };
        let state = dir.path().join("stack");
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        let entries =
            std::fs::read_dir(&state).with_context(|| format!("reading {}", state.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let wanted = name.ends_with(".log")
                && (name.starts_with("replica")
                    || name == "redis.log"
                    || name == "nginx-error.log");
            if wanted {
                std::fs::copy(&path, to.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
        Ok(Some(to.to_owned()))
    }

    /// Creates `accounts` with `portcullis users import` (hashing with [`CHEAP_ARGON2`] when
    /// `cheap`), then gives those with a TOTP secret their second factor with `portcullis users
    /// import-totp`, and the passkey-only ones their passkeys (`passkeys`, the lines of
    /// [`crate::passkeys::Keyring::enrol`]) with `portcullis users import-passkeys`; returns how
    /// long it took. The files imported stay in `work_dir`, named after the `scenario`: drills
    /// of other scenarios may be seeding their stacks from the same directory at the same time.
    pub fn seed(
        &self,
        bin: &Path,
        accounts: &[Account],
        passkeys: &[String],
        work_dir: &Path,
        scenario: &str,
        cheap: bool,
    ) -> anyhow::Result<std::time::Duration> {
        let started = Instant::now();
        let credentials = accounts
            .iter()
            .map(|a| format!("{},{}\n", a.username, a.password));
        let file = |kind: &str| work_dir.join(format!("{scenario}-{kind}"));
        self.import(bin, "import", &file("accounts.csv"), credentials, cheap)?;
        let secrets = accounts.iter().filter_map(|a| {
            let secret = a.totp_secret.as_ref()?;
            Some(format!("{},{secret}\n", a.username))
        });
        self.import(bin, "import-totp", &file("totp.csv"), secrets, false)?;
        let passkeys = passkeys.iter().cloned();
        self.import(
            bin,
            "import-passkeys",
            &file("passkeys.jsonl"),
            passkeys,
            false,
        )?;
        Ok(started.elapsed())
    }

    /// Runs `portcullis users COMMAND FILE` on `lines` written to `csv`.
    fn import(
        &self,
        bin: &Path,
        command_name: &str,
        csv: &Path,
        lines: impl Iterator<Item = String>,
        cheap: bool,
    ) -> anyhow::Result<()> {
        let text: String = lines.collect();
        if text.is_empty() {
            return Ok(());
        }
        std::fs::write(csv, text).with_context(|| format!("writing {}", csv.display()))?;
        let mut command = Command::new(bin);
        command.args(["users", command_name]).arg(csv);
        // The accounts were made before their passwords leaked: seeding screens nothing against
        // a known leak (an import refuses a breached password, as a registration does).
        command.envs(
            self.env
                .iter()
                .filter(|(k, _)| k != BREACHED_FILTER)
                .map(|(k, v)| (k, v)),
        );
        command.env_remove(BREACHED_FILTER);
        if cheap {
            command.envs(CHEAP_ARGON2);
        }
        let output = command
            .output()
            .with_context(|| format!("running {} users {command_name}", bin.display()))?;
        if !output.status.success() {
            bail!(
                "seeding failed (users {command_name}): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some((dir, script)) = &self.stack {
            let _ = Command::new("bash")
                .arg(script)
                .arg("down")
                .env("PORTCULLIS_STACK_DIR", dir.path().join("stack"))
                .output();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(username: &str) -> Account {
        Account {
            username: username.to_owned(),
            password: format!("{username}-password"),
            totp_secret: None,
            passkey_only: false,
        }
    }

    /// A stack's replica, Redis and nginx error logs are kept; its other files (the database,
    /// the access log) are not, and a deployment the drill did not bring up has none to keep.
    #[test]
    fn keeping_logs_copies_the_stacks_logs_before_it_goes() {
        let dir = tempfile::Builder::new().tempdir().unwrap();
        let state = dir.path().join("stack");
        std::fs::create_dir_all(state.join("pg")).unwrap();
        for name in [
            "replica1.log",
            "replica2.log",
            "redis.log",
            "nginx-error.log",
        ] {
            std::fs::write(state.join(name), format!("{name} says why")).unwrap();
        }
        std::fs::write(state.join("nginx-access.log"), "every request").unwrap();
        std::fs::write(state.join("pg/server.log"), "postgres").unwrap();
        let down = dir.path().join("down.sh");
        std::fs::write(&down, "exit 0\n").unwrap();
        let deployment = Deployment {
            url: "http://127.0.0.1:1".into(),
            passkey_origin: "http://localhost:1".into(),
            stack: Some((dir, down)),
            env: Vec::new(),
        };
        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("quiet-policy-on-logs");
        assert_eq!(deployment.keep_logs(&to).unwrap(), Some(to.clone()));
        let mut kept: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                "nginx-error.log",
                "redis.log",
                "replica1.log",
                "replica2.log"
            ]
        );
        let replica = std::fs::read_to_string(to.join("replica2.log")).unwrap();
        assert_eq!(replica, "replica2.log says why");

        let external = Deployment::external("http://127.0.0.1:1", &[]);
        let elsewhere = out.path().join("elsewhere");
        assert_eq!(external.keep_logs(&elsewhere).unwrap(), None);
        assert!(!elsewhere.exists());
    }

    /// `benchmarks.sh` runs busy, surge and quiet side by side into one directory: each
    /// scenario's import must read its own accounts, whoever wrote last.
    #[test]
    fn scenarios_seeding_from_one_directory_keep_their_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = Deployment::external("http://127.0.0.1:1", &[]);
        // `true` stands in for `portcullis`: the files are what is checked.
        let bin = Path::new("true");
        for (scenario, username) in [("busy", "ana"), ("surge", "bo")] {
            deployment
                .seed(bin, &[account(username)], &[], dir.path(), scenario, false)
                .unwrap();
        }
        for (scenario, username) in [("busy", "ana"), ("surge", "bo")] {
            let file = dir.path().join(format!("{scenario}-accounts.csv"));
            assert_eq!(
                std::fs::read_to_string(file).unwrap(),
                format!("{username},{username}-password\n")
            );
        }
    }
}
