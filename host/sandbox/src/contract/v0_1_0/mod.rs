//! `medic:plugin@0.1.0`: bindings generated from its frozen WIT, and one
//! small file per interface turning its calls into [`crate::host`] calls
//! and its types into medic's own.

mod config;
mod fs;
mod log;
mod services;
mod state;
mod types;
mod wsus;

mod bindings {
    wasmtime::component::bindgen!({
        world: "remediation",
        path: "../../sdk/wit/medic-plugin/0.1.0",
        imports: { default: trappable },
    });
}

/// The contract version these bindings are for.
pub const VERSION: &str = "0.1.0";

crate::contract::interfaces::version_entry_points!();
