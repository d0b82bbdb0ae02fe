//! One line of `journalctl --output=json` (the `journal` trigger): any line
//! is an entry (which then makes an event) or an error, never a panic,
//! whatever its size against the line limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medic_agent::triggers::journal::JournalEntry;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, line)) = data.split_first() else {
        return;
    };
    // Message limits from tiny to roomy, so that cutting is exercised.
    let max_line = 1usize << (limit % 17);
    if let Ok(entry) = JournalEntry::parse(line, max_line) {
        let _ = entry.record();
    }
});
