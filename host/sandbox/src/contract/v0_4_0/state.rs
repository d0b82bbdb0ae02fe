//! `state`: the plugin's private key/value store (unchanged since 0.1.0).

use super::bindings::medic::plugin::{state as wit, types::Error};

crate::contract::interfaces::state_interface!();
