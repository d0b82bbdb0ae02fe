//! A plugin's settings, from its `settings` table in the policy (or
//! `--setting` on the command line), typed as they were written.

use std::collections::BTreeMap;

/// One setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    /// An array of strings.
    TextList(Vec<String>),
}

/// Every setting of a plugin, by key.
pub type Settings = BTreeMap<String, SettingValue>;

impl SettingValue {
    /// The value as text, the form contract 0.1.0 hands over: strings as
    /// they are, numbers and booleans as their literal, lists as a JSON
    /// array.
    pub fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Boolean(b) => b.to_string(),
            Self::TextList(items) => serde_json::to_string(items).unwrap_or_default(),
        }
    }
}

impl From<&str> for SettingValue {
    fn from(text: &str) -> Self {
        Self::Text(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_are_those_of_contract_0_1_0() {
        assert_eq!(SettingValue::Integer(30).text(), "30");
        assert_eq!(SettingValue::Boolean(true).text(), "true");
        assert_eq!(
            SettingValue::TextList(vec!["NETWORK SERVICE".into(), "a\"b".into()]).text(),
            r#"["NETWORK SERVICE","a\"b"]"#
        );
    }
}
