//! The interfaces that are the same in several contract versions (their
//! WIT unchanged, their generated types distinct): each macro writes one
//! interface's conversions and host implementation into the version module
//! it is invoked in. The invoking file imports the version's interface as
//! `wit` and its error type as `Error`, then invokes the macro.

/// `fs`: see the module header.
macro_rules! fs_interface {
    () => {
        use crate::contract::convert::{Convert, convert_enum, convert_record, result};
        use crate::host::RunState;
        use medic_backends::fs::{
            AccessChange, AccessEntry, AccessReport, AccessRight, EntryKind, FileInfo,
        };

        convert_enum!(
            EntryKind,
            wit::EntryKind {
                File,
                Directory,
                Symlink,
                Other
            }
        );
        convert_record!(
            FileInfo,
            wit::FileInfo {
                path,
                kind,
                size,
                modified_ms,
                owner
            }
        );
        convert_enum!(
            AccessRight,
            wit::AccessRight {
                Read,
                Modify,
                FullControl
            }
        );
        convert_record!(
            AccessEntry,
            wit::AccessEntry {
                principal,
                right,
                raw
            }
        );
        convert_record!(
            AccessChange,
            wit::AccessChange {
                path,
                before,
                after
            }
        );
        // The paths a repair skipped are the host's to record; the
        // contract reports what was checked and changed.
        impl Convert<wit::AccessReport> for AccessReport {
            fn convert(self) -> wit::AccessReport {
                wit::AccessReport {
                    checked: self.checked,
                    changed: self.changed.convert(),
                    applied: self.applied,
                }
            }
        }

        impl wit::Host for RunState {
            fn stat(&mut self, path: String) -> wasmtime::Result<Result<wit::FileInfo, Error>> {
                Ok(result(self.fs_stat(path)?))
            }

            fn list_dir(
                &mut self,
                path: String,
            ) -> wasmtime::Result<Result<Vec<wit::FileInfo>, Error>> {
                Ok(result(self.fs_list_dir(path)?))
            }

            fn read_access(
                &mut self,
                path: String,
            ) -> wasmtime::Result<Result<Vec<wit::AccessEntry>, Error>> {
                Ok(result(self.fs_read_access(path)?))
            }

            fn read_file(
                &mut self,
                path: String,
                max_bytes: u32,
            ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
                Ok(result(self.fs_read_file(path, max_bytes)?))
            }

            fn ensure_access(
                &mut self,
                path: String,
                principal: String,
                right: wit::AccessRight,
                recursive: bool,
            ) -> wasmtime::Result<Result<wit::AccessReport, Error>> {
                Ok(result(self.fs_ensure_access(
                    path,
                    principal,
                    right.convert(),
                    recursive,
                )?))
            }
        }
    };
}

/// `config` since 0.2.0: settings typed as the policy writes them.
macro_rules! config_interface {
    () => {
        use crate::host::RunState;
        use crate::settings::SettingValue;

        fn value(setting: SettingValue) -> wit::Value {
            match setting {
                SettingValue::Text(text) => wit::Value::Text(text),
                SettingValue::Integer(n) => wit::Value::Integer(n),
                SettingValue::Boolean(b) => wit::Value::Boolean(b),
                SettingValue::TextList(items) => wit::Value::TextList(items),
            }
        }

        impl wit::Host for RunState {
            fn get(&mut self, key: String) -> wasmtime::Result<Option<wit::Value>> {
                Ok(self.settings.get(&key).cloned().map(value))
            }

            fn all(&mut self) -> wasmtime::Result<Vec<(String, wit::Value)>> {
                Ok(self
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), value(v.clone())))
                    .collect())
            }
        }
    };
}

/// `log` since 0.2.0, with the plugin's word that it panicked.
macro_rules! log_interface {
    () => {
        use crate::contract::convert::{Convert, convert_enum};
        use crate::host::RunState;
        use crate::host::log::Level;

        convert_enum!(
            Level,
            wit::Level {
                Trace,
                Debug,
                Info,
                Warn,
                Error
            }
        );

        impl wit::Host for RunState {
            fn log(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
                RunState::log(self, level.convert(), message);
                Ok(())
            }

            fn panicked(&mut self, message: String) -> wasmtime::Result<()> {
                RunState::panicked(self, message);
                Ok(())
            }
        }
    };
}

/// `services`: see the module header.
/// Before 0.3.0 a service had no `failed` state and no delayed-automatic
/// start: a plugin built for those versions sees them as `stopped` and
/// `automatic`. Before 0.4.0 there was no `broken` state (seen as
/// `failed`, or `stopped` before 0.3.0), no startups that hold until the
/// next boot (seen as automatic or disabled), no `static`, `indirect` and
/// `generated` units (seen as manual: something else starts them), and a
/// status did not say why a service failed (its problem is left out).
/// Since 0.4.0 every value converts one to one.
macro_rules! services_interface {
    (before_0_3_0) => {
        impl Convert<wit::ServiceState> for ServiceState {
            fn convert(self) -> wit::ServiceState {
                match self {
                    Self::Stopped | Self::Failed | Self::Broken => wit::ServiceState::Stopped,
                    Self::StartPending => wit::ServiceState::StartPending,
                    Self::StopPending => wit::ServiceState::StopPending,
                    Self::Running => wit::ServiceState::Running,
                    Self::Paused => wit::ServiceState::Paused,
                }
            }
        }
        impl Convert<wit::StartupType> for StartupType {
            fn convert(self) -> wit::StartupType {
                match self {
                    Self::Automatic | Self::AutomaticDelayed | Self::AutomaticUntilReboot => {
                        wit::StartupType::Automatic
                    }
                    Self::Manual | Self::Static | Self::Indirect | Self::Generated => {
                        wit::StartupType::Manual
                    }
                    Self::Disabled | Self::DisabledUntilReboot => wit::StartupType::Disabled,
                }
            }
        }
        impl Convert<StartupType> for wit::StartupType {
            fn convert(self) -> StartupType {
                match self {
                    Self::Automatic => StartupType::Automatic,
                    Self::Manual => StartupType::Manual,
                    Self::Disabled => StartupType::Disabled,
                }
            }
        }
        crate::contract::interfaces::services_interface!(@status_without_problem);
        crate::contract::interfaces::services_interface!(@common);
    };
    (since_0_3_0) => {
        impl Convert<wit::ServiceState> for ServiceState {
            fn convert(self) -> wit::ServiceState {
                match self {
                    Self::Stopped => wit::ServiceState::Stopped,
                    Self::StartPending => wit::ServiceState::StartPending,
                    Self::StopPending => wit::ServiceState::StopPending,
                    Self::Running => wit::ServiceState::Running,
                    Self::Paused => wit::ServiceState::Paused,
                    Self::Failed | Self::Broken => wit::ServiceState::Failed,
                }
            }
        }
        impl Convert<wit::StartupType> for StartupType {
            fn convert(self) -> wit::StartupType {
                match self {
                    Self::Automatic | Self::AutomaticUntilReboot => wit::StartupType::Automatic,
                    Self::AutomaticDelayed => wit::StartupType::AutomaticDelayed,
                    Self::Manual | Self::Static | Self::Indirect | Self::Generated => {
                        wit::StartupType::Manual
                    }
                    Self::Disabled | Self::DisabledUntilReboot => wit::StartupType::Disabled,
                }
            }
        }
        impl Convert<StartupType> for wit::StartupType {
            fn convert(self) -> StartupType {
                match self {
                    Self::Automatic => StartupType::Automatic,
                    Self::AutomaticDelayed => StartupType::AutomaticDelayed,
                    Self::Manual => StartupType::Manual,
                    Self::Disabled => StartupType::Disabled,
                }
            }
        }
        crate::contract::interfaces::services_interface!(@status_without_problem);
        crate::contract::interfaces::services_interface!(@common);
    };
    (since_0_4_0) => {
        use crate::contract::convert::convert_enum;
        use medic_backends::services::{ProblemKind, ServiceProblem};

        convert_enum!(
            ServiceState,
            wit::ServiceState {
                Stopped,
                StartPending,
                StopPending,
                Running,
                Paused,
                Failed,
                Broken
            }
        );
        convert_enum!(
            StartupType,
            wit::StartupType {
                Automatic,
                AutomaticDelayed,
                Manual,
                Disabled,
                AutomaticUntilReboot,
                DisabledUntilReboot,
                Static,
                Indirect,
                Generated
            }
        );
        convert_enum!(
            ProblemKind,
            wit::ProblemKind {
                Broken,
                ExitCode,
                Signal,
                Timeout,
                StartLimit,
                Other
            }
        );
        // One way, as the status that carries it.
        impl Convert<wit::ServiceProblem> for ServiceProblem {
            fn convert(self) -> wit::ServiceProblem {
                wit::ServiceProblem {
                    kind: self.kind.convert(),
                    detail: self.detail,
                }
            }
        }
        // One way: a plugin never hands a status back.
        impl Convert<wit::ServiceStatus> for ServiceStatus {
            fn convert(self) -> wit::ServiceStatus {
                wit::ServiceStatus {
                    name: self.name,
                    display_name: self.display_name,
                    state: self.state.convert(),
                    startup: self.startup.convert(),
                    problem: self.problem.convert(),
                }
            }
        }
        crate::contract::interfaces::services_interface!(@common);
    };
    (@status_without_problem) => {
        // One way: a plugin never hands a status back. What a version
        // cannot say (the problem) is left out.
        impl Convert<wit::ServiceStatus> for ServiceStatus {
            fn convert(self) -> wit::ServiceStatus {
                wit::ServiceStatus {
                    name: self.name,
                    display_name: self.display_name,
                    state: self.state.convert(),
                    startup: self.startup.convert(),
                }
            }
        }
    };
    (@common) => {
        use crate::contract::convert::{Convert, result};
        use crate::host::RunState;
        use medic_backends::services::{ServiceChange, ServiceState, ServiceStatus, StartupType};

        impl Convert<wit::ServiceChange> for ServiceChange {
            fn convert(self) -> wit::ServiceChange {
                wit::ServiceChange {
                    before: self.before.convert(),
                    after: self.after.convert(),
                    applied: self.applied,
                }
            }
        }

        impl wit::Host for RunState {
            fn query(
                &mut self,
                name: String,
            ) -> wasmtime::Result<Result<wit::ServiceStatus, Error>> {
                Ok(result(self.services_query(name)?))
            }

            fn start(
                &mut self,
                name: String,
                timeout_ms: u32,
            ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
                Ok(result(self.services_start(name, timeout_ms)?))
            }

            fn stop(
                &mut self,
                name: String,
                timeout_ms: u32,
            ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
                Ok(result(self.services_stop(name, timeout_ms)?))
            }

            fn restart(
                &mut self,
                name: String,
                timeout_ms: u32,
            ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
                Ok(result(self.services_restart(name, timeout_ms)?))
            }

            fn set_startup(
                &mut self,
                name: String,
                startup: wit::StartupType,
            ) -> wasmtime::Result<Result<wit::ServiceChange, Error>> {
                Ok(result(self.services_set_startup(name, startup.convert())?))
            }
        }
    };
}

/// `wsus`: see the module header. 0.1.0 (in the core package) and
/// `medic:wsus@0.1.0` share one shape: a sync record without the
/// `SynchronizationError` name, a `start-sync` that returns nothing, none
/// of the upstream's facts. `medic:wsus@0.2.0` has them all.
macro_rules! wsus_interface {
    (before_0_2_0) => {
        crate::contract::interfaces::wsus_interface!(@records);

        impl Convert<wit::SyncRecord> for SyncRecord {
            fn convert(self) -> wit::SyncRecord {
                wit::SyncRecord {
                    started_ms: self.started_ms,
                    finished_ms: self.finished_ms,
                    result_kind: self.result_kind.convert(),
                    reason: self.reason,
                }
            }
        }

        impl wit::Host for RunState {
            crate::contract::interfaces::wsus_interface!(@calls);

            fn start_sync(&mut self) -> wasmtime::Result<Result<(), Error>> {
                Ok(result(self.wsus_start_sync()?.map(|_started| ())))
            }
        }
    };
    (since_0_2_0) => {
        crate::contract::interfaces::wsus_interface!(@records);
        use medic_backends::wsus::{ProxySettings, UpstreamFacts, UpstreamProbe};

        convert_record!(
            SyncRecord,
            wit::SyncRecord {
                started_ms,
                finished_ms,
                result_kind,
                error,
                reason
            }
        );
        convert_record!(
            UpstreamFacts,
            wit::UpstreamFacts {
                name,
                storage,
                languages,
                approved,
                inactive_approvals
            }
        );
        convert_record!(
            ProxySettings,
            wit::ProxySettings {
                enabled,
                host,
                port,
                user,
                has_password
            }
        );
        convert_record!(
            UpstreamProbe,
            wit::UpstreamProbe {
                target,
                addresses,
                via_proxy,
                connected,
                http_status,
                problem
            }
        );

        impl wit::Host for RunState {
            crate::contract::interfaces::wsus_interface!(@calls);

            fn start_sync(&mut self) -> wasmtime::Result<Result<u64, Error>> {
                Ok(result(self.wsus_start_sync()?))
            }

            fn resume_downloads(
                &mut self,
                ids: Vec<String>,
            ) -> wasmtime::Result<Result<wit::BatchResult, Error>> {
                Ok(result(self.wsus_resume_downloads(ids)?))
            }

            fn upstream_info(
                &mut self,
            ) -> wasmtime::Result<Result<Option<wit::UpstreamFacts>, Error>> {
                Ok(result(self.wsus_upstream_info()?))
            }

            fn proxy(&mut self) -> wasmtime::Result<Result<wit::ProxySettings, Error>> {
                Ok(result(self.wsus_proxy_settings()?))
            }

            fn check_upstream(&mut self) -> wasmtime::Result<Result<wit::UpstreamProbe, Error>> {
                Ok(result(self.wsus_check_upstream()?))
            }
        }
    };
    (@records) => {
        use crate::contract::convert::{Convert, convert_enum, convert_record, result};
        use crate::host::RunState;
        use medic_backends::wsus::{
            Approval, ApprovalTally, BatchResult, ServerFacts, ServerMode, StorageMode, SyncRecord,
            SyncResult, SyncState, UpdateFilter, UpdateState, UpdateSummary,
        };

        impl Convert<wit::SyncState> for SyncState {
            fn convert(self) -> wit::SyncState {
                wit::SyncState {
                    running: self.running,
                    last: self.last.convert(),
                }
            }
        }

        convert_enum!(
            ServerMode,
            wit::ServerMode {
                Replica,
                Autonomous
            }
        );
        convert_enum!(
            StorageMode,
            wit::StorageMode {
                LocalContent,
                MicrosoftUpdate
            }
        );
        convert_record!(
            ServerFacts,
            wit::ServerFacts {
                name,
                mode,
                upstream,
                storage,
                languages,
                content_dir,
                version
            }
        );
        convert_enum!(
            UpdateState,
            wit::UpdateState {
                NotReady,
                Ready,
                Failed,
                Canceled,
                LicenseAgreementFailed,
                InstallationImpossible
            }
        );
        convert_record!(
            UpdateSummary,
            wit::UpdateSummary {
                id,
                revision,
                title,
                product,
                classification,
                language,
                state,
                declined,
                approved
            }
        );
        convert_record!(
            UpdateFilter,
            wit::UpdateFilter {
                state,
                declined,
                approved
            }
        );
        convert_record!(
            BatchResult,
            wit::BatchResult {
                done,
                failed,
                applied
            }
        );
        convert_record!(
            Approval,
            wit::Approval {
                update_id,
                title,
                target_group,
                language
            }
        );
        convert_record!(
            ApprovalTally,
            wit::ApprovalTally {
                active,
                inactive,
                upstream_approved
            }
        );
        convert_enum!(
            SyncResult,
            wit::SyncResult {
                Succeeded,
                Failed,
                Canceled
            }
        );

    };
    (@calls) => {
            fn server_info(&mut self) -> wasmtime::Result<Result<wit::ServerFacts, Error>> {
                Ok(result(self.wsus_server_info()?))
            }

            fn list_updates(
                &mut self,
                filter: wit::UpdateFilter,
            ) -> wasmtime::Result<Result<Vec<wit::UpdateSummary>, Error>> {
                Ok(result(self.wsus_list_updates(filter.convert())?))
            }

            fn upstream_has(
                &mut self,
                ids: Vec<String>,
            ) -> wasmtime::Result<Result<Vec<String>, Error>> {
                Ok(result(self.wsus_upstream_has(ids)?))
            }

            fn cancel_downloads(
                &mut self,
                ids: Vec<String>,
            ) -> wasmtime::Result<Result<wit::BatchResult, Error>> {
                Ok(result(self.wsus_cancel_downloads(ids)?))
            }

            fn decline(
                &mut self,
                ids: Vec<String>,
            ) -> wasmtime::Result<Result<wit::BatchResult, Error>> {
                Ok(result(self.wsus_decline(ids)?))
            }

            fn approval_counts(&mut self) -> wasmtime::Result<Result<wit::ApprovalTally, Error>> {
                Ok(result(self.wsus_approval_counts()?))
            }

            fn list_inactive_approvals(
                &mut self,
            ) -> wasmtime::Result<Result<Vec<wit::Approval>, Error>> {
                Ok(result(self.wsus_list_inactive_approvals()?))
            }

            fn remove_inactive_approvals(&mut self) -> wasmtime::Result<Result<u32, Error>> {
                Ok(result(self.wsus_remove_inactive_approvals()?))
            }

            fn get_config(
                &mut self,
                name: String,
            ) -> wasmtime::Result<Result<Option<String>, Error>> {
                Ok(result(self.wsus_get_config(name)?))
            }

            fn set_config(
                &mut self,
                name: String,
                value: String,
            ) -> wasmtime::Result<Result<Option<String>, Error>> {
                Ok(result(self.wsus_set_config(name, value)?))
            }

            fn sync_status(&mut self) -> wasmtime::Result<Result<wit::SyncState, Error>> {
                Ok(result(self.wsus_sync_status()?))
            }

            fn sync_history(
                &mut self,
                limit: u32,
            ) -> wasmtime::Result<Result<Vec<wit::SyncRecord>, Error>> {
                Ok(result(self.wsus_sync_history(limit)?))
            }
    };
}

/// `state`: see the module header.
macro_rules! state_interface {
    () => {
        use crate::contract::convert::result;
        use crate::host::RunState;

        impl wit::Host for RunState {
            fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                self.state_get(key)
            }

            fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), Error>> {
                Ok(result(self.state_set(key, value)?))
            }

            fn remove(&mut self, key: String) -> wasmtime::Result<Result<(), Error>> {
                Ok(result(self.state_remove(key)?))
            }

            fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
                self.state_keys()
            }
        }
    };
}

/// `types`: events, outcomes, errors, trigger hints and `plugin-info`; the
/// invoking module converts its own capabilities with a `capability`
/// function. Before 0.3.0 a plugin could not ask for a follow-up run, so
/// it never gets one: should one reach it, it reads as `manual`.
macro_rules! types_interface {
    (before_0_3_0) => {
        impl Convert<wit::EventKind> for EventKind {
            fn convert(self) -> wit::EventKind {
                match self {
                    Self::FileChanged => wit::EventKind::FileChanged,
                    Self::LogLine => wit::EventKind::LogLine,
                    Self::SystemEvent => wit::EventKind::SystemEvent,
                    Self::Schedule => wit::EventKind::Schedule,
                    Self::Startup => wit::EventKind::Startup,
                    Self::Manual | Self::FollowUp => wit::EventKind::Manual,
                }
            }
        }
        impl Convert<OutcomeRecord> for wit::Outcome {
            fn convert(self) -> OutcomeRecord {
                OutcomeRecord {
                    status: self.status.convert(),
                    summary: self.summary,
                    actions: self.actions.convert(),
                    follow_up: None,
                }
            }
        }
        crate::contract::interfaces::types_interface!(@common);
    };
    (since_0_3_0) => {
        use crate::event::FollowUp;

        crate::contract::convert::convert_enum!(
            EventKind,
            wit::EventKind {
                FileChanged,
                LogLine,
                SystemEvent,
                Schedule,
                Startup,
                Manual,
                FollowUp
            }
        );
        convert_record!(
            FollowUp,
            wit::FollowUp {
                after_seconds,
                reason
            }
        );
        convert_record!(
            OutcomeRecord,
            wit::Outcome {
                status,
                summary,
                actions,
                follow_up
            }
        );
        crate::contract::interfaces::types_interface!(@common);
    };
    (@common) => {
        use crate::contract::convert::{Convert, convert_enum, convert_record};
        use crate::event::{ActionRecord, EventKind, EventRecord, OutcomeRecord, Status};
        use crate::host::RunState;
        use crate::info::TriggerHint;
        use medic_backends::{BackendError, ErrorKind};

        impl wit::Host for RunState {}

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

        /// What `describe()` returned, as medic's own value; an error names
        /// a capability this host does not know.
        pub(super) fn plugin_info(
            info: wit::PluginInfo,
        ) -> Result<crate::info::PluginInfo, String> {
            Ok(crate::info::PluginInfo {
                capabilities: info
                    .capabilities
                    .into_iter()
                    .map(capability)
                    .collect::<Result<_, _>>()?,
                triggers: info.triggers.convert(),
                name: info.name,
                version: info.version,
                description: info.description,
            })
        }
    };
}

/// `capability` since 0.2.0, where an extension package's operations are
/// named (`wsus-read`), not listed in the core: the invoking `types` module
/// imports its version's `types` as `wit`.
macro_rules! named_operations_capability {
    () => {
        use crate::host::grants::Capability;

        fn capability(asked: wit::Capability) -> Result<Capability, String> {
            Ok(match asked {
                wit::Capability::FsRead => Capability::FsRead,
                wit::Capability::FsWrite => Capability::FsWrite,
                wit::Capability::ServicesRead => Capability::ServicesRead,
                wit::Capability::ServicesControl => Capability::ServicesControl,
                wit::Capability::Operation(name) => match Capability::parse(&name) {
                    Some(operation @ Capability::Operation(_)) => operation,
                    _ => {
                        return Err(format!(
                            "describe() asks for the capability `{name}`, which this agent does not know"
                        ));
                    }
                },
            })
        }
    };
}

/// The version module's entry points: `Pre` (a component linked against
/// the version's bindings), `add_to_linker`, and `describe`/`handle`
/// converting to medic's own types. The invoking module has the generated
/// `bindings` (world `remediation`) and a `types` module with
/// `plugin_info`.
macro_rules! version_entry_points {
    () => {
        use crate::contract::CallError;
        use crate::contract::convert::Convert;
        use crate::event::{EventRecord, OutcomeRecord};
        use crate::host::RunState;
        use crate::info::PluginInfo;
        use wasmtime::Store;
        use wasmtime::component::{Component, HasSelf, Linker};

        /// A component built for this version, linked and ready to instantiate.
        #[derive(Clone)]
        pub struct Pre {
            linked: bindings::RemediationPre<RunState>,
            /// The export `handle`, found and type-checked once here: a run
            /// calls it with no lookup by name and no type check (the
            /// generated bindings check every export of the interface on
            /// each instantiation).
            handle: wasmtime::component::ComponentExportIndex,
        }

        /// What `handle` takes and gives, in the generated bindings' types.
        type HandleParams<'a> = (&'a bindings::medic::plugin::types::Event,);
        type HandleResults = (Result<bindings::medic::plugin::types::Outcome, String>,);

        /// Link this version's interfaces into `linker`.
        pub fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
            bindings::Remediation::add_to_linker::<RunState, HasSelf<RunState>>(linker, |state| {
                state
            })
        }

        impl Pre {
            pub fn new(linker: &Linker<RunState>, component: &Component) -> wasmtime::Result<Self> {
                let linked = linker
                    .instantiate_pre(component)
                    .and_then(bindings::RemediationPre::new)?;
                let interface = format!("medic:plugin/plugin@{VERSION}");
                let exported = component
                    .get_export(None, interface.as_str())
                    .and_then(|(_, plugin)| component.get_export(Some(&plugin), "handle"));
                let handle = match exported {
                    Some((wasmtime::component::types::ComponentItem::ComponentFunc(func), index)) => {
                        func.typecheck::<HandleParams<'_>, HandleResults>(
                            &linked.instance_pre().instance_type(),
                        )?;
                        index
                    }
                    _ => wasmtime::bail!("`{interface}` exports no function `handle`"),
                };
                Ok(Self { linked, handle })
            }

            pub fn describe(&self, store: &mut Store<RunState>) -> wasmtime::Result<PluginInfo> {
                let instance = self.linked.instantiate(&mut *store)?;
                let info = instance.medic_plugin_plugin().call_describe(store)?;
                types::plugin_info(info).map_err(wasmtime::Error::msg)
            }

            pub fn handle(
                &self,
                store: &mut Store<RunState>,
                event: &EventRecord,
            ) -> Result<Result<OutcomeRecord, String>, CallError> {
                let instance = self
                    .linked
                    .instance_pre()
                    .instantiate(&mut *store)
                    .map_err(CallError::Instantiate)?;
                let func = instance.get_func(&mut *store, self.handle).ok_or_else(|| {
                    CallError::Instantiate(wasmtime::format_err!("no function `handle`"))
                })?;
                // SAFETY: `Pre::new` type-checked this export of this
                // component, which `instance` is of, against these types.
                let handle = unsafe {
                    wasmtime::component::TypedFunc::<HandleParams<'_>, HandleResults>::new_unchecked(
                        func,
                    )
                };
                let event: bindings::medic::plugin::types::Event = event.clone().convert();
                let (outcome,) = handle
                    .call(&mut *store, (&event,))
                    .map_err(CallError::Trap)?;
                Ok(outcome.map(Convert::convert))
            }
        }
    };
}

pub(crate) use {
    config_interface, fs_interface, log_interface, named_operations_capability, services_interface,
    state_interface, types_interface, version_entry_points, wsus_interface,
};
