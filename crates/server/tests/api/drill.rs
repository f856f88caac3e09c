//! The attack drill's smoke tests against local stacks, the policy on and off:
//! `drill/scenarios/smoke.toml` (a brute force on one account), `smoke-challenge.toml` (a
//! spray that is challenged, on accounts two in five of which have a second factor) and the
//! short forms of the busy, surge and quiet days (`smoke-busy`, `smoke-surge`, `smoke-quiet`,
//! the detectors on a faster clock), `smoke-breached` (a list the service knows as a leak) and
//! `smoke-passkeys` (accounts with a passkey and no password in the list). A test of a defence
//! that acts only on guesses that reach it runs without the challenge of a network new to its
//! account, which would otherwise stop every guess of these lists first (that default has a
//! test of its own).
//! They check outcomes, never timings.

use std::path::Path;

use portcullis_drill::plan::Plan;
use portcullis_drill::report::{DrillReport, RunReport};
use portcullis_drill::scenario::Scenario;
use portcullis_drill::{Options, Target};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A scenario from `drill/scenarios`.
fn scenario(name: &str) -> Scenario {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Scenario::load(&root.join(format!("drill/scenarios/{name}.toml"))).unwrap()
}

/// `scenario` without the challenge of a network new to its account.
fn without_networks(scenario: Scenario) -> Scenario {
    scenario.with_setting("policy.challenge.unfamiliar_networks", false)
}

/// A scenario from `drill/scenarios`, and the positions of the right passwords in its list.
fn scenario_hits(name: &str) -> (Scenario, Vec<usize>) {
    let scenario = scenario(name);
    let hits = Plan::new(&scenario)
        .attacks
        .iter()
        .enumerate()
        .filter_map(|(n, a)| a.hit.then_some(n))
        .collect();
    (scenario, hits)
}

/// The runs of a report with the policy on and off, in that order.
fn on_and_off(report: &DrillReport) -> (&RunReport, &RunReport) {
    let [on, off] = report.runs.as_slice() else {
        panic!("two runs expected, got {}", report.runs.len());
    };
    assert!(on.policy && !off.policy, "{}", report.table());
    (on, off)
}

/// The one run of a report with the policy on.
fn policy_on(report: &DrillReport) -> &RunReport {
    let [on] = report.runs.as_slice() else {
        panic!("one run expected, got {}", report.runs.len());
    };
    assert!(on.policy, "{}", report.table());
    on
}

/// Runs a scenario against local stacks, the policy on and off.
async fn drill(scenario: Scenario, out: &Path) -> DrillReport {
    drill_with(scenario, out, true).await
}

/// Runs a scenario against a local stack with the policy on, and off too when `policy_off`.
async fn drill_with(scenario: Scenario, out: &Path, policy_off: bool) -> DrillReport {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let options = Options {
        scenario,
        target: Target::LocalStack {
            script: root.join("scripts/local-stack.sh"),
        },
        bin: BIN.into(),
        policy_off,
        cheap_seeding: true,
        source: None,
        out_dir: out.to_owned(),
    };
    portcullis_drill::run(&options).await.unwrap()
}

#[tokio::test]
async fn the_smoke_drill_is_stopped_by_the_policy_and_not_without_it() {
    let scenario = scenario("smoke");
    let hit = Plan::new(&scenario).attacks.iter().position(|a| a.hit);
    assert!(
        hit.is_some_and(|n| n >= 10),
        "the scenario needs its right password after the lockout threshold, not at {hit:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let report = drill(without_networks(scenario), out.path()).await;

    let (on, off) = on_and_off(&report);
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
        // Every user has its device cookie first (a warm-up that misses one fails the run).
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
    let (scenario, hits) = scenario_hits("smoke-challenge");
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
    let report = drill(without_networks(scenario), out.path()).await;
    let (on, off) = on_and_off(&report);
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

#[tokio::test]
async fn at_the_defaults_a_list_from_networks_its_accounts_never_used_verifies_nothing() {
    let out = tempfile::tempdir().unwrap();
    let report = drill(scenario("smoke-challenge"), out.path()).await;
    let (on, off) = on_and_off(&report);
    let table = report.table();
    // Every guess names an account from a network it never logged in from, with no device
    // cookie: it is challenged (or refused) before its password is checked, and this list
    // does not solve. Without the policy its right passwords get in.
    assert_eq!(on.verified(), 0, "{table}");
    assert!(on.attacker.challenged >= 10, "{table}");
    assert_eq!(on.attacker.compromised_accounts, 0, "{table}");
    assert!(off.attacker.compromised_accounts >= 1, "{table}");
    // People get in; their first logins solved a challenge in the warm-up (a new network for
    // each account), and their new devices at home are on a network their account knows.
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");
    assert_eq!(on.legit.challenged_known_device, 0, "{table}");
}

#[tokio::test]
async fn a_thin_list_inside_busy_traffic_trips_the_baseline_and_loses_its_later_hits() {
    let (scenario, hits) = scenario_hits("smoke-busy");
    assert!(
        hits.iter().any(|&n| n >= 20),
        "the scenario needs a right password after its first 20 pairs, not at {hits:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let report = drill(without_networks(scenario), out.path()).await;
    let (on, off) = on_and_off(&report);
    let table = report.table();
    // The list is seen within its first pairs, against the warm baseline, although legitimate
    // logins outnumber it three to one; no legitimate login was challenged before it came.
    let tripped = on.signal.trip_after_secs.expect(&table);
    assert!(tripped <= 10.0, "{table}");
    assert!(on.signal.false_trips.is_empty(), "{table}");
    assert!(on.attacker.challenged >= 30, "{table}");
    // Without the policy every hit gets in; with it, the ones after the trip do not.
    assert_eq!(off.attacker.compromised_accounts, hits.len(), "{table}");
    assert!(
        on.attacker.compromised_accounts < off.attacker.compromised_accounts,
        "{table}"
    );
    assert_eq!(off.signal.trip_after_secs, None, "{table}");
    // Every legitimate user gets in; those on a known device are never challenged.
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");
    assert_eq!(on.legit.challenged_known_device, 0, "{table}");
}

#[tokio::test]
async fn a_surge_of_ordinary_logins_challenges_nobody() {
    let out = tempfile::tempdir().unwrap();
    let report = drill_with(scenario("smoke-surge"), out.path(), false).await;
    let on = policy_on(&report);
    let table = report.table();
    // Five times the logins (and five times the typos) once the baseline is warm: the shares
    // the detectors judge do not move.
    assert!(on.legit.logins >= 400, "{table}");
    assert!(on.legit.typos >= 20, "{table}");
    assert!(on.signal.false_trips.is_empty(), "{table}");
    assert_eq!(on.legit.challenged, 0, "{table}");
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");
}

#[tokio::test]
async fn a_quiet_day_with_typos_challenges_nobody() {
    let out = tempfile::tempdir().unwrap();
    let report = drill_with(scenario("smoke-quiet"), out.path(), false).await;
    let on = policy_on(&report);
    let table = report.table();
    assert!(on.legit.logins >= 15 && on.legit.typos >= 2, "{table}");
    assert!(on.signal.false_trips.is_empty(), "{table}");
    // Nothing went wrong, so the stack's logs went with it.
    assert_eq!(on.stack_logs, None, "{table}");
    assert_eq!(on.legit.challenged, 0, "{table}");
    assert_eq!(on.legit.succeeded, on.legit.logins, "{table}");
}

#[tokio::test]
async fn a_list_the_service_knows_as_a_leak_compromises_nobody_with_or_without_the_policy() {
    let (scenario, hits) = scenario_hits("smoke-breached");
    let plan = Plan::new(&scenario);
    let hit_accounts: std::collections::BTreeSet<&str> = hits
        .iter()
        .map(|&n| plan.attacks[n].username.as_str())
        .collect();
    assert!(hit_accounts.len() >= 5, "{hit_accounts:?}");
    let out = tempfile::tempdir().unwrap();
    let report = drill(scenario.clone(), out.path()).await;

    // The drill wrote the list's passwords as a HIBP file and built the filter from it.
    let leak = std::fs::read_to_string(out.path().join("smoke-breached-leak.txt")).unwrap();
    let distinct: std::collections::BTreeSet<&str> =
        plan.attacks.iter().map(|a| a.password.as_str()).collect();
    assert_eq!(leak.lines().count(), distinct.len());
    assert!(out.path().join("smoke-breached.filter").is_file());

    let (on, off) = on_and_off(&report);
    // Without the rate policy every pair is checked: each right password is held for a reset.
    assert_eq!(off.verified(), 80, "{}", report.table());
    assert_eq!(
        off.attacker.reset_held_accounts,
        hit_accounts.len(),
        "{}",
        report.table()
    );
    for run in [on, off] {
        assert_eq!(run.attacker.compromised_accounts, 0, "{}", report.table());
        assert_eq!(run.attacker.succeeded, 0, "{}", report.table());
        assert!(run.legit.logins >= 12, "{}", report.table());
        assert_eq!(run.legit.succeeded, run.legit.logins, "{}", report.table());
    }
    assert!(
        report
            .table()
            .contains("accounts held by a reset (known leak)"),
        "{}",
        report.table()
    );
}

#[tokio::test]
async fn a_list_opens_no_account_without_a_password_and_passkey_users_are_never_challenged() {
    let (scenario, hits) = scenario_hits("smoke-passkeys");
    let plan = Plan::new(&scenario);
    let account_of = |n: usize| &plan.accounts[n % scenario.attacker.targets];
    let passkey_hits = hits.iter().filter(|&&n| account_of(n).passkey_only).count();
    assert!(
        passkey_hits >= 1 && passkey_hits < hits.len(),
        "the scenario needs right passwords of accounts with and without a password"
    );
    let passkey_users = plan
        .legit
        .iter()
        .filter(|u| plan.accounts[u.account].passkey_only)
        .count();
    assert!(passkey_users >= 1, "some users need a passkey");
    let out = tempfile::tempdir().unwrap();
    let report = drill(scenario.clone(), out.path()).await;
    let (on, off) = on_and_off(&report);
    let table = report.table();
    // Without the policy every right password is checked: the old password of an account that
    // gave it up for a passkey opens nothing; every other one gives its account away.
    assert_eq!(off.verified(), 40, "{table}");
    assert_eq!(
        off.attacker.passkey_only_hits_in_list, passkey_hits,
        "{table}"
    );
    assert_eq!(off.attacker.passkey_only_compromised, 0, "{table}");
    assert_eq!(
        off.attacker.compromised_accounts,
        hits.len() - passkey_hits,
        "{table}"
    );
    assert_eq!(on.attacker.passkey_only_compromised, 0, "{table}");
    // Passkey users get in every time, from known and new devices, and solve nothing, with
    // the policy and without.
    for run in [on, off] {
        assert!(run.legit.passkey_logins >= 1, "{table}");
        assert_eq!(
            run.legit.passkey_succeeded, run.legit.passkey_logins,
            "{table}"
        );
        assert_eq!(run.legit.passkey_challenged, 0, "{table}");
        assert_eq!(run.legit.succeeded, run.legit.logins, "{table}");
    }
    assert!(
        table.contains("passkey-only: hits in the list / compromised"),
        "{table}"
    );
}
