//! A fresh PostgreSQL database per test, dropped afterwards (only the one the test created),
//! and PostgreSQL servers of a test's own (a container, else the local binaries).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::container::{Container, POSTGRES_IMAGE, docker_answers};
use crate::process::{ChildGuard, free_port, wait_until};
use crate::random_hex;

/// The environment variable naming a PostgreSQL server URL to create test databases on.
pub const DATABASE_URL_ENV: &str = "PORTCULLIS_TEST_DATABASE_URL";

/// A database of this test's own.
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    server_url: String,
    name: String,
    _server: Option<PostgresServer>,
}

impl TestDatabase {
    /// Creates a database on `PORTCULLIS_TEST_DATABASE_URL`'s server, else on a private
    /// [`PostgresServer`].
    pub async fn create() -> Self {
        let (server_url, server) = if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            (url, None)
        } else {
            let server = PostgresServer::spawn().await;
            (server.url.clone(), Some(server))
        };
        let name = format!("portcullis_test_{}", random_hex(6));
        let mut admin = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| {
                panic!("no PostgreSQL at {server_url} ({e}); set {DATABASE_URL_ENV}")
            });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        Self {
            url: with_database(&server_url, &name),
            server_url,
            name,
            _server: server,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}

/// `postgres://u@h:p/old?x` with the database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A PostgreSQL server of the test's own, gone when dropped: a container of the local image
/// where a Docker engine answers, else the local binaries in a temp dir. For fault tests that
/// stop and start it, and behind [`TestDatabase`] when no server is named.
pub struct PostgresServer {
    /// `postgres://postgres@127.0.0.1:port/postgres`.
    pub url: String,
    backend: Backend,
}

/// Where a [`PostgresServer`] runs.
enum Backend {
    Container(Container),
    Process(LocalServer),
}

impl PostgresServer {
    /// Starts a server that trusts every connection, on a loopback port.
    pub async fn spawn() -> Self {
        let port = free_port();
        let backend = if docker_answers() {
            // A fixed host port, so that a restarted container answers where it did.
            let publish = format!("127.0.0.1:{port}:5432");
            Backend::Container(Container::run(
                POSTGRES_IMAGE,
                &[
                    "--publish",
                    &publish,
                    "--env",
                    "POSTGRES_HOST_AUTH_METHOD=trust",
                ],
                &[],
            ))
        } else {
            let mut local = LocalServer::init(port);
            local.start();
            Backend::Process(local)
        };
        let server = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            backend,
        };
        server.wait_ready().await;
        server
    }

    /// Starts the server again (after `stop`) and waits until it accepts connections.
    pub async fn start(&mut self) {
        match &mut self.backend {
            Backend::Container(container) => container.start(),
            Backend::Process(local) => local.start(),
        }
        self.wait_ready().await;
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&mut self) {
        match &mut self.backend {
            Backend::Container(container) => container.kill(),
            Backend::Process(local) => local.stop(),
        }
    }

    async fn wait_ready(&self) {
        let probe = self.url.clone();
        wait_until(Duration::from_secs(30), "postgres", || {
            let probe = probe.clone();
            async move { PgConnection::connect(&probe).await.is_ok() }
        })
        .await;
    }
}

/// PostgreSQL from the local binaries, with its cluster in a temp dir.
struct LocalServer {
    port: u16,
    bin: PathBuf,
    as_root: bool,
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl LocalServer {
    /// Initialises a cluster in a temp dir.
    fn init(port: u16) -> Self {
        let bin = local_binaries().unwrap_or_else(|| {
            panic!("no PostgreSQL: build scripts/images.sh's images, set {DATABASE_URL_ENV} or install postgresql")
        });
        let dir = tempfile::tempdir().expect("temp dir");
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if as_root {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
        }
        let server = Self {
            port,
            bin,
            as_root,
            child: None,
            dir,
        };
        let initialised = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(server.dir.path().join("data"))
            .status()
            .expect("initdb");
        assert!(initialised.success(), "initdb failed");
        server
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn start(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(self.dir.path())
            .spawn()
            .expect("postgres");
        self.child = Some(ChildGuard(child));
    }

    /// `pg_ctl stop -m immediate`, as a crash would.
    fn stop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.dir.path().join("data"))
            .status();
        self.child = None;
    }
}

/// `/usr/lib/postgresql/<newest>/bin`, if installed.
fn local_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t1"),
            "postgres://u@h:5432/t1"
        );
    }
}
