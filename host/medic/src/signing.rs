//! Making keys and signatures for plugins: `medic plugins keygen` and
//! `medic plugins sign`. Keys and signatures are minisign's, so the
//! `minisign` tool can make and check them too; checking is the sandbox's
//! ([`medic_sandbox::signature`]).

use medic_sandbox::signature::{
    ALG_ED25519, KDF_NONE, KDF_SCRYPT, SECRET_KEY_KDF_OFFSET, SECRET_KEY_LEN, UNTRUSTED_PREFIX,
    decode_base64, format_key_id, key_id_bytes,
};
use std::fmt;

/// Key generation or signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The secret key text is not an unencrypted minisign secret key.
    #[error("malformed minisign secret key: {0}")]
    MalformedSecretKey(String),
    /// The secret key is password-protected; this module only uses
    /// unencrypted keys.
    #[error(
        "minisign secret key is password-protected; use an unencrypted key \
         (minisign -G -W, or remove the password with minisign -C -W)"
    )]
    EncryptedSecretKey,
    /// A comment would break the one-line-per-field file format.
    #[error("invalid comment: {0}")]
    InvalidComment(&'static str),
    /// The underlying library failed (random number generator, self-check).
    #[error("signing failed: {0}")]
    Crypto(String),
}

/// Contents of a freshly generated key pair's two files.
#[derive(Clone)]
pub struct GeneratedKeyPair {
    /// Unencrypted minisign secret key file (`minisign -G -W` format).
    pub secret_key: String,
    /// Minisign public key file (`untrusted comment` line + base64 line).
    pub public_key: String,
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("secret_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// Generates a new key pair with an *unencrypted* secret key.
/// `comment` becomes the secret key file's untrusted comment.
pub fn generate_key_pair(comment: Option<&str>) -> Result<GeneratedKeyPair, SignError> {
    let comment = comment.unwrap_or("minisign unencrypted secret key");
    check_comment(comment)?;
    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    let secret_key = pair
        .sk
        .to_box(Some(comment))
        .map_err(|e| SignError::Crypto(e.to_string()))?
        .into_string();
    // Written by hand: the crate's `to_box` puts a colon after "key", the
    // CLI does not, and ops people compare these comments by eye.
    let public_key = format!(
        "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
        format_key_id(key_id_bytes(pair.pk.keynum())),
        pair.pk.to_base64()
    );
    Ok(GeneratedKeyPair {
        secret_key,
        public_key,
    })
}

/// Signs `bytes` with an unencrypted minisign secret key file's text and
/// returns the `.minisig` file contents (prehashed `ED` signature).
/// `trusted_comment` must be one line.
pub fn sign(
    secret_key_text: &str,
    bytes: &[u8],
    trusted_comment: &str,
) -> Result<String, SignError> {
    check_comment(trusted_comment)?;
    let sk = parse_secret_key(secret_key_text)?;
    // The public half stored in the secret key; passing it makes the library
    // check its own signature, which catches a corrupted secret key.
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| SignError::MalformedSecretKey(e.to_string()))?;
    let untrusted = format!(
        "signature from minisign secret key {}",
        format_key_id(key_id_bytes(sk.keynum()))
    );
    let signature = minisign::sign(
        Some(&pk),
        &sk,
        bytes,
        Some(trusted_comment),
        Some(&untrusted),
    )
    .map_err(|e| SignError::Crypto(e.to_string()))?;
    Ok(signature.into_string())
}

fn parse_secret_key(text: &str) -> Result<minisign::SecretKey, SignError> {
    let malformed = |m: &str| SignError::MalformedSecretKey(m.to_owned());
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let comment = lines.next().ok_or_else(|| malformed("empty"))?;
    if !comment.starts_with(UNTRUSTED_PREFIX.trim_end()) {
        return Err(malformed("first line is not an untrusted comment"));
    }
    let line = lines.next().ok_or_else(|| malformed("no key line"))?;
    if lines.next().is_some() {
        return Err(malformed("unexpected text after the key line"));
    }
    let bytes = decode_base64(line, SECRET_KEY_LEN).map_err(SignError::MalformedSecretKey)?;
    if bytes[..2] != ALG_ED25519 {
        return Err(malformed("not an Ed25519 key"));
    }
    match [
        bytes[SECRET_KEY_KDF_OFFSET],
        bytes[SECRET_KEY_KDF_OFFSET + 1],
    ] {
        KDF_NONE => {}
        KDF_SCRYPT => return Err(SignError::EncryptedSecretKey),
        _ => return Err(malformed("unknown key derivation function")),
    }
    // Not `SecretKeyBox::into_unencrypted_secret_key`: it insists on the
    // checksum field, which `minisign -G -W` (0.11) leaves zeroed, so it
    // refuses every CLI-made unencrypted key ("Corrupted key"). `sign`
    // self-verifies instead; a corrupted key id only misattributes the
    // signature, which verifiers then refuse.
    let sk = minisign::SecretKey::from_bytes(&bytes)
        .map_err(|e| SignError::MalformedSecretKey(e.to_string()))?;
    if sk.is_encrypted() {
        return Err(SignError::EncryptedSecretKey);
    }
    Ok(sk)
}

fn check_comment(comment: &str) -> Result<(), SignError> {
    if comment.contains(['\n', '\r']) {
        return Err(SignError::InvalidComment("must be a single line"));
    }
    if comment.trim() != comment {
        // Readers differ: the `minisign` crate trims the line, others do not.
        return Err(SignError::InvalidComment(
            "must not start or end with whitespace",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_codecs::{Base64, Decoder};
    use medic_sandbox::signature::{
        KEY_ID_LEN, MAX_SIGNATURE_TEXT_LEN, PublicKey, TrustedKeys, VerifyError, signature_path,
    };
    use std::path::{Path, PathBuf};

    const WASM: &[u8] = b"\0asm\x0d\0\x01\0 pretend this is a component";

    fn new_pair() -> (GeneratedKeyPair, PublicKey) {
        let pair = generate_key_pair(Some("test key")).unwrap();
        let pk = PublicKey::parse(&pair.public_key).unwrap();
        (pair, pk)
    }

    #[test]
    fn sign_then_verify() {
        let (pair, pk) = new_pair();
        let sig = sign(&pair.secret_key, WASM, "plugin:demo\tversion:1").unwrap();
        let signer = TrustedKeys::new([pk.clone()]).verify(WASM, &sig).unwrap();
        assert_eq!(signer.key_id, pk.key_id());
        assert_eq!(signer.trusted_comment, "plugin:demo\tversion:1");
        // Prehashed ("ED") signature, CLI-style layout.
        let lines: Vec<&str> = sig.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(&Base64::decode_to_vec(lines[1], None).unwrap()[..2], b"ED");
        assert!(lines[0].ends_with(&pk.key_id()));
    }

    #[test]
    fn flipped_byte_fails() {
        let (pair, pk) = new_pair();
        let sig = sign(&pair.secret_key, WASM, "c").unwrap();
        let trusted = TrustedKeys::new([pk.clone()]);
        for i in [0, WASM.len() / 2, WASM.len() - 1] {
            let mut bad = WASM.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                trusted.verify(&bad, &sig),
                Err(VerifyError::BadSignature {
                    key_id: pk.key_id()
                })
            );
        }
        let mut longer = WASM.to_vec();
        longer.push(0);
        assert!(matches!(
            trusted.verify(&longer, &sig),
            Err(VerifyError::BadSignature { .. })
        ));
        // An edited trusted comment breaks the global signature.
        let edited = sig.replace("trusted comment: c", "trusted comment: d");
        assert!(matches!(
            trusted.verify(WASM, &edited),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn other_key_is_untrusted_and_named() {
        let (pair, pk) = new_pair();
        let (_, other) = new_pair();
        let sig = sign(&pair.secret_key, WASM, "c").unwrap();
        let err = TrustedKeys::new([other]).verify(WASM, &sig).unwrap_err();
        assert_eq!(
            err,
            VerifyError::UntrustedKey {
                key_id: pk.key_id()
            }
        );
        assert!(err.to_string().contains(&pk.key_id()), "{err}");
        assert!(matches!(
            TrustedKeys::default().verify(WASM, &sig),
            Err(VerifyError::UntrustedKey { .. })
        ));
    }

    fn b64(raw: &[u8]) -> String {
        <Base64 as ct_codecs::Encoder>::encode_to_string(raw).unwrap()
    }

    #[test]
    fn same_key_id_different_key_is_bad_signature() {
        // A trusted key that claims the signer's id but is another key.
        let (pair, pk) = new_pair();
        let (_, other) = new_pair();
        let mut raw = Base64::decode_to_vec(other.to_string(), None).unwrap();
        let own = Base64::decode_to_vec(pk.to_string(), None).unwrap();
        raw[2..10].copy_from_slice(&own[2..10]);
        let forged = b64(&raw);
        let forged = PublicKey::parse(&forged).unwrap();
        assert_eq!(forged.key_id(), pk.key_id());
        let sig = sign(&pair.secret_key, WASM, "c").unwrap();
        assert_eq!(
            TrustedKeys::new([forged.clone()]).verify(WASM, &sig),
            Err(VerifyError::BadSignature {
                key_id: pk.key_id()
            })
        );
        // With the real key also present, it verifies.
        assert!(TrustedKeys::new([forged, pk]).verify(WASM, &sig).is_ok());
    }

    #[test]
    fn garbage_signature_is_malformed() {
        let (pair, pk) = new_pair();
        let trusted = TrustedKeys::new([pk]);
        let good = sign(&pair.secret_key, WASM, "c").unwrap();
        let legacy = {
            // Re-encode the signature line with the legacy "Ed" algorithm.
            let lines: Vec<&str> = good.lines().collect();
            let mut raw = Base64::decode_to_vec(lines[1], None).unwrap();
            raw[1] = b'd';
            let line = b64(&raw);
            format!("{}\n{line}\n{}\n{}\n", lines[0], lines[2], lines[3])
        };
        let huge = "x".repeat(MAX_SIGNATURE_TEXT_LEN + 1);
        for text in [
            "",
            "\n\n\n\n",
            "garbage",
            "untrusted comment: x\nRUQ=\ntrusted comment: y\nAAAA\n",
            &good.replace("trusted comment:", "trusted:"),
            &good.replace("untrusted comment:", "comment:"),
            &format!("{good}extra line\n"),
            &good[..good.len() - 10],
            &legacy,
            &huge,
        ] {
            match trusted.verify(WASM, text) {
                Err(VerifyError::MalformedSignature(_)) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // CRLF line endings and trailing blank lines are tolerated.
        let crlf = good.replace('\n', "\r\n") + "\r\n";
        assert!(trusted.verify(WASM, &crlf).is_ok());
    }

    #[test]
    fn bare_and_two_line_public_keys_parse() {
        let (pair, pk) = new_pair();
        let file = &pair.public_key;
        assert!(file.starts_with("untrusted comment: minisign public key "));
        assert!(file.lines().next().unwrap().ends_with(&pk.key_id()));
        let bare = file.lines().nth(1).unwrap();
        let from_bare: PublicKey = bare.parse().unwrap();
        assert_eq!(from_bare, pk);
        assert_eq!(from_bare.to_string(), bare);
        assert_eq!(pk.to_string(), bare);
        assert_eq!(from_bare.key_id(), pk.key_id());
        assert_eq!(pk.key_id().len(), 16);
        // Surrounding whitespace and CRLF are accepted.
        assert_eq!(PublicKey::parse(&format!("  {bare}\n")).unwrap(), pk);
        assert_eq!(PublicKey::parse(&file.replace('\n', "\r\n")).unwrap(), pk);
        // A known key from the minisign CLI: id shown in its comment.
        let cli = "untrusted comment: minisign public key 12AEAAE0F53FD301\n\
                   RWQB0z/14KquEsw8iycGfm2SY9hWYz11MtOOzQQ88wYqIZJcmMkBR9xU\n";
        assert_eq!(PublicKey::parse(cli).unwrap().key_id(), "12AEAAE0F53FD301");
        for bad in [
            "",
            "RWQ",
            &format!("{bare}\n{bare}"),
            &bare.replace('R', "S"),
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_key_errors() {
        let (pair, _) = new_pair();
        assert!(matches!(
            sign(&pair.secret_key, WASM, "two\nlines"),
            Err(SignError::InvalidComment(_))
        ));
        assert!(matches!(
            sign(&pair.secret_key, WASM, " padded"),
            Err(SignError::InvalidComment(_))
        ));
        assert!(matches!(
            sign("nonsense", WASM, "c"),
            Err(SignError::MalformedSecretKey(_))
        ));
        assert!(matches!(
            sign(&pair.public_key, WASM, "c"),
            Err(SignError::MalformedSecretKey(_))
        ));
        // Mark the key as scrypt-encrypted.
        let line = pair.secret_key.lines().nth(1).unwrap();
        let mut raw = Base64::decode_to_vec(line, None).unwrap();
        raw[2..4].copy_from_slice(b"Sc");
        let enc = b64(&raw);
        assert_eq!(
            sign(&format!("untrusted comment: x\n{enc}\n"), WASM, "c"),
            Err(SignError::EncryptedSecretKey)
        );
        // Corrupt the seed: the self-check refuses to emit a bad signature.
        raw[2..4].copy_from_slice(&KDF_NONE);
        raw[2 + 2 + 2 + 32 + 8 + 8 + KEY_ID_LEN] ^= 1; // first seed byte
        let bad = b64(&raw);
        assert!(sign(&format!("untrusted comment: x\n{bad}\n"), WASM, "c").is_err());
        assert!(format!("{pair:?}").contains("<redacted>"));
    }

    #[test]
    fn signature_path_appends() {
        assert_eq!(
            signature_path(Path::new("/opt/medic/plugins/a.wasm")),
            PathBuf::from("/opt/medic/plugins/a.wasm.minisig")
        );
        assert_eq!(signature_path(Path::new("b")), PathBuf::from("b.minisig"));
    }

    /// Random edits of valid texts, truncations and pure noise never panic.
    #[test]
    fn parsers_never_panic() {
        let (pair, pk) = new_pair();
        let sig = sign(&pair.secret_key, WASM, "c").unwrap();
        let trusted = TrustedKeys::new([pk]);
        let mut rng = fastrand::Rng::with_seed(0x6d65646963);
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n\r\t:é"
                .chars()
                .collect();
        let mutate = |rng: &mut fastrand::Rng, base: &str| -> String {
            let mut chars: Vec<char> = base.chars().collect();
            match rng.u8(0..4) {
                0 => chars.truncate(rng.usize(0..=chars.len())),
                1 => {
                    for _ in 0..rng.usize(1..4) {
                        if !chars.is_empty() {
                            let i = rng.usize(0..chars.len());
                            chars[i] = alphabet[rng.usize(0..alphabet.len())];
                        }
                    }
                }
                2 => {
                    let i = rng.usize(0..=chars.len());
                    let n = rng.usize(0..chars.len().max(1));
                    let insert: Vec<char> = (0..n)
                        .map(|_| alphabet[rng.usize(0..alphabet.len())])
                        .collect();
                    chars.splice(i..i, insert);
                }
                _ => {
                    let n = rng.usize(0..400);
                    chars = (0..n)
                        .map(|_| alphabet[rng.usize(0..alphabet.len())])
                        .collect();
                }
            }
            chars.into_iter().collect()
        };
        let mut outcomes = [0usize; 4];
        for _ in 0..3000 {
            let text = mutate(&mut rng, &sig);
            let slot = match trusted.verify(WASM, &text) {
                Ok(signer) => {
                    // Only edits that change no signed content may pass.
                    assert_eq!(signer.trusted_comment, "c", "{text:?}");
                    0
                }
                Err(VerifyError::MalformedSignature(_)) => 1,
                Err(VerifyError::UntrustedKey { .. }) => 2,
                Err(VerifyError::BadSignature { .. }) => 3,
            };
            outcomes[slot] += 1;
            let _ = PublicKey::parse(&mutate(&mut rng, &pair.public_key));
            let _ = PublicKey::parse(&text);
        }
        for _ in 0..500 {
            let _ = sign(&mutate(&mut rng, &pair.secret_key), WASM, "c");
        }
        eprintln!("fuzz outcomes [ok, malformed, untrusted, bad]: {outcomes:?}");
        assert!(outcomes[1] > 0 && outcomes[3] > 0);
    }

    /// Interop with the `minisign` command-line tool, both directions.
    #[test]
    fn interop_with_minisign_cli() {
        use std::process::{Command, Stdio};

        let Ok(cli) = Command::new("minisign").arg("-v").output() else {
            eprintln!("NOTE: `minisign` binary not found; CLI interop test skipped");
            return;
        };
        eprintln!("using {}", String::from_utf8_lossy(&cli.stdout).trim());
        let dir = std::env::temp_dir().join(format!(
            "medic-signing-interop-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("minisign")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = format!(
                "minisign {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let write = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).unwrap();
        // A "component" big enough to be more than one hashing block.
        let mut rng = fastrand::Rng::with_seed(7);
        let component: Vec<u8> = (0..200_000).map(|_| rng.u8(..)).collect();
        write("a.wasm", &component);

        // 1. CLI key (unencrypted, -W) + CLI signature -> module verifies.
        let (ok, out) = run(&["-G", "-W", "-p", "cli.pub", "-s", "cli.key"]);
        assert!(ok, "{out}");
        let (ok, out) = run(&["-S", "-s", "cli.key", "-m", "a.wasm", "-t", "plugin:a"]);
        assert!(ok, "{out}");
        let cli_pk = PublicKey::parse(&read("cli.pub")).unwrap();
        let sig = read(signature_path(Path::new("a.wasm")).to_str().unwrap());
        let signer = TrustedKeys::new([cli_pk.clone()])
            .verify(&component, &sig)
            .unwrap();
        assert_eq!(signer.key_id, cli_pk.key_id());
        assert_eq!(signer.trusted_comment, "plugin:a");
        // The CLI's own comment names the same key id we compute (as a
        // number: minisign prints it without leading zeros).
        let comment = read("cli.pub");
        let cli_id = comment
            .lines()
            .next()
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        assert_eq!(
            cli_id,
            u64::from_str_radix(&cli_pk.key_id(), 16).ok(),
            "{comment}"
        );

        // 2. Module key + module signature -> CLI verifies (file and -P).
        let pair = generate_key_pair(None).unwrap();
        write("mod.pub", pair.public_key.as_bytes());
        write("mod.key", pair.secret_key.as_bytes());
        write("b.wasm", &component);
        write(
            "b.wasm.minisig",
            sign(&pair.secret_key, &component, "plugin:b")
                .unwrap()
                .as_bytes(),
        );
        let (ok, out) = run(&["-Vm", "b.wasm", "-p", "mod.pub"]);
        assert!(ok && out.contains("plugin:b"), "{out}");
        let bare = PublicKey::parse(&pair.public_key).unwrap().to_string();
        let (ok, out) = run(&["-H", "-Vm", "b.wasm", "-P", &bare]);
        assert!(ok, "{out}");
        // ... and refuses it once the component changes.
        let mut tampered = component.clone();
        tampered[100_000] ^= 1;
        write("b.wasm", &tampered);
        let (ok, out) = run(&["-Vm", "b.wasm", "-p", "mod.pub"]);
        assert!(!ok, "{out}");

        // 3. Key files cross over: module signs with the CLI's secret key,
        //    the CLI signs with the module's secret key.
        write("c.wasm", &component);
        write(
            "c.wasm.minisig",
            sign(&read("cli.key"), &component, "plugin:c")
                .unwrap()
                .as_bytes(),
        );
        let (ok, out) = run(&["-Vm", "c.wasm", "-p", "cli.pub"]);
        assert!(ok, "{out}");
        write("d.wasm", &component);
        let (ok, out) = run(&[
            "-S", "-W", "-s", "mod.key", "-m", "d.wasm", "-t", "plugin:d",
        ]);
        assert!(ok, "{out}");
        let mod_pk = PublicKey::parse(&pair.public_key).unwrap();
        let signer = TrustedKeys::new([mod_pk, cli_pk])
            .verify(&component, &read("d.wasm.minisig"))
            .unwrap();
        assert_eq!(signer.trusted_comment, "plugin:d");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
