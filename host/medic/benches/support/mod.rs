//! What the plugin benchmarks share: loading a built component and running
//! it once on a manual event.

use medic_backends::Backends;
use medic_sandbox::EventRecord;
use medic_sandbox::Grants;
use medic_sandbox::Mode;
use medic_sandbox::{Limits, LoadedPlugin, RunReport, RunRequest, Runtime};
use std::path::Path;
use std::sync::Arc;

/// `target/plugins/<name>.wasm`, loaded.
pub fn plugin(runtime: &Runtime, name: &str) -> LoadedPlugin {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins")
        .join(format!("{name}.wasm"));
    runtime
        .load_file(&path)
        .unwrap_or_else(|e| panic!("{e}: build the plugins with `cargo xtask plugins`"))
}

/// Grants from specs such as `wsus-read` or `fs-write=/srv`.
pub fn grants(specs: &[&str]) -> Arc<Grants> {
    let mut grants = Grants::none();
    for spec in specs {
        grants.add_spec(spec).unwrap();
    }
    Arc::new(grants)
}

/// Run `plugin` once in enforce mode.
pub fn run(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    grants: &Arc<Grants>,
    backends: &Backends,
    limits: Limits,
) -> RunReport {
    runtime.run(
        plugin,
        RunRequest {
            run_id: "bench".into(),
            event: EventRecord::manual("bench").completed(),
            mode: Mode::Enforce,
            grants: grants.clone(),
            limits,
            settings: Arc::new(Default::default()),
            backends: backends.clone(),
            state: None,
            own_effects: None,
        },
    )
}
