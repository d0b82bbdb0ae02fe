//! Durations and sizes as written in policies and on the command line:
//! any text is a value within the named limits or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_agent::units::{MAX_DURATION, MAX_SIZE, parse_duration, parse_size};

fuzz_target!(|text: &str| {
    match parse_duration(text) {
        Ok(duration) => assert!(duration <= MAX_DURATION, "{text:?} gave {duration:?}"),
        Err(message) => assert!(!message.is_empty()),
    }
    match parse_size(text) {
        Ok(bytes) => assert!(bytes as u64 <= MAX_SIZE, "{text:?} gave {bytes}"),
        Err(message) => assert!(!message.is_empty()),
    }
});
