//! `log`: messages into the agent's log and the run's record (unchanged
//! since 0.1.0).

use super::bindings::medic::plugin::log as wit;

crate::contract::interfaces::log_interface!();
