//! The attacker's list as a leak the service knows (`attacker.known_leak`): its passwords
//! written as a Have I Been Pwned file (SHA-1, uppercase hex, `HASH:COUNT` per line, sorted),
//! and the breached-password filter `portcullis passwords build-filter` makes of it, which the
//! drill's stacks then run with.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha1::{Digest, Sha1};

use crate::plan::Plan;

/// The list's passwords as a HIBP file: each distinct password once, with how often the list
/// holds it.
pub fn hibp_file(plan: &Plan) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in &plan.attacks {
        let hash = hex::encode_upper(Sha1::digest(attempt.password.as_bytes()));
        *counts.entry(hash).or_default() += 1;
    }
    counts
        .iter()
        .fold(String::new(), |mut file, (hash, count)| {
            let _ = writeln!(file, "{hash}:{count}");
            file
        })
}

/// Writes `plan`'s list as `<dir>/<name>-leak.txt` and builds `<dir>/<name>.filter` from it
/// with `bin`; returns the filter's absolute path.
pub fn build_filter(bin: &Path, plan: &Plan, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let leak = dir.join(format!("{name}-leak.txt"));
    std::fs::write(&leak, hibp_file(plan))
        .with_context(|| format!("writing {}", leak.display()))?;
    let filter = dir.join(format!("{name}.filter"));
    let output = Command::new(bin)
        .args(["passwords", "build-filter"])
        .arg(&leak)
        .arg("--out")
        .arg(&filter)
        .output()
        .with_context(|| format!("running {} passwords build-filter", bin.display()))?;
    if !output.status.success() {
        bail!(
            "building the leak's filter failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::plan::Attempt;

    #[test]
    fn each_password_is_one_sorted_line_of_its_sha1_and_count() {
        let attempt = |password: &str| Attempt {
            username: "u".into(),
            password: password.into(),
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            hit: false,
        };
        let plan = Plan {
            accounts: Vec::new(),
            attacks: vec![attempt("password"), attempt("abc"), attempt("password")],
            legit: Vec::new(),
        };
        assert_eq!(
            hibp_file(&plan),
            "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:2\nA9993E364706816ABA3E25717850C26C9CD0D89D:1\n"
        );
    }
}
