//! What changed between two policies, as typed values: which plugins were
//! added, removed or changed (and in what), and whether the `[agent]` or
//! `[backend]` tables changed (which take effect only at a restart, but
//! for the keys trusted, which reach every plugin's [`PluginChange::trust`]).

use super::{PluginPolicy, Policy};

/// What changed in one plugin's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginChange {
    pub component: bool,
    pub triggers: bool,
    /// Mode, grants, limits, rate, flap guard, concurrency or settings.
    pub rules: bool,
    /// The keys trusted for its component, or whether a signature is
    /// required: its component is checked again.
    pub trust: bool,
}

impl PluginChange {
    /// What differs between two versions of a plugin's table, or `None`
    /// when they mean the same (the table's place in the file aside).
    pub fn between(old: &PluginPolicy, new: &PluginPolicy) -> Option<Self> {
        let PluginPolicy {
            name: _,
            component,
            mode,
            triggers,
            grants,
            limits,
            rate,
            flap_guard,
            concurrency,
            settings,
            trust,
            line: _,
        } = new;
        let change = Self {
            component: old.component != *component,
            triggers: old.triggers != *triggers,
            rules: old.mode != *mode
                || old.grants != *grants
                || old.limits != *limits
                || old.rate != *rate
                || old.flap_guard != *flap_guard
                || old.concurrency != *concurrency
                || old.settings != *settings,
            trust: old.trust != *trust,
        };
        (change != Self::default()).then_some(change)
    }
}

/// The differences between an old and a new policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<(String, PluginChange)>,
    /// `[agent]` changed: takes effect at the next restart.
    pub agent: bool,
    /// `[backend]` changed: takes effect at the next restart.
    pub backend: bool,
}

impl PolicyDiff {
    pub fn between(old: &Policy, new: &Policy) -> Self {
        let find =
            |policy: &Policy, name: &str| policy.plugins.iter().find(|p| p.name == name).cloned();
        let mut diff = Self {
            agent: old.agent != new.agent,
            backend: old.backend != new.backend,
            ..Self::default()
        };
        for plugin in &new.plugins {
            match find(old, &plugin.name) {
                None => diff.added.push(plugin.name.clone()),
                Some(before) => {
                    if let Some(change) = PluginChange::between(&before, plugin) {
                        diff.changed.push((plugin.name.clone(), change));
                    }
                }
            }
        }
        diff.removed = old
            .plugins
            .iter()
            .filter(|p| find(new, &p.name).is_none())
            .map(|p| p.name.clone())
            .collect();
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[plugins.a]
component = "/bin/sh"
[[plugins.a.triggers]]
kind = "manual"

[plugins.b]
component = "/bin/sh"
settings = { x = 1 }
[[plugins.b.triggers]]
kind = "every"
interval = "1h"
"#;

    fn policy(text: &str) -> Policy {
        Policy::parse(Path::new("/nowhere/policy.toml"), text).unwrap()
    }

    #[test]
    fn moving_a_table_is_no_change() {
        let moved = r#"
[plugins.b]
component = "/bin/sh"
settings = { x = 1 }
[[plugins.b.triggers]]
kind = "every"
interval = "1h"

[plugins.a]
component = "/bin/sh"
[[plugins.a.triggers]]
kind = "manual"
"#;
        assert_eq!(
            PolicyDiff::between(&policy(BASE), &policy(moved)),
            PolicyDiff::default()
        );
    }

    #[test]
    fn changes_are_told_apart() {
        let changed = BASE
            .replace("interval = \"1h\"", "interval = \"2h\"")
            .replace("x = 1", "x = 2")
            .replace(
                "[plugins.a]\ncomponent = \"/bin/sh\"\n[[plugins.a.triggers]]\nkind = \"manual\"\n",
                "[plugins.c]\ncomponent = \"/bin/sh\"\n[[plugins.c.triggers]]\nkind = \"startup\"\n",
            );
        let diff = PolicyDiff::between(&policy(BASE), &policy(&changed));
        assert_eq!(diff.added, ["c"]);
        assert_eq!(diff.removed, ["a"]);
        assert_eq!(
            diff.changed,
            [(
                "b".to_string(),
                PluginChange {
                    component: false,
                    triggers: true,
                    rules: true,
                    trust: false,
                }
            )]
        );
        assert!(!diff.agent && !diff.backend);
    }

    #[test]
    fn a_change_of_trusted_keys_reaches_the_plugins_it_applies_to() {
        const KEY_A: &str = "RWQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD";
        const KEY_B: &str = "RWRrm/mOAqslUSeNIUT+oyQ0VgZJ13Tiwit3VHTP9owZ1FLE1O3iz0YF";
        let with_keys = |agent: &str, b: &str| {
            BASE.replacen(
                "[plugins.a]",
                &format!("[agent]\ntrusted_keys = [\"{agent}\"]\n\n[plugins.a]"),
                1,
            )
            .replace(
                "settings = { x = 1 }",
                &format!("settings = {{ x = 1 }}\ntrusted_keys = [\"{b}\"]"),
            )
        };
        let before = policy(&with_keys(KEY_A, KEY_B));
        // The agent's key changes: only `a`, which has none of its own.
        let diff = PolicyDiff::between(&before, &policy(&with_keys(KEY_B, KEY_B)));
        assert_eq!(
            diff.changed,
            [(
                "a".to_string(),
                PluginChange {
                    trust: true,
                    ..PluginChange::default()
                }
            )]
        );
        assert!(!diff.agent, "trust is taken at a reload, not at a restart");
        // `b`'s own key changes.
        let diff = PolicyDiff::between(&before, &policy(&with_keys(KEY_A, KEY_A)));
        assert_eq!(diff.changed.len(), 1);
        assert_eq!(diff.changed[0].0, "b");
        // Signatures no longer required for `a`.
        let optional =
            with_keys(KEY_A, KEY_B).replace("[agent]\n", "[agent]\nrequire_signatures = false\n");
        let diff = PolicyDiff::between(&before, &policy(&optional));
        assert_eq!(diff.changed[0].0, "a");
        assert!(diff.changed[0].1.trust);
    }
}
