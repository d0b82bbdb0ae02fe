//! What a plugin project is: its folder, its language (told by the file
//! that drives its build: `Cargo.toml`, `pyproject.toml` or
//! `package.json`) and the plugin's name (that file's package name).

use crate::BuildError;
use std::path::{Path, PathBuf};

/// A plugin project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
}

impl Lang {
    /// Every language, in the order `--lang` lists them.
    pub const ALL: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::JavaScript];

    /// The name `--lang` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::JavaScript => "js",
        }
    }

    /// A language by its `--lang` name (or a usual alias).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "rust" | "rs" => Some(Self::Rust),
            "python" | "py" => Some(Self::Python),
            "js" | "javascript" => Some(Self::JavaScript),
            _ => None,
        }
    }

    /// The file that drives a project's build, and names it.
    pub fn manifest(self) -> &'static str {
        match self {
            Self::Rust => "Cargo.toml",
            Self::Python => "pyproject.toml",
            Self::JavaScript => "package.json",
        }
    }
}

/// A plugin project on disk.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub lang: Lang,
    /// The plugin's name: the manifest's package name.
    pub name: String,
}

impl Project {
    /// The project in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BuildError> {
        let dir = dir
            .canonicalize()
            .map_err(|cause| BuildError::Project(format!("{}: {cause}", dir.display())))?;
        let found: Vec<Lang> = Lang::ALL
            .into_iter()
            .filter(|lang| dir.join(lang.manifest()).is_file())
            .collect();
        let lang = match found[..] {
            [lang] => lang,
            [] => {
                return Err(BuildError::Project(format!(
                    "{} is not a plugin project: it has no Cargo.toml, pyproject.toml or package.json (make one with `medic new NAME --lang rust|python|js`)",
                    dir.display()
                )));
            }
            _ => {
                let names: Vec<&str> = found.iter().map(|l| l.manifest()).collect();
                return Err(BuildError::Project(format!(
                    "{} has {}: a plugin project has one of them",
                    dir.display(),
                    names.join(" and ")
                )));
            }
        };
        let manifest = dir.join(lang.manifest());
        let text = std::fs::read_to_string(&manifest).map_err(BuildError::io(&manifest))?;
        let name = package_name(lang, &text)
            .map_err(|problem| BuildError::Project(format!("{}: {problem}", manifest.display())))?;
        if lang == Lang::Rust {
            check_cdylib(&text).map_err(|problem| {
                BuildError::Project(format!("{}: {problem}", manifest.display()))
            })?;
        }
        Ok(Self { dir, lang, name })
    }
}

/// The package name a manifest gives.
fn package_name(lang: Lang, text: &str) -> Result<String, String> {
    let name = match lang {
        Lang::Rust | Lang::Python => {
            let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
            let section = if lang == Lang::Rust {
                "package"
            } else {
                "project"
            };
            table
                .get(section)
                .and_then(|s| s.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("no `name` in its [{section}] table"))?
        }
        Lang::JavaScript => {
            let json: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
            json.get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .ok_or_else(|| "no \"name\"".to_string())?
        }
    };
    if !valid_name(&name) {
        return Err(format!(
            "the name `{name}` is not a plugin name: lowercase letters, digits and dashes, starting with a letter"
        ));
    }
    Ok(name)
}

/// A plugin name: lowercase ASCII letters, digits and dashes, starting
/// with a letter (what the agent accepts).
pub fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A Rust plugin is built as a `cdylib`: say so, with the TOML, when not.
fn check_cdylib(text: &str) -> Result<(), String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let cdylib = table
        .get("lib")
        .and_then(|lib| lib.get("crate-type"))
        .and_then(|types| types.as_array())
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if cdylib {
        Ok(())
    } else {
        Err("a plugin crate is built as a WebAssembly library; add\n\n    [lib]\n    crate-type = [\"cdylib\", \"rlib\"]\n\n(`rlib` lets `cargo test` run its tests natively)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Project, BuildError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let project = Project::open(dir.path());
        (dir, project)
    }

    #[test]
    fn the_manifest_tells_the_language_and_the_name() {
        let rust = "[package]\nname = \"keep-it\"\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n";
        let (_d, p) = project(&[("Cargo.toml", rust)]);
        let p = p.unwrap();
        assert_eq!((p.lang, p.name.as_str()), (Lang::Rust, "keep-it"));
        let (_d, p) = project(&[("pyproject.toml", "[project]\nname = \"py-check\"\n")]);
        assert_eq!(p.unwrap().lang, Lang::Python);
        let (_d, p) = project(&[("package.json", r#"{"name": "js-check"}"#)]);
        assert_eq!(p.unwrap().name, "js-check");
    }

    #[test]
    fn a_crate_without_cdylib_is_told_the_toml_that_fixes_it() {
        let (_d, p) = project(&[("Cargo.toml", "[package]\nname = \"x\"\n")]);
        let message = p.unwrap_err().to_string();
        assert!(
            message.contains("crate-type = [\"cdylib\", \"rlib\"]"),
            "{message}"
        );
    }

    #[test]
    fn no_manifest_two_manifests_and_bad_names_are_refused() {
        let (_d, p) = project(&[]);
        assert!(p.unwrap_err().to_string().contains("medic new"));
        let (_d, p) = project(&[
            ("package.json", r#"{"name": "a"}"#),
            ("pyproject.toml", "[project]\nname = \"a\"\n"),
        ]);
        assert!(
            p.unwrap_err()
                .to_string()
                .contains("has pyproject.toml and package.json")
        );
        let (_d, p) = project(&[("package.json", r#"{"name": "Bad_Name"}"#)]);
        assert!(p.unwrap_err().to_string().contains("not a plugin name"));
    }
}
