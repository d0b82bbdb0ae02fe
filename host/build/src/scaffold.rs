//! `medic new`: a plugin project in a folder of its own, anywhere on disk:
//! the plugin's source (a service keeper, a real remediation to start
//! from), its tests against a fake host in the language's usual runner, a
//! policy that serves it, a README, and for Python and JavaScript the
//! contract's WIT (the Rust SDK carries its own).

use crate::{BuildError, Lang};
use std::path::{Path, PathBuf};

/// The `medic:plugin` version new projects are built for.
pub const CONTRACT_VERSION: &str = "0.4.0";
/// The `medic:wsus` version beside it.
pub const WSUS_VERSION: &str = "0.3.0";
/// The componentize-py a Python project builds with (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js a JavaScript project builds with (npm).
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// Where a Rust project's `medic-sdk` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A published version, from crates.io.
    Version(String),
    /// A checkout of the SDK (the `sdk` folder of medic's repository).
    Path(PathBuf),
}

impl Sdk {
    /// The SDK of the same release as this medic.
    pub fn this_release() -> Self {
        Self::Version(env!("CARGO_PKG_VERSION").to_string())
    }

    fn dependency(&self) -> String {
        match self {
            Self::Version(version) => format!("medic-sdk = \"{version}\""),
            Self::Path(path) => format!(
                "medic-sdk = {{ path = {} }}",
                toml::Value::String(path.display().to_string())
            ),
        }
    }
}

/// One file of a template: its path in the project and its text.
type File = (&'static str, &'static str);

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("README.md", include_str!("../templates/rust/README.md")),
];

const PYTHON: &[File] = &[
    (
        "pyproject.toml",
        include_str!("../templates/python/pyproject.toml"),
    ),
    ("app.py", include_str!("../templates/python/app.py")),
    (
        "tests/conftest.py",
        include_str!("../templates/python/tests/conftest.py"),
    ),
    (
        "tests/test_app.py",
        include_str!("../templates/python/tests/test_app.py"),
    ),
    ("README.md", include_str!("../templates/python/README.md")),
];

const JS: &[File] = &[
    ("package.json", include_str!("../templates/js/package.json")),
    ("app.js", include_str!("../templates/js/app.js")),
    (
        "test/register.mjs",
        include_str!("../templates/js/test/register.mjs"),
    ),
    (
        "test/hooks.mjs",
        include_str!("../templates/js/test/hooks.mjs"),
    ),
    (
        "test/host/services.mjs",
        include_str!("../templates/js/test/host/services.mjs"),
    ),
    (
        "test/host/config.mjs",
        include_str!("../templates/js/test/host/config.mjs"),
    ),
    (
        "test/host/log.mjs",
        include_str!("../templates/js/test/host/log.mjs"),
    ),
    (
        "test/app.test.js",
        include_str!("../templates/js/test/app.test.js"),
    ),
    ("README.md", include_str!("../templates/js/README.md")),
];

const COMMON: &[File] = &[
    ("policy.toml", include_str!("../templates/policy.toml")),
    (".gitignore", include_str!("../templates/gitignore")),
];

/// The contract, for languages whose tools read WIT.
const WIT: &[File] = &[
    ("wit/world.wit", include_str!("../templates/world.wit")),
    (
        "wit/deps/medic-plugin/config.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/config.wit"),
    ),
    (
        "wit/deps/medic-plugin/fs.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/fs.wit"),
    ),
    (
        "wit/deps/medic-plugin/log.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/log.wit"),
    ),
    (
        "wit/deps/medic-plugin/services.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/services.wit"),
    ),
    (
        "wit/deps/medic-plugin/state.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/state.wit"),
    ),
    (
        "wit/deps/medic-plugin/types.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/types.wit"),
    ),
    (
        "wit/deps/medic-plugin/world.wit",
        include_str!("../../../sdk/wit/medic-plugin/0.4.0/world.wit"),
    ),
    (
        "wit/deps/medic-wsus/world.wit",
        include_str!("../../../sdk/wit/medic-wsus/0.3.0/world.wit"),
    ),
    (
        "wit/deps/medic-wsus/wsus.wit",
        include_str!("../../../sdk/wit/medic-wsus/0.3.0/wsus.wit"),
    ),
];

/// What `medic new` made.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Make a `lang` plugin project named `name` in the new folder `dir`
/// (which must not exist, or be empty).
pub fn new(dir: &Path, name: &str, lang: Lang, sdk: &Sdk) -> Result<Scaffolded, BuildError> {
    if !crate::project::valid_name(name) {
        return Err(BuildError::Project(format!(
            "`{name}` is not a plugin name: lowercase letters, digits and dashes, starting with a letter (e.g. `keep-cron`)"
        )));
    }
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(BuildError::Project(format!(
            "{} exists and is not empty: give a new folder",
            dir.display()
        )));
    }
    let files: Vec<File> = match lang {
        Lang::Rust => [RUST, COMMON].concat(),
        Lang::Python => [PYTHON, COMMON, WIT].concat(),
        Lang::JavaScript => [JS, COMMON, WIT].concat(),
    };
    let substitutions = [
        ("{{name}}", name.to_string()),
        ("{{sdk_dependency}}", sdk.dependency()),
        ("{{componentize_py}}", COMPONENTIZE_PY.to_string()),
        ("{{componentize_js}}", COMPONENTIZE_JS.to_string()),
        ("{{contract_version}}", CONTRACT_VERSION.to_string()),
        ("{{wsus_version}}", WSUS_VERSION.to_string()),
    ];
    let mut written = Vec::new();
    for (path, template) in files {
        let mut text = template.to_string();
        for (key, value) in &substitutions {
            text = text.replace(key, value);
        }
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(BuildError::io(parent))?;
        }
        std::fs::write(&path, text).map_err(BuildError::io(&path))?;
        written.push(path);
    }
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        files: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_gets_its_project_with_the_name_filled_in() {
        for lang in Lang::ALL {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("keep-cron");
            let made = new(&dir, "keep-cron", lang, &Sdk::this_release()).unwrap();
            for file in &made.files {
                let text = std::fs::read_to_string(file).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    file.display()
                );
            }
            let project = crate::Project::open(&dir).unwrap();
            assert_eq!((project.lang, project.name.as_str()), (lang, "keep-cron"));
            assert!(dir.join("policy.toml").is_file());
            assert_eq!(dir.join("wit/world.wit").is_file(), lang != Lang::Rust);
        }
    }

    #[test]
    fn the_sdk_comes_by_version_or_by_path() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("p");
        new(&dir, "p", Lang::Rust, &Sdk::Path("/opt/medic/sdk".into())).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(r#"medic-sdk = { path = "/opt/medic/sdk" }"#),
            "{manifest}"
        );
        let manifest: toml::Table = manifest.parse().unwrap();
        assert!(manifest.contains_key("workspace"));
    }

    #[test]
    fn a_bad_name_or_a_used_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let error = new(
            &root.path().join("x"),
            "Keep_Cron",
            Lang::Rust,
            &Sdk::this_release(),
        );
        assert!(error.unwrap_err().to_string().contains("not a plugin name"));
        std::fs::write(root.path().join("file"), "").unwrap();
        let error = new(root.path(), "x", Lang::Rust, &Sdk::this_release());
        assert!(error.unwrap_err().to_string().contains("not empty"));
    }

    #[test]
    fn the_wit_is_the_sdks_current_contract() {
        let world = WIT
            .iter()
            .find(|(p, _)| *p == "wit/deps/medic-plugin/world.wit")
            .unwrap();
        assert!(
            world
                .1
                .contains(&format!("package medic:plugin@{CONTRACT_VERSION};"))
        );
        let wsus = WIT
            .iter()
            .find(|(p, _)| *p == "wit/deps/medic-wsus/world.wit")
            .unwrap();
        assert!(
            wsus.1
                .contains(&format!("package medic:wsus@{WSUS_VERSION};"))
        );
    }
}
