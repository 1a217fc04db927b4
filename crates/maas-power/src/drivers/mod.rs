//! The built-in drivers, one module each, behind cargo features.
//!
//! Each module has the same shape: a `DESCRIPTOR`, a factory that validates
//! what the descriptor cannot (URLs, templates) and a driver.

#[cfg(feature = "manual")]
pub mod manual;
#[cfg(feature = "redfish")]
pub mod redfish;
#[cfg(feature = "virsh")]
pub mod virsh;
#[cfg(feature = "webhook")]
pub mod webhook;

#[cfg(any(feature = "redfish", feature = "webhook"))]
pub(crate) mod http;
