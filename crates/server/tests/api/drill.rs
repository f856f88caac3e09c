//! The attack drill's smoke tests against two local stacks each, the policy on and off:
//! `drill/scenarios/smoke.toml` (a brute force on one account) and `smoke-challenge.toml` (a
//! spray that is challenged, on accounts two in five of which have a second factor). They check
//! outcomes, never timings.

use std::path::Path;

use portcullis_drill::plan::Plan;
use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Runs a scenario from `drill/scenarios` against local stacks, the policy on and off.
async fn drill(name: &str, out: &Path) -> portcullis_drill::report::DrillReport {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = Scenario::load(&root.join(format!("drill/scenarios/{name}.toml"))).unwrap();
    let options = Options {
        scenario,
        target: Target::LocalStack {
            script: root.join("scripts/local-stack.sh"),
        },
        bin: BIN.into(),
        policy_off: true,
        cheap_seeding: true,
        source: None,
        out_dir: out.to_owned(),
    };
    portcullis_drill::run(&options).await.unwrap()
}

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
    let report = drill("smoke", out.path()).await;

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
    // spray. (About 20 logins are due in the two seconds they run.) Their typos put the service
    // under attack, yet on their known devices they are never challenged.
    for run in [on, off] {
        // Every user has its device cookie first; one without would be challenged as new.
        assert_eq!(run.legit.warm_up_failures, 0, "{}", report.table());
        assert!(run.legit.logins >= 12, "{}", report.table());
        assert_eq!(run.legit.succeeded, run.legit.logins, "{}", report.table());
        assert_eq!(run.legit.challenged, 0, "{}", report.table());
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

#[tokio::test]
async fn a_spray_that_does_not_solve_is_stopped_by_challenges_and_users_solve_theirs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = Scenario::load(&root.join("drill/scenarios/smoke-challenge.toml")).unwrap();
    let hits: Vec<usize> = Plan::new(&scenario)
        .attacks
        .iter()
        .enumerate()
        .filter_map(|(n, a)| a.hit.then_some(n))
        .collect();
    assert!(
        hits.iter().any(|&n| n >= 3),
        "the scenario needs a right password after the third username, not at {hits:?}"
    );
    let plan = Plan::new(&scenario);
    let account_of = |n: usize| &plan.accounts[n % scenario.attacker.targets];
    let held = hits
        .iter()
        .filter(|&&n| account_of(n).totp_secret.is_some())
        .count();
    assert!(
        held >= 1 && held < hits.len(),
        "the scenario needs right passwords of accounts with and without a second factor"
    );
    let legit_mfa = plan
        .legit
        .iter()
        .filter(|u| plan.accounts[u.account].totp_secret.is_some());
    assert!(legit_mfa.count() >= 1, "some users need a second factor");
    let out = tempfile::tempdir().unwrap();
    let report = drill("smoke-challenge", out.path()).await;
    let [on, off] = report.runs.as_slice() else {
        panic!("two runs expected, got {}", report.runs.len());
    };
    let table = report.table();
    // Three usernames fail from the address (30% of the ten that would ban it); from then on it
    // is challenged, and an attacker that does not solve verifies nothing more.
    assert_eq!(on.verified(), 3, "{table}");
    assert!(on.attacker.challenged >= 10, "{table}");
    assert_eq!(on.attacker.compromised_accounts, 0, "{table}");
    assert_eq!(off.verified(), 40, "{table}");
    // Without the policy every right password is checked: a second factor holds its account,
    // which is never counted compromised; the others are lost.
    assert_eq!(off.attacker.second_factor_held_accounts, held, "{table}");
    assert_eq!(
        off.attacker.compromised_accounts,
        hits.len() - held,
        "{table}"
    );
    // Every legitimate user gets in (those with a second factor got their device cookie with
    // it); those on a known device are never challenged; the others were asked under attack
    // and solved.
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");
    assert_eq!(on.legit.challenged_known_device, 0, "{table}");
    assert!(
        on.legit.challenged >= 1 && on.legit.solve_ms_p50 > 0.0,
        "{table}"
    );
    assert_eq!(off.legit.challenged, 0, "{table}");
    assert!(on.attacker.cpu_secs > 0.0, "{table}");
}
