//! `config`: the plugin's settings, typed as the policy writes them.

use super::bindings::medic::plugin::config as wit;

crate::contract::interfaces::config_interface!();
