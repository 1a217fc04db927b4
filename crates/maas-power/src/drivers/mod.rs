//! The built-in drivers, one module each, behind cargo features.
//!
//! Each module has the same shape: a `DESCRIPTOR`, a factory that validates
//! what the descriptor cannot (URLs, templates) and a driver.

#[cfg(feature = "ipmi")]
pub mod ipmi;
#[cfg(feature = "manual")]
pub mod manual;
#[cfg(feature = "redfish")]
pub mod redfish;
#[cfg(feature = "ucsm")]
pub mod ucsm;
#[cfg(feature = "virsh")]
pub mod virsh;
#[cfg(feature = "webhook")]
pub mod webhook;

#[cfg(any(feature = "redfish", feature = "webhook", feature = "ucsm"))]
pub(crate) mod http;
