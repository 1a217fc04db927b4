//! The `lineproto` driver against its simulated controller: the
//! maas-power conformance battery, then what is particular to it.

use std::sync::Arc;
use std::time::Duration;

use custom_power_driver::{LineFactory, sim::SimBmc};
use maas_power::{
    Executor, ExecutorConfig, ExecutorError, PowerAction, PowerError, Registry, builtin_registry,
    testkit,
};

fn registry() -> Registry {
    let mut r = builtin_registry();
    r.register(Arc::new(LineFactory {
        timeout: Duration::from_secs(2),
    }))
    .unwrap();
    r
}

fn executor() -> Executor {
    Executor::new(ExecutorConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        verify_interval: Duration::from_millis(20),
        ..ExecutorConfig::default()
    })
}

#[tokio::test]
async fn lineproto_passes_the_battery() {
    let bmc = SimBmc::start("s3cret", &["node-1", "node-2"])
        .await
        .unwrap();
    let port = bmc.addr().port().to_string();
    let params = [
        ("power_address", "127.0.0.1"),
        ("power_port", port.as_str()),
        ("power_pass", "s3cret"),
        ("node", "node-1"),
    ];
    testkit::run_battery(&registry(), "lineproto", &params, &executor()).await;
    let log = bmc.log();
    for want in [
        "ON node-1",
        "OFF node-1",
        "SOFTOFF node-1",
        "RESET node-1",
        "BOOT node-1 PXE ONCE UEFI",
    ] {
        assert!(
            log.iter().any(|l| l == want),
            "{want:?} never sent: {log:?}"
        );
    }
    // Only node-1 was touched.
    assert!(!bmc.node("node-1").unwrap().on);
    assert!(log.iter().all(|l| !l.contains("node-2")));
}

#[tokio::test]
async fn lineproto_errors_are_classified() {
    let bmc = SimBmc::start("s3cret", &["node-1"]).await.unwrap();
    let port = bmc.addr().port().to_string();
    let r = registry();
    let ex = executor();

    let wrong = r
        .bind(
            "lineproto",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
                ("power_pass", "nope"),
                ("node", "node-1"),
            ],
        )
        .unwrap();
    let err = ex.run(&wrong, PowerAction::On).await.unwrap_err();
    maas_power::testkit::assert_fatal_auth(&err);
    assert_eq!(err.steps().len(), 1);

    let missing = r
        .bind(
            "lineproto",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
                ("power_pass", "s3cret"),
                ("node", "node-9"),
            ],
        )
        .unwrap();
    let err = ex.run(&missing, PowerAction::Query).await.unwrap_err();
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

    let err = r
        .bind(
            "lineproto",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", "70000"),
                ("power_pass", "x"),
                ("node", "n"),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, PowerError::InvalidParameter { ref field, .. } if field == "power_port"),
        "{err:?}"
    );

    // Nobody listening: retryable connection errors until the budget ends.
    drop(bmc);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let node = r
        .bind(
            "lineproto",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
                ("power_pass", "s3cret"),
                ("node", "node-1"),
            ],
        )
        .unwrap();
    let err = ex.run(&node, PowerAction::Query).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                attempts: 3,
                last: PowerError::Connection { .. },
                ..
            }
        ),
        "{err:?}"
    );
}
