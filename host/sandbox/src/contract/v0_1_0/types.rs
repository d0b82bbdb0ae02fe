//! `types`: events, outcomes, errors, and capabilities of 0.1.0, whose
//! capability list names the WSUS operations in the core package.

use super::bindings::medic::plugin::types as wit;
use crate::host::grants::Capability;
use crate::host::wsus;

crate::contract::interfaces::types_interface!(before_0_3_0);

fn capability(asked: wit::Capability) -> Result<Capability, String> {
    Ok(match asked {
        wit::Capability::FsRead => Capability::FsRead,
        wit::Capability::FsWrite => Capability::FsWrite,
        wit::Capability::ServicesRead => Capability::ServicesRead,
        wit::Capability::ServicesControl => Capability::ServicesControl,
        wit::Capability::WsusRead => Capability::Operation(wsus::READ),
        wit::Capability::WsusUpdates => Capability::Operation(wsus::UPDATES),
        wit::Capability::WsusApprovals => Capability::Operation(wsus::APPROVALS),
        wit::Capability::WsusConfigure => Capability::Operation(wsus::CONFIGURE),
        wit::Capability::WsusSync => Capability::Operation(wsus::SYNC),
    })
}
