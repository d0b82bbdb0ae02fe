//! `services`: granted system services.

use super::bindings::medic::plugin::{services as wit, types::Error};

crate::contract::interfaces::services_interface!(before_0_3_0);
