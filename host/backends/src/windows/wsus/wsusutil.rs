//! `wsusutil.exe`, for what the administration API lacks: the inactive
//! approvals a replica's language change leaves on its upstream
//! (`listinactiveapprovals`, `removeinactiveapprovals`, which act on the
//! server they run on). It runs as its own short-lived process from
//! `<TargetDir>\Tools\wsusutil.exe`, `TargetDir` read from the WSUS Setup
//! registry key, with a timeout.
//!
//! The output of `listinactiveapprovals` is not documented. It is parsed
//! tolerantly: one approval per line that is not blank, not a banner and
//! not a summary; an update id is taken from the line when it holds a
//! GUID. The fixtures are written to that assumption, not captured from a
//! server: replace them with a real capture when one exists.

use crate::wsus::Approval;
use crate::{BackendError, ErrorKind, OpResult};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `wsusutil` command may take.
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// Running `wsusutil` with arguments and reading what it printed.
pub trait Wsusutil: Send + Sync {
    fn run(&self, args: &[&str]) -> OpResult<String>;
}

/// The real `wsusutil.exe`.
#[derive(Debug, Clone)]
pub struct WsusutilProcess {
    pub program: PathBuf,
    pub timeout: Duration,
}

impl WsusutilProcess {
    /// `wsusutil.exe` under a WSUS installation's `TargetDir`.
    pub fn under(target_dir: &Path) -> Self {
        Self {
            program: target_dir.join("Tools").join("wsusutil.exe"),
            timeout: TIMEOUT,
        }
    }
}

impl Wsusutil for WsusutilProcess {
    fn run(&self, args: &[&str]) -> OpResult<String> {
        let what = format!("{} {}", self.program.display(), args.join(" "));
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!("cannot run {what}: {e} (is the WSUS role installed here?)"),
                )
            })?;
        // Read both streams on threads so a full pipe cannot stall it.
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BackendError::new(
                        ErrorKind::Timeout,
                        format!(
                            "{what} did not finish within {:?}; it was stopped",
                            self.timeout
                        ),
                    ));
                }
                Err(e) => {
                    return Err(BackendError::new(ErrorKind::Failed, format!("{what}: {e}")));
                }
            }
        };
        let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!("{what} failed ({status}): {}", last_lines(&stderr, &stdout)),
            ));
        }
        Ok(stdout)
    }
}

fn read_all(mut stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Lines that are not approvals: blank, banners, progress and summaries.
fn is_chatter(line: &str) -> bool {
    let lower = line.trim().to_ascii_lowercase();
    lower.is_empty()
        || lower.starts_with("windows server update services")
        || lower.starts_with("copyright")
        || lower.starts_with("microsoft")
        || lower.starts_with("listing")
        || lower.starts_with("removing")
        || lower.starts_with("no inactive")
        || lower.starts_with("there are no")
        || lower.contains("inactive approvals")
        || lower.starts_with("---")
        || lower.starts_with("===")
}

/// A GUID in `line`, if it holds one.
fn guid_in(line: &str) -> Option<&str> {
    (0..=line.len().saturating_sub(36))
        .filter_map(|start| line.get(start..start + 36))
        .find(|candidate| super::is_guid(candidate))
}

/// The approvals `wsusutil listinactiveapprovals` printed.
pub fn parse_inactive_approvals(output: &str) -> Vec<Approval> {
    output
        .lines()
        .filter(|line| !is_chatter(line))
        .map(|line| {
            let line = line.trim();
            let update_id = guid_in(line).unwrap_or_default().to_ascii_lowercase();
            let title = line
                .replace(&update_id, "")
                .trim_matches(|c: char| c.is_whitespace() || matches!(c, ':' | '-' | ',' | '\t'))
                .to_string();
            Approval {
                update_id,
                title: if title.is_empty() {
                    line.to_string()
                } else {
                    title
                },
                target_group: String::new(),
                language: String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written to the assumption in the module header, not captured.
    const LISTING: &str = "\
Windows Server Update Services Tools
Copyright (c) Microsoft Corporation. All rights reserved.

Listing inactive approvals...
Security Update for Windows Server 2008 (KB958644) - Japanese
3f1d1c0a-6f7e-4b52-9d0e-2a3c5b4d6e7f Update for Windows XP (KB967715) - German

2 inactive approvals found.
";

    #[test]
    fn approvals_are_read_tolerantly() {
        let approvals = parse_inactive_approvals(LISTING);
        assert_eq!(approvals.len(), 2, "{approvals:?}");
        assert_eq!(
            approvals[0].title,
            "Security Update for Windows Server 2008 (KB958644) - Japanese"
        );
        assert_eq!(approvals[0].update_id, "");
        assert_eq!(
            approvals[1].update_id,
            "3f1d1c0a-6f7e-4b52-9d0e-2a3c5b4d6e7f"
        );
        assert_eq!(
            approvals[1].title,
            "Update for Windows XP (KB967715) - German"
        );
        assert!(parse_inactive_approvals("There are no inactive approvals.\r\n").is_empty());
        assert!(parse_inactive_approvals("").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn the_process_runner_reports_failures_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let found = WsusutilProcess::under(Path::new("/opt/Update Services"));
        assert_eq!(
            found.program,
            Path::new("/opt/Update Services/Tools/wsusutil.exe")
        );
        // The fake is a script run by `sh` (never executed straight after
        // being written, which can fail with ETXTBSY while other tests fork).
        let script = dir.path().join("wsusutil.sh");
        let script_arg = script.to_str().unwrap().to_string();
        let mut runner = WsusutilProcess {
            program: "/bin/sh".into(),
            timeout: TIMEOUT,
        };
        let run = |body: &str, runner: &WsusutilProcess| {
            std::fs::write(&script, body).unwrap();
            runner.run(&[&script_arg, "listinactiveapprovals"])
        };
        assert_eq!(
            run("echo \"$1\"; echo listed", &runner).unwrap(),
            "listinactiveapprovals\nlisted\n"
        );
        let err = run("echo 'Access is denied.' >&2; exit 1", &runner).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Failed);
        assert!(err.message.contains("Access is denied."), "{}", err.message);
        runner.timeout = Duration::from_millis(300);
        assert_eq!(
            run("exec sleep 30", &runner).unwrap_err().kind,
            ErrorKind::Timeout
        );
        let missing = WsusutilProcess::under(&dir.path().join("nowhere"));
        assert_eq!(
            missing.run(&["x"]).unwrap_err().kind,
            ErrorKind::Unsupported
        );
    }
}
