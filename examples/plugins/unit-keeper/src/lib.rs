//! `unit-keeper`: keeps systemd units running. When one of its units has
//! failed it restarts it, says why it failed (in systemd's words and the
//! unit's own last words in the journal), and stops restarting a unit that
//! keeps failing: after `max_restarts` restarts within `within` seconds it
//! leaves the unit for a person, and says so. A unit that cannot load (a
//! broken unit file) or that an administrator masked or stopped is never
//! restarted. An example of a third-party plugin: it uses only `medic-sdk`.
//!
//! Pair it with a `journal` trigger on its units (so a failure wakes it at
//! once, with the unit's messages) and an `every` trigger (so a failure
//! whose messages were missed is found anyway).
//!
//! Settings:
//! - `units` (required): the units it keeps, as the policy grants them
//!   (`nginx` stands for `nginx.service`).
//! - `max_restarts` [default 3] and `within` [default 600]: at most this
//!   many restarts of one unit within this many seconds.
//! - `timeout_ms` [default 30000]: how long a restart may take.
//!
//! State: `restarts.<unit>`, the times of its recent restarts (seconds
//! since the epoch, comma-separated); `said.<unit>`, the last message the
//! unit itself wrote to the journal.

use medic_sdk::services::{ServiceState, ServiceStatus, StartupType};
use medic_sdk::{
    Capability, Event, EventKind, Outcome, Plugin, PluginInfo, Report, TriggerHint, info, services,
    settings, state, warn,
};

struct UnitKeeper;

/// `nginx` and `nginx.service` name the same unit.
fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// What to keep: the units, the flap guard and the restart timeout.
struct Keep {
    max_restarts: usize,
    within_s: u64,
    timeout_ms: u32,
    now_s: u64,
}

/// How one unit ended up.
enum Verdict {
    Healthy(String),
    Repaired(String),
    NeedsPerson(String),
}

impl Keep {
    fn recent_restarts(&self, unit: &str) -> Vec<u64> {
        state::get(&format!("restarts.{unit}"))
            .unwrap_or_default()
            .split(',')
            .filter_map(|t| t.parse::<u64>().ok())
            .filter(|&t| t + self.within_s > self.now_s)
            .collect()
    }

    fn remember_restart(&self, unit: &str, mut restarts: Vec<u64>) -> Result<(), String> {
        restarts.push(self.now_s);
        let text: Vec<String> = restarts.iter().map(u64::to_string).collect();
        state::set(&format!("restarts.{unit}"), &text.join(","))?;
        Ok(())
    }

    /// Why `status` failed: systemd's result, and what the unit said last.
    fn why(unit: &str, status: &ServiceStatus) -> String {
        let manager = status
            .problem
            .as_ref()
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| "systemd gives no reason".into());
        match state::get(&format!("said.{unit}")) {
            Some(said) => format!("{manager}; it said: {said}"),
            None => manager,
        }
    }

    fn keep(&self, unit: &str, report: &mut Report) -> Result<Verdict, String> {
        let status = services::query(unit)?;
        info!("{unit} is {} ({} start)", status.state, status.startup);
        let verdict = match status.state {
            ServiceState::Running
            | ServiceState::StartPending
            | ServiceState::StopPending
            | ServiceState::Paused => Verdict::Healthy(format!("{unit} is {}", status.state)),
            ServiceState::Stopped => {
                Verdict::Healthy(format!("{unit} is stopped, not failed: left alone"))
            }
            ServiceState::Broken => Verdict::NeedsPerson(format!(
                "{unit} cannot start: {}; fix its unit file",
                Self::why(unit, &status)
            )),
            ServiceState::Failed
                if matches!(
                    status.startup,
                    StartupType::Disabled | StartupType::DisabledUntilReboot
                ) =>
            {
                Verdict::Healthy(format!("{unit} failed but is masked: left alone"))
            }
            ServiceState::Failed => {
                let why = Self::why(unit, &status);
                let restarts = self.recent_restarts(unit);
                if restarts.len() >= self.max_restarts {
                    warn!("{unit} keeps failing: {why}");
                    return Ok(Verdict::NeedsPerson(format!(
                        "{unit} failed again ({why}) after {} restarts within {}s: left for a person",
                        restarts.len(),
                        self.within_s
                    )));
                }
                match services::restart(unit, self.timeout_ms) {
                    Ok(change) => {
                        if change.applied {
                            self.remember_restart(unit, restarts)?;
                        }
                        report.record_service("restart-service", &change, true);
                        Verdict::Repaired(format!("{unit} had failed ({why}): restarted"))
                    }
                    Err(e) => {
                        // A restart that failed counts against the guard too.
                        self.remember_restart(unit, restarts)?;
                        report.push("restart-service", unit, &e.describe(), true);
                        Verdict::NeedsPerson(format!(
                            "{unit} had failed ({why}); restarting it failed: {}",
                            e.describe()
                        ))
                    }
                }
            }
        };
        Ok(verdict)
    }
}

impl Plugin for UnitKeeper {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "unit-keeper".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps systemd units running: restarts a failed one, with a flap guard, and says why it failed.".into(),
            capabilities: vec![Capability::ServicesRead, Capability::ServicesControl],
            triggers: vec![TriggerHint::Every(300), TriggerHint::Manual],
        }
    }

    fn handle(event: Event) -> Result<Outcome, String> {
        let units = settings::list("units")?;
        if units.is_empty() {
            return Err("setting `units` is required: the units to keep".into());
        }
        let keep = Keep {
            max_restarts: settings::parse_or("max_restarts", 3)?,
            within_s: settings::parse_or("within", 600)?,
            timeout_ms: settings::parse_or("timeout_ms", 30_000)?,
            now_s: event.time_ms / 1000,
        };
        // A journal entry names its unit; anything else checks them all.
        let targets: Vec<&String> = if event.kind == EventKind::SystemEvent {
            let subject = unit_name(&event.subject);
            units.iter().filter(|u| unit_name(u) == subject).collect()
        } else {
            units.iter().collect()
        };
        if targets.is_empty() {
            return Ok(Report::new().finish(&format!(
                "{} is not one of the units kept ({})",
                event.subject,
                units.join(", ")
            )));
        }
        // Remember the unit's own last words: systemd's lines about it say
        // only how it ended.
        if event.kind == EventKind::SystemEvent
            && event.field("identifier") != Some("systemd")
            && let Some(message) = event.field("message")
        {
            state::set(&format!("said.{}", targets[0]), message)?;
        }

        let mut report = Report::new();
        let (mut needs_person, mut summaries) = (false, Vec::new());
        for unit in targets {
            match keep.keep(unit, &mut report)? {
                Verdict::Healthy(s) | Verdict::Repaired(s) => summaries.push(s),
                Verdict::NeedsPerson(s) => {
                    needs_person = true;
                    summaries.push(s);
                }
            }
        }
        let summary = summaries.join("; ");
        Ok(if needs_person {
            report.fail(&summary)
        } else {
            report.finish(&summary)
        })
    }
}

medic_sdk::register_plugin!(UnitKeeper);
