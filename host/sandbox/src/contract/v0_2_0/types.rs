//! `types`: events, outcomes, errors, and capabilities of 0.2.0, where an
//! extension package's operations are named, not listed in the core.

use super::bindings::medic::plugin::types as wit;
use crate::host::grants::Capability;

crate::contract::interfaces::types_interface!(before_0_3_0);

fn capability(asked: wit::Capability) -> Result<Capability, String> {
    Ok(match asked {
        wit::Capability::FsRead => Capability::FsRead,
        wit::Capability::FsWrite => Capability::FsWrite,
        wit::Capability::ServicesRead => Capability::ServicesRead,
        wit::Capability::ServicesControl => Capability::ServicesControl,
        wit::Capability::Operation(name) => match Capability::parse(&name) {
            Some(operation @ Capability::Operation(_)) => operation,
            _ => {
                return Err(format!(
                    "describe() asks for the capability `{name}`, which this agent does not know"
                ));
            }
        },
    })
}
