//! What a plugin writes to standard output and standard error (WASI's
//! `wasi:cli/stdout` and `stderr`, which Python's `print` and JavaScript's
//! `console.log` use, and where their runtimes write an uncaught
//! exception), kept within a budget and turned into the run's log lines.
//!
//! A stream keeps its first [`HEAD_BYTES`] and its last [`TAIL_BYTES`]:
//! what a plugin says first explains a run, and a traceback ends with the
//! error. What falls between is counted, never buffered, and a write never
//! fails, so a plugin that prints without end costs its own run's time,
//! not the agent's memory, and is not stopped for it.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes kept from the start of a stream.
pub const HEAD_BYTES: usize = 12 * 1024;
/// Bytes kept from the end of a stream.
pub const TAIL_BYTES: usize = 4 * 1024;
/// The most a guest may write in one call (what WASI streams allow).
const WRITE_PERMIT: usize = 64 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name a run's log gives the stream's lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// What one stream kept.
#[derive(Debug, Default)]
struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    /// Bytes written between head and tail, counted and dropped.
    skipped: u64,
}

impl Kept {
    fn write(&mut self, mut bytes: &[u8]) {
        let room = HEAD_BYTES - self.head.len();
        if room > 0 {
            let taken = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
        }
        if bytes.len() >= TAIL_BYTES {
            self.skipped += (self.tail.len() + bytes.len() - TAIL_BYTES) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - TAIL_BYTES..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.skipped += overflow as u64;
        self.tail.extend(bytes);
    }
}

/// One captured stream, shared between the WASI context that writes it
/// and the run that reads it at the end.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Kept>>);

impl Captured {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves bytes, not a broken
        // invariant: keep using them.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stream's lines, in order, with a line saying how many bytes were
    /// left out where the budget cut; a last line without its newline is a
    /// line too. Bytes that are not UTF-8 are replaced.
    pub fn lines(&self) -> Vec<String> {
        let kept = self.lock();
        let mut lines = Vec::new();
        let push_all = |bytes: &[u8], lines: &mut Vec<String>| {
            let text = String::from_utf8_lossy(bytes);
            lines.extend(
                text.split('\n')
                    .map(|line| line.trim_end_matches('\r').to_string()),
            );
            // The piece after the last newline is empty when the text ends
            // with one.
            if lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
        };
        push_all(&kept.head, &mut lines);
        if kept.skipped > 0 || !kept.tail.is_empty() {
            let (front, back) = kept.tail.as_slices();
            let tail = [front, back].concat();
            // A line cut by the budget starts the tail: keep what follows
            // its newline, if there is one.
            let tail = match (kept.skipped, tail.iter().position(|b| *b == b'\n')) {
                (0, _) => &tail[..],
                (_, Some(newline)) => &tail[newline + 1..],
                (_, None) => &tail[..],
            };
            if kept.skipped > 0 {
                lines.push(format!("[{} bytes left out]", kept.skipped));
            }
            push_all(tail, &mut lines);
        }
        lines
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        let kept = self.lock();
        kept.head.is_empty() && kept.tail.is_empty()
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.lock().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A run's standard output and standard error.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: Captured,
    pub stderr: Captured,
}

impl Output {
    /// What the plugin said last on standard error, as the runtime of an
    /// uncaught exception writes it before the trap:
    /// - componentize-py writes the Python traceback, then its own Rust
    ///   panic (`thread '…' panicked at …`, a message, a `note:`): the
    ///   traceback's exception line (`ValueError: boom`), or the panic's
    ///   message when there is no traceback;
    /// - StarlingMonkey (componentize-js) writes the error, `Stack:` and
    ///   indented frames, then `Redirecting call to abort() …`: the line
    ///   before `Stack:`;
    /// - otherwise the last line that is not blank and not indented.
    pub fn last_words(&self) -> Option<String> {
        let mut lines: Vec<String> = self
            .stderr
            .lines()
            .into_iter()
            .filter(|line| !line.trim().is_empty())
            .collect();
        while lines.last().is_some_and(|line| is_runtime_trailer(line)) {
            lines.pop();
        }
        if let Some(panic) = lines.iter().rposition(|line| is_rust_panic(line)) {
            let before = &lines[..panic];
            let traceback = before
                .iter()
                .rposition(|line| line.starts_with("Traceback (most recent call last)"));
            return match traceback {
                Some(start) => last_unindented(&before[start + 1..]),
                None => lines.get(panic + 1).cloned(),
            };
        }
        if let Some(stack) = lines.iter().rposition(|line| line.trim_end() == "Stack:")
            && stack > 0
        {
            return Some(lines[stack - 1].clone());
        }
        last_unindented(&lines)
    }
}

/// A line a language runtime adds after an error's own report.
fn is_runtime_trailer(line: &str) -> bool {
    line.starts_with("note: run with `RUST_BACKTRACE")
        || line.starts_with("Redirecting call to abort()")
}

/// The first line of a Rust panic's report.
fn is_rust_panic(line: &str) -> bool {
    line.starts_with("thread '") && line.contains("' panicked at ")
        || line.contains(") panicked at ")
}

/// The last line not indented (a frame is).
fn last_unindented(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .rev()
        .find(|line| !line.starts_with([' ', '\t']))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(chunks: &[&[u8]]) -> Captured {
        let captured = Captured::default();
        for chunk in chunks {
            captured.lock().write(chunk);
        }
        captured
    }

    #[test]
    fn lines_come_back_whole_across_writes() {
        let captured = written(&[b"one\ntw", b"o\r\nthree"]);
        assert_eq!(captured.lines(), ["one", "two", "three"]);
        assert!(written(&[]).lines().is_empty());
        assert!(written(&[]).is_empty());
    }

    #[test]
    fn a_flood_keeps_its_head_and_tail_and_counts_the_rest() {
        let mut captured = Captured::default();
        let line = b"0123456789abcdef0123456789abcdef0123456789abcdef012345678\n";
        let mut total = 0u64;
        for _ in 0..100_000 {
            OutputStream::write(&mut captured, Bytes::from_static(line)).unwrap();
            total += line.len() as u64;
            assert_eq!(captured.check_write().unwrap(), WRITE_PERMIT);
        }
        OutputStream::write(&mut captured, Bytes::from_static(b"Error: the last words")).unwrap();
        total += 21;
        let kept = captured.lock();
        assert_eq!(kept.head.len(), HEAD_BYTES);
        assert_eq!(kept.tail.len(), TAIL_BYTES);
        assert_eq!(
            kept.skipped + (HEAD_BYTES + TAIL_BYTES) as u64,
            total,
            "every byte is kept or counted"
        );
        drop(kept);
        let lines = captured.lines();
        assert_eq!(lines.last().unwrap(), "Error: the last words");
        let marker = lines.iter().position(|l| l.ends_with("bytes left out]"));
        let marker = marker.expect("the cut is marked");
        // The tail starts at a whole line.
        assert_eq!(lines[marker + 1].as_bytes(), &line[..line.len() - 1]);
    }

    #[test]
    fn one_huge_write_is_cut_the_same_way() {
        let mut big = vec![b'x'; 1 << 20];
        big.extend_from_slice(b"\nlast line\n");
        let captured = written(&[&big]);
        let lines = captured.lines();
        assert_eq!(lines.last().unwrap(), "last line");
        assert!(lines.iter().any(|l| l.ends_with("bytes left out]")));
        let kept = captured.lock();
        assert_eq!(kept.skipped as usize + HEAD_BYTES + TAIL_BYTES, big.len());
    }

    /// Standard error as the runtimes write it (componentize-py 0.25,
    /// componentize-js 0.23 on StarlingMonkey).
    fn last_words_of(stderr: &str) -> Option<String> {
        let output = Output::default();
        output.stderr.lock().write(stderr.as_bytes());
        output.last_words()
    }

    #[test]
    fn the_last_words_are_the_exception_not_the_runtimes_trailer() {
        let python = "Traceback (most recent call last):\n  File \"/0/app.py\", line 21, in handle\nValueError: boom from python\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            last_words_of(python).unwrap(),
            "ValueError: boom from python"
        );
        let python_host_error = "a warning first\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1494:89:\ncalled `Result::unwrap()` on an `Err` value: PyErr { type: <class 'TypeError'> }\nnote: run with `RUST_BACKTRACE=1` ...\n";
        assert!(
            last_words_of(python_host_error)
                .unwrap()
                .starts_with("called `Result::unwrap()`")
        );
        let javascript = "describe blew up\nStack:\n  describe@app.js:2:22\n  @app.js:9:1\n\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(last_words_of(javascript).unwrap(), "describe blew up");
        let plain =
            "Traceback (most recent call last):\n  File \"app.py\", line 3\nValueError: boom\n\n";
        assert_eq!(last_words_of(plain).unwrap(), "ValueError: boom");
        let frames = "Error: boom\n    at handle (app.js:3:9)\n\tat main\n";
        assert_eq!(last_words_of(frames).unwrap(), "Error: boom");
        assert_eq!(Output::default().last_words(), None);
        assert_eq!(last_words_of("note: run with `RUST_BACKTRACE=1`\n"), None);
    }
}
