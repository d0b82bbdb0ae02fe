//! The `medic` program: the command line ([`cli`]: arguments, logging
//! set-up, exit codes), the one place that chooses backends from a
//! policy ([`catalog`]), making plugin keys and signatures
//! ([`signing`]), and running as a Windows service ([`service`]). Everything else lives in the library crates:
//! `medic-agent` (policy, triggers, dispatch, audit, serving), `medic-sandbox`
//! (where plugins run), `medic-backends` (the system operations) and
//! `medic-lab` (the simulated WSUS hierarchy).

pub mod catalog;
pub mod cli;
pub mod service;
pub mod signing;
