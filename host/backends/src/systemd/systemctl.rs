//! Running `systemctl`: one command line, waited for until a deadline and
//! killed past it, its output captured. Behind [`Systemctl`] so that the
//! backend can be pointed at another systemd (one in a namespace, for the
//! tests) by a command prefix.

use crate::{BackendError, ErrorKind, OpResult};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a `systemctl` command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited 0.
    Succeeded { stdout: String },
    /// It exited with an error; what it wrote to stderr.
    Failed { stderr: String },
    /// It was still running at the deadline, and was killed.
    TimedOut,
}

/// The `systemctl` command line: the program and what comes before its
/// own arguments (`nsenter -t PID -m -p -- systemctl`, say).
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: String,
    prefix: Vec<String>,
}

impl Default for Systemctl {
    fn default() -> Self {
        Self {
            program: "systemctl".into(),
            prefix: Vec::new(),
        }
    }
}

/// Longest a command may write before its output is cut.
const MAX_OUTPUT: u64 = 1 << 20;

impl Systemctl {
    /// `program` with `prefix` before `systemctl`'s own arguments.
    pub fn with_command(program: impl Into<String>, prefix: Vec<String>) -> Self {
        Self {
            program: program.into(),
            prefix,
        }
    }

    /// The command as an operator would type it, for messages: the
    /// prefix is a detail of where systemd runs.
    pub fn display(args: &[&str]) -> String {
        format!("systemctl {}", args.join(" "))
    }

    /// Run `systemctl ARGS`, killing it at `deadline`.
    pub fn run(&self, args: &[&str], deadline: Option<Instant>) -> OpResult<Ended> {
        let mut command = Command::new(&self.program);
        // A group of its own, so that a kill at the deadline reaches what
        // it started too (a prefix's child), and nothing keeps its pipes.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .args(&self.prefix)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|e| {
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!("cannot run `{}`: {e}", self.program),
                )
            })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&mut stdout).take(MAX_OUTPUT).read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = (&mut stderr).take(MAX_OUTPUT).read_to_string(&mut text);
            text
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    #[cfg(unix)]
                    if let Ok(group) = i32::try_from(child.id()) {
                        // SAFETY: kill(2) with a negative pid signals the
                        // process group `process_group(0)` made above.
                        unsafe { libc::kill(-group, libc::SIGKILL) };
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(BackendError::new(
                        ErrorKind::Failed,
                        format!("waiting for `{}`: {e}", Self::display(args)),
                    ));
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(match status {
            None => Ended::TimedOut,
            Some(s) if s.success() => Ended::Succeeded { stdout },
            Some(_) => Ended::Failed {
                stderr: stderr.trim().to_string(),
            },
        })
    }

    /// Run `systemctl ARGS` with no deadline, its stdout or a `failed` error.
    pub fn output(&self, args: &[&str]) -> OpResult<String> {
        self.output_until(args, None)
    }

    /// Run `systemctl ARGS` until `deadline`: its stdout, a `failed`
    /// error, or a `timeout` one when systemd did not answer in time.
    pub fn output_until(&self, args: &[&str], deadline: Option<Instant>) -> OpResult<String> {
        let started = Instant::now();
        match self.run(args, deadline)? {
            Ended::Succeeded { stdout } => Ok(stdout),
            Ended::Failed { stderr } => Err(BackendError::new(
                ErrorKind::Failed,
                format!("`{}` failed: {stderr}", Self::display(args)),
            )),
            Ended::TimedOut => Err(BackendError::new(
                ErrorKind::Timeout,
                format!(
                    "`{}` had no answer from systemd within {}",
                    Self::display(args),
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
                    ))
                ),
            )),
        }
    }
}

// The tests run `sh` standing in for systemctl: Unix only.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let sh = Systemctl::with_command("sh", vec!["-c".into()]);
        let started = Instant::now();
        let ended = sh
            .run(
                &["sleep 30"],
                Some(Instant::now() + Duration::from_millis(50)),
            )
            .unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn output_past_its_deadline_is_a_timeout() {
        let sh = Systemctl::with_command("sh", vec!["-c".into()]);
        let e = sh
            .output_until(
                &["sleep 30"],
                Some(Instant::now() + Duration::from_millis(50)),
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
        assert_eq!(
            sh.output_until(
                &["echo out"],
                Some(Instant::now() + Duration::from_secs(30))
            )
            .unwrap(),
            "out\n"
        );
    }

    #[test]
    fn output_and_errors_are_captured() {
        let sh = Systemctl::with_command("sh", vec!["-c".into()]);
        assert_eq!(
            sh.run(&["echo out"], None).unwrap(),
            Ended::Succeeded {
                stdout: "out\n".into()
            }
        );
        assert_eq!(
            sh.run(&["echo bad >&2; exit 1"], None).unwrap(),
            Ended::Failed {
                stderr: "bad".into()
            }
        );
        let missing = Systemctl::with_command("/nonexistent/systemctl", Vec::new());
        assert_eq!(
            missing.run(&["show"], None).unwrap_err().kind,
            ErrorKind::Unsupported
        );
    }
}
