//! Containing redb's panics.
//!
//! redb trusts the bytes it reads: on some damaged pages it panics
//! ("Invalid page type byte", "Malformed allocator state") instead of
//! returning an error. A damaged store must never take a medic process
//! down, so every store operation runs inside [`contain`], which catches
//! the unwind and hands back the panic's message for the caller to turn
//! into [`super::StoreError::Damaged`].
//!
//! The default panic hook would still print "thread panicked at ..." for
//! each of these, which reads like a crash of medic. So the first call of
//! [`contain`] installs, once per process, a hook that wraps whatever hook
//! was set before: a thread-local counter says whether the thread is inside
//! [`contain`]; while it is, the panic is expected and the wrapped hook is
//! not called; on any other thread, or outside, it is called as before.
//! A hook installed later by someone else that wraps the previous one (as
//! hooks do) keeps this behaviour.
//!
//! A panic of medic's own code inside a contained operation is reported
//! the same way, as a damaged store: the operations kept inside are small
//! and do little but call redb.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many contained operations this thread is inside.
    static EXPECTING: Cell<u32> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if EXPECTING.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Run `f`; a panic inside it comes back as `Err` with its message, and
/// prints nothing. Each value `f` borrows must be treated as possibly
/// half-updated after a panic: callers use it only to report, or drop it.
pub(crate) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    EXPECTING.with(|e| e.set(e.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    EXPECTING.with(|e| e.set(e.get() - 1));
    result.map_err(|payload| {
        if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a store operation panicked".to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_comes_back_as_its_message_and_nesting_works() {
        assert_eq!(contain(|| 7), Ok(7));
        let outer = contain(|| {
            let inner = contain(|| -> u8 { panic!("Invalid page type byte") });
            assert_eq!(inner, Err("Invalid page type byte".to_string()));
            panic!("malformed {}", "allocator state");
        });
        assert_eq!(outer, Err("malformed allocator state".to_string()));
        assert_eq!(EXPECTING.with(Cell::get), 0);
    }
}
