//! `services`: granted system services (with `failed` and delayed-automatic start since 0.3.0).

use super::bindings::medic::plugin::{services as wit, types::Error};

crate::contract::interfaces::services_interface!(since_0_3_0);
