//! The executor: retries, verification, timeouts and concurrency, shared by
//! every driver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::driver::{BootOverride, OffMode, PowerState, ProbeReport};
use crate::error::PowerError;
use crate::registry::BoundDriver;

/// What to do to a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "boot")]
#[non_exhaustive]
pub enum PowerAction {
    /// Switch on (never by cycling: a machine already on is left alone).
    On,
    /// Switch off, hard.
    Off,
    /// Ask the OS to shut down (drivers with `soft_off` only).
    SoftOff,
    /// Power-cycle. A machine seen Off is switched on instead.
    Cycle,
    /// Read the power state.
    Query,
    /// Set the next boot device.
    SetBootDevice(BootOverride),
    /// Check the BMC and report what it supports.
    Probe,
}

impl PowerAction {
    /// The state a successful action leaves the machine in, if any.
    pub fn expected_state(self) -> Option<PowerState> {
        match self {
            PowerAction::On | PowerAction::Cycle => Some(PowerState::On),
            PowerAction::Off | PowerAction::SoftOff => Some(PowerState::Off),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            PowerAction::On => "power on",
            PowerAction::Off => "power off",
            PowerAction::SoftOff => "soft power off",
            PowerAction::Cycle => "power cycle",
            PowerAction::Query => "query",
            PowerAction::SetBootDevice(_) => "set boot device",
            PowerAction::Probe => "probe",
        }
    }
}

impl std::fmt::Display for PowerAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The executor's limits.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Attempts per action, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled each time.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The time one attempt (pre-query, action, verification) may take.
    pub attempt_timeout: Duration,
    /// The time the whole action may take, waiting for locks included.
    pub overall_timeout: Duration,
    /// How long to poll for the expected state after an action.
    pub verify_timeout: Duration,
    /// The interval between verification queries.
    pub verify_interval: Duration,
    /// Actions running at once across all BMCs.
    pub max_concurrent: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(60),
            overall_timeout: Duration::from_secs(240),
            verify_timeout: Duration::from_secs(30),
            verify_interval: Duration::from_millis(500),
            max_concurrent: 64,
        }
    }
}

/// One call the executor made to a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// The attempt it belongs to (from 1).
    pub attempt: u32,
    /// The driver call.
    pub step: Step,
    /// When it started, from the start of the action.
    #[serde(serialize_with = "millis", rename = "at_ms")]
    pub at: Duration,
    /// How long it took.
    #[serde(serialize_with = "millis", rename = "took_ms")]
    pub took: Duration,
    /// What came of it.
    pub outcome: StepOutcome,
}

/// A driver call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A query before acting.
    PreQuery,
    /// `power_on`.
    PowerOn,
    /// `power_off` (hard).
    PowerOff,
    /// `power_off` (soft).
    SoftOff,
    /// `power_cycle`.
    PowerCycle,
    /// A query after acting.
    Verify,
    /// `query` as the action itself.
    Query,
    /// `set_boot_device`.
    SetBootDevice,
    /// `probe`.
    Probe,
}

/// What a step came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
#[non_exhaustive]
pub enum StepOutcome {
    /// Done, nothing to report.
    Done,
    /// A state was read.
    State {
        /// The state.
        state: PowerState,
    },
    /// A boot override was applied and read back.
    Boot {
        /// As read back.
        applied: BootOverride,
    },
    /// It failed.
    Failed {
        /// [`PowerError::kind`].
        kind: &'static str,
        /// The error chain (never secrets).
        message: String,
        /// Whether the executor would retry it.
        retryable: bool,
    },
}

/// The result of an action, with every step taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    /// The action.
    pub action: PowerAction,
    /// The power state at the end (`Unknown` for drivers that cannot tell).
    pub state: PowerState,
    /// True when the machine was already in the wanted state and nothing
    /// was changed.
    pub already: bool,
    /// For `SetBootDevice`: the override as the BMC reports it.
    pub boot: Option<BootOverride>,
    /// For `Probe`: what was found.
    pub probe: Option<ProbeReport>,
    /// Attempts used.
    pub attempts: u32,
    /// Every driver call.
    pub steps: Vec<StepRecord>,
    /// The whole action's time.
    #[serde(serialize_with = "millis", rename = "elapsed_ms")]
    pub elapsed: Duration,
}

/// Why an action failed, with the steps taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// A fatal error: not retried.
    #[error("{action} on {bmc} failed and will not be retried")]
    Fatal {
        /// The action.
        action: PowerAction,
        /// The BMC key.
        bmc: String,
        /// The cause.
        #[source]
        source: PowerError,
        /// The steps taken.
        steps: Vec<StepRecord>,
    },
    /// Every attempt failed with a retryable error.
    #[error("{action} on {bmc} failed after {attempts} attempts")]
    Exhausted {
        /// The action.
        action: PowerAction,
        /// The BMC key.
        bmc: String,
        /// Attempts made.
        attempts: u32,
        /// The last cause.
        #[source]
        last: PowerError,
        /// The steps taken.
        steps: Vec<StepRecord>,
    },
    /// The overall time ran out.
    #[error("{action} on {bmc} did not finish within {after:?}")]
    Timeout {
        /// The action.
        action: PowerAction,
        /// The BMC key.
        bmc: String,
        /// The overall timeout.
        after: Duration,
        /// The steps taken.
        steps: Vec<StepRecord>,
    },
}

impl ExecutorError {
    /// Whether the action may succeed if asked again later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ExecutorError::Fatal { .. })
    }

    /// The steps taken before failing.
    pub fn steps(&self) -> &[StepRecord] {
        match self {
            ExecutorError::Fatal { steps, .. }
            | ExecutorError::Exhausted { steps, .. }
            | ExecutorError::Timeout { steps, .. } => steps,
        }
    }

    /// The driver error behind it, if any.
    pub fn power_error(&self) -> Option<&PowerError> {
        match self {
            ExecutorError::Fatal { source, .. } => Some(source),
            ExecutorError::Exhausted { last, .. } => Some(last),
            ExecutorError::Timeout { .. } => None,
        }
    }
}

/// Runs actions on bound drivers: retries with backoff on retryable errors,
/// stops at once on fatal ones, verifies on/off with queries where the
/// driver is queryable, bounds each attempt and the whole action in time,
/// runs at most one action at a time per BMC and at most
/// [`ExecutorConfig::max_concurrent`] in all.
///
/// Architecture Invariant: `PowerAction::On` never calls `power_cycle`,
/// whatever the machine's state: a BMC glitch that makes a running machine
/// look Unknown must not reboot it.
#[derive(Debug)]
pub struct Executor {
    config: ExecutorConfig,
    locks: StdMutex<HashMap<String, Weak<Mutex<()>>>>,
    limit: Arc<Semaphore>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new(ExecutorConfig::default())
    }
}

impl Executor {
    /// An executor with these limits.
    pub fn new(config: ExecutorConfig) -> Self {
        let limit = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        Self {
            config,
            locks: StdMutex::new(HashMap::new()),
            limit,
        }
    }

    /// The limits.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Runs one action.
    pub async fn run(
        &self,
        bound: &BoundDriver,
        action: PowerAction,
    ) -> Result<ActionReport, ExecutorError> {
        let span = info_span!(
            "power_action",
            driver = bound.descriptor().name,
            bmc = bound.bmc_key(),
            action = action.label()
        );
        let start = Instant::now();
        let deadline = start + self.config.overall_timeout;
        let mut steps = Vec::new();
        let res = tokio::time::timeout_at(
            deadline,
            self.run_locked(bound, action, start, &mut steps)
                .instrument(span.clone()),
        )
        .await;
        let bmc = bound.bmc_key().to_owned();
        match res {
            Ok(Ok((outcome, attempts))) => Ok(ActionReport {
                action,
                state: outcome.state,
                already: outcome.already,
                boot: outcome.boot,
                probe: outcome.probe,
                attempts,
                steps,
                elapsed: start.elapsed(),
            }),
            Ok(Err(Failure::Fatal(source))) => {
                span.in_scope(|| warn!(error = %source.chain(), "power action failed (fatal)"));
                Err(ExecutorError::Fatal {
                    action,
                    bmc,
                    source,
                    steps,
                })
            }
            Ok(Err(Failure::Exhausted(last, attempts))) => {
                span.in_scope(|| warn!(attempts, error = %last.chain(), "power action failed"));
                Err(ExecutorError::Exhausted {
                    action,
                    bmc,
                    attempts,
                    last,
                    steps,
                })
            }
            Err(_) => {
                span.in_scope(|| warn!("power action timed out"));
                Err(ExecutorError::Timeout {
                    action,
                    bmc,
                    after: self.config.overall_timeout,
                    steps,
                })
            }
        }
    }

    fn lock_for(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let l = Arc::new(Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&l));
        l
    }

    async fn run_locked(
        &self,
        bound: &BoundDriver,
        action: PowerAction,
        start: Instant,
        steps: &mut Vec<StepRecord>,
    ) -> Result<(Outcome, u32), Failure> {
        let caps = bound.descriptor().capabilities;
        match action {
            PowerAction::SoftOff if !caps.soft_off => {
                return Err(Failure::Fatal(unsupported(bound, "soft power off")));
            }
            PowerAction::SetBootDevice(_) if !caps.boot_device => {
                return Err(Failure::Fatal(unsupported(
                    bound,
                    "setting the boot device",
                )));
            }
            _ => {}
        }
        let _guard: OwnedMutexGuard<()> = self.lock_for(bound.bmc_key()).lock_owned().await;
        let _permit = self
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Failure::Fatal(unsupported(bound, "actions (executor closed)")))?;
        let max = self.config.max_attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 1;
        loop {
            let res = {
                let mut ctx = Ctx {
                    bound,
                    start,
                    attempt,
                    steps: &mut *steps,
                    config: &self.config,
                };
                match tokio::time::timeout(self.config.attempt_timeout, ctx.attempt(action)).await {
                    Ok(r) => r,
                    Err(_) => Err(PowerError::Timeout {
                        target: bound.bmc_key().to_owned(),
                        operation: action.label().to_owned(),
                        after: self.config.attempt_timeout,
                    }),
                }
            };
            match res {
                Ok(outcome) => return Ok((outcome, attempt)),
                Err(e) if !e.is_retryable() => return Err(Failure::Fatal(e)),
                Err(e) if attempt >= max => return Err(Failure::Exhausted(e, attempt)),
                Err(e) => {
                    warn!(attempt, error = %e.chain(), backoff = ?backoff, "power attempt failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    attempt += 1;
                }
            }
        }
    }
}

fn unsupported(bound: &BoundDriver, operation: &str) -> PowerError {
    PowerError::Unsupported {
        driver: bound.descriptor().name.to_owned(),
        operation: operation.to_owned(),
    }
}

enum Failure {
    Fatal(PowerError),
    Exhausted(PowerError, u32),
}

#[derive(Default)]
struct Outcome {
    state: PowerState,
    already: bool,
    boot: Option<BootOverride>,
    probe: Option<ProbeReport>,
}

struct Ctx<'a> {
    bound: &'a BoundDriver,
    start: Instant,
    attempt: u32,
    steps: &'a mut Vec<StepRecord>,
    config: &'a ExecutorConfig,
}

impl Ctx<'_> {
    fn record<T>(
        &mut self,
        step: Step,
        at: Instant,
        res: &Result<T, PowerError>,
        ok: impl FnOnce(&T) -> StepOutcome,
    ) {
        let outcome = match res {
            Ok(v) => ok(v),
            Err(e) => StepOutcome::Failed {
                kind: e.kind(),
                message: e.chain(),
                retryable: e.is_retryable(),
            },
        };
        debug!(attempt = self.attempt, ?step, ?outcome, "power step");
        self.steps.push(StepRecord {
            attempt: self.attempt,
            step,
            at: at.duration_since(self.start),
            took: at.elapsed(),
            outcome,
        });
    }

    async fn query(&mut self, step: Step) -> Result<PowerState, PowerError> {
        let t = Instant::now();
        let r = self.bound.driver().query().await;
        self.record(step, t, &r, |s| StepOutcome::State { state: *s });
        r
    }

    async fn call(&mut self, step: Step) -> Result<(), PowerError> {
        let t = Instant::now();
        let d = self.bound.driver();
        let r = match step {
            Step::PowerOn => d.power_on().await,
            Step::PowerOff => d.power_off(OffMode::Hard).await,
            Step::SoftOff => d.power_off(OffMode::Soft).await,
            Step::PowerCycle => d.power_cycle().await,
            _ => Ok(()),
        };
        self.record(step, t, &r, |_| StepOutcome::Done);
        r
    }

    /// Polls until the state is `want`; retryable query errors are polled
    /// through, fatal ones end it.
    async fn verify(
        &mut self,
        want: PowerState,
        operation: &str,
    ) -> Result<PowerState, PowerError> {
        let until = Instant::now() + self.config.verify_timeout;
        loop {
            let last = match self.query(Step::Verify).await {
                Ok(s) if s == want => return Ok(s),
                Ok(s) => format!("the state is {} after the action", s.as_str()),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e.chain(),
            };
            if Instant::now() + self.config.verify_interval > until {
                return Err(PowerError::Action {
                    target: self.bound.bmc_key().to_owned(),
                    operation: operation.to_owned(),
                    detail: last,
                });
            }
            tokio::time::sleep(self.config.verify_interval).await;
        }
    }

    async fn attempt(&mut self, action: PowerAction) -> Result<Outcome, PowerError> {
        let queryable = self.bound.descriptor().capabilities.queryable;
        match action {
            PowerAction::Query => {
                let state = self.query(Step::Query).await?;
                Ok(Outcome {
                    state,
                    ..Outcome::default()
                })
            }
            PowerAction::Probe => {
                let t = Instant::now();
                let r = self.bound.driver().probe().await;
                self.record(Step::Probe, t, &r, |p| StepOutcome::State {
                    state: p.state,
                });
                let p = r?;
                Ok(Outcome {
                    state: p.state,
                    probe: Some(p),
                    ..Outcome::default()
                })
            }
            PowerAction::SetBootDevice(boot) => {
                let t = Instant::now();
                let r = self.bound.driver().set_boot_device(boot).await;
                self.record(Step::SetBootDevice, t, &r, |b| StepOutcome::Boot {
                    applied: *b,
                });
                let applied = r?;
                Ok(Outcome {
                    state: PowerState::Unknown,
                    boot: Some(applied),
                    ..Outcome::default()
                })
            }
            PowerAction::On | PowerAction::Off | PowerAction::SoftOff | PowerAction::Cycle => {
                let want = action.expected_state().unwrap_or(PowerState::On);
                let before = if queryable {
                    match self.query(Step::PreQuery).await {
                        Ok(s) => s,
                        // A failed pre-query is not a reason to stop: the
                        // action itself is safe to send (never a cycle for
                        // On), and its own errors are classified.
                        Err(e) if e.is_retryable() => PowerState::Unknown,
                        Err(e) => return Err(e),
                    }
                } else {
                    PowerState::Unknown
                };
                let step = match action {
                    PowerAction::On => Step::PowerOn,
                    PowerAction::Off => Step::PowerOff,
                    PowerAction::SoftOff => Step::SoftOff,
                    // Cycling a machine seen off would only switch it on.
                    _ if before == PowerState::Off => Step::PowerOn,
                    _ => Step::PowerCycle,
                };
                if action != PowerAction::Cycle && before == want {
                    return Ok(Outcome {
                        state: before,
                        already: true,
                        ..Outcome::default()
                    });
                }
                self.call(step).await?;
                let state = if queryable {
                    self.verify(want, action.label()).await?
                } else {
                    PowerState::Unknown
                };
                Ok(Outcome {
                    state,
                    ..Outcome::default()
                })
            }
        }
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
