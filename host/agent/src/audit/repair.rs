//! Rebuilding a damaged store (`medic audit --repair`).
//!
//! The damaged file is kept, renamed `medic.redb.damaged-<UTC time>`, and
//! a new store is built from what can still be read of it: the journal's
//! intact part as it is (its records keep their hashes, so the chain goes
//! on), and every other table that can be read whole or in part (plugin
//! state, tail offsets, counters, the durable queue, ...). A record at the
//! end of the new journal says what was kept and where the chain broke,
//! and the anchor is moved to it.
//!
//! The damaged file is never written: it is read through a copy, which
//! redb may repair as it opens it. The new store is built under another
//! name and renamed into place, so that at every moment `medic.redb` is
//! either the damaged store or the rebuilt one. The agent lock is held
//! throughout, and a store another process has open is not touched.

use super::anchor::{self, Anchor};
use super::journal::{
    AuditRecord, ChainCheck, ChainError, JOURNAL, NewRecord, RecordKind, RecordStatus,
    append_record,
};
use super::{DATABASE_FILE, Store, StoreError, backend, guard};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Records read and written per transaction while rebuilding.
const BATCH: usize = 1000;

/// What a table of the damaged store gave.
#[derive(Debug, Clone, Serialize)]
pub struct TableSalvage {
    pub name: String,
    /// Entries copied to the new store.
    pub entries: u64,
    /// Why not all of them, if not.
    pub incomplete: Option<String>,
}

/// What a repair did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The rebuilt store.
    pub store: PathBuf,
    /// Where the damaged file is kept (none if there was no file).
    pub kept_as: Option<PathBuf>,
    /// Journal records kept: the intact part of the chain.
    pub records_kept: u64,
    /// Where and why the chain broke, if it did.
    pub chain_break: Option<String>,
    /// Why the damaged file could not be read at all, if it could not.
    pub unreadable: Option<String>,
    /// The other tables.
    pub tables: Vec<TableSalvage>,
    /// The record appended to say all this.
    pub record: AuditRecord,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn db_error(path: &Path) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Database(e).at(path)
}

/// Rebuild the store in `state_dir` from what can be read of it; refused
/// while an agent runs there or another process has the store open.
pub fn repair(state_dir: &Path) -> Result<RepairReport, StoreError> {
    let _lock = Store::lock_agent(state_dir)?;
    let path = state_dir.join(DATABASE_FILE);
    let exists = path.exists();
    if exists && backend::in_use(&path).map_err(io(&path))? {
        return Err(StoreError::InUse { path });
    }
    let old_anchor = anchor::read(state_dir).ok().flatten();
    let rebuilt = path.with_extension("redb.rebuild");
    let copy = path.with_extension("redb.salvage");
    let _ = std::fs::remove_file(&rebuilt);
    let _ = std::fs::remove_file(&copy);
    let result = rebuild(&path, exists, &copy, &rebuilt, old_anchor.as_ref());
    let _ = std::fs::remove_file(&copy);
    let (mut report, head) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&rebuilt);
            return Err(e);
        }
    };
    // Keep the damaged file under a new name, then put the new one in its
    // place.
    if exists {
        let kept = kept_name(&path);
        if std::fs::hard_link(&path, &kept).is_err() {
            std::fs::copy(&path, &kept).map_err(io(&kept))?;
        }
        report.kept_as = Some(kept);
    }
    std::fs::rename(&rebuilt, &path).map_err(io(&path))?;
    anchor::write(state_dir, &head, true).map_err(io(&anchor::path(state_dir)))?;
    Ok(report)
}

fn kept_name(path: &Path) -> PathBuf {
    let stamp = utc_stamp(medic_sandbox::now_ms());
    let base = path.with_extension(format!("redb.damaged-{stamp}"));
    let mut candidate = base.clone();
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{}-{n}", base.display()));
    }
    candidate
}

/// Open a copy of the damaged file, plainly, then with redb's integrity
/// check and repair.
fn open_copy(damaged: &Path, copy: &Path) -> Result<redb::Database, String> {
    let mut why = Vec::new();
    for check in [false, true] {
        let _ = std::fs::remove_file(copy);
        if let Err(e) = std::fs::copy(damaged, copy) {
            return Err(format!("cannot copy it: {e}"));
        }
        let opened = guard::contain(|| {
            redb::Builder::new()
                .set_cache_size(16 << 20)
                .set_check_integrity_on_open(check)
                .open(copy)
        });
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) => why.push(e.to_string()),
            Err(panic) => why.push(panic),
        }
    }
    Err(why.join("; then, checking it: "))
}

fn rebuild(
    path: &Path,
    exists: bool,
    copy: &Path,
    rebuilt: &Path,
    old_anchor: Option<&Anchor>,
) -> Result<(RepairReport, Anchor), StoreError> {
    let new = redb::Builder::new()
        .create(rebuilt)
        .map_err(|e| super::open_error(rebuilt, e))?;
    let mut chain = ChainCheck::new(None);
    let mut chain_break = None;
    let mut tables = Vec::new();
    let mut unreadable = None;
    let source = if !exists {
        unreadable = Some("there was no store file".to_string());
        None
    } else if std::fs::metadata(path).map_err(io(path))?.len() == 0 {
        unreadable = Some("the store file was empty (0 bytes)".to_string());
        None
    } else {
        match open_copy(path, copy) {
            Ok(db) => Some(db),
            Err(why) => {
                unreadable = Some(why);
                None
            }
        }
    };
    if let Some(source) = &source {
        chain_break = copy_journal(source, &new, &mut chain, rebuilt)?;
        tables = copy_tables(source, &new, rebuilt)?;
    }
    drop(source);
    let kept = chain.last_seq();
    if chain_break.is_none()
        && let Some(anchor) = old_anchor
        && anchor.seq > kept
    {
        chain_break = Some(
            ChainError::Truncated {
                last: kept,
                anchored: anchor.seq,
            }
            .to_string(),
        );
    }
    let summary = format!(
        "store rebuilt from a damaged one: {kept} journal record(s) kept{}{}",
        chain_break
            .as_deref()
            .map_or(String::new(), |b| format!("; the chain broke: {b}")),
        unreadable.as_deref().map_or(String::new(), |u| format!(
            "; the damaged store could not be read: {u}"
        )),
    );
    let note = NewRecord {
        kind: RecordKind::Store,
        plugin: String::new(),
        run_id: String::new(),
        status: RecordStatus::Repaired,
        summary,
        detail: serde_json::json!({
            "records_kept": kept,
            "chain_break": chain_break,
            "anchor": old_anchor,
            "unreadable": unreadable,
            "tables": tables,
            "damaged_file": path.display().to_string(),
        }),
    }
    .within_size();
    let db_err = db_error(rebuilt);
    let txn = new.begin_write().map_err(|e| db_err(e.into()))?;
    let record = {
        let mut table = txn.open_table(JOURNAL).map_err(|e| db_err(e.into()))?;
        append_record(&mut table, note, medic_sandbox::now_ms())?
    };
    txn.commit().map_err(|e| db_err(e.into()))?;
    drop(new);
    let head = Anchor {
        seq: record.seq,
        hash: record.hash.clone(),
    };
    Ok((
        RepairReport {
            store: path.to_path_buf(),
            kept_as: None,
            records_kept: kept,
            chain_break,
            unreadable,
            tables,
            record,
        },
        head,
    ))
}

/// Copy the intact part of the journal, a batch at a time; returns where
/// the chain broke, if it did.
fn copy_journal(
    source: &redb::Database,
    new: &redb::Database,
    chain: &mut ChainCheck,
    rebuilt: &Path,
) -> Result<Option<String>, StoreError> {
    let db_err = db_error(rebuilt);
    loop {
        let from = chain.last_seq() + 1;
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        let read = guard::contain(|| -> Result<bool, String> {
            let txn = source.begin_read().map_err(|e| e.to_string())?;
            let table = match txn.open_table(JOURNAL) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
                Err(e) => return Err(e.to_string()),
            };
            for entry in table.range(from..).map_err(|e| e.to_string())? {
                let (seq, bytes) = entry.map_err(|e| e.to_string())?;
                batch.push((seq.value(), bytes.value().to_vec()));
                if batch.len() == BATCH {
                    return Ok(true);
                }
            }
            Ok(false)
        });
        let mut broke = None;
        let txn = new.begin_write().map_err(|e| db_err(e.into()))?;
        {
            let mut table = txn.open_table(JOURNAL).map_err(|e| db_err(e.into()))?;
            for (seq, bytes) in &batch {
                if let Err(e) = chain.push(*seq, bytes) {
                    broke = Some(e.to_string());
                    break;
                }
                table
                    .insert(*seq, bytes.as_slice())
                    .map_err(|e| db_err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| db_err(e.into()))?;
        if broke.is_some() {
            return Ok(broke);
        }
        match read.and_then(|r| r) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(detail) => {
                return Ok(Some(
                    ChainError::Damaged {
                        after: chain.last_seq(),
                        detail,
                    }
                    .to_string(),
                ));
            }
        }
    }
}

/// Copy one table whose types are `K` and `V`; `None` when it has other
/// types. Entries read before a failure are kept.
fn copy_as<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &redb::Database,
    new: &redb::Database,
    name: &str,
    rebuilt: &Path,
) -> Result<Option<TableSalvage>, StoreError> {
    let definition = TableDefinition::<K, V>::new(name);
    let db_err = db_error(rebuilt);
    let txn = new.begin_write().map_err(|e| db_err(e.into()))?;
    let mut entries = 0;
    let copied = {
        let mut out = txn.open_table(definition).map_err(|e| db_err(e.into()))?;
        guard::contain(|| -> Result<bool, String> {
            let read = source.begin_read().map_err(|e| e.to_string())?;
            let table = match read.open_table(definition) {
                Ok(table) => table,
                Err(redb::TableError::TableTypeMismatch { .. }) => return Ok(false),
                Err(e) => return Err(e.to_string()),
            };
            for entry in table.iter().map_err(|e| e.to_string())? {
                let (key, value) = entry.map_err(|e| e.to_string())?;
                out.insert(key.value(), value.value())
                    .map_err(|e| format!("cannot write it: {e}"))?;
                entries += 1;
            }
            Ok(true)
        })
    };
    let incomplete = match copied.and_then(|r| r) {
        Ok(false) => return Ok(None),
        Ok(true) => None,
        Err(why) => Some(why),
    };
    if entries == 0 && incomplete.is_some() {
        // Nothing to keep, and the table may be of other types.
        drop(txn);
        return Ok(Some(TableSalvage {
            name: name.to_string(),
            entries,
            incomplete,
        }));
    }
    txn.commit().map_err(|e| db_err(e.into()))?;
    Ok(Some(TableSalvage {
        name: name.to_string(),
        entries,
        incomplete,
    }))
}

/// One of the ways to copy a table, by its key and value types.
type CopyAs =
    fn(&redb::Database, &redb::Database, &str, &Path) -> Result<Option<TableSalvage>, StoreError>;

/// Copy every table but the journal, of the types medic uses.
fn copy_tables(
    source: &redb::Database,
    new: &redb::Database,
    rebuilt: &Path,
) -> Result<Vec<TableSalvage>, StoreError> {
    let names = guard::contain(|| -> Result<Vec<String>, String> {
        let txn = source.begin_read().map_err(|e| e.to_string())?;
        let tables = txn.list_tables().map_err(|e| e.to_string())?;
        Ok(tables.map(|t| t.name().to_string()).collect())
    });
    let names = match names.and_then(|r| r) {
        Ok(names) => names,
        Err(why) => {
            return Ok(vec![TableSalvage {
                name: "(list of tables)".into(),
                entries: 0,
                incomplete: Some(why),
            }]);
        }
    };
    let mut out = Vec::new();
    for name in names {
        if name == JOURNAL.name() {
            continue;
        }
        let attempts: [CopyAs; 6] = [
            copy_as::<&str, &[u8]>,
            copy_as::<u64, &[u8]>,
            copy_as::<&str, &str>,
            copy_as::<&str, u64>,
            copy_as::<u64, u64>,
            copy_as::<u64, &str>,
        ];
        let mut salvage = None;
        for attempt in attempts {
            if let Some(done) = attempt(source, new, &name, rebuilt)? {
                salvage = Some(done);
                break;
            }
        }
        out.push(salvage.unwrap_or(TableSalvage {
            name,
            entries: 0,
            incomplete: Some("its key and value types are not ones medic uses".into()),
        }));
    }
    Ok(out)
}

/// `YYYYMMDDTHHMMSSZ` for a time in ms since the epoch.
fn utc_stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::journal::Journal;
    use crate::audit::journal::tests::run_record;
    use crate::audit::state::StateStore;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_000_000_123), "20261118T110640Z");
    }

    #[test]
    fn a_broken_chain_is_cut_at_the_break_and_everything_else_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let journal = Journal::new(store.clone());
            for i in 0..10 {
                journal
                    .append(run_record("a", ["healthy", "failed"][i % 2]))
                    .unwrap();
            }
            StateStore::new(store.clone())
                .set("a", "count", "7", 1 << 20)
                .unwrap();
            store.put_json("tail_offsets", "log", &42u64).unwrap();
            journal
                .tamper(6, |r| r.entry.summary = "edited".into())
                .unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::BrokenChain { .. }), "{e}");

        // Refused while an agent runs there.
        let lock = Store::lock_agent(dir.path()).unwrap();
        assert!(matches!(
            repair(dir.path()),
            Err(StoreError::AgentRunning { .. })
        ));
        drop(lock);
        // Refused while the store is open.
        let open = Store::open_existing(dir.path()).unwrap();
        assert!(matches!(repair(dir.path()), Err(StoreError::InUse { .. })));
        drop(open);

        let report = repair(dir.path()).unwrap();
        assert_eq!(report.records_kept, 5);
        assert!(
            report.chain_break.as_deref().unwrap().contains("record 6"),
            "{report:?}"
        );
        assert_eq!(report.record.seq, 6);
        let kept = report.kept_as.clone().unwrap();
        assert!(kept.exists());
        // The damaged file is kept as it was.
        let damaged = Journal::new(
            Store::open_existing(&{
                let aside = dir.path().join("aside");
                std::fs::create_dir(&aside).unwrap();
                std::fs::copy(&kept, aside.join(DATABASE_FILE)).unwrap();
                aside
            })
            .unwrap(),
        );
        assert_eq!(
            damaged.verify().unwrap(),
            Err(ChainError::Content { seq: 6 })
        );

        let store = Store::open(dir.path()).unwrap();
        let journal = Journal::new(store.clone());
        assert_eq!(journal.verify().unwrap(), Ok(6));
        let last = journal.list(&Default::default()).unwrap().pop().unwrap();
        assert_eq!(last.kind, RecordKind::Store);
        assert_eq!(last.status, RecordStatus::Repaired);
        assert_eq!(
            StateStore::new(store.clone())
                .get("a", "count")
                .unwrap()
                .as_deref(),
            Some("7")
        );
        assert_eq!(store.get_json::<u64>("tail_offsets", "log"), Some(42));
        assert_eq!(
            StateStore::new(store.clone()).usage("a").unwrap(),
            5 + 1 + 64
        );
        // And the journal goes on.
        journal.append(run_record("a", "healthy")).unwrap();
        assert_eq!(journal.verify().unwrap(), Ok(7));
    }

    #[test]
    fn an_empty_or_missing_store_is_rebuilt_with_a_record_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::new(Store::open(dir.path()).unwrap());
            journal.append(run_record("a", "healthy")).unwrap();
            journal.append(run_record("a", "healthy")).unwrap();
        }
        std::fs::File::create(dir.path().join(DATABASE_FILE)).unwrap();
        let report = repair(dir.path()).unwrap();
        assert_eq!(report.records_kept, 0);
        assert!(report.unreadable.as_deref().unwrap().contains("empty"));
        assert!(
            report
                .chain_break
                .as_deref()
                .unwrap()
                .contains("anchor says record 2"),
            "{report:?}"
        );
        let journal = Journal::new(Store::open(dir.path()).unwrap());
        assert_eq!(journal.verify().unwrap(), Ok(1));
        drop(journal);
        std::fs::remove_file(dir.path().join(DATABASE_FILE)).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Lost { seq: 1, .. })
        ));
        let report = repair(dir.path()).unwrap();
        assert!(report.kept_as.is_none());
        assert_eq!(
            Journal::new(Store::open(dir.path()).unwrap())
                .verify()
                .unwrap(),
            Ok(1)
        );
    }
}
