//! Typed access to the plugin's settings from the policy.
//!
//! The host hands settings over typed: text, whole numbers, booleans, and
//! arrays of strings; a number with a fraction arrives as its text (parse
//! it with [`parse`]), which keeps float formatting out of every plugin. [`get`] gives any scalar as
//! text, so [`parse`] reads a number written either way (`30` or `"30"`).

use crate::config;
use std::str::FromStr;

pub use config::Value;

/// One setting's typed value, if set.
pub fn value(key: &str) -> Option<Value> {
    config::get(key)
}

/// Every setting, sorted by key.
pub fn all() -> Vec<(String, Value)> {
    config::all()
}

/// A scalar setting as text (a number or boolean as its literal); `None`
/// when unset or a list.
pub fn get(key: &str) -> Option<String> {
    value(key).and_then(scalar_text)
}

/// A scalar value as text; `None` for a list.
fn scalar_text(value: Value) -> Option<String> {
    match value {
        Value::Text(text) => Some(text),
        Value::Integer(n) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::TextList(_) => None,
    }
}

/// A setting parsed as `T`; `Ok(None)` when unset, `Err` naming the setting
/// when its value does not parse (or is a list).
pub fn parse<T: FromStr>(key: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    let Some(value) = value(key) else {
        return Ok(None);
    };
    let raw = scalar_text(value)
        .ok_or_else(|| format!("setting `{key}` is a list; a single value is expected"))?;
    raw.parse()
        .map(Some)
        .map_err(|e| format!("setting `{key}` = {raw:?}: {e}"))
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

/// A list setting: an array of strings, or a single string taken as a
/// one-element list. Empty when unset.
pub fn list(key: &str) -> Result<Vec<String>, String> {
    match value(key) {
        None => Ok(Vec::new()),
        Some(Value::TextList(items)) => Ok(items),
        Some(Value::Text(text)) => Ok(vec![text]),
        Some(other) => Err(format!(
            "setting `{key}` must be an array of strings, got {other:?}"
        )),
    }
}
