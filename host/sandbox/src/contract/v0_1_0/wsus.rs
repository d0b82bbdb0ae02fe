//! `wsus`: the local WSUS server, in 0.1.0 part of the core package.

use super::bindings::medic::plugin::{types::Error, wsus as wit};

crate::contract::interfaces::wsus_interface!(before_0_2_0);
