//! `medic:wsus/wsus@0.3.0`: the local WSUS server, as its own package
//! (unchanged since `medic:wsus@0.2.0`).

use super::bindings::medic::{plugin::types::Error, wsus::wsus as wit};

crate::contract::interfaces::wsus_interface!(since_0_2_0);
