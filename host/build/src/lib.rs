//! Plugin projects: [`scaffold`] makes one in Rust, Python or JavaScript,
//! anywhere on disk, and [`build`] turns one into a component the agent
//! loads, installing what it needs where it can and naming it where it
//! cannot. `medic new` and `medic build` are this crate; the repository's
//! own build of its plugins uses its [`toolchain`] and [`rust::encode`].

pub mod js;
pub mod project;
pub mod python;
pub mod rust;
pub mod scaffold;
pub mod toolchain;

pub use project::{Lang, Project};
pub use toolchain::Install;

use std::path::PathBuf;

/// Why a project could not be made or built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Project(String),
    #[error(transparent)]
    Toolchain(#[from] toolchain::ToolchainError),
    #[error("{what} failed ({status}); its output is above")]
    Failed { what: String, status: String },
    #[error("cannot run {program}: {cause}; {fix}")]
    Missing {
        program: String,
        cause: std::io::Error,
        fix: String,
    },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("making a component of {}: {reason}", module.display())]
    Encode { module: PathBuf, reason: String },
}

impl BuildError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { path, cause }
    }
}

/// A component built from a project.
#[derive(Debug, Clone)]
pub struct Built {
    pub component: PathBuf,
    pub size: u64,
    /// How it was built, for the person who asked.
    pub how: String,
}

/// Build the project in `dir` into `dir/dist/NAME.wasm`.
pub fn build(dir: &std::path::Path, install: Install) -> Result<Built, BuildError> {
    let project = Project::open(dir)?;
    let dist = project.dir.join("dist");
    std::fs::create_dir_all(&dist).map_err(BuildError::io(&dist))?;
    let component = dist.join(format!("{}.wasm", project.name));
    let how = match project.lang {
        Lang::Rust => rust::build(&project, &component, install)?,
        Lang::Python => python::build(&project, &component, install)?,
        Lang::JavaScript => js::build(&project, &component, install)?,
    };
    let size = std::fs::metadata(&component)
        .map_err(BuildError::io(&component))?
        .len();
    Ok(Built {
        component,
        size,
        how,
    })
}

/// Run `command`, its output going to this process's; an error naming
/// `what` when it fails, and `fix` when the program cannot be started.
pub(crate) fn run(
    command: &mut std::process::Command,
    what: &str,
    fix: &str,
) -> Result<(), BuildError> {
    let program = command.get_program().to_string_lossy().into_owned();
    tracing::debug!("running {command:?}");
    let status = command.status().map_err(|cause| BuildError::Missing {
        program,
        cause,
        fix: fix.to_string(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            what: what.to_string(),
            status: status.to_string(),
        })
    }
}
