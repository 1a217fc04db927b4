//! The machine lifecycle: statuses, the transition table, actions and deadlines.
//!
//! The numbers, names and edges are MAAS's own (clients read `status` as a
//! number), kept here as data so that every status change in the system is
//! checked against one table.
//!
//! Architecture Invariant: no code outside this module decides whether a
//! status change is allowed; the store applies what [`Machine::perform`] and
//! [`Machine::transition`] decided.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::machine::Machine;

/// The status of a node. The discriminant is the number MAAS clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[allow(missing_docs)] // the table in `NodeStatus::ALL` and the labels document them
pub enum NodeStatus {
    New = 0,
    Commissioning = 1,
    FailedCommissioning = 2,
    Missing = 3,
    Ready = 4,
    Reserved = 5,
    Deployed = 6,
    Retired = 7,
    Broken = 8,
    Deploying = 9,
    Allocated = 10,
    FailedDeployment = 11,
    Releasing = 12,
    FailedReleasing = 13,
    DiskErasing = 14,
    FailedDiskErasing = 15,
    RescueMode = 16,
    EnteringRescueMode = 17,
    FailedEnteringRescueMode = 18,
    ExitingRescueMode = 19,
    FailedExitingRescueMode = 20,
    Testing = 21,
    FailedTesting = 22,
}

use NodeStatus::*;

impl NodeStatus {
    /// Every status, in numeric order.
    pub const ALL: [NodeStatus; 23] = [
        New,
        Commissioning,
        FailedCommissioning,
        Missing,
        Ready,
        Reserved,
        Deployed,
        Retired,
        Broken,
        Deploying,
        Allocated,
        FailedDeployment,
        Releasing,
        FailedReleasing,
        DiskErasing,
        FailedDiskErasing,
        RescueMode,
        EnteringRescueMode,
        FailedEnteringRescueMode,
        ExitingRescueMode,
        FailedExitingRescueMode,
        Testing,
        FailedTesting,
    ];

    /// The numeric value clients see in `status`.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The status with this number.
    pub fn from_code(code: i64) -> Option<NodeStatus> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// The upper-case name MAAS uses in code and in `status_name` filters.
    pub const fn name(self) -> &'static str {
        match self {
            New => "NEW",
            Commissioning => "COMMISSIONING",
            FailedCommissioning => "FAILED_COMMISSIONING",
            Missing => "MISSING",
            Ready => "READY",
            Reserved => "RESERVED",
            Deployed => "DEPLOYED",
            Retired => "RETIRED",
            Broken => "BROKEN",
            Deploying => "DEPLOYING",
            Allocated => "ALLOCATED",
            FailedDeployment => "FAILED_DEPLOYMENT",
            Releasing => "RELEASING",
            FailedReleasing => "FAILED_RELEASING",
            DiskErasing => "DISK_ERASING",
            FailedDiskErasing => "FAILED_DISK_ERASING",
            RescueMode => "RESCUE_MODE",
            EnteringRescueMode => "ENTERING_RESCUE_MODE",
            FailedEnteringRescueMode => "FAILED_ENTERING_RESCUE_MODE",
            ExitingRescueMode => "EXITING_RESCUE_MODE",
            FailedExitingRescueMode => "FAILED_EXITING_RESCUE_MODE",
            Testing => "TESTING",
            FailedTesting => "FAILED_TESTING",
        }
    }

    /// The human label (`status_name` in API answers).
    pub const fn label(self) -> &'static str {
        match self {
            New => "New",
            Commissioning => "Commissioning",
            FailedCommissioning => "Failed commissioning",
            Missing => "Missing",
            Ready => "Ready",
            Reserved => "Reserved",
            Deployed => "Deployed",
            Retired => "Retired",
            Broken => "Broken",
            Deploying => "Deploying",
            Allocated => "Allocated",
            FailedDeployment => "Failed deployment",
            Releasing => "Releasing",
            FailedReleasing => "Releasing failed",
            DiskErasing => "Disk erasing",
            FailedDiskErasing => "Failed disk erasing",
            RescueMode => "Rescue mode",
            EnteringRescueMode => "Entering rescue mode",
            FailedEnteringRescueMode => "Failed to enter rescue mode",
            ExitingRescueMode => "Exiting rescue mode",
            FailedExitingRescueMode => "Failed to exit rescue mode",
            Testing => "Testing",
            FailedTesting => "Failed testing",
        }
    }

    /// The failed status an in-progress status moves to when its deadline
    /// passes or the agent reports failure; `None` for statuses that are not
    /// monitored.
    pub const fn failure_status(self) -> Option<NodeStatus> {
        match self {
            Commissioning => Some(FailedCommissioning),
            Deploying => Some(FailedDeployment),
            Releasing => Some(FailedReleasing),
            DiskErasing => Some(FailedDiskErasing),
            EnteringRescueMode => Some(FailedEnteringRescueMode),
            ExitingRescueMode => Some(FailedExitingRescueMode),
            Testing => Some(FailedTesting),
            _ => None,
        }
    }

    /// Whether a deadline watches this status.
    pub const fn is_monitored(self) -> bool {
        self.failure_status().is_some()
    }

    /// Whether a machine in this status network-boots the ephemeral environment.
    pub const fn boots_ephemeral(self) -> bool {
        matches!(
            self,
            New | Commissioning
                | DiskErasing
                | EnteringRescueMode
                | Releasing
                | RescueMode
                | Testing
                | Deploying
        )
    }

    /// Whether `self -> to` is an edge of the transition table.
    pub fn can_transition_to(self, to: NodeStatus) -> bool {
        transition_allowed(Some(self), to)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for NodeStatus {
    type Err = ValidationError;
    /// Accepts the number, the name (any case, `-` or `_`) or the label.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i64>() {
            return NodeStatus::from_code(n)
                .ok_or_else(|| ValidationError::new("status", s, "no status has this number"));
        }
        let norm = t.replace(['-', ' '], "_").to_ascii_uppercase();
        NodeStatus::ALL
            .into_iter()
            .find(|st| st.name() == norm || st.label().eq_ignore_ascii_case(t))
            .ok_or_else(|| ValidationError::new("status", s, "unknown status"))
    }
}

impl Serialize for NodeStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for NodeStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        NodeStatus::from_code(n)
            .ok_or_else(|| serde::de::Error::custom(format!("no node status has number {n}")))
    }
}

/// The transition table (`None` = a record being created). 174 edges.
pub const TRANSITIONS: &[(Option<NodeStatus>, &[NodeStatus])] = &[
    (None, &[Missing, New, Retired]),
    (
        Some(New),
        &[
            Broken,
            Commissioning,
            EnteringRescueMode,
            Missing,
            Ready,
            Retired,
            Testing,
        ],
    ),
    (
        Some(Commissioning),
        &[
            Broken,
            FailedCommissioning,
            Missing,
            New,
            Ready,
            Retired,
            Testing,
        ],
    ),
    (
        Some(FailedCommissioning),
        &[
            Broken,
            Commissioning,
            EnteringRescueMode,
            Missing,
            Retired,
            Testing,
        ],
    ),
    (
        Some(Ready),
        &[
            Allocated,
            Broken,
            Commissioning,
            EnteringRescueMode,
            Missing,
            Reserved,
            Retired,
            Testing,
        ],
    ),
    (
        Some(Reserved),
        &[
            Allocated,
            Broken,
            DiskErasing,
            EnteringRescueMode,
            Missing,
            Ready,
            Releasing,
            Retired,
            Testing,
        ],
    ),
    (
        Some(Allocated),
        &[
            Broken,
            Deploying,
            DiskErasing,
            EnteringRescueMode,
            Missing,
            Ready,
            Releasing,
            Retired,
            Testing,
        ],
    ),
    (
        Some(Releasing),
        &[
            Allocated,
            Broken,
            Deployed,
            FailedDeployment,
            FailedDiskErasing,
            FailedReleasing,
            Missing,
            New,
            Ready,
            Reserved,
        ],
    ),
    (
        Some(Deploying),
        &[
            Allocated,
            Broken,
            Deployed,
            DiskErasing,
            FailedDeployment,
            Missing,
            Ready,
            Releasing,
        ],
    ),
    (
        Some(FailedDeployment),
        &[
            Allocated,
            Broken,
            DiskErasing,
            EnteringRescueMode,
            Missing,
            Ready,
            Releasing,
            Testing,
        ],
    ),
    (
        Some(Deployed),
        &[
            Allocated,
            Broken,
            DiskErasing,
            EnteringRescueMode,
            Missing,
            Ready,
            Releasing,
            Testing,
        ],
    ),
    (
        Some(Missing),
        &[
            Allocated,
            Broken,
            Commissioning,
            EnteringRescueMode,
            New,
            Ready,
            Testing,
        ],
    ),
    (
        Some(Retired),
        &[Broken, EnteringRescueMode, Missing, New, Ready, Testing],
    ),
    (
        Some(Broken),
        &[
            Commissioning,
            Deployed,
            DiskErasing,
            EnteringRescueMode,
            Ready,
            Releasing,
            Testing,
        ],
    ),
    (
        Some(FailedReleasing),
        &[Broken, DiskErasing, Ready, Releasing, Testing],
    ),
    (
        Some(DiskErasing),
        &[Broken, DiskErasing, FailedDiskErasing, Ready, Releasing],
    ),
    (
        Some(FailedDiskErasing),
        &[
            Allocated,
            Broken,
            DiskErasing,
            EnteringRescueMode,
            Ready,
            Releasing,
            Testing,
        ],
    ),
    (
        Some(EnteringRescueMode),
        &[
            Broken,
            Deployed,
            ExitingRescueMode,
            FailedEnteringRescueMode,
            Ready,
            RescueMode,
        ],
    ),
    (
        Some(FailedEnteringRescueMode),
        &[Broken, EnteringRescueMode, ExitingRescueMode, Testing],
    ),
    (Some(RescueMode), &[Broken, ExitingRescueMode, Testing]),
    (
        Some(ExitingRescueMode),
        &[
            Allocated,
            Broken,
            Deployed,
            FailedCommissioning,
            FailedDeployment,
            FailedDiskErasing,
            FailedEnteringRescueMode,
            FailedExitingRescueMode,
            FailedReleasing,
            FailedTesting,
            Missing,
            New,
            Ready,
            RescueMode,
            Reserved,
            Retired,
        ],
    ),
    (
        Some(FailedExitingRescueMode),
        &[Broken, ExitingRescueMode, Testing],
    ),
    (
        Some(Testing),
        &[
            Allocated,
            Broken,
            Commissioning,
            Deployed,
            FailedDeployment,
            FailedDiskErasing,
            FailedEnteringRescueMode,
            FailedExitingRescueMode,
            FailedReleasing,
            FailedTesting,
            Missing,
            New,
            Ready,
            Reserved,
            Retired,
        ],
    ),
    (
        Some(FailedTesting),
        &[
            Broken,
            Commissioning,
            Deployed,
            EnteringRescueMode,
            Missing,
            Ready,
            Testing,
        ],
    ),
];

/// Whether `from -> to` is in [`TRANSITIONS`].
pub fn transition_allowed(from: Option<NodeStatus>, to: NodeStatus) -> bool {
    TRANSITIONS
        .iter()
        .any(|(f, tos)| *f == from && tos.contains(&to))
}

/// Who may run an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionPermission {
    /// Administrators only.
    Admin,
    /// The machine's owner or an administrator.
    Owner,
    /// Any authenticated user.
    Anyone,
}

/// Who is acting: a user, or the system itself (workflows, deadlines, agents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A user of the API.
    User {
        /// The username.
        username: String,
        /// Whether the user is an administrator.
        is_admin: bool,
    },
    /// The controller itself.
    System,
}

impl Actor {
    /// A user actor.
    pub fn user(username: impl Into<String>, is_admin: bool) -> Self {
        Actor::User {
            username: username.into(),
            is_admin,
        }
    }

    /// The username, if a user acts.
    pub fn username(&self) -> Option<&str> {
        match self {
            Actor::User { username, .. } => Some(username),
            Actor::System => None,
        }
    }

    /// Administrators and the system have every permission.
    pub fn is_admin(&self) -> bool {
        match self {
            Actor::User { is_admin, .. } => *is_admin,
            Actor::System => true,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User { username, .. } => f.write_str(username),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Which statuses an action is allowed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedStatuses {
    /// Every status.
    All,
    /// Every status no deadline watches (MAAS's `NON_MONITORED_STATUSES`).
    NotMonitored,
    /// Exactly these.
    Only(&'static [NodeStatus]),
}

impl AllowedStatuses {
    /// Whether `status` is allowed.
    pub fn contains(self, status: NodeStatus) -> bool {
        match self {
            AllowedStatuses::All => true,
            AllowedStatuses::NotMonitored => !status.is_monitored(),
            AllowedStatuses::Only(list) => list.contains(&status),
        }
    }
}

/// An action a user (or the system) runs on a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // names follow MAAS's node actions
pub enum Action {
    Delete,
    SetZone,
    SetPool,
    Commission,
    Test,
    Abort,
    Acquire,
    Deploy,
    On,
    Off,
    Release,
    MarkBroken,
    MarkFixed,
    Lock,
    Unlock,
    OverrideFailedTesting,
    RescueMode,
    ExitRescueMode,
    Tag,
    Untag,
    Clone,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 21] = [
        Action::Delete,
        Action::SetZone,
        Action::SetPool,
        Action::Commission,
        Action::Test,
        Action::Abort,
        Action::Acquire,
        Action::Deploy,
        Action::On,
        Action::Off,
        Action::Release,
        Action::MarkBroken,
        Action::MarkFixed,
        Action::Lock,
        Action::Unlock,
        Action::OverrideFailedTesting,
        Action::RescueMode,
        Action::ExitRescueMode,
        Action::Tag,
        Action::Untag,
        Action::Clone,
    ];

    /// MAAS's name of the action (`mark-broken`).
    pub const fn name(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::SetZone => "set-zone",
            Action::SetPool => "set-pool",
            Action::Commission => "commission",
            Action::Test => "test",
            Action::Abort => "abort",
            Action::Acquire => "acquire",
            Action::Deploy => "deploy",
            Action::On => "on",
            Action::Off => "off",
            Action::Release => "release",
            Action::MarkBroken => "mark-broken",
            Action::MarkFixed => "mark-fixed",
            Action::Lock => "lock",
            Action::Unlock => "unlock",
            Action::OverrideFailedTesting => "override-failed-testing",
            Action::RescueMode => "rescue-mode",
            Action::ExitRescueMode => "exit-rescue-mode",
            Action::Tag => "tag",
            Action::Untag => "untag",
            Action::Clone => "clone",
        }
    }

    /// The statuses the action is allowed in.
    pub const fn allowed_statuses(self) -> AllowedStatuses {
        use AllowedStatuses::{All, NotMonitored, Only};
        match self {
            Action::Delete
            | Action::SetZone
            | Action::SetPool
            | Action::Unlock
            | Action::Tag
            | Action::Untag
            | Action::Clone => All,
            Action::Commission => Only(&[New, FailedCommissioning, Ready, Broken]),
            Action::Test => Only(&[
                FailedCommissioning,
                New,
                Ready,
                Reserved,
                Allocated,
                FailedDeployment,
                Deployed,
                Missing,
                Retired,
                Broken,
                RescueMode,
                FailedReleasing,
                FailedDiskErasing,
                FailedEnteringRescueMode,
                FailedExitingRescueMode,
                FailedTesting,
            ]),
            Action::Abort => Only(&[Commissioning, DiskErasing, Deploying, Testing]),
            Action::Acquire => Only(&[Ready]),
            Action::Deploy => Only(&[Ready, Allocated]),
            Action::On => Only(&[Deploying, Deployed, Broken]),
            Action::Off => NotMonitored,
            Action::Release => Only(&[
                Allocated,
                Deployed,
                Deploying,
                FailedDeployment,
                FailedReleasing,
                FailedDiskErasing,
            ]),
            Action::MarkBroken => Only(&[
                New,
                Commissioning,
                Ready,
                Allocated,
                Releasing,
                Deploying,
                Deployed,
                DiskErasing,
                Testing,
            ]),
            Action::MarkFixed => Only(&[Broken]),
            Action::Lock => Only(&[Deployed, Deploying]),
            Action::OverrideFailedTesting => Only(&[FailedTesting]),
            Action::RescueMode => Only(&[
                New,
                FailedCommissioning,
                Ready,
                Reserved,
                Allocated,
                FailedDeployment,
                Deployed,
                Missing,
                Retired,
                Broken,
                FailedDiskErasing,
                FailedEnteringRescueMode,
                FailedExitingRescueMode,
                FailedTesting,
            ]),
            Action::ExitRescueMode => Only(&[
                RescueMode,
                EnteringRescueMode,
                FailedEnteringRescueMode,
                FailedExitingRescueMode,
            ]),
        }
    }

    /// Who may run the action (MAAS's node-action permissions: `admin`,
    /// `edit`/`lock` = owner or admin, `view` = anyone).
    pub const fn permission(self) -> ActionPermission {
        match self {
            Action::Acquire => ActionPermission::Anyone,
            Action::Deploy
            | Action::On
            | Action::Off
            | Action::Release
            | Action::MarkBroken
            | Action::Lock
            | Action::Unlock => ActionPermission::Owner,
            Action::Delete
            | Action::SetZone
            | Action::SetPool
            | Action::Commission
            | Action::Test
            | Action::Abort
            | Action::MarkFixed
            | Action::OverrideFailedTesting
            | Action::RescueMode
            | Action::ExitRescueMode
            | Action::Tag
            | Action::Untag
            | Action::Clone => ActionPermission::Admin,
        }
    }

    /// Whether the action may run on a locked machine. A lock protects a
    /// deployed machine from anything that would change or interrupt it.
    pub const fn allowed_when_locked(self) -> bool {
        matches!(
            self,
            Action::Unlock | Action::Tag | Action::Untag | Action::Clone | Action::On
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = ValidationError;
    /// Accepts `mark-broken`, `mark_broken` and the API op names `power_on` / `power_off`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().replace('_', "-").to_ascii_lowercase();
        let norm = match norm.as_str() {
            "power-on" => "on",
            "power-off" => "off",
            "allocate" => "acquire",
            other => other,
        };
        Action::ALL
            .into_iter()
            .find(|a| a.name() == norm)
            .ok_or_else(|| ValidationError::new("action", s, "unknown action"))
    }
}

/// Why a lifecycle change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The action is not allowed in the machine's current status.
    #[error("action '{action}' is not allowed when the machine is {status} (status {code})", code = status.code())]
    ActionNotAllowed {
        /// The refused action.
        action: Action,
        /// The machine's status.
        status: NodeStatus,
    },
    /// The actor may not run this action on this machine.
    #[error("{actor} may not run '{action}' on this machine: {required}")]
    PermissionDenied {
        /// The refused action.
        action: Action,
        /// Who tried.
        actor: String,
        /// What would be needed.
        required: &'static str,
    },
    /// The machine is locked.
    #[error("action '{action}' is not allowed: the machine is locked")]
    Locked {
        /// The refused action.
        action: Action,
    },
    /// The status change is not an edge of the transition table.
    #[error("no transition from {from} to {to}", from = from.map_or("(new)", NodeStatus::label))]
    InvalidTransition {
        /// Where the machine is (`None` for a new record).
        from: Option<NodeStatus>,
        /// Where it was asked to go.
        to: NodeStatus,
    },
}

/// How long each in-progress status may last before it fails.
///
/// Defaults follow MAAS's monitored-status timeouts; `DiskErasing` gets an
/// hour because even a quick erase of many disks outlasts MAAS's release timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlinePolicy {
    /// Commissioning.
    pub commissioning: Duration,
    /// Deploying.
    pub deploying: Duration,
    /// Releasing.
    pub releasing: Duration,
    /// Disk erasing.
    pub disk_erasing: Duration,
    /// Entering rescue mode.
    pub entering_rescue_mode: Duration,
    /// Exiting rescue mode.
    pub exiting_rescue_mode: Duration,
    /// Testing.
    pub testing: Duration,
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        DeadlinePolicy {
            commissioning: min(20),
            deploying: min(40),
            releasing: min(5),
            disk_erasing: min(60),
            entering_rescue_mode: min(20),
            exiting_rescue_mode: min(5),
            testing: min(20),
        }
    }
}

impl DeadlinePolicy {
    /// The time allowed in `status`, if a deadline watches it.
    pub fn timeout(&self, status: NodeStatus) -> Option<Duration> {
        Some(match status {
            Commissioning => self.commissioning,
            Deploying => self.deploying,
            Releasing => self.releasing,
            DiskErasing => self.disk_erasing,
            EnteringRescueMode => self.entering_rescue_mode,
            ExitingRescueMode => self.exiting_rescue_mode,
            Testing => self.testing,
            _ => return None,
        })
    }

    /// The deadline for entering `status` at `now`.
    pub fn deadline(&self, status: NodeStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.timeout(status)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d)
    }
}

/// One status change, as recorded in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// Before.
    pub from: NodeStatus,
    /// After.
    pub to: NodeStatus,
}

/// Options of actions that take them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionOptions {
    /// Release: erase the disks first (goes through `DiskErasing`).
    pub erase: bool,
    /// Mark-broken: the reason, kept as the machine's error description.
    pub comment: Option<String>,
}

impl Machine {
    /// Runs `action` on this machine: checks status, permission and lock, and
    /// applies its effect (status edges, owner, lock, deadline), each edge
    /// checked against [`TRANSITIONS`]. On error the machine is unchanged.
    ///
    /// Actions without a status effect (delete, set-zone, tag...) are checked
    /// here and carried out by the caller.
    pub fn perform(
        &mut self,
        action: Action,
        actor: &Actor,
        options: &ActionOptions,
        now: DateTime<Utc>,
        policy: &DeadlinePolicy,
    ) -> Result<Vec<StatusChange>, LifecycleError> {
        self.check_action(action, actor)?;
        let mut next = self.clone();
        let mut changes = Vec::new();
        match action {
            Action::Commission => next.enter(Commissioning, now, policy, &mut changes)?,
            Action::Test => next.enter(Testing, now, policy, &mut changes)?,
            Action::Abort => {
                let target = match self.status {
                    Deploying => Allocated,
                    DiskErasing => FailedDiskErasing,
                    // Commissioning and testing go back to where they started.
                    _ => self
                        .previous_status
                        .filter(|p| self.status.can_transition_to(*p))
                        .unwrap_or(if self.status == Commissioning {
                            New
                        } else {
                            FailedTesting
                        }),
                };
                next.enter(target, now, policy, &mut changes)?;
            }
            Action::Acquire => {
                next.enter(Allocated, now, policy, &mut changes)?;
                next.owner = actor.username().map(str::to_owned);
            }
            Action::Deploy => {
                if self.status == Ready {
                    next.enter(Allocated, now, policy, &mut changes)?;
                    next.owner = actor.username().map(str::to_owned);
                }
                next.enter(Deploying, now, policy, &mut changes)?;
            }
            Action::Release => {
                let target = if options.erase {
                    DiskErasing
                } else {
                    Releasing
                };
                next.enter(target, now, policy, &mut changes)?;
            }
            Action::MarkBroken => {
                next.enter(Broken, now, policy, &mut changes)?;
                next.error_description = options.comment.clone().unwrap_or_default();
            }
            Action::MarkFixed | Action::OverrideFailedTesting => {
                let target = if self.previous_status == Some(Deployed) {
                    Deployed
                } else {
                    Ready
                };
                next.enter(target, now, policy, &mut changes)?;
                next.error_description.clear();
            }
            Action::RescueMode => next.enter(EnteringRescueMode, now, policy, &mut changes)?,
            Action::ExitRescueMode => next.enter(ExitingRescueMode, now, policy, &mut changes)?,
            Action::Lock => next.locked = true,
            Action::Unlock => next.locked = false,
            Action::Delete
            | Action::SetZone
            | Action::SetPool
            | Action::On
            | Action::Off
            | Action::Tag
            | Action::Untag
            | Action::Clone => {}
        }
        *self = next;
        Ok(changes)
    }

    /// Checks that `actor` may run `action` now, without changing anything.
    pub fn check_action(&self, action: Action, actor: &Actor) -> Result<(), LifecycleError> {
        if !action.allowed_statuses().contains(self.status) {
            return Err(LifecycleError::ActionNotAllowed {
                action,
                status: self.status,
            });
        }
        let permitted = match action.permission() {
            ActionPermission::Anyone => true,
            ActionPermission::Admin => actor.is_admin(),
            ActionPermission::Owner => {
                actor.is_admin()
                    || (self.owner.is_some() && self.owner.as_deref() == actor.username())
                    // Deploying a Ready machine acquires it first.
                    || (action == Action::Deploy && self.status == Ready && self.owner.is_none())
            }
        };
        if !permitted {
            let required = match action.permission() {
                ActionPermission::Admin => "administrators only",
                _ => "the owner or an administrator",
            };
            return Err(LifecycleError::PermissionDenied {
                action,
                actor: actor.to_string(),
                required,
            });
        }
        if self.locked && !action.allowed_when_locked() {
            return Err(LifecycleError::Locked { action });
        }
        Ok(())
    }

    /// Moves the machine to `to` on behalf of a workflow (commissioning done,
    /// deploy finished, agent failure...), checked against [`TRANSITIONS`].
    /// Entering `Ready` or `New` clears the owner (by any path), as a finished
    /// release does.
    pub fn transition(
        &mut self,
        to: NodeStatus,
        now: DateTime<Utc>,
        policy: &DeadlinePolicy,
    ) -> Result<StatusChange, LifecycleError> {
        let mut changes = Vec::with_capacity(1);
        self.enter(to, now, policy, &mut changes)?;
        Ok(changes[0])
    }

    /// If the machine's deadline has passed, moves it to the failed status of
    /// its in-progress status and returns the change.
    pub fn expire(&mut self, now: DateTime<Utc>, policy: &DeadlinePolicy) -> Option<StatusChange> {
        let deadline = self.status_deadline?;
        let failed = self.status.failure_status()?;
        if now < deadline {
            return None;
        }
        let change = self.transition(failed, now, policy).ok()?;
        self.error_description = format!("timed out after {} deadline", change.from.label());
        Some(change)
    }

    fn enter(
        &mut self,
        to: NodeStatus,
        now: DateTime<Utc>,
        policy: &DeadlinePolicy,
        changes: &mut Vec<StatusChange>,
    ) -> Result<(), LifecycleError> {
        let from = self.status;
        if !from.can_transition_to(to) {
            return Err(LifecycleError::InvalidTransition {
                from: Some(from),
                to,
            });
        }
        if !from.is_monitored() {
            self.previous_status = Some(from);
        }
        self.status = to;
        self.status_deadline = policy.deadline(to, now);
        // A machine back in the pool (or back to enlisting) belongs to nobody;
        // otherwise it would be Ready yet unallocatable, or takeable by anyone
        // while still recorded as someone else's.
        if matches!(to, Ready | New) {
            self.owner = None;
        }
        // Every network boot the rack decides on starts with netboot on;
        // only curtin's `netboot_off` before its reboot turns it off.
        if matches!(to, Deploying | Releasing | Commissioning | DiskErasing) {
            self.netboot = true;
        }
        changes.push(StatusChange { from, to });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_23_statuses_numbered_in_order() {
        for (i, st) in NodeStatus::ALL.iter().enumerate() {
            assert_eq!(st.code() as usize, i);
            assert_eq!(NodeStatus::from_code(i as i64), Some(*st));
            assert_eq!(st.name().parse::<NodeStatus>().unwrap(), *st);
            assert_eq!(st.label().parse::<NodeStatus>().unwrap(), *st);
        }
        assert_eq!(NodeStatus::from_code(23), None);
        assert_eq!(NodeStatus::from_code(-1), None);
        assert_eq!(FailedReleasing.label(), "Releasing failed");
    }

    #[test]
    fn the_table_has_174_edges_and_every_status_a_row() {
        let edges: usize = TRANSITIONS.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(edges, 174);
        for st in NodeStatus::ALL {
            assert_eq!(
                TRANSITIONS.iter().filter(|(f, _)| *f == Some(st)).count(),
                1,
                "{st:?}"
            );
        }
    }

    #[test]
    fn failure_mapping_matches_the_spec() {
        let monitored: Vec<_> = NodeStatus::ALL
            .into_iter()
            .filter(|s| s.is_monitored())
            .collect();
        assert_eq!(
            monitored,
            [
                Commissioning,
                Deploying,
                Releasing,
                DiskErasing,
                EnteringRescueMode,
                ExitingRescueMode,
                Testing
            ]
        );
        for st in monitored {
            let failed = st.failure_status().unwrap();
            assert!(
                st.can_transition_to(failed),
                "{st:?} -> {failed:?} must be an edge"
            );
            assert!(DeadlinePolicy::default().timeout(st).is_some());
        }
    }

    #[test]
    fn status_serializes_as_its_number() {
        assert_eq!(serde_json::to_string(&Deployed).unwrap(), "6");
        assert_eq!(
            serde_json::from_str::<NodeStatus>("22").unwrap(),
            FailedTesting
        );
        assert!(serde_json::from_str::<NodeStatus>("99").is_err());
    }

    #[test]
    fn actions_parse_from_api_op_names() {
        assert_eq!("power_on".parse::<Action>().unwrap(), Action::On);
        assert_eq!("mark_broken".parse::<Action>().unwrap(), Action::MarkBroken);
        assert_eq!(
            "exit-rescue-mode".parse::<Action>().unwrap(),
            Action::ExitRescueMode
        );
        assert!("explode".parse::<Action>().is_err());
    }
}
