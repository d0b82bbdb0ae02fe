//! The WSUS helper: one long-lived Windows PowerShell 5.1 process that
//! loads the WSUS administration assembly once and answers requests, one
//! JSON object per line each way.
//!
//! - A request is `{"id":N,"op":"list-updates","args":{...}}`. Arguments
//!   travel as JSON and the script reads them with `ConvertFrom-Json`:
//!   nothing a plugin sends is ever spliced into script text.
//! - A reply is `{"id":N,"ok":true,"result":...}` or
//!   `{"id":N,"ok":false,"error":{"type":"<.NET exception type>","message":"..."}}`.
//! - At start the helper says `{"ready":true}` (or `{"ready":false,"error":...}`
//!   when the WSUS console is not installed).
//! - One request at a time, each with a timeout. On a timeout, an exit,
//!   an unreadable or mismatched line, or a line longer than
//!   [`MAX_LINE_BYTES`], the process is killed and the call fails; the
//!   next call starts a fresh one.
//!
//! [`Transport`] is the seam: [`ProcessHelper`] speaks to a real child
//! process (any program that speaks the protocol, which is how the tests
//! drive it on Linux), and the tests replay recorded transcripts through
//! their own [`Transport`].

use crate::{BackendError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest reply line taken: a longer one is garbage.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How much of the helper's standard error is kept for messages.
const STDERR_KEPT: usize = 4096;

/// How long the helper may take to load the WSUS assembly and say ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One request to the helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: String,
    pub args: Value,
}

/// The error half of a reply: what the script caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The .NET exception's full type name.
    #[serde(rename = "type")]
    pub type_name: String,
    pub message: String,
}

/// One reply from the helper.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub ok: bool,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<RemoteError>,
}

/// The helper's first line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    error: Option<RemoteError>,
}

/// Why a helper call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the WSUS helper `{program}`: {message}")]
    Spawn { program: String, message: String },
    #[error("the WSUS helper could not start: {}: {}", .0.type_name, .0.message)]
    NotReady(RemoteError),
    #[error("the WSUS helper did not answer `{op}` within {after:?}; it was stopped")]
    Timeout { op: String, after: Duration },
    #[error("the WSUS helper exited during `{op}`{}", stderr_suffix(.stderr))]
    Exited { op: String, stderr: String },
    #[error(
        "the WSUS helper answered `{op}` with something unreadable ({problem}); it was stopped"
    )]
    Garbage { op: String, problem: String },
    #[error("{}: {}", .0.type_name, .0.message)]
    Remote(RemoteError),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

impl HelperError {
    /// The contract's error kind: a .NET exception by its type, the rest
    /// by what happened.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Spawn { .. } | Self::NotReady(_) => ErrorKind::Unsupported,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Exited { .. } | Self::Garbage { .. } => ErrorKind::Failed,
            Self::Remote(remote) => exception_kind(&remote.type_name),
        }
    }
}

impl From<HelperError> for BackendError {
    fn from(error: HelperError) -> Self {
        BackendError::new(error.kind(), error.to_string())
    }
}

/// The contract's error kind for a .NET exception thrown by the WSUS
/// administration API (or by the script's own checks, which throw the
/// same types).
pub fn exception_kind(type_name: &str) -> ErrorKind {
    let short = type_name.rsplit('.').next().unwrap_or(type_name);
    match short {
        "WsusObjectNotFoundException" | "ItemNotFoundException" | "FileNotFoundException" => {
            ErrorKind::NotFound
        }
        "UnauthorizedAccessException" | "SecurityException" => ErrorKind::Denied,
        // A replica refuses declines and approvals; a sync already running
        // refuses another.
        "InvalidOperationException" => ErrorKind::Conflict,
        "ArgumentException"
        | "ArgumentNullException"
        | "ArgumentOutOfRangeException"
        | "FormatException" => ErrorKind::InvalidArgument,
        "TimeoutException" => ErrorKind::Timeout,
        "NotSupportedException" | "PlatformNotSupportedException" => ErrorKind::Unsupported,
        _ => ErrorKind::Failed,
    }
}

/// A way to exchange one request for one reply.
pub trait Transport: Send + Sync {
    fn call(&self, op: &str, args: Value, timeout: Duration) -> Result<Value, HelperError>;
}

/// How to start the helper process.
#[derive(Debug, Clone)]
pub struct HelperCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl HelperCommand {
    /// Windows PowerShell 5.1 (`powershell.exe`, not `pwsh`: the
    /// UpdateServices module and the administration assembly do not work
    /// under PowerShell 7) running `script`. The script is constant text
    /// shipped in the binary, passed (without comment lines and
    /// indentation) as `-EncodedCommand` (UTF-16LE, base64), so standard
    /// input stays free for requests.
    pub fn windows_powershell(script: &str) -> Self {
        Self {
            program: windows_powershell_path(),
            args: [
                "-NoLogo",
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "Bypass",
                "-EncodedCommand",
            ]
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from(encode_command(&compact(script)))])
            .collect(),
        }
    }
}

/// Windows PowerShell 5.1 by its full path under `%SystemRoot%`, never
/// found by searching (the search starts in medic's own folder).
pub fn windows_powershell_path() -> PathBuf {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| "C:\\Windows".into());
    PathBuf::from(root)
        .join("System32")
        .join("WindowsPowerShell")
        .join("v1.0")
        .join("powershell.exe")
}

/// `script` without comment lines, blank lines and indentation, none of
/// which PowerShell needs: a command line holds at most 32 767
/// characters, and the encoding takes 8 for every 3 of the script.
pub fn compact(script: &str) -> String {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest command line Windows takes (`CreateProcessW`).
pub const MAX_COMMAND_LINE: usize = 32_767;

/// `script` as `-EncodedCommand` takes it: UTF-16LE, base64.
pub fn encode_command(script: &str) -> String {
    use ct_codecs::Encoder;
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    ct_codecs::Base64::encode_to_string(bytes).expect("base64 of a script fits in memory")
}

/// A running helper: its process, its input, and its output lines as a
/// reader thread delivers them.
struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Result<String, String>>,
    stderr: std::sync::Arc<Mutex<String>>,
}

impl Running {
    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper as a child process, started on first use and again after a
/// failure.
pub struct ProcessHelper {
    command: HelperCommand,
    start_timeout: Duration,
    max_line: usize,
    running: Mutex<Option<Running>>,
    next_id: Mutex<u64>,
    /// How many processes were started, for tests and logs.
    started: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ProcessHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessHelper")
            .field("program", &self.command.program)
            .finish_non_exhaustive()
    }
}

impl ProcessHelper {
    pub fn new(command: HelperCommand, start_timeout: Duration) -> Self {
        Self {
            command,
            start_timeout,
            max_line: MAX_LINE_BYTES,
            running: Mutex::new(None),
            next_id: Mutex::new(0),
            started: Default::default(),
        }
    }

    /// Take reply lines up to `bytes` long instead of [`MAX_LINE_BYTES`].
    pub fn with_max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// How many helper processes were started so far.
    pub fn starts(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn spawn(&self) -> Result<Running, HelperError> {
        let spawn_error = |e: std::io::Error| HelperError::Spawn {
            program: self.command.program.display().to_string(),
            message: e.to_string(),
        };
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            const CREATE_NO_WINDOW: u32 = 0x0800_0000;
            command.creation_flags(CREATE_NO_WINDOW);
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_error(std::io::Error::other("no pipes")));
        };
        let (sender, lines) = mpsc::channel();
        let max_line = self.max_line;
        std::thread::Builder::new()
            .name("wsus-helper-out".into())
            .spawn(move || read_lines(stdout, max_line, &sender))
            .map_err(spawn_error)?;
        let kept = std::sync::Arc::new(Mutex::new(String::new()));
        let sink = kept.clone();
        std::thread::Builder::new()
            .name("wsus-helper-err".into())
            .spawn(move || keep_tail(stderr, &sink))
            .map_err(spawn_error)?;
        let running = Running {
            child,
            stdin,
            lines,
            stderr: kept,
        };
        let line = match running.lines.recv_timeout(self.start_timeout) {
            Ok(Ok(line)) => line,
            Ok(Err(problem)) => {
                return Err(HelperError::Garbage {
                    op: "start".into(),
                    problem,
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(HelperError::Timeout {
                    op: "start".into(),
                    after: self.start_timeout,
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                let stderr = wait_for_stderr(&running);
                return Err(HelperError::Exited {
                    op: "start".into(),
                    stderr,
                });
            }
        };
        match serde_json::from_str::<Ready>(&line) {
            Ok(Ready { ready: true, .. }) => Ok(running),
            Ok(Ready {
                ready: false,
                error,
            }) => Err(HelperError::NotReady(error.unwrap_or(RemoteError {
                type_name: "Unknown".into(),
                message: "the helper is not ready".into(),
            }))),
            Err(e) => Err(HelperError::Garbage {
                op: "start".into(),
                problem: format!("{e}: {}", excerpt(&line)),
            }),
        }
    }

    fn exchange(
        running: &mut Running,
        request: &Request,
        timeout: Duration,
    ) -> Result<Value, HelperError> {
        let op = request.op.clone();
        let mut line = serde_json::to_string(request).map_err(|e| HelperError::Garbage {
            op: op.clone(),
            problem: format!("the request cannot be written: {e}"),
        })?;
        line.push('\n');
        let wrote = running
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| running.stdin.flush());
        if wrote.is_err() {
            return Err(HelperError::Exited {
                op,
                stderr: wait_for_stderr(running),
            });
        }
        let deadline = Instant::now() + timeout;
        let reply = match running
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Ok(line)) => line,
            Ok(Err(problem)) => return Err(HelperError::Garbage { op, problem }),
            Err(RecvTimeoutError::Timeout) => {
                return Err(HelperError::Timeout { op, after: timeout });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(HelperError::Exited {
                    op,
                    stderr: wait_for_stderr(running),
                });
            }
        };
        let reply: Reply = serde_json::from_str(&reply).map_err(|e| HelperError::Garbage {
            op: op.clone(),
            problem: format!("{e}: {}", excerpt(&reply)),
        })?;
        if reply.id != request.id {
            return Err(HelperError::Garbage {
                op,
                problem: format!("the reply is for request {}, not {}", reply.id, request.id),
            });
        }
        if reply.ok {
            Ok(reply.result)
        } else {
            Err(HelperError::Remote(reply.error.unwrap_or(RemoteError {
                type_name: "Unknown".into(),
                message: "the helper failed without saying why".into(),
            })))
        }
    }
}

impl Transport for ProcessHelper {
    fn call(&self, op: &str, args: Value, timeout: Duration) -> Result<Value, HelperError> {
        // One request at a time: the lock is held for the whole exchange.
        let mut slot = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(self.spawn()?);
        }
        let id = {
            let mut next = self
                .next_id
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *next += 1;
            *next
        };
        let request = Request {
            id,
            op: op.to_string(),
            args,
        };
        let running = slot.as_mut().expect("started above");
        let result = Self::exchange(running, &request, timeout);
        // A remote exception leaves the helper healthy; anything else
        // leaves it in an unknown state: stop it (dropping kills it).
        if matches!(&result, Err(e) if !matches!(e, HelperError::Remote(_))) {
            *slot = None;
        }
        result
    }
}

/// Deliver `stdout` line by line; a line longer than `max_line` bytes or
/// not UTF-8 ends the stream with the problem.
fn read_lines(stdout: impl Read, max_line: usize, sender: &mpsc::Sender<Result<String, String>>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(max_line as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > max_line {
            let _ = sender.send(Err(format!("a line longer than {max_line} bytes")));
            return;
        }
        let text = match String::from_utf8(line) {
            Ok(text) => text,
            Err(_) => {
                let _ = sender.send(Err("a line that is not UTF-8".into()));
                return;
            }
        };
        let text = text
            .trim_end_matches(['\r', '\n'])
            .trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        if sender.send(Ok(text.to_string())).is_err() {
            return;
        }
    }
}

/// Keep the last [`STDERR_KEPT`] bytes of `stderr`.
fn keep_tail(stderr: impl Read, kept: &Mutex<String>) {
    let mut reader = BufReader::new(stderr);
    let mut buffer = [0u8; 4096];
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            return;
        }
        let Ok(mut kept) = kept.lock() else { return };
        kept.push_str(&String::from_utf8_lossy(&buffer[..n]));
        if kept.len() > STDERR_KEPT {
            let mut cut = kept.len() - STDERR_KEPT;
            while !kept.is_char_boundary(cut) {
                cut += 1;
            }
            kept.drain(..cut);
        }
    }
}

/// The helper's last words: wait briefly for it to exit and its error
/// stream to drain.
fn wait_for_stderr(running: &Running) -> String {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && std::sync::Arc::strong_count(&running.stderr) > 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    running.stderr()
}

/// The start of a line, for messages.
fn excerpt(line: &str) -> String {
    let mut cut = line.len().min(200);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < line.len() {
        format!("{}…", &line[..cut])
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests;
