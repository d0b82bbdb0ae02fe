//! What the plugin benchmarks share: loading a built component and running
//! it once on a manual event.

use medic_backends::Backends;
use medic_sandbox::EventRecord;
use medic_sandbox::Grants;
use medic_sandbox::Mode;
use medic_sandbox::PluginState;
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

/// A plugin state store in a new embedded store under `dir`, for plugins
/// that keep state between runs.
#[allow(
    dead_code,
    reason = "the benchmarks of stateless plugins do not use it"
)]
pub fn state(dir: &Path) -> Arc<dyn PluginState> {
    let store = medic_agent::audit::Store::open(dir).unwrap();
    Arc::new(medic_agent::audit::state::StateStore::new(store))
}

/// Run `plugin` once in enforce mode, with `state` if it keeps any.
pub fn run(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    grants: &Arc<Grants>,
    backends: &Backends,
    limits: Limits,
    state: Option<Arc<dyn PluginState>>,
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
            state,
            own_effects: None,
        },
    )
}
