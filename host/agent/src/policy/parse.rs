//! Parsing a policy: TOML text into [`Policy`], every problem collected
//! with its line, column and fix. What the file system says (does a folder
//! or component exist, where does a relative grant lead, what does a key
//! file hold) is asked of a [`Probe`], so the parse itself is pure.

use super::*;
use crate::units::{parse_duration, parse_size};
use medic_sandbox::signature::TrustedKeys;
use medic_sandbox::{Capability, SettingValue, valid_plugin_name};
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};

// ---- raw forms, as serde reads them ----

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    state_dir: Option<Spanned<String>>,
    plugin_dir: Option<Spanned<String>>,
    cache_dir: Option<Spanned<String>>,
    #[serde(default)]
    log_format: LogFormat,
    max_concurrent_runs: Option<Spanned<i64>>,
    queue_capacity: Option<Spanned<i64>>,
    trusted_keys: Option<RawKeys>,
    require_signatures: Option<Spanned<bool>>,
}

/// A `trusted_keys` list: key lines or key files.
type RawKeys = Spanned<Vec<Spanned<String>>>;

type RawBackend = BTreeMap<String, Spanned<toml::Value>>;

/// The largest state quota a policy may give a plugin.
const MAX_STATE_QUOTA_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<Spanned<String>>,
    memory: Option<Spanned<String>>,
    fuel: Option<Spanned<i64>>,
    max_host_calls: Option<Spanned<i64>>,
    state_quota: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    max_runs: Spanned<i64>,
    per: Spanned<String>,
    cooldown: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlapGuard {
    max_mutating_runs: Spanned<i64>,
    within: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    changes: Option<Vec<FileChange>>,
    debounce: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    ids: Option<Spanned<Vec<u32>>>,
    message: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    max_line: Option<Spanned<String>>,
    unit: Option<Spanned<toml::Value>>,
    priority: Option<Spanned<toml::Value>>,
    identifier: Option<Spanned<toml::Value>>,
    directory: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    component: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    triggers: Vec<Spanned<RawTrigger>>,
    #[serde(default)]
    grants: BTreeMap<String, Spanned<Vec<String>>>,
    limits: Option<RawLimits>,
    rate: Option<RawRate>,
    flap_guard: Option<RawFlapGuard>,
    concurrency: Option<Spanned<i64>>,
    #[serde(default)]
    settings: BTreeMap<String, Spanned<toml::Value>>,
    trusted_keys: Option<RawKeys>,
    /// The keys (dotted paths) and tables in arrays left out of the table
    /// for their problems.
    #[serde(skip)]
    left_out: Vec<String>,
}

/// Whether `key`, or something in it, is among the paths `left_out`.
fn left_out(left_out: &[String], key: &str) -> bool {
    left_out
        .iter()
        .any(|p| p == key || p.strip_prefix(key).is_some_and(|r| r.starts_with('.')))
}

/// `[agent]`'s trust, with what a plugin without keys of its own needs to
/// report a signature it requires but cannot check.
struct AgentTrust {
    trust: Trust,
    /// Why signatures are required, for messages.
    why: &'static str,
    /// `[agent]`'s trust had errors already: say nothing more of it.
    reported: bool,
}

/// A plugin table as read, with defaults where a value had a problem, and
/// which of its parts can be relied on.
struct ReadPlugin {
    policy: PluginPolicy,
    /// Its component is named and is a file.
    component_found: bool,
    /// Its grants had no problem.
    grants_read: bool,
    /// The keys its component must be signed with had no problem.
    trust_read: bool,
}

/// Collects errors with positions in one file.
struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    probe: &'a dyn Probe,
    errors: Vec<Problem>,
    /// The plugin table being read: errors found now are that plugin's.
    within: Option<String>,
    /// What [`Collector::section`] left out so far: dotted paths of keys,
    /// and of the arrays tables were left out of.
    left_out: Vec<String>,
}

impl Collector<'_> {
    /// The 1-based line and column (in bytes) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.position(span.start).0
    }

    fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let (line, column) = self.position(span.map_or(self.text.len(), |s| s.start));
        self.errors.push(Problem {
            plugin: self.within.clone(),
            error: PolicyError {
                file: self.file.to_path_buf(),
                line,
                column,
                message: message.into(),
                fix: fix.into(),
            },
        });
    }

    /// Deserialize one section, recording every problem in it: a key with
    /// a problem (unknown, or a value of the wrong type) is recorded and
    /// left out, and the rest read again, so that one bad key hides none of
    /// the others; a table left without a key it needs is left out of the
    /// table holding it (a trigger, `rate = { ... }`). `None` when the
    /// section itself cannot be read.
    fn section<T: serde::de::DeserializeOwned>(
        &mut self,
        what: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let span = value.span();
        let mut value = value;
        // The keys left out so far, with the span of their table: the
        // table then misses them, which is no problem of its own.
        let mut left_out: Vec<(Range<usize>, String)> = Vec::new();
        loop {
            let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(parsed) => return Some(parsed),
                Err(e) => e,
            };
            let message = error.message().trim().to_string();
            let at = error.span().unwrap_or_else(|| span.clone());
            let ours = missing_field(&message)
                .is_some_and(|key| left_out.iter().any(|(t, k)| *t == at && k == key));
            let pruned = prune(value.get_mut(), &at, span.clone());
            if !ours {
                let fix = if message.contains("unknown field") {
                    "remove or rename the key; the keys this table accepts are listed above"
                        .to_string()
                } else if message.contains("missing field") {
                    format!("add the key to {what}")
                } else {
                    match &pruned {
                        Some(Pruned::Key { path, .. }) => {
                            format!("correct the type of {path} in {what}")
                        }
                        _ => format!("correct the value's type in {what}"),
                    }
                };
                self.error(Some(at), format!("in {what}: {message}"), fix);
            }
            match pruned {
                Some(Pruned::Key { table, key, path }) => {
                    left_out.push((table, key));
                    self.left_out.push(path);
                }
                Some(Pruned::Item { path }) => self.left_out.push(path),
                None => return None,
            }
        }
    }

    fn duration(&mut self, value: &Spanned<String>, what: &str) -> Option<Duration> {
        match parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    Some(value.span()),
                    format!("{what}: {e}"),
                    "write a duration such as 500ms, 30s, 5m or 1h",
                );
                None
            }
        }
    }

    fn positive(&mut self, value: &Spanned<i64>, what: &str, max: i64) -> Option<u64> {
        let n = *value.get_ref();
        if n < 1 || n > max {
            self.error(
                Some(value.span()),
                format!("{what} = {n} is out of range"),
                format!("use a whole number from 1 to {max}"),
            );
            None
        } else {
            Some(n as u64)
        }
    }

    /// A `trusted_keys` list of `table`: every entry a key (relative files
    /// under `base`), or `None` after recording what is wrong.
    fn trusted_keys(&mut self, base: &Path, raw: &RawKeys, table: &str) -> Option<TrustedKeys> {
        if raw.get_ref().is_empty() {
            self.error(
                Some(raw.span()),
                format!("{table} trusted_keys is empty: it trusts no key"),
                "list minisign public keys (a key line, or the path of a .pub file), or remove trusted_keys",
            );
            return None;
        }
        let mut keys = TrustedKeys::default();
        let mut ok = true;
        for entry in raw.get_ref() {
            match read_key(entry.get_ref(), base, self.probe) {
                Ok(key) => {
                    keys.insert(key);
                }
                Err(e) => {
                    self.error(
                        Some(entry.span()),
                        format!("{table} trusted_keys: {}", e.message),
                        e.fix,
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(keys)
    }

    /// A tail's `max_line`: the longest line taken whole, from 1 KiB to
    /// 16 MiB; the tail's default when not given.
    fn max_line(&mut self, value: Option<&Spanned<String>>) -> Option<usize> {
        const RANGE: std::ops::RangeInclusive<usize> = 1 << 10..=16 << 20;
        let Some(value) = value else {
            return Some(crate::triggers::tail::MAX_LINE_BYTES);
        };
        match parse_size(value.get_ref()) {
            Ok(bytes) if RANGE.contains(&bytes) => Some(bytes),
            Ok(_) => {
                self.error(
                    Some(value.span()),
                    format!("max_line = {} is out of range", value.get_ref()),
                    "use a size from 1KiB to 16MiB; longer lines are cut there and marked",
                );
                None
            }
            Err(e) => {
                self.error(
                    Some(value.span()),
                    format!("max_line: {e}"),
                    "write a size such as 64KiB",
                );
                None
            }
        }
    }

    /// A name or a list of names (`unit`, `identifier`), each checked by
    /// `check`, each kept once; empty when the key is not there. Every bad
    /// name is reported.
    fn names(
        &mut self,
        value: Option<&Spanned<toml::Value>>,
        what: &str,
        check: impl Fn(&str) -> Result<String, crate::triggers::journal::MatchError>,
        fix: impl Fn(&crate::triggers::journal::MatchError) -> &'static str,
    ) -> Option<Vec<String>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let texts: Vec<&str> = match value.get_ref() {
            toml::Value::String(text) => vec![text.as_str()],
            toml::Value::Array(items) if items.iter().all(|i| i.is_str()) => {
                items.iter().filter_map(toml::Value::as_str).collect()
            }
            _ => {
                self.error(
                    Some(value.span()),
                    format!("{what} must be a name or a list of names"),
                    format!("write {what} = \"x\" or {what} = [\"x\", \"y\"]"),
                );
                return None;
            }
        };
        if texts.is_empty() {
            self.error(
                Some(value.span()),
                format!("{what} = [] takes no entry"),
                format!("name at least one, or remove {what} to take every entry"),
            );
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for text in texts {
            match check(text) {
                Ok(name) => {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                Err(e) => {
                    self.error(Some(value.span()), format!("{what}: {e}"), fix(&e));
                    ok = false;
                }
            }
        }
        ok.then_some(names)
    }

    fn regex(&mut self, value: &Spanned<String>, what: &str) -> Option<Pattern> {
        match Pattern::new(value.get_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                self.error(
                    Some(value.span()),
                    format!("{what} is not a valid regular expression: {e}"),
                    "fix the pattern (Rust regex syntax)",
                );
                None
            }
        }
    }
}

/// The keys of a plugin's `grants` and what each lists, for fixes.
fn grants_help() -> String {
    let mut packages = String::new();
    for package in medic_sandbox::host::grants::extension_packages() {
        let operations: Vec<&str> = medic_sandbox::host::grants::OPERATIONS
            .iter()
            .filter(|o| o.package == package)
            .map(|o| o.name)
            .collect();
        packages.push_str(&format!(
            " and {package} (a list of its operations: {})",
            operations.join(", ")
        ));
    }
    format!(
        "a plugin's grants are fs-read, fs-write (lists of root paths), services-read, services-control (lists of service names){packages}, e.g. grants = {{ fs-read = [\"/srv/share\"], services-control = [\"BITS\"], wsus = [\"read\", \"sync\"] }}"
    )
}

/// What [`prune`] left out of a section.
enum Pruned {
    /// A key of a table: the table's span, the key, and its dotted path
    /// from the section (for messages).
    Key {
        table: Range<usize>,
        key: String,
        path: String,
    },
    /// A table in an array (a trigger): the array's dotted path.
    Item { path: String },
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The key a serde "missing field" message names.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(key, _)| key)
}

/// Leave out of `value` (whose span is `span`) the innermost entry that
/// holds the place `at`: a key of a table (`at` is in its name or its
/// value), or a table in an array when `at` is all of it (a trigger
/// missing a key it needs). `None` when nothing in `value` holds it.
fn prune(value: &mut DeValue<'_>, at: &Range<usize>, span: Range<usize>) -> Option<Pruned> {
    match value {
        DeValue::Table(table) => {
            let mut hit = None;
            for (key, inner) in table.iter_mut() {
                let name = key.get_ref().to_string();
                if contains(&key.span(), at) {
                    hit = Some(name);
                    break;
                }
                // Deeper first; a table's span does not always hold its
                // entries' (dotted keys, arrays of tables), so every
                // table and array is looked into.
                let inner_span = inner.span();
                if let Some(mut pruned) = prune(inner.get_mut(), at, inner_span.clone()) {
                    match &mut pruned {
                        Pruned::Key { path, .. } => *path = format!("{name}.{path}"),
                        Pruned::Item { path } if path.is_empty() => *path = name,
                        Pruned::Item { path } => *path = format!("{name}.{path}"),
                    }
                    return Some(pruned);
                }
                if contains(&inner_span, at) {
                    hit = Some(name);
                    break;
                }
            }
            let key = hit?;
            table.remove(key.as_str());
            Some(Pruned::Key {
                table: span,
                path: key.clone(),
                key,
            })
        }
        DeValue::Array(items) => {
            let mut hit = None;
            for (n, item) in items.iter_mut().enumerate() {
                let item_span = item.span();
                if let Some(pruned) = prune(item.get_mut(), at, item_span.clone()) {
                    return Some(pruned);
                }
                if contains(&item_span, at) {
                    hit = Some(n);
                    break;
                }
            }
            // A bad value in a list of values: the list's key goes.
            let n = hit.filter(|n| items[*n].get_ref().is_table())?;
            let kept: Vec<_> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != n)
                .map(|(_, item)| item.clone())
                .collect();
            *items = DeArray::new();
            for item in kept {
                items.push(item);
            }
            Some(Pruned::Item {
                path: String::new(),
            })
        }
        _ => None,
    }
}

/// Where a TOML syntax error the parser gives no place for most likely is.
/// The one known is a dotted key of too many parts ("recursion limit"):
/// the first line with that many dots. `None`: nowhere better than the
/// end of the text.
fn unplaced_syntax_error(text: &str, message: &str) -> Option<Range<usize>> {
    /// The parser's limit on the parts of a dotted key, less some slack.
    const MANY_DOTS: usize = 64;
    if !message.contains("recursion") {
        return None;
    }
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.matches('.').count() >= MANY_DOTS {
            let column = line.len() - line.trim_start().len();
            return Some(offset + column..offset + column);
        }
        offset += line.len();
    }
    None
}

/// The text of a policy file's bytes; text that is not UTF-8 is one error,
/// at its first byte that is not.
fn utf8_text<'a>(file: &Path, bytes: &'a [u8]) -> Result<&'a str, PolicyErrors> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        // The text before the bad byte is UTF-8: place it there.
        let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let c = Collector {
            file,
            text: valid,
            probe: &SystemProbe,
            errors: Vec::new(),
            within: None,
            left_out: Vec::new(),
        };
        let (line, column) = c.position(offset);
        PolicyErrors(vec![PolicyError {
            file: file.to_path_buf(),
            line,
            column,
            message: format!(
                "the policy is not UTF-8 text: byte {offset} (0x{:02x}) is not part of a UTF-8 character",
                bytes[offset]
            ),
            fix: "save the policy as UTF-8 (or remove the stray byte)".into(),
        }])
    })
}

/// Resolve `raw` against `base` when it is relative, as an absolute path
/// without `.` or `..` components (so that logs and audit records show
/// `/srv/lab/...`, not `examples/../target/lab/...`).
pub fn resolve(base: &Path, raw: &str) -> PathBuf {
    let joined = base.join(raw);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A setting's value as the plugin sees it: strings, numbers, booleans and
/// arrays of strings typed; other arrays and tables as their JSON text.
pub fn setting_value(value: &toml::Value) -> SettingValue {
    match value {
        toml::Value::String(s) => SettingValue::Text(s.clone()),
        toml::Value::Integer(n) => SettingValue::Integer(*n),
        // As text: plugins need no float formatting to read it.
        toml::Value::Float(x) => SettingValue::Text(x.to_string()),
        toml::Value::Boolean(b) => SettingValue::Boolean(*b),
        toml::Value::Datetime(d) => SettingValue::Text(d.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map_or_else(
                || SettingValue::Text(serde_json::to_string(value).unwrap_or_default()),
                SettingValue::TextList,
            ),
        toml::Value::Table(_) => {
            SettingValue::Text(serde_json::to_string(value).unwrap_or_default())
        }
    }
}

impl Policy {
    /// Validate policy text; `file` names it in messages and anchors
    /// relative paths (to its folder).
    pub fn parse(file: &Path, text: &str) -> Result<Self, PolicyErrors> {
        Self::parse_with(file, text, &SystemProbe, &mut |_| Vec::new())
    }

    /// Validate the bytes of a policy file: text that is not UTF-8 is one
    /// error, at its first byte that is not; otherwise as
    /// [`Policy::parse_with`].
    pub fn parse_bytes_with(
        file: &Path,
        bytes: &[u8],
        probe: &dyn Probe,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<Self, PolicyErrors> {
        Self::parse_with(file, utf8_text(file, bytes)?, probe, check_backend)
    }

    /// [`Policy::parse`], checking the `[backend]` table with
    /// `check_backend`. Any problem anywhere refuses the policy.
    pub fn parse_with(
        file: &Path,
        text: &str,
        probe: &dyn Probe,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<Self, PolicyErrors> {
        let reading = Self::read(file, text, probe, check_backend);
        if reading.problems.is_empty() {
            Ok(reading.policy)
        } else {
            Err(reading.every_problem())
        }
    }

    /// As [`Policy::parse_bytes_with`], but a plugin table with problems
    /// is set aside with them and the rest of the policy returned: what an
    /// agent starting up wants, so that one bad entry does not keep the
    /// other plugins from serving. A problem outside the plugin tables (the
    /// TOML syntax, `[agent]`, `[backend]`, an unknown table) still refuses
    /// the whole policy, with every problem found.
    pub fn parse_serving_with(
        file: &Path,
        bytes: &[u8],
        probe: &dyn Probe,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<ServingPolicy, PolicyErrors> {
        let reading = Self::parse_reading_with(file, bytes, probe, check_backend)?;
        if !reading.outside().is_empty() {
            return Err(reading.every_problem());
        }
        let set_aside = reading.set_aside();
        Ok(ServingPolicy {
            policy: reading.policy,
            set_aside,
        })
    }

    /// Read the bytes of a policy file to report every problem in it: the
    /// policy with the plugins whose tables are valid, every problem found,
    /// and what could be read of the plugin tables with problems whose
    /// components can still be checked. Only text that is not UTF-8 is an
    /// error here.
    pub fn parse_reading_with(
        file: &Path,
        bytes: &[u8],
        probe: &dyn Probe,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Result<Reading, PolicyErrors> {
        Ok(Self::read(
            file,
            utf8_text(file, bytes)?,
            probe,
            check_backend,
        ))
    }

    /// Read the policy: the policy with every plugin whose table is valid,
    /// every problem found, each with the plugin table it is in, and the
    /// tables with problems as far as they could be read.
    fn read(
        file: &Path,
        text: &str,
        probe: &dyn Probe,
        check_backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
    ) -> Reading {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut c = Collector {
            file,
            text,
            probe,
            errors: Vec::new(),
            within: None,
            left_out: Vec::new(),
        };
        let (document, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            let message = e.message().trim();
            let span = e.span().or_else(|| unplaced_syntax_error(text, message));
            c.error(
                span,
                format!("TOML syntax: {message}"),
                "fix the TOML syntax at this place",
            );
        }
        let mut raw_agent: Option<RawAgent> = None;
        let mut raw_backend: Option<RawBackend> = None;
        let mut raw_plugins: Vec<(String, Range<usize>, RawPlugin)> = Vec::new();
        let mut saw_plugins = false;
        let mut agent_left_out = Vec::new();
        let mut backend_at = None;
        for (key, value) in document.into_inner() {
            let span = key.span();
            match key.get_ref().as_ref() {
                "agent" => {
                    let before = c.left_out.len();
                    raw_agent = c.section("[agent]", value);
                    agent_left_out = c.left_out.split_off(before);
                }
                "backend" => {
                    backend_at = Some(span.start);
                    raw_backend = c.section("[backend]", value);
                }
                "plugins" => {
                    saw_plugins = true;
                    let value_span = value.span();
                    let DeValue::Table(plugins) = value.into_inner() else {
                        c.error(
                            Some(value_span),
                            "`plugins` must be a table of plugin tables",
                            "write one [plugins.<name>] table per plugin",
                        );
                        continue;
                    };
                    for (name, plugin) in plugins {
                        let name_span = name.span();
                        let name = name.get_ref().to_string();
                        c.within = Some(name.clone());
                        if !valid_plugin_name(&name) {
                            c.error(Some(name_span.clone()), format!("`{name}` is not a valid plugin name"), "use lowercase letters, digits and dashes, as the plugin's describe() names itself");
                        }
                        let before = c.left_out.len();
                        if let Some(mut raw) =
                            c.section::<RawPlugin>(&format!("[plugins.{name}]"), plugin)
                        {
                            raw.left_out = c.left_out.split_off(before);
                            raw_plugins.push((name, name_span, raw));
                        }
                    }
                    c.within = None;
                }
                other => c.error(
                    Some(span),
                    format!("unknown table `{other}`"),
                    "the policy has the tables [agent], [backend] and [plugins.<name>]",
                ),
            }
        }
        if !saw_plugins && c.errors.is_empty() {
            c.error(
                None,
                "the policy configures no plugins",
                "add a [plugins.<name>] table",
            );
        }

        let mut raw_agent = raw_agent.unwrap_or_default();
        // Keys left out for a problem were meant to be trusted all the same.
        let plugins_trust_keys = raw_plugins
            .iter()
            .any(|(_, _, p)| p.trusted_keys.is_some() || left_out(&p.left_out, "trusted_keys"));
        let mut agent_trust = Self::agent_trust(
            &mut c,
            &base,
            raw_agent.trusted_keys.take().as_ref(),
            raw_agent.require_signatures.take().as_ref(),
            plugins_trust_keys,
        );
        // A key of [agent]'s trust left out for its problem is a problem
        // of that trust.
        agent_trust.reported |= left_out(&agent_left_out, "trusted_keys")
            || left_out(&agent_left_out, "require_signatures");
        let agent = Self::agent(&mut c, &base, raw_agent);
        let backend = Self::backend(&mut c, file, &base, backend_at, raw_backend);
        c.errors
            .extend(check_backend(&backend).into_iter().map(|error| Problem {
                plugin: None,
                error,
            }));
        let mut read = Vec::new();
        for (name, span, raw) in raw_plugins {
            c.within = Some(name.clone());
            read.push(Self::plugin(
                &mut c,
                &base,
                &agent.plugin_dir,
                &agent_trust,
                name,
                &span,
                raw,
            ));
        }
        c.within = None;
        // A plugin with a problem anywhere in its table (its name, say) is
        // not part of the policy; its component is still checked as far as
        // the problems allow.
        let mut plugins = Vec::new();
        let mut partial = Vec::new();
        for plugin in read {
            let name = plugin.policy.name.as_str();
            if !c.errors.iter().any(|f| f.plugin.as_deref() == Some(name)) {
                plugins.push(plugin.policy);
            } else if plugin.component_found && plugin.trust_read {
                partial.push(PartialPlugin {
                    policy: plugin.policy,
                    grants_read: plugin.grants_read,
                });
            }
        }
        Reading {
            policy: Self {
                file: file.to_path_buf(),
                agent,
                trust: agent_trust.trust,
                backend,
                plugins,
            },
            problems: c.errors,
            partial,
            trust_read: !agent_trust.reported,
        }
    }

    fn agent(c: &mut Collector<'_>, base: &Path, raw: RawAgent) -> AgentSettings {
        let dir = |value: &Option<Spanned<String>>, default: &str| {
            resolve(
                base,
                value.as_ref().map_or(default, |v| v.get_ref().as_str()),
            )
        };
        let state_dir = dir(&raw.state_dir, "state");
        let plugin_dir = dir(&raw.plugin_dir, "plugins");
        if let Some(value) = &raw.plugin_dir
            && !c.probe.is_dir(&plugin_dir)
        {
            c.error(
                Some(value.span()),
                format!("plugin_dir {} is not a directory", plugin_dir.display()),
                "create it, or point plugin_dir at the folder holding the components",
            );
        }
        let cache_dir = raw
            .cache_dir
            .as_ref()
            .map_or_else(|| state_dir.join("cache"), |v| resolve(base, v.get_ref()));
        let max_concurrent_runs = raw
            .max_concurrent_runs
            .as_ref()
            .and_then(|v| c.positive(v, "max_concurrent_runs", 256))
            .unwrap_or(4) as usize;
        let queue_capacity = raw
            .queue_capacity
            .as_ref()
            .and_then(|v| c.positive(v, "queue_capacity", 1_000_000))
            .unwrap_or(1024) as usize;
        AgentSettings {
            state_dir,
            plugin_dir,
            cache_dir,
            log_format: raw.log_format,
            max_concurrent_runs,
            queue_capacity,
        }
    }

    /// `[agent] trusted_keys` and `require_signatures`. Signatures are
    /// required by default exactly when some key is trusted somewhere in
    /// the policy (`any_plugin_keys`: in a plugin's table).
    fn agent_trust(
        c: &mut Collector<'_>,
        base: &Path,
        keys: Option<&RawKeys>,
        require: Option<&Spanned<bool>>,
        any_plugin_keys: bool,
    ) -> AgentTrust {
        let errors_before = c.errors.len();
        let agent_keys = keys.and_then(|raw| c.trusted_keys(base, raw, "[agent]"));
        let any_key = keys.is_some() || any_plugin_keys;
        let (required, why) = match require {
            Some(value) => (*value.get_ref(), "[agent] require_signatures = true"),
            None => (
                any_key,
                "the policy trusts keys elsewhere, so [agent] require_signatures defaults to true",
            ),
        };
        if let Some(value) = require
            && *value.get_ref()
            && !any_key
        {
            c.error(
                Some(value.span()),
                "require_signatures = true, but the policy trusts no key",
                "add trusted_keys = [\"<public key line, or the path of a .pub file>\"] to [agent] (medic plugins keygen makes a key pair), or remove require_signatures",
            );
        }
        AgentTrust {
            trust: Trust {
                keys: agent_keys.unwrap_or_default(),
                required,
            },
            why,
            reported: c.errors.len() > errors_before,
        }
    }

    fn backend(
        c: &mut Collector<'_>,
        file: &Path,
        base: &Path,
        at: Option<usize>,
        raw: Option<RawBackend>,
    ) -> BackendSection {
        let mut section = BackendSection {
            file: file.to_path_buf(),
            base: base.to_path_buf(),
            kind: "local".into(),
            settings: BTreeMap::new(),
            lines: BTreeMap::new(),
            table: c.position(at.unwrap_or(c.text.len())),
        };
        for (key, value) in raw.unwrap_or_default() {
            let span = value.span();
            section.lines.insert(key.clone(), c.position(span.start));
            match (key.as_str(), value.into_inner()) {
                ("kind", toml::Value::String(kind)) => section.kind = kind,
                ("kind", _) => c.error(
                    Some(span),
                    "[backend] kind must be a string",
                    "write kind = \"local\" (or another backend kind)",
                ),
                (_, value) => {
                    section.settings.insert(key, value);
                }
            }
        }
        section
    }

    fn plugin(
        c: &mut Collector<'_>,
        base: &Path,
        plugin_dir: &Path,
        agent_trust: &AgentTrust,
        name: String,
        span: &Range<usize>,
        raw: RawPlugin,
    ) -> ReadPlugin {
        let (component, component_found) = match &raw.component {
            Some(value) => {
                let component = resolve(plugin_dir, value.get_ref());
                let found = c.probe.is_file(&component);
                if !found {
                    c.error(Some(value.span()), format!("component {} does not exist", component.display()), "build it (`medic build` in its project; `cargo xtask plugins` in medic's repository) and copy it there, or correct the path (relative paths are under plugin_dir)");
                }
                (component, found)
            }
            None => {
                c.error(
                    Some(span.clone()),
                    format!("in [plugins.{name}]: missing field `component`"),
                    format!("add component = \"<file>.wasm\" to [plugins.{name}] (relative paths are under plugin_dir)"),
                );
                (PathBuf::new(), false)
            }
        };
        let mode = match &raw.mode {
            None => Mode::Enforce,
            Some(value) => Mode::parse(value.get_ref()).unwrap_or_else(|| {
                c.error(
                    Some(value.span()),
                    format!("unknown mode `{}`", value.get_ref()),
                    "use enforce, dry-run or approve",
                );
                Mode::Enforce
            }),
        };
        let grants_before = c.errors.len();
        let mut grants = Grants::none();
        for (capability, scopes) in &raw.grants {
            let at = Some(scopes.span());
            let packages = medic_sandbox::host::grants::extension_packages();
            if packages.contains(capability.as_str()) {
                for op in scopes.get_ref() {
                    match Capability::operation(capability, op) {
                        Some(granted) => {
                            let _ = grants.add(granted, None);
                        }
                        None => c.error(
                            at.clone(),
                            format!("unknown {capability} operation `{op}`"),
                            format!(
                                "use some of {}",
                                medic_sandbox::host::grants::OPERATIONS
                                    .iter()
                                    .filter(|o| o.package == capability)
                                    .map(|o| o.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    }
                }
                continue;
            }
            if let Some((package, operation)) = capability.split_once('-')
                && packages.contains(package)
            {
                c.error(
                    at,
                    format!("`{capability}` is granted through the {package} list"),
                    format!("write {package} = [\"{operation}\"]"),
                );
                continue;
            }
            if Capability::parse(capability).is_none() {
                c.error(
                    at,
                    format!("unknown capability `{capability}` in grants"),
                    grants_help(),
                );
                continue;
            }
            if scopes.get_ref().is_empty() {
                c.error(
                    at.clone(),
                    format!("`{capability}` grants nothing: its list is empty"),
                    "list the paths or service names, or remove the key",
                );
            }
            for scope in scopes.get_ref() {
                // Paths may be relative to the policy file, like every other
                // path in it.
                let scope = if capability.starts_with("fs-") && Path::new(scope).is_relative() {
                    match c.probe.canonicalize(&base.join(scope)) {
                        Ok(path) => path.display().to_string(),
                        Err(e) => {
                            c.error(
                                at.clone(),
                                format!(
                                    "`{scope}` (relative to the policy file): {}: {e}",
                                    base.join(scope).display()
                                ),
                                "grant a folder that exists, or an absolute path",
                            );
                            continue;
                        }
                    }
                } else {
                    scope.clone()
                };
                if let Err(e) = grants.add_spec(&format!("{capability}={scope}")) {
                    c.error(at.clone(), e.to_string(), grants_help());
                }
            }
        }
        let grants_read = c.errors.len() == grants_before && !left_out(&raw.left_out, "grants");
        let mut limits = Limits::default();
        if let Some(raw_limits) = &raw.limits {
            if let Some(v) = &raw_limits.timeout
                && let Some(d) = c.duration(v, "limits.timeout")
            {
                match Limits::check_timeout(d) {
                    Ok(d) => limits.timeout = d,
                    Err(e) => c.error(
                        Some(v.span()),
                        format!("limits.timeout = {}: {e}", v.get_ref()),
                        "give the plugin at least 10ms",
                    ),
                }
            }
            if let Some(v) = &raw_limits.memory {
                match parse_size(v.get_ref()).map(Limits::check_memory) {
                    Ok(Ok(bytes)) => limits.memory_bytes = bytes,
                    Ok(Err(_)) => c.error(
                        Some(v.span()),
                        format!("limits.memory = {} is out of range", v.get_ref()),
                        "use from 1MiB to 1GiB",
                    ),
                    Err(e) => c.error(
                        Some(v.span()),
                        format!("limits.memory: {e}"),
                        "write a size such as 64MiB",
                    ),
                }
            }
            if let Some(v) = &raw_limits.fuel {
                limits.fuel = c.positive(v, "limits.fuel", i64::MAX);
            }
            if let Some(v) = &raw_limits.max_host_calls {
                limits.max_host_calls = c
                    .positive(v, "limits.max_host_calls", 10_000_000)
                    .unwrap_or(100_000) as usize;
            }
            if let Some(v) = &raw_limits.state_quota {
                match parse_size(v.get_ref()) {
                    Ok(bytes) if bytes as u64 <= MAX_STATE_QUOTA_BYTES => {
                        limits.state_quota_bytes = bytes as u64
                    }
                    Ok(_) => c.error(
                        Some(v.span()),
                        format!("limits.state_quota = {} is out of range", v.get_ref()),
                        "use at most 64MiB; state is for a plugin's memory between runs, not for data",
                    ),
                    Err(e) => c.error(
                        Some(v.span()),
                        format!("limits.state_quota: {e}"),
                        "write a size such as 1MiB",
                    ),
                }
            }
        }
        let rate = raw.rate.as_ref().and_then(|r| {
            let max_runs = c.positive(&r.max_runs, "rate.max_runs", u32::MAX.into())? as u32;
            let window = c.duration(&r.per, "rate.per")?;
            let cooldown = match &r.cooldown {
                Some(v) => c.duration(v, "rate.cooldown")?,
                None => Duration::ZERO,
            };
            Some(RateLimit {
                max_runs,
                window,
                cooldown,
            })
        });
        let flap_guard = raw.flap_guard.as_ref().and_then(|f| {
            let max_mutating_runs = c.positive(
                &f.max_mutating_runs,
                "flap_guard.max_mutating_runs",
                u32::MAX.into(),
            )? as u32;
            let within = c.duration(&f.within, "flap_guard.within")?;
            Some(FlapGuard {
                max_mutating_runs,
                within,
            })
        });
        let concurrency = raw
            .concurrency
            .as_ref()
            .and_then(|v| c.positive(v, "concurrency", 64))
            .unwrap_or(1) as usize;
        let triggers = raw
            .triggers
            .iter()
            .filter_map(|t| Self::trigger(c, base, t))
            .collect::<Vec<_>>();
        if raw.triggers.is_empty() && !left_out(&raw.left_out, "triggers") {
            c.error(Some(span.clone()), format!("plugin `{name}` has no triggers"), "add at least one [[plugins.<name>.triggers]] (kind = \"manual\" for on-demand only)");
        }
        let settings: Settings = raw
            .settings
            .iter()
            .map(|(key, value)| (key.clone(), setting_value(value.get_ref())))
            .collect();
        // A plugin's own keys replace the agent's, and make a signature
        // required for it.
        let trust_before = c.errors.len();
        let trust = match &raw.trusted_keys {
            Some(list) => Trust {
                keys: c
                    .trusted_keys(base, list, &format!("[plugins.{name}]"))
                    .unwrap_or_default(),
                required: true,
            },
            None => agent_trust.trust.clone(),
        };
        if raw.trusted_keys.is_none()
            && !left_out(&raw.left_out, "trusted_keys")
            && trust.required
            && trust.keys.is_empty()
            && !agent_trust.reported
        {
            c.error(
                Some(span.clone()),
                format!(
                    "plugin `{name}` must be signed ({}), but no key is trusted for it",
                    agent_trust.why
                ),
                format!(
                    "add trusted_keys to [agent] (for every plugin) or to [plugins.{name}], or set require_signatures = false in [agent]"
                ),
            );
        }
        let trust_read = c.errors.len() == trust_before
            && !left_out(&raw.left_out, "trusted_keys")
            && (raw.trusted_keys.is_some() || !agent_trust.reported);
        ReadPlugin {
            policy: PluginPolicy {
                line: c.line_of(span),
                name,
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
            },
            component_found,
            grants_read,
            trust_read,
        }
    }

    fn trigger(c: &mut Collector<'_>, base: &Path, raw: &Spanned<RawTrigger>) -> Option<Trigger> {
        let at = raw.span();
        let t = raw.get_ref();
        let kind = t.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "file" => &["path", "changes", "debounce", "subject"],
            "log" => &["path", "pattern", "max_line"],
            "event_log" => &["path", "channel", "source", "ids", "message", "max_line"],
            "journal" => &[
                "unit",
                "priority",
                "identifier",
                "message",
                "max_line",
                "directory",
            ],
            "every" => &["interval"],
            "startup" | "manual" => &[],
            other => {
                c.error(
                    Some(t.kind.span()),
                    format!("unknown trigger kind `{other}`"),
                    "use file, log, event_log, journal, every, startup or manual",
                );
                return None;
            }
        };
        let present: [(&str, bool); 15] = [
            ("path", t.path.is_some()),
            ("channel", t.channel.is_some()),
            ("changes", t.changes.is_some()),
            ("debounce", t.debounce.is_some()),
            ("subject", t.subject.is_some()),
            ("pattern", t.pattern.is_some()),
            ("source", t.source.is_some()),
            ("ids", t.ids.is_some()),
            ("message", t.message.is_some()),
            ("interval", t.interval.is_some()),
            ("max_line", t.max_line.is_some()),
            ("unit", t.unit.is_some()),
            ("priority", t.priority.is_some()),
            ("identifier", t.identifier.is_some()),
            ("directory", t.directory.is_some()),
        ];
        let mut ok = true;
        for (key, is_set) in present {
            if is_set && !allowed.contains(&key) {
                c.error(
                    Some(at.clone()),
                    format!("a `{kind}` trigger takes no `{key}`"),
                    format!(
                        "its keys are: kind{}",
                        allowed.iter().map(|k| format!(", {k}")).collect::<String>()
                    ),
                );
                ok = false;
            }
        }
        let path = |c: &mut Collector<'_>| match &t.path {
            Some(p) => Some(resolve(base, p.get_ref())),
            None => {
                c.error(
                    Some(at.clone()),
                    format!("a `{kind}` trigger needs a `path`"),
                    "add path = \"...\"",
                );
                None
            }
        };
        let trigger = match kind {
            "file" => Trigger::File {
                path: path(c)?,
                changes: t.changes.clone().unwrap_or_else(|| {
                    vec![
                        FileChange::Create,
                        FileChange::Modify,
                        FileChange::Attribute,
                        FileChange::Remove,
                    ]
                }),
                debounce: match &t.debounce {
                    Some(v) => c.duration(v, "debounce")?,
                    None => Duration::from_millis(50),
                },
                whole_tree: match t.subject.as_ref().map(|s| s.get_ref().as_str()) {
                    None | Some("path") => false,
                    Some("root") => true,
                    Some(other) => {
                        c.error(
                            t.subject.as_ref().map(|s| s.span()),
                            format!("subject = \"{other}\" is not a file trigger subject"),
                            "use subject = \"path\" (one event per changed path) or \"root\" (one event for the watched tree)",
                        );
                        return None;
                    }
                },
            },
            "log" => {
                let path = path(c)?;
                let Some(pattern) = &t.pattern else {
                    c.error(
                        Some(at),
                        "a `log` trigger needs a `pattern`",
                        "add pattern = \"<regex>\"",
                    );
                    return None;
                };
                Trigger::Log {
                    path,
                    pattern: c.regex(pattern, "pattern")?,
                    max_line: c.max_line(t.max_line.as_ref())?,
                }
            }
            "event_log" => {
                // Every problem is reported before any is given up on.
                let from = Self::event_source(c, t, &at, path);
                let max_line = c.max_line(t.max_line.as_ref());
                let message = match &t.message {
                    Some(m) => c.regex(m, "message").map(Some),
                    None => Some(None),
                };
                Trigger::EventLog {
                    from: from?,
                    max_line: max_line?,
                    source: t.source.as_ref().map(|s| s.get_ref().clone()),
                    ids: t
                        .ids
                        .as_ref()
                        .map(|i| i.get_ref().clone())
                        .unwrap_or_default(),
                    message: message?,
                }
            }
            "journal" => Self::journal(c, base, t)?,
            "every" => {
                let Some(interval) = &t.interval else {
                    c.error(
                        Some(at),
                        "an `every` trigger needs an `interval`",
                        "add interval = \"1h\"",
                    );
                    return None;
                };
                let interval_value = c.duration(interval, "interval")?;
                if interval_value < Duration::from_millis(100) {
                    c.error(
                        Some(interval.span()),
                        "interval is below 100ms",
                        "use an interval of at least 100ms",
                    );
                    return None;
                }
                Trigger::Every {
                    interval: interval_value,
                }
            }
            "startup" => Trigger::Startup,
            _ => Trigger::Manual,
        };
        ok.then_some(trigger)
    }

    /// A `journal` trigger: every problem of its keys is reported before
    /// any is given up on. Only the keys' forms are checked, so that a
    /// Linux policy can be checked anywhere.
    fn journal(c: &mut Collector<'_>, base: &Path, t: &RawTrigger) -> Option<Trigger> {
        use crate::triggers::journal::{self, MatchError, Priority};
        let fix = |e: &MatchError| match e {
            MatchError::EmptyUnit | MatchError::UnitCharacter(..) | MatchError::UnitTooLong(_) => {
                "name a unit as systemctl shows it, such as \"nginx\" (for nginx.service) or \"var-lib.mount\""
            }
            MatchError::UnitPattern(_) => "list the units by their whole names",
            MatchError::UnitTemplate(_) => "name its instances, such as \"getty@tty1.service\"",
            MatchError::EmptyIdentifier | MatchError::IdentifierControl(_) => {
                "name the SYSLOG_IDENTIFIER as journalctl -o verbose shows it, such as \"sshd\""
            }
        };
        let units = c.names(t.unit.as_ref(), "unit", journal::unit_name, fix);
        let identifiers = c.names(
            t.identifier.as_ref(),
            "identifier",
            journal::identifier,
            fix,
        );
        let priority = match &t.priority {
            None => Some(None),
            Some(value) => {
                let parsed = match value.get_ref() {
                    toml::Value::String(text) => Priority::parse(text),
                    toml::Value::Integer(n) => u8::try_from(*n).ok().and_then(Priority::new),
                    _ => None,
                };
                if parsed.is_none() {
                    let shown = match value.get_ref() {
                        toml::Value::String(text) => format!("{text:?}"),
                        other => other.to_string(),
                    };
                    c.error(
                        Some(value.span()),
                        format!("priority = {shown} is no syslog level"),
                        "use emerg, alert, crit, err, warning, notice, info or debug (or 0 to 7): entries at that level or more urgent are taken, so \"err\" takes 0 to 3",
                    );
                }
                parsed.map(Some)
            }
        };
        let directory = match &t.directory {
            None => Some(None),
            Some(d) if d.get_ref().trim().is_empty() => {
                c.error(
                    Some(d.span()),
                    "directory is empty",
                    "name a journal folder, such as \"/var/log/journal\", or remove the key to read the system journal",
                );
                None
            }
            Some(d) => Some(Some(resolve(base, d.get_ref()))),
        };
        let message = match &t.message {
            Some(m) => c.regex(m, "message").map(Some),
            None => Some(None),
        };
        let max_line = c.max_line(t.max_line.as_ref());
        Some(Trigger::Journal {
            matching: JournalMatch {
                units: units?,
                priority: priority?,
                identifiers: identifiers?,
                directory: directory?,
            },
            message: message?,
            max_line: max_line?,
        })
    }

    /// Where an `event_log` trigger reads: a journal (`path`) or a Windows
    /// channel (`channel`), never both. A channel's filter must make a
    /// query Windows takes; that is checked on every platform, so that a
    /// Windows policy can be checked anywhere.
    fn event_source(
        c: &mut Collector<'_>,
        t: &RawTrigger,
        at: &Range<usize>,
        path: impl FnOnce(&mut Collector<'_>) -> Option<PathBuf>,
    ) -> Option<EventSource> {
        use crate::triggers::windows_events::{QueryError, filter_problems};
        let channel = match (&t.path, &t.channel) {
            (Some(_), Some(channel)) => {
                c.error(
                    Some(channel.span()),
                    "an `event_log` trigger takes either `path` or `channel`, not both",
                    "keep path = \"...\" to follow a JSON-lines event journal, or channel = \"...\" to follow a Windows event log channel (Windows only), and remove the other",
                );
                return None;
            }
            (None, None) => {
                c.error(
                    Some(at.clone()),
                    "an `event_log` trigger needs a `path` or a `channel`",
                    "add path = \"...\" (a JSON-lines event journal) or channel = \"Application\" (a Windows event log channel, Windows only)",
                );
                return None;
            }
            (Some(_), None) => return path(c).map(|path| EventSource::Journal { path }),
            (None, Some(channel)) => channel,
        };
        let ids = t.ids.as_ref().map_or(&[][..], |i| i.get_ref().as_slice());
        let problems = filter_problems(
            channel.get_ref(),
            t.source.as_ref().map(|s| s.get_ref().as_str()),
            ids,
        );
        for problem in &problems {
            let (span, fix) = match problem {
                QueryError::EmptyChannel => (
                    channel.span(),
                    "name a channel, such as \"Application\", \"System\" or \"Microsoft-Windows-Bits-Client/Operational\"",
                ),
                QueryError::UnquotableSource(_) => (
                    t.source.as_ref().map_or(at.clone(), |s| s.span()),
                    "a provider name holds one kind of quote at most: check the name Event Viewer shows as the event's source",
                ),
                QueryError::IdTooLarge(_) => (
                    t.ids.as_ref().map_or(at.clone(), |i| i.span()),
                    "use the event id Event Viewer shows (0 to 65535)",
                ),
            };
            c.error(
                Some(span),
                format!("channel {:?}: {problem}", channel.get_ref()),
                fix,
            );
        }
        problems.is_empty().then(|| EventSource::Channel {
            name: channel.get_ref().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyErrors> {
        Policy::parse(Path::new("/nonexistent/policy.toml"), text)
    }

    fn errors(text: &str) -> Vec<PolicyError> {
        parse(text).unwrap_err().0
    }

    #[test]
    fn a_complete_policy_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/guard.wasm"), b"").unwrap();
        let text = r#"
[agent]
state_dir = "state"
log_format = "json"
max_concurrent_runs = 2

[backend]
kind = "local"
principals = { "NETWORK SERVICE" = "uid:33" }

[plugins.share-guard]
component = "guard.wasm"
mode = "dry-run"
concurrency = 2
grants = { fs-write = ["/srv/share"], services-read = ["BITS"], wsus = ["read", "sync"] }
limits = { timeout = "5s", memory = "32MiB", fuel = 1000000 }
rate = { max_runs = 10, per = "1h", cooldown = "30s" }
flap_guard = { max_mutating_runs = 3, within = "30m" }
settings = { path = "/srv/share", recursive = true, principals = ["Users"] }

[[plugins.share-guard.triggers]]
kind = "file"
path = "/srv/share"
changes = ["attribute"]

[[plugins.share-guard.triggers]]
kind = "event_log"
path = "events.jsonl"
source = "Windows Server Update Services"
ids = [364]
message = "Access is denied"

[[plugins.share-guard.triggers]]
kind = "every"
interval = "1h"
"#;
        let file = dir.path().join("policy.toml");
        let policy = Policy::parse(&file, text).unwrap();
        assert_eq!(policy.agent.state_dir, dir.path().join("state"));
        assert_eq!(policy.agent.log_format, LogFormat::Json);
        assert_eq!(policy.agent.max_concurrent_runs, 2);
        let plugin = &policy.plugins[0];
        assert_eq!(plugin.name, "share-guard");
        assert_eq!(plugin.line, 11);
        assert_eq!(plugin.mode, Mode::DryRun);
        assert_eq!(plugin.component, dir.path().join("plugins/guard.wasm"));
        assert!(
            plugin
                .grants
                .write_scope(Path::new("/srv/share/x"))
                .is_some()
        );
        assert!(plugin.grants.may_query_service("BITS"));
        assert!(plugin.grants.has(Capability::parse("wsus-sync").unwrap()));
        assert_eq!(plugin.limits.timeout, Duration::from_secs(5));
        assert_eq!(plugin.limits.memory_bytes, 32 << 20);
        assert_eq!(plugin.rate.unwrap().cooldown, Duration::from_secs(30));
        assert_eq!(plugin.flap_guard.unwrap().max_mutating_runs, 3);
        assert_eq!(plugin.settings["recursive"], SettingValue::Boolean(true));
        assert_eq!(
            plugin.settings["principals"],
            SettingValue::TextList(vec!["Users".into()])
        );
        assert_eq!(plugin.triggers.len(), 3);
        assert!(matches!(&plugin.triggers[1], Trigger::EventLog { ids, .. } if ids == &[364]));
        assert!(matches!(
            &plugin.triggers[1],
            Trigger::EventLog { from: EventSource::Journal { path }, .. }
                if path == &dir.path().join("events.jsonl")
        ));
        assert!(
            matches!(&plugin.triggers[1], Trigger::EventLog { max_line, .. } if *max_line == crate::triggers::tail::MAX_LINE_BYTES)
        );
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_line_and_fix() {
        let text = r#"[agent]
max_concurrent_runs = 0

[plugins.first]
component = "missing.wasm"
mode = "sometimes"
grants = { fs-delete = ["/x"], wsus = ["everything"] }
limits = { timeout = "soon", memory = "2GiB" }

[[plugins.first.triggers]]
kind = "log"
path = "/var/log/x.log"
pattern = "("

[plugins.second]
component = "also-missing.wasm"
colour = "blue"

[plugins.Third]
component = "x.wasm"
"#;
        let errors = errors(text);
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect();
        let expect = [
            "2: max_concurrent_runs = 0 is out of range",
            "5: component /nonexistent/plugins/missing.wasm does not exist",
            "6: unknown mode `sometimes`",
            "7: unknown capability `fs-delete`",
            "7: unknown wsus operation `everything`",
            "8: limits.timeout: `soon` is not a duration",
            "8: limits.memory = 2GiB is out of range",
            "13: pattern is not a valid regular expression",
            "17: in [plugins.second]: unknown field `colour`",
            "19: `Third` is not a valid plugin name",
        ];
        for expected in expect {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "missing {expected:?} in {messages:#?}"
            );
        }
        assert!(errors.iter().all(|e| !e.fix.is_empty()), "{errors:#?}");
        let shown = PolicyErrors(errors).to_string();
        assert!(
            shown.contains("/nonexistent/policy.toml:6:8: unknown mode `sometimes`"),
            "{shown}"
        );
        assert!(
            shown.contains("fix: use enforce, dry-run or approve"),
            "{shown}"
        );
    }

    #[test]
    fn a_grant_written_wrong_is_answered_with_the_policy_form() {
        let text = r#"[plugins.p]
component = "p.wasm"
grants = { fs-delete = [], wsus-sync = [], wsus = ["everything"] }
[[plugins.p.triggers]]
kind = "manual"
"#;
        let errors = errors(text);
        let fix_of = |message: &str| {
            errors
                .iter()
                .find(|e| e.message.starts_with(message))
                .map(|e| e.fix.clone())
                .unwrap_or_else(|| panic!("no {message:?} in {errors:#?}"))
        };
        // An unknown key is named as such, however long its list.
        let fix = fix_of("unknown capability `fs-delete` in grants");
        assert!(
            fix.contains(r#"e.g. grants = { fs-read = ["/srv/share"], services-control = ["BITS"], wsus = ["read", "sync"] }"#),
            "{fix}"
        );
        assert!(
            fix.contains(
                "wsus (a list of its operations: read, updates, approvals, configure, sync, probe)"
            ),
            "{fix}"
        );
        assert!(!errors.iter().any(|e| e.message.contains("grants nothing")));
        // A capability's name is the key of a core one only.
        assert_eq!(
            fix_of("`wsus-sync` is granted through the wsus list"),
            r#"write wsus = ["sync"]"#
        );
        assert!(fix_of("unknown wsus operation `everything`").contains("sync, probe"));
    }

    #[test]
    fn syntax_errors_and_unknown_tables_are_located() {
        let errors = errors("[agent\nstate_dir = 1\n\n[backend]\nkind = \"cloud\"\n\n[extras]\n");
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect();
        assert!(
            messages.iter().any(|m| m.starts_with("1: TOML syntax")),
            "{messages:#?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("7: unknown table `extras`")),
            "{messages:#?}"
        );
    }

    #[test]
    fn triggers_are_checked_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        let text = r#"
[plugins.p]
component = "p.wasm"
[[plugins.p.triggers]]
kind = "every"
[[plugins.p.triggers]]
kind = "startup"
path = "/x"
[[plugins.p.triggers]]
kind = "cron"
[[plugins.p.triggers]]
kind = "file"
[[plugins.p.triggers]]
kind = "log"
path = "/var/log/x.log"
pattern = "x"
max_line = "512"
[[plugins.p.triggers]]
kind = "event_log"
path = "/var/log/x.jsonl"
max_line = "17MiB"
[[plugins.p.triggers]]
kind = "file"
path = "/x"
max_line = "4KiB"
"#;
        let errors = Policy::parse(&dir.path().join("policy.toml"), text)
            .unwrap_err()
            .0;
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect();
        for expected in [
            "4: an `every` trigger needs an `interval`",
            "6: a `startup` trigger takes no `path`",
            "10: unknown trigger kind `cron`",
            "11: a `file` trigger needs a `path`",
            "17: max_line = 512 is out of range",
            "21: max_line = 17MiB is out of range",
            "22: a `file` trigger takes no `max_line`",
        ] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "missing {expected:?} in {messages:#?}"
            );
        }
    }

    #[test]
    fn an_event_log_trigger_reads_a_journal_or_a_windows_channel() {
        let text = r#"
[plugins.p]
component = "p.wasm"
[[plugins.p.triggers]]
kind = "event_log"
path = "events.jsonl"
source = "Windows Server Update Services"
ids = [364]
[[plugins.p.triggers]]
kind = "event_log"
channel = "Application"
source = "Windows Server Update Services"
ids = [364, 10012]
message = "Access is denied"
max_line = "4KiB"
[[plugins.p.triggers]]
kind = "event_log"
channel = "Microsoft-Windows-Bits-Client/Operational"
"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        let policy = Policy::parse(&dir.path().join("policy.toml"), text).unwrap();
        let triggers = &policy.plugins[0].triggers;
        assert!(matches!(
            &triggers[0],
            Trigger::EventLog { from: EventSource::Journal { path }, .. }
                if path == &dir.path().join("events.jsonl")
        ));
        let Trigger::EventLog {
            from,
            max_line,
            source,
            ids,
            message,
        } = &triggers[1]
        else {
            panic!("{triggers:?}")
        };
        assert_eq!(
            from,
            &EventSource::Channel {
                name: "Application".into()
            }
        );
        assert_eq!(*max_line, 4096);
        assert_eq!(source.as_deref(), Some("Windows Server Update Services"));
        assert_eq!(ids, &[364, 10012]);
        assert_eq!(
            message.as_ref().unwrap().regex().as_str(),
            "Access is denied"
        );
        assert!(matches!(
            &triggers[2],
            Trigger::EventLog { from: EventSource::Channel { name }, source: None, .. }
                if name == "Microsoft-Windows-Bits-Client/Operational"
        ));
    }

    #[test]
    fn a_journal_trigger_takes_units_a_priority_identifiers_a_message_and_a_folder() {
        let text = r#"
[plugins.p]
component = "p.wasm"
[[plugins.p.triggers]]
kind = "journal"
unit = "nginx"
priority = "err"
[[plugins.p.triggers]]
kind = "journal"
unit = ["nginx.service", "php-fpm", "nginx", "getty@tty1"]
priority = 4
identifier = ["nginx", "php-fpm"]
message = "(?i)failed|denied"
max_line = "4KiB"
directory = "containers/web/run/log/journal"
[[plugins.p.triggers]]
kind = "journal"
identifier = "sshd"
[[plugins.p.triggers]]
kind = "journal"
"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        let policy = Policy::parse(&dir.path().join("policy.toml"), text).unwrap();
        let journal = |n: usize| match &policy.plugins[0].triggers[n] {
            Trigger::Journal {
                matching,
                message,
                max_line,
            } => (matching.clone(), message.clone(), *max_line),
            other => panic!("{other:?}"),
        };
        let (m, message, max_line) = journal(0);
        assert_eq!(m.units, ["nginx.service"]);
        assert_eq!(m.priority.map(|p| p.name()), Some("err"));
        assert!(m.identifiers.is_empty() && m.directory.is_none() && message.is_none());
        assert_eq!(max_line, crate::triggers::tail::MAX_LINE_BYTES);
        let (m, message, max_line) = journal(1);
        assert_eq!(
            m.units,
            ["nginx.service", "php-fpm.service", "getty@tty1.service"],
            "completed, each once"
        );
        assert_eq!(m.priority.map(|p| p.name()), Some("warning"));
        assert_eq!(m.identifiers, ["nginx", "php-fpm"]);
        assert_eq!(
            m.directory,
            Some(dir.path().join("containers/web/run/log/journal")),
            "relative to the policy"
        );
        assert_eq!(message.unwrap().regex().as_str(), "(?i)failed|denied");
        assert_eq!(max_line, 4096);
        assert_eq!(journal(2).0.identifiers, ["sshd"]);
        assert_eq!(journal(3).0, JournalMatch::default());
    }

    #[test]
    fn a_journal_trigger_with_bad_keys_is_refused_where_they_are() {
        let text = r#"[plugins.p]
component = "p.wasm"
[[plugins.p.triggers]]
kind = "journal"
unit = "nginx*"
priority = "error"
path = "/var/log/journal"
[[plugins.p.triggers]]
kind = "journal"
unit = ["a b", "getty@.service", 3]
priority = 8
identifier = []
[[plugins.p.triggers]]
kind = "journal"
unit = ["ok", "getty@"]
identifier = ["a\u0007"]
message = "("
max_line = "1"
directory = ""
priority = true
[[plugins.p.triggers]]
kind = "journal"
channel = "System"
source = "x"
"#;
        let errors = with_component(text).unwrap_err().0;
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect();
        for expected in [
            "5:8: unit: unit \"nginx*\" is a pattern",
            "6:12: priority = \"error\" is no syslog level",
            "3:1: a `journal` trigger takes no `path`",
            "10:8: unit must be a name or a list of names",
            "11:12: priority = 8 is no syslog level",
            "12:14: identifier = [] takes no entry",
            "15:8: unit: unit \"getty@\" is a template",
            "16:14: identifier: identifier \"a\\u{7}\" holds a control character",
            "17:11: message is not a valid regular expression",
            "18:12: max_line = 1 is out of range",
            "19:13: directory is empty",
            "20:12: priority = true is no syslog level",
            "21:1: a `journal` trigger takes no `channel`",
            "21:1: a `journal` trigger takes no `source`",
        ] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "missing {expected:?} in {messages:#?}"
            );
        }
        assert_eq!(errors.len(), 14, "{messages:#?}");
        assert!(errors.iter().all(|e| !e.fix.is_empty()), "{errors:#?}");
        let priority = &errors.iter().find(|e| e.line == 6).unwrap().fix;
        assert!(
            priority.contains("emerg, alert, crit, err, warning"),
            "{priority}"
        );
    }

    #[test]
    fn an_event_log_trigger_with_both_sources_or_a_filter_windows_cannot_query_is_refused() {
        let text = r#"[plugins.p]
component = "p.wasm"
[[plugins.p.triggers]]
kind = "event_log"
path = "/var/log/events.jsonl"
channel = "Application"
[[plugins.p.triggers]]
kind = "event_log"
source = "x"
[[plugins.p.triggers]]
kind = "event_log"
channel = ""
source = "it's \"quoted\""
ids = [364, 70000]
message = "("
max_line = "1"
[[plugins.p.triggers]]
kind = "log"
path = "/var/log/x.log"
pattern = "x"
channel = "System"
[[plugins.p.triggers]]
kind = "event_log"
path = "/var/log/events.jsonl"
source = "it's \"fine\" in a journal"
ids = [70000]
"#;
        let errors = with_component(text).unwrap_err().0;
        let messages: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect();
        for expected in [
            "6:11: an `event_log` trigger takes either `path` or `channel`, not both",
            "7:1: an `event_log` trigger needs a `path` or a `channel`",
            "12:11: channel \"\": the channel name is empty",
            "13:10: channel \"\": the source name \"it's \\\"quoted\\\"\" holds both ' and \"",
            "14:7: channel \"\": event id 70000 is above 65535",
            "15:11: message is not a valid regular expression",
            "16:12: max_line = 1 is out of range",
            "17:1: a `log` trigger takes no `channel`",
        ] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "missing {expected:?} in {messages:#?}"
            );
        }
        assert_eq!(
            errors.len(),
            8,
            "the journal trigger is fine: {messages:#?}"
        );
        assert!(errors.iter().all(|e| !e.fix.is_empty()), "{errors:#?}");
        let both = &errors[0].fix;
        assert!(both.contains("path") && both.contains("channel"), "{both}");
    }

    const KEY_A: &str = "RWQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD";
    const KEY_A_ID: &str = "F498E2065B4DFD38";
    const KEY_B: &str = "RWRrm/mOAqslUSeNIUT+oyQ0VgZJ13Tiwit3VHTP9owZ1FLE1O3iz0YF";
    const KEY_B_ID: &str = "5125AB028EF99B6B";

    /// A folder with `plugins/p.wasm`, `plugins/q.wasm`, the public key
    /// file `keys/a.pub`, and `policy.toml` holding `text`.
    fn signed_layout(text: &str) -> (tempfile::TempDir, Result<Policy, PolicyErrors>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        for name in ["p", "q"] {
            std::fs::write(dir.path().join(format!("plugins/{name}.wasm")), b"").unwrap();
        }
        std::fs::write(
            dir.path().join("keys/a.pub"),
            format!("untrusted comment: minisign public key {KEY_A_ID}\n{KEY_A}\n"),
        )
        .unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, text).unwrap();
        let parsed = Policy::parse(&file, text);
        (dir, parsed)
    }

    const TWO_PLUGINS: &str = "[plugins.p]\ncomponent = \"p.wasm\"\n[[plugins.p.triggers]]\nkind = \"manual\"\n\n[plugins.q]\ncomponent = \"q.wasm\"\n[[plugins.q.triggers]]\nkind = \"manual\"\n";

    fn key_ids(trust: &Trust) -> String {
        trust.key_ids()
    }

    #[test]
    fn signatures_are_required_once_a_key_is_trusted() {
        // No key: nothing is checked.
        let (_dir, policy) = signed_layout(TWO_PLUGINS);
        let policy = policy.unwrap();
        assert_eq!(policy.trust, Trust::default());
        assert!(policy.plugins.iter().all(|p| p.trust == Trust::default()));

        // [agent] keys, by file (relative to the policy) and by line: every
        // plugin must be signed by one of them.
        let text =
            format!("[agent]\ntrusted_keys = [\"keys/a.pub\", \"{KEY_B}\"]\n\n{TWO_PLUGINS}");
        let (_dir, policy) = signed_layout(&text);
        let policy = policy.unwrap();
        assert!(policy.trust.required);
        for plugin in &policy.plugins {
            assert!(plugin.trust.required);
            assert_eq!(key_ids(&plugin.trust), format!("{KEY_A_ID}, {KEY_B_ID}"));
        }

        // require_signatures = false: signatures that are there are checked,
        // unsigned components load.
        let text = format!(
            "[agent]\ntrusted_keys = [\"keys/a.pub\"]\nrequire_signatures = false\n\n{TWO_PLUGINS}"
        );
        let (_dir, policy) = signed_layout(&text);
        let policy = policy.unwrap();
        assert!(!policy.plugins[0].trust.required);
        assert_eq!(key_ids(&policy.plugins[0].trust), KEY_A_ID);

        // A plugin's own keys replace the agent's and require a signature,
        // whatever require_signatures says.
        let text = format!(
            "[agent]\ntrusted_keys = [\"keys/a.pub\"]\nrequire_signatures = false\n\n{}",
            TWO_PLUGINS.replace(
                "component = \"q.wasm\"",
                &format!("component = \"q.wasm\"\ntrusted_keys = [\"{KEY_B}\"]")
            )
        );
        let (_dir, policy) = signed_layout(&text);
        let policy = policy.unwrap();
        let q = policy.plugins.iter().find(|p| p.name == "q").unwrap();
        assert!(q.trust.required);
        assert_eq!(key_ids(&q.trust), KEY_B_ID);
        let p = policy.plugins.iter().find(|p| p.name == "p").unwrap();
        assert!(!p.trust.required);
        assert_eq!(key_ids(&p.trust), KEY_A_ID);
    }

    /// `errors` as `line:column: message`, every one with a fix.
    fn located(errors: &[PolicyError]) -> Vec<String> {
        assert!(errors.iter().all(|e| !e.fix.is_empty()), "{errors:#?}");
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect()
    }

    fn assert_has(messages: &[String], expected: &str) {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "missing {expected:?} in {messages:#?}"
        );
    }

    #[test]
    fn bad_trusted_keys_are_located_with_a_fix() {
        let text = format!(
            "[agent]\ntrusted_keys = [\"keys/missing.pub\", \"{}\", \"plugins/p.wasm\"]\n\n{}",
            KEY_A.replacen('W', "X", 1),
            TWO_PLUGINS.replace(
                "component = \"q.wasm\"",
                "component = \"q.wasm\"\ntrusted_keys = []"
            )
        );
        let (dir, policy) = signed_layout(&text);
        let errors = policy.unwrap_err().0;
        let messages = located(&errors);
        let root = dir.path().display();
        assert_has(
            &messages,
            &format!(
                "2:17: [agent] trusted_keys: cannot read the key file {root}/keys/missing.pub: "
            ),
        );
        assert_has(
            &messages,
            "2:37: [agent] trusted_keys: `RXQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD` is not a minisign public key: malformed minisign public key: not an Ed25519 key",
        );
        assert_has(
            &messages,
            &format!(
                "2:97: [agent] trusted_keys: {root}/plugins/p.wasm is not a minisign public key file: malformed minisign public key: empty"
            ),
        );
        assert_has(
            &messages,
            "11:16: [plugins.q] trusted_keys is empty: it trusts no key",
        );
        // [agent]'s keys are wrong already: no more said of plugin `p`.
        assert_eq!(messages.len(), 4, "{messages:#?}");
        let fix = &errors
            .iter()
            .find(|e| e.message.contains("missing.pub"))
            .unwrap()
            .fix;
        assert!(fix.contains("medic plugins keygen"), "{fix}");
    }

    #[test]
    fn required_signatures_need_a_key() {
        // Required, with no key anywhere.
        let text = format!("[agent]\nrequire_signatures = true\n\n{TWO_PLUGINS}");
        let (_dir, policy) = signed_layout(&text);
        let errors = policy.unwrap_err().0;
        let messages = located(&errors);
        assert_eq!(
            messages,
            ["2:22: require_signatures = true, but the policy trusts no key"]
        );
        assert!(
            errors[0].fix.contains("trusted_keys = ["),
            "{}",
            errors[0].fix
        );

        // Keys for `q` only: `p` must be signed too, and nothing can check it.
        let text = TWO_PLUGINS.replace(
            "component = \"q.wasm\"",
            &format!("component = \"q.wasm\"\ntrusted_keys = [\"{KEY_B}\"]"),
        );
        let (_dir, policy) = signed_layout(&text);
        let errors = policy.unwrap_err().0;
        let messages = located(&errors);
        assert_eq!(
            messages,
            [
                "1:10: plugin `p` must be signed (the policy trusts keys elsewhere, so [agent] require_signatures defaults to true), but no key is trusted for it"
            ]
        );
        assert!(
            errors[0].fix.contains("require_signatures = false"),
            "{}",
            errors[0].fix
        );
        // ...which require_signatures = false allows.
        let (_dir, policy) =
            signed_layout(&format!("[agent]\nrequire_signatures = false\n\n{text}"));
        let policy = policy.unwrap();
        assert!(!policy.plugins[0].trust.required);
    }

    #[test]
    fn trust_keys_of_the_wrong_type_are_errors() {
        let text = format!(
            "[agent]\nrequire_signatures = \"yes\"\n\n{}",
            TWO_PLUGINS.replace(
                "component = \"q.wasm\"",
                &format!("component = \"q.wasm\"\ntrusted_keys = \"{KEY_B}\"")
            )
        );
        let (_dir, policy) = signed_layout(&text);
        let messages = located(&policy.unwrap_err().0);
        assert_has(
            &messages,
            "2:22: in [agent]: invalid type: string \"yes\", expected a boolean",
        );
        assert_has(
            &messages,
            "11:16: in [plugins.q]: invalid type: string \"RWRrm/mOAqslUSeNIUT+oyQ0VgZJ13Tiwit3VHTP9owZ1FLE1O3iz0YF\", expected a sequence",
        );
    }

    #[test]
    fn a_policy_without_plugins_is_an_error() {
        let errors = errors("[agent]\nstate_dir = \"s\"\n");
        assert_eq!(errors[0].message, "the policy configures no plugins");
        // Located where the table would go: the end of the file.
        assert_eq!((errors[0].line, errors[0].column), (3, 1));
    }

    /// A layout with `plugins/p.wasm`, and `text` parsed as its policy.
    fn with_component(text: &str) -> Result<Policy, PolicyErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        Policy::parse(&dir.path().join("policy.toml"), text)
    }

    const LONGEST: &str = "8784h";

    #[test]
    fn every_duration_is_capped_where_it_is_parsed() {
        let template = r#"[plugins.p]
component = "p.wasm"
limits = { timeout = "TIMEOUT" }
rate = { max_runs = 1, per = "PER", cooldown = "COOLDOWN" }
flap_guard = { max_mutating_runs = 1, within = "WITHIN" }
[[plugins.p.triggers]]
kind = "file"
path = "/srv"
debounce = "DEBOUNCE"
[[plugins.p.triggers]]
kind = "every"
interval = "INTERVAL"
"#;
        let keys = [
            "TIMEOUT", "PER", "COOLDOWN", "WITHIN", "DEBOUNCE", "INTERVAL",
        ];
        for long in ["18446744073709551615ms", "8785h", "99999999999999999999s"] {
            for key in keys {
                let mut text = template.to_string();
                for other in keys {
                    text = text.replace(other, if other == key { long } else { "1s" });
                }
                let errors = with_component(&text).unwrap_err().0;
                assert_eq!(errors.len(), 1, "{key} = {long}: {errors:#?}");
                assert!(
                    errors[0].message.contains("366 days") && errors[0].line > 0,
                    "{key} = {long}: {errors:#?}"
                );
            }
        }
        let mut text = template.to_string();
        for key in keys {
            text = text.replace(key, LONGEST);
        }
        let policy = with_component(&text).unwrap();
        let plugin = &policy.plugins[0];
        assert_eq!(plugin.limits.timeout, crate::units::MAX_DURATION);
        assert_eq!(plugin.rate.unwrap().cooldown, crate::units::MAX_DURATION);
        assert_eq!(
            plugin.flap_guard.unwrap().within,
            crate::units::MAX_DURATION
        );
    }

    /// What `check` accepts must not panic `run`: the longest durations,
    /// the largest counts, driven through the dispatcher's scheduler at
    /// every edge of the clock.
    #[test]
    fn the_longest_limits_a_policy_takes_cannot_overflow_the_scheduler() {
        use crate::dispatch::schedule::{Counters, Rules, Scheduler};
        let text = format!(
            r#"[agent]
max_concurrent_runs = 256
queue_capacity = 1000000
[plugins.p]
component = "p.wasm"
concurrency = 64
rate = {{ max_runs = 4294967295, per = "{LONGEST}", cooldown = "{LONGEST}" }}
flap_guard = {{ max_mutating_runs = 1, within = "{LONGEST}" }}
[[plugins.p.triggers]]
kind = "manual"
[plugins.q]
component = "p.wasm"
rate = {{ max_runs = 1, per = "{LONGEST}", cooldown = "0ms" }}
flap_guard = {{ max_mutating_runs = 4294967295, within = "1ms" }}
[[plugins.q.triggers]]
kind = "manual"
"#
        );
        let policy = with_component(&text).unwrap();
        let mut scheduler: Scheduler<u64> = Scheduler::new(
            policy.agent.max_concurrent_runs,
            policy.agent.queue_capacity,
        );
        let _ = scheduler.set_plugins(policy.plugins.iter().map(|p| {
            let rules = Rules {
                concurrency: p.concurrency,
                rate: p.rate,
                flap_guard: p.flap_guard,
            };
            (p.name.clone(), rules, Counters::default())
        }));
        let longest = crate::units::MAX_DURATION.as_millis() as u64;
        let times = [
            0,
            1,
            longest,
            u64::MAX / 2,
            u64::MAX - longest,
            u64::MAX - 1,
            u64::MAX,
            0,
        ];
        let mut started = 0;
        for (n, now) in times.into_iter().enumerate() {
            for plugin in ["p", "q"] {
                let _ = scheduler.offer(plugin, &format!("s{n}"), now);
            }
            let decisions = scheduler.next_runs(now);
            for start in decisions.starts {
                started += 1;
                let _ = scheduler.finish(start.ticket, true, now);
            }
            let _ = scheduler.next_wake(now);
        }
        assert!(started >= 2, "{started}");
    }

    #[test]
    fn sizes_are_capped_where_they_are_parsed() {
        for (limits, expected) in [
            ("memory = \"18446744073709551615KiB\"", "1 TiB"),
            ("memory = \"2GiB\"", "out of range"),
            ("memory = \"0\"", "out of range"),
            ("state_quota = \"99999999999999999999\"", "1 TiB"),
            ("state_quota = \"65MiB\"", "out of range"),
            ("state_quota = \"1024GiB\"", "out of range"),
        ] {
            let text = format!(
                "[plugins.p]\ncomponent = \"p.wasm\"\nlimits = {{ {limits} }}\n[[plugins.p.triggers]]\nkind = \"manual\"\n"
            );
            let errors = with_component(&text).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{limits}: {errors:#?}");
            assert!(
                errors[0].message.contains(expected) && errors[0].line == 3,
                "{limits}: {errors:#?}"
            );
        }
        let errors = with_component(
            "[agent]\nqueue_capacity = 9223372036854775807\n[plugins.p]\ncomponent = \"p.wasm\"\n[[plugins.p.triggers]]\nkind = \"manual\"\n",
        )
        .unwrap_err()
        .0;
        assert!(errors[0].message.contains("out of range"), "{errors:#?}");
    }

    #[test]
    fn text_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let mut bytes = b"[agent]\nstate_dir = \"caf\xc3\xa9\"\nplugin_dir = \"x".to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(b"\"\n");
        let errors = Policy::parse_bytes_with(
            Path::new("/etc/medic/policy.toml"),
            &bytes,
            &SystemProbe,
            &mut |_| Vec::new(),
        )
        .unwrap_err()
        .0;
        assert_eq!(errors.len(), 1);
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with(
                "/etc/medic/policy.toml:3:16: the policy is not UTF-8 text: byte 43 (0xff)"
            ),
            "{shown}"
        );
        assert!(shown.contains("fix: save the policy as UTF-8"), "{shown}");
        // A sequence cut short at the very end.
        let errors = Policy::parse_bytes_with(
            Path::new("p.toml"),
            b"\n\xe2\x82",
            &SystemProbe,
            &mut |_| Vec::new(),
        )
        .unwrap_err()
        .0;
        assert_eq!((errors[0].line, errors[0].column), (2, 1), "{errors:#?}");
    }

    #[test]
    fn a_syntax_error_without_a_place_in_the_parser_is_placed_all_the_same() {
        // A dotted key of more parts than the parser recurses into.
        let key = vec!["a"; 100].join(".");
        let text = format!("[agent]\nstate_dir = \"s\"\n\n  {key} = 1\n");
        let errors = errors(&text);
        let recursion = errors
            .iter()
            .find(|e| e.message.contains("recursion"))
            .unwrap_or_else(|| panic!("{errors:#?}"));
        assert_eq!((recursion.line, recursion.column), (4, 3), "{errors:#?}");
        // Deep nesting of arrays and tables.
        for deep in [
            "x = ".to_string() + &"[".repeat(200),
            "x = ".to_string() + &"{a=".repeat(200),
        ] {
            let nested = parse(&deep).unwrap_err().0;
            assert!(
                nested
                    .iter()
                    .all(|e| e.line > 0 && e.column > 0 && !e.fix.is_empty()),
                "{nested:#?}"
            );
        }
    }

    #[test]
    fn a_missing_backend_key_is_located_at_its_table() {
        let text = "[plugins.p]\ncomponent = \"p.wasm\"\n[[plugins.p.triggers]]\nkind = \"manual\"\n\n[backend]\nkind = \"lab\"\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        let errors = Policy::parse_with(
            &dir.path().join("policy.toml"),
            text,
            &SystemProbe,
            &mut |section| vec![section.error("lab", "a lab backend needs `lab`", "add lab")],
        )
        .unwrap_err()
        .0;
        assert_eq!((errors[0].line, errors[0].column), (6, 2), "{errors:#?}");
        // With no [backend] table at all: where one would go.
        let errors = Policy::parse_with(
            &dir.path().join("policy.toml"),
            &text[..text.find("[backend]").unwrap()],
            &SystemProbe,
            &mut |section| vec![section.error("lab", "needs `lab`", "add lab")],
        )
        .unwrap_err()
        .0;
        assert_eq!((errors[0].line, errors[0].column), (6, 1), "{errors:#?}");
    }

    #[test]
    fn a_policy_file_is_read_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.toml");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(MAX_POLICY_BYTES + 1)
            .unwrap();
        let errors = Policy::load(&file).unwrap_err().0;
        assert!(errors[0].message.contains("4 MiB"), "{errors:#?}");
        #[cfg(unix)]
        {
            let errors = Policy::load(Path::new("/dev/zero")).unwrap_err().0;
            assert!(errors[0].message.contains("4 MiB"), "{errors:#?}");
        }
        let errors = Policy::load(dir.path()).unwrap_err().0;
        assert!(
            errors[0].message.starts_with("cannot read the policy"),
            "{errors:#?}"
        );
    }

    /// Serving-read `text` as the policy of a folder holding
    /// `plugins/p.wasm` and `plugins/q.wasm`; the strict read's errors too.
    fn serving(text: &str) -> (Result<ServingPolicy, PolicyErrors>, Vec<PolicyError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for name in ["p.wasm", "q.wasm"] {
            std::fs::write(dir.path().join("plugins").join(name), b"").unwrap();
        }
        let file = dir.path().join("policy.toml");
        let read =
            Policy::parse_serving_with(&file, text.as_bytes(), &SystemProbe, &mut |_| Vec::new());
        let strict = Policy::parse(&file, text)
            .err()
            .map_or_else(Vec::new, |e| e.0);
        (read, strict)
    }

    fn serving_names(read: &ServingPolicy) -> (Vec<&str>, Vec<&str>) {
        (
            read.policy
                .plugins
                .iter()
                .map(|p| p.name.as_str())
                .collect(),
            read.set_aside.iter().map(|s| s.plugin.as_str()).collect(),
        )
    }

    fn read_in_dir(text: &str) -> (tempfile::TempDir, Reading) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        for name in ["p.wasm", "q.wasm"] {
            std::fs::write(dir.path().join("plugins").join(name), b"").unwrap();
        }
        let file = dir.path().join("policy.toml");
        let reading =
            Policy::parse_reading_with(&file, text.as_bytes(), &SystemProbe, &mut |_| Vec::new())
                .unwrap();
        (dir, reading)
    }

    fn lines_and_messages(reading: &Reading) -> Vec<String> {
        reading
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.error.line, p.error.message))
            .collect()
    }

    #[test]
    fn a_key_with_a_problem_hides_none_of_the_rest_of_its_table() {
        let text = r#"[agent]
colour = "blue"
log_format = "xml"
max_concurrent_runs = 0

[plugins.p]
component = "p.wasm"
shade = "dark"
mode = "yolo"
concurrency = "two"
limits = { timeout = "soon", memory = 64 }
rate = { max_runs = "many", per = "1h" }
flap_guard = { max_mutating_runs = 3, within = "soon" }
grants = { wsus = "read", fs-read = ["/srv"] }

[[plugins.p.triggers]]
kind = "every"
interval = "1ms"

[[plugins.p.triggers]]
kind = "file"
path = "/srv"
changes = ["explode"]

[[plugins.p.triggers]]
path = "/srv"

[[plugins.p.triggers]]
kind = "manual"
colour = "red"
"#;
        let (_dir, reading) = read_in_dir(text);
        let found = lines_and_messages(&reading);
        for expected in [
            "2: in [agent]: unknown field `colour`",
            "3: in [agent]: unknown variant `xml`",
            "4: max_concurrent_runs = 0 is out of range",
            "8: in [plugins.p]: unknown field `shade`",
            "9: unknown mode `yolo`",
            "10: in [plugins.p]: invalid type: string \"two\"",
            "11: limits.timeout: `soon` is not a duration",
            "11: in [plugins.p]: invalid type: integer `64`",
            "12: in [plugins.p]: invalid type: string \"many\"",
            "13: flap_guard.within: `soon` is not a duration",
            "14: in [plugins.p]: invalid type: string \"read\"",
            "18: interval is below 100ms",
            "23: in [plugins.p]: unknown variant `explode`",
            "25: in [plugins.p]: missing field `kind`",
            "30: in [plugins.p]: unknown field `colour`",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
        // Nothing more: what was left out is no problem of its own (the
        // `rate` table without the `max_runs` taken out of it, the
        // plugin's triggers once the bad ones are out), and [agent]'s
        // plugin_dir is still the one it names.
        assert_eq!(found.len(), 15, "{found:#?}");
        let fixes: Vec<&str> = reading
            .problems
            .iter()
            .map(|p| p.error.fix.as_str())
            .collect();
        assert!(fixes.iter().all(|f| !f.is_empty()), "{fixes:#?}");
        assert!(
            fixes.contains(&"correct the type of limits.memory in [plugins.p]"),
            "{fixes:#?}"
        );
        // The table is still read as far as it goes, for the checks of
        // its component: its grants had a problem.
        assert_eq!(reading.partial.len(), 1);
        assert_eq!(reading.partial[0].policy.name, "p");
        assert!(!reading.partial[0].grants_read);
        assert!(reading.trust_read);
        assert!(reading.partial[0].policy.grants.has(Capability::FsRead));
    }

    #[test]
    fn a_table_with_problems_is_kept_for_its_components_checks() {
        let text = format!(
            "[agent]\nqueue_capacity = 0\n\n{}",
            TWO_PLUGINS
                .replace(
                    "component = \"p.wasm\"",
                    "component = \"p.wasm\"\nmode = \"yolo\""
                )
                .replace("component = \"q.wasm\"", "component = \"gone.wasm\"")
        );
        let (_dir, reading) = read_in_dir(&text);
        // A problem outside the plugin tables, and one in each table.
        assert_eq!(reading.outside().len(), 1, "{:#?}", reading.problems);
        let set_aside = reading.set_aside();
        let names: Vec<&str> = set_aside.iter().map(|s| s.plugin.as_str()).collect();
        assert_eq!(names, ["p", "q"]);
        assert_eq!(reading.every_problem().0.len(), 3);
        // `p`'s component can still be checked, with its grants; `q`'s is
        // not there.
        let partial: Vec<(&str, bool)> = reading
            .partial
            .iter()
            .map(|p| (p.policy.name.as_str(), p.grants_read))
            .collect();
        assert_eq!(partial, [("p", true)]);
        assert!(reading.policy.plugins.is_empty());

        // A table whose keys to check a signature with had a problem is
        // not: its component must not run before its signature is checked.
        let text = TWO_PLUGINS.replace(
            "component = \"p.wasm\"",
            "component = \"p.wasm\"\nmode = \"yolo\"\ntrusted_keys = [\"RWQnotakey\"]",
        );
        let (_dir, reading) = read_in_dir(&text);
        assert!(reading.partial.is_empty(), "{:#?}", reading.partial);
        // Keys of the wrong type were still meant to be trusted: the other
        // plugins must be signed, as with keys of the right type.
        let text = TWO_PLUGINS.replace(
            "component = \"p.wasm\"",
            "component = \"p.wasm\"\ntrusted_keys = \"RWQnotakey\"",
        );
        let (_dir, reading) = read_in_dir(&text);
        assert!(reading.partial.is_empty(), "{:#?}", reading.partial);
        let found = lines_and_messages(&reading);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("7: plugin `q` must be signed")),
            "{found:#?}"
        );
        // Nor is a plugin that uses [agent]'s keys when they had one.
        let text = format!("[agent]\ntrusted_keys = \"RWQ\"\n\n{TWO_PLUGINS}");
        let (_dir, reading) = read_in_dir(&text);
        assert!(!reading.trust_read, "{:#?}", reading.problems);
        let text = format!("[agent]\ntrusted_keys = [\"RWQ\"]\n\n{TWO_PLUGINS}");
        let (_dir, reading) = read_in_dir(&text);
        assert!(!reading.trust_read, "{:#?}", reading.problems);
        let (_dir, reading) = read_in_dir(TWO_PLUGINS);
        assert!(reading.trust_read);
    }

    #[test]
    fn a_bad_plugin_table_is_set_aside_with_its_problems_and_the_rest_kept() {
        // A key serde does not know is left out, and the rest of the
        // table read: both problems are found.
        let text = TWO_PLUGINS.replace(
            "component = \"p.wasm\"",
            "component = \"p.wasm\"\nconcurrency = 0\ncolour = \"blue\"",
        );
        let (read, strict) = serving(&text);
        let read = read.unwrap();
        assert_eq!(serving_names(&read), (vec!["q"], vec!["p"]));
        let lines: Vec<usize> = read.set_aside[0].errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 3], "{:#?}", read.set_aside);
        // The strict read refuses it with the same problems.
        assert_eq!(strict, read.set_aside[0].errors);

        // A table that deserializes: every problem in it is found.
        let text = TWO_PLUGINS.replace(
            "component = \"q.wasm\"",
            "component = \"q.wasm\"\nconcurrency = 0\nmode = \"sideways\"",
        );
        let (read, strict) = serving(&text);
        let read = read.unwrap();
        assert_eq!(serving_names(&read), (vec!["p"], vec!["q"]));
        assert_eq!(read.set_aside[0].errors.len(), 2, "{:#?}", read.set_aside);
        assert_eq!(strict, read.set_aside[0].errors);
    }

    #[test]
    fn a_plugin_with_a_bad_name_is_set_aside() {
        let (read, strict) = serving(&TWO_PLUGINS.replace("plugins.q", "plugins.Q_bad"));
        let read = read.unwrap();
        assert_eq!(serving_names(&read), (vec!["p"], vec!["Q_bad"]));
        assert!(
            read.set_aside[0].errors[0]
                .message
                .contains("not a valid plugin name"),
            "{:#?}",
            read.set_aside
        );
        assert_eq!(strict, read.set_aside[0].errors);
    }

    #[test]
    fn a_problem_outside_the_plugin_tables_refuses_the_whole_policy() {
        let bad_plugin = TWO_PLUGINS.replace("component = \"q.wasm\"", "component = 7");
        for (before, expected) in [
            ("[agent]\nqueue_capacity = 0\n", "queue_capacity"),
            ("[agent]\nstate_dir = [\n", "TOML syntax"),
            ("[extras]\n", "unknown table"),
        ] {
            let (read, strict) = serving(&format!("{before}\n{bad_plugin}"));
            let errors = read.unwrap_err().0;
            assert!(
                errors.iter().any(|e| e.message.contains(expected)),
                "{before}: {errors:#?}"
            );
            // With every problem, the plugin's too.
            assert!(errors.len() >= 2, "{before}: {errors:#?}");
            assert_eq!(strict, errors);
        }
        // The backend's check is outside the plugin tables too.
        let errors = Policy::parse_serving_with(
            Path::new("/nowhere/policy.toml"),
            TWO_PLUGINS.as_bytes(),
            &SystemProbe,
            &mut |section| vec![section.error("kind", "no such backend", "fix it")],
        )
        .unwrap_err()
        .0;
        assert!(errors.iter().any(|e| e.message == "no such backend"));
    }
}
