//! The monitoring kit in `deploy/`: Prometheus' alert rules and scrape config pass `promtool`
//! (the rules' own unit tests included), and the rules and the Grafana dashboard use only
//! metrics the service exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_accounts::instruments::{Kind, METRICS};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Runs promtool with `args`, failing the test with its report unless it succeeds.
fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = deploy("prometheus/rules.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    let tests = deploy("prometheus/rules.test.yml");
    promtool(&["test", "rules", tests.to_str().unwrap()]);
}

#[test]
fn the_compose_scrape_config_is_valid_with_its_rules() {
    // The compose file mounts the rules at /etc/prometheus; check a copy pointing at the repo's.
    let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    let rules = deploy("prometheus/rules.yml");
    assert!(config.contains("/etc/prometheus/rules.yml"), "{config}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("prometheus.yml");
    std::fs::write(
        &copy,
        config.replace("/etc/prometheus/rules.yml", rules.to_str().unwrap()),
    )
    .unwrap();
    promtool(&["check", "config", copy.to_str().unwrap()]);
}

/// The `portcullis_*` metric names in `text`, with a histogram's `_bucket`, `_sum` and
/// `_count` series read as the histogram.
fn metric_names(text: &str) -> BTreeSet<String> {
    let histograms: Vec<&str> = METRICS
        .iter()
        .filter(|m| m.kind == Kind::Histogram)
        .map(|m| m.name)
        .collect();
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("portcullis_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| histograms.contains(base))
            })
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_service_exports() {
    let exported: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    let rules = std::fs::read_to_string(deploy("prometheus/rules.yml")).unwrap();
    let dashboard_text =
        std::fs::read_to_string(deploy("grafana/dashboards/portcullis.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).unwrap();

    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        // Every panel reads the provisioned data source.
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    let provisioned =
        std::fs::read_to_string(deploy("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert!(provisioned.contains("uid: prometheus"), "{provisioned}");

    for (what, text) in [("rules.yml", &rules), ("the dashboard", &queries)] {
        let used = metric_names(text);
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses unknown metrics {unknown:?}"
        );
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "portcullis_decisions_total",
        "portcullis_under_attack",
        "portcullis_hash_in_flight",
        "portcullis_hash_rejected_total",
        "portcullis_store_call_seconds",
        "portcullis_store_errors_total",
        "portcullis_deny_cache_hits_total",
    ] {
        assert!(metric_names(&queries).contains(needed), "{needed}");
    }
}
