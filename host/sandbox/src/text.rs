//! Text from plugins, made safe to keep and to show. Everything a plugin
//! says (log messages, summaries, errors, panics, action fields, what it
//! says about itself, the arguments of its calls) passes through [`clean`]
//! as the host receives it, before it reaches the agent's log, a terminal
//! or the audit journal:
//! - control characters (C0 and C1, DEL) and the Unicode controls that
//!   reorder text on screen are escaped as `\n`, `\r`, `\t` or `\u{..}`,
//!   so no plugin can move a terminal's cursor, clear it, ring it, or start
//!   a line of the agent's log that looks like the agent's own;
//! - each piece is cut at a byte budget (on a character boundary), and the
//!   cut is marked with how much was left out.
//!
//! Budgets, per piece and per run, are the constants below.

/// A log message, a summary, a plugin's error or panic message.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// One string inside a host call's recorded arguments or result.
pub const MAX_ARGUMENT_BYTES: usize = 512;
/// A field of an action, or of what a plugin says about itself.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Whether `c` must not reach a terminal or a log line as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional overrides and isolates, and the marks that
            // change how text around them is ordered.
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
                // Line and paragraph separators start new lines in some viewers.
                | '\u{2028}' | '\u{2029}'
        )
}

fn escape(c: char, out: &mut String) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `text` with unsafe characters escaped, cut to at most about `max_bytes`
/// (plus the marker saying how many bytes of the original were left out).
pub fn clean(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes && !text.chars().any(is_unsafe) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len().min(max_bytes) + 32);
    for (index, c) in text.char_indices() {
        let before = out.len();
        if is_unsafe(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
        if out.len() > max_bytes {
            out.truncate(before);
            out.push_str(&format!("… [cut: {} more bytes]", text.len() - index));
            break;
        }
    }
    out
}

/// [`clean`] in place, for the fields of a record.
pub fn clean_in_place(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes || text.chars().any(is_unsafe) {
        *text = clean(text, max_bytes);
    }
}

/// A host call's arguments with every string cleaned and cut to
/// [`MAX_ARGUMENT_BYTES`], and long arrays cut to their first entries.
pub fn bound_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const MAX_ITEMS: usize = 20;
    match value {
        Value::String(text) => Value::String(clean(&text, MAX_ARGUMENT_BYTES)),
        Value::Array(items) => {
            let total = items.len();
            let mut kept: Vec<Value> = items.into_iter().take(MAX_ITEMS).map(bound_json).collect();
            if total > MAX_ITEMS {
                kept.push(Value::String(format!("... and {} more", total - MAX_ITEMS)));
            }
            Value::Array(kept)
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (clean(&key, MAX_ARGUMENT_BYTES), bound_json(value)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped_and_cannot_start_a_line() {
        let hostile = "ok\x1b[2J\x1b[31mred\x07\rback\x08\n2026-01-01T00:00:00Z  INFO medic: all good\u{202E}txt.exe\u{9b}";
        let cleaned = clean(hostile, MAX_MESSAGE_BYTES);
        assert!(!cleaned.chars().any(is_unsafe), "{cleaned}");
        assert!(!cleaned.contains('\n') && !cleaned.contains('\r'));
        assert_eq!(
            cleaned,
            "ok\\u{1b}[2J\\u{1b}[31mred\\u{7}\\rback\\u{8}\\n2026-01-01T00:00:00Z  INFO medic: all good\\u{202e}txt.exe\\u{9b}"
        );
        assert_eq!(clean("plain text, ünïcode", 100), "plain text, ünïcode");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_how_much_is_missing() {
        let long = "é".repeat(10_000);
        let cut = clean(&long, 101);
        assert!(cut.starts_with(&"é".repeat(50)));
        assert!(cut.ends_with("… [cut: 19900 more bytes]"), "{cut}");
        assert!(cut.len() < 101 + 40);
        // Escapes count against the budget too.
        let escapes = clean(&"\x1b".repeat(1000), 60);
        assert!(escapes.len() < 100, "{escapes}");
        assert!(escapes.contains("[cut: "));
    }

    #[test]
    fn arguments_are_bounded_however_deep() {
        let args = serde_json::json!({
            "path": "a".repeat(1 << 20),
            "ids": (0..1000).map(|i| i.to_string()).collect::<Vec<_>>(),
            "nested": { "x\u{1b}": ["\u{7}".repeat(3)] },
        });
        let bounded = bound_json(args).to_string();
        assert!(bounded.len() < 2_000, "{}", bounded.len());
        assert!(bounded.contains("and 980 more"));
        assert!(!bounded.contains('\u{1b}') && !bounded.contains('\u{7}'));
    }
}
