//! End-to-end tests: real components built from the crates in `plugins/`,
//! `examples/plugins/` and `tests/fixtures/plugins/`, run by the real
//! runtime and the real `medic` binary against real temporary folders.

mod agent;
mod cli;
mod crash;
mod docs;
mod example;
mod hostile;
mod journal;
mod projects;
mod sandbox;
mod signing;
mod store;
mod support;
mod tail;
mod wsus;
