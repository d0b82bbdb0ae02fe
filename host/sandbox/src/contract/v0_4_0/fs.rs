//! `fs`: the file system under the granted roots (unchanged since 0.1.0).

use super::bindings::medic::plugin::{fs as wit, types::Error};

crate::contract::interfaces::fs_interface!();
