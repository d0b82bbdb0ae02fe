//! `fs`: the file system under the granted roots.

use super::bindings::medic::plugin::{fs as wit, types::Error};
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
convert_record!(
    AccessReport,
    wit::AccessReport {
        checked,
        changed,
        applied
    }
);

impl wit::Host for RunState {
    fn stat(&mut self, path: String) -> wasmtime::Result<Result<wit::FileInfo, Error>> {
        Ok(result(self.fs_stat(path)?))
    }

    fn list_dir(&mut self, path: String) -> wasmtime::Result<Result<Vec<wit::FileInfo>, Error>> {
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
