//! The one loading path, for start-up, reload, `medic check` and
//! `medic approve`: read the policy, open its backends, load every plugin it
//! names and check that its component is signed as its policy requires
//! (before anything of it is compiled), that it describes itself with the
//! policy's name for it and is granted what it asks for. Every problem is
//! reported at once.

use crate::audit::StoreError;
use crate::backend::BackendCatalog;
use crate::context::ActivePlugin;
use crate::policy::{
    BackendSection, PartialPlugin, PluginPolicy, Policy, PolicyError, PolicyErrors, Reading,
    SetAside, Trust,
};
use crate::triggers;
use medic_backends::Backends;
use medic_sandbox::signature::{MAX_SIGNATURE_TEXT_LEN, Signer, VerifyError, signature_path};
use medic_sandbox::{
    Capability, Grants, HashedComponent, LoadedPlugin, Runtime, RuntimeConfig, RuntimeError,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trigger(#[from] triggers::TriggerError),
    #[error("cannot watch the inbox for manual events: {0}")]
    Inbox(String),
    #[error("cannot watch the policy and plugin directory for changes: {0}")]
    Watch(String),
}

/// A problem with one plugin's table, located at the table.
pub(crate) fn plugin_error(
    policy: &Policy,
    plugin: &PluginPolicy,
    message: String,
    fix: &str,
) -> PolicyError {
    PolicyError {
        file: policy.file.clone(),
        line: plugin.line,
        column: 1,
        message,
        fix: fix.to_string(),
    }
}

/// How to grant a plugin what it is missing: the `grants` line its table
/// needs, with what it grants already and a placeholder for each scope
/// wanted.
fn grants_fix(plugin: &PluginPolicy, missing: &[Capability]) -> String {
    let line = plugin.grants.policy_line(missing);
    if plugin.grants == Grants::none() {
        format!("add to [plugins.{}]: {line}", plugin.name)
    } else {
        format!("write the grants of [plugins.{}] as {line}", plugin.name)
    }
}

/// Why a component's signature is refused. Each reads after the
/// component's name: "x.wasm (sha256 …) is unsigned: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Required, and there is no signature file.
    #[error(
        "is unsigned: there is no {} beside it, and a signature is required",
        signature.display()
    )]
    Unsigned { signature: PathBuf },
    /// Required, and no key is trusted to check it with.
    #[error("must be signed, but the policy trusts no key for it")]
    NoTrustedKey,
    /// The signature file is there but cannot be read.
    #[error("has a signature that cannot be read, {}: {reason}", signature.display())]
    Unreadable { signature: PathBuf, reason: String },
    /// The signature file is not a minisign signature medic accepts.
    #[error("has a signature that is not a valid minisign signature, {}: {detail}", signature.display())]
    Malformed { signature: PathBuf, detail: String },
    /// Signed by a key not trusted for this plugin.
    #[error("is signed by key {key_id}, which is not trusted for it (trusted: {trusted})")]
    UntrustedKey { key_id: String, trusted: String },
    /// Signed by a trusted key, but not these bytes.
    #[error(
        "does not match its signature {}: the signature by trusted key {key_id} was made for other bytes",
        signature.display()
    )]
    BadSignature { signature: PathBuf, key_id: String },
}

impl SignatureError {
    /// What to do about it.
    pub fn fix(&self, component: &Path) -> String {
        let sign = format!(
            "medic plugins sign --key <secret .key> {}",
            component.display()
        );
        match self {
            Self::Unsigned { .. } => format!("sign it with a key the policy trusts: {sign}"),
            Self::NoTrustedKey => {
                "add trusted_keys to [agent] or to the plugin's table".to_string()
            }
            Self::Unreadable { .. } | Self::Malformed { .. } => {
                format!("sign the component again: {sign}")
            }
            Self::UntrustedKey { key_id, .. } => format!(
                "sign it with a key the policy trusts ({sign}), or add key {key_id}'s public key to trusted_keys if you trust it"
            ),
            Self::BadSignature { .. } => format!(
                "sign this build again ({sign}), or install the component its signature was made for"
            ),
        }
    }
}

/// Check `bytes`, read from `component`, against the detached signature
/// beside it (`<component>.minisig`) and the keys `trust` names. Returns
/// who signed it, or `None` when nothing was to be checked: no key is
/// trusted, or no signature is there and none is required. A signature
/// that is there is always checked when some key is trusted.
pub fn check_signature(
    trust: &Trust,
    component: &Path,
    bytes: &[u8],
) -> Result<Option<Signer>, SignatureError> {
    if trust.keys.is_empty() {
        return if trust.required {
            Err(SignatureError::NoTrustedKey)
        } else {
            Ok(None)
        };
    }
    let signature = signature_path(component);
    let text = match read_signature(&signature) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if trust.required {
                Err(SignatureError::Unsigned { signature })
            } else {
                Ok(None)
            };
        }
        Err(e) => {
            return Err(SignatureError::Unreadable {
                signature,
                reason: e.to_string(),
            });
        }
    };
    trust
        .keys
        .verify(bytes, &text)
        .map(Some)
        .map_err(|e| match e {
            VerifyError::MalformedSignature(detail) => {
                SignatureError::Malformed { signature, detail }
            }
            VerifyError::UntrustedKey { key_id } => SignatureError::UntrustedKey {
                key_id,
                trusted: trust.key_ids(),
            },
            VerifyError::BadSignature { key_id } => {
                SignatureError::BadSignature { signature, key_id }
            }
        })
}

/// A signature file's text, read no further than a signature can be long.
fn read_signature(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    // Asked before opening: opening a FIFO would wait for a writer.
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SIGNATURE_TEXT_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    // Too long or not text: the check says it is malformed.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Load the plugin `plugin` names and check it against its table: its
/// signature first, on the bytes that are then compiled. When `previous`
/// was loaded from the same bytes, its compiled component is reused rather
/// than loaded again (the signature is checked all the same: the keys or
/// the signature may have changed).
pub fn load_plugin(
    runtime: &Runtime,
    policy: &Policy,
    plugin: &PluginPolicy,
    previous: Option<&ActivePlugin>,
) -> Result<ActivePlugin, PolicyError> {
    load_checking(runtime, policy, plugin, previous, true)
}

/// [`load_plugin`], checking the grants only when `grants` says so (a
/// table whose grants had problems is checked for the rest).
fn load_checking(
    runtime: &Runtime,
    policy: &Policy,
    plugin: &PluginPolicy,
    previous: Option<&ActivePlugin>,
    grants: bool,
) -> Result<ActivePlugin, PolicyError> {
    let unreadable = |e: medic_sandbox::LoadError| {
        plugin_error(
            policy,
            plugin,
            format!("plugin `{}`: {e}", plugin.name),
            "rebuild the component, or point `component` at a medic plugin",
        )
    };
    let component =
        HashedComponent::new(medic_sandbox::read_component(&plugin.component).map_err(unreadable)?);
    let signer =
        check_signature(&plugin.trust, &plugin.component, component.bytes()).map_err(|e| {
            plugin_error(
                policy,
                plugin,
                format!(
                    "plugin `{}`: {} (sha256 {}) {e}",
                    plugin.name,
                    plugin.component.display(),
                    &component.hash()[..12]
                ),
                &e.fix(&plugin.component),
            )
        })?;
    let loaded: LoadedPlugin = match previous {
        Some(old) if old.loaded.hash == component.hash() => old.loaded.clone(),
        _ => runtime
            .load_hashed_within(
                &component,
                &plugin.component.display().to_string(),
                plugin.limits.memory_bytes,
            )
            .map_err(|e| {
                plugin_error(
                    policy,
                    plugin,
                    format!("plugin `{}`: {e}", plugin.name),
                    "rebuild the component, or point `component` at a medic plugin",
                )
            })?,
    };
    if loaded.info.name != plugin.name {
        return Err(plugin_error(
            policy,
            plugin,
            format!(
                "[plugins.{}] names a component that describes itself as `{}`",
                plugin.name, loaded.info.name
            ),
            &format!(
                "rename the table to [plugins.{}] or point `component` at the right file",
                loaded.info.name
            ),
        ));
    }
    let missing = plugin.grants.missing(&loaded.info.capabilities);
    if grants && !missing.is_empty() {
        return Err(plugin_error(
            policy,
            plugin,
            medic_sandbox::missing_grants(&loaded.info.name, &loaded.origin, &missing),
            &grants_fix(plugin, &missing),
        ));
    }
    Ok(ActivePlugin {
        grants: Arc::new(plugin.grants.clone()),
        settings: Arc::new(plugin.settings.clone()),
        policy: plugin.clone(),
        loaded,
        signer,
    })
}

/// The sandbox a policy configures. With `quick_tier` (the agent, which
/// lives long enough for the background compile), a plugin the compile
/// cache does not hold serves from the quick tier while its optimized code
/// is compiled; a one-shot command compiles it before it runs, and leaves
/// it in the cache.
pub(crate) fn runtime_for(policy: &Policy, quick_tier: bool) -> Result<Runtime, RuntimeError> {
    let slots = policy.agent.max_concurrent_runs as u32 + policy.plugins.len() as u32 + 4;
    Runtime::new(&RuntimeConfig {
        cache_dir: Some(policy.agent.cache_dir.clone()),
        max_instances: slots.max(16),
        quick_tier,
    })
}

/// Everything a policy file configures, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub runtime: Runtime,
    pub backends: Backends,
    pub plugins: Vec<ActivePlugin>,
}

/// A plugin the policy names whose component or table was refused.
#[derive(Debug)]
pub struct Refused {
    pub plugin: String,
    /// Why: at least one problem.
    pub errors: Vec<PolicyError>,
}

impl Refused {
    /// The first problem's message, and how many more there are.
    pub fn reason(&self) -> String {
        let first = self.errors.first().map_or("", |e| e.message.as_str());
        match self.errors.len() {
            0 | 1 => first.to_string(),
            n => format!(
                "{first} (and {} more problem{})",
                n - 1,
                if n == 2 { "" } else { "s" }
            ),
        }
    }
}

/// Every problem of every refused plugin, as one policy error.
fn refusal(refused: Vec<Refused>) -> PolicyErrors {
    in_file_order(refused.into_iter().flat_map(|r| r.errors).collect())
}

/// Problems in the order of their places in the file (those with no place
/// first), as a person fixing it reads it.
fn in_file_order(mut errors: Vec<PolicyError>) -> PolicyErrors {
    errors.sort_by_key(|e| (e.line, e.column));
    PolicyErrors(errors)
}

/// Read `policy_file`, open its backends through `catalog`, load and check
/// every plugin; all problems at once. Any problem refuses the whole
/// policy: what `medic approve` wants.
pub fn load(policy_file: &Path, catalog: &dyn BackendCatalog) -> Result<Loaded, AgentError> {
    let (loaded, refused) = load_serving(policy_file, catalog)?;
    if refused.is_empty() {
        Ok(loaded)
    } else {
        Err(refusal(refused).into())
    }
}

/// A policy file and its plugins, checked; its backend checked but not
/// opened.
#[derive(Debug)]
pub struct Checked {
    pub policy: Policy,
    pub plugins: Vec<ActivePlugin>,
}

/// What `medic check` does: as [`load`], but the backend is only checked
/// ([`BackendCatalog::check`]), so that a policy for another system (a
/// Windows server's, checked on Linux) can be validated before it ships.
pub fn check(policy_file: &Path, catalog: &dyn BackendCatalog) -> Result<Checked, AgentError> {
    let (policy, _, plugins, refused) =
        read_and_load(policy_file, &mut |section| catalog.check(section))?;
    if refused.is_empty() {
        Ok(Checked { policy, plugins })
    } else {
        Err(refusal(refused).into())
    }
}

/// As [`load`], but a plugin whose table, component or checks fail is
/// left out and returned with why, so that one bad plugin does not keep
/// the others from serving. A policy that cannot be read, has a problem
/// outside its plugin tables, or whose backend cannot be opened, is still
/// refused whole.
pub fn load_serving(
    policy_file: &Path,
    catalog: &dyn BackendCatalog,
) -> Result<(Loaded, Vec<Refused>), AgentError> {
    let mut backends = None;
    let (policy, runtime, plugins, refused) =
        read_and_load(policy_file, &mut |section| match catalog.open(section) {
            Ok(opened) => {
                backends = Some(opened);
                Vec::new()
            }
            Err(errors) => errors,
        })?;
    let Some(backends) = backends else {
        // The callback reported why, and the policy was refused with it.
        return Err(refusal(refused).into());
    };
    Ok((
        Loaded {
            policy,
            runtime,
            backends,
            plugins,
        },
        refused,
    ))
}

/// Read `policy_file` (its backend section handed to `backend`), and
/// load every plugin it names: those that load, and those refused with
/// why. A policy with a problem outside its plugin tables is refused with
/// every problem found, its plugins' included: their components are
/// loaded and checked all the same, and so are those of tables with
/// problems, as far as the problems allow, so that one round reports
/// everything.
fn read_and_load(
    policy_file: &Path,
    backend: &mut dyn FnMut(&BackendSection) -> Vec<PolicyError>,
) -> Result<(Policy, Runtime, Vec<ActivePlugin>, Vec<Refused>), AgentError> {
    let reading = Policy::load_reading_with(policy_file, backend)?;
    let outside = reading.outside();
    let mut refused: Vec<Refused> = reading
        .set_aside()
        .into_iter()
        .map(|SetAside { plugin, errors }| Refused { plugin, errors })
        .collect();
    let Reading {
        policy,
        partial,
        trust_read,
        ..
    } = reading;
    let refuse_whole = |outside: Vec<PolicyError>, refused: Vec<Refused>| {
        let mut errors = outside;
        errors.extend(refused.into_iter().flat_map(|r| r.errors));
        AgentError::from(in_file_order(errors))
    };
    let runtime = match runtime_for(&policy, true) {
        Ok(runtime) => runtime,
        // The policy's own problems come first (a cache folder it names
        // may be one of them).
        Err(_) if !outside.is_empty() => return Err(refuse_whole(outside, refused)),
        Err(e) => return Err(e.into()),
    };
    // Cranelift's background compiles wait until every plugin serves:
    // started earlier, they would share the cores with the quick compiles
    // of the plugins still to load, and the agent would be ready later.
    let optimizing_held = runtime.hold_optimizing();
    let mut plugins = Vec::new();
    for plugin in &policy.plugins {
        // A component is run only once its signature is checked as the
        // policy means it: not with [agent]'s keys when they had a problem
        // (the policy is refused for it anyway).
        if !trust_read && plugin.trust == policy.trust {
            continue;
        }
        match load_plugin(&runtime, &policy, plugin, None) {
            Ok(active) => plugins.push(active),
            Err(error) => refused.push(Refused {
                plugin: plugin.name.clone(),
                errors: vec![error],
            }),
        }
    }
    // Not served, but checked: a component that does not load, is not
    // signed as required, or asks for more than its grants is reported
    // with the table's own problems.
    for PartialPlugin {
        policy: plugin,
        grants_read,
    } in &partial
    {
        if let Err(error) = load_checking(&runtime, &policy, plugin, None, *grants_read)
            && let Some(entry) = refused.iter_mut().find(|r| r.plugin == plugin.name)
        {
            entry.errors.push(error);
        }
    }
    drop(optimizing_held);
    if !outside.is_empty() {
        return Err(refuse_whole(outside, refused));
    }
    Ok((policy, runtime, plugins, refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sandbox::signature::{PublicKey, TrustedKeys};

    // Made with the minisign tool: `minisign -S -t file:c.wasm` of BYTES.
    const BYTES: &[u8] = b"component bytes";
    const KEY: &str = "RWQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD";
    const KEY_ID: &str = "F498E2065B4DFD38";
    const OTHER_KEY: &str = "RWRrm/mOAqslUSeNIUT+oyQ0VgZJ13Tiwit3VHTP9owZ1FLE1O3iz0YF";
    const SIGNATURE: &str = "untrusted comment: signature from minisign secret key
RUQ4/U1bBuKY9MPPdGrqOYO7b2XYdQm3TdozGbxAF7hpfWkh4iLr+nuBsHKTJuAGTbfj8cRLzxKTqbW8d4ljRsj6QLuWQqN2egU=
trusted comment: file:c.wasm
TP2Z4Ci6OzMTZu8T7dAyHJc6hZmSZfhzGfHcaFDBacs+YEDj1IyFZ/xzFa1TYqA8lFDWV1apA2aZCP2k4r5DCQ==
";

    fn trust(key: &str, required: bool) -> Trust {
        Trust {
            keys: TrustedKeys::new([PublicKey::parse(key).unwrap()]),
            required,
        }
    }

    #[test]
    fn a_missing_grant_is_fixed_with_the_line_the_table_needs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/p.wasm"), b"").unwrap();
        let file = dir.path().join("policy.toml");
        let table = |grants: &str| {
            format!(
                "[plugins.p]\ncomponent = \"p.wasm\"\n{grants}\n[[plugins.p.triggers]]\nkind = \"manual\"\n"
            )
        };
        let asked = [
            Capability::FsRead,
            Capability::FsWrite,
            Capability::parse("wsus-read").unwrap(),
            Capability::parse("wsus-sync").unwrap(),
        ];
        let policy = Policy::parse(&file, &table("")).unwrap();
        let plugin = &policy.plugins[0];
        let missing = plugin.grants.missing(&asked);
        let fix = grants_fix(plugin, &missing);
        assert_eq!(
            fix,
            r#"add to [plugins.p]: grants = { fs-read = ["<root path>"], fs-write = ["<root path>"], wsus = ["read", "sync"] }"#
        );

        let policy = Policy::parse(
            &file,
            &table(r#"grants = { fs-read = ["/srv/share"], wsus = ["read"] }"#),
        )
        .unwrap();
        let plugin = &policy.plugins[0];
        let missing = plugin.grants.missing(&asked);
        let fix = grants_fix(plugin, &missing);
        let line = r#"grants = { fs-read = ["/srv/share"], fs-write = ["<root path>"], wsus = ["read", "sync"] }"#;
        assert_eq!(fix, format!("write the grants of [plugins.p] as {line}"));
        // The line, with a root in place of the placeholder, is what the
        // table needs.
        let fixed =
            Policy::parse(&file, &table(&line.replace("<root path>", "/srv/data"))).unwrap();
        assert!(fixed.plugins[0].grants.missing(&asked).is_empty());
    }

    #[test]
    fn a_signature_is_checked_as_the_trust_says() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("c.wasm");
        let signature = dir.path().join("c.wasm.minisig");
        std::fs::write(&component, BYTES).unwrap();
        let check = |trust: &Trust| check_signature(trust, &component, BYTES);

        // Nothing trusted: nothing checked, unless a signature is required.
        assert_eq!(check(&Trust::default()), Ok(None));
        let required_without_keys = Trust {
            required: true,
            ..Trust::default()
        };
        assert_eq!(
            check(&required_without_keys),
            Err(SignatureError::NoTrustedKey)
        );
        // No signature: refused when required only.
        assert_eq!(
            check(&trust(KEY, true)),
            Err(SignatureError::Unsigned {
                signature: signature.clone()
            })
        );
        assert_eq!(check(&trust(KEY, false)), Ok(None));

        // Signed: accepted, with who signed it.
        std::fs::write(&signature, SIGNATURE).unwrap();
        let signer = check(&trust(KEY, true)).unwrap().unwrap();
        assert_eq!(signer.key_id, KEY_ID);
        assert_eq!(signer.trusted_comment, "file:c.wasm");

        // A signature that is there is checked even when not required.
        let refused = check(&trust(OTHER_KEY, false)).unwrap_err();
        assert_eq!(
            refused,
            SignatureError::UntrustedKey {
                key_id: KEY_ID.into(),
                trusted: "5125AB028EF99B6B".into()
            }
        );
        assert!(refused.fix(&component).contains("medic plugins sign"));
        let mut tampered = BYTES.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            check_signature(&trust(KEY, false), &component, &tampered),
            Err(SignatureError::BadSignature {
                signature: signature.clone(),
                key_id: KEY_ID.into()
            })
        );
        std::fs::write(&signature, "untrusted comment: x\nnot base64\n").unwrap();
        assert!(matches!(
            check(&trust(KEY, false)),
            Err(SignatureError::Malformed { .. })
        ));
        // A huge file is not read whole, and is refused.
        std::fs::write(&signature, vec![b'a'; 10 << 20]).unwrap();
        assert!(matches!(
            check(&trust(KEY, true)),
            Err(SignatureError::Malformed { detail, .. }) if detail == "too long"
        ));
        // A folder where the signature should be.
        std::fs::remove_file(&signature).unwrap();
        std::fs::create_dir(&signature).unwrap();
        assert!(matches!(
            check(&trust(KEY, true)),
            Err(SignatureError::Unreadable { .. })
        ));
    }
}
