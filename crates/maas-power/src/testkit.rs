//! The conformance battery (cargo feature `testkit`): the checks every
//! power driver, built-in or a plugin, runs against its simulated BMC.
//!
//! Each check panics with a message naming the driver and what failed, so
//! it is called straight from a `#[tokio::test]`. [`run_battery`] runs
//! them all; the single checks are public for drivers that can only pass
//! some (a BMC that cannot cycle, a driver without boot devices is handled
//! by its descriptor's capabilities).
//!
//! ```no_run
//! # async fn demo() {
//! use maas_power::{builtin_registry, Executor};
//! use maas_power::testkit::run_battery;
//! // Parameters that reach a simulated BMC the test started:
//! let params = [("power_address", "127.0.0.1"), ("power_port", "16230"),
//!               ("power_user", "admin"), ("power_pass", "password")];
//! run_battery(&builtin_registry(), "ipmi", &params, &Executor::default()).await;
//! # }
//! ```

use std::collections::BTreeSet;

use crate::descriptor::{DriverDescriptor, FieldType};
use crate::driver::{BootOverride, BootPersistence, PowerState};
use crate::error::PowerError;
use crate::executor::{Executor, ExecutorError, PowerAction, Step};
use crate::registry::{BoundDriver, Registry};

/// Runs every check: the descriptor, bad settings, then the power round
/// trip, cycle, idempotent on, soft off and boot device where the
/// descriptor claims them. `good` must be parameters that reach the
/// simulated BMC. Ends with the machine off and the driver closed.
pub async fn run_battery(
    registry: &Registry,
    driver: &str,
    good: &[(&str, &str)],
    executor: &Executor,
) {
    let descriptor = registry
        .descriptor(driver)
        .unwrap_or_else(|| panic!("testkit: no driver {driver:?} in the registry"));
    check_descriptor(descriptor);
    check_rejects_bad_settings(registry, driver, good);
    let bound = registry
        .bind(driver, good.iter().copied())
        .unwrap_or_else(|e| panic!("testkit: {driver}: the good parameters are refused: {e}"));
    check_power_round_trip(&bound, executor).await;
    check_idempotent_on(&bound, executor).await;
    check_cycle(&bound, executor).await;
    if descriptor.capabilities.soft_off {
        check_soft_off(&bound, executor).await;
    }
    if descriptor.capabilities.boot_device {
        check_boot_device(&bound, executor).await;
    }
    let _ = executor.run(&bound, PowerAction::Off).await;
    if let Err(e) = bound.driver().close().await {
        panic!("testkit: {driver}: close failed: {e}");
    }
}

/// Asserts that an action failed for good on the BMC refusing the
/// credentials (a fatal [`PowerError::Auth`]), as a wrong password must.
#[track_caller]
pub fn assert_fatal_auth(err: &ExecutorError) {
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::Auth { .. },
                ..
            }
        ),
        "expected a fatal authentication error, got {err:?}"
    );
}

/// The descriptor is usable by APIs and UIs: a lower-case name, a
/// description, unique setting names, choices with valid defaults,
/// passwords held as secrets, and a JSON form naming every setting.
pub fn check_descriptor(d: &DriverDescriptor) {
    let name = d.name;
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
        "testkit: driver name {name:?} must be lower-case ASCII letters, digits, '-' or '_'"
    );
    assert!(
        !d.description.trim().is_empty(),
        "testkit: {name}: empty description"
    );
    let mut seen = BTreeSet::new();
    for f in d.settings {
        assert!(
            seen.insert(f.name),
            "testkit: {name}: setting {:?} declared twice",
            f.name
        );
        assert!(
            !f.label.trim().is_empty(),
            "testkit: {name}: setting {:?} has no label",
            f.name
        );
        if f.field_type == FieldType::Password {
            assert!(
                f.is_secret(),
                "testkit: {name}: password {:?} is not secret",
                f.name
            );
        }
        if f.field_type == FieldType::Choice {
            assert!(
                !f.choices.is_empty(),
                "testkit: {name}: choice {:?} has no choices",
                f.name
            );
            if let Some(def) = f.default {
                assert!(
                    f.choices.iter().any(|(v, _)| *v == def),
                    "testkit: {name}: the default {def:?} of {:?} is not a choice",
                    f.name
                );
            }
        } else {
            assert!(
                f.choices.is_empty(),
                "testkit: {name}: {:?} has choices but is not a choice field",
                f.name
            );
        }
    }
    // Every default passes its field's validation: binding with only the
    // required fields (placeholders) applies them all.
    let required = d
        .settings
        .iter()
        .filter(|g| g.required && g.default.is_none())
        .map(|g| (g.name, placeholder(g.field_type)));
    if let Err(e) = d.validate(required) {
        panic!("testkit: {name}: a default does not validate: {e}");
    }
    let json = d.to_json();
    assert_eq!(json["name"], name, "testkit: {name}: JSON has no name");
    let listed = json["settings"].as_array().map_or(0, Vec::len);
    assert_eq!(
        listed,
        d.settings.len(),
        "testkit: {name}: JSON lists {listed} settings"
    );
}

fn placeholder(t: FieldType) -> &'static str {
    match t {
        FieldType::Integer => "1",
        FieldType::IpAddress => "127.0.0.1",
        FieldType::Mac => "52:54:00:00:00:01",
        _ => "x",
    }
}

/// Binding refuses, naming the field: an unknown parameter, each required
/// field left out, each choice field given a value not among its choices,
/// each integer or address field given text.
pub fn check_rejects_bad_settings(registry: &Registry, driver: &str, good: &[(&str, &str)]) {
    let d = registry
        .descriptor(driver)
        .unwrap_or_else(|| panic!("testkit: no driver {driver:?} in the registry"));
    let bind = |params: Vec<(&str, &str)>| registry.bind(driver, params);
    let mut with_unknown = good.to_vec();
    with_unknown.push(("testkit_no_such_setting", "1"));
    match bind(with_unknown) {
        Err(PowerError::UnknownParameter { field, .. }) if field == "testkit_no_such_setting" => {}
        other => panic!("testkit: {driver}: an unknown parameter gave {other:?}"),
    }
    for f in d.settings {
        if f.required && f.default.is_none() {
            let without: Vec<_> = good.iter().copied().filter(|(k, _)| *k != f.name).collect();
            match bind(without) {
                Err(PowerError::MissingParameter { field, .. }) if field == f.name => {}
                other => panic!("testkit: {driver}: leaving out {:?} gave {other:?}", f.name),
            }
        }
        let bad = match f.field_type {
            FieldType::Choice => "testkit-not-a-choice",
            FieldType::Integer => "twelve",
            FieldType::IpAddress => "300.1.2.3",
            FieldType::Mac => "not-a-mac",
            _ => continue,
        };
        let mut params: Vec<_> = good.iter().copied().filter(|(k, _)| *k != f.name).collect();
        params.push((f.name, bad));
        match bind(params) {
            Err(PowerError::InvalidParameter { field, .. }) if field == f.name => {}
            other => panic!("testkit: {driver}: {:?}={bad:?} gave {other:?}", f.name),
        }
    }
}

async fn run_ok(bound: &BoundDriver, ex: &Executor, action: PowerAction) -> crate::ActionReport {
    let name = bound.descriptor().name;
    ex.run(bound, action)
        .await
        .unwrap_or_else(|e| panic!("testkit: {name}: {action} failed: {} ({:#?})", e, e.steps()))
}

fn expect_state(bound: &BoundDriver, what: &str, got: PowerState, want: PowerState) {
    let name = bound.descriptor().name;
    if bound.descriptor().capabilities.queryable {
        assert_eq!(got, want, "testkit: {name}: {what}");
    } else {
        assert_eq!(
            got,
            PowerState::Unknown,
            "testkit: {name}: {what} (not queryable)"
        );
    }
}

/// Off, query, on, query, off, query: each action ends in its state and
/// a query agrees.
pub async fn check_power_round_trip(bound: &BoundDriver, ex: &Executor) {
    for (action, want) in [
        (PowerAction::Off, PowerState::Off),
        (PowerAction::On, PowerState::On),
        (PowerAction::Off, PowerState::Off),
    ] {
        let r = run_ok(bound, ex, action).await;
        expect_state(bound, &format!("state after {action}"), r.state, want);
        let q = run_ok(bound, ex, PowerAction::Query).await;
        expect_state(bound, &format!("query after {action}"), q.state, want);
    }
}

/// Switching on a machine that is on changes nothing: reported as
/// `already`, and the driver's power-on is not called.
pub async fn check_idempotent_on(bound: &BoundDriver, ex: &Executor) {
    if !bound.descriptor().capabilities.queryable {
        return;
    }
    let name = bound.descriptor().name;
    run_ok(bound, ex, PowerAction::On).await;
    let r = run_ok(bound, ex, PowerAction::On).await;
    assert!(
        r.already,
        "testkit: {name}: a second power on was not seen as done already"
    );
    assert!(
        !r.steps.iter().any(|s| s.step == Step::PowerOn),
        "testkit: {name}: a second power on called the driver: {:#?}",
        r.steps
    );
    assert_eq!(
        r.state,
        PowerState::On,
        "testkit: {name}: state after a second power on"
    );
}

/// A cycle of a machine that is on leaves it on; of one that is off,
/// switches it on.
pub async fn check_cycle(bound: &BoundDriver, ex: &Executor) {
    run_ok(bound, ex, PowerAction::On).await;
    let r = run_ok(bound, ex, PowerAction::Cycle).await;
    expect_state(bound, "state after a cycle", r.state, PowerState::On);
    run_ok(bound, ex, PowerAction::Off).await;
    let r = run_ok(bound, ex, PowerAction::Cycle).await;
    expect_state(
        bound,
        "state after cycling a machine that was off",
        r.state,
        PowerState::On,
    );
}

/// A soft off of a machine that is on ends off.
pub async fn check_soft_off(bound: &BoundDriver, ex: &Executor) {
    run_ok(bound, ex, PowerAction::On).await;
    let r = run_ok(bound, ex, PowerAction::SoftOff).await;
    expect_state(bound, "state after a soft off", r.state, PowerState::Off);
}

/// Network then disk: each reads back with the device asked for.
pub async fn check_boot_device(bound: &BoundDriver, ex: &Executor) {
    let name = bound.descriptor().name;
    for want in [
        BootOverride::network(BootPersistence::Once),
        BootOverride::disk(BootPersistence::Persistent),
        BootOverride::network(BootPersistence::Persistent),
    ] {
        let r = run_ok(bound, ex, PowerAction::SetBootDevice(want)).await;
        let got = r
            .boot
            .unwrap_or_else(|| panic!("testkit: {name}: no boot override in the report"));
        assert_eq!(
            got.device, want.device,
            "testkit: {name}: boot device read back"
        );
    }
}
