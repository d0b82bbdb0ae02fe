//! Verifying a WSUS repair the way a real server allows: a repair that
//! unblocks downloads resumes the Failed ones (nothing else retries them)
//! and may start a synchronization, which runs on after it is started;
//! the plugin asks to come back, and its follow-up run judges from the
//! update states and the sync's record, coming back again while the sync
//! still runs.

use crate::wsus::{self, SyncCheck};
use crate::{Error, ErrorKind, Outcome, Report, state};

/// The plugin state key holding the start time of the sync to verify.
const SYNC_KEY: &str = "verify.sync-started-ms";
/// The plugin state key counting follow-up runs that found the sync running.
const WAITS_KEY: &str = "verify.waits";
/// Follow-up runs that may find the sync still running before the plugin
/// stops waiting and says so.
pub const MAX_WAITS: u32 = 10;

/// After an applied repair: resume every Failed download, start a sync
/// (resumed downloads wait for the next one; with `sync` false, only when
/// something was resumed), and ask to be run again in `after_seconds` to
/// verify. Each step is recorded in `report`.
pub fn resume_and_follow_up(
    report: &mut Report,
    sync: bool,
    after_seconds: u32,
) -> Result<(), Error> {
    let resumed = wsus::resume_failed()?;
    if let Some(batch) = &resumed {
        report.record_batch("resume-download", batch);
    }
    let started = if sync || resumed.is_some() {
        match wsus::start_sync() {
            Ok(started) => {
                report.push(
                    "start-sync",
                    "upstream",
                    &if started == 0 {
                        "a synchronization (planned)".to_string()
                    } else {
                        format!("a synchronization started at {started}")
                    },
                    started != 0,
                );
                started
            }
            // One is running already: its end shows in the states the
            // follow-up reads; this repair starts none of its own.
            Err(e) if e.kind == ErrorKind::Conflict => {
                crate::info!("no sync started: {}", e.message);
                0
            }
            Err(e) => return Err(e),
        }
    } else {
        0
    };
    state::set(SYNC_KEY, &started.to_string())?;
    state::set(WAITS_KEY, "0")?;
    report.follow_up(
        after_seconds,
        &if started == 0 {
            "verify that the resumed downloads completed".to_string()
        } else {
            format!("verify the resumed downloads and the sync started at {started}")
        },
    );
    Ok(())
}

/// The follow-up run's verdict on the repair described by `repaired`:
/// healthy once no approved download is Failed and the sync (if one was
/// started) succeeded; failed when downloads failed again or the sync did;
/// another follow-up while the sync still runs.
pub fn verify(repaired: &str, after_seconds: u32) -> Result<Outcome, Error> {
    let mut report = Report::new();
    let started: u64 = state::get_parsed(SYNC_KEY).unwrap_or(0);
    let sync = match wsus::sync_check(started)? {
        SyncCheck::Running => {
            let waits: u32 = state::get_parsed(WAITS_KEY).unwrap_or(0) + 1;
            state::set(WAITS_KEY, &waits.to_string())?;
            if waits <= MAX_WAITS {
                report.follow_up(
                    after_seconds,
                    &format!("the sync started at {started} is still running"),
                );
                return Ok(report.finish(&format!(
                    "{repaired}; the sync started at {started} is still running: checking again in {after_seconds}s"
                )));
            }
            return Ok(report.fail(&format!(
                "{repaired}; the sync started at {started} is still running after {MAX_WAITS} checks: look at the server"
            )));
        }
        SyncCheck::Failed { error, reason } => {
            return Ok(report.fail(&format!(
                "{repaired}, but the sync started at {started} failed ({}): {reason}",
                error.as_deref().unwrap_or("no SynchronizationError given")
            )));
        }
        SyncCheck::Succeeded => "; the sync succeeded",
        SyncCheck::Planned | SyncCheck::Unknown => "",
    };
    let failed = wsus::failed_downloads()?;
    if failed.is_empty() {
        state::remove(SYNC_KEY)?;
        return Ok(report.finish(&format!(
            "verified: {repaired}; no approved download is Failed{sync}"
        )));
    }
    let first: Vec<&str> = failed.iter().take(3).map(|u| u.title.as_str()).collect();
    Ok(report.fail(&format!(
        "{repaired}, but {} approved downloads are Failed again{sync} (e.g. {}): see event 364 for the reason",
        failed.len(),
        first.join("; ")
    )))
}
