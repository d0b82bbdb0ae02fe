//! `medic plugins keygen`, `sign` and `verify`: key pairs, detached
//! signatures beside components (`<component>.minisig`), and checking a
//! component as the agent would before it loads it.

use crate::signing;
use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use medic_agent::loading::check_signature;
use medic_agent::policy::{Policy, SystemProbe, Trust, read_key};
use medic_sandbox::content_hash;
use medic_sandbox::signature::{
    PublicKey, TrustedKeys, decode_base64, format_key_id, key_id_bytes, signature_path,
};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key pair: PATH.key (the secret key, readable by
    /// its owner only) and PATH.pub (the public key). Neither may exist.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The secret key: an unencrypted minisign secret key file, as
    /// `medic plugins keygen` (or `minisign -G -W`) makes it.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,

    /// The components to sign; each gets COMPONENT.minisig beside it, its
    /// trusted comment naming the file and its SHA-256.
    #[arg(required = true, value_name = "COMPONENT")]
    pub components: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trust").required(true).args(["keys", "policy"])))]
pub struct VerifyArgs {
    /// A trusted public key: the path of a .pub file, or the key line
    /// itself (repeatable). A signature is required.
    #[arg(long = "key", value_name = "PUBFILE_OR_LINE")]
    pub keys: Vec<String>,

    /// Check as the agent serving this policy would, with the keys it
    /// trusts and whether it requires a signature.
    #[arg(long, short)]
    pub policy: Option<PathBuf>,

    /// With --policy: the plugin whose keys apply [default: the plugin
    /// whose component this is, else the policy's [agent] keys].
    #[arg(long, requires = "policy")]
    pub plugin: Option<String>,

    /// The component file (`.wasm`); its signature is COMPONENT.minisig.
    pub component: PathBuf,
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

pub fn keygen(args: &KeygenArgs) -> Result<ExitCode> {
    let secret = with_suffix(&args.out, ".key");
    let public = with_suffix(&args.out, ".pub");
    for path in [&secret, &public] {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} exists; keygen never overwrites a key: choose another --out, or move the old pair away first",
                path.display()
            );
        }
    }
    if let Some(parent) = secret.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let pair = signing::generate_key_pair(None)?;
    let key = PublicKey::parse(&pair.public_key).context("the new public key")?;
    write_new(&secret, pair.secret_key.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pair.public_key.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    println!("key id      {}", key.key_id());
    println!(
        "secret key  {}  (it signs what medic runs as root: keep it off the machines that run the agent)",
        secret.display()
    );
    println!("public key  {}", public.display());
    println!();
    println!("To trust it, add to the policy's [agent] table (or to a [plugins.NAME] table):");
    println!("    trusted_keys = [\"{key}\"]");
    println!(
        "or name the file instead: trusted_keys = [\"{}\"] (relative paths are relative to the policy file).",
        public.display()
    );
    println!("Sign components with:");
    println!(
        "    medic plugins sign --key {} COMPONENT.wasm",
        secret.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Write a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn sign(args: &SignArgs) -> Result<ExitCode> {
    let key_text = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read the secret key {}", args.key.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&args.key)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {} can be read by others than its owner (chmod 600 it)",
                args.key.display()
            );
        }
    }
    let mut failed = 0;
    for component in &args.components {
        match sign_one(&key_text, component) {
            Ok((signature, key_id)) => println!(
                "signed {} -> {} (key {key_id})",
                component.display(),
                signature.display()
            ),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sign one component; returns its signature file and the key id.
fn sign_one(key_text: &str, component: &Path) -> Result<(PathBuf, String)> {
    let bytes = medic_sandbox::read_component(component)?;
    let name = component
        .file_name()
        .with_context(|| format!("{} names no file", component.display()))?
        .to_string_lossy();
    let comment = format!("file:{name} sha256:{}", content_hash(&bytes));
    let text = signing::sign(key_text, &bytes, &comment)
        .with_context(|| format!("cannot sign {}", component.display()))?;
    let key_id = text
        .lines()
        .nth(1)
        .and_then(|line| decode_base64(line, 74).ok())
        .map(|raw| format_key_id(key_id_bytes(&raw[2..])))
        .unwrap_or_default();
    // Written beside the component under a hidden name, then renamed into
    // place: an agent watching the folder never reads half a signature.
    let signature = signature_path(component);
    let dir = signature
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.minisig.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &signature).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}", signature.display())
    })?;
    Ok((signature, key_id))
}

pub fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let (trust, whose) = match &args.policy {
        None => {
            let base = std::env::current_dir().context("the current folder")?;
            let mut keys = TrustedKeys::default();
            for entry in &args.keys {
                let key = read_key(entry, &base, &SystemProbe).map_err(|e| {
                    anyhow::anyhow!("--key {entry}: {}\n    fix: {}", e.message, e.fix)
                })?;
                keys.insert(key);
            }
            let trust = Trust {
                keys,
                required: true,
            };
            (trust, "--key".to_string())
        }
        Some(file) => policy_trust(file, args.plugin.as_deref(), &args.component)?,
    };
    let bytes = medic_sandbox::read_component(&args.component)?;
    let hash = content_hash(&bytes);
    let component = args.component.display();
    match check_signature(&trust, &args.component, &bytes) {
        Ok(Some(signer)) => {
            println!(
                "{component}: signed by key {} (trusted by {whose})",
                signer.key_id
            );
            println!("  trusted comment  {}", signer.trusted_comment);
            println!("  sha256           {hash}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            println!(
                "{component}: not signed by a trusted key, and {whose} requires no signature: the agent would load it"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {component} (sha256 {}) {e}", &hash[..12]);
            eprintln!("    checked with the keys of {whose}");
            eprintln!("    fix: {}", e.fix(&args.component));
            Ok(ExitCode::from(1))
        }
    }
}

/// The trust a policy gives `plugin`, or the plugin whose component is
/// `component`, or else its `[agent]` keys; and whose it is, for messages.
fn policy_trust(file: &Path, plugin: Option<&str>, component: &Path) -> Result<(Trust, String)> {
    let policy = Policy::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(name) = plugin {
        let Some(found) = policy.plugins.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = policy.plugins.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "{} has no plugin `{name}`; it has {}",
                file.display(),
                names.join(", ")
            );
        };
        return Ok((
            found.trust.clone(),
            format!("[plugins.{name}] in {}", file.display()),
        ));
    }
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(found) = policy
        .plugins
        .iter()
        .find(|p| same(&p.component, component))
    {
        return Ok((
            found.trust.clone(),
            format!("[plugins.{}] in {}", found.name, file.display()),
        ));
    }
    Ok((
        policy.trust.clone(),
        format!("[agent] in {}", file.display()),
    ))
}
