//! A real nginx (Debian's `nginx-light`) in a temp dir, as an unprivileged foreground process,
//! with the `http {}` block a test gives it: checked by `nginx -t` first, then run until dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, wait_until};

/// A running nginx.
pub struct Nginx {
    _child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `http` inside its `http {}` block (logs and temp files in its own
    /// dir), once `nginx -t` accepts it; waits until `port` answers.
    pub async fn start(http: &str, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
                 access_log off;\nclient_body_temp_path {d};\nproxy_temp_path {d};\n\
                 fastcgi_temp_path {d};\nuwsgi_temp_path {d};\nscgi_temp_path {d};\n{http}\n}}\n"
            ),
        )
        .unwrap();
        let checked = nginx(dir.path(), &conf)
            .arg("-t")
            .output()
            .expect("nginx (Debian's nginx-light; scripts/test.sh installs it)");
        assert!(
            checked.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let child = nginx(dir.path(), &conf)
            .args(["-g", "daemon off; master_process off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let nginx = Self {
            _child: ChildGuard(child),
            dir,
        };
        wait_until(Duration::from_secs(10), "nginx to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        nginx
    }

    /// What nginx logged as errors so far (for a failing test's message).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn nginx(prefix: &Path, conf: &Path) -> Command {
    let mut command = Command::new("nginx");
    command.arg("-p").arg(prefix).arg("-c").arg(conf);
    command
}
