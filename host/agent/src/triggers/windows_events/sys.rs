//! The Windows calls behind a channel source, kept thin: every decision is
//! [`ChannelReader`]'s.
//!
//! A pull subscription (`EvtSubscribe` with a signal event) is opened when
//! the trigger starts, so that a channel that does not exist or may not be
//! read fails the start. A thread then waits on the signal and takes the
//! events in batches (`EvtNext`); each is rendered as XML
//! (`EvtRender(EvtRenderEventXml)`), its message formatted with its
//! publisher's metadata (`EvtOpenPublisherMetadata`,
//! `EvtFormatMessage(EvtFormatMessageEvent)`; a publisher without metadata
//! here gives no message), and the bookmark moved past it
//! (`EvtUpdateBookmark`). After each batch the events taken, then the
//! bookmark (`EvtRender(EvtRenderBookmark)`), go to the task the trigger
//! set holds, which hands them to the dispatcher. When that task is
//! stopped, the thread sees its channel closed within [`WAIT`] and ends,
//! closing every handle. A subscription that fails while read (a log
//! cleared under it) is opened again from the bookmark after [`RETRY`].

use super::{ChannelQuery, ChannelReader, StartError};
use crate::triggers::{EventSink, Intake};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_EVT_CHANNEL_NOT_FOUND, ERROR_EVT_INVALID_QUERY,
    ERROR_EVT_MAX_INSERTS_REACHED, ERROR_EVT_UNRESOLVED_PARAMETER_INSERT,
    ERROR_EVT_UNRESOLVED_VALUE_INSERT, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_OPERATION,
    ERROR_NO_MORE_ITEMS, GetLastError, HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::EventLog::{
    EVT_HANDLE, EvtClose, EvtCreateBookmark, EvtFormatMessage, EvtFormatMessageEvent, EvtNext,
    EvtOpenPublisherMetadata, EvtRender, EvtRenderBookmark, EvtRenderEventXml, EvtSubscribe,
    EvtSubscribeStartAfterBookmark, EvtSubscribeToFutureEvents, EvtUpdateBookmark,
};
use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, WaitForSingleObject};

/// Events taken at a time.
const BATCH: usize = 16;

/// The longest wait for the signal: how soon a stopped trigger's thread
/// ends.
const WAIT: Duration = Duration::from_millis(500);

/// How long after a failed read the subscription is opened again.
const RETRY: Duration = Duration::from_secs(5);

/// Publishers whose metadata is kept open at most.
const MAX_PUBLISHERS: usize = 64;

/// What the thread hands the task before it blocks.
const QUEUE: usize = 4 * BATCH;

/// An event log handle, closed when dropped.
#[derive(Debug)]
struct EvtHandle(EVT_HANDLE);

impl EvtHandle {
    /// The handle a call returned, or the error it set.
    fn checked(raw: EVT_HANDLE) -> Result<Self, u32> {
        if raw == 0 {
            Err(last_error())
        } else {
            Ok(Self(raw))
        }
    }
}

impl Drop for EvtHandle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned by an Evt* call, is not 0, and is
        // owned by this guard alone, so it is closed once.
        unsafe { EvtClose(self.0) };
    }
}

/// A Win32 event object, closed when dropped.
#[derive(Debug)]
struct Signal(HANDLE);

// SAFETY: a kernel event handle may be waited on, reset and closed from
// any thread; the guard owns it alone.
unsafe impl Send for Signal {}

impl Signal {
    /// A manual-reset event, set at first so that the first wait reads
    /// what is already there.
    fn new() -> Result<Self, u32> {
        // SAFETY: no security attributes and no name are valid arguments.
        let raw = unsafe { CreateEventW(std::ptr::null(), 1, 1, std::ptr::null()) };
        if raw.is_null() {
            Err(last_error())
        } else {
            Ok(Self(raw))
        }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateEventW and is owned by this
        // guard alone.
        unsafe { CloseHandle(self.0) };
    }
}

fn last_error() -> u32 {
    // SAFETY: reads the calling thread's last error; no preconditions.
    unsafe { GetLastError() }
}

/// `text` as a NUL-terminated UTF-16 string.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// UTF-16 up to its first NUL.
fn from_wide(buffer: &[u16]) -> String {
    let end = buffer.iter().position(|c| *c == 0).unwrap_or(buffer.len());
    String::from_utf16_lossy(&buffer[..end])
}

/// What a failed subscription means, in words.
fn subscribe_failure(code: u32, query: &ChannelQuery) -> String {
    let what = match code {
        ERROR_EVT_CHANNEL_NOT_FOUND => "no such channel on this system",
        ERROR_ACCESS_DENIED => "access denied (the agent's account may not read this channel)",
        ERROR_EVT_INVALID_QUERY => "the query was refused",
        _ => "EvtSubscribe failed",
    };
    format!("{what} (Windows error {code}); query: {}", query.text())
}

/// An open subscription and the bookmark of what it has read. The fields
/// drop in order: the subscription is closed before the signal it sets.
#[derive(Debug)]
struct Subscription {
    handle: EvtHandle,
    bookmark: EvtHandle,
    signal: Signal,
    /// The bookmark points at an event (loaded, or moved past one): an
    /// empty one must not be subscribed after, which would start from the
    /// oldest event of the channel.
    positioned: bool,
}

impl Subscription {
    /// Subscribe after `saved` (a rendered bookmark), or to the events to
    /// come when there is none or it cannot be read.
    fn open(query: &ChannelQuery, saved: Option<&str>) -> Result<Self, String> {
        let from_saved = saved.and_then(|xml| {
            let xml = wide(xml);
            // SAFETY: `xml` is NUL-terminated and outlives the call.
            match EvtHandle::checked(unsafe { EvtCreateBookmark(xml.as_ptr()) }) {
                Ok(bookmark) => Some(bookmark),
                Err(code) => {
                    tracing::warn!(
                        channel = query.channel(),
                        "the saved bookmark cannot be read (Windows error {code}): reading the events to come"
                    );
                    None
                }
            }
        });
        let resumes = from_saved.is_some();
        let bookmark = match from_saved {
            Some(bookmark) => bookmark,
            // SAFETY: a null bookmark XML asks for an empty bookmark.
            None => EvtHandle::checked(unsafe { EvtCreateBookmark(std::ptr::null()) })
                .map_err(|code| format!("EvtCreateBookmark failed (Windows error {code})"))?,
        };
        let signal =
            Signal::new().map_err(|code| format!("CreateEvent failed (Windows error {code})"))?;
        let channel = wide(query.channel());
        let text = wide(query.text());
        // A structured query names its channel itself.
        let channel_path = if query.is_structured() {
            std::ptr::null()
        } else {
            channel.as_ptr()
        };
        let (start_after, flags) = if resumes {
            (bookmark.0, EvtSubscribeStartAfterBookmark)
        } else {
            (0, EvtSubscribeToFutureEvents)
        };
        // SAFETY: the strings are NUL-terminated and outlive the call, the
        // signal and bookmark handles are open, and with no callback and no
        // context the subscription only sets the signal.
        let raw = unsafe {
            EvtSubscribe(
                0,
                signal.0,
                channel_path,
                text.as_ptr(),
                start_after,
                std::ptr::null(),
                None,
                flags,
            )
        };
        let handle = EvtHandle::checked(raw).map_err(|code| subscribe_failure(code, query))?;
        Ok(Self {
            handle,
            bookmark,
            signal,
            positioned: resumes,
        })
    }

    /// The bookmark, rendered.
    fn rendered_bookmark(&self) -> Result<String, u32> {
        render(&self.bookmark, EvtRenderBookmark)
    }
}

/// `EvtRender` of an event or a bookmark as XML.
fn render(fragment: &EvtHandle, flags: u32) -> Result<String, u32> {
    let (mut used, mut properties) = (0u32, 0u32);
    // SAFETY: a null buffer of size 0 only asks for the size needed.
    let sized = unsafe {
        EvtRender(
            0,
            fragment.0,
            flags,
            0,
            std::ptr::null_mut(),
            &mut used,
            &mut properties,
        )
    };
    if sized == 0 && last_error() != ERROR_INSUFFICIENT_BUFFER {
        return Err(last_error());
    }
    let mut buffer = vec![0u16; (used as usize).div_ceil(2)];
    let bytes = u32::try_from(buffer.len() * 2).map_err(|_| ERROR_INSUFFICIENT_BUFFER)?;
    // SAFETY: the buffer holds `bytes` bytes, as the call is told.
    let rendered = unsafe {
        EvtRender(
            0,
            fragment.0,
            flags,
            bytes,
            buffer.as_mut_ptr().cast(),
            &mut used,
            &mut properties,
        )
    };
    if rendered == 0 {
        return Err(last_error());
    }
    Ok(from_wide(&buffer))
}

/// The event's message, formatted with its publisher's metadata; none
/// when there is none to format with. A message with inserts left
/// unresolved is still a message.
fn format_message(metadata: &EvtHandle, event: &EvtHandle) -> Option<String> {
    let mut used = 0u32;
    // SAFETY: a null buffer of size 0 only asks for the size needed (in
    // characters).
    let sized = unsafe {
        EvtFormatMessage(
            metadata.0,
            event.0,
            0,
            0,
            std::ptr::null(),
            EvtFormatMessageEvent,
            0,
            std::ptr::null_mut(),
            &mut used,
        )
    };
    if sized != 0 || last_error() != ERROR_INSUFFICIENT_BUFFER {
        return None;
    }
    let mut buffer = vec![0u16; used as usize];
    // SAFETY: the buffer holds `used` characters, as the call is told.
    let formatted = unsafe {
        EvtFormatMessage(
            metadata.0,
            event.0,
            0,
            0,
            std::ptr::null(),
            EvtFormatMessageEvent,
            used,
            buffer.as_mut_ptr(),
            &mut used,
        )
    };
    // An insert that cannot be resolved still leaves a usable message.
    let partial = matches!(
        last_error(),
        ERROR_EVT_UNRESOLVED_VALUE_INSERT
            | ERROR_EVT_UNRESOLVED_PARAMETER_INSERT
            | ERROR_EVT_MAX_INSERTS_REACHED
    );
    (formatted != 0 || partial).then(|| from_wide(&buffer))
}

/// The metadata of the publishers met, opened once each (none for one
/// this system has no metadata for).
#[derive(Debug, Default)]
struct Publishers(HashMap<String, Option<EvtHandle>>);

impl Publishers {
    fn metadata(&mut self, provider: &str) -> Option<&EvtHandle> {
        if !self.0.contains_key(provider) && self.0.len() >= MAX_PUBLISHERS {
            self.0.clear();
        }
        self.0
            .entry(provider.to_string())
            .or_insert_with(|| {
                let name = wide(provider);
                // SAFETY: `name` is NUL-terminated and outlives the call; a
                // local session, no log file, the thread's locale.
                let raw =
                    unsafe { EvtOpenPublisherMetadata(0, name.as_ptr(), std::ptr::null(), 0, 0) };
                EvtHandle::checked(raw).ok()
            })
            .as_ref()
    }
}

/// How a pass over the waiting events ended.
enum Drained {
    /// None left.
    Empty,
    /// The task is gone: stop.
    Stopped,
}

/// Take every waiting event; after each batch, its events and then the
/// bookmark past them go to `out`.
fn drain(
    reader: &mut ChannelReader,
    subscription: &mut Subscription,
    publishers: &mut Publishers,
    out: &mpsc::Sender<Intake>,
) -> Result<Drained, u32> {
    // Reset before reading: an event that comes meanwhile sets it again.
    // SAFETY: the signal handle is open.
    unsafe { ResetEvent(subscription.signal.0) };
    loop {
        let mut raw: [EVT_HANDLE; BATCH] = [0; BATCH];
        let mut returned = 0u32;
        // SAFETY: `raw` has room for BATCH handles, as the call is told.
        let taken = unsafe {
            EvtNext(
                subscription.handle.0,
                BATCH as u32,
                raw.as_mut_ptr(),
                0,
                0,
                &mut returned,
            )
        };
        if taken == 0 {
            return match last_error() {
                ERROR_NO_MORE_ITEMS => Ok(Drained::Empty),
                // What a pull subscription with nothing waiting answers a
                // call that does not wait (as other readers of it note).
                ERROR_INVALID_OPERATION if returned == 0 => Ok(Drained::Empty),
                code => Err(code),
            };
        }
        let events: Vec<EvtHandle> = raw[..(returned as usize).min(BATCH)]
            .iter()
            .map(|h| EvtHandle(*h))
            .collect();
        for event in &events {
            // SAFETY: both handles are open.
            if unsafe { EvtUpdateBookmark(subscription.bookmark.0, event.0) } != 0 {
                subscription.positioned = true;
            } else {
                tracing::warn!(
                    plugin = reader.plugin(),
                    channel = reader.query().channel(),
                    "cannot move the bookmark (Windows error {})",
                    last_error()
                );
            }
            let xml = match render(event, EvtRenderEventXml) {
                Ok(xml) => xml,
                Err(code) => {
                    tracing::warn!(
                        plugin = reader.plugin(),
                        channel = reader.query().channel(),
                        "an event cannot be rendered (Windows error {code}): skipped"
                    );
                    continue;
                }
            };
            let Some(parsed) = reader.parse(&xml) else {
                continue;
            };
            let message = publishers
                .metadata(&parsed.provider)
                .and_then(|metadata| format_message(metadata, event));
            if let Some(intake) = reader.intake(parsed, message.as_deref())
                && out.blocking_send(intake).is_err()
            {
                return Ok(Drained::Stopped);
            }
        }
        match subscription.rendered_bookmark() {
            Ok(bookmark) => {
                if out.blocking_send(reader.bookmark(bookmark)).is_err() {
                    return Ok(Drained::Stopped);
                }
            }
            Err(code) => tracing::warn!(
                plugin = reader.plugin(),
                channel = reader.query().channel(),
                "cannot render the bookmark (Windows error {code}); it is saved after the next batch"
            ),
        }
    }
}

/// The thread: wait, drain, until the task is gone.
fn run(mut reader: ChannelReader, mut subscription: Subscription, out: mpsc::Sender<Intake>) {
    let mut publishers = Publishers::default();
    let wait_ms = WAIT.as_millis() as u32;
    while !out.is_closed() {
        // SAFETY: the signal handle is open.
        let woke = unsafe { WaitForSingleObject(subscription.signal.0, wait_ms) };
        if woke == WAIT_TIMEOUT {
            continue;
        }
        let failed = if woke == WAIT_OBJECT_0 {
            match drain(&mut reader, &mut subscription, &mut publishers, &out) {
                Ok(Drained::Empty) => continue,
                Ok(Drained::Stopped) => return,
                Err(code) => format!("reading failed (Windows error {code})"),
            }
        } else {
            format!("waiting failed (Windows error {})", last_error())
        };
        tracing::warn!(
            plugin = reader.plugin(),
            channel = reader.query().channel(),
            "{failed}; subscribing again from the bookmark in {}s",
            RETRY.as_secs()
        );
        let saved = subscription
            .positioned
            .then(|| subscription.rendered_bookmark().ok())
            .flatten();
        loop {
            std::thread::sleep(RETRY);
            if out.is_closed() {
                return;
            }
            match Subscription::open(reader.query(), saved.as_deref()) {
                Ok(again) => {
                    subscription = again;
                    break;
                }
                Err(e) => tracing::warn!(
                    plugin = reader.plugin(),
                    channel = reader.query().channel(),
                    "cannot subscribe again: {e}"
                ),
            }
        }
    }
}

/// Open the subscription (a failure fails the start), then follow it on a
/// thread of its own, handing what it reads to the returned task.
pub(super) fn follow(
    reader: ChannelReader,
    bookmark: Option<String>,
    sink: EventSink,
) -> Result<JoinHandle<()>, StartError> {
    let subscription =
        Subscription::open(reader.query(), bookmark.as_deref()).map_err(StartError::System)?;
    let (out, mut from_thread) = mpsc::channel::<Intake>(QUEUE);
    let plugin = reader.plugin().to_string();
    let channel = reader.query().channel().to_string();
    std::thread::Builder::new()
        .name(format!("event-log {channel}"))
        .spawn(move || run(reader, subscription, out))
        .map_err(|e| StartError::System(format!("cannot start a thread: {e}")))?;
    Ok(tokio::spawn(async move {
        while let Some(intake) = from_thread.recv().await {
            if sink.send(intake).await.is_err() {
                return;
            }
        }
        tracing::warn!(plugin = %plugin, channel = %channel, "stopped reading the channel");
    }))
}
