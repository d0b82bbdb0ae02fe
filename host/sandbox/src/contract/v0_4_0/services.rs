//! `services`: granted system services, with every state, startup type and
//! problem the host knows (since 0.4.0).

use super::bindings::medic::plugin::{services as wit, types::Error};

crate::contract::interfaces::services_interface!(since_0_4_0);
