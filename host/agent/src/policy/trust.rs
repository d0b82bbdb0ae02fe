//! Which signatures a plugin's component must carry: the keys a policy
//! trusts (`[agent] trusted_keys`, or a plugin's own `trusted_keys`) and
//! whether a component without a signature is refused
//! (`[agent] require_signatures`). Checking a component against them is
//! [`crate::loading`]'s.

use super::Probe;
use super::parse::resolve;
use medic_sandbox::signature::{PublicKey, TrustedKeys};
use std::path::{Path, PathBuf};

/// Whose signatures a plugin's component must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// The keys whose signatures are accepted: the plugin's own
    /// `trusted_keys`, else the `[agent]`'s. Empty: nothing is checked
    /// (and then `required` is false).
    pub keys: TrustedKeys,
    /// A component without a signature is refused. A signature that is
    /// there is always checked when some key is trusted, required or not.
    pub required: bool,
}

impl Trust {
    /// The key ids trusted, for messages: `A, B` or `none`.
    pub fn key_ids(&self) -> String {
        if self.keys.is_empty() {
            return "none".into();
        }
        self.keys
            .iter()
            .map(PublicKey::key_id)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a key file may be at most this long (a real one is about 100
/// bytes).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A `trusted_keys` entry that is not a key, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntryError {
    pub message: String,
    pub fix: String,
}

/// One `trusted_keys` entry: a bare minisign public key line (as `medic
/// plugins keygen` prints it, or the second line of a `.pub` file), or the
/// path of a minisign public key file, relative to `base` when relative.
pub fn read_key(entry: &str, base: &Path, probe: &dyn Probe) -> Result<PublicKey, KeyEntryError> {
    let entry = entry.trim();
    if !entry.contains(['\n', '\r'])
        && let Ok(key) = PublicKey::parse(entry)
    {
        return Ok(key);
    }
    let path: PathBuf = resolve(base, entry);
    let text = match probe.read_text(&path, MAX_KEY_FILE_BYTES) {
        Ok(text) => text,
        Err(e) => {
            let looks_like_a_key = entry.len() == 56
                && entry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            return Err(if looks_like_a_key {
                KeyEntryError {
                    message: format!(
                        "`{entry}` is not a minisign public key: {}",
                        PublicKey::parse(entry)
                            .err()
                            .map_or_else(String::new, |e| e.to_string())
                    ),
                    fix: "copy the key line again from the .pub file (its second line), or give the file's path".into(),
                }
            } else {
                KeyEntryError {
                    message: format!("cannot read the key file {}: {e}", path.display()),
                    fix: "give a minisign public key file (medic plugins keygen makes one; relative paths are relative to the policy file) or the key line itself".into(),
                }
            });
        }
    };
    PublicKey::parse(&text).map_err(|e| KeyEntryError {
        message: format!("{} is not a minisign public key file: {e}", path.display()),
        fix: "point at the .pub file of a key pair (medic plugins keygen, or minisign -G), not at its secret .key".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SystemProbe;

    // A key made by `minisign -G` (its public half only).
    const LINE: &str = "RWQ4/U1bBuKY9I4G3pL8NkZ8I4WcZKv0+UdIP6ONt+sY0CkZyqKZmhdD";

    #[test]
    fn an_entry_is_a_key_line_or_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = read_key(LINE, dir.path(), &SystemProbe).unwrap();
        std::fs::write(
            dir.path().join("k.pub"),
            format!("untrusted comment: minisign public key\n{LINE}\n"),
        )
        .unwrap();
        assert_eq!(
            read_key("k.pub", dir.path(), &SystemProbe).unwrap(),
            key,
            "relative to the base"
        );
        let absolute = dir.path().join("k.pub");
        assert_eq!(
            read_key(absolute.to_str().unwrap(), Path::new("/"), &SystemProbe).unwrap(),
            key
        );
    }

    #[test]
    fn a_bad_entry_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_key("keys/ops.pub", dir.path(), &SystemProbe).unwrap_err();
        assert!(
            missing.message.starts_with("cannot read the key file")
                && missing.message.contains("keys/ops.pub"),
            "{missing:?}"
        );
        let mangled = LINE.replacen('W', "X", 1);
        let bad_line = read_key(&mangled, dir.path(), &SystemProbe).unwrap_err();
        assert!(
            bad_line.message.contains("is not a minisign public key"),
            "{bad_line:?}"
        );
        std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
        let not_a_key = read_key("notes.txt", dir.path(), &SystemProbe).unwrap_err();
        assert!(
            not_a_key
                .message
                .ends_with("is not a minisign public key file: malformed minisign public key: base64 text has the wrong length"),
            "{not_a_key:?}"
        );
        std::fs::write(dir.path().join("big.pub"), vec![b'a'; 10_000]).unwrap();
        let big = read_key("big.pub", dir.path(), &SystemProbe).unwrap_err();
        assert!(big.message.contains("cannot read the key file"), "{big:?}");
    }
}
