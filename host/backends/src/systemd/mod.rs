//! Services through systemd, for the `local` backend on Linux, driven by
//! `systemctl` as an operator would drive it, and judged by what systemd
//! reports afterwards rather than by waiting for a state:
//!
//! - a start, stop or restart runs `systemctl VERB` (which waits for
//!   systemd's job) until the call's deadline. A job that fails is reported
//!   `failed` at once, with systemd's result and exit status; a oneshot unit
//!   is judged by its result; a job still running at the deadline is
//!   cancelled, and the error says the state it left the unit in;
//! - startup types are read from `UnitFileState` without folding any
//!   together ([`unit::Unit::startup`]), and set by the `systemctl` steps
//!   [`startup_steps`] plans: refusals (a static unit cannot be enabled, a
//!   unit defined in `/etc/systemd/system` cannot be masked) are decided
//!   before anything changes, so dry-run plans exactly what enforce does;
//! - a call with nothing to do is reported unapplied, with `before ==
//!   after`.
//!
//! [`unit`] parses and maps `systemctl show`; [`systemctl`] runs commands.

pub mod systemctl;
pub mod unit;

use crate::services::{ServiceChange, ServiceManager, ServiceState, ServiceStatus, StartupType};
use crate::{BackendError, ErrorKind, OpResult};
use std::time::{Duration, Instant};
pub use systemctl::{Ended, Systemctl};
use unit::{LoadState, Unit};

/// How long after cancelling a timed-out job medic looks again for one
/// systemd enqueued late.
const JOB_SETTLE: Duration = Duration::from_millis(100);

/// How long what follows a job (reading the unit again, cancelling a job
/// left running) may take in all, past the call's timeout.
const FOLLOW_UP: Duration = Duration::from_secs(5);

/// systemd, driven through `systemctl`.
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    systemctl: Systemctl,
}

/// The unit name for a service name: `nginx` -> `nginx.service`.
pub fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// One `systemctl` command of a startup change, applied to the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub verb: &'static str,
    /// `--runtime`: in `/run`, until the next boot.
    pub runtime: bool,
}

impl Step {
    const fn persistent(verb: &'static str) -> Self {
        Self {
            verb,
            runtime: false,
        }
    }

    const fn runtime(verb: &'static str) -> Self {
        Self {
            verb,
            runtime: true,
        }
    }

    /// The command line of the step on `unit`, the unit after `--`: a
    /// unit's name may begin with a dash (`-.mount`, the root folder's).
    fn args<'a>(&self, unit: &'a str) -> Vec<&'a str> {
        let mut args = vec![self.verb, "--no-ask-password"];
        if self.runtime {
            args.push("--runtime");
        }
        args.push("--");
        args.push(unit);
        args
    }
}

fn conflict(message: String) -> BackendError {
    BackendError::new(ErrorKind::Conflict, message)
}

/// The `systemctl` steps that take `unit` (asked for as `name`) to `want`,
/// or why it cannot get there. Empty when it is there already.
pub fn startup_steps(name: &str, unit: &Unit, want: StartupType) -> OpResult<Vec<Step>> {
    match want {
        StartupType::AutomaticDelayed => {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "systemd has no delayed automatic start: set `{name}` to automatic instead"
                ),
            ));
        }
        StartupType::Static | StartupType::Indirect | StartupType::Generated => {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "`{}` is what a unit's file makes of it and cannot be set: choose automatic, manual or disabled",
                    want.as_str()
                ),
            ));
        }
        _ => {}
    }
    if unit.load == LoadState::Broken {
        return Err(conflict(format!(
            "`{name}`: {}; fix its unit file first",
            unit.problem().map(|p| p.detail).unwrap_or_default()
        )));
    }
    let current = unit.startup();
    // An indirect unit is not enabled itself: it is manual already, and
    // disabling it would leave it indirect all the same.
    if current == want || (current, want) == (StartupType::Indirect, StartupType::Manual) {
        return Ok(Vec::new());
    }
    let masking = matches!(
        want,
        StartupType::Disabled | StartupType::DisabledUntilReboot
    );
    match current {
        StartupType::Static if !masking => {
            return Err(conflict(format!(
                "`{name}` is static: its unit file has no [Install] section, so there is nothing to enable or disable; it starts when another unit needs it. Only `disabled` (masking) applies to it"
            )));
        }
        StartupType::Generated if !masking => {
            return Err(conflict(format!(
                "`{name}` is generated (from /etc/fstab, an init script, or at run time): change what generates it. Only `disabled` (masking) applies to it"
            )));
        }
        _ => {}
    }
    if masking && unit.defined_by_admin() {
        return Err(conflict(format!(
            "`{name}` cannot be masked: its unit file is {}, and a mask is a link of the same name in that folder, so masking would replace the file. Set it to manual (disable) instead, or move the file to /usr/local/lib/systemd/system",
            unit.fragment_path
        )));
    }
    let mut steps = Vec::new();
    // Undo what stands in the way.
    match current {
        // A mask hides the unit's enablement links (`systemctl mask` leaves
        // them): unmasked, it would be automatic again. Unless that is
        // asked for, they go too.
        StartupType::Disabled | StartupType::DisabledUntilReboot => {
            steps.push(if current == StartupType::Disabled {
                Step::persistent("unmask")
            } else {
                Step::runtime("unmask")
            });
            if want != StartupType::Automatic {
                steps.push(Step::persistent("disable"));
                steps.push(Step::runtime("disable"));
            }
        }
        // Enabled for good, it may also be enabled until reboot (and the
        // other way round): leaving both, both links go.
        StartupType::Automatic if want == StartupType::AutomaticUntilReboot => {
            steps.push(Step::persistent("disable"));
        }
        StartupType::Automatic | StartupType::AutomaticUntilReboot
            if want != StartupType::Automatic =>
        {
            steps.push(Step::persistent("disable"));
            steps.push(Step::runtime("disable"));
        }
        _ => {}
    }
    match want {
        StartupType::Automatic => steps.push(Step::persistent("enable")),
        StartupType::AutomaticUntilReboot => steps.push(Step::runtime("enable")),
        StartupType::Disabled => steps.push(Step::persistent("mask")),
        StartupType::DisabledUntilReboot => steps.push(Step::runtime("mask")),
        _ => {}
    }
    Ok(steps)
}

/// What a control call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Start,
    Stop,
    Restart,
}

impl Control {
    fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

impl Systemd {
    /// systemd reached through `systemctl`.
    pub fn new(systemctl: Systemctl) -> Self {
        Self { systemctl }
    }

    /// What `systemctl show` says of service `name`, known to systemd or
    /// not, if systemd answers by `deadline`. A name systemctl reads as a
    /// pattern is refused: it would stand for whichever unit systemd lists
    /// first among those it matches.
    fn show(&self, name: &str, deadline: Option<Instant>) -> OpResult<Unit> {
        if name.contains(['*', '?', '[']) {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "service `{name}` is a pattern, which systemctl would take for the first unit it matches: name one unit by its whole name (no unit name holds *, ? or [)"
                ),
            ));
        }
        let out = self.systemctl.output_until(
            &["show", "-p", unit::PROPERTIES, "--", &unit_name(name)],
            deadline,
        )?;
        Ok(Unit::parse(&out))
    }

    /// The unit behind service `name`. One systemd has no file for is an
    /// error, unless it is still running or failed: a unit whose file was
    /// removed while it ran, or a transient one, is still there to query
    /// and stop.
    pub fn unit(&self, name: &str) -> OpResult<Unit> {
        self.unit_until(name, None)
    }

    /// [`Systemd::unit`], if systemd answers by `deadline`.
    fn unit_until(&self, name: &str, deadline: Option<Instant>) -> OpResult<Unit> {
        let unit = self.show(name, deadline)?;
        if unit.gone() {
            return Err(BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "service `{name}` does not exist (systemd has no unit `{}`)",
                    unit_name(name)
                ),
            ));
        }
        Ok(unit)
    }

    /// Refuse to start what systemd will not start, before trying.
    fn refuse_start(name: &str, unit: &Unit) -> OpResult<()> {
        if let (LoadState::Broken, Some(problem)) = (unit.load, unit.problem()) {
            return Err(conflict(format!(
                "`{name}` cannot start: {}; fix its unit file {}",
                problem.detail, unit.fragment_path
            )));
        }
        if unit.load == LoadState::Masked {
            return Err(conflict(format!(
                "`{name}` is masked (disabled): set its startup to manual or automatic first"
            )));
        }
        if unit.refuse_manual_start {
            return Err(conflict(format!(
                "`{name}` refuses to be started by hand (RefuseManualStart=yes)"
            )));
        }
        Ok(())
    }

    /// Cancel the jobs systemd has queued or running for `unit`; how many.
    fn cancel_jobs(&self, unit: &str, deadline: Option<Instant>) -> OpResult<usize> {
        let listed = self.systemctl.output_until(
            &["list-jobs", "--no-legend", "--plain", "--", unit],
            deadline,
        )?;
        let jobs: Vec<&str> = listed
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let id = words.next()?;
                (words.next() == Some(unit) && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
            })
            .collect();
        if !jobs.is_empty() {
            let mut args = vec!["cancel", "--no-ask-password", "--"];
            args.extend(&jobs);
            self.systemctl.output_until(&args, deadline)?;
        }
        Ok(jobs.len())
    }

    /// Run a start, stop or restart job on `unit` until `deadline` (the
    /// call's `timeout` after it began), and say how it ended. What follows
    /// the job (reading the unit again, cancelling a job left running) has
    /// [`FOLLOW_UP`] more in all.
    fn run_job(
        &self,
        name: &str,
        control: Control,
        unit: &Unit,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> OpResult<Unit> {
        let verb = control.verb();
        let ended = self
            .systemctl
            .run(&[verb, "--no-ask-password", "--", &unit.id], deadline)?;
        let follow_up = Instant::now().checked_add(FOLLOW_UP);
        match ended {
            // A stopped transient unit is gone at once: stopped.
            Ended::Succeeded { .. } if control == Control::Stop => self.show(name, follow_up),
            Ended::Succeeded { .. } => {
                let after = self.unit_until(name, follow_up)?;
                if after.state() == ServiceState::Failed {
                    return Err(failed_to(name, verb, &after, ""));
                }
                Ok(after)
            }
            Ended::Failed { stderr } => {
                let after = self.show(name, follow_up)?;
                Err(failed_to(name, verb, &after, &stderr))
            }
            Ended::TimedOut => {
                // A systemctl killed just as it sent its request leaves a
                // job systemd may enqueue a moment later: a second sweep
                // after a pause catches it.
                let swept = self.cancel_jobs(&unit.id, follow_up).and_then(|first| {
                    std::thread::sleep(JOB_SETTLE);
                    Ok(first + self.cancel_jobs(&unit.id, follow_up)?)
                });
                let cancelled = match swept {
                    Ok(0) => "its job had ended".to_string(),
                    Ok(_) => "its job was cancelled".to_string(),
                    Err(e) => format!("its job could not be cancelled ({})", e.message),
                };
                let now = self
                    .show(name, follow_up)
                    .map(|u| u.state().as_str())
                    .unwrap_or("unknown");
                Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "`{name}` did not {verb} within {}: {cancelled}, and it is {now}",
                        humantime::format_duration(timeout)
                    ),
                ))
            }
        }
    }

    fn control(
        &self,
        name: &str,
        control: Control,
        timeout: Duration,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        // The whole call, reading the unit first included, is bounded by
        // the timeout: a systemd that does not answer (busy reloading,
        // hung) does not hold the plugin's run past it.
        let deadline = Instant::now().checked_add(timeout);
        let before_unit = self.unit_until(name, deadline).map_err(|e| {
            if e.kind == ErrorKind::Timeout {
                BackendError::new(
                    ErrorKind::Timeout,
                    format!(
                        "`{name}` was not asked to {} within {}: {}; nothing was done",
                        control.verb(),
                        humantime::format_duration(timeout),
                        e.message
                    ),
                )
            } else {
                e
            }
        })?;
        let before = before_unit.status(name);
        let running = matches!(
            before.state,
            ServiceState::Running | ServiceState::StartPending
        );
        match control {
            Control::Start | Control::Restart => Self::refuse_start(name, &before_unit)?,
            Control::Stop if before_unit.refuse_manual_stop && running => {
                return Err(conflict(format!(
                    "`{name}` refuses to be stopped by hand (RefuseManualStop=yes)"
                )));
            }
            Control::Stop => {}
        }
        let nothing_to_do = match control {
            Control::Start => before.state == ServiceState::Running,
            Control::Stop => matches!(
                before.state,
                ServiceState::Stopped | ServiceState::Failed | ServiceState::Broken
            ),
            Control::Restart => false,
        };
        if nothing_to_do {
            return Ok(unchanged(before));
        }
        if !apply {
            let state = match control {
                Control::Stop => ServiceState::Stopped,
                _ if before_unit.runs_once() => ServiceState::Stopped,
                _ => ServiceState::Running,
            };
            let after = ServiceStatus {
                state,
                problem: None,
                ..before.clone()
            };
            return Ok(ServiceChange {
                before,
                after,
                applied: false,
            });
        }
        let after = self.run_job(name, control, &before_unit, timeout, deadline)?;
        let after = if after.gone() {
            // Stopped and unloaded (a transient unit): what it was, stopped.
            ServiceStatus {
                state: ServiceState::Stopped,
                problem: None,
                ..before.clone()
            }
        } else {
            after.status(name)
        };
        Ok(ServiceChange {
            before,
            after,
            applied: true,
        })
    }
}

/// A call with nothing to do.
fn unchanged(status: ServiceStatus) -> ServiceChange {
    ServiceChange {
        before: status.clone(),
        after: status,
        applied: false,
    }
}

/// The error of a job that failed, with systemd's reason.
fn failed_to(name: &str, verb: &str, after: &Unit, stderr: &str) -> BackendError {
    let reason = match after.problem() {
        Some(problem) => problem.detail,
        None => format!("it is {}", after.state().as_str()),
    };
    let said = stderr
        .lines()
        .next()
        .map(|line| format!(" (systemctl: {line})"))
        .unwrap_or_default();
    BackendError::new(
        ErrorKind::Failed,
        format!("`{name}` failed to {verb}: {reason}{said}"),
    )
}

impl ServiceManager for Systemd {
    fn query(&self, name: &str) -> OpResult<ServiceStatus> {
        Ok(self.unit(name)?.status(name))
    }

    fn start(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, Control::Start, timeout, apply)
    }

    fn stop(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, Control::Stop, timeout, apply)
    }

    fn restart(&self, name: &str, timeout: Duration, apply: bool) -> OpResult<ServiceChange> {
        self.control(name, Control::Restart, timeout, apply)
    }

    fn set_startup(
        &self,
        name: &str,
        startup: StartupType,
        apply: bool,
    ) -> OpResult<ServiceChange> {
        let unit = self.unit(name)?;
        let before = unit.status(name);
        let steps = startup_steps(name, &unit, startup)?;
        if steps.is_empty() {
            return Ok(unchanged(before));
        }
        if !apply {
            let after = ServiceStatus {
                startup,
                ..before.clone()
            };
            return Ok(ServiceChange {
                before,
                after,
                applied: false,
            });
        }
        for step in &steps {
            let args = step.args(&unit.id);
            if let Err(e) = self.systemctl.output(&args) {
                let now = self
                    .unit(name)
                    .map(|u| u.startup().as_str())
                    .unwrap_or("unknown");
                return Err(BackendError::new(
                    e.kind,
                    format!("{}; `{name}` is now {now}", e.message),
                ));
            }
        }
        let after = self.unit(name)?.status(name);
        if after.startup != startup {
            let done: Vec<String> = steps
                .iter()
                .map(|s| Systemctl::display(&s.args(&unit.id)))
                .collect();
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!(
                    "`{name}` is {} after `{}`, not {}",
                    after.startup.as_str(),
                    done.join("`, `"),
                    startup.as_str()
                ),
            ));
        }
        Ok(ServiceChange {
            before,
            after,
            applied: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(file_state: &str, fragment: &str) -> Unit {
        Unit::parse(&format!(
            "Id=x.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState={file_state}\nFragmentPath={fragment}\n"
        ))
    }

    const VENDOR: &str = "/usr/lib/systemd/system/x.service";
    const ADMIN: &str = "/etc/systemd/system/x.service";

    fn steps(file_state: &str, fragment: &str, want: StartupType) -> OpResult<Vec<Step>> {
        startup_steps("x", &unit(file_state, fragment), want)
    }

    #[test]
    fn unit_names_get_a_suffix_only_when_missing() {
        assert_eq!(unit_name("BITS"), "BITS.service");
        assert_eq!(unit_name("nginx.service"), "nginx.service");
    }

    #[test]
    fn a_startup_already_set_needs_no_step() {
        assert_eq!(steps("enabled", VENDOR, StartupType::Automatic), Ok(vec![]));
        assert_eq!(steps("masked", VENDOR, StartupType::Disabled), Ok(vec![]));
        assert_eq!(
            steps("static", VENDOR, StartupType::Static)
                .unwrap_err()
                .kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn startup_changes_take_the_steps_systemd_needs() {
        use StartupType::*;
        let p = Step::persistent;
        let r = Step::runtime;
        assert_eq!(steps("disabled", VENDOR, Automatic).unwrap(), [p("enable")]);
        assert_eq!(
            steps("masked", VENDOR, Automatic).unwrap(),
            [p("unmask"), p("enable")]
        );
        // Enablement links may be left under a mask: they go unless the
        // unit is to be automatic.
        assert_eq!(
            steps("masked", VENDOR, Manual).unwrap(),
            [p("unmask"), p("disable"), r("disable")]
        );
        assert_eq!(
            steps("masked-runtime", VENDOR, Manual).unwrap(),
            [r("unmask"), p("disable"), r("disable")]
        );
        assert_eq!(
            steps("masked", VENDOR, AutomaticUntilReboot).unwrap(),
            [p("unmask"), p("disable"), r("disable"), r("enable")]
        );
        assert_eq!(
            steps("masked-runtime", VENDOR, Disabled).unwrap(),
            [r("unmask"), p("disable"), r("disable"), p("mask")]
        );
        assert_eq!(
            steps("enabled", VENDOR, Manual).unwrap(),
            [p("disable"), r("disable")]
        );
        assert_eq!(
            steps("enabled", VENDOR, Disabled).unwrap(),
            [p("disable"), r("disable"), p("mask")]
        );
        assert_eq!(
            steps("enabled-runtime", VENDOR, Automatic).unwrap(),
            [p("enable")]
        );
        assert_eq!(
            steps("enabled-runtime", VENDOR, Manual).unwrap(),
            [p("disable"), r("disable")]
        );
        assert_eq!(
            steps("enabled", VENDOR, AutomaticUntilReboot).unwrap(),
            [p("disable"), r("enable")]
        );
        assert_eq!(steps("static", VENDOR, Disabled).unwrap(), [p("mask")]);
        assert_eq!(
            steps("generated", "/run/systemd/generator/x.service", Disabled).unwrap(),
            [p("mask")]
        );
        assert_eq!(steps("indirect", VENDOR, Automatic).unwrap(), [p("enable")]);
        assert_eq!(steps("indirect", VENDOR, Manual).unwrap(), []);
    }

    #[test]
    fn impossible_startup_changes_are_refused_before_any_step() {
        use StartupType::*;
        for (state, fragment, want, kind, says) in [
            ("static", VENDOR, Automatic, ErrorKind::Conflict, "static"),
            ("static", VENDOR, Manual, ErrorKind::Conflict, "static"),
            (
                "generated",
                VENDOR,
                Automatic,
                ErrorKind::Conflict,
                "generated",
            ),
            (
                "enabled",
                ADMIN,
                Disabled,
                ErrorKind::Conflict,
                "replace the file",
            ),
            (
                "disabled",
                ADMIN,
                DisabledUntilReboot,
                ErrorKind::Conflict,
                "cannot be masked",
            ),
            (
                "enabled",
                VENDOR,
                AutomaticDelayed,
                ErrorKind::Unsupported,
                "delayed",
            ),
            (
                "enabled",
                VENDOR,
                Indirect,
                ErrorKind::InvalidArgument,
                "cannot be set",
            ),
        ] {
            let e = steps(state, fragment, want).unwrap_err();
            assert_eq!(e.kind, kind, "{state} -> {want:?}: {e:?}");
            assert!(
                e.message.contains(says),
                "{state} -> {want:?}: {}",
                e.message
            );
        }
        // Disabling an admin's unit without masking is fine.
        assert_eq!(
            steps("enabled", ADMIN, Manual).unwrap(),
            [Step::persistent("disable"), Step::runtime("disable")]
        );
    }

    #[test]
    #[cfg(unix)] // `sh` stands in for systemctl
    fn a_pattern_is_refused_before_systemctl_is_asked() {
        // A systemctl that would answer anything with a loaded unit.
        let systemd = Systemd::new(Systemctl::with_command(
            "sh",
            vec![
                "-c".into(),
                "echo Id=web-a.service; echo LoadState=loaded; echo ActiveState=active".into(),
            ],
        ));
        assert_eq!(systemd.query("web-a").unwrap().state, ServiceState::Running);
        for pattern in ["web-*", "web-?", "web-[ab]", "*"] {
            let e = systemd.query(pattern).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{pattern}: {e:?}");
            let e = systemd
                .stop(pattern, Duration::from_secs(1), true)
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{pattern}: {e:?}");
            let e = systemd
                .set_startup(pattern, StartupType::Disabled, false)
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{pattern}: {e:?}");
        }
    }

    #[test]
    fn a_step_s_unit_comes_after_the_options() {
        // `-.mount` (the root folder) and any unit whose name begins with a
        // dash would otherwise be read by systemctl as options.
        assert_eq!(
            Step::runtime("mask").args("-.mount"),
            ["mask", "--no-ask-password", "--runtime", "--", "-.mount"]
        );
        assert_eq!(
            Step::persistent("enable").args("-x.service"),
            ["enable", "--no-ask-password", "--", "-x.service"]
        );
    }

    #[test]
    fn a_broken_unit_is_refused_a_startup_change() {
        let broken = Unit::parse(
            "Id=x.service\nLoadState=bad-setting\nActiveState=inactive\nLoadError=bad\n",
        );
        let e = startup_steps("x", &broken, StartupType::Automatic).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
    }
}
