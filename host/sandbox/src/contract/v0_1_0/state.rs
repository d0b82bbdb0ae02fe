//! `state`: the plugin's private key/value store.

use super::bindings::medic::plugin::{state as wit, types::Error};

crate::contract::interfaces::state_interface!();
