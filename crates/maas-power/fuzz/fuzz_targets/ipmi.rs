//! Any datagram from a BMC: every RMCP / RMCP+ / IPMI parser of the `ipmi`
//! driver must return (an error or a value), never panic; and an
//! authenticated, encrypted packet built around the bytes must parse back
//! to them (both cipher suites' integrity and AES paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_power::drivers::ipmi::wire;

fuzz_target!(|data: &[u8]| {
    wire::parse_everything(data);
});
