//! Python plugin projects, built with componentize-py: the version the
//! project's `pyproject.toml` names (`[tool.medic] componentize-py`),
//! installed into the project's own `.venv` when missing. The build also
//! writes the host bindings to `bindings/`, which the project's tests
//! import to run natively.

use crate::toolchain::Install;
use crate::{BuildError, Project};
use std::path::Path;
use std::process::Command;

/// The world `medic new` writes in `wit/world.wit`.
pub const WORLD: &str = "plugin";

/// Python, as its installers name it.
const PYTHON: &str = if cfg!(windows) { "python" } else { "python3" };

/// A program installed in a virtual environment.
fn venv_program(venv: &Path, name: &str) -> std::path::PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join(format!("{name}.exe"))
    } else {
        venv.join("bin").join(name)
    }
}

/// The componentize-py version the project asks for.
fn wanted_version(project: &Project) -> String {
    std::fs::read_to_string(project.dir.join("pyproject.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("tool")?
                .get("medic")?
                .get("componentize-py")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| crate::scaffold::COMPONENTIZE_PY.to_string())
}

/// The project's componentize-py, installed first where allowed.
fn componentize_py(project: &Project, install: Install) -> Result<std::path::PathBuf, BuildError> {
    let venv = project.dir.join(".venv");
    let tool = venv_program(&venv, "componentize-py");
    let version = wanted_version(project);
    let pip_spec = format!("componentize-py=={version}");
    let has_version = || {
        Command::new(&tool)
            .arg("--version")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&version))
    };
    if tool.exists() && has_version() {
        return Ok(tool);
    }
    let by_hand = format!(
        "python3 -m venv .venv && .venv/bin/pip install {pip_spec} (in {})",
        project.dir.display()
    );
    if install == Install::Never {
        return Err(BuildError::Project(format!(
            "componentize-py {version} is not installed in the project: run `{by_hand}`"
        )));
    }
    let pip = venv_program(&venv, "pip");
    if !pip.exists() {
        eprintln!("medic build: making the project's Python environment (.venv)");
        crate::run(
            Command::new(PYTHON).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
            "install Python 3.11 or newer (python3 with its venv module)",
        )?;
    }
    eprintln!("medic build: installing {pip_spec} into .venv");
    crate::run(
        Command::new(&pip).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &pip_spec,
        ]),
        "pip install",
        &format!("run `{by_hand}` by hand"),
    )?;
    Ok(tool)
}

/// Build the Python project into `component`; say how.
pub fn build(project: &Project, component: &Path, install: Install) -> Result<String, BuildError> {
    if !project.dir.join("app.py").is_file() || !project.dir.join("wit/world.wit").is_file() {
        return Err(BuildError::Project(format!(
            "{} is not a Python plugin project: it needs app.py and wit/world.wit (`medic new NAME --lang python` makes both)",
            project.dir.display()
        )));
    }
    let tool = componentize_py(project, install)?;
    let fix = "rerun `medic build` to install it into .venv";
    crate::run(
        Command::new(&tool)
            .current_dir(&project.dir)
            .args(["-d", "wit", "-w", WORLD, "bindings", "bindings"]),
        "componentize-py bindings",
        fix,
    )?;
    let tmp = component.with_extension("wasm.tmp");
    crate::run(
        Command::new(&tool)
            .current_dir(&project.dir)
            .args(["-d", "wit", "-w", WORLD, "componentize", "app", "-o"])
            .arg(&tmp),
        "componentize-py componentize",
        fix,
    )?;
    std::fs::rename(&tmp, component).map_err(BuildError::io(component))?;
    Ok(format!("componentize-py {}", wanted_version(project)))
}
