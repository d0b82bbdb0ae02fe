//! `medic.exe` run under Debian's Wine: what Wine can show of the Windows
//! build. It starts, reads its command line, compiles and runs plugins in
//! wasmtime (code generation and trap handling), enforces a run's timeout,
//! and its Windows unit tests pass as Windows binaries. Wine's Service
//! Control Manager is real enough to run medic as a service: it is
//! installed, started, handed an event, stopped by the stop control and
//! removed, through medic's own service code.
//!
//! What Wine cannot show, and is left to a Windows runner
//! (`.github/workflows/windows.yml`): its event log API is a stub, its file
//! security is not NTFS, and it has no WSUS and no PowerShell 5.1.
//!
//! Rust's standard library takes its randomness from `ProcessPrng` in
//! `bcryptprimitives.dll`, which Debian's Wine 8.0 lacks; a stand-in built
//! here from `xtask/wine/` is put beside each executable. It is never
//! shipped: Windows has the real one.

use crate::run_command;
use crate::toolchain::{self, WINDOWS_TARGET};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's Wine loader and server.
const WINE: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver64";

/// The Wine server of the prefix, started persistent so that the
/// prefix's programs live across the check, and stopped, with every
/// program of the prefix, when dropped.
struct Server {
    prefix: PathBuf,
}

impl Server {
    fn start(root: &Path) -> Result<Self> {
        let prefix = root.join("target/windows/wine/prefix");
        std::fs::create_dir_all(&prefix)?;
        // `-p`: persistent until `-k`; it puts itself in the background.
        let status = Command::new(WINESERVER)
            .arg("-p")
            .env("WINEPREFIX", &prefix)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("cannot run {WINESERVER}"))?;
        if !status.success() {
            bail!("{WINESERVER} -p failed with {status}");
        }
        Ok(Self { prefix })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(WINESERVER)
            .arg("-k")
            .env("WINEPREFIX", &self.prefix)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Make sure Wine is here, installing it when running as root.
fn ensure_wine() -> Result<()> {
    if !Path::new(WINE).exists() {
        toolchain::ensure_packages(&["wine64"], "running medic.exe under Wine")?;
    }
    Ok(())
}

/// The stand-in `bcryptprimitives.dll`, built once.
fn stand_in(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/windows/wine/bcryptprimitives.dll");
    let source = root.join("xtask/wine/bcryptprimitives.c");
    let fresh = std::fs::metadata(&out)
        .and_then(|o| Ok(o.modified()? >= std::fs::metadata(&source)?.modified()?))
        .unwrap_or(false);
    if !fresh {
        std::fs::create_dir_all(out.parent().expect("a parent"))?;
        run_command(
            Command::new("x86_64-w64-mingw32-gcc")
                .args(["-shared", "-O2", "-o"])
                .arg(&out)
                .arg(&source)
                .arg(root.join("xtask/wine/bcryptprimitives.def"))
                .arg("-ladvapi32"),
        )?;
    }
    Ok(out)
}

/// Put the stand-in beside `exe`.
fn beside(dll: &Path, exe: &Path) -> Result<()> {
    let target = exe.with_file_name("bcryptprimitives.dll");
    std::fs::copy(dll, &target).with_context(|| format!("cannot copy to {}", target.display()))?;
    Ok(())
}

/// Run `exe` under Wine and collect what it printed. Its output goes to
/// files, not pipes: the programs Wine starts for the prefix (services,
/// the desktop) inherit a program's handles and outlive it, and would keep
/// a pipe open for ever.
fn wine(root: &Path, exe: &Path, args: &[&str]) -> Result<Output> {
    let folder = root.join("target/windows/wine");
    let (out_path, err_path) = (folder.join("stdout.txt"), folder.join("stderr.txt"));
    let status = Command::new(WINE)
        .arg(exe)
        .args(args)
        .env("WINEPREFIX", folder.join("prefix"))
        .env("WINEDEBUG", "-all")
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .status()
        .with_context(|| format!("cannot run {WINE}"))?;
    Ok(Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    })
}

/// Check one run: its exit code and what its output says.
fn expect(what: &str, out: &Output, code: i32, says: &str) -> Result<()> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(code) || !(stdout.contains(says) || stderr.contains(says)) {
        bail!(
            "under Wine, {what}: expected exit {code} saying {says:?}, got {:?}\n{stdout}\n{stderr}",
            out.status.code()
        );
    }
    println!("xtask: under Wine, {what}: ok");
    Ok(())
}

/// `path` as Wine's programs see it: the Unix root is drive Z:.
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// A Wine program kept running: Wine ends its services once no other
/// program of the prefix runs.
struct KeepAlive(std::process::Child);

impl KeepAlive {
    fn start(root: &Path) -> Result<Self> {
        let child = Command::new(WINE)
            .arg("cmd.exe")
            .env("WINEPREFIX", root.join("target/windows/wine/prefix"))
            .env("WINEDEBUG", "-all")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot keep a Wine program running")?;
        Ok(Self(child))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// medic as a service of Wine's Service Control Manager: installed,
/// started, handed an event it runs a plugin for, stopped by the stop
/// control, removed.
fn service(root: &Path, exe: &Path) -> Result<()> {
    const NAME: &str = "medic-wine-check";
    let folder = root.join("target/windows/wine/service");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)?;
    let policy = folder.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = 'state'\nplugin_dir = '{}'\ntrusted_keys = ['{}']\nrequire_signatures = true\n\n[backend]\nkind = \"windows\"\nwsus = false\n\n[plugins.fixture-noop]\ncomponent = \"fixture-noop.wasm\"\ngrants = {{ fs-read = ['C:\\windows'] }}\n\n[[plugins.fixture-noop.triggers]]\nkind = \"manual\"\n",
            windows_path(&root.join("target/plugins")),
            windows_path(&root.join("target/signing/dev.pub")),
        ),
    )?;
    let policy_arg = windows_path(&policy);
    // One left by an interrupted check goes first.
    let _ = wine(root, exe, &["service", "uninstall", "--name", NAME])?;
    let installed = wine(
        root,
        exe,
        &[
            "service",
            "install",
            "--name",
            NAME,
            "--policy",
            &policy_arg,
            "--manual",
        ],
    )?;
    expect(
        "medic service install",
        &installed,
        0,
        "installed the service",
    )?;
    let started = wine(root, exe, &["service", "start", "--name", NAME])?;
    expect("medic service start", &started, 0, "-> running")?;
    let sent = wine(
        root,
        exe,
        &[
            "send",
            "fixture-noop",
            "--policy",
            &policy_arg,
            "--subject",
            "wine",
        ],
    )?;
    expect("medic send to the service", &sent, 0, "queued")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let audit = wine(
            root,
            exe,
            &["audit", "--policy", &policy_arg, "--kind", "run"],
        )?;
        if String::from_utf8_lossy(&audit.stdout).contains("healthy") {
            println!("xtask: under Wine, the service ran the plugin for the event: ok");
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("under Wine, the service never ran the plugin for the event it was sent");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let stopped = wine(root, exe, &["service", "stop", "--name", NAME])?;
    expect("medic service stop", &stopped, 0, "running -> stopped")?;
    let log = std::fs::read_dir(folder.join("state/logs"))?
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect::<String>();
    if !log.contains("stop requested by the Service Control Manager") {
        bail!("under Wine, the service's log does not show the stop control:\n{log}");
    }
    println!("xtask: under Wine, the service's log shows the stop control: ok");
    let removed = wine(root, exe, &["service", "uninstall", "--name", NAME])?;
    expect(
        "medic service uninstall",
        &removed,
        0,
        "removed the service",
    )
}

/// Run `medic.exe` and the Windows unit tests of the backends under Wine.
pub fn check(root: &Path, exe: &Path) -> Result<()> {
    ensure_wine()?;
    let _server = Server::start(root)?;
    let _alive = KeepAlive::start(root)?;
    let dll = stand_in(root)?;
    beside(&dll, exe)?;

    let version = wine(root, exe, &["--version"])?;
    expect("medic.exe --version", &version, 0, "medic ")?;
    let plugins = root.join("target/plugins");
    let noop = plugins.join("fixture-noop.wasm");
    if !noop.exists() {
        bail!(
            "{} is missing: build the plugins first (`cargo xtask plugins`)",
            noop.display()
        );
    }
    let state = root.join("target/windows/wine/state");
    let state_arg = state.to_str().context("a UTF-8 path")?;
    let noop_arg = noop.to_str().context("a UTF-8 path")?;
    // The fixture asks for a readable root: the prefix's Windows folder.
    let grant = "fs-read=C:\\windows";
    let run = wine(
        root,
        exe,
        &[
            "trigger",
            noop_arg,
            "--state-dir",
            state_arg,
            "--grant",
            grant,
        ],
    )?;
    expect("a plugin run", &run, 0, "healthy")?;
    let spin = plugins.join("fixture-spin.wasm");
    let spin_arg = spin.to_str().context("a UTF-8 path")?;
    let spun = wine(
        root,
        exe,
        &[
            "trigger",
            spin_arg,
            "--state-dir",
            state_arg,
            "--timeout",
            "1s",
        ],
    )?;
    expect(
        "a plugin that never ends, stopped at its timeout",
        &spun,
        2,
        "ended at its timeout",
    )?;

    service(root, exe)?;

    for test in toolchain::build_windows_tests(root, &["medic-backends"])? {
        beside(&dll, &test)?;
        let out = wine(root, &test, &["--test-threads=1"])?;
        let name = test.file_name().map(|n| n.to_string_lossy().into_owned());
        expect(
            &format!("the unit tests in {}", name.unwrap_or_default()),
            &out,
            0,
            "test result: ok",
        )?;
    }
    println!("xtask: medic.exe ran under Wine ({WINDOWS_TARGET})");
    Ok(())
}
