//! `types`: events, outcomes (with the follow-up run a plugin may ask
//! for), errors, and capabilities of 0.4.0 (unchanged since 0.3.0).

use super::bindings::medic::plugin::types as wit;

crate::contract::interfaces::types_interface!(since_0_3_0);
crate::contract::interfaces::named_operations_capability!();
