//! One deadline for a whole run, host calls included. Wasm code is stopped
//! by the engine's epoch; a host call checks the deadline before and after
//! it runs and passes what is left to any wait it makes (service control);
//! and the only WASI calls that can block, the monotonic clock's pollables,
//! are replaced by ones that fire at the run's deadline at the latest. A
//! plugin blocked in `poll` therefore wakes at its deadline, and traps as
//! soon as it runs again.

use super::RunState;
use std::future::Future;
use std::pin::Pin;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable};

/// The trap that ends a run whose deadline passed in a host call.
#[derive(Debug, thiserror::Error)]
#[error("the run's deadline passed")]
pub struct DeadlinePassed;

/// The WASI clock interface whose pollables are bounded here. Components
/// built against any 0.2.x version link to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A clock pollable: ready at the earlier of what the plugin asked for
/// and the run's deadline.
struct Wakeup(tokio::time::Instant);

impl Pollable for Wakeup {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(tokio::time::sleep_until(self.0))
    }
}

/// Replace the monotonic clock's `subscribe-*` functions (linked by
/// `wasmtime-wasi` just before) with ones bounded by the run's deadline.
pub fn shadow_clock(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, RunState>, (nanos,): (u64,)| {
            let asked = std::time::Duration::from_nanos(nanos);
            subscribe(store.data_mut(), asked).map(|p| (p,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, RunState>, (when,): (u64,)| {
            let asked = std::time::Duration::from_nanos(when.saturating_sub(clock_now()));
            subscribe(store.data_mut(), asked).map(|p| (p,))
        },
    )?;
    // `now` is replaced too, so that instants mean the same clock here.
    clock.func_wrap(
        "now",
        |_: wasmtime::StoreContextMut<'_, RunState>, (): ()| Ok((clock_now(),)),
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Nanoseconds on the monotonic clock plugins see: since the first time
/// any plugin looked.
fn clock_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn subscribe(
    state: &mut RunState,
    asked: std::time::Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let now = tokio::time::Instant::now();
    // Wake just after the deadline: the engine's next check ends the run
    // as soon as the plugin runs again.
    let deadline =
        tokio::time::Instant::from_std(state.deadline) + std::time::Duration::from_millis(1);
    let at = now
        .checked_add(asked)
        .map_or(deadline, |at| at.min(deadline));
    let wakeup = state.table.push(Wakeup(at))?;
    wasmtime_wasi::p2::subscribe(&mut state.table, wakeup)
}
