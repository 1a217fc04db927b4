//! # maas-power
//!
//! Power control through BMCs: a typed contract for drivers
//! ([`PowerDriver`]), a declarative description of each driver
//! ([`DriverDescriptor`]: capabilities and a settings schema that
//! serializes to JSON), a [`Registry`] the program fills explicitly (or
//! [`builtin_registry`] for the drivers enabled by cargo features), and the
//! [`Executor`], which owns retries, verification, timeouts and
//! concurrency so drivers do not.
//!
//! Built-in drivers: `manual`, `webhook`, `virsh`, `redfish`, `ipmi` and
//! `ucsm` (features of the same names, all on by default). The `testkit`
//! feature adds the `testkit` module: the conformance battery every
//! driver, built-in or a plugin, runs against its simulated BMC (see
//! `docs/adding-a-power-driver.md`).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use maas_power::{builtin_registry, Executor, PowerAction, PowerError, PowerState};
//!
//! let registry = builtin_registry();
//! // Parameters are checked against the driver's settings; errors name the field.
//! let err = registry.bind("webhook", [("power_on_uri", "http://127.0.0.1/on")]).unwrap_err();
//! assert!(matches!(err, PowerError::MissingParameter { ref field, .. } if field == "power_off_uri"));
//!
//! let machine = registry.bind("manual", [])?;
//! let report = Executor::default().run(&machine, PowerAction::On).await?;
//! assert_eq!(report.state, PowerState::Unknown); // manual power cannot be queried
//! assert_eq!(report.attempts, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod descriptor;
mod driver;
pub mod drivers;
mod error;
mod executor;
mod registry;
mod secret;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use descriptor::{
    Capabilities, DriverDescriptor, FieldType, ParamValue, PowerParams, Scope, SettingField,
};
pub use driver::{
    BootDevice, BootMode, BootOverride, BootPersistence, DriverFactory, OffMode, PowerDriver,
    PowerState, ProbeReport,
};
pub use error::{BoxError, PowerError};
pub use executor::{
    ActionReport, Executor, ExecutorConfig, ExecutorError, PowerAction, Step, StepOutcome,
    StepRecord,
};
pub use registry::{BoundDriver, Registry, builtin_registry};
pub use secret::Secret;
