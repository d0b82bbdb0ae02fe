//! `cargo xtask demo`: the WSUS pack at work. Builds the plugins (signed
//! with the development key) and the agent, creates a lab, checks the
//! policy (which requires signatures) and shows a changed component
//! refused, starts the downstream's agent with `examples/wsus-pack.toml`
//! and the upstream's with `examples/wsus-upstream.toml`, injects every
//! fault in turn, waits for the agent to notice and repair it and for the
//! follow-up run that verifies the repair, runs the next sync, shows the
//! cases that are not faults left alone, and ends with a report and the
//! audit trail.

use crate::{cargo, plugins, run_command};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the plugin should do about a fault.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Notice it by itself and repair it.
    Repair,
    /// Notice it by itself and plan the repair, which waits for an
    /// operator's `medic approve`.
    Approve,
    /// Asked to check (as its schedule would), change nothing: the "fault"
    /// is a healthy state that looks like one.
    LeaveAlone,
    /// Notice it by itself and say what is broken and what to do, changing
    /// nothing (no plugin may mend it); the demo then mends it by hand as
    /// the report says (`medic lab mend`).
    Diagnose,
}

/// Each case, the plugin that should handle it, how, and the policy of the
/// agent it runs in.
const CASES: [(&str, &str, Expect, &str); 13] = [
    ("content-root-read", "content-acl", Expect::Repair, POLICY),
    ("content-users-read", "content-acl", Expect::Repair, POLICY),
    (
        "content-full-control",
        "content-acl",
        Expect::Repair,
        POLICY,
    ),
    ("bits-stopped", "bits-restart", Expect::Repair, POLICY),
    ("bits-idle", "bits-restart", Expect::LeaveAlone, POLICY),
    ("bits-disabled", "bits-restart", Expect::Repair, POLICY),
    (
        "upstream-lost-updates",
        "decline-orphans",
        Expect::Approve,
        POLICY,
    ),
    (
        "transient-outage",
        "decline-orphans",
        Expect::LeaveAlone,
        POLICY,
    ),
    (
        "language-shrink",
        "language-approvals",
        Expect::Repair,
        UPSTREAM_POLICY,
    ),
    ("http-range", "bits-foreground", Expect::Repair, POLICY),
    (
        "proxy-password-expired",
        "upstream-check",
        Expect::Diagnose,
        POLICY,
    ),
    (
        "upstream-name-typo",
        "upstream-check",
        Expect::Approve,
        POLICY,
    ),
    (
        "storage-mismatch",
        "storage-consistency",
        Expect::Approve,
        POLICY,
    ),
];

/// How long the agent gets to repair a fault.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(60);

const POLICY: &str = "examples/wsus-pack.toml";
/// The policy of the agent on the lab's upstream server.
const UPSTREAM_POLICY: &str = "examples/wsus-upstream.toml";
/// How long past its delay a follow-up run gets to verify a repair.
const VERIFY_GRACE: Duration = Duration::from_secs(60);
const LAB: &str = "target/demo/lab";

struct Row {
    fault: &'static str,
    plugin: &'static str,
    expect: Expect,
    detected_ms: Option<u64>,
    repaired_ms: Option<u64>,
    status: String,
    changed: String,
    /// The follow-up run's word on the repair; "-" when none was asked.
    verified: String,
    sync: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stops the agent however the demo ends.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn medic_output(medic: &Path, root: &Path, args: &[&str]) -> Result<(bool, String)> {
    let output = Command::new(medic)
        .args(args)
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run medic {}", args.join(" ")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

fn audit_runs(medic: &Path, root: &Path, policy: &str) -> Result<Vec<Value>> {
    let (ok, text) = medic_output(medic, root, &["audit", "--policy", policy, "--json"])?;
    if !ok {
        bail!("medic audit failed: {text}");
    }
    let records: Value = serde_json::from_str(&text).context("medic audit --json")?;
    Ok(records.as_array().cloned().unwrap_or_default())
}

/// Show the plan `plan` and apply it as an operator would, with `medic
/// approve`; returns the record of the run that applied it.
fn approve(medic: &Path, root: &Path, plugin: &str, plan: &Value) -> Result<Value> {
    let run = plan["run_id"].as_str().unwrap_or_default();
    println!(
        "    {plugin} planned (approve mode): {}",
        plan["summary"].as_str().unwrap_or("")
    );
    println!("    the operator approves: medic approve {run} --policy {POLICY}");
    let (ok, text) = medic_output(medic, root, &["approve", run, "--policy", POLICY])?;
    if !ok {
        bail!("medic approve {run} failed: {text}");
    }
    let marker = format!("[approved {run}]");
    audit_runs(medic, root, POLICY)?
        .into_iter()
        .find(|r| {
            r["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with(&marker))
        })
        .with_context(|| format!("no record of the run that applied {run}"))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

pub fn run(root: &Path) -> Result<()> {
    plugins::build_all(root)?;
    println!("xtask: building the agent");
    run_command(cargo(root).args(["build", "-p", "medic"]))?;
    let medic = root.join("target/debug/medic");
    let scratch = root.join("target/demo");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("cannot clear {}", scratch.display()))?;
    }

    println!("\n== 1. a lab: an upstream WSUS server and an autonomous downstream");
    let (ok, text) = medic_output(&medic, root, &["lab", "init", "--autonomous", LAB])?;
    print!("{}", indent(&text));
    if !ok {
        bail!("medic lab init failed");
    }

    println!("== 2. the policy: {POLICY}");
    let (ok, text) = medic_output(&medic, root, &["check", "--policy", POLICY])?;
    print!("{}", indent(&text));
    if !ok {
        bail!("the example policy does not check");
    }
    println!(
        "    signatures are required: each component is signed with the development key ({})",
        crate::sign::DEV_PUB
    );
    println!("    one byte changed after signing, and the component is refused:");
    let tampered_dir = scratch.join("tampered");
    std::fs::create_dir_all(&tampered_dir)?;
    let tampered = tampered_dir.join("content-acl.wasm");
    let mut bytes = std::fs::read(root.join("target/plugins/content-acl.wasm"))?;
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    std::fs::write(&tampered, bytes)?;
    std::fs::copy(
        root.join("target/plugins/content-acl.wasm.minisig"),
        tampered_dir.join("content-acl.wasm.minisig"),
    )?;
    let tampered_arg = tampered
        .strip_prefix(root)
        .unwrap_or(&tampered)
        .display()
        .to_string();
    let (ok, text) = medic_output(
        &medic,
        root,
        &[
            "plugins",
            "verify",
            "--policy",
            POLICY,
            "--plugin",
            "content-acl",
            &tampered_arg,
        ],
    )?;
    print!("{}", indent(&text));
    if ok {
        bail!("a changed component was not refused");
    }

    println!(
        "== 3. the agents start: the downstream's (its log: target/demo/agent.log) and the upstream's (target/demo/agent-upstream.log)"
    );
    let agent = start_agent(&medic, root, POLICY, &scratch.join("agent.log"))?;
    let upstream_agent = start_agent(
        &medic,
        root,
        UPSTREAM_POLICY,
        &scratch.join("agent-upstream.log"),
    )?;

    let mut rows = Vec::new();
    for (index, (fault, plugin, expect, policy)) in CASES.iter().enumerate() {
        rows.push(inject_and_watch(
            &medic, root, index, fault, plugin, *expect, policy,
        )?);
    }
    drop((agent, upstream_agent));

    println!("\n== report\n");
    println!(
        "    {:<22} {:<19} {:>9} {:>9}  {:<11} next sync",
        "fault", "plugin", "detected", "repaired", "outcome"
    );
    for row in &rows {
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        println!(
            "    {:<22} {:<19} {:>9} {:>9}  {:<11} {}",
            row.fault,
            row.plugin,
            ms(row.detected_ms),
            ms(row.repaired_ms),
            row.status,
            row.sync
        );
        println!("        changed: {}", row.changed);
        if row.verified != "-" {
            println!("        verified: {}", row.verified);
        }
    }
    println!(
        "\n    detected: fault injected -> the event that woke the plugin (for the two healthy cases, the\n    check the demo asked for); repaired: -> the run's record; verified: the follow-up run the\n    repair asked for, which judges it from the update states and the sync's record."
    );
    println!("\n== the audit trails");
    for policy in [POLICY, UPSTREAM_POLICY] {
        let (_, verify) = medic_output(&medic, root, &["audit", "--policy", policy, "--verify"])?;
        print!("{}", indent(&format!("{policy}: {verify}")));
    }
    println!(
        "    every run, with each host call:   target/debug/medic audit --policy {POLICY}\n    one plugin, as JSON:             target/debug/medic audit --policy {POLICY} --plugin bits-restart --json\n    the lab now:                     target/debug/medic lab status --lab {LAB}\n    the agent's log:                 target/demo/agent.log"
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| {
            let handled = match r.expect {
                Expect::Repair | Expect::Approve => {
                    r.status == "remediated"
                        && (r.verified == "-" || r.verified.starts_with("verified:"))
                }
                Expect::LeaveAlone => r.status == "healthy" && r.changed == "nothing",
                Expect::Diagnose => r.status == "failed" && r.changed == "nothing",
            };
            !handled || !r.sync.starts_with("sync succeeded") || r.sync.contains("FAILED")
        })
        .map(|r| r.fault)
        .collect();
    if !failed.is_empty() {
        bail!("not handled as expected: {}", failed.join(", "));
    }
    Ok(())
}

/// Start an agent with `policy`, logging to `log_path`, and wait until it
/// is ready.
fn start_agent(
    medic: &Path,
    root: &Path,
    policy: &str,
    log_path: &PathBuf,
) -> Result<AgentProcess> {
    let log = std::fs::File::create(log_path)?;
    let child = Command::new(medic)
        .args(["run", "--policy", policy, "--log", "info"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start the agent with {policy}"))?;
    let mut agent = AgentProcess(child);
    wait_ready(&mut agent, log_path)?;
    Ok(agent)
}

/// Wait for the follow-up run `record` asked for, if it asked for one: its
/// summary, or why none came.
fn wait_verified(
    medic: &Path,
    root: &Path,
    policy: &str,
    plugin: &str,
    record: &Value,
) -> Result<String> {
    let follow_up = &record["detail"]["result"]["completed"]["follow_up"];
    let Some(after) = follow_up["after_seconds"].as_u64() else {
        return Ok("-".into());
    };
    let seq = record["seq"].as_u64().unwrap_or(0);
    println!("    it asked to verify in {after} s: waiting for that run");
    let deadline = Instant::now() + Duration::from_secs(after) + VERIFY_GRACE;
    loop {
        let runs = audit_runs(medic, root, policy)?;
        // The last follow-up run: one may find the sync still running and
        // ask to come back.
        let verdict = runs.iter().find(|r| {
            r["seq"].as_u64().unwrap_or(0) > seq
                && r["plugin"] == plugin
                && r["detail"]["event"]["kind"] == "follow-up"
                && r["detail"]["result"]["completed"]["follow_up"].is_null()
        });
        if let Some(run) = verdict {
            let summary = run["summary"].as_str().unwrap_or("").to_string();
            println!("    the follow-up run: {summary}");
            return Ok(summary);
        }
        if Instant::now() > deadline {
            return Ok(format!(
                "no verdict within {} s",
                (Duration::from_secs(after) + VERIFY_GRACE).as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_ready(agent: &mut AgentProcess, log_path: &PathBuf) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if text.contains("agent ready") {
            println!("    agent ready");
            return Ok(());
        }
        if let Ok(Some(status)) = agent.0.try_wait() {
            bail!("the agent stopped ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("the agent did not become ready in 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inject_and_watch(
    medic: &Path,
    root: &Path,
    index: usize,
    fault: &'static str,
    plugin: &'static str,
    expect: Expect,
    policy: &str,
) -> Result<Row> {
    let seen = audit_runs(medic, root, policy)?
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let what = match expect {
        Expect::Repair | Expect::Approve | Expect::Diagnose => "fault",
        Expect::LeaveAlone => "not a fault",
    };
    println!("\n== {}. {what}: {fault}", index + 4);
    let injected = now_ms();
    let (_, text) = medic_output(medic, root, &["lab", "fault", "--lab", LAB, fault])?;
    print!("{}", indent(&text));
    // Nothing wakes the plugin for a healthy state: ask it now, as its
    // schedule would.
    let asked = format!("demo: check after {fault}");
    if expect == Expect::LeaveAlone {
        let args = ["send", plugin, "--policy", policy, "--subject", &asked];
        let (sent, text) = medic_output(medic, root, &args)?;
        if !sent {
            bail!("medic send {plugin} failed: {text}");
        }
        println!("    asked {plugin} to check, as its schedule would");
    }
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    let record = loop {
        let runs = audit_runs(medic, root, policy)?;
        let found = runs.into_iter().find(|r| {
            r["seq"].as_u64().unwrap_or(0) > seen
                && r["kind"] == "run"
                && r["plugin"] == plugin
                && match expect {
                    Expect::Repair | Expect::Approve | Expect::Diagnose => r["status"] != "healthy",
                    Expect::LeaveAlone => r["detail"]["event"]["subject"] == asked.as_str(),
                }
        });
        if let Some(record) = found {
            break Some(record);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(record) = record else {
        println!(
            "    !! {plugin} did not act within {} s",
            REPAIR_TIMEOUT.as_secs()
        );
        return Ok(Row {
            fault,
            plugin,
            expect,
            detected_ms: None,
            repaired_ms: None,
            status: "not seen".into(),
            changed: "-".into(),
            verified: "-".into(),
            sync: "-".into(),
        });
    };
    let record = match expect {
        Expect::Approve => approve(medic, root, plugin, &record)?,
        Expect::Repair | Expect::LeaveAlone | Expect::Diagnose => record,
    };
    let detail = &record["detail"];
    let event = &detail["event"];
    let lab_prefix = format!("{}/", root.join(LAB).display());
    let woke_by = format!(
        "{} {}",
        event["kind"].as_str().unwrap_or("?"),
        event["fields"]["event-id"]
            .as_str()
            .map(|id| format!("(event {id})"))
            .unwrap_or_else(|| event["source"].as_str().unwrap_or("").to_string())
    );
    let actions: Vec<String> = detail["result"]["completed"]["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    // Paths inside the lab, shown from the lab's folder.
                    let target = a["target"].as_str().unwrap_or("");
                    let target = target.strip_prefix(&lab_prefix).unwrap_or(target);
                    format!("{} {target}", a["verb"].as_str().unwrap_or(""))
                })
                .collect()
        })
        .unwrap_or_default();
    let status = record["status"].as_str().unwrap_or("?").to_string();
    println!(
        "    the agent noticed ({woke_by}) and ran {plugin}: {status}\n    {}",
        record["summary"].as_str().unwrap_or("")
    );
    let verified = wait_verified(medic, root, policy, plugin, &record)?;
    if expect == Expect::Diagnose {
        let (ok, text) = medic_output(medic, root, &["lab", "mend", "--lab", LAB, fault])?;
        if !ok {
            bail!("medic lab mend {fault} failed: {text}");
        }
        println!(
            "    the operator does what the report says:\n{}",
            indent(&indent(&text))
        );
    }
    // Let other runs (healthy re-checks, echoes) settle before the sync.
    std::thread::sleep(Duration::from_millis(500));
    let (_, sync) = medic_output(medic, root, &["lab", "sync", "--lab", LAB])?;
    let sync = sync.trim().to_string();
    println!("    next sync: {sync}");
    let changed = match actions.len() {
        0 => "nothing".to_string(),
        n if n > 3 => format!("{}, ... ({n} actions)", actions[..3].join(", ")),
        _ => actions.join(", "),
    };
    Ok(Row {
        fault,
        plugin,
        expect,
        detected_ms: event["time_ms"]
            .as_u64()
            .map(|t| t.saturating_sub(injected)),
        repaired_ms: record["time_ms"]
            .as_u64()
            .map(|t| t.saturating_sub(injected)),
        status,
        changed,
        verified,
        sync,
    })
}
