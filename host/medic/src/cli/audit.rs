//! The verbs that read the agent's records: `medic audit` (list, filter,
//! verify and repair the journal) and `medic status` (the running agent's
//! snapshot). Reading never creates a store: a state directory no agent
//! has used is reported as such.

use super::{AuditArgs, StateArgs, state_dir};
use anyhow::{Context, Result};
use medic_agent::audit::journal::{Filter, Journal};
use medic_agent::audit::{Store, StoreError, agent_lock_held, repair};
use medic_agent::units::parse_duration;
use std::process::ExitCode;

/// `medic status`: the agent whose snapshot is shown is not running.
pub(crate) const EXIT_NOT_RUNNING: u8 = 3;

/// A snapshot older than this, from an agent that took no lock, is taken
/// as the last word of a stopped agent (a serving dispatcher rewrites it
/// every second).
const STALE_MS: u64 = 5_000;

/// A time (ms since the epoch) for a person, as `medic lab status` shows
/// times: `2026-11-26 08:59:37.594 UTC`.
fn when(ms: u64) -> String {
    format!("{} UTC", medic_lab::logs::log_time(ms))
}

/// Say a damaged store's error and exit 1; other errors go up.
fn damaged(error: StoreError) -> Result<ExitCode> {
    if error.is_corrupt() {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(1));
    }
    Err(error.into())
}

pub(crate) fn audit(args: &AuditArgs) -> Result<ExitCode> {
    let store = match Store::open_existing(&state_dir(&args.state)?) {
        Ok(store) => store,
        Err(e) => return damaged(e),
    };
    let journal = Journal::new(store);
    if args.verify {
        return Ok(match journal.verify() {
            Ok(Ok(count)) => {
                println!("audit chain intact: {count} records");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                eprintln!("audit chain BROKEN after record {}: {e}", e.intact_until());
                eprintln!(
                    "`medic audit --repair` keeps the damaged store aside and rebuilds it from records 1 to {}",
                    e.intact_until()
                );
                ExitCode::from(1)
            }
            Err(e) => return damaged(e),
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
    let records = match journal.list(&Filter {
        plugin: args.plugin.clone(),
        status: args.status,
        kind: args.kind,
        since_ms,
        until_ms: None,
        limit: args.limit,
    }) {
        Ok(records) => records,
        Err(e) => return damaged(e),
    };
    if args.state.json {
        // Each record's time also as RFC 3339, beside its milliseconds.
        let mut listed = Vec::with_capacity(records.len());
        for r in &records {
            let mut value = serde_json::to_value(r)?;
            if let serde_json::Value::Object(map) = &mut value {
                map.insert("time".into(), medic_lab::logs::iso_time(r.time_ms).into());
            }
            listed.push(value);
        }
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        for r in &records {
            let actions = r.detail["result"]["completed"]["actions"]
                .as_array()
                .map_or(0, Vec::len);
            println!(
                "{:>5}  {}  {:<14} {:<18} {:<15} {:<28} {}{}",
                r.seq,
                when(r.time_ms),
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

/// `medic audit --repair`: keep the damaged store aside and rebuild it
/// from what can still be read; refused while an agent runs there.
// Not reachable until `AuditArgs` has a `--repair` flag.
pub(crate) fn repair(args: &StateArgs) -> Result<ExitCode> {
    let dir = state_dir(args)?;
    let report = repair::repair(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store rebuilt: {}", report.store.display());
    if let Some(kept) = &report.kept_as {
        println!("  the damaged file is kept as {}", kept.display());
    }
    if let Some(why) = &report.unreadable {
        println!("  the damaged file could not be read: {why}");
    }
    println!(
        "  journal: {} record(s) kept{}",
        report.records_kept,
        report
            .chain_break
            .as_deref()
            .map_or(String::new(), |b| format!("; the chain broke: {b}"))
    );
    for table in &report.tables {
        println!(
            "  table {}: {} entr{} copied{}",
            table.name,
            table.entries,
            if table.entries == 1 { "y" } else { "ies" },
            table
                .incomplete
                .as_deref()
                .map_or(String::new(), |why| format!(", then: {why}"))
        );
    }
    println!(
        "  recorded as record {}: {}",
        report.record.seq, report.record.summary
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(args: &StateArgs) -> Result<ExitCode> {
    let dir = state_dir(args)?;
    let store = match Store::open_existing(&dir) {
        Ok(store) => store,
        Err(e) => return damaged(e),
    };
    let Some(status) = medic_agent::dispatch::read_status(&store) else {
        println!("no agent has run with this state directory");
        return Ok(ExitCode::from(1));
    };
    let age = medic_sandbox::now_ms().saturating_sub(status.updated_ms);
    // The agent lock says whether an agent runs; an agent that took none
    // is judged by the age of its snapshot.
    let running = agent_lock_held(&dir).unwrap_or(age <= STALE_MS);
    let code = if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    };
    if args.json {
        let mut value = serde_json::to_value(&status)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("agent_running".into(), running.into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(code);
    }
    if running {
        println!(
            "agent pid {} running since {} — snapshot {:.1}s old, {} run(s) in flight",
            status.pid,
            when(status.started_ms),
            age as f64 / 1000.0,
            status.running
        );
        if age > STALE_MS {
            println!("  the snapshot is stale: the agent runs, but its dispatcher is not serving");
        }
    } else {
        println!(
            "agent pid {} NOT RUNNING (last seen {}, {:.1}s ago); what it last said:",
            status.pid,
            when(status.updated_ms),
            age as f64 / 1000.0
        );
    }
    if let Some(failing) = &status.store_failing {
        println!(
            "  the store cannot be written ({failing}); {} write(s) wait in memory",
            status.writes_waiting
        );
    }
    if status.store.records_waiting > 0 || status.store.records_lost > 0 {
        println!(
            "  journal records waiting for the store: {}, lost: {}",
            status.store.records_waiting, status.store.records_lost
        );
    }
    for disabled in &status.disabled {
        println!("  {:<20} DISABLED: {}", disabled.name, disabled.reason);
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
        if p.dropped > 0 {
            println!(
                "  {:<20} {} event(s) dropped: its queue was full",
                "", p.dropped
            );
        }
        if p.overdue > 0 {
            println!(
                "  {:<20} {} run(s) in flight well past their timeout: a host call is not returning",
                "", p.overdue
            );
        }
        if p.follow_ups > 0 {
            println!(
                "  {:<20} {} follow-up run(s) it asked for, not due yet",
                "", p.follow_ups
            );
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(when(1_795_559_943_123), "2026-11-24 22:39:03.123 UTC");
    }
}
