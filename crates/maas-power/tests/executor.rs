//! The executor's rules, against a simulated BMC written on the public API
//! (a driver whose failures the test scripts), and the registry's checks.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_power::{
    BootOverride, BootPersistence, BoundDriver, Capabilities, DriverDescriptor, Executor,
    ExecutorConfig, ExecutorError, FieldType, OffMode, PowerAction, PowerDriver, PowerError,
    PowerState, Scope, SettingField, Step, StepOutcome, builtin_registry,
};

static SIM: DriverDescriptor = DriverDescriptor {
    name: "sim",
    description: "simulated BMC",
    capabilities: Capabilities {
        queryable: true,
        boot_device: false,
        soft_off: false,
        chassis: false,
        probe: false,
    },
    settings: &[
        SettingField {
            required: true,
            field_type: FieldType::IpAddress,
            ..SettingField::new("power_address", "address")
        },
        SettingField {
            field_type: FieldType::Integer,
            default: Some("623"),
            ..SettingField::new("power_port", "port")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_pass", "password")
        },
        SettingField {
            field_type: FieldType::Mac,
            scope: Scope::Machine,
            ..SettingField::new("mac", "mac")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("lan"),
            choices: &[("lan", "LAN"), ("lanplus", "LAN+")],
            ..SettingField::new("interface", "interface")
        },
    ],
};

/// What the simulated BMC does when called.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Conn,
    Auth,
    Hang,
}

#[derive(Default)]
struct Sim {
    state: Mutex<PowerState>,
    /// Faults for the next calls of any method, in order.
    faults: Mutex<VecDeque<Option<Fault>>>,
    /// Power actions that "succeed" without changing the state.
    ignore_actions: bool,
    /// Queries that fail with a connection error.
    query_fails: bool,
    calls: Mutex<Vec<&'static str>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    delay: Duration,
}

impl Sim {
    fn with_state(s: PowerState) -> Self {
        let sim = Sim::default();
        *sim.state.lock().unwrap() = s;
        sim
    }

    async fn enter(&self, name: &'static str) -> Result<(), PowerError> {
        self.calls.lock().unwrap().push(name);
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let fault = self.faults.lock().unwrap().pop_front().flatten();
        let r = match fault {
            None => Ok(()),
            Some(Fault::Conn) => Err(PowerError::Connection {
                target: "sim".into(),
                source: "connection refused".into(),
            }),
            Some(Fault::Auth) => Err(PowerError::Auth {
                target: "sim".into(),
            }),
            Some(Fault::Hang) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        };
        self.active.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn set(&self, s: PowerState) {
        if !self.ignore_actions {
            *self.state.lock().unwrap() = s;
        }
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl PowerDriver for Sim {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &SIM
    }
    async fn power_on(&self) -> Result<(), PowerError> {
        self.enter("on").await?;
        self.set(PowerState::On);
        Ok(())
    }
    async fn power_off(&self, _mode: OffMode) -> Result<(), PowerError> {
        self.enter("off").await?;
        self.set(PowerState::Off);
        Ok(())
    }
    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.enter("cycle").await?;
        self.set(PowerState::On);
        Ok(())
    }
    async fn query(&self) -> Result<PowerState, PowerError> {
        self.enter("query").await?;
        if self.query_fails {
            return Err(PowerError::Connection {
                target: "sim".into(),
                source: "no answer".into(),
            });
        }
        Ok(*self.state.lock().unwrap())
    }
}

fn bind(sim: Arc<Sim>, address: &str) -> BoundDriver {
    let params = SIM
        .validate([("power_address", address), ("power_pass", "pw")])
        .expect("valid");
    BoundDriver::new(sim, params)
}

fn faults(sim: &Sim, f: &[Option<Fault>]) {
    sim.faults.lock().unwrap().extend(f.iter().copied());
}

#[tokio::test]
async fn on_retries_a_connection_error_then_verifies() {
    let sim = Arc::new(Sim::with_state(PowerState::Off));
    // pre-query ok, power_on refused once; second attempt goes through.
    faults(&sim, &[None, Some(Fault::Conn)]);
    let ex = Executor::new(common::fast_config());
    let r = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::On)
        .await
        .unwrap();
    assert_eq!(r.state, PowerState::On);
    assert_eq!(r.attempts, 2);
    assert_eq!(sim.calls(), ["query", "on", "query", "on", "query"]);
    let steps: Vec<(u32, Step)> = r.steps.iter().map(|s| (s.attempt, s.step)).collect();
    assert_eq!(
        steps,
        [
            (1, Step::PreQuery),
            (1, Step::PowerOn),
            (2, Step::PreQuery),
            (2, Step::PowerOn),
            (2, Step::Verify)
        ]
    );
    assert!(matches!(
        &r.steps[1].outcome,
        StepOutcome::Failed {
            kind: "connection",
            retryable: true,
            ..
        }
    ));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["steps"][4]["outcome"]["state"], "on");
}

#[tokio::test]
async fn auth_failure_stops_at_once() {
    let sim = Arc::new(Sim::with_state(PowerState::Off));
    faults(&sim, &[Some(Fault::Auth)]);
    let ex = Executor::new(common::fast_config());
    let err = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::Off)
        .await
        .unwrap_err();
    maas_power::testkit::assert_fatal_auth(&err);
    assert!(!err.is_retryable());
    assert_eq!(sim.calls(), ["query"]);
    assert_eq!(err.steps().len(), 1);
}

#[tokio::test]
async fn on_never_cycles_a_machine_whose_state_is_unknown() {
    // The BMC answers power commands but not queries: the state is unknown
    // before and after. The executor must send "on", never "cycle".
    let sim = Arc::new(Sim {
        query_fails: true,
        ..Sim::with_state(PowerState::On)
    });
    let ex = Executor::new(ExecutorConfig {
        verify_timeout: Duration::from_millis(300),
        ..common::fast_config()
    });
    let err = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::On)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecutorError::Exhausted { attempts: 3, .. }),
        "{err:?}"
    );
    let calls = sim.calls();
    assert!(!calls.contains(&"cycle"), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == "on").count(), 3);
    // and a machine already on is left alone
    let sim = Arc::new(Sim::with_state(PowerState::On));
    let r = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::On)
        .await
        .unwrap();
    assert!(r.already);
    assert_eq!(sim.calls(), ["query"]);
}

#[tokio::test]
async fn cycle_of_a_machine_seen_off_switches_it_on() {
    let sim = Arc::new(Sim::with_state(PowerState::Off));
    let ex = Executor::new(common::fast_config());
    let r = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::Cycle)
        .await
        .unwrap();
    assert_eq!(r.state, PowerState::On);
    assert_eq!(sim.calls(), ["query", "on", "query"]);
    let sim = Arc::new(Sim::with_state(PowerState::On));
    ex.run(&bind(sim.clone(), "10.0.0.1"), PowerAction::Cycle)
        .await
        .unwrap();
    assert_eq!(sim.calls(), ["query", "cycle", "query"]);
}

#[tokio::test]
async fn an_action_that_does_not_take_is_retried_then_reported() {
    let sim = Arc::new(Sim {
        ignore_actions: true,
        ..Sim::with_state(PowerState::On)
    });
    let ex = Executor::new(ExecutorConfig {
        verify_timeout: Duration::from_millis(250),
        verify_interval: Duration::from_millis(100),
        ..common::fast_config()
    });
    let err = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::Off)
        .await
        .unwrap_err();
    let ExecutorError::Exhausted { attempts, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*attempts, 3);
    assert!(
        last.to_string()
            .contains("the state is on after the action"),
        "{last}"
    );
    assert_eq!(sim.calls().iter().filter(|c| **c == "off").count(), 3);
}

#[tokio::test]
async fn a_hanging_bmc_is_bounded_per_attempt_and_overall() {
    let sim = Arc::new(Sim::with_state(PowerState::Off));
    faults(
        &sim,
        &[Some(Fault::Hang), Some(Fault::Hang), Some(Fault::Hang)],
    );
    let ex = Executor::new(ExecutorConfig {
        attempt_timeout: Duration::from_millis(200),
        ..common::fast_config()
    });
    let t = std::time::Instant::now();
    let err = ex
        .run(&bind(sim.clone(), "10.0.0.1"), PowerAction::Query)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                last: PowerError::Timeout { .. },
                ..
            }
        ),
        "{err:?}"
    );

    let sim = Arc::new(Sim::with_state(PowerState::Off));
    faults(&sim, &[Some(Fault::Hang)]);
    let ex = Executor::new(ExecutorConfig {
        overall_timeout: Duration::from_millis(300),
        ..common::fast_config()
    });
    let err = ex
        .run(&bind(sim, "10.0.0.1"), PowerAction::Query)
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn one_action_at_a_time_per_bmc_and_a_global_limit() {
    // Eight actions on one BMC address: never two at once.
    let sim = Arc::new(Sim {
        delay: Duration::from_millis(20),
        ..Sim::with_state(PowerState::On)
    });
    let ex = Arc::new(Executor::new(common::fast_config()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (ex, b) = (ex.clone(), bind(sim.clone(), "10.0.0.1"));
        tasks.push(tokio::spawn(
            async move { ex.run(&b, PowerAction::Query).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sim.max_active.load(Ordering::SeqCst), 1);

    // Twelve BMCs, one shared simulated back end, a limit of 3.
    let sim = Arc::new(Sim {
        delay: Duration::from_millis(50),
        ..Sim::with_state(PowerState::On)
    });
    let ex = Arc::new(Executor::new(ExecutorConfig {
        max_concurrent: 3,
        ..common::fast_config()
    }));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (ex, b) = (ex.clone(), bind(sim.clone(), &format!("10.0.0.{}", i + 1)));
        tasks.push(tokio::spawn(
            async move { ex.run(&b, PowerAction::Query).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let max = sim.max_active.load(Ordering::SeqCst);
    assert!((2..=3).contains(&max), "max concurrent {max}");
}

#[tokio::test]
async fn unsupported_capabilities_are_fatal_without_calling_the_driver() {
    let sim = Arc::new(Sim::with_state(PowerState::On));
    let ex = Executor::new(common::fast_config());
    let b = bind(sim.clone(), "10.0.0.1");
    let err = ex.run(&b, PowerAction::SoftOff).await.unwrap_err();
    assert!(matches!(
        err,
        ExecutorError::Fatal {
            source: PowerError::Unsupported { .. },
            ..
        }
    ));
    let err = ex
        .run(
            &b,
            PowerAction::SetBootDevice(BootOverride::network(BootPersistence::Once)),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ExecutorError::Fatal {
            source: PowerError::Unsupported { .. },
            ..
        }
    ));
    assert!(sim.calls().is_empty());
}

#[test]
fn validation_names_the_bad_field() {
    let field = |r: Result<maas_power::PowerParams, PowerError>| match r.unwrap_err() {
        PowerError::MissingParameter { field, .. }
        | PowerError::UnknownParameter { field, .. }
        | PowerError::InvalidParameter { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(SIM.validate([])), "power_address");
    assert_eq!(
        field(SIM.validate([("power_address", "")])),
        "power_address"
    );
    assert_eq!(
        field(SIM.validate([("power_address", "10.0.0.300")])),
        "power_address"
    );
    assert_eq!(
        field(SIM.validate([("power_address", "::1"), ("power_port", "x")])),
        "power_port"
    );
    assert_eq!(
        field(SIM.validate([("power_address", "::1"), ("mac", "zz")])),
        "mac"
    );
    assert_eq!(
        field(SIM.validate([("power_address", "::1"), ("interface", "serial")])),
        "interface"
    );
    assert_eq!(
        field(SIM.validate([("power_address", "::1"), ("colour", "red")])),
        "colour"
    );
    let err = SIM.validate([("power_address", "::1\n")]).unwrap_err();
    assert!(err.to_string().contains("power_address"));

    let p = SIM
        .validate([
            ("power_address", "10.0.0.1"),
            ("power_pass", "hunter2"),
            ("mac", "AA-BB-CC-DD-EE-FF"),
        ])
        .unwrap();
    assert_eq!(p.integer("power_port"), Some(623));
    assert_eq!(p.text("interface"), Some("lan"));
    assert_eq!(p.text("mac"), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!(p.secret("power_pass").unwrap().expose(), "hunter2");
    assert_eq!(p.text("power_pass"), None);
    // secrets never print; the BMC key leaves them (and machine fields) out
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("hunter2") && dbg.contains("***"), "{dbg}");
    assert_eq!(p.bmc_key(), "sim|10.0.0.1|623");
}

#[test]
fn registry_binds_builtin_drivers_and_describes_them_in_json() {
    let r = builtin_registry();
    assert_eq!(
        r.names().collect::<Vec<_>>(),
        ["ipmi", "manual", "redfish", "ucsm", "virsh", "webhook"]
    );
    for name in r.names() {
        maas_power::testkit::check_descriptor(r.descriptor(name).unwrap());
    }
    let json = r.descriptors_json();
    let redfish = json
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "redfish")
        .unwrap();
    assert_eq!(redfish["capabilities"]["queryable"], true);
    let pass = redfish["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "power_pass")
        .unwrap();
    assert_eq!(pass["type"], "password");
    assert_eq!(pass["secret"], true);
    assert_eq!(pass["scope"], "bmc");
    let node = redfish["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "node_id")
        .unwrap();
    assert_eq!(node["scope"], "machine");

    let err = r.bind("no-such-driver", []).unwrap_err();
    assert!(matches!(err, PowerError::UnknownDriver { .. }));
    let err = r
        .bind("redfish", [("power_address", "ftp://x")])
        .unwrap_err();
    assert!(
        matches!(err, PowerError::InvalidParameter { ref field, .. } if field == "power_address"),
        "{err}"
    );
    let err = r
        .bind(
            "webhook",
            [
                ("power_on_uri", "http://127.0.0.1/{nope}"),
                ("power_off_uri", "http://127.0.0.1/"),
                ("power_query_uri", "http://127.0.0.1/"),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, PowerError::InvalidParameter { ref field, .. } if field == "power_on_uri"),
        "{err}"
    );
    let err = r
        .bind(
            "virsh",
            [
                ("power_address", "test:///default"),
                ("power_id", "a;destroy b"),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, PowerError::InvalidParameter { ref field, .. } if field == "power_id"),
        "{err}"
    );

    let mut dup = maas_power::Registry::new();
    dup.register(Arc::new(maas_power::drivers::manual::ManualFactory))
        .unwrap();
    assert!(matches!(
        dup.register(Arc::new(maas_power::drivers::manual::ManualFactory)),
        Err(PowerError::DuplicateDriver { .. })
    ));
}

#[tokio::test]
async fn manual_calls_nothing_and_reports_unknown() {
    let r = builtin_registry();
    let m = r.bind("manual", []).unwrap();
    let ex = Executor::new(common::fast_config());
    for action in [
        PowerAction::On,
        PowerAction::Off,
        PowerAction::Cycle,
        PowerAction::Query,
    ] {
        let rep = ex.run(&m, action).await.unwrap();
        assert_eq!(rep.state, PowerState::Unknown);
        assert_eq!(rep.attempts, 1);
        assert!(
            !rep.steps
                .iter()
                .any(|s| s.step == Step::PreQuery || s.step == Step::Verify)
        );
    }
}
