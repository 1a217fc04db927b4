//! # maas-core
//!
//! The vocabulary of maas-rs, with no I/O: typed ids, the machine and its
//! hardware, the lifecycle state machine of MAAS (23 statuses, 174 allowed
//! transitions, actions and who may run them, deadlines), the network model
//! with IP address management, zones, pools, tags, users and tokens,
//! allocation by constraints, events, and the repository traits that storage
//! backends implement.
//!
//! ```
//! use chrono::Utc;
//! use maas_core::lifecycle::{Action, ActionOptions, Actor, DeadlinePolicy, NodeStatus};
//! use maas_core::machine::Machine;
//! use maas_core::{Architecture, Hostname, SystemId};
//!
//! let now = Utc::now();
//! let mut m = Machine::new(
//!     SystemId::generate(&mut rand::rng()),
//!     Hostname::parse("node-1")?,
//!     Architecture::parse("amd64/generic")?,
//!     now,
//! );
//! m.status = NodeStatus::Ready;
//! let alice = Actor::user("alice", false);
//! let changes = m.perform(Action::Deploy, &alice, &ActionOptions::default(), now, &DeadlinePolicy::default())?;
//! assert_eq!(m.status, NodeStatus::Deploying);
//! assert_eq!(m.owner.as_deref(), Some("alice"));
//! assert_eq!(changes.len(), 2); // Ready -> Allocated -> Deploying
//!
//! // Releasing is fine for the owner; commissioning a deploying machine is not.
//! let err = m.perform(Action::Commission, &Actor::System, &ActionOptions::default(), now, &DeadlinePolicy::default());
//! assert_eq!(err.unwrap_err().to_string(), "action 'commission' is not allowed when the machine is Deploying (status 9)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod account;
pub mod constraints;
pub mod error;
pub mod event;
pub mod ids;
pub mod inventory;
pub mod lifecycle;
pub mod machine;
pub mod network;
pub mod org;
pub mod rack;
pub mod repo;
pub mod script;
pub mod types;

pub use error::ValidationError;
pub use ids::*;
pub use types::{Architecture, DomainName, Hostname, MacAddress};
