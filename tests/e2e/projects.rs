//! Plugin projects as an author makes them, outside the repository: `medic
//! new` in each language, the project's own tests in its language's usual
//! runner (against a fake host), `medic build` with the real toolchains
//! (cargo, componentize-py from PyPI, componentize-js from npm), `medic
//! check` of the policy the project comes with, a run of the built
//! component by `medic trigger` and one by a running agent, each repairing
//! the lab's stopped BITS.

use crate::support::workspace;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `medic ARGS` in `dir`, its compile cache shared by the suite's runs.
fn medic_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .current_dir(dir)
        .env("MEDIC_CACHE_DIR", workspace().join("target/test-cache"))
        .output()
        .unwrap()
}

#[track_caller]
fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A new project `name` in `lang`, made in a fresh folder.
fn new_project(root: &Path, name: &str, lang: &str) -> PathBuf {
    let sdk = workspace().join("sdk");
    let out = medic_in(
        root,
        &["new", name, "--lang", lang, "--sdk", sdk.to_str().unwrap()],
    );
    let said = succeeded(&out, "medic new");
    assert!(said.contains("medic build"), "{said}");
    root.join(name)
}

/// Build the project and return its component.
fn build(project: &Path, name: &str) -> PathBuf {
    let out = medic_in(project, &["build"]);
    let said = succeeded(&out, "medic build");
    let component = project.join("dist").join(format!("{name}.wasm"));
    assert!(
        said.contains(&component.display().to_string()) || said.contains("built"),
        "{said}"
    );
    assert!(component.is_file(), "{said}");
    component
}

/// The project's policy checks clean against the built component.
fn check_policy(project: &Path, name: &str) {
    let out = medic_in(project, &["check", "--policy", "policy.toml"]);
    let said = succeeded(&out, "medic check");
    assert!(said.contains(&format!("{name} 0.1.0")), "{said}");
}

/// Run the component against a lab whose BITS stopped: it is started, and
/// what the plugin printed is in the run's record.
fn repairs_the_labs_bits(root: &Path, component: &Path) {
    let lab = root.join("lab");
    let lab_arg = lab.to_str().unwrap();
    succeeded(&medic_in(root, &["lab", "init", lab_arg]), "lab init");
    succeeded(
        &medic_in(root, &["lab", "fault", "bits-stopped", "--lab", lab_arg]),
        "lab fault",
    );
    let state = root.join("trigger-state");
    let run = |setting: &str| {
        medic_in(
            root,
            &[
                "trigger",
                component.to_str().unwrap(),
                "--lab",
                lab_arg,
                "--grant",
                "services-read=BITS",
                "--grant",
                "services-control=BITS",
                "--setting",
                setting,
                "--state-dir",
                state.to_str().unwrap(),
                "--json",
            ],
        )
    };
    let report: serde_json::Value =
        serde_json::from_str(&succeeded(&run("service=BITS"), "trigger")).unwrap();
    assert_eq!(
        report["result"]["completed"]["status"], "remediated",
        "{report:#}"
    );
    assert_eq!(report["calls"][1]["function"], "services.start");
    assert_eq!(report["calls"][1]["applied"], true);
    let logs = report["logs"].to_string();
    assert!(logs.contains("checking BITS"), "{logs}");
    let report: serde_json::Value =
        serde_json::from_str(&succeeded(&run("service=BITS"), "second trigger")).unwrap();
    assert_eq!(
        report["result"]["completed"]["status"], "healthy",
        "{report:#}"
    );
    // A service outside the grants: the plugin's error says so.
    let out = run("service=W3SVC");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failure = report["result"]["failed"].to_string();
    assert!(failure.contains("denied"), "{failure}");
}

/// A policy in `root` serving the project's plugin on `lab`'s downstream,
/// in enforce mode, keeping BITS running, on manual events.
fn lab_policy(root: &Path, project: &Path, name: &str, lab: &Path) -> PathBuf {
    let policy = root.join("lab-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = \"state\"\nplugin_dir = \"{dist}\"\ncache_dir = \"{cache}\"\n\n[backend]\nkind = \"lab\"\nlab = \"{lab}\"\n\n[plugins.{name}]\ncomponent = \"{name}.wasm\"\nmode = \"enforce\"\ngrants = {{ services-read = [\"BITS\"], services-control = [\"BITS\"] }}\nsettings = {{ service = \"BITS\" }}\nlimits = {{ memory = \"64MiB\" }}\n[[plugins.{name}.triggers]]\nkind = \"manual\"\n",
            dist = project.join("dist").display(),
            cache = workspace().join("target/test-cache").display(),
            lab = lab.display(),
        ),
    )
    .unwrap();
    policy
}

/// The agent serves the built plugin: a manual event sent to it is
/// handled, BITS (stopped again) is started, and the run is in the audit
/// journal with what the plugin printed.
fn served_by_the_agent(root: &Path, project: &Path, name: &str) {
    let lab = root.join("lab");
    succeeded(
        &medic_in(
            root,
            &[
                "lab",
                "fault",
                "bits-stopped",
                "--lab",
                lab.to_str().unwrap(),
            ],
        ),
        "lab fault",
    );
    let policy = lab_policy(root, project, name, &lab);
    let _agent = crate::support::MedicRun::start(&policy);
    succeeded(
        &medic_in(root, &["send", name, "--policy", policy.to_str().unwrap()]),
        "medic send",
    );
    let state = root.join("state");
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    let run = loop {
        if let Some(run) = crate::support::run_records(&state)
            .into_iter()
            .find(|r| r.plugin == name)
        {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never ran {name}; its log:\n{}",
            std::fs::read_to_string(root.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(run.status.to_string(), "remediated", "{}", run.summary);
    assert!(
        run.detail["logs"].to_string().contains("checking BITS"),
        "{}",
        run.detail
    );
}

/// Run `program ARGS` in `dir` and insist it succeeds.
#[track_caller]
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    succeeded(&out, &format!("{program} {}", args.join(" ")))
}

#[test]
fn a_rust_plugin_project_is_made_tested_built_and_run() {
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), "keep-it-rs", "rust");
    // Its tests run natively, against the SDK's fake host.
    let tested = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet"])
        .current_dir(&project)
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/plugin-projects"),
        )
        .output()
        .unwrap();
    let said = succeeded(&tested, "cargo test");
    assert!(said.contains("4 passed"), "{said}");
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["build"])
        .current_dir(&project)
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/plugin-projects"),
        )
        .output()
        .unwrap();
    succeeded(&out, "medic build");
    let component = project.join("dist/keep-it-rs.wasm");
    check_policy(&project, "keep-it-rs");
    repairs_the_labs_bits(root.path(), &component);
}

#[test]
fn a_python_plugin_project_is_made_built_tested_and_run() {
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), "keep-it-py", "python");
    let component = build(&project, "keep-it-py");
    // The build wrote the bindings its tests import; pytest runs them.
    run_in(&project, ".venv/bin/pip", &["install", "--quiet", "pytest"]);
    let said = run_in(&project, ".venv/bin/pytest", &["-q"]);
    assert!(said.contains("4 passed"), "{said}");
    check_policy(&project, "keep-it-py");
    repairs_the_labs_bits(root.path(), &component);
    served_by_the_agent(root.path(), &project, "keep-it-py");
}

#[test]
fn a_javascript_plugin_project_is_made_built_tested_and_run() {
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), "keep-it-js", "js");
    let component = build(&project, "keep-it-js");
    let said = run_in(&project, "npm", &["test", "--silent"]);
    assert!(said.contains("# pass 4"), "{said}");
    check_policy(&project, "keep-it-js");
    repairs_the_labs_bits(root.path(), &component);
    served_by_the_agent(root.path(), &project, "keep-it-js");
}

#[test]
fn building_what_is_not_a_plugin_project_says_how_to_make_one() {
    let root = tempfile::tempdir().unwrap();
    let out = medic_in(root.path(), &["build"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("medic new NAME --lang"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        root.path().join("Cargo.toml"),
        "[package]\nname = \"lib-only\"\n",
    )
    .unwrap();
    let out = medic_in(root.path(), &["build"]);
    assert!(
        text(&out.stderr).contains("crate-type = [\"cdylib\", \"rlib\"]"),
        "{}",
        text(&out.stderr)
    );
    let out = medic_in(root.path(), &["new", "Bad_Name", "--lang", "rust"]);
    assert_eq!(out.status.code(), Some(1));
    let out = medic_in(root.path(), &["new", "x", "--lang", "cobol"]);
    assert!(text(&out.stderr).contains("expected rust, python or js"));
}

#[test]
fn medic_dev_rebuilds_and_reruns_the_plugin_on_every_change() {
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), "keep-it-dev", "rust");
    let lab = root.path().join("lab");
    let lab_arg = lab.to_str().unwrap();
    succeeded(
        &medic_in(root.path(), &["lab", "init", lab_arg]),
        "lab init",
    );
    succeeded(
        &medic_in(
            root.path(),
            &["lab", "fault", "bits-stopped", "--lab", lab_arg],
        ),
        "lab fault",
    );
    let policy = lab_policy(root.path(), &project, "keep-it-dev", &lab);
    let output = root.path().join("dev.out");
    let mut dev = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["dev", "--policy", policy.to_str().unwrap()])
        .current_dir(&project)
        .env("MEDIC_CACHE_DIR", workspace().join("target/test-cache"))
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/plugin-projects"),
        )
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _kill = crate::support::KillOnDrop(&mut dev);
    let wait_for = |wanted: &str| {
        let deadline = std::time::Instant::now() + crate::support::PATIENCE * 4;
        loop {
            let seen = std::fs::read_to_string(&output).unwrap_or_default();
            if seen.contains(wanted) {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "medic dev never said {wanted:?}; it said:\n{seen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Built and run once: BITS is started.
    wait_for("outcome  remediated: BITS was stopped; started");
    wait_for("watching");
    // The author changes the plugin: it is built and run again, and the
    // new code speaks.
    let source = project.join("src/lib.rs");
    let code = std::fs::read_to_string(&source).unwrap();
    std::fs::write(
        &source,
        code.replace("is running\"", "runs, as it should\""),
    )
    .unwrap();
    wait_for("outcome  healthy: BITS runs, as it should");
    // A change that does not compile is shown, and the loop goes on.
    let broken = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, format!("{broken}\nthis does not compile\n")).unwrap();
    wait_for("medic dev: cargo build failed");
    std::fs::write(&source, broken.replace("runs, as it should", "is fine")).unwrap();
    wait_for("outcome  healthy: BITS is fine");
}
