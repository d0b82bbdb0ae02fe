//! The `log` trigger's matcher: a policy's pattern (the first line of the
//! input) against a log line (the rest); any pair is an event or nothing,
//! never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_agent::policy::Pattern;
use medic_agent::triggers::tail::{LineFilter, line_event};
use std::path::Path;

fuzz_target!(|text: &str| {
    let (pattern, line) = text.split_once('\n').unwrap_or((text, ""));
    // Patterns are taken as a policy takes them; one the policy refuses
    // never reaches the matcher.
    let Ok(pattern) = Pattern::new(pattern) else {
        return;
    };
    let filter = LineFilter::Log(pattern.regex().clone());
    let _ = line_event(&filter, Path::new("/var/log/x.log"), line);
});
