//! JavaScript plugin projects, built with componentize-js (StarlingMonkey)
//! as the project's `package.json` pins it, installed with `npm install`
//! when missing. The build leaves out `wasi:http` and the fetch event
//! (`--disable http fetch-event`): the agent does not provide them.

use crate::toolchain::Install;
use crate::{BuildError, Project};
use std::path::Path;
use std::process::Command;

/// The world `medic new` writes in `wit/world.wit`.
pub const WORLD: &str = "plugin";

/// The features componentize-js would otherwise import and the agent
/// refuses.
pub const DISABLED: &[&str] = &["http", "fetch-event"];

/// Build the JavaScript project into `component`; say how.
pub fn build(project: &Project, component: &Path, install: Install) -> Result<String, BuildError> {
    if !project.dir.join("app.js").is_file() || !project.dir.join("wit/world.wit").is_file() {
        return Err(BuildError::Project(format!(
            "{} is not a JavaScript plugin project: it needs app.js and wit/world.wit (`medic new NAME --lang js` makes both)",
            project.dir.display()
        )));
    }
    let tool = project
        .dir
        .join("node_modules/.bin")
        .join(if cfg!(windows) {
            "componentize-js.cmd"
        } else {
            "componentize-js"
        });
    if !tool.exists() {
        if install == Install::Never {
            return Err(BuildError::Project(format!(
                "componentize-js is not installed in the project: run `npm install` in {}",
                project.dir.display()
            )));
        }
        eprintln!("medic build: npm install (componentize-js)");
        crate::run(
            Command::new(if cfg!(windows) { "npm.cmd" } else { "npm" })
                .current_dir(&project.dir)
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"]),
            "npm install",
            "install Node.js 20 or newer with npm",
        )?;
    }
    let tmp = component.with_extension("wasm.tmp");
    let mut command = Command::new(&tool);
    command
        .current_dir(&project.dir)
        .args(["app.js", "--wit", "wit", "--world-name", WORLD, "--disable"])
        .args(DISABLED)
        .arg("--out")
        .arg(&tmp);
    crate::run(
        &mut command,
        "componentize-js",
        "run `npm install` in the project",
    )?;
    std::fs::rename(&tmp, component).map_err(BuildError::io(component))?;
    Ok("componentize-js".to_string())
}
