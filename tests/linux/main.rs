//! medic against the real Linux system: its systemd backend against a real
//! systemd, its `journal` trigger against that systemd's journald (booted
//! in namespaces of their own by [`namespace`]), and the Linux example
//! served by medic running as the shipped systemd service.
//!
//! Run as root (the suite's CI runs so); elsewhere each test says why it
//! skips.

#![cfg(target_os = "linux")]

mod bad_days;
mod example;
mod isolation;
mod journal;
mod namespace;
mod odd_units;
mod services;
mod skipping;
mod startup_layers;
