//! How a policy's `[backend]` table becomes the backends plugins act on.
//! The agent knows no backend kind itself: whoever starts it (the `medic`
//! binary) hands it a [`BackendCatalog`] that does.

use crate::policy::{BackendSection, PolicyError};
use medic_backends::Backends;

/// The backend kinds a build of medic offers.
pub trait BackendCatalog: Send + Sync + std::fmt::Debug {
    /// The backends `section` selects, or every problem with it, located
    /// in the policy file.
    fn open(&self, section: &BackendSection) -> Result<Backends, Vec<PolicyError>>;

    /// Every problem with `section`, without opening the backends it
    /// selects where that cannot be done here (a Windows server's, checked
    /// on Linux): what `medic check` asks.
    fn check(&self, section: &BackendSection) -> Vec<PolicyError> {
        self.open(section).err().unwrap_or_default()
    }
}
