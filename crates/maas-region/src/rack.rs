//! How the region reaches a machine's BMC: through the rack controller that
//! can see it. The region only knows this trait; the network rack protocol
//! (the rack issue) and the all-in-one program's in-process rack implement
//! it. [`SimulatedRack`] implements it in memory, like omicron's simulated
//! sled agent, for tests and demos: nothing else here can run a BMC.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use maas_core::SystemId;
use maas_core::machine::{Machine, PowerState};

pub use maas_core::rack::{PowerRequest, RackControl, RackError};

/// No rack connected: every power action fails with [`RackError::NoRack`]
/// (machines with `manual` power never ask).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRack;

#[async_trait]
impl RackControl for NoRack {
    async fn power(&self, machine: &Machine, _: PowerRequest) -> Result<PowerState, RackError> {
        Err(RackError::NoRack(machine.system_id.clone()))
    }
}

/// A rack in memory: power states per machine and the log of requests.
/// Machines whose `power_parameters` has `sim_fail=<action>` fail that
/// action (to test failure paths).
#[derive(Debug, Default)]
pub struct SimulatedRack {
    state: Mutex<HashMap<SystemId, PowerState>>,
    log: Mutex<Vec<(SystemId, PowerRequest)>>,
}

impl SimulatedRack {
    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<(SystemId, PowerRequest)> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl RackControl for SimulatedRack {
    async fn power(
        &self,
        machine: &Machine,
        request: PowerRequest,
    ) -> Result<PowerState, RackError> {
        let id = machine.system_id.clone();
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id.clone(), request));
        let name = match request {
            PowerRequest::On | PowerRequest::Cycle => "on",
            PowerRequest::Off => "off",
            PowerRequest::Query => "query",
        };
        if machine.power_parameters.get("sim_fail") == Some(name) {
            return Err(RackError::Failed {
                system_id: id,
                action: name,
                message: "the simulated BMC refused".into(),
            });
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = state.entry(id).or_insert(PowerState::Off);
        match request {
            PowerRequest::On | PowerRequest::Cycle => *s = PowerState::On,
            PowerRequest::Off => *s = PowerState::Off,
            PowerRequest::Query => {}
        }
        Ok(*s)
    }
}
