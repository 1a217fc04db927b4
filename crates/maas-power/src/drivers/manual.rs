//! `manual`: a machine whose power someone switches by hand. Nothing is
//! called; the state is always Unknown.

use async_trait::async_trait;
use tracing::info;

use crate::descriptor::{Capabilities, DriverDescriptor, PowerParams};
use crate::driver::{DriverFactory, OffMode, PowerDriver, PowerState};
use crate::error::PowerError;

/// The `manual` driver's description: no settings, not queryable.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "manual",
    description: "Manual: power is switched by a person; nothing is called",
    capabilities: Capabilities {
        queryable: false,
        boot_device: false,
        soft_off: false,
        chassis: false,
        probe: false,
    },
    settings: &[],
};

/// Builds [`ManualDriver`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManualFactory;

impl DriverFactory for ManualFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, _params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(ManualDriver))
    }
}

/// Logs what a person should do, and calls nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct ManualDriver;

#[async_trait]
impl PowerDriver for ManualDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        info!("manual power: switch the machine on by hand");
        Ok(())
    }

    async fn power_off(&self, _mode: OffMode) -> Result<(), PowerError> {
        info!("manual power: switch the machine off by hand");
        Ok(())
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        info!("manual power: reset the machine by hand");
        Ok(())
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        Ok(PowerState::Unknown)
    }
}
