//! The hostile-plugin suite: `fixture-hostile`, a plugin written to get out
//! of its sandbox or to take the host down with it, run through the real
//! runtime and the real `medic` binary. Each escape is tried many times:
//! symbolic links and hard links out of a granted folder (with a local user
//! racing the plugin), blocking in WASI past the deadline (in `handle()`
//! and in `describe()`), flooding the host with log lines, huge summaries,
//! errors and call arguments, filling the state store, and writing
//! terminal control sequences. `docs/security.md` maps each guarantee to
//! its test here.

use crate::support::{Run, component, load, runtime, workspace};
use medic_sandbox::{Limits, LoadedPlugin, RunFailure, RunReport, RunResult};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "the outside secret";

fn hostile() -> LoadedPlugin {
    load("fixture-hostile")
}

/// A run of `attack` with every capability the plugin asks for granted on
/// `root` only.
fn attack(root: &Path, attack: &str) -> Run {
    Run::default()
        .grant(&format!("fs-read={}", root.display()))
        .grant(&format!("fs-write={}", root.display()))
        .grant("services-control=medic-test-none")
        .setting("attack", attack)
        .setting("principal", "user:nobody")
}

fn summary(report: &RunReport) -> &str {
    match &report.result {
        RunResult::Completed(outcome) => &outcome.summary,
        RunResult::Failed(failure) => panic!("the run failed: {failure}"),
    }
}

/// A granted folder `share` (with `share/sub/f*`), and `outside` beside
/// it: `secret` (mode 600) and files `f*`; `share/link` points at the
/// secret and `share/alt` at the outside folder.
struct Scene {
    _dir: tempfile::TempDir,
    share: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..4 {
        std::fs::write(share.join(format!("sub/f{i}")), "inside").unwrap();
        std::fs::write(outside.join(format!("f{i}")), SECRET).unwrap();
    }
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    for name in ["secret", "f0", "f1", "f2", "f3"] {
        std::fs::set_permissions(outside.join(name), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), share.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, share.join("alt")).unwrap();
    Scene {
        _dir: dir,
        share,
        outside,
    }
}

/// Paths outside whose access changed: they were made mode 600, and a
/// named ACL entry would widen their group bits (the mask).
fn touched_outside(outside: &Path) -> Vec<PathBuf> {
    let mut touched: Vec<PathBuf> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().permissions().mode() & 0o077 != 0)
        .collect();
    if std::fs::metadata(outside).unwrap().permissions().mode() & 0o077 != 0 {
        touched.push(outside.to_path_buf());
    }
    touched
}

#[test]
fn links_out_of_a_granted_folder_are_refused_however_the_path_is_spelled() {
    let scene = scene();
    let plugin = hostile();
    let share = scene.share.display().to_string();
    for _ in 0..20 {
        for path in [
            format!("{share}/link"),
            format!("{share}//link"),
            format!("{share}/./link"),
            format!("{share}/alt/secret"),
        ] {
            let report = attack(&scene.share, "read")
                .setting("path", &path)
                .on(&plugin);
            let text = summary(&report);
            assert!(!text.contains(SECRET), "{path}: {text}");
            assert!(text.starts_with("error: denied"), "{path}: {text}");
        }
        for path in [
            format!("{share}/alt"),
            format!("{share}/alt/"),
            format!("{share}/alt/."),
            format!("{share}//alt"),
        ] {
            let report = attack(&scene.share, "list")
                .setting("path", &path)
                .on(&plugin);
            let text = summary(&report);
            assert!(!text.contains("secret"), "{path}: {text}");
            assert!(text.starts_with("error: denied"), "{path}: {text}");
        }
    }
    // A hard link to a file outside is refused as well.
    std::fs::hard_link(scene.outside.join("secret"), scene.share.join("hard")).unwrap();
    let report = attack(&scene.share, "read")
        .setting("path", &format!("{share}/hard"))
        .on(&plugin);
    assert!(
        summary(&report).contains("hard links"),
        "{}",
        summary(&report)
    );
    let report = attack(&scene.share, "ensure")
        .setting("path", &format!("{share}/hard"))
        .on(&plugin);
    assert!(
        summary(&report).starts_with("error: denied"),
        "{}",
        summary(&report)
    );
    assert_eq!(touched_outside(&scene.outside), Vec::<PathBuf>::new());
}

#[test]
fn repairs_raced_by_a_local_user_never_change_anything_outside() {
    let scene = scene();
    let plugin = hostile();
    let stop = Arc::new(AtomicBool::new(false));
    // The local user: swaps `sub` (a folder) and `alt` (a link out) as fast
    // as it can.
    let swapper = {
        let (share, stop) = (scene.share.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !renameat2_exchange(&share.join("sub"), &share.join("alt")) {
                    break;
                }
                swaps += 1;
            }
            swaps
        })
    };
    let share = scene.share.display().to_string();
    let mut changed_inside = 0;
    for round in 0..300 {
        let (path, recursive) = if round % 2 == 0 {
            (share.clone(), "true")
        } else {
            (format!("{share}/sub/f{}", round % 4), "false")
        };
        let report = attack(&scene.share, "ensure")
            .setting("path", &path)
            .setting("recursive", recursive)
            .on(&plugin);
        let text = summary(&report);
        assert!(
            text.starts_with("checked") || text.starts_with("error:"),
            "{text}"
        );
        if text.starts_with("checked") && !text.ends_with(" changed 0") {
            changed_inside += 1;
        }
    }
    assert!(changed_inside > 0, "no repair had anything to do");
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the swapper raced the repairs ({swaps} swaps)");
    assert_eq!(touched_outside(&scene.outside), Vec::<PathBuf>::new());
}

/// Exchange two names atomically (`renameat2(RENAME_EXCHANGE)`).
fn renameat2_exchange(a: &Path, b: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are NUL-terminated and live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    rc == 0
}

#[test]
fn a_plugin_blocked_in_wasi_ends_at_its_deadline() {
    let plugin = hostile();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    for (round, (kind, count)) in [("sleep", "1"), ("sleep-loop", "1000")]
        .iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        let started = Instant::now();
        let report = attack(dir.path(), kind)
            .setting("ms", "60000")
            .setting("count", count)
            .limits(limits)
            .on(&plugin);
        let took = started.elapsed();
        match &report.result {
            RunResult::Failed(RunFailure::Timeout {
                limit_ms: 300,
                elapsed_ms,
            }) => assert!(*elapsed_ms >= 300, "round {round}: {elapsed_ms} ms"),
            other => panic!("round {round} ({kind}): {other:?}"),
        }
        // Generous: the point is that 60 s of sleep did not happen.
        assert!(took < Duration::from_secs(10), "round {round}: {took:?}");
    }
}

/// Run the `medic` binary; fail (and kill it) if it has not finished
/// within `limit`, a bound far above what a working command needs.
fn medic_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("medic {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_plugin_that_blocks_in_describe_cannot_hang_a_command() {
    let stall = component("fixture-stall-describe");
    let stall = stall.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = \"state\"\nplugin_dir = \"{}\"\n\n[plugins.fixture-stall-describe]\ncomponent = \"fixture-stall-describe.wasm\"\n[[plugins.fixture-stall-describe.triggers]]\nkind = \"manual\"\n",
            workspace().join("target/plugins").display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for args in [
        vec!["plugins", "inspect", stall],
        vec!["trigger", stall, "--state-dir", state],
        vec!["check", "--policy", policy.to_str().unwrap()],
    ] {
        let out = medic_within(&args, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(
            format!("{stdout}{stderr}").contains("did not return within 5 s"),
            "{args:?}: {stdout}{stderr}"
        );
    }
}

#[test]
fn describe_gets_the_memory_the_policy_gives() {
    let bytes = std::fs::read(component("fixture-noop")).unwrap();
    let small = runtime()
        .load_bytes_within(&bytes, "noop.wasm", 1 << 20)
        .unwrap_err();
    assert!(small.to_string().contains("memory cap"), "{small}");
    runtime()
        .load_bytes_within(&bytes, "noop.wasm", 8 << 20)
        .unwrap();
}

#[test]
fn everything_a_plugin_says_is_cleaned_and_cut() {
    let plugin = hostile();
    let dir = tempfile::tempdir().unwrap();
    // What is measured is what is kept of what the plugin says, not how
    // fast it says it: a loaded machine gets all the time it needs.
    let run = |kind: &str, settings: &[(&str, &str)]| {
        let mut run = attack(dir.path(), kind).limits(medic_sandbox::Limits {
            timeout: crate::support::PATIENCE,
            ..medic_sandbox::Limits::default()
        });
        for (key, value) in settings {
            run = run.setting(key, value);
        }
        run.on(&plugin)
    };
    let report = run("control-chars", &[]);
    let json = serde_json::to_string(&report).unwrap();
    let text = format!("{} {:?}", summary(&report), report.logs);
    for raw in ['\x1b', '\x07', '\r', '\x08', '\n'] {
        assert!(!summary(&report).contains(raw), "{raw:?} in {text}");
        assert!(!report.logs.iter().any(|l| l.message.contains(raw)));
    }
    assert!(summary(&report).contains("\\u{1b}[2J"), "{json}");

    let report = run("big-summary", &[("bytes", &(24 << 20).to_string())]);
    assert!(summary(&report).len() < 5 << 10);
    assert!(summary(&report).contains("[cut: "));

    let report = run("big-error", &[("bytes", &(32 << 20).to_string())]);
    match &report.result {
        RunResult::Failed(RunFailure::PluginError { message }) => {
            assert!(message.len() < 5 << 10 && message.contains("[cut: "))
        }
        other => panic!("{other:?}"),
    }

    let report = run(
        "log-flood",
        &[("count", "1000"), ("bytes", &(1 << 20).to_string())],
    );
    let logged: usize = report.logs.iter().map(|l| l.message.len()).sum();
    assert!(report.logs.len() <= 200 && logged <= 80 << 10, "{logged}");
    assert!(report.dropped_logs >= 900, "{}", report.dropped_logs);

    let path = format!("{}/", dir.path().display());
    let report = run(
        "stat-flood",
        &[
            ("count", "3000"),
            ("bytes", &(1 << 20).to_string()),
            ("path", &path),
        ],
    );
    assert!(report.outcome().is_some(), "{:?}", report.result);
    assert_eq!(report.calls.len() + report.dropped_calls, 3000);
    assert!(report.calls.len() <= 1000);
    let size = serde_json::to_vec(&report).unwrap().len();
    assert!(size < 4 << 20, "the record of the run is {size} bytes");
}

#[test]
fn the_state_quota_holds_against_a_flood() {
    let plugin = hostile();
    let dir = tempfile::tempdir().unwrap();
    let store = medic_agent::audit::Store::open(&dir.path().join("state")).unwrap();
    let state = medic_agent::audit::state::StateStore::new(store);
    for _ in 0..3 {
        let report = attack(dir.path(), "state-flood")
            .setting("count", "200")
            .setting("bytes", "60000")
            .with_state(state.clone())
            .on(&plugin);
        let text = summary(&report);
        assert!(text.contains("conflict"), "{text}");
        assert!(text.contains("quota"), "{text}");
    }
    let used = state.usage("fixture-hostile").unwrap();
    assert!(used <= Limits::default().state_quota_bytes, "{used}");
    assert!(used > Limits::default().state_quota_bytes / 2, "{used}");
}

#[test]
fn a_cache_others_can_write_is_refused_and_rejected_components_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A component that fails to load: nothing compiled is kept.
    let out = medic_within(
        &[
            "plugins",
            "inspect",
            component("fixture-future-contract").to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(!out.status.success());
    let kept: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
    // Others may write the folder: refused, nothing loaded from it.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = medic_within(
        &[
            "plugins",
            "inspect",
            component("fixture-noop").to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing the compile cache"), "{stderr}");
}

#[test]
fn plugins_blocked_in_host_calls_never_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[agent]
state_dir = "state"
plugin_dir = "{plugins}"
max_concurrent_runs = 3

[plugins.fixture-hostile]
component = "fixture-hostile.wasm"
grants = {{ fs-read = ["{share}"], fs-write = ["{share}"], services-control = ["medic-test-none"] }}
settings = {{ attack = "sleep", ms = 600000 }}
limits = {{ timeout = "5s" }}
concurrency = 8
[[plugins.fixture-hostile.triggers]]
kind = "manual"

[plugins.fixture-noop]
component = "fixture-noop.wasm"
grants = {{ fs-read = ["/tmp"] }}
[[plugins.fixture-noop.triggers]]
kind = "manual"
"#,
            plugins = workspace().join("target/plugins").display(),
            share = share.display()
        ),
    )
    .unwrap();
    let agent = crate::agent::Running::start(&policy);
    let state = dir.path().join("state");
    for round in 0..3 {
        for n in 0..6 {
            crate::agent::send_manual(&state, "fixture-hostile", &format!("{round}-{n}"));
        }
        crate::agent::send_manual(&state, "fixture-noop", &format!("meanwhile-{round}"));
        let noop = agent.wait_for_run("of the no-op", |r| {
            r.plugin == "fixture-noop"
                && r.detail["event"]["subject"] == format!("meanwhile-{round}")
        });
        assert_eq!(noop.status.as_str(), "healthy");
        if round == 0 {
            assert!(
                agent.runs().iter().all(|r| r.plugin != "fixture-hostile"),
                "the no-op waited for a blocked plugin"
            );
        }
        let status = medic_agent::dispatch::read_status(&agent.ctx.store).unwrap();
        let hostile = status
            .plugins
            .iter()
            .find(|p| p.name == "fixture-hostile")
            .unwrap();
        assert!(hostile.running <= 2, "{hostile:?}");
    }
    // The blocked runs end at their deadline, as timeouts.
    let ended = agent.wait_for_run("of a blocked plugin", |r| r.plugin == "fixture-hostile");
    assert!(
        ended.summary.contains("ended at its timeout of 5000 ms"),
        "{}",
        ended.summary
    );
    // The heartbeat: the snapshot keeps being rewritten while runs block.
    let first = medic_agent::dispatch::read_status(&agent.ctx.store)
        .unwrap()
        .updated_ms;
    let deadline = Instant::now() + crate::support::PATIENCE;
    while medic_agent::dispatch::read_status(&agent.ctx.store)
        .unwrap()
        .updated_ms
        == first
    {
        assert!(Instant::now() < deadline, "the status snapshot stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop();
}
