//! Power actions for the region, through maas-power's drivers and executor.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use maas_core::machine::{Machine, PowerState};
use maas_core::rack::{PowerRequest, RackControl, RackError};
use maas_power::{Executor, PowerAction, Registry};

/// Carries out the region's power requests with the drivers of `registry`
/// (retries, verification and concurrency limits are the executor's).
pub struct RackPower {
    registry: Registry,
    executor: Executor,
    actions: AtomicU64,
    failures: AtomicU64,
}

impl RackPower {
    /// Power control with these drivers and limits.
    pub fn new(registry: Registry, executor: Executor) -> Self {
        RackPower {
            registry,
            executor,
            actions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// `(actions, failures)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.actions.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl std::fmt::Debug for RackPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackPower").finish_non_exhaustive()
    }
}

#[async_trait]
impl RackControl for RackPower {
    async fn power(
        &self,
        machine: &Machine,
        request: PowerRequest,
    ) -> Result<PowerState, RackError> {
        let failed = |message: String| RackError::Failed {
            system_id: machine.system_id.clone(),
            action: request.as_str(),
            message,
        };
        let bound = self
            .registry
            .bind_machine(&machine.power_type, &machine.power_parameters)
            .map_err(|e| failed(e.to_string()))?;
        let action = match request {
            PowerRequest::On => PowerAction::On,
            PowerRequest::Cycle => PowerAction::Cycle,
            PowerRequest::Off => PowerAction::Off,
            PowerRequest::Query => PowerAction::Query,
        };
        self.actions.fetch_add(1, Ordering::Relaxed);
        match self.executor.run(&bound, action).await {
            Ok(report) => {
                tracing::info!(
                    system_id = %machine.system_id,
                    action = request.as_str(),
                    state = ?report.state,
                    attempts = report.attempts,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "power action"
                );
                Ok(report.state)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(system_id = %machine.system_id, action = request.as_str(), error = %e, "power action failed");
                Err(failed(e.to_string()))
            }
        }
    }
}
