//! The verbs that read the agent's records: `medic audit` (list, filter
//! and verify the journal) and `medic status` (the running agent's
//! snapshot).

use super::{AuditArgs, StateArgs, state_dir};
use anyhow::{Context, Result};
use medic_agent::audit::Store;
use medic_agent::units::parse_duration;
use std::process::ExitCode;

pub(crate) fn audit(args: &AuditArgs) -> Result<ExitCode> {
    let store = Store::open(&state_dir(&args.state)?)?;
    let journal = medic_agent::audit::journal::Journal::new(store);
    if args.verify {
        return Ok(match journal.verify()? {
            Ok(count) => {
                println!("audit chain intact: {count} records");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("audit chain BROKEN: {e}");
                ExitCode::from(1)
            }
        });
    }
    let since_ms = match &args.since {
        Some(text) => {
            let age = parse_duration(text)
                .map_err(anyhow::Error::msg)
                .context("--since")?;
            Some(medic_sandbox::now_ms().saturating_sub(age.as_millis() as u64))
        }
        None => None,
    };
    let records = journal.list(&medic_agent::audit::journal::Filter {
        plugin: args.plugin.clone(),
        status: args.status,
        kind: args.kind,
        since_ms,
        until_ms: None,
        limit: args.limit,
    })?;
    if args.state.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        for r in &records {
            let actions = r.detail["result"]["completed"]["actions"]
                .as_array()
                .map_or(0, Vec::len);
            println!(
                "{:>5}  {}  {:<14} {:<18} {:<15} {:<28} {}{}",
                r.seq,
                r.time_ms,
                r.kind,
                r.plugin,
                r.status,
                r.run_id,
                r.summary,
                if actions > 0 {
                    format!(" ({actions} actions)")
                } else {
                    String::new()
                }
            );
        }
        if records.is_empty() {
            println!("no matching records");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(args: &StateArgs) -> Result<ExitCode> {
    let store = Store::open(&state_dir(args)?)?;
    let Some(status) = medic_agent::dispatch::read_status(&store) else {
        println!("no agent has run with this state directory");
        return Ok(ExitCode::from(1));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let age = medic_sandbox::now_ms().saturating_sub(status.updated_ms);
    println!(
        "agent pid {} — snapshot {:.1}s old, {} run(s) in flight",
        status.pid,
        age as f64 / 1000.0,
        status.running
    );
    // A serving dispatcher rewrites the snapshot every second.
    if age > 5_000 {
        println!(
            "  the snapshot is stale: the agent has stopped, or its dispatcher is not serving"
        );
    }
    for p in &status.plugins {
        println!(
            "  {:<20} {:<8} {}  {:<8} queued {:<4} running {:<2} coalesced {:<6} last {} {}{}",
            p.name,
            p.version,
            &p.hash[..12.min(p.hash.len())],
            p.mode,
            p.queued,
            p.running,
            p.coalesced,
            p.last_status.map_or("-", |s| s.as_str()),
            p.last_run.as_deref().unwrap_or(""),
            if p.flap_guard_tripped {
                "  FLAP GUARD TRIPPED"
            } else {
                ""
            }
        );
        if p.overdue > 0 {
            println!(
                "  {:<20} {} run(s) in flight well past their timeout: a host call is not returning",
                "", p.overdue
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
