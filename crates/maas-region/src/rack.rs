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

/// A power action the region asks a rack to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PowerRequest {
    /// Switch on (the machine network-boots).
    On,
    /// Switch off (hard).
    Off,
    /// Read the state.
    Query,
}

/// Why a rack could not carry out a power action.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RackError {
    /// No rack controller reaches this machine's BMC.
    #[error("no rack controller can reach the BMC of {0}")]
    NoRack(SystemId),
    /// The rack tried and the BMC or its driver failed.
    #[error("power {action} on {system_id} failed: {message}")]
    Failed {
        /// The machine.
        system_id: SystemId,
        /// The action.
        action: &'static str,
        /// What the rack reported.
        message: String,
    },
}

/// Power control through rack controllers.
#[async_trait]
pub trait RackControl: Send + Sync {
    /// Carries out `request` on `machine`'s BMC (its `power_type` and
    /// `power_parameters` name the driver and its settings) and returns the
    /// power state afterwards.
    async fn power(
        &self,
        machine: &Machine,
        request: PowerRequest,
    ) -> Result<PowerState, RackError>;
}

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
            PowerRequest::On => "on",
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
            PowerRequest::On => *s = PowerState::On,
            PowerRequest::Off => *s = PowerState::Off,
            PowerRequest::Query => {}
        }
        Ok(*s)
    }
}
