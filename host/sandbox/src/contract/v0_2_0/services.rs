//! `services`: granted system services (unchanged since 0.1.0).

use super::bindings::medic::plugin::{services as wit, types::Error};

crate::contract::interfaces::services_interface!(before_0_3_0);
