//! Any datagram: parsing must not panic, and what parses re-encodes to
//! something that parses the same (for requests, errors and acks).
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_tftp::packet::{self, Packet};

fuzz_target!(|data: &[u8]| {
    match Packet::parse(data) {
        Ok(Packet::Ack { block }) => {
            assert_eq!(Packet::parse(&packet::ack(block)), Ok(Packet::Ack { block }));
        }
        Ok(Packet::Oack { options }) => {
            let again = packet::oack(&options);
            assert_eq!(Packet::parse(&again), Ok(Packet::Oack { options }));
        }
        _ => {}
    }
});
