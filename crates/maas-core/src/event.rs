//! Events: the append-only audit record of what happened to machines.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, SystemId};
use crate::lifecycle::NodeStatus;

/// How serious an event is (MAAS's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum EventLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl EventLevel {
    /// Upper-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventLevel::Debug => "DEBUG",
            EventLevel::Info => "INFO",
            EventLevel::Warning => "WARNING",
            EventLevel::Error => "ERROR",
            EventLevel::Critical => "CRITICAL",
        }
    }

    /// Parses the upper-case name, any case.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "DEBUG" => EventLevel::Debug,
            "INFO" => EventLevel::Info,
            "WARNING" => EventLevel::Warning,
            "ERROR" => EventLevel::Error,
            "CRITICAL" => EventLevel::Critical,
            _ => return None,
        })
    }
}

/// An event to record. The store gives it an id and keeps it forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Level.
    pub level: EventLevel,
    /// Short type (`Action`, `Status change`, `Power`, `Allocated`...).
    pub kind: String,
    /// Who caused it (`None` = the system).
    pub actor: Option<String>,
    /// The machine it concerns.
    pub system_id: Option<SystemId>,
    /// Status before, for status changes.
    pub status_from: Option<NodeStatus>,
    /// Status after, for status changes.
    pub status_to: Option<NodeStatus>,
    /// Human description.
    pub message: String,
}

impl NewEvent {
    /// An INFO event about a machine.
    pub fn machine(
        system_id: &SystemId,
        kind: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        NewEvent {
            level: EventLevel::Info,
            kind: kind.into(),
            actor: None,
            system_id: Some(system_id.clone()),
            status_from: None,
            status_to: None,
            message: message.into(),
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Id, increasing with time.
    pub id: EventId,
    /// When it was recorded.
    pub created: DateTime<Utc>,
    /// What was recorded.
    #[serde(flatten)]
    pub event: NewEvent,
}
