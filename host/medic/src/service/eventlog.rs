//! The Application event log, where a Windows administrator looks first:
//! the service's own event source (registered at install with Windows'
//! `EventCreate.exe` as its message file, whose event ids 1 to 1000 show
//! their text as given), and a `tracing` writer that reports each log line
//! as one event of the matching type.

use anyhow::{Result, bail};
use std::io::Write;
use std::sync::Arc;
use tracing::Level;
use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_SUCCESS, HANDLE};
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    REPORT_EVENT_TYPE, RegisterEventSourceW, ReportEventW,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_SET_VALUE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
    RegCloseKey, RegCreateKeyExW, RegDeleteKeyW, RegSetValueExW,
};

/// The event id medic's events carry (EventCreate.exe's range is 1-1000).
const EVENT_ID: u32 = 1;

/// The longest message an event takes, in UTF-16 units.
const MAX_MESSAGE: usize = 31_839;

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

fn source_key(name: &str) -> Vec<u16> {
    wide(&format!(
        r"SYSTEM\CurrentControlSet\Services\EventLog\Application\{name}"
    ))
}

/// Register `name` as an Application event source.
pub fn register_source(name: &str) -> Result<()> {
    let key = source_key(name);
    let mut handle: HKEY = std::ptr::null_mut();
    // SAFETY: `key` is NUL-terminated UTF-16; `handle` receives the opened
    // key, closed below.
    let status = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            std::ptr::null(),
            &mut handle,
            std::ptr::null_mut(),
        )
    };
    if status != ERROR_SUCCESS {
        bail!("cannot register the event source `{name}`: Windows error {status}");
    }
    let message_file = wide(r"%SystemRoot%\System32\EventCreate.exe");
    let types: u32 =
        (EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE) as u32;
    let (file_name, types_name) = (wide("EventMessageFile"), wide("TypesSupported"));
    // SAFETY: `handle` is the open key; each value's data pointer and byte
    // length describe a live buffer of that size.
    let statuses = unsafe {
        let file = RegSetValueExW(
            handle,
            file_name.as_ptr(),
            0,
            REG_EXPAND_SZ,
            message_file.as_ptr().cast(),
            (message_file.len() * 2) as u32,
        );
        let kinds = RegSetValueExW(
            handle,
            types_name.as_ptr(),
            0,
            REG_DWORD,
            (&types as *const u32).cast(),
            4,
        );
        RegCloseKey(handle);
        [file, kinds]
    };
    if let Some(status) = statuses.into_iter().find(|s| *s != ERROR_SUCCESS) {
        bail!("cannot register the event source `{name}`: Windows error {status}");
    }
    Ok(())
}

/// Remove the event source `name`; one already gone is fine.
pub fn unregister_source(name: &str) -> Result<()> {
    let key = source_key(name);
    // SAFETY: `key` is NUL-terminated UTF-16.
    let status = unsafe { RegDeleteKeyW(HKEY_LOCAL_MACHINE, key.as_ptr()) };
    if status != ERROR_SUCCESS && status != ERROR_FILE_NOT_FOUND {
        bail!("cannot remove the event source `{name}`: Windows error {status}");
    }
    Ok(())
}

/// An open event source.
struct Source(HANDLE);

// SAFETY: an event source handle may be used from any thread; ReportEventW
// is documented as thread-safe and the handle is only closed on drop.
unsafe impl Send for Source {}
// SAFETY: as above.
unsafe impl Sync for Source {}

impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: the handle came from RegisterEventSourceW and is
        // deregistered once, here.
        unsafe {
            DeregisterEventSource(self.0);
        }
    }
}

impl Source {
    fn open(name: &str) -> Result<Self> {
        let name = wide(name);
        // SAFETY: a null server name means this machine; `name` is
        // NUL-terminated UTF-16.
        let handle = unsafe { RegisterEventSourceW(std::ptr::null(), name.as_ptr()) };
        if handle.is_null() {
            bail!(
                "cannot open the event source: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self(handle))
    }

    fn report(&self, kind: REPORT_EVENT_TYPE, message: &str) {
        let mut text: Vec<u16> = message
            .trim_end()
            .encode_utf16()
            .take(MAX_MESSAGE)
            .collect();
        text.push(0);
        let strings = [text.as_ptr()];
        // SAFETY: the handle is open; one NUL-terminated string is passed
        // and no raw data.
        unsafe {
            ReportEventW(
                self.0,
                kind,
                0,
                EVENT_ID,
                std::ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                std::ptr::null(),
            );
        }
    }
}

/// Report one error event, for failures before logging is set up.
pub fn report_error(name: &str, message: &str) {
    if let Ok(source) = Source::open(name) {
        source.report(EVENTLOG_ERROR_TYPE, message);
    }
}

/// A `tracing` writer: each log line becomes one event.
#[derive(Clone)]
pub struct EventLogWriter {
    source: Arc<Source>,
}

impl EventLogWriter {
    pub fn open(name: &str) -> Result<Self> {
        Ok(Self {
            source: Arc::new(Source::open(name)?),
        })
    }
}

/// One log line on its way to the event log, reported when dropped.
pub struct EventWriter {
    source: Arc<Source>,
    kind: REPORT_EVENT_TYPE,
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.source
                .report(self.kind, &String::from_utf8_lossy(&self.line));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EventLogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            source: self.source.clone(),
            kind: EVENTLOG_INFORMATION_TYPE,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let kind = match *meta.level() {
            Level::ERROR => EVENTLOG_ERROR_TYPE,
            Level::WARN => EVENTLOG_WARNING_TYPE,
            _ => EVENTLOG_INFORMATION_TYPE,
        };
        EventWriter {
            source: self.source.clone(),
            kind,
            line: Vec::new(),
        }
    }
}
