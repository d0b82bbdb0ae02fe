//! The agent, end to end: event -> remediation applied, for a file trigger
//! and a log trigger (p50 and p99 over 1 000 events each), beside the shell
//! loop an admin would write instead (`inotifywait -m | while read; do
//! getfacl | grep || setfacl; done`, and `tail -F | grep` for the log),
//! and monit at its shortest cycle (20 faults), run on the same fault in
//! the same run; and a burst of 100 000 file
//! events drained with coalescing (time, runs, events dropped, peak
//! memory), once with the default per-path subject and once with
//! `subject = "root"`.
//!
//! The fault: the file loses its POSIX ACL, and with it the entry that
//! gives a local user (`nobody`) read access; its mode gives others
//! nothing. The remediation is the example plugin `share-guard` putting
//! that access back; "applied" is when the access can be read back from
//! the file system. The measuring thread polls for it, yielding its core
//! between reads: on two cores a spinning reader starved the agent (and
//! the shell loop) and made their p99 five to ten times their p50. Needs
//! `cargo xtask plugins` first, `inotifywait` and `setfacl` for the shell
//! loop and `monit` for monit (each skipped, and said, without them). Run with
//! `cargo bench -p medic --bench agent_latency`.
//!
//! Where the time went (`perf record` of this benchmark, 2-core VM).
//! Before (p50 1.97 ms, log 2.76 ms): a change waited for the file
//! trigger's trailing debounce timer (tokio's timers tick in
//! milliseconds, so even a 0 ms debounce cost up to one), then for the
//! store commit of its event and its run's start (redb's pages, the
//! journal anchor, the fsync) before the run was spawned; and the
//! dispatcher ran its commits on its own loop, so an event arriving
//! during one waited for it. After: the first change to a path is sent at
//! once; a run starts as soon as its event is in the start log (one
//! `write`); commits run on a blocking thread, one at a time, grouping
//! what came meanwhile. On-CPU, the agent's threads now spend their time
//! mostly in those commits (fsync about 9%, redb, the journal anchor,
//! malloc), off the path of the repair; the run itself (instantiation,
//! the ACL calls) is a few percent.

#[path = "support/agent.rs"]
mod agent;

use medic_agent::Agent;
use medic_backends::fs::AccessRight;
use medic_backends::{FileSystem, PrincipalMap};
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: usize = 1_000;
/// How long an event may take to be repaired before it is sent again.
const LIMIT: Duration = Duration::from_secs(2);
/// Faults monit repairs: each takes one to two of its cycles.
const MONIT_EVENTS: usize = 20;
const BURST_FILES: usize = 1_000;
const BURST_ROUNDS: usize = 100;

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins")
}

/// Serve `policy` on a background thread until `stop` is dropped.
fn serve(
    policy: &Path,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
    std::sync::Arc<medic_agent::AgentContext>,
) {
    let agent = Agent::load(policy, std::sync::Arc::new(medic::catalog::Catalog))
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = agent.context().clone();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(agent.serve(async move {
            let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
        }))
        .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    (stop, thread, ctx)
}

/// The shared file whose access is guarded: others have no access, so
/// only the ACL entry gives `nobody` read access.
fn make_share(dir: &Path) -> PathBuf {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let readme = share.join("readme.txt");
    std::fs::write(&readme, "hello").unwrap();
    std::fs::set_permissions(&readme, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("access.log"), "").unwrap();
    share
}

/// The fault: `file` loses its ACL (a change the kernel reports as an
/// attribute change).
fn strip_acl(file: &Path) {
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let done = unsafe { libc::removexattr(path.as_ptr(), c"system.posix_acl_access".as_ptr()) };
    if done != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::ENODATA), "{e}");
    }
}

fn share_policy(dir: &Path, trigger: &str) -> PathBuf {
    let share = make_share(dir);
    let text = format!(
        r#"
[agent]
state_dir = "state"
plugin_dir = "{plugins}"

[backend]
principals = {{ Users = "user:nobody" }}

[plugins.share-guard]
component = "share-guard.wasm"
grants = {{ fs-write = ["{share}"] }}
settings = {{ path = "{share}/readme.txt", principals = ["Users"], recursive = false }}

[[plugins.share-guard.triggers]]
{trigger}
"#,
        plugins = plugins_dir().display(),
        share = share.display(),
    );
    let file = dir.join("policy.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// Cause the event `events` times, and time until the repair is readable
/// each time; an event not repaired within `limit` is sent again.
fn measure(
    share: &Path,
    events: usize,
    limit: Duration,
    cause: impl Fn(usize),
) -> (Vec<Duration>, usize) {
    let mut names = PrincipalMap::default();
    names.insert_spec("Users=user:nobody").unwrap();
    let fs = medic_backends::local_fs::LocalFileSystem::new(names);
    let readme = medic_backends::fs::Beneath::new(share, "readme.txt").unwrap();
    let readable = || {
        fs.ensure_access(&readme, "Users", AccessRight::Read, false, false, None)
            .unwrap()
            .changed
            .is_empty()
    };
    let mut samples = Vec::with_capacity(events);
    let mut retries = 0;
    for n in 0..events {
        loop {
            let started = Instant::now();
            cause(n);
            let deadline = started + limit;
            while !readable() && Instant::now() < deadline {
                // Give the core to the agent's threads when they can run.
                std::thread::yield_now();
            }
            if readable() {
                samples.push(started.elapsed());
                break;
            }
            retries += 1; // an event merged with the echo of the last repair
            eprintln!("event {n}: not repaired within {limit:?}, sending again");
        }
        // Let the echo of this repair (the kernel's report of the repair
        // itself) be dealt with before the next change.
        std::thread::sleep(Duration::from_millis(10));
    }
    (samples, retries)
}

/// Where the samples go, for the plots `cargo xtask bench` draws.
fn samples_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Say the p50 and p99 of `samples`, and keep them (in ms, one per line)
/// as `agent_latency-KEY.samples`.
fn report(key: &str, name: &str, mut samples: Vec<Duration>, retries: usize) -> (f64, f64) {
    let text: String = samples
        .iter()
        .map(|d| format!("{:.4}\n", d.as_secs_f64() * 1e3))
        .collect();
    std::fs::write(
        samples_dir().join(format!("agent_latency-{key}.samples")),
        text,
    )
    .unwrap();
    let p50 = percentile(&mut samples, 0.5).as_secs_f64() * 1e3;
    let p99 = percentile(&mut samples, 0.99).as_secs_f64() * 1e3;
    println!(
        "  {name}: p50 {p50:.2} ms, p99 {p99:.2} ms over {} events ({retries} re-sent)",
        samples.len()
    );
    (p50, p99)
}

/// Reset this process's peak RSS, so the next reading is the peak since.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    agent::memory_kib("self", "VmHWM")
}

/// A shell pipeline, in a process group of its own (killed whole on drop).
struct ShellLoop(Child);

impl ShellLoop {
    /// Start `script`; it is ready once its stderr says `ready` (when
    /// given).
    fn start(script: &str, ready: Option<&str>) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        if let Some(ready) = ready {
            loop {
                match lines.next() {
                    Some(Ok(line)) if line.contains(ready) => break,
                    Some(Ok(_)) => {}
                    _ => panic!("the shell loop ended before it was ready"),
                }
            }
        }
        // Keep draining its stderr so it never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Self(child)
    }
}

impl Drop for ShellLoop {
    fn drop(&mut self) {
        // SAFETY: signals the process group this loop leads.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The repair in the shell: put the entry back when `getfacl` lacks it.
const SHELL_REPAIR: &str =
    r#"getfacl -cp "$f" 2>/dev/null | grep -q '^user:nobody:r' || setfacl -m u:nobody:r "$f""#;

/// The time to repair, for a shell loop started by `script` on a fresh
/// share: `None` (said) without `inotifywait`, `setfacl` or `tail`.
fn shell_peer(
    key: &str,
    name: &str,
    script: impl Fn(&Path, &Path) -> String,
    ready: Option<&str>,
    cause: impl Fn(&Path, &Path, usize),
) -> Option<(f64, f64)> {
    if !(have("inotifywait") && have("setfacl")) {
        println!("SKIP {name}: needs inotifywait (inotify-tools) and setfacl (acl)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = make_share(dir.path());
    let log = dir.path().join("access.log");
    let readme = share.join("readme.txt");
    let status = Command::new("setfacl")
        .args(["-m", "u:nobody:r"])
        .arg(&readme)
        .status()
        .unwrap();
    assert!(status.success());
    let _shell = ShellLoop::start(&script(&share, &log), ready);
    let (samples, retries) = measure(&share, EVENTS, LIMIT, |n| cause(&readme, &log, n));
    Some(report(key, name, samples, retries))
}

/// The time monit takes to repair the same fault, polling at its shortest
/// cycle (`set daemon 1`): a `check program` runs a `getfacl | grep`
/// script each cycle and, when it fails, `exec`s the `setfacl` one (monit
/// collects a program's status on the cycle after it starts it). `None`
/// (said) without monit or setfacl.
fn monit_peer() -> Option<(f64, f64)> {
    let name = "monit, 1 s cycle (check program getfacl | grep; exec setfacl)";
    if !(have("monit") && have("setfacl")) {
        println!("SKIP {name}: needs monit and setfacl (acl)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = make_share(dir.path());
    let readme = share.join("readme.txt");
    let script = |file: &str, body: String| {
        let path = dir.path().join(file);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let check = script(
        "check.sh",
        format!(
            "getfacl -cp '{}' 2>/dev/null | grep -q '^user:nobody:r'",
            readme.display()
        ),
    );
    let repair = script(
        "repair.sh",
        format!("setfacl -m u:nobody:r '{}'", readme.display()),
    );
    let state = |file: &str| dir.path().join(file).display().to_string();
    let control = dir.path().join("monitrc");
    std::fs::write(
        &control,
        format!(
            "set daemon 1\nset logfile {}\nset pidfile {}\nset idfile {}\nset statefile {}\n\
             check program share_acl with path \"{}\"\n    if status != 0 then exec \"{}\"\n",
            state("monit.log"),
            state("monit.pid"),
            state("monit.id"),
            state("monit.state"),
            check.display(),
            repair.display()
        ),
    )
    .unwrap();
    // Monit refuses a control file others can read.
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _monit = ShellLoop::start(
        &format!("exec monit -I -c '{}' 1>&2", control.display()),
        Some("started"),
    );
    let (samples, retries) = measure(&share, MONIT_EVENTS, Duration::from_secs(10), |_| {
        strip_acl(&readme)
    });
    Some(report("monit_file", name, samples, retries))
}

/// What a burst left: time from the first change to the last run, runs,
/// events coalesced and dropped, peak RSS and its growth.
struct Burst {
    drain_ms: f64,
    runs: usize,
    coalesced: u64,
    dropped: u64,
    peak_mib: u64,
    growth_mib: u64,
}

/// 100 000 attribute changes on 1 000 files, served by the no-op plugin
/// with `subject` (the default per-path one when `None`).
fn burst(subject: Option<&str>) -> Burst {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("burst");
    std::fs::create_dir_all(&files).unwrap();
    for n in 0..BURST_FILES {
        std::fs::write(files.join(format!("f{n}")), "x").unwrap();
    }
    let subject_line = subject.map_or(String::new(), |s| format!("subject = \"{s}\"\n"));
    let text = format!(
        "[agent]\nstate_dir = \"state\"\nplugin_dir = \"{}\"\nmax_concurrent_runs = 2\n\n[plugins.fixture-noop]\ncomponent = \"fixture-noop.wasm\"\ngrants = {{ fs-read = [\"/tmp\"] }}\nconcurrency = 2\n\n[[plugins.fixture-noop.triggers]]\nkind = \"file\"\npath = \"{}\"\ndebounce = \"20ms\"\n{subject_line}",
        plugins_dir().display(),
        files.display()
    );
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, text).unwrap();
    let (stop, thread, ctx) = serve(&policy);
    let runs_now = || {
        ctx.journal
            .list(&medic_agent::audit::journal::Filter {
                kind: Some(medic_agent::audit::journal::RecordKind::Run),
                ..Default::default()
            })
            .map_or(0, |r| r.len())
    };
    // The run of the trigger's start-up rescan is not the burst's.
    let before = loop {
        let runs = runs_now();
        if runs > 0 {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    reset_peak_rss();
    let rss_before = agent::memory_kib("self", "VmRSS");
    let started = Instant::now();
    // Memory over the storm, every 10 ms until drained.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut points = String::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let rss = agent::memory_kib("self", "VmRSS") as f64 / 1024.0;
                points.push_str(&format!("{} {rss:.1}\n", started.elapsed().as_millis()));
                std::thread::sleep(Duration::from_millis(10));
            }
            points
        })
    };
    for round in 0..BURST_ROUNDS {
        let mode = if round % 2 == 0 { 0o640 } else { 0o644 };
        for n in 0..BURST_FILES {
            std::fs::set_permissions(
                files.join(format!("f{n}")),
                std::fs::Permissions::from_mode(mode),
            )
            .unwrap();
        }
    }
    // Drained: the last changes have run (per path, at least one run per
    // file; for the root, the event after the last change), nothing is
    // queued or running, and nothing new for 200 ms. Events still in the
    // trigger's debounce are not in the status: a quiet queue alone is not
    // the end.
    let at_least = if subject.is_none() { BURST_FILES } else { 2 };
    let mut quiet_since = Instant::now();
    let mut last_runs = 0;
    let (drained, runs, plugin) = loop {
        std::thread::sleep(Duration::from_millis(5));
        let status = medic_agent::dispatch::read_status(&ctx.store).unwrap_or_default();
        let plugin = status.plugins.first().cloned().unwrap_or_default();
        let runs = runs_now() - before;
        if runs != last_runs || plugin.queued > 0 || status.running > 0 {
            last_runs = runs;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(200)
            && (runs >= at_least || started.elapsed() > Duration::from_secs(120))
        {
            break (quiet_since - started, runs, plugin);
        }
    };
    let peak = peak_rss_kib();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let points = sampler.join().unwrap();
    std::fs::write(
        samples_dir().join(format!(
            "agent_latency-burst_{}.rss",
            subject.unwrap_or("path")
        )),
        points,
    )
    .unwrap();
    drop(stop);
    thread.join().unwrap();
    Burst {
        drain_ms: drained.as_secs_f64() * 1e3,
        runs,
        coalesced: plugin.coalesced,
        dropped: plugin.dropped,
        peak_mib: peak / 1024,
        growth_mib: peak.saturating_sub(rss_before) / 1024,
    }
}

/// The median time of one store commit on this disk (a small write and
/// its fsync): what a run would wait for if it started only once its
/// event was committed.
fn commit_ms() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = medic_agent::audit::Store::open(&dir.path().join("state")).unwrap();
    let mut samples: Vec<Duration> = (0..200)
        .map(|n| {
            let started = Instant::now();
            store.put_json("bench", "key", &n).unwrap();
            started.elapsed()
        })
        .collect();
    percentile(&mut samples, 0.5).as_secs_f64() * 1e3
}

fn main() {
    println!("agent latency: event -> remediation applied (share-guard, local backend)");
    let commit = commit_ms();
    println!("  one store commit (write and fsync) on this disk: p50 {commit:.2} ms");
    let dir = tempfile::tempdir().unwrap();
    let policy = share_policy(
        dir.path(),
        "kind = \"file\"\npath = \"SHARE\"\nchanges = [\"attribute\"]\ndebounce = \"1ms\""
            .replace("SHARE", &dir.path().join("share").display().to_string())
            .as_str(),
    );
    let (stop, thread, _) = serve(&policy);
    let share = dir.path().join("share");
    let (samples, retries) = measure(&share, EVENTS, LIMIT, |_| {
        strip_acl(&share.join("readme.txt"))
    });
    let (file_p50, file_p99) = report(
        "medic_file",
        "medic, file trigger (ACL lost -> put back)",
        samples,
        retries,
    );
    drop(stop);
    thread.join().unwrap();

    let shell_file = shell_peer(
        "shell_file",
        "shell loop, inotifywait -m | while read; do getfacl | grep || setfacl; done",
        |share, _| {
            format!(
                "inotifywait -m -e attrib --format '%w%f' '{}' | while read -r f; do {SHELL_REPAIR}; done",
                share.display()
            )
        },
        Some("Watches established"),
        |readme, _, _| strip_acl(readme),
    );

    let monit_file = monit_peer();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let policy = share_policy(
        dir.path(),
        &format!(
            "kind = \"log\"\npath = \"{}\"\npattern = \"access denied\"",
            log.display()
        ),
    );
    let (stop, thread, _) = serve(&policy);
    let share = dir.path().join("share");
    let writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let (samples, retries) = measure(&share, EVENTS, LIMIT, |n| {
        strip_acl(&share.join("readme.txt"));
        writeln!(&writer, "2026-11-24 access denied on readme.txt ({n})").unwrap();
    });
    let (log_p50, log_p99) = report(
        "medic_log",
        "medic, log trigger (line appended -> ACL put back)",
        samples,
        retries,
    );
    drop(stop);
    thread.join().unwrap();

    let shell_log = shell_peer(
        "shell_log",
        "shell loop, tail -F | grep --line-buffered | while read; do getfacl | grep || setfacl; done",
        |share, log| {
            format!(
                "tail -n0 -F '{}' | grep --line-buffered 'access denied' | while read -r l; do f='{}/readme.txt'; {SHELL_REPAIR}; done",
                log.display(),
                share.display()
            )
        },
        None,
        |readme, log, n| {
            strip_acl(readme);
            let writer = std::fs::OpenOptions::new().append(true).open(log).unwrap();
            writeln!(&writer, "2026-11-24 access denied on readme.txt ({n})").unwrap();
        },
    );

    let mut line = format!(
        "BENCH agent_latency commit_ms={commit:.3} file_p50_ms={file_p50:.3} file_p99_ms={file_p99:.3} log_p50_ms={log_p50:.3} log_p99_ms={log_p99:.3}"
    );
    for (key, peer) in [
        ("shell_file", shell_file),
        ("monit_file", monit_file),
        ("shell_log", shell_log),
    ] {
        if let Some((p50, p99)) = peer {
            line.push_str(&format!(" {key}_p50_ms={p50:.3} {key}_p99_ms={p99:.3}"));
        }
    }
    for (key, subject) in [("burst", None), ("burst_root", Some("root"))] {
        let b = burst(subject);
        println!(
            "  burst of {} file events ({} files x {} changes), subject {}: drained {:.0} ms after the first, {} runs, {} coalesced in the queue, {} dropped, peak RSS {} MiB (+{} MiB)",
            BURST_FILES * BURST_ROUNDS,
            BURST_FILES,
            BURST_ROUNDS,
            subject.unwrap_or("path"),
            b.drain_ms,
            b.runs,
            b.coalesced,
            b.dropped,
            b.peak_mib,
            b.growth_mib
        );
        line.push_str(&format!(
            " {key}_drain_ms={:.0} {key}_runs={} {key}_coalesced={} {key}_dropped={} {key}_peak_rss_mib={} {key}_rss_growth_mib={}",
            b.drain_ms, b.runs, b.coalesced, b.dropped, b.peak_mib, b.growth_mib
        ));
    }
    println!("{line}");
}
