//! medic: an auto-remediation agent. It watches a system, matches what it
//! sees against a policy, and runs sandboxed WebAssembly plugins that
//! diagnose and repair it.
//!
//! The pieces, one module each: [`contract`] (the versioned plugin
//! interface), [`runtime`] (the sandbox), [`capabilities`] (the host side of
//! the contract, enforcing grants and modes), [`backends`] (the system
//! operations behind it), [`audit`] (the embedded store), [`event`]
//! (events and outcomes as records), [`cli`] (the command line).

pub mod audit;
pub mod backends;
pub mod capabilities;
pub mod cli;
pub mod contract;
pub mod event;
pub mod runtime;
pub mod units;
