//! `medic dev`: the plugin author's loop. Build the project, run its plugin
//! once as its policy configures it, then watch the project's sources and
//! do both again on every change, until interrupted. A failed build or run
//! is shown and the loop goes on.

use super::report_text;
use crate::catalog::Catalog;
use anyhow::{Context, Result};
use clap::Args;
use medic_agent::audit::Store;
use medic_agent::audit::state::StateStore;
use medic_build::{Install, Project};
use medic_sandbox::{EventRecord, Mode};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The project folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// The policy whose table for the plugin configures its runs
    /// [default: the project's policy.toml].
    #[arg(long, short)]
    pub policy: Option<PathBuf>,

    /// The event each run gets, as JSON [default: a manual event].
    #[arg(long)]
    pub event: Option<String>,

    /// enforce, dry-run or approve [default: the plugin's mode in the
    /// policy].
    #[arg(long)]
    pub mode: Option<String>,

    /// Build and run once, then stop (no watching).
    #[arg(long)]
    pub once: bool,
}

/// Folders of a project that builds and tools write: changes there are
/// not the author's.
const GENERATED: &[&str] = &[
    "dist",
    "target",
    ".venv",
    "node_modules",
    "bindings",
    ".medic",
    "__pycache__",
    ".git",
];

/// How long the sources must be quiet before a rebuild: an editor's save
/// is often several writes.
const QUIET: Duration = Duration::from_millis(300);

pub fn dev(args: &DevArgs) -> Result<ExitCode> {
    let project = Project::open(&args.dir)?;
    let policy = args
        .policy
        .clone()
        .unwrap_or_else(|| project.dir.join("policy.toml"));
    let mode = args
        .mode
        .as_deref()
        .map(|m| {
            Mode::parse(m)
                .with_context(|| format!("--mode {m}: expected enforce, dry-run or approve"))
        })
        .transpose()?;
    let event = match &args.event {
        Some(json) => EventRecord::from_json(json)?,
        None => EventRecord::manual(""),
    };
    let state = StateStore::new(Store::open(&project.dir.join(".medic/dev-state"))?);
    let round = || {
        if let Err(e) = build_and_run(&project, &policy, &event, mode, &state) {
            println!("medic dev: {e:#}");
        }
    };
    round();
    if args.once {
        return Ok(ExitCode::SUCCESS);
    }
    let (changed, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.kind.is_modify() | event.kind.is_create() | event.kind.is_remove()
        {
            let _ = changed.send(event.paths);
        }
    })
    .context("cannot watch the project")?;
    watcher
        .watch(&project.dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", project.dir.display()))?;
    println!(
        "medic dev: watching {} (Ctrl-C to stop)",
        project.dir.display()
    );
    while let Ok(paths) = changes.recv() {
        if !paths.iter().any(|p| is_source(&project.dir, p)) {
            continue;
        }
        // Let the writes settle, and take them all as one change.
        while changes.recv_timeout(QUIET).is_ok() {}
        println!("medic dev: a change; building again");
        round();
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is one of the author's files, not a build's or a tool's.
fn is_source(project: &Path, path: &Path) -> bool {
    let Ok(inside) = path.strip_prefix(project) else {
        return false;
    };
    let generated = inside.components().any(|part| {
        GENERATED
            .iter()
            .any(|g| part.as_os_str() == std::ffi::OsStr::new(g))
    });
    // Editors' backups and swap files, and the lock files builds rewrite.
    let temporary = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.ends_with('~')
            || n.ends_with(".swp")
            || n.starts_with(".#")
            || n == "Cargo.lock"
            || n == "package-lock.json"
    });
    !generated && !temporary
}

/// One round: build, then run the plugin once as the policy says.
fn build_and_run(
    project: &Project,
    policy: &Path,
    event: &EventRecord,
    mode: Option<Mode>,
    state: &StateStore,
) -> Result<()> {
    let built = medic_build::build(&project.dir, Install::Missing)?;
    println!(
        "medic dev: built {} ({} KiB)",
        built.component.display(),
        built.size / 1024
    );
    let prepared = medic_agent::by_hand::prepare(policy, &project.name, &Catalog)?;
    let request = prepared.request(event.clone(), mode, Some(state.clone()));
    let report = prepared.runtime.run(&prepared.loaded, request);
    print!("{}", report_text(&report));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_authors_files_count_as_changes() {
        let project = Path::new("/p");
        assert!(is_source(project, Path::new("/p/src/lib.rs")));
        assert!(is_source(project, Path::new("/p/app.py")));
        assert!(!is_source(project, Path::new("/p/dist/x.wasm")));
        assert!(!is_source(project, Path::new("/p/target/release/x")));
        assert!(!is_source(project, Path::new("/p/node_modules/a/b.js")));
        assert!(!is_source(
            project,
            Path::new("/p/.medic/dev-state/medic.redb")
        ));
        assert!(!is_source(project, Path::new("/p/app.py~")));
        assert!(!is_source(project, Path::new("/p/Cargo.lock")));
        assert!(!is_source(project, Path::new("/elsewhere/app.py")));
    }
}
