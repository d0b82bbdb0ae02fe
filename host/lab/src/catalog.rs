//! The catalog the lab's upstream server publishes: products,
//! classifications, languages and a deterministic stream of updates (the
//! same seed and index always give the same update, file and digest).

use super::model::UpdateMeta;
use sha1::{Digest, Sha1};

/// Products, as the WSUS console names them. The last two are retired: an
/// upstream rebuilt without them no longer has their updates.
pub const PRODUCTS: [&str; 9] = [
    "Windows Server 2022",
    "Windows Server 2019",
    "Windows 11",
    "Windows 10, version 1903 and later",
    "Microsoft 365 Apps/Office 2019/Office LTSC",
    "SQL Server 2019",
    "Microsoft Defender Antivirus",
    "Windows Server 2012 R2",
    "Office 2013",
];

/// The products an upstream "rebuilt with fewer products" drops.
pub const RETIRED_PRODUCTS: [u8; 2] = [7, 8];

/// Classifications; the first two are approved automatically (the default
/// automatic approval rule approves critical and security updates).
pub const CLASSIFICATIONS: [&str; 6] = [
    "Critical Updates",
    "Security Updates",
    "Definition Updates",
    "Updates",
    "Update Rollups",
    "Feature Packs",
];

/// Update languages (`tbLanguage.ShortLanguage`), English first.
pub const LANGUAGES: [&str; 4] = ["en", "de", "fr", "ja"];

/// File name extensions of update files.
pub const EXTENSIONS: [&str; 3] = ["cab", "exe", "msu"];

/// Computer target groups approvals are made for.
pub const TARGET_GROUPS: [&str; 2] = ["All Computers", "Servers"];

/// splitmix64: a small, fast, well-mixed generator; enough for a catalog.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Update number `index` of the catalog seeded with `seed`: its id (a
/// GUID) and metadata.
pub fn update(seed: u64, index: u64) -> (String, UpdateMeta) {
    let a = mix(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let b = mix(a);
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    );
    let roll = (b >> 8) % 100;
    let product = match roll {
        0..=17 => 0,
        18..=33 => 1,
        34..=47 => 2,
        48..=61 => 3,
        62..=71 => 4,
        72..=77 => 5,
        78..=85 => 6,
        86..=93 => 7,
        _ => 8,
    };
    let classification = match (a >> 40) % 100 {
        0..=14 => 0,
        15..=49 => 1,
        50..=64 => 2,
        65..=89 => 3,
        90..=95 => 4,
        _ => 5,
    };
    let language = match (b >> 24) % 100 {
        0..=69 => 0,
        70..=79 => 1,
        80..=87 => 2,
        88..=94 => 3,
        _ => 4,
    };
    let revision = 100 + (b >> 40) as u32 % 200;
    let mut meta = UpdateMeta {
        revision,
        kb: 5_000_000 + (index % 1_000_000) as u32,
        product,
        classification,
        language,
        extension: ((a >> 4) % EXTENSIONS.len() as u64) as u8,
        sha1: [0; 20],
    };
    meta.sha1 = Sha1::digest(file_content(&id, &meta)).into();
    (id, meta)
}

/// What an update's file holds; its SHA-1 is the file's name.
pub fn file_content(id: &str, meta: &UpdateMeta) -> Vec<u8> {
    format!(
        "lab update file\nupdate {id}\nrevision {}\nKB{}\n",
        meta.revision, meta.kb
    )
    .into_bytes()
}

/// `<2 hex>/<SHA1>.<ext>` under `WsusContent` (the folder is the digest's
/// last byte, as on a real server).
pub fn content_path(meta: &UpdateMeta) -> String {
    let hex = hex::encode_upper(meta.sha1);
    format!(
        "{}/{}.{}",
        &hex[38..40],
        hex,
        EXTENSIONS[meta.extension as usize % EXTENSIONS.len()]
    )
}

/// The language's short name; empty when language-neutral.
pub fn language_name(language: u8) -> &'static str {
    match language {
        0 => "",
        n => LANGUAGES.get(n as usize - 1).copied().unwrap_or(""),
    }
}

/// The title the console shows.
pub fn title(meta: &UpdateMeta) -> String {
    let product = PRODUCTS.get(meta.product as usize).copied().unwrap_or("");
    let kind = match meta.classification {
        0 => "Critical Update",
        1 => "Security Update",
        2 => "Definition Update",
        4 => "Update Rollup",
        5 => "Feature Pack",
        _ => "Update",
    };
    let language = match language_name(meta.language) {
        "" => String::new(),
        short => format!(" ({short})"),
    };
    format!("{kind} for {product} (KB{}){language}", meta.kb)
}

/// Whether the automatic approval rule approves it.
pub fn auto_approved(meta: &UpdateMeta) -> bool {
    meta.classification <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_deterministic_and_files_hash_to_their_names() {
        let (id, meta) = update(7, 42);
        assert_eq!(update(7, 42), (id.clone(), meta));
        assert_ne!(update(7, 43).0, id);
        assert_eq!(id.len(), 36);
        let digest: [u8; 20] = Sha1::digest(file_content(&id, &meta)).into();
        assert_eq!(digest, meta.sha1);
        let path = content_path(&meta);
        let name = hex::encode_upper(meta.sha1);
        assert!(
            path.starts_with(&format!("{}/{name}.", &name[38..])),
            "{path}"
        );
        assert!(title(&meta).contains(&format!("(KB{})", meta.kb)));
    }

    #[test]
    fn the_catalog_spreads_over_products_classifications_and_languages() {
        let metas: Vec<UpdateMeta> = (0..3000).map(|i| update(1, i).1).collect();
        for product in 0..PRODUCTS.len() as u8 {
            assert!(metas.iter().any(|m| m.product == product));
        }
        for language in 0..=LANGUAGES.len() as u8 {
            assert!(metas.iter().any(|m| m.language == language));
        }
        let neutral = metas.iter().filter(|m| m.language == 0).count();
        assert!((1800..2400).contains(&neutral), "{neutral}");
    }
}
