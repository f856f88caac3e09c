//! The Kubernetes manifests (`deploy/kubernetes`): valid against the Kubernetes API schemas
//! (PyPI `kubernetes-validate`), holding the objects the deployment guide promises, wired to
//! each other, and with settings the binary accepts once the Secret's placeholders are filled.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::interop;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn manifests() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let json = interop("kubernetes_manifests.py", &[dir.to_str().unwrap()], "");
    serde_json::from_str(&json).unwrap()
}

fn one<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(key, value)| labels[key] == *value)
}

#[test]
fn the_manifests_validate_and_are_wired_together() {
    let documents = manifests();
    let kinds: BTreeSet<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ])
    );

    let deployment = one(&documents, "Deployment");
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));

    // Every Service and the budget reach the replicas; the autoscaler scales them.
    for service in documents.iter().filter(|d| d["kind"] == "Service") {
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{service}"
        );
    }
    let budget = one(&documents, "PodDisruptionBudget");
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let autoscaler = one(&documents, "HorizontalPodAutoscaler");
    assert_eq!(
        autoscaler["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );

    // The replicas and the migration read the same ConfigMap and Secret, which exist.
    let config = one(&documents, "ConfigMap")["metadata"]["name"].clone();
    let secret = one(&documents, "Secret")["metadata"]["name"].clone();
    let job = one(&documents, "Job");
    let migration = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(migration["args"], serde_json::json!(["migrate"]));
    for env_from in [&container["envFrom"], &migration["envFrom"]] {
        assert_eq!(env_from[0]["configMapRef"]["name"], config);
        assert_eq!(env_from[1]["secretRef"]["name"], secret);
    }
    // The operations port is a Service of its own, apart from the public one.
    let ops_port = config_value(&documents, "PORTCULLIS__ADMIN__LISTEN");
    assert!(ops_port.ends_with(":9090"), "{ops_port}");
}

fn config_value(documents: &[Value], key: &str) -> String {
    one(documents, "ConfigMap")["data"][key]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs `portcullis check-config` with the ConfigMap's and the Secret's settings, the Secret's
/// values replaced by `fill` where it gives one.
fn check_config(documents: &[Value], fill: &dyn Fn(&str) -> Option<String>) -> (bool, String) {
    let mut command = Command::new(BIN);
    command.arg("check-config");
    for (key, _) in std::env::vars() {
        if key.starts_with("PORTCULLIS__") {
            command.env_remove(key);
        }
    }
    let config = one(documents, "ConfigMap")["data"].as_object().unwrap();
    let secret = one(documents, "Secret")["stringData"].as_object().unwrap();
    for (key, value) in config {
        command.env(key, value.as_str().unwrap());
    }
    for (key, value) in secret {
        let value = fill(key).unwrap_or_else(|| value.as_str().unwrap().to_owned());
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_binary_accepts_the_manifests_settings_and_refuses_the_placeholders() {
    let documents = manifests();
    let good = "ab".repeat(32);
    let (ok, _) = check_config(&documents, &|_| None);
    assert!(!ok, "the Secret's placeholders must not start a replica");
    // Each placeholder left alone is named.
    for (left, setting) in [
        ("PORTCULLIS__SECRETS__HMAC_KEY", "secrets.hmac_key"),
        ("PORTCULLIS__ADMIN__TOKEN", "admin.token"),
    ] {
        let (ok, stderr) = check_config(&documents, &|key| (key != left).then(|| good.clone()));
        assert!(!ok && stderr.contains(setting), "{left}: {stderr}");
    }
    let (ok, stderr) = check_config(&documents, &|key| match key {
        "PORTCULLIS__SECRETS__HMAC_KEY" | "PORTCULLIS__ADMIN__TOKEN" => Some(good.clone()),
        _ => None,
    });
    assert!(ok, "{stderr}");
}
