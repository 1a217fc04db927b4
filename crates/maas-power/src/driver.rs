//! API Boundary: the contract every power driver implements.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::descriptor::{DriverDescriptor, PowerParams};
use crate::error::PowerError;

pub use maas_core::machine::PowerState;

/// How to switch a machine off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OffMode {
    /// Cut the power now.
    Hard,
    /// Ask the operating system to shut down (ACPI); only where the
    /// descriptor says `soft_off`.
    Soft,
}

/// The device to boot from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// The network (PXE / HTTP boot).
    Network,
    /// The local disk.
    Disk,
}

/// For how many boots an override holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootPersistence {
    /// The next boot only.
    Once,
    /// Every boot until changed.
    Persistent,
}

/// The firmware mode to boot in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// Legacy BIOS.
    Legacy,
    /// UEFI.
    Uefi,
}

/// A boot-device override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BootOverride {
    /// The device.
    pub device: BootDevice,
    /// Once or persistent.
    pub persistence: BootPersistence,
    /// The firmware mode; `None` leaves it as it is.
    pub mode: Option<BootMode>,
}

impl BootOverride {
    /// Network boot, with the given persistence, mode unchanged.
    pub const fn network(persistence: BootPersistence) -> Self {
        Self {
            device: BootDevice::Network,
            persistence,
            mode: None,
        }
    }

    /// Disk boot, with the given persistence, mode unchanged.
    pub const fn disk(persistence: BootPersistence) -> Self {
        Self {
            device: BootDevice::Disk,
            persistence,
            mode: None,
        }
    }
}

/// What a probe learnt about a BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// The power state seen.
    pub state: PowerState,
    /// Facts the driver found (vendor, firmware, reset types offered...).
    pub details: BTreeMap<String, String>,
}

/// A power driver bound to one machine's parameters.
///
/// Drivers do one thing per call and report what happened; the
/// [`Executor`](crate::Executor) owns retries, verification, timeouts and
/// concurrency. Errors must say whether they are worth retrying (see
/// [`PowerError::is_retryable`]). Methods take `&self`: a driver holding a
/// session (Redfish, IPMI, an interactive `virsh`) guards it inside.
///
/// Optional capabilities have defaults that refuse with
/// [`PowerError::Unsupported`]; a driver that implements one says so in its
/// [`DriverDescriptor::capabilities`].
#[async_trait]
pub trait PowerDriver: Send + Sync {
    /// The driver's description.
    fn descriptor(&self) -> &'static DriverDescriptor;

    /// Switches the machine on. Must not cycle a machine that is on.
    async fn power_on(&self) -> Result<(), PowerError>;

    /// Switches the machine off, hard or soft.
    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError>;

    /// Power-cycles (resets) the machine. The default switches it off hard,
    /// then on.
    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.power_off(OffMode::Hard).await?;
        self.power_on().await
    }

    /// The machine's power state.
    async fn query(&self) -> Result<PowerState, PowerError>;

    /// Sets the next boot device and returns the override as the BMC
    /// reports it afterwards (which may differ in persistence: some BMCs
    /// only do persistent overrides).
    async fn set_boot_device(&self, boot: BootOverride) -> Result<BootOverride, PowerError> {
        let _ = boot;
        Err(PowerError::Unsupported {
            driver: self.descriptor().name.to_owned(),
            operation: "setting the boot device".to_owned(),
        })
    }

    /// Checks the BMC is reachable and reports what it supports. The
    /// default is a query.
    async fn probe(&self) -> Result<ProbeReport, PowerError> {
        Ok(ProbeReport {
            state: self.query().await?,
            details: BTreeMap::new(),
        })
    }

    /// Ends any session the driver holds (logs out). The default does
    /// nothing.
    async fn close(&self) -> Result<(), PowerError> {
        Ok(())
    }
}

/// Builds drivers of one kind from validated parameters: what a
/// [`Registry`](crate::Registry) holds.
pub trait DriverFactory: Send + Sync {
    /// The description of the drivers this factory builds.
    fn descriptor(&self) -> &'static DriverDescriptor;

    /// A driver for one machine. The parameters have been validated against
    /// [`DriverFactory::descriptor`]; further checks (a URL that does not
    /// parse, a template naming an unknown field) fail with an error naming
    /// the field.
    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError>;
}
