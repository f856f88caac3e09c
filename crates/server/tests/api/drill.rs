//! The attack drill's smoke test: `drill/scenarios/smoke.toml` (a brute force on one account)
//! against two local stacks, the policy on and off. It checks outcomes, never timings.

use std::path::Path;

use portcullis_drill::plan::Plan;
use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

#[tokio::test]
async fn the_smoke_drill_is_stopped_by_the_policy_and_not_without_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = Scenario::load(&root.join("drill/scenarios/smoke.toml")).unwrap();
    let hit = Plan::new(&scenario).attacks.iter().position(|a| a.hit);
    assert!(
        hit.is_some_and(|n| n >= 10),
        "the scenario needs its right password after the lockout threshold, not at {hit:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let options = Options {
        scenario,
        target: Target::LocalStack {
            script: root.join("scripts/local-stack.sh"),
        },
        bin: BIN.into(),
        policy_off: true,
        cheap_seeding: true,
        source: None,
        out_dir: out.path().to_owned(),
    };
    let report = portcullis_drill::run(&options).await.unwrap();

    let [on, off] = report.runs.as_slice() else {
        panic!("two runs expected, got {}", report.runs.len());
    };
    assert!(on.policy && !off.policy);
    // With the policy, the account locks after its 5th failure: the right password never
    // gets checked.
    assert_eq!(on.verified(), 5, "{}", report.table());
    assert_eq!(on.attacker.denied, 35);
    assert_eq!(on.attacker.compromised_accounts, 0);
    // Without it, every guess is checked and the right one gets in.
    assert_eq!((off.verified(), off.attacker.denied), (40, 0));
    assert_eq!(off.attacker.compromised_accounts, 1);
    // Legitimate users get in either way, each after a typo. Had the server seen the drill's
    // own address instead of each user's, a dozen accounts failing from it would be banned as a
    // spray. (At least 19 logins are due while the attacker's 40 attempts at 40/s run.)
    for run in [on, off] {
        assert!(run.legit.logins >= 12, "{}", report.table());
        assert_eq!(run.legit.succeeded, run.legit.logins, "{}", report.table());
    }
    let comparison = report.comparison.as_ref().unwrap();
    assert_eq!(comparison.verified_reduction, Some(8.0));
    assert!(
        report.table().contains("all 1 stopped"),
        "{}",
        report.table()
    );

    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("smoke.json")).unwrap()).unwrap();
    assert_eq!(json["runs"][1]["attacker"]["compromised_accounts"], 1);
    assert!(json["seeding"].as_str().unwrap().contains("cheap Argon2"));
    for policy in ["on", "off"] {
        let svg = std::fs::read_to_string(out.path().join(format!("smoke-policy-{policy}.svg")));
        assert!(svg.unwrap().starts_with("<svg"), "policy {policy}");
    }
}
