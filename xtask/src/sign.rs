//! Signing the components `cargo xtask plugins` builds, with a development
//! key made on first use: `target/signing/dev.key` (an unencrypted minisign
//! secret key, mode 600) and `target/signing/dev.pub`. Both stay under
//! `target/`, never committed; the example policies trust `dev.pub`, so
//! the demo and the tests run with signatures required. The files are
//! minisign's, as `medic plugins keygen` and `sign` make them: `medic
//! plugins sign --key target/signing/dev.key` signs with the same key.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The development key pair, under the workspace root.
pub const DEV_KEY: &str = "target/signing/dev.key";
pub const DEV_PUB: &str = "target/signing/dev.pub";

struct DevKey {
    secret: minisign::SecretKey,
    public: minisign::PublicKey,
    key_id: String,
}

/// minisign's key id: the little-endian key number as 16 hex digits.
fn key_id(keynum: &[u8]) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(id))
}

/// The development key, made when there is none.
fn dev_key(root: &Path) -> Result<DevKey> {
    let (secret_path, public_path) = (root.join(DEV_KEY), root.join(DEV_PUB));
    match (secret_path.exists(), public_path.exists()) {
        (true, true) => {
            let text = std::fs::read_to_string(&secret_path)
                .with_context(|| format!("cannot read {}", secret_path.display()))?;
            let secret = minisign::SecretKeyBox::from_string(&text)
                .and_then(|b| b.into_unencrypted_secret_key())
                .with_context(|| {
                    format!(
                        "{} is not an unencrypted minisign secret key; remove target/signing to make a new development key",
                        secret_path.display()
                    )
                })?;
            let public = minisign::PublicKey::from_secret_key(&secret)
                .context("the development key's public half")?;
            let written = std::fs::read_to_string(&public_path)
                .with_context(|| format!("cannot read {}", public_path.display()))?;
            if !written.contains(&public.to_base64()) {
                bail!(
                    "{} is not the public half of {}; remove target/signing to make a new development key",
                    public_path.display(),
                    secret_path.display()
                );
            }
            let key_id = key_id(public.keynum());
            Ok(DevKey {
                secret,
                public,
                key_id,
            })
        }
        (false, false) => {
            std::fs::create_dir_all(secret_path.parent().unwrap_or(root))?;
            let pair = minisign::KeyPair::generate_unencrypted_keypair()
                .context("cannot make a development key")?;
            let key_id = key_id(pair.pk.keynum());
            let secret_text = pair
                .sk
                .to_box(Some(
                    "medic development signing key (target/, never shipped)",
                ))
                .context("cannot encode the development key")?
                .into_string();
            write_new(&secret_path, secret_text.as_bytes(), 0o600)?;
            write_new(
                &public_path,
                format!(
                    "untrusted comment: minisign public key {key_id}\n{}\n",
                    pair.pk.to_base64()
                )
                .as_bytes(),
                0o644,
            )?;
            println!("xtask: made the development signing key {key_id}: {DEV_KEY}, {DEV_PUB}");
            Ok(DevKey {
                secret: pair.sk,
                public: pair.pk,
                key_id,
            })
        }
        _ => bail!("target/signing holds half a key pair; remove it to make a new development key"),
    }
}

/// Create `path` with `bytes`, with permission bits `mode` on Unix (on
/// Windows it takes the access list of the folder it is made in).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `<component>.minisig`.
fn signature_path(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Whether `signature` is the development key's signature of `bytes`.
fn signed_by(key: &DevKey, signature: &Path, bytes: &[u8]) -> bool {
    let Ok(text) = std::fs::read_to_string(signature) else {
        return false;
    };
    minisign::SignatureBox::from_string(&text).is_ok_and(|sig| {
        sig.is_prehashed()
            && minisign::verify(
                &key.public,
                &sig,
                std::io::Cursor::new(bytes),
                true,
                false,
                false,
            )
            .is_ok()
    })
}

/// Sign every component of `components` that the development key has not
/// signed as it is now (a rebuilt one, or one signed by another key);
/// returns how many were signed.
pub fn sign_components(root: &Path, components: &[PathBuf]) -> Result<usize> {
    let key = dev_key(root)?;
    let mut signed = 0;
    for component in components {
        let bytes = std::fs::read(component)
            .with_context(|| format!("cannot read {}", component.display()))?;
        let signature = signature_path(component);
        if signed_by(&key, &signature, &bytes) {
            continue;
        }
        let name = component
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let trusted = format!("file:{name} sha256:{hash}");
        let untrusted = format!("signature from minisign secret key {}", key.key_id);
        let text = minisign::sign(
            Some(&key.public),
            &key.secret,
            bytes.as_slice(),
            Some(&trusted),
            Some(&untrusted),
        )
        .with_context(|| format!("cannot sign {}", component.display()))?
        .into_string();
        // Renamed into place: an agent watching the folder never reads
        // half a signature.
        let tmp = component.with_file_name(format!(".{name}.minisig.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &signature)?;
        signed += 1;
    }
    println!(
        "xtask: signed {signed} component(s) with the development key {} ({DEV_PUB}); {} were signed already",
        key.key_id,
        components.len() - signed
    );
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_once_per_build_with_a_key_made_on_first_use() {
        let root = std::env::temp_dir().join(format!("xtask-sign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("target/plugins")).unwrap();
        let component = root.join("target/plugins/a.wasm");
        std::fs::write(&component, b"\0asm first build").unwrap();
        let components = [component.clone()];

        assert_eq!(sign_components(&root, &components).unwrap(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.join(DEV_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = dev_key(&root).unwrap();
        assert!(signed_by(
            &key,
            &signature_path(&component),
            b"\0asm first build"
        ));
        let text = std::fs::read_to_string(signature_path(&component)).unwrap();
        assert!(
            text.contains("trusted comment: file:a.wasm sha256:"),
            "{text}"
        );

        // Signed already: left alone. Rebuilt: signed again.
        assert_eq!(sign_components(&root, &components).unwrap(), 0);
        std::fs::write(&component, b"\0asm second build").unwrap();
        assert_eq!(sign_components(&root, &components).unwrap(), 1);
        assert!(signed_by(
            &key,
            &signature_path(&component),
            b"\0asm second build"
        ));

        // Half a key pair is an error, not a new key.
        std::fs::remove_file(root.join(DEV_PUB)).unwrap();
        assert!(sign_components(&root, &components).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
