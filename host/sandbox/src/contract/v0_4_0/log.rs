//! `log`: messages into the agent's log and the run's record, and the
//! plugin's word that it panicked.

use super::bindings::medic::plugin::log as wit;

crate::contract::interfaces::log_interface!();
