//! medic against the real Linux system: its systemd backend against a real
//! systemd (booted in namespaces of its own by [`namespace`]).
//!
//! Run as root (the suite's CI runs so); elsewhere each test says why it
//! skips.

#![cfg(target_os = "linux")]

mod namespace;
mod services;
