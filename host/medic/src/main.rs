//! The `medic` command: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    give_freed_memory_back_promptly();
    medic::cli::main()
}

/// Have glibc's allocator give back what is freed, rather than keep it.
///
/// By default it keeps a heap per thread (up to 8 per core), raises the
/// size it serves from `mmap` to the largest block freed so far (a plugin
/// component of 12-18 MB, read once, sets it there for good), and keeps up
/// to twice that free at the top of every heap, which `malloc_trim` does
/// not return outside the main one. The agent serving a Python or
/// JavaScript plugin stayed 100+ MiB larger after every reload that
/// compiled one. Fixed thresholds of 1 MiB and a heap per core (two here)
/// return it: 52 and 33 MiB instead of 159 and 130 after the reload that
/// compiled, in the `large_plugins` benchmark, at the price of some 20 ms
/// per reload of such a plugin from the cache (its buffers are mapped
/// afresh each time: 45 -> 64 ms for the Python one). Measured on two
/// cores only. An administrator's own settings (`MALLOC_ARENA_MAX` and the
/// like, or `GLIBC_TUNABLES`) are left as they are.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_freed_memory_back_promptly() {
    let set_by_hand = std::env::vars_os().any(|(name, _)| {
        let name = name.to_string_lossy();
        name == "GLIBC_TUNABLES" || name.starts_with("MALLOC_")
    });
    if set_by_hand {
        return;
    }
    const THRESHOLD: libc::c_int = 1 << 20;
    let heaps = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 64));
    // SAFETY: `mallopt` only sets the allocator's parameters; this runs
    // first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, heaps as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_freed_memory_back_promptly() {}
