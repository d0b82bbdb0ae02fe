//! `types`: events, outcomes, capabilities and errors of 0.1.0.

use super::bindings::medic::plugin::types as wit;
use crate::contract::convert::{Convert, convert_enum, convert_record};
use crate::event::{ActionRecord, EventKind, EventRecord, OutcomeRecord, Status};
use crate::host::RunState;
use crate::host::grants::Capability;
use crate::host::wsus;
use crate::info::{PluginInfo, TriggerHint};
use medic_backends::{BackendError, ErrorKind};

impl wit::Host for RunState {}

convert_enum!(
    EventKind,
    wit::EventKind {
        FileChanged,
        LogLine,
        SystemEvent,
        Schedule,
        Startup,
        Manual
    }
);
convert_enum!(
    Status,
    wit::Status {
        Healthy,
        Remediated,
        Failed,
        NeedsApproval
    }
);
convert_record!(
    ActionRecord,
    wit::Action {
        verb,
        target,
        detail,
        applied
    }
);
convert_record!(
    OutcomeRecord,
    wit::Outcome {
        status,
        summary,
        actions
    }
);
convert_enum!(
    ErrorKind,
    wit::ErrorKind {
        Denied,
        NotFound,
        InvalidArgument,
        Unsupported,
        Conflict,
        Timeout,
        Failed
    }
);
convert_record!(BackendError, wit::Error { kind, message });

impl Convert<wit::Event> for EventRecord {
    fn convert(self) -> wit::Event {
        wit::Event {
            id: self.id,
            kind: self.kind.convert(),
            source: self.source,
            time_ms: self.time_ms,
            subject: self.subject,
            fields: self.fields.into_iter().collect(),
        }
    }
}

impl Convert<Capability> for wit::Capability {
    fn convert(self) -> Capability {
        match self {
            Self::FsRead => Capability::FsRead,
            Self::FsWrite => Capability::FsWrite,
            Self::ServicesRead => Capability::ServicesRead,
            Self::ServicesControl => Capability::ServicesControl,
            Self::WsusRead => Capability::Operation(wsus::READ),
            Self::WsusUpdates => Capability::Operation(wsus::UPDATES),
            Self::WsusApprovals => Capability::Operation(wsus::APPROVALS),
            Self::WsusConfigure => Capability::Operation(wsus::CONFIGURE),
            Self::WsusSync => Capability::Operation(wsus::SYNC),
        }
    }
}

impl Convert<TriggerHint> for wit::TriggerHint {
    fn convert(self) -> TriggerHint {
        match self {
            Self::File(path) => TriggerHint::File(path),
            Self::LogLine(pattern) => TriggerHint::LogLine(pattern),
            Self::SystemEvent(m) => TriggerHint::SystemEvent {
                source: m.source,
                id: m.id,
            },
            Self::Every(seconds) => TriggerHint::Every(seconds),
            Self::Startup => TriggerHint::Startup,
            Self::Manual => TriggerHint::Manual,
        }
    }
}

impl Convert<PluginInfo> for wit::PluginInfo {
    fn convert(self) -> PluginInfo {
        PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            capabilities: self.capabilities.convert(),
            triggers: self.triggers.convert(),
        }
    }
}
