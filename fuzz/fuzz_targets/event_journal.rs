//! One line of a JSON-lines event journal (the `event_log` trigger): any
//! line is an event or nothing, never a panic, under filters of every shape.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_agent::triggers::EventFilter;
use medic_agent::triggers::tail::{LineFilter, line_event};
use std::path::Path;
use std::sync::LazyLock;

static FILTERS: LazyLock<Vec<LineFilter>> = LazyLock::new(|| {
    vec![
        LineFilter::EventLog(EventFilter {
            source: None,
            ids: Vec::new(),
            message: None,
        }),
        LineFilter::EventLog(EventFilter {
            source: Some("Windows Server Update Services".into()),
            ids: vec![364, 10021, 10022],
            message: Some(regex::Regex::new("(?i)access is denied|Range protocol").unwrap()),
        }),
        LineFilter::EventLog(EventFilter {
            source: Some(String::new()),
            ids: vec![0, u32::MAX],
            message: Some(regex::Regex::new("^$").unwrap()),
        }),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&which, line)) = data.split_first() else {
        return;
    };
    let line = String::from_utf8_lossy(line);
    let filter = &FILTERS[usize::from(which) % FILTERS.len()];
    let _ = line_event(filter, Path::new("/var/log/events.jsonl"), &line);
});
