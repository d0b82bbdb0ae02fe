//! Typed access to the plugin's settings from the policy.
//!
//! The host hands settings over as text: strings as they are, numbers and
//! booleans as their literal, arrays and tables as JSON.

use crate::bindings::medic::plugin::config;
use std::str::FromStr;

/// The raw text of a setting, if set.
pub fn get(key: &str) -> Option<String> {
    config::get(key)
}

/// Every setting, sorted by key.
pub fn all() -> Vec<(String, String)> {
    config::all()
}

/// A setting parsed as `T`; `Ok(None)` when unset, `Err` naming the setting
/// when its value does not parse.
pub fn parse<T: FromStr>(key: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    match get(key) {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|e| format!("setting `{key}` = {raw:?}: {e}")),
    }
}

/// A setting parsed as `T`, or `default` when unset.
pub fn parse_or<T: FromStr>(key: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    Ok(parse(key)?.unwrap_or(default))
}

/// A setting that must be present.
pub fn required<T: FromStr>(key: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    parse(key)?
        .ok_or_else(|| format!("setting `{key}` is required; add it to the plugin's settings"))
}

/// A list setting: a JSON array of strings (how the host passes a TOML
/// array), or a single string taken as a one-element list. Empty when unset.
pub fn list(key: &str) -> Result<Vec<String>, String> {
    match get(key) {
        None => Ok(Vec::new()),
        Some(raw) if raw.trim_start().starts_with('[') => parse_string_array(&raw)
            .ok_or_else(|| format!("setting `{key}` must be an array of strings, got {raw}")),
        Some(raw) => Ok(vec![raw]),
    }
}

/// Parse a JSON array of strings without pulling a JSON library into every
/// plugin. Handles the escapes JSON allows.
fn parse_string_array(raw: &str) -> Option<Vec<String>> {
    let mut chars = raw.trim().chars().peekable();
    if chars.next()? != '[' {
        return None;
    }
    let mut items = Vec::new();
    loop {
        while chars.peek()?.is_whitespace() {
            chars.next();
        }
        match chars.next()? {
            ']' if items.is_empty() => return Some(items),
            '"' => {}
            _ => return None,
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => item.push('\n'),
                    't' => item.push('\t'),
                    'r' => item.push('\r'),
                    'b' => item.push('\u{8}'),
                    'f' => item.push('\u{c}'),
                    'u' => {
                        let code: String = (0..4).filter_map(|_| chars.next()).collect();
                        item.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
                    }
                    other => item.push(other),
                },
                c => item.push(c),
            }
        }
        items.push(item);
        while chars.peek()?.is_whitespace() {
            chars.next();
        }
        match chars.next()? {
            ',' => continue,
            ']' => break,
            _ => return None,
        }
    }
    chars.all(char::is_whitespace).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::parse_string_array;

    #[test]
    fn parses_json_string_arrays() {
        assert_eq!(parse_string_array("[]"), Some(vec![]));
        assert_eq!(
            parse_string_array(r#" ["NETWORK SERVICE", "Users" ] "#),
            Some(vec!["NETWORK SERVICE".into(), "Users".into()])
        );
        assert_eq!(
            parse_string_array(r#"["a\"b", "c\\d", "\u0041"]"#),
            Some(vec!["a\"b".into(), "c\\d".into(), "A".into()])
        );
    }

    #[test]
    fn rejects_malformed_arrays() {
        assert_eq!(parse_string_array("[1, 2]"), None);
        assert_eq!(parse_string_array(r#"["a" "b"]"#), None);
        assert_eq!(parse_string_array(r#"["a"] x"#), None);
        assert_eq!(parse_string_array(r#"["a""#), None);
    }
}
