//! The component loader: any bytes are a loaded plugin or a `LoadError`,
//! never a panic, a hang or unbounded memory. `describe()` of anything that
//! does load runs under a small memory cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_sandbox::{Runtime, RuntimeConfig};
use std::sync::LazyLock;

/// The memory a component may use while it describes itself.
const MEMORY_CAP: usize = 2 << 20;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    Runtime::new(&RuntimeConfig {
        cache_dir: None,
        max_instances: 4,
    })
    .expect("the engine starts")
});

fuzz_target!(|bytes: &[u8]| {
    if let Err(e) = RUNTIME.load_bytes_within(bytes, "fuzz.wasm", MEMORY_CAP) {
        assert!(!e.to_string().is_empty());
    }
});
