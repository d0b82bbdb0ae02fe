//! `medic new` and `medic build`: plugin projects, made and built
//! ([`medic_build`]).

use anyhow::{Context, Result};
use clap::Args;
use medic_build::scaffold::Sdk;
use medic_build::{Install, Lang};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits and dashes); also the
    /// project folder's, unless --dir says otherwise.
    pub name: String,

    /// rust, python or js.
    #[arg(long, value_parser = parse_lang)]
    pub lang: Lang,

    /// The project folder [default: ./NAME].
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// Rust: depend on the SDK in this folder (a checkout's `sdk`) instead
    /// of the published medic-sdk of this release.
    #[arg(long, value_name = "PATH", env = "MEDIC_SDK")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Only name what is missing (a compiler target, componentize-py,
    /// componentize-js) instead of installing it.
    #[arg(long)]
    pub no_install: bool,
}

fn parse_lang(text: &str) -> Result<Lang, String> {
    Lang::parse(text).ok_or_else(|| format!("`{text}`: expected rust, python or js"))
}

pub fn new(args: &NewArgs) -> Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match &args.sdk {
        Some(path) => Sdk::Path(
            std::path::absolute(path).with_context(|| format!("--sdk {}", path.display()))?,
        ),
        None => Sdk::this_release(),
    };
    let made = medic_build::scaffold::new(&dir, &args.name, args.lang, &sdk)?;
    println!(
        "made the {} plugin project `{}` in {}:",
        args.lang.as_str(),
        args.name,
        made.dir.display()
    );
    for file in &made.files {
        println!(
            "  {}",
            file.strip_prefix(&made.dir).unwrap_or(file).display()
        );
    }
    let test = match args.lang {
        Lang::Rust => "cargo test",
        Lang::Python => "medic build && .venv/bin/pip install pytest && .venv/bin/pytest",
        Lang::JavaScript => "npm install && npm test",
    };
    println!(
        "next:\n  cd {}\n  {test}\n  medic build\n  medic trigger --policy policy.toml {} --dry-run",
        made.dir.display(),
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

pub fn build(args: &BuildArgs) -> Result<ExitCode> {
    let install = if args.no_install {
        Install::Never
    } else {
        Install::Missing
    };
    let built = medic_build::build(&args.dir, install)?;
    println!(
        "built {} ({} KiB) with {}",
        built.component.display(),
        built.size / 1024,
        built.how
    );
    Ok(ExitCode::SUCCESS)
}
