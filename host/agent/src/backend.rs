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
}
