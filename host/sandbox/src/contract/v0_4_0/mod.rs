//! `medic:plugin@0.4.0`, and the extension package `medic:wsus@0.3.0`
//! built on it: bindings generated from their frozen WIT, and one small
//! file per interface turning their calls into [`crate::host`] calls and
//! their types into medic's own. New since 0.3.0: services tell apart
//! what a real service manager reports: a `broken` service, the startup
//! types that hold until the next boot, `static`, `indirect` and
//! `generated` units, and why a service failed or is broken (`problem`).

mod config;
mod fs;
mod log;
mod services;
mod state;
mod types;
mod wsus;

mod bindings {
    wasmtime::component::bindgen!({
        world: "medic:wsus/remediation",
        path: ["../../sdk/wit/medic-plugin/0.4.0", "../../sdk/wit/medic-wsus/0.3.0"],
        imports: { default: trappable },
    });
}

/// The core contract version these bindings are for.
pub const VERSION: &str = "0.4.0";

/// The `medic:wsus` version linked with it.
pub const WSUS_VERSION: &str = "0.3.0";

crate::contract::interfaces::version_entry_points!();
