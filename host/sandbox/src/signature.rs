//! Detached minisign signatures on plugins: checking them. (Making keys
//! and signatures is the command line's: `medic plugins keygen` and
//! `medic plugins sign`.)
//!
//! medic loads WebAssembly components and runs them as root, so it must be
//! able to refuse a component that nobody it trusts has signed. This module
//! gives each component a *detached* signature in the [minisign] format: a
//! small text file `<component>.minisig` lying next to `<component>`.
//!
//! # Why a detached minisign signature fits WebAssembly components
//!
//! * **The signed bytes are the executed bytes.** The signature lives in a
//!   separate file, so the component is never rewritten (no custom section
//!   is inserted, nothing is stripped before hashing). The exact byte string
//!   that is verified is the one that is handed to the compiler, and the
//!   component's own content hash stays the same whether it is signed or not,
//!   so caches keyed by that hash keep working.
//! * **Standard tooling.** Files, keys and signatures are byte-for-byte what
//!   the `minisign` command-line tool reads and writes, so an ops team can
//!   make keys (`minisign -G -W`), sign (`minisign -S -s key -m a.wasm`) and
//!   check (`minisign -Vm a.wasm -p key.pub`) without medic. Signatures are
//!   always *prehashed* (algorithm `ED`: Ed25519 over the BLAKE2b-512 hash of
//!   the file), the minisign default, which suits multi-megabyte components.
//! * **Key ids.** Every key and signature carries a 64-bit key id (shown as
//!   16 upper-case hex digits, as minisign prints it). A policy can name the
//!   keys it trusts by their bare base64 line, and a refusal can say exactly
//!   which key signed a component that is not trusted.
//! * **Trusted comment.** The signature also signs a one-line comment, which
//!   the verifier returns ([`Signer::trusted_comment`]); it can carry e.g. the
//!   plugin name and version so that a signature cannot be moved silently to
//!   a different component file name.
//!
//! # What it does not do
//!
//! * **No revocation.** A leaked secret key stays valid until every policy
//!   that trusts it is edited; there is no revocation list or expiry.
//! * **No trusted timestamps.** The trusted comment may contain a time, but
//!   it is whatever the signer wrote; nothing proves when a signature was
//!   made, and nothing here rejects old signatures (no rollback protection).
//! * **No binding to a name or version** unless the caller checks the trusted
//!   comment itself: a valid signature only says "a trusted key signed these
//!   exact bytes".
//! * **No password-protected secret keys** for `medic plugins sign`: it
//!   takes an unencrypted minisign secret key (as made by `minisign -G -W`
//!   or `medic plugins keygen`); protecting it is up to where it is kept.
//! * **No legacy signatures.** Non-prehashed (`Ed`, `minisign -S -l`)
//!   signatures are refused.
//!
//! # Implementation
//!
//! Verification uses the dependency-free `minisign-verify` crate. This module decodes the
//! base64 lines itself first, to read key ids (`minisign-verify` 0.3 keeps
//! them private), to require exact sizes and line counts, and to refuse
//! legacy signatures, before any cryptography runs; a signature text is
//! capped at [`MAX_SIGNATURE_TEXT_LEN`] bytes.
//!
//! [minisign]: https://jedisct1.github.io/minisign/

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ct_codecs::{Base64, Decoder};

/// Suffix of a detached signature file, appended to the signed file's name.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// Longest signature file text accepted (a real one is about 300 bytes).
pub const MAX_SIGNATURE_TEXT_LEN: usize = 64 * 1024;

pub const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
pub const TRUSTED_PREFIX: &str = "trusted comment: ";
/// Ed25519 key / legacy signature algorithm id.
pub const ALG_ED25519: [u8; 2] = *b"Ed";
/// Prehashed (BLAKE2b-512, then Ed25519) signature algorithm id.
pub const ALG_PREHASHED: [u8; 2] = *b"ED";
pub const KDF_NONE: [u8; 2] = [0, 0];
pub const KDF_SCRYPT: [u8; 2] = *b"Sc";
pub const KEY_ID_LEN: usize = 8;
/// alg(2) + key id(8) + Ed25519 public key(32).
const PUBLIC_KEY_LEN: usize = 2 + KEY_ID_LEN + 32;
/// alg(2) + key id(8) + Ed25519 signature(64).
const SIGNATURE_LEN: usize = 2 + KEY_ID_LEN + 64;
/// sig alg(2) + kdf alg(2) + chk alg(2) + salt(32) + opslimit(8) +
/// memlimit(8) + key id(8) + secret key(64) + checksum(32).
pub const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + KEY_ID_LEN + 64 + 32;
pub const SECRET_KEY_KDF_OFFSET: usize = 2;

/// A public key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed minisign public key: {0}")]
pub struct KeyError(pub String);

/// Why a component's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature text is not a minisign signature this module accepts.
    #[error("malformed minisign signature: {0}")]
    MalformedSignature(String),
    /// Well-formed, but made by a key that is not in the trusted set.
    #[error("signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// Key id named by the signature.
        key_id: String,
    },
    /// Made (supposedly) by a trusted key, but it does not match the bytes
    /// or its trusted comment was altered.
    #[error("signature by trusted key {key_id} does not match the file")]
    BadSignature {
        /// Key id named by the signature.
        key_id: String,
    },
}

/// A minisign (Ed25519) public key.
#[derive(Clone)]
pub struct PublicKey {
    key_id: [u8; KEY_ID_LEN],
    base64: String,
    inner: minisign_verify::PublicKey,
}

impl PublicKey {
    /// Parses either the text of a minisign public key file
    /// (`untrusted comment: ...` line, then the base64 line) or the bare
    /// base64 line alone.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or_else(|| KeyError("empty".into()))?;
        let line = if first.starts_with(UNTRUSTED_PREFIX.trim_end()) {
            lines
                .next()
                .ok_or_else(|| KeyError("no key line after the comment".into()))?
        } else {
            first
        };
        if lines.next().is_some() {
            return Err(KeyError("unexpected text after the key line".into()));
        }
        let bytes = decode_base64(line, PUBLIC_KEY_LEN).map_err(KeyError)?;
        if bytes[..2] != ALG_ED25519 {
            return Err(KeyError("not an Ed25519 key".into()));
        }
        let inner =
            minisign_verify::PublicKey::from_base64(line).map_err(|e| KeyError(e.to_string()))?;
        Ok(Self {
            key_id: key_id_bytes(&bytes[2..]),
            base64: line.to_owned(),
            inner,
        })
    }

    /// Key id as minisign prints it: 16 upper-case hex digits.
    pub fn key_id(&self) -> String {
        format_key_id(self.key_id)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

/// The bare base64 key line (what `minisign -P` takes).
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base64)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.key_id(), self.base64)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.base64 == other.base64
    }
}
impl Eq for PublicKey {}
impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.base64.cmp(&other.base64)
    }
}

/// Who signed a component that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Id of the trusted key that made the signature.
    pub key_id: String,
    /// The signed one-line trusted comment.
    pub trusted_comment: String,
}

/// The set of keys whose signatures medic accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeSet<PublicKey>,
}

impl TrustedKeys {
    /// A set of the given keys (duplicates collapse).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// Adds a key; returns false if it was already trusted.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        self.keys.insert(key)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if no key is trusted (then nothing verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// Checks that `signature_text` (contents of a `.minisig` file) is a
    /// prehashed minisign signature of `bytes` by one of the trusted keys.
    pub fn verify(&self, bytes: &[u8], signature_text: &str) -> Result<Signer, VerifyError> {
        let key_id = signature_key_id(signature_text)?;
        let signature = minisign_verify::Signature::decode(signature_text)
            .map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
        let mut candidates = self.keys.iter().filter(|k| k.key_id == key_id).peekable();
        if candidates.peek().is_none() {
            return Err(VerifyError::UntrustedKey {
                key_id: format_key_id(key_id),
            });
        }
        // Key ids are random 64-bit values; two trusted keys could share one.
        for key in candidates {
            if key.inner.verify(bytes, &signature, false).is_ok() {
                return Ok(Signer {
                    key_id: key.key_id(),
                    trusted_comment: signature.trusted_comment().to_owned(),
                });
            }
        }
        Err(VerifyError::BadSignature {
            key_id: format_key_id(key_id),
        })
    }
}

/// Path of the detached signature for `component`: the file name with
/// `.minisig` appended (`a.wasm` -> `a.wasm.minisig`), as minisign does.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut s = OsString::from(component.as_os_str());
    s.push(SIGNATURE_SUFFIX);
    PathBuf::from(s)
}

/// Key id named by a signature, after checking the parts that
/// `minisign-verify` does not (size cap, exact line count, prehashed).
fn signature_key_id(text: &str) -> Result<[u8; KEY_ID_LEN], VerifyError> {
    let malformed = |m: &str| VerifyError::MalformedSignature(m.to_owned());
    if text.len() > MAX_SIGNATURE_TEXT_LEN {
        return Err(malformed("too long"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let trailing_blank = lines.iter().rev().take_while(|l| l.is_empty()).count();
    let lines = &lines[..lines.len() - trailing_blank];
    let [untrusted, sig, trusted, global] = lines else {
        return Err(malformed("expected 4 lines"));
    };
    if !untrusted.starts_with(UNTRUSTED_PREFIX) {
        return Err(malformed("line 1 is not an untrusted comment"));
    }
    if !trusted.starts_with(TRUSTED_PREFIX) {
        return Err(malformed("line 3 is not a trusted comment"));
    }
    let sig = decode_base64(sig, SIGNATURE_LEN).map_err(VerifyError::MalformedSignature)?;
    decode_base64(global, 64).map_err(VerifyError::MalformedSignature)?;
    match [sig[0], sig[1]] {
        ALG_PREHASHED => Ok(key_id_bytes(&sig[2..])),
        ALG_ED25519 => Err(malformed(
            "legacy (not prehashed) signature; sign without -l",
        )),
        _ => Err(malformed("unknown signature algorithm")),
    }
}

/// Decodes standard padded base64 and requires exactly `len` bytes.
pub fn decode_base64(text: &str, len: usize) -> Result<Vec<u8>, String> {
    // Bound the work before decoding: 4 characters per 3 bytes.
    if text.len() != len.div_ceil(3) * 4 {
        return Err("base64 text has the wrong length".into());
    }
    let bytes = Base64::decode_to_vec(text, None).map_err(|_| "invalid base64".to_owned())?;
    if bytes.len() != len {
        return Err(format!("expected {len} bytes, found {}", bytes.len()));
    }
    Ok(bytes)
}

pub fn key_id_bytes(from: &[u8]) -> [u8; KEY_ID_LEN] {
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&from[..KEY_ID_LEN]);
    id
}

/// minisign prints the little-endian key id as a 64-bit hex number.
pub fn format_key_id(id: [u8; KEY_ID_LEN]) -> String {
    format!("{:016X}", u64::from_le_bytes(id))
}
