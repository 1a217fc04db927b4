//! The all-in-one `maas` program as a library, so its tests drive the same
//! code the binary runs: [`allinone`] composes a region and a rack in one
//! process, [`demo`] runs the whole provisioning cycle on a simulated fleet,
//! [`client`] speaks the REST API, [`cli`] is the command line over it.

pub mod allinone;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
