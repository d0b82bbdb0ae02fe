//! `fs`: the file system under the granted roots. Reads need `fs-read` (or
//! `fs-write`) on a root holding the path; `ensure-access` needs `fs-write`.

use super::grants::{Capability, checked_path};
use super::{RunState, Summary, denied};
use medic_backends::fs::{AccessEntry, AccessReport, AccessRight, Beneath, FileInfo};
use medic_backends::{BackendError, ErrorKind};
use serde_json::json;

/// Largest `read-file` a plugin may ask for.
const MAX_READ_BYTES: u32 = 16 * 1024 * 1024;

impl RunState {
    /// Check that `raw` may be read (or, with `write`, changed), and say
    /// beneath which granted root.
    fn granted_path(&self, raw: &str, write: bool) -> Result<Beneath, BackendError> {
        let capability = if write {
            Capability::FsWrite
        } else {
            Capability::FsRead
        };
        self.require(capability)?;
        let path = checked_path(raw)
            .map_err(|e| BackendError::new(ErrorKind::InvalidArgument, e.to_string()))?;
        let scope = if write {
            self.grants.write_scope(&path)
        } else {
            self.grants.read_scope(&path)
        };
        if let Some(scope) = scope {
            return Ok(scope);
        }
        let roots: Vec<String> = if write {
            self.grants
                .fs_write
                .iter()
                .map(|r| r.display().to_string())
                .collect()
        } else {
            self.grants
                .fs_read
                .iter()
                .chain(&self.grants.fs_write)
                .map(|r| r.display().to_string())
                .collect()
        };
        Err(denied(format!(
            "`{}` is outside the roots granted to {} ({})",
            path.display(),
            if write { "fs-write" } else { "fs-read" },
            roots.join(", ")
        )))
    }

    fn read_call<T>(
        &mut self,
        function: &'static str,
        path: &str,
        op: impl FnOnce(&RunState, &Beneath) -> Result<T, BackendError>,
        summary: impl FnOnce(&T) -> String,
    ) -> wasmtime::Result<Result<T, BackendError>> {
        self.host_call(
            function,
            json!({ "path": path }),
            false,
            |run, _| {
                let path = run.granted_path(path, false)?;
                op(run, &path)
            },
            summary,
        )
    }

    pub(crate) fn fs_stat(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<FileInfo, BackendError>> {
        self.read_call(
            "fs.stat",
            &path,
            |run, p| run.backends.fs.stat(p),
            |info| format!("{}, {} bytes", info.kind.as_str(), info.size),
        )
    }

    pub(crate) fn fs_list_dir(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<FileInfo>, BackendError>> {
        self.read_call(
            "fs.list-dir",
            &path,
            |run, p| run.backends.fs.list_dir(p),
            |entries| format!("{} entries", entries.len()),
        )
    }

    pub(crate) fn fs_read_access(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<AccessEntry>, BackendError>> {
        self.read_call(
            "fs.read-access",
            &path,
            |run, p| run.backends.fs.read_access(p),
            |entries| {
                entries
                    .iter()
                    .map(|e| e.raw.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            },
        )
    }

    pub(crate) fn fs_read_file(
        &mut self,
        path: String,
        max_bytes: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, BackendError>> {
        self.read_call(
            "fs.read-file",
            &path,
            |run, p| run.backends.fs.read_file(p, max_bytes.min(MAX_READ_BYTES)),
            |bytes| format!("{} bytes", bytes.len()),
        )
    }

    pub(crate) fn fs_ensure_access(
        &mut self,
        path: String,
        principal: String,
        right: AccessRight,
        recursive: bool,
    ) -> wasmtime::Result<Result<AccessReport, BackendError>> {
        let args = json!({
            "path": path,
            "principal": principal,
            "right": right.as_str(),
            "recursive": recursive,
        });
        self.host_call_with_effects(
            "fs.ensure-access",
            args,
            true,
            |run, apply| {
                let checked = run.granted_path(&path, true)?;
                run.backends.fs.ensure_access(
                    &checked,
                    &principal,
                    right,
                    recursive,
                    apply,
                    Some(run.deadline),
                )
            },
            |report| {
                let verb = if report.applied {
                    "changed"
                } else {
                    "to change"
                };
                let mut summary = format!(
                    "{} checked, {} {verb}",
                    report.checked,
                    report.changed.len() as u64 + report.unlisted_changes
                );
                if !report.skipped.is_empty() {
                    summary.push_str(&format!(
                        ", {} skipped (links or hard-linked files that may lead outside the root)",
                        report.skipped.len()
                    ));
                }
                Summary {
                    text: summary,
                    effects: report.changed.iter().map(|c| c.path.clone()).collect(),
                    changed: !report.changed.is_empty() || report.unlisted_changes > 0,
                }
            },
        )
    }
}
