//! `medic:plugin@0.2.0`, and the extension package `medic:wsus@0.1.0`
//! built on it: bindings generated from their frozen WIT, and one small
//! file per interface turning their calls into [`crate::host`] calls and
//! their types into medic's own. Settings arrive typed; WSUS is its own
//! package, imported only by plugins that use it.

mod config;
mod fs;
mod log;
mod services;
mod state;
mod types;
mod wsus;

use super::{CallError, convert};
use crate::event::{EventRecord, OutcomeRecord};
use crate::host::RunState;
use crate::info::PluginInfo;
use convert::Convert;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        world: "medic:wsus/remediation",
        path: ["../../sdk/wit/medic-plugin/0.2.0", "../../sdk/wit/medic-wsus/0.1.0"],
        imports: { default: trappable },
    });
}

/// The core contract version these bindings are for.
pub const VERSION: &str = "0.2.0";

/// The `medic:wsus` version linked with it.
pub const WSUS_VERSION: &str = "0.1.0";

/// A component built for this version, linked and ready to instantiate.
#[derive(Clone)]
pub struct Pre(bindings::RemediationPre<RunState>);

/// Link this version's interfaces (core and WSUS) into `linker`.
pub fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    bindings::Remediation::add_to_linker::<RunState, HasSelf<RunState>>(linker, |state| state)
}

impl Pre {
    pub fn new(linker: &Linker<RunState>, component: &Component) -> wasmtime::Result<Self> {
        linker
            .instantiate_pre(component)
            .and_then(bindings::RemediationPre::new)
            .map(Self)
    }

    pub fn describe(&self, store: &mut Store<RunState>) -> wasmtime::Result<PluginInfo> {
        let instance = self.0.instantiate(&mut *store)?;
        let info = instance.medic_plugin_plugin().call_describe(store)?;
        types::plugin_info(info).map_err(wasmtime::Error::msg)
    }

    pub fn handle(
        &self,
        store: &mut Store<RunState>,
        event: &EventRecord,
    ) -> Result<Result<OutcomeRecord, String>, CallError> {
        let instance = self
            .0
            .instantiate(&mut *store)
            .map_err(CallError::Instantiate)?;
        let event: bindings::medic::plugin::types::Event = event.clone().convert();
        let outcome = instance
            .medic_plugin_plugin()
            .call_handle(store, &event)
            .map_err(CallError::Trap)?;
        Ok(outcome.map(Convert::convert))
    }
}
