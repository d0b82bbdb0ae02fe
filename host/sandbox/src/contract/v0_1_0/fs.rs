//! `fs`: the file system under the granted roots.

use super::bindings::medic::plugin::{fs as wit, types::Error};

crate::contract::interfaces::fs_interface!();
