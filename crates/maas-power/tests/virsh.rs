//! The virsh driver against libvirt's test driver (`test:///default`, no
//! daemon; its state lasts one connection, which the driver's interactive
//! session spans).

mod common;

use std::sync::Arc;

use maas_power::drivers::virsh::VirshFactory;
use maas_power::{
    BootDevice, BootOverride, BootPersistence, Executor, ExecutorError, PowerAction, PowerError,
    PowerState, Registry, Step, builtin_registry,
};

const URI: &str = "test:///default";

#[tokio::test]
async fn virsh_test_driver_on_off_cycle_boot_order() {
    if !common::require_tool("virsh", "libvirt-clients") {
        return;
    }
    let registry = builtin_registry();
    let vm = registry
        .bind("virsh", [("power_address", URI), ("power_id", "test")])
        .unwrap();
    let ex = Executor::new(common::fast_config());

    // The test driver's domain "test" starts running.
    let r = ex.run(&vm, PowerAction::Query).await.unwrap();
    assert_eq!(r.state, PowerState::On);

    let r = ex.run(&vm, PowerAction::Off).await.unwrap();
    assert_eq!(r.state, PowerState::Off);
    assert!(!r.already);
    assert!(r.steps.iter().any(|s| s.step == Step::Verify));
    assert_eq!(
        ex.run(&vm, PowerAction::Query).await.unwrap().state,
        PowerState::Off
    );

    // Already off: nothing is sent.
    let r = ex.run(&vm, PowerAction::Off).await.unwrap();
    assert!(r.already);

    let r = ex.run(&vm, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    assert!(r.steps.iter().any(|s| s.step == Step::PowerOn));

    let r = ex.run(&vm, PowerAction::SoftOff).await.unwrap();
    assert_eq!(r.state, PowerState::Off);
    // Cycling an off machine switches it on; cycling a running one resets it.
    let r = ex.run(&vm, PowerAction::Cycle).await.unwrap();
    assert!(r.steps.iter().any(|s| s.step == Step::PowerOn));
    let r = ex.run(&vm, PowerAction::Cycle).await.unwrap();
    assert!(r.steps.iter().any(|s| s.step == Step::PowerCycle));
    assert_eq!(r.state, PowerState::On);

    // Boot order: network first, read back from the persistent config.
    let r = ex
        .run(
            &vm,
            PowerAction::SetBootDevice(BootOverride::network(BootPersistence::Persistent)),
        )
        .await
        .unwrap();
    assert_eq!(r.boot.unwrap().device, BootDevice::Network);
    let probe = ex
        .run(&vm, PowerAction::Probe)
        .await
        .unwrap()
        .probe
        .unwrap();
    assert_eq!(probe.details["boot_order"], "network,hd");
    assert_eq!(probe.details["Name"], "test");
    // Once is not something libvirt has: the answer says persistent.
    let r = ex
        .run(
            &vm,
            PowerAction::SetBootDevice(BootOverride::disk(BootPersistence::Once)),
        )
        .await
        .unwrap();
    assert_eq!(
        r.boot.unwrap(),
        BootOverride::disk(BootPersistence::Persistent)
    );
    let probe = ex
        .run(&vm, PowerAction::Probe)
        .await
        .unwrap()
        .probe
        .unwrap();
    assert_eq!(probe.details["boot_order"], "hd,network");
    vm.driver().close().await.unwrap();
}

#[tokio::test]
async fn virsh_unknown_domain_is_fatal_and_not_retried() {
    if !common::require_tool("virsh", "libvirt-clients") {
        return;
    }
    let vm = builtin_registry()
        .bind(
            "virsh",
            [("power_address", URI), ("power_id", "no-such-vm")],
        )
        .unwrap();
    let err = Executor::new(common::fast_config())
        .run(&vm, PowerAction::On)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::NotFound { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.steps().len(), 1);
}

#[tokio::test]
async fn virsh_unreachable_hypervisor_is_a_connection_error_after_retries() {
    if !common::require_tool("virsh", "libvirt-clients") {
        return;
    }
    let port = common::free_port();
    let uri = format!("qemu+tcp://127.0.0.1:{port}/system");
    let vm = builtin_registry()
        .bind(
            "virsh",
            [("power_address", uri.as_str()), ("power_id", "x")],
        )
        .unwrap();
    let t = std::time::Instant::now();
    let err = Executor::new(common::fast_config())
        .run(&vm, PowerAction::Query)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                last: PowerError::Connection { .. },
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn virsh_missing_program_is_fatal() {
    let mut r = Registry::new();
    r.register(Arc::new(VirshFactory::with_program("/nonexistent/virsh")))
        .unwrap();
    let vm = r
        .bind("virsh", [("power_address", URI), ("power_id", "test")])
        .unwrap();
    let err = Executor::new(common::fast_config())
        .run(&vm, PowerAction::Query)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::ToolMissing { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn virsh_test_driver_passes_the_battery() {
    if !common::require_tool("virsh", "libvirt-clients") {
        return;
    }
    maas_power::testkit::run_battery(
        &builtin_registry(),
        "virsh",
        &[("power_address", URI), ("power_id", "test")],
        &Executor::new(common::fast_config()),
    )
    .await;
}
