//! medic: an auto-remediation agent. It watches a system, matches what it
//! sees against a policy, and runs sandboxed WebAssembly plugins that
//! diagnose and repair it.
//!
//! The pieces, one module each: [`contract`] (the versioned plugin
//! interface), [`runtime`] (the sandbox), [`capabilities`] (the host side of
//! the contract, enforcing grants and modes), [`backends`] (the system
//! operations behind it), [`config`] (the policy), [`triggers`] (events
//! from files, logs, journals, schedules and operators), [`dispatch`]
//! (queues, coalescing, limits), [`agent`] (all of it, serving), [`audit`]
//! (the embedded store: journal and state), [`event`] (events and outcomes
//! as records), [`cli`] (the command line).

pub mod agent;
pub mod audit;
pub mod backends;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod event;
pub mod lab;
pub mod runtime;
pub mod triggers;
pub mod units;
