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

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::services::ProblemKind;
    use medic_sdk::testing::{FakeHost, HostFn, Mode, Service, ServiceManager, event};

    const FAILED: &str = "exit-code: status=1/FAILURE";

    /// systemd with nginx failed (the fault) and redis running; both kept.
    fn units() -> FakeHost {
        let mut host = FakeHost::new();
        host.service_manager(ServiceManager::Systemd)
            .add_service(Service::new("nginx.service").failed(ProblemKind::ExitCode, FAILED))
            .add_service(Service::new("redis.service"))
            .setting("units", ["nginx", "redis"]);
        host
    }

    #[test]
    fn a_failed_unit_is_restarted_and_its_restart_remembered() {
        let mut host = units();
        let run = host.run::<UnitKeeper>(event::schedule(300));
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(run.actions().len(), 1);
        let action = &run.actions()[0];
        assert_eq!(
            (action.verb.as_str(), action.target.as_str()),
            ("restart-service", "nginx")
        );
        assert_eq!(action.detail, "failed (automatic) -> running (automatic)");
        assert!(action.applied);
        assert_eq!(
            run.summary(),
            format!("nginx had failed ({FAILED}): restarted; redis is running")
        );
        let nginx = host.service("nginx");
        assert_eq!(nginx.state, ServiceState::Running);
        assert!(nginx.problem.is_none());
        let now_s = (FakeHost::START_MS / 1000).to_string();
        assert_eq!(host.state("restarts.nginx"), Some(now_s.as_str()));

        let again = host.run::<UnitKeeper>(event::schedule(300));
        assert_eq!(again.status(), Status::Healthy);
        assert!(again.calls_to(HostFn::ServicesRestart).is_empty());
    }

    #[test]
    fn dry_run_plans_the_restart_and_remembers_none() {
        let mut host = units();
        host.mode(Mode::DryRun);
        let run = host.run::<UnitKeeper>(event::manual());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(run.planned().len(), 1);
        assert_eq!(run.planned()[0].arg("name"), Some("nginx"));
        assert!(!run.actions()[0].applied);
        assert_eq!(host.service("nginx").state, ServiceState::Failed);
        assert_eq!(host.state("restarts.nginx"), None, "a plan is no restart");
    }

    #[test]
    fn the_flap_guard_leaves_a_unit_that_keeps_failing_to_a_person() {
        let mut host = units();
        let now_s = FakeHost::START_MS / 1000;
        let recent = format!("{},{},{}", now_s - 500, now_s - 300, now_s - 100);
        host.set_state("restarts.nginx", &recent);
        let run = host.run::<UnitKeeper>(event::schedule(300));
        assert_eq!(run.status(), Status::Failed);
        assert!(
            run.summary().starts_with(&format!(
                "nginx failed again ({FAILED}) after 3 restarts within 600s: left for a person"
            )),
            "{}",
            run.summary()
        );
        assert!(run.calls_to(HostFn::ServicesRestart).is_empty());
        assert_eq!(host.service("nginx").state, ServiceState::Failed);

        // Restarts older than `within` no longer count.
        let run = host.run::<UnitKeeper>(event::schedule(300).at(FakeHost::START_MS + 1_000_000));
        assert_eq!(run.status(), Status::Remediated);
    }

    #[test]
    fn broken_masked_and_stopped_units_are_left_alone() {
        let mut host = FakeHost::new();
        host.service_manager(ServiceManager::Systemd)
            .add_service(Service::new("a.service").broken("Unit a.service has a bad setting"))
            .add_service(
                Service::new("b.service")
                    .failed(ProblemKind::Signal, "signal: SIGKILL")
                    .startup(StartupType::Disabled),
            )
            .add_service(Service::new("c.service").state(ServiceState::Stopped))
            .setting("units", ["a", "b", "c"]);
        let run = host.run::<UnitKeeper>(event::manual());
        assert_eq!(
            run.status(),
            Status::Failed,
            "the broken unit needs a person"
        );
        assert_eq!(
            run.summary(),
            "a cannot start: Unit a.service has a bad setting; fix its unit file; \
             b failed but is masked: left alone; c is stopped, not failed: left alone"
        );
        assert!(run.actions().is_empty());
        assert!(run.calls.iter().all(|c| !c.function.is_mutating()));
    }

    #[test]
    fn a_restart_that_fails_is_reported_and_counted() {
        let mut host = units();
        host.add_service(
            Service::new("nginx.service")
                .failed(ProblemKind::ExitCode, FAILED)
                .fails_to_start(ProblemKind::ExitCode, "exit-code: status=203/EXEC"),
        );
        let run = host.run::<UnitKeeper>(event::manual());
        assert_eq!(run.status(), Status::Failed);
        assert_eq!(
            run.actions()[0].detail,
            "failed: `nginx` failed to start: exit-code: status=203/EXEC"
        );
        assert!(run.summary().contains("restarting it failed"));
        assert!(host.state("restarts.nginx").is_some(), "it counts too");
        assert_eq!(
            host.service("nginx").problem.map(|p| p.detail).as_deref(),
            Some("exit-code: status=203/EXEC")
        );
    }

    #[test]
    fn a_journal_entry_wakes_only_its_unit_and_its_words_are_kept() {
        let mut host = units();
        let entry = event::journal("nginx.service", "nginx", "bind() to 0.0.0.0:80 failed");
        let run = host.run::<UnitKeeper>(entry);
        assert_eq!(run.status(), Status::Remediated);
        assert_eq!(
            run.summary(),
            format!("nginx had failed ({FAILED}; it said: bind() to 0.0.0.0:80 failed): restarted")
        );
        assert_eq!(
            run.calls_to(HostFn::ServicesQuery).len(),
            1,
            "redis not looked at"
        );
        assert_eq!(
            host.state("said.nginx"),
            Some("bind() to 0.0.0.0:80 failed")
        );

        let other = host.run::<UnitKeeper>(event::journal("sshd.service", "sshd", "hi"));
        assert_eq!(other.status(), Status::Healthy);
        assert_eq!(
            other.summary(),
            "sshd.service is not one of the units kept (nginx, redis)"
        );
    }

    #[test]
    fn a_unit_outside_the_granted_names_ends_the_run_with_the_refusal() {
        let mut host = units();
        host.grant_service("nginx");
        let run = host.run::<UnitKeeper>(event::manual());
        assert_eq!(
            run.error(),
            "denied: service `redis` is not granted to services-read (granted: nginx)"
        );
        assert_eq!(
            host.service("nginx").state,
            ServiceState::Running,
            "nginx came first"
        );
        host.unset("units");
        assert_eq!(
            host.run::<UnitKeeper>(event::manual()).error(),
            "setting `units` is required: the units to keep"
        );
    }
}
