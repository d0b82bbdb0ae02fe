//! `{{name}}`: keeps a service running. Woken every five minutes and on
//! demand, it looks at the service its `service` setting names and starts
//! it when it is not running. In dry-run and approve modes the start is
//! only planned; the agent records the plan for a person.
//!
//! Settings: `service` (required), `timeout_ms` (default 30000).

use medic_sdk::services::{self, ServiceState};
use medic_sdk::{Capability, Event, Outcome, Plugin, PluginInfo, Report, TriggerHint, settings};

struct KeepRunning;

impl Plugin for KeepRunning {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps a service running.".into(),
            capabilities: vec![Capability::ServicesRead, Capability::ServicesControl],
            triggers: vec![TriggerHint::Every(300), TriggerHint::Manual],
        }
    }

    fn handle(_event: Event) -> Result<Outcome, String> {
        let service: String = settings::required("service")?;
        let timeout_ms: u32 = settings::parse("timeout_ms")?.unwrap_or(30_000);
        medic_sdk::info!("checking {service}");
        let status = services::query(&service).map_err(|e| e.describe())?;
        let mut report = Report::new();
        if status.state == ServiceState::Running {
            return Ok(report.finish(&format!("{service} is running")));
        }
        let change = services::start(&service, timeout_ms).map_err(|e| e.describe())?;
        report.record_service("start-service", &change, true);
        Ok(report.finish(&format!("{service} was {}; started", status.state)))
    }
}

medic_sdk::register_plugin!(KeepRunning);

#[cfg(test)]
mod tests {
    use super::*;
    use medic_sdk::Status;
    use medic_sdk::testing::{FakeHost, Mode, Service, event};

    fn host(state: ServiceState) -> FakeHost {
        let mut host = FakeHost::new();
        host.add_service(Service::new("cron").state(state))
            .grant_service("cron")
            .setting("service", "cron");
        host
    }

    #[test]
    fn a_running_service_is_left_alone() {
        let mut host = host(ServiceState::Running);
        let run = host.run::<KeepRunning>(event::manual());
        assert_eq!(run.status(), Status::Healthy);
        assert!(!run.changed_anything());
    }

    #[test]
    fn a_stopped_service_is_started() {
        let mut host = host(ServiceState::Stopped);
        let run = host.run::<KeepRunning>(event::manual());
        assert_eq!(run.status(), Status::Remediated, "{}", run.summary());
        assert_eq!(host.service("cron").state, ServiceState::Running);
    }

    #[test]
    fn in_dry_run_the_start_is_only_planned() {
        let mut host = host(ServiceState::Stopped);
        host.mode(Mode::DryRun);
        let run = host.run::<KeepRunning>(event::manual());
        assert_eq!(run.status(), Status::NeedsApproval);
        assert_eq!(run.planned().len(), 1);
        assert_eq!(host.service("cron").state, ServiceState::Stopped);
    }

    #[test]
    fn without_its_setting_it_says_what_is_missing() {
        let mut host = host(ServiceState::Running);
        host.unset("service");
        let run = host.run::<KeepRunning>(event::manual());
        assert!(run.error().contains("service"), "{}", run.error());
    }
}
