//! The medic agent: it watches a system, matches what it sees against a
//! policy, and runs sandboxed plugins (through `medic-sandbox`) that
//! diagnose and repair it.
//!
//! The modules, along the path of one event: [`policy`] (the policy file,
//! parsed and checked, every problem at once), [`backend`] (how the policy's
//! `[backend]` table becomes backends: the caller's [`BackendCatalog`]),
//! [`loading`] (the one loading path for start-up, reload, check and
//! approval), [`triggers`] (events from files, logs, journals, schedules
//! and operators), [`dispatch`] (queues, coalescing, limits), [`context`]
//! (what runs share), [`serve`] (the agent serving and reloading),
//! [`audit`] (the embedded store: journal, state, status), [`decisions`]
//! (approving and rejecting plans), [`units`] (durations and sizes as
//! people write them).

pub mod audit;
pub mod backend;
pub mod by_hand;
pub mod context;
pub mod decisions;
pub mod dispatch;
pub mod loading;
pub mod policy;
pub mod serve;
pub mod triggers;
pub mod units;

pub use backend::BackendCatalog;
pub use context::{ActivePlugin, AgentContext};
pub use loading::{AgentError, Checked, Loaded, check, load};
pub use serve::Agent;
