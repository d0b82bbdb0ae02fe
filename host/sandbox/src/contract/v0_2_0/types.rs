//! `types`: events, outcomes, errors, and capabilities of 0.2.0, where an
//! extension package's operations are named, not listed in the core.

use super::bindings::medic::plugin::types as wit;

crate::contract::interfaces::types_interface!(before_0_3_0);
crate::contract::interfaces::named_operations_capability!();
