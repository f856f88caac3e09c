//! Containers from the local images (`scripts/images.sh`), started and removed by the tests
//! through the docker CLI.
//!
//! The CLI rather than testcontainers: testcontainers 0.28 speaks only Docker API 1.53 (bollard
//! 0.21, with no version negotiation), and the engine on our machines (Debian's Docker 20.10)
//! answers 1.41 at most; the CLI negotiates. Images are never pulled: there is no registry, and
//! a missing local image fails the test with the command that builds it.
//!
//! The images are the ones `scripts/images.sh` built and named in `.env.local-images` (the
//! variables docker-compose.yml reads), so that script alone names them. Every container and
//! network carries the label [`LABEL`] and is removed (with its volumes) when its handle drops. Each start is appended to the file named by [`LOG_ENV`], when set, so
//! a run can show what it started (`scripts/test.sh` counts them by image).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The variable naming the local Redis image.
pub const REDIS_IMAGE: &str = "REDIS_IMAGE";
/// The variable naming the local PostgreSQL image.
pub const POSTGRES_IMAGE: &str = "POSTGRES_IMAGE";
/// The label on everything the fixtures create.
pub const LABEL: &str = "portcullis.testkit";
/// The environment variable naming the log of started containers.
pub const LOG_ENV: &str = "PORTCULLIS_TEST_CONTAINER_LOG";

/// Whether a Docker engine answers the CLI (asked once per test binary).
pub fn docker_answers() -> bool {
    static ANSWERS: OnceLock<bool> = OnceLock::new();
    *ANSWERS.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The compose variables that select the local images, as `scripts/images.sh` wrote them to
/// `.env.local-images` at the repository's root.
pub fn local_images() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.local-images");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} ({e}): build the local images with scripts/images.sh",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The local image a variable of `.env.local-images` names ([`REDIS_IMAGE`], ...).
pub fn local_image(variable: &str) -> String {
    local_images()
        .into_iter()
        .find_map(|(k, v)| (k == variable).then_some(v))
        .unwrap_or_else(|| panic!("{variable} is not in .env.local-images: run scripts/images.sh"))
}

/// A running container of the test's own, removed when dropped.
pub struct Container {
    id: String,
}

impl Container {
    /// `docker run -d` of the local image `variable` names ([`REDIS_IMAGE`], ...), with
    /// `options` (ports, network, environment) and, when not empty, `command` instead of the
    /// image's.
    pub fn run(variable: &str, options: &[&str], command: &[&str]) -> Self {
        let image = &local_image(variable);
        assert!(
            docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok(),
            "the image {image} is missing: build the local images with scripts/images.sh"
        );
        let mut args = vec!["run", "-d", "--label", LABEL];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let id = docker(&args).unwrap_or_else(|e| panic!("docker run {image}: {e}"));
        log_start(image, &id);
        Self { id }
    }

    /// The address the container has on its (only) network.
    pub fn ip(&self) -> String {
        let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
        self.docker(&["inspect", "--format", format, &self.id])
    }

    /// `program` run inside the container (`docker exec`), for the caller to add arguments to.
    pub fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("docker");
        command.args(["exec", &self.id, program]);
        command
    }

    /// Kills the container at once (SIGKILL), as a crash would; its files stay.
    pub fn kill(&self) {
        self.docker(&["kill", &self.id]);
    }

    /// Starts the container again (after `kill`), with its files and published ports.
    pub fn start(&self) {
        self.docker(&["start", &self.id]);
    }

    /// Freezes every process in the container: it holds its connections and answers nothing.
    pub fn pause(&self) {
        self.docker(&["pause", &self.id]);
    }

    /// Lets a paused container run on.
    pub fn unpause(&self) {
        self.docker(&["unpause", &self.id]);
    }

    fn docker(&self, args: &[&str]) -> String {
        docker(args).unwrap_or_else(|e| panic!("docker {} ({}): {e}", args[0], self.id))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", "--volumes", &self.id]);
    }
}

/// A bridge network of the test's own, removed when dropped (after its containers).
pub struct Network {
    /// Its name.
    pub name: String,
}

impl Network {
    /// Creates a network with a random name.
    pub fn create() -> Self {
        let name = format!("portcullis-test-{}", crate::random_hex(6));
        docker(&["network", "create", "--label", LABEL, &name])
            .unwrap_or_else(|e| panic!("docker network create: {e}"));
        Self { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// Runs the docker CLI; its trimmed output, or what it said on failure.
fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker ({e})"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// One line per started container in the log [`LOG_ENV`] names: `started IMAGE ID`.
fn log_start(image: &str, id: &str) {
    let line = format!("started {image} {}\n", &id[..id.len().min(12)]);
    eprint!("testkit: {line}");
    if let Some(path) = std::env::var_os(LOG_ENV)
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}
