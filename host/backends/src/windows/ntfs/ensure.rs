//! `ensure_access` on NTFS: give a principal a right on a file or folder
//! (and everything below it) the way Windows means it to be done.
//!
//! On the folder asked about (the root): if the principal already has the
//! right there and, when recursive, an allow entry that passes the right
//! to every folder and file below ((OI)(CI) without (NP), set there or
//! inherited into it) exists, nothing changes. Otherwise ONE explicit allow
//! entry is added: (OI)(CI) when recursive, "this folder only" (no
//! inheritance flags) when not, merged into an explicit allow entry of the
//! same SID with the same flags where there is one. Windows passes an
//! inheritable entry down to what the folder holds itself; files are not
//! rewritten one by one.
//!
//! When recursive, a walk then only reads, to find what inheritance does
//! not reach:
//! - a folder or file whose list is protected (inheritance blocked) and
//!   that lacks the right gets an entry of its own, reported as a change
//!   "inheritance blocked" (a folder's passes the right on, like the
//!   root's);
//! - one that does not carry what its folder passes down (inheritance not
//!   propagated) likewise;
//! - an explicit deny entry for the principal (or Everyone) that refuses
//!   the right was set by an administrator: it is not overridden, and the
//!   path is listed in `skipped` with the entry; what inherits that deny
//!   below is not listed again;
//! - a reparse point is neither followed nor changed, and is listed;
//! - a file with other hard links is not changed, and is listed;
//! - a list with entries the model does not hold is not rewritten, and is
//!   listed.
//!
//! How "has the right" is decided: where nothing is to change above a
//! path, by the system ([`AclApi::effective_rights`], Authz on Windows,
//! which knows the principal's groups), unless the model already proves
//! it (an entry grants it by name and no deny entry for anyone else could
//! refuse it). Where a change planned above will reach the path, by the
//! reference check over its list as Windows will recompute it, counting
//! the principal's own SID and Everyone only: a deny entry for another
//! group the principal belongs to is then seen only by the next run
//! (which lists the path as lacking the right although entries grant it).
//!
//! Everything is planned before anything is written, so that a dry run
//! (`apply = false`) returns exactly the report an applying run does and
//! writes nothing. Applying re-reads each list just before writing it and
//! adds the planned entry to what is there then. The walk honours the
//! deadline: it stops and says what it left unchecked (the planned
//! changes found so far are still made). Writing the root's list makes
//! Windows propagate it through the whole tree before the call returns;
//! that cannot be stopped at the deadline.

use super::acl::{self, AccessCheck, Ace, AceFlags, AceKind, Dacl, check_access, right_mask};
use super::{AclApi, NtfsFileSystem, Sid, hard_linked, hard_links_reason};
use crate::fs::{
    AccessChange, AccessReport, AccessRight, Beneath, MAX_LISTED_CHANGES, SkippedPath,
};
use crate::{BackendError, ErrorKind, OpResult};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Skipped paths a report lists; more are counted.
const MAX_LISTED_SKIPS: usize = 1_000;

const REPARSE_REASON: &str = "a reparse point (a symbolic link, junction or mount point): medic neither follows nor changes it";

const NULL_DACL_REASON: &str = "it has no access list (a NULL DACL): everyone has full control on it, but it passes nothing down to what it holds, and adding an entry would take access away from everyone else; medic leaves it to an administrator";

const DEADLINE_REASON: &str =
    "the run's deadline came before the walk ended: the rest was not checked";

/// What the walk knows about a folder when it looks at what it holds.
#[derive(Debug, Clone)]
struct Above {
    /// The folder's list once the planned changes are made (`None`: a NULL
    /// DACL, which passes nothing down).
    dacl: Option<Dacl>,
    /// Whether a change planned at or above the folder makes Windows
    /// recompute the inherited entries of what it holds.
    rewritten: bool,
    /// Whether its list (as planned) passes the right to everything below.
    passes_right: bool,
    /// Whether it refuses the right through a deny entry the report names.
    denies: bool,
}

/// What a path needs.
#[derive(Debug)]
enum Verdict {
    /// It has the right (and passes it down, if it must).
    Fine,
    /// An entry of its own; the reason is shown with the change (none on
    /// the root, where adding one is what was asked).
    Grant(Option<&'static str>),
    /// Left alone, and listed with the reason.
    Skip { reason: String, by_deny: bool },
    /// Left alone and not listed: the folder above was reported for it.
    Explained { by_deny: bool },
}

/// A change planned on one path.
#[derive(Debug)]
struct PlannedGrant {
    path: PathBuf,
    flags: AceFlags,
    change: AccessChange,
}

/// One `ensure_access` call being planned.
struct Planner<'a, A: AclApi> {
    fs: &'a NtfsFileSystem<A>,
    /// The principal as the plugin named it, for messages.
    principal: &'a str,
    right: AccessRight,
    sid: Sid,
    /// The SIDs the model counts as the principal: its own, and Everyone.
    model_sids: [Sid; 2],
    wanted: u32,
    recursive: bool,
    deadline: Option<Instant>,
    checked: u64,
    grants: Vec<PlannedGrant>,
    skipped: Vec<SkippedPath>,
    unlisted_skips: u64,
    /// Once the deadline came: the folders the walk had not finished.
    unfinished: Option<usize>,
}

impl<A: AclApi> NtfsFileSystem<A> {
    /// [`crate::fs::FileSystem::ensure_access`] on NTFS; see the module.
    pub(super) fn ensure(
        &self,
        path: &Beneath,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
        deadline: Option<Instant>,
    ) -> OpResult<AccessReport> {
        let sid = self.principals.resolve(principal)?;
        let (full, info) = self.resolve(path)?;
        let mut planner = Planner {
            fs: self,
            principal,
            right,
            model_sids: [sid.clone(), Sid::everyone()],
            sid,
            wanted: right_mask(right),
            recursive,
            deadline,
            checked: 0,
            grants: Vec::new(),
            skipped: Vec::new(),
            unlisted_skips: 0,
            unfinished: None,
        };
        if info.reparse_point {
            planner.skip(&full, REPARSE_REASON.to_string());
        } else {
            if !info.is_dir {
                let links = self.api.hard_links(&full)?;
                if links > 1 {
                    return Err(hard_linked(&full, links));
                }
            }
            let above = planner.visit(&full, info.is_dir, None)?;
            if recursive && info.is_dir {
                planner.walk(&full, above);
            }
        }
        if apply {
            planner.apply()?;
        }
        Ok(planner.report(&full, apply))
    }
}

impl<A: AclApi> Planner<'_, A> {
    /// Look at one path (the root when `above` is `None`), decide what it
    /// needs and plan it; returns what its children need to know.
    fn visit(&mut self, path: &Path, is_dir: bool, above: Option<&Above>) -> OpResult<Above> {
        self.checked += 1;
        let Some(actual) = self.fs.api.read_security(path)?.dacl else {
            if self.recursive && is_dir {
                self.skip(path, NULL_DACL_REASON.to_string());
            }
            return Ok(Above {
                dacl: None,
                rewritten: false,
                passes_right: false,
                denies: false,
            });
        };
        let inherits = above.is_some() && !actual.protected;
        let recomputed = inherits && above.is_some_and(|a| a.rewritten);
        let projected = match above {
            Some(above) if recomputed => actual.under(above.dacl.as_ref(), is_dir),
            _ => actual.clone(),
        };
        let model = check_access(Some(&projected), &self.model_sids, self.wanted);
        let has = if recomputed || self.model_proves(&projected, &model) {
            model.grants(self.wanted)
        } else {
            let rights = self.fs.api.effective_rights(path, &self.sid)?;
            rights & self.wanted == self.wanted
        };
        let must_pass_on = self.recursive && is_dir;
        let passes_right = self.passes_right(&projected);
        let verdict = if has && (!must_pass_on || passes_right) {
            Verdict::Fine
        } else {
            self.judge(path, is_dir, above, &actual, &projected, &model)?
        };
        let mut after = projected;
        let mut granted = false;
        let mut by_deny = false;
        match verdict {
            Verdict::Fine => {}
            Verdict::Grant(reason) => {
                let flags = if must_pass_on {
                    AceFlags::TREE
                } else {
                    AceFlags::NONE
                };
                match after.with_grant(&self.sid, self.wanted, flags) {
                    Some(planned) => {
                        let change = self.change(path, &actual, &planned, reason);
                        self.grants.push(PlannedGrant {
                            path: path.to_path_buf(),
                            flags,
                            change,
                        });
                        after = planned;
                        granted = true;
                    }
                    None => self.skip(path, self.unexplained_reason()),
                }
            }
            Verdict::Skip {
                reason,
                by_deny: deny,
            } => {
                self.skip(path, reason);
                by_deny = deny;
            }
            Verdict::Explained { by_deny: deny } => by_deny = deny,
        }
        Ok(Above {
            passes_right: self.passes_right(&after),
            dacl: Some(after),
            rewritten: recomputed || granted,
            denies: by_deny,
        })
    }

    /// Why a path lacking the right gets no entry, or the entry it gets.
    fn judge(
        &self,
        path: &Path,
        is_dir: bool,
        above: Option<&Above>,
        actual: &Dacl,
        projected: &Dacl,
        model: &AccessCheck,
    ) -> OpResult<Verdict> {
        let must_pass_on = self.recursive && is_dir;
        let inherits = above.is_some() && !actual.protected;
        // A deny that an entry of its own would not beat: an explicit one;
        // where the path inherits, an inherited one too (an entry of its
        // own would override a deny set on a folder above).
        let refusing = model
            .deciding_deny
            .filter(|&i| inherits || !projected.aces[i].is_inherited())
            .or_else(|| {
                must_pass_on
                    .then(|| self.deny_passed_down(projected))
                    .flatten()
            });
        if let Some(index) = refusing {
            let ace = &projected.aces[index];
            return Ok(if ace.is_inherited() && above.is_some_and(|a| a.denies) {
                Verdict::Explained { by_deny: true }
            } else {
                Verdict::Skip {
                    reason: self.deny_reason(ace),
                    by_deny: true,
                }
            });
        }
        if model.grants(self.wanted) && (!must_pass_on || self.passes_right(projected)) {
            return Ok(Verdict::Skip {
                reason: self.unexplained_reason(),
                by_deny: false,
            });
        }
        if let Some(above) = above.filter(|a| inherits && !a.passes_right) {
            return Ok(Verdict::Explained {
                by_deny: above.denies,
            });
        }
        if !actual.unmodeled_types.is_empty() {
            let types: Vec<String> = actual.unmodeled_types.iter().map(u8::to_string).collect();
            return Ok(Verdict::Skip {
                reason: format!(
                    "its access list holds entries medic does not model (ACE types {}); medic does not rewrite it",
                    types.join(", ")
                ),
                by_deny: false,
            });
        }
        if !is_dir {
            let links = self.fs.api.hard_links(path)?;
            if links > 1 {
                return Ok(Verdict::Skip {
                    reason: hard_links_reason(links),
                    by_deny: false,
                });
            }
        }
        Ok(Verdict::Grant(match above {
            None => None,
            Some(_) if actual.protected => Some("inheritance blocked"),
            Some(_) => Some("inheritance not propagated: it lacks what its folder passes down"),
        }))
    }

    /// Whether the model alone proves the principal has the right: an
    /// entry grants it by name, and no deny entry for another SID (a
    /// group it may belong to) could refuse any of it.
    fn model_proves(&self, dacl: &Dacl, model: &AccessCheck) -> bool {
        model.grants(self.wanted)
            && !dacl.aces.iter().any(|ace| {
                ace.kind == AceKind::Deny
                    && ace.applies_here()
                    && !self.model_sids.contains(&ace.sid)
                    && acl::map_generic(ace.mask) & self.wanted != 0
            })
    }

    /// Whether `dacl` passes the whole right to every folder and file below.
    fn passes_right(&self, dacl: &Dacl) -> bool {
        dacl.tree_allowed(&self.model_sids) & self.wanted == self.wanted
    }

    /// An explicit deny entry for the principal that refuses part of the
    /// right to what the folder holds.
    fn deny_passed_down(&self, dacl: &Dacl) -> Option<usize> {
        dacl.aces.iter().position(|ace| {
            ace.kind == AceKind::Deny
                && !ace.is_inherited()
                && (ace.flags.contains(AceFlags::OBJECT_INHERIT)
                    || ace.flags.contains(AceFlags::CONTAINER_INHERIT))
                && self.model_sids.contains(&ace.sid)
                && acl::map_generic(ace.mask) & self.wanted != 0
        })
    }

    fn deny_reason(&self, ace: &Ace) -> String {
        let entry = acl::render_ace(ace, &self.fs.system_name(&ace.sid));
        let right = self.right.as_str();
        if ace.is_inherited() {
            format!(
                "it inherits a deny entry, {entry}, that refuses {right}: change it on the folder where it is set; medic does not override a deny"
            )
        } else {
            format!(
                "an explicit deny entry, {entry}, refuses {right}: an administrator set it, and medic does not override a deny"
            )
        }
    }

    fn unexplained_reason(&self) -> String {
        format!(
            "`{}` lacks {} here although entries grant it by name: a deny entry for a group it belongs to (or a conditional entry) refuses it; medic does not override it",
            self.principal,
            self.right.as_str()
        )
    }

    /// The change from `before` to `after`, naming the principal's entries.
    fn change(
        &self,
        path: &Path,
        before: &Dacl,
        after: &Dacl,
        reason: Option<&str>,
    ) -> AccessChange {
        let mut after = self.entries_text(after);
        if let Some(reason) = reason {
            after.push_str(&format!(" ({reason})"));
        }
        AccessChange {
            path: path.display().to_string(),
            before: self.entries_text(before),
            after,
        }
    }

    /// The principal's entries in `dacl`, as icacls shows them.
    fn entries_text(&self, dacl: &Dacl) -> String {
        let name = self.fs.system_name(&self.sid);
        let entries: Vec<String> = dacl
            .aces
            .iter()
            .filter(|ace| ace.sid == self.sid)
            .map(|ace| acl::render_ace(ace, &name))
            .collect();
        if entries.is_empty() {
            format!("{name}: no entry")
        } else {
            entries.join("; ")
        }
    }

    fn skip(&mut self, path: &Path, reason: String) {
        if self.skipped.len() < MAX_LISTED_SKIPS {
            self.skipped.push(SkippedPath {
                path: path.display().to_string(),
                reason,
            });
        } else {
            self.unlisted_skips += 1;
        }
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Visit everything below `root`, folders depth first, each folder's
    /// entries in name order. Paths that vanish meanwhile are passed over;
    /// one that cannot be read is listed as skipped, with the error.
    fn walk(&mut self, root: &Path, above_root: Above) {
        let mut folders = vec![(root.to_path_buf(), above_root)];
        while let Some((folder, above)) = folders.pop() {
            if self.out_of_time() {
                self.unfinished = Some(folders.len() + 1);
                return;
            }
            let mut entries = match self.fs.api.list(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => {
                    self.skip(&folder, format!("its entries could not be listed: {e}"));
                    continue;
                }
            };
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let mut subfolders = Vec::new();
            for entry in entries {
                if self.out_of_time() {
                    self.unfinished = Some(folders.len() + subfolders.len() + 1);
                    return;
                }
                let path = folder.join(&entry.name);
                if entry.info.reparse_point {
                    self.skip(&path, REPARSE_REASON.to_string());
                    continue;
                }
                match self.visit(&path, entry.info.is_dir, Some(&above)) {
                    Ok(child) if entry.info.is_dir => subfolders.push((path, child)),
                    Ok(_) => {}
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => self.skip(&path, format!("it could not be checked: {e}")),
                }
            }
            folders.extend(subfolders.into_iter().rev());
        }
    }

    /// Make the planned changes, parents first: each list is read again
    /// and the planned entry added to what is there now.
    fn apply(&self) -> OpResult<()> {
        for grant in &self.grants {
            let current = self.fs.api.read_security(&grant.path)?.dacl.ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{}: its access list was removed (a NULL DACL) while medic was working; nothing was written to it",
                        grant.path.display()
                    ),
                )
            })?;
            if !current.unmodeled_types.is_empty() {
                return Err(BackendError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{}: its access list gained entries medic does not model while medic was working; nothing was written to it",
                        grant.path.display()
                    ),
                ));
            }
            if let Some(dacl) = current.with_grant(&self.sid, self.wanted, grant.flags) {
                self.fs.api.write_dacl(&grant.path, &dacl)?;
            }
        }
        Ok(())
    }

    fn report(self, root: &Path, applied: bool) -> AccessReport {
        let mut changed: Vec<AccessChange> =
            self.grants.into_iter().map(|grant| grant.change).collect();
        changed.sort_by(|a, b| a.path.cmp(&b.path));
        let unlisted_changes = changed.len().saturating_sub(MAX_LISTED_CHANGES) as u64;
        changed.truncate(MAX_LISTED_CHANGES);
        let mut skipped = self.skipped;
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        let root_text = root.display().to_string();
        if let Some(folders) = self.unfinished {
            skipped.push(SkippedPath {
                path: root_text.clone(),
                reason: format!("{DEADLINE_REASON} (folders not finished: {folders})"),
            });
        }
        if self.unlisted_skips > 0 {
            skipped.push(SkippedPath {
                path: root_text,
                reason: format!("and {} more paths skipped", self.unlisted_skips),
            });
        }
        if !skipped.is_empty() {
            // Debug formatting: the path is the plugin's to choose.
            tracing::warn!(paths = skipped.len(), ?root, "access repair skipped paths");
        }
        AccessReport {
            checked: self.checked,
            changed,
            unlisted_changes,
            skipped,
            applied,
        }
    }
}

// The fake tree is written with Unix-style absolute paths (`/srv/wsus`),
// which are not absolute on Windows; the decisions it tests are the same
// on every platform, and Windows' own paths are covered by the system
// tests (tests/windows).
#[cfg(all(test, unix))]
mod tests {
    use super::super::acl::mask::*;
    use super::super::fake::FakeAcl;
    use super::super::{SidMap, sid::well_known_by_name};
    use super::*;
    use crate::fs::FileSystem;

    const TREE: AceFlags = AceFlags::TREE;
    const NONE: AceFlags = AceFlags::NONE;
    const I: AceFlags = AceFlags::INHERITED;
    const ROOT: &str = "/srv/wsus/WsusContent";
    const NS_NAME: &str = "NT AUTHORITY\\NETWORK SERVICE";

    fn sid(name: &str) -> Sid {
        Sid::known(well_known_by_name(name).expect("well known").sid)
    }

    fn ns() -> Sid {
        sid("NETWORK SERVICE")
    }

    /// `/srv/wsus` (Administrators and SYSTEM full control, Users read
    /// inherited from above), holding `WsusContent` with two folders of
    /// files and a file of its own, everything inheriting.
    fn tree(root_entries: Vec<Ace>) -> FakeAcl {
        let fake = FakeAcl::default();
        fake.dir(
            "/srv/wsus",
            Dacl::new(
                false,
                vec![
                    Ace::allow(sid("Administrators"), FULL_CONTROL, TREE),
                    Ace::allow(sid("SYSTEM"), FULL_CONTROL, TREE),
                    Ace::allow(sid("Users"), READ, TREE | I),
                ],
            ),
        );
        fake.dir(ROOT, Dacl::new(false, root_entries));
        for dir in ["AB", "CD"] {
            fake.dir(&format!("{ROOT}/{dir}"), Dacl::default());
        }
        for file in ["AB/1.cab", "AB/2.cab", "CD/3.cab", "a.txt"] {
            fake.file(&format!("{ROOT}/{file}"), Dacl::default());
        }
        fake
    }

    fn ntfs(fake: FakeAcl) -> NtfsFileSystem<FakeAcl> {
        let mut map = SidMap::default();
        map.insert("WSUS Admins", "sid:S-1-5-21-1-2-3-1104")
            .unwrap();
        NtfsFileSystem::new(fake, map)
    }

    fn ensure_at(
        fs: &NtfsFileSystem<FakeAcl>,
        relative: &str,
        principal: &str,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> AccessReport {
        let path = Beneath::new(ROOT, relative).unwrap();
        fs.ensure_access(&path, principal, right, recursive, apply, None)
            .unwrap()
    }

    fn ensure(
        fs: &NtfsFileSystem<FakeAcl>,
        right: AccessRight,
        recursive: bool,
        apply: bool,
    ) -> AccessReport {
        ensure_at(fs, "", "NETWORK SERVICE", right, recursive, apply)
    }

    /// Plan, check that planning wrote nothing, apply, check the applied
    /// report is the plan; returns it.
    fn plan_then_apply(
        fs: &NtfsFileSystem<FakeAcl>,
        right: AccessRight,
        recursive: bool,
    ) -> AccessReport {
        let before = fs.api().snapshot();
        let writes = fs.api().writes().len();
        let plan = ensure(fs, right, recursive, false);
        assert!(!plan.applied);
        assert_eq!(fs.api().snapshot(), before, "a dry run changes nothing");
        assert_eq!(fs.api().writes().len(), writes, "a dry run writes nothing");
        let done = ensure(fs, right, recursive, true);
        assert!(done.applied);
        assert_eq!(
            AccessReport {
                applied: false,
                ..done.clone()
            },
            plan,
            "a dry run reports exactly what applying does"
        );
        done
    }

    fn has(fs: &NtfsFileSystem<FakeAcl>, path: &str, right: AccessRight) -> bool {
        let rights = fs.api().effective_rights(Path::new(path), &ns()).unwrap();
        rights & right_mask(right) == right_mask(right)
    }

    fn paths(report: &AccessReport) -> (Vec<&str>, Vec<&str>) {
        (
            report.changed.iter().map(|c| c.path.as_str()).collect(),
            report.skipped.iter().map(|s| s.path.as_str()).collect(),
        )
    }

    fn assert_nothing_to_do(fs: &NtfsFileSystem<FakeAcl>, right: AccessRight, recursive: bool) {
        let writes = fs.api().writes();
        let again = ensure(fs, right, recursive, true);
        assert!(again.changed.is_empty(), "{again:?}");
        assert!(again.skipped.is_empty(), "{again:?}");
        assert_eq!(fs.api().writes(), writes, "nothing written");
    }

    #[test]
    fn a_missing_right_is_one_inheritable_entry_on_the_root_that_windows_passes_down() {
        let fs = ntfs(tree(vec![]));
        let all = [
            ROOT,
            "/srv/wsus/WsusContent/AB",
            "/srv/wsus/WsusContent/AB/1.cab",
            "/srv/wsus/WsusContent/CD/3.cab",
            "/srv/wsus/WsusContent/a.txt",
        ];
        assert!(all.iter().all(|p| !has(&fs, p, AccessRight::FullControl)));
        let done = plan_then_apply(&fs, AccessRight::FullControl, true);
        assert_eq!(done.checked, 7);
        assert_eq!(
            done.changed,
            [AccessChange {
                path: ROOT.to_string(),
                before: format!("{NS_NAME}: no entry"),
                after: format!("{NS_NAME}:(OI)(CI)(F)"),
            }]
        );
        assert!(done.skipped.is_empty());
        assert_eq!(
            fs.api().writes(),
            [PathBuf::from(ROOT)],
            "no per-file rewrite"
        );
        assert!(all.iter().all(|p| has(&fs, p, AccessRight::FullControl)));
        let file = fs.api().dacl("/srv/wsus/WsusContent/AB/1.cab").unwrap();
        assert!(
            file.aces.contains(&Ace::allow(ns(), FULL_CONTROL, I)),
            "{file:?}"
        );
        assert_nothing_to_do(&fs, AccessRight::FullControl, true);
    }

    #[test]
    fn a_right_present_and_passed_down_needs_nothing() {
        let fs = ntfs(tree(vec![Ace::allow(ns(), FULL_CONTROL, TREE)]));
        let report = ensure(&fs, AccessRight::Read, true, true);
        assert_eq!(report.checked, 7);
        assert!(
            report.changed.is_empty() && report.skipped.is_empty(),
            "{report:?}"
        );
        assert!(fs.api().writes().is_empty());
        assert_eq!(fs.api().authz_calls(), 0, "entries by name prove it");
        // Users' read inherited from above the root counts for Users.
        let users = ensure_at(&fs, "", "Users", AccessRight::Read, true, true);
        assert!(users.changed.is_empty(), "{users:?}");
    }

    #[test]
    fn a_right_present_but_not_passed_down_gets_an_inheritable_entry() {
        let fs = ntfs(tree(vec![Ace::allow(ns(), READ, NONE)]));
        let flat = ensure(&fs, AccessRight::Read, false, false);
        assert!(flat.changed.is_empty(), "this folder has it: {flat:?}");
        assert_eq!(flat.checked, 1);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(
            done.changed,
            [AccessChange {
                path: ROOT.to_string(),
                before: format!("{NS_NAME}:(RX)"),
                after: format!("{NS_NAME}:(RX); {NS_NAME}:(OI)(CI)(RX)"),
            }]
        );
        assert!(has(
            &fs,
            "/srv/wsus/WsusContent/CD/3.cab",
            AccessRight::Read
        ));
        assert_nothing_to_do(&fs, AccessRight::Read, true);
    }

    #[test]
    fn an_entry_with_the_same_flags_is_widened_not_doubled() {
        let fs = ntfs(tree(vec![Ace::allow(ns(), READ, TREE)]));
        let done = plan_then_apply(&fs, AccessRight::Modify, true);
        assert_eq!(done.changed.len(), 1);
        assert_eq!(done.changed[0].before, format!("{NS_NAME}:(OI)(CI)(RX)"));
        assert_eq!(done.changed[0].after, format!("{NS_NAME}:(OI)(CI)(M)"));
        let root = fs.api().dacl(ROOT).unwrap();
        assert_eq!(root.explicit().filter(|a| a.sid == ns()).count(), 1);
        assert!(has(
            &fs,
            "/srv/wsus/WsusContent/AB/2.cab",
            AccessRight::Modify
        ));
    }

    #[test]
    fn without_recursion_the_entry_is_for_this_folder_only() {
        let fs = ntfs(tree(vec![]));
        let done = plan_then_apply(&fs, AccessRight::Read, false);
        assert_eq!(done.checked, 1);
        assert_eq!(done.changed[0].after, format!("{NS_NAME}:(RX)"));
        assert!(has(&fs, ROOT, AccessRight::Read));
        assert!(!has(&fs, "/srv/wsus/WsusContent/a.txt", AccessRight::Read));
        assert_nothing_to_do(&fs, AccessRight::Read, false);
    }

    #[test]
    fn an_explicit_deny_on_the_root_is_left_to_the_administrator() {
        let deny = Ace::deny(ns(), WRITE_DATA | APPEND_DATA, TREE);
        let fs = ntfs(tree(vec![deny]));
        let done = plan_then_apply(&fs, AccessRight::Modify, true);
        assert!(done.changed.is_empty(), "{done:?}");
        assert_eq!(paths(&done).1, [ROOT], "only the root is named: {done:?}");
        let reason = &done.skipped[0].reason;
        assert!(
            reason.contains(&format!(
                "an explicit deny entry, {NS_NAME}:(OI)(CI)(DENY)(WD,AD)"
            )),
            "{reason}"
        );
        assert!(reason.contains("refuses modify"), "{reason}");
        assert!(fs.api().writes().is_empty());
        // Read is not what the deny refuses.
        let read = ensure(&fs, AccessRight::Read, true, false);
        assert_eq!(paths(&read).0, [ROOT]);
        assert!(read.skipped.is_empty(), "{read:?}");
        // icacls `W` holds SYNCHRONIZE, which read needs too: denying it
        // refuses read, as on Windows.
        let fs = ntfs(tree(vec![Ace::deny(ns(), WRITE_ONLY, TREE)]));
        let read = ensure(&fs, AccessRight::Read, true, false);
        assert_eq!(paths(&read), (vec![], vec![ROOT]));
    }

    #[test]
    fn an_inherited_deny_on_the_root_yields_to_an_explicit_entry() {
        let fake = tree(vec![]);
        fake.set_dacl(
            ROOT,
            Some(Dacl::new(false, vec![Ace::deny(ns(), READ, TREE | I)])),
        );
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(paths(&done).0, [ROOT]);
        assert!(done.skipped.is_empty(), "{done:?}");
        for path in [
            ROOT,
            "/srv/wsus/WsusContent/AB",
            "/srv/wsus/WsusContent/AB/1.cab",
        ] {
            assert!(has(&fs, path, AccessRight::Read), "{path}");
        }
        assert_nothing_to_do(&fs, AccessRight::Read, true);
    }

    #[test]
    fn protected_children_get_their_own_entry_and_nothing_else_does() {
        let fake = tree(vec![]);
        let admins_only = || {
            Dacl::new(
                true,
                vec![Ace::allow(sid("Administrators"), FULL_CONTROL, TREE)],
            )
        };
        fake.set_dacl("/srv/wsus/WsusContent/AB", Some(admins_only()));
        fake.set_dacl("/srv/wsus/WsusContent/CD/3.cab", Some(admins_only()));
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(done.checked, 7);
        assert_eq!(
            done.changed,
            [
                AccessChange {
                    path: ROOT.to_string(),
                    before: format!("{NS_NAME}: no entry"),
                    after: format!("{NS_NAME}:(OI)(CI)(RX)"),
                },
                AccessChange {
                    path: format!("{ROOT}/AB"),
                    before: format!("{NS_NAME}: no entry"),
                    after: format!("{NS_NAME}:(OI)(CI)(RX) (inheritance blocked)"),
                },
                AccessChange {
                    path: format!("{ROOT}/CD/3.cab"),
                    before: format!("{NS_NAME}: no entry"),
                    after: format!("{NS_NAME}:(RX) (inheritance blocked)"),
                },
            ]
        );
        assert_eq!(
            fs.api().writes(),
            [
                ROOT,
                "/srv/wsus/WsusContent/AB",
                "/srv/wsus/WsusContent/CD/3.cab"
            ]
            .map(PathBuf::from)
        );
        assert!(
            fs.api().dacl("/srv/wsus/WsusContent/AB").unwrap().protected,
            "still protected"
        );
        for path in [
            "/srv/wsus/WsusContent/AB/1.cab",
            "/srv/wsus/WsusContent/CD/3.cab",
        ] {
            assert!(has(&fs, path, AccessRight::Read), "{path}");
        }
        assert_nothing_to_do(&fs, AccessRight::Read, true);
    }

    #[test]
    fn a_protected_child_that_has_the_right_is_left_alone() {
        let fake = tree(vec![]);
        fake.set_dacl(
            "/srv/wsus/WsusContent/AB",
            Some(Dacl::new(true, vec![Ace::allow(ns(), FULL_CONTROL, TREE)])),
        );
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(paths(&done).0, [ROOT]);
    }

    #[test]
    fn a_deny_on_a_child_is_not_overridden_and_what_inherits_it_is_not_listed_again() {
        let fake = tree(vec![]);
        fake.set_dacl(
            "/srv/wsus/WsusContent/CD",
            Some(Dacl::new(false, vec![Ace::deny(ns(), READ_DATA, TREE)])),
        );
        fake.set_dacl(
            "/srv/wsus/WsusContent/a.txt",
            Some(Dacl::new(false, vec![Ace::deny(ns(), FULL_CONTROL, NONE)])),
        );
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(
            paths(&done),
            (
                vec![ROOT],
                vec!["/srv/wsus/WsusContent/CD", "/srv/wsus/WsusContent/a.txt"]
            )
        );
        assert!(
            done.skipped[0]
                .reason
                .contains(&format!("{NS_NAME}:(OI)(CI)(DENY)(RD)"))
        );
        assert!(
            done.skipped[1]
                .reason
                .contains(&format!("{NS_NAME}:(DENY)(F)"))
        );
        assert!(
            done.skipped
                .iter()
                .all(|s| s.reason.contains("does not override a deny"))
        );
        assert_eq!(fs.api().writes(), [PathBuf::from(ROOT)]);
        assert!(!has(
            &fs,
            "/srv/wsus/WsusContent/CD/3.cab",
            AccessRight::Read
        ));
        assert!(has(
            &fs,
            "/srv/wsus/WsusContent/AB/1.cab",
            AccessRight::Read
        ));
    }

    #[test]
    fn an_inherited_deny_set_inside_the_tree_is_named_where_it_is_not_explained() {
        let fake = tree(vec![Ace::allow(ns(), READ, TREE)]);
        // A file whose inherited entries say deny, as if its folder had
        // passed one down (and the folder's own list no longer shows it).
        let file = "/srv/wsus/WsusContent/AB/2.cab";
        let mut list = fake.dacl(file).unwrap();
        list.aces.insert(0, Ace::deny(ns(), READ, I));
        fake.set_dacl_unpropagated(file, list);
        let fs = ntfs(fake);
        let report = ensure(&fs, AccessRight::Read, true, false);
        assert_eq!(paths(&report), (vec![], vec![file]));
        assert!(report.skipped[0].reason.contains("inherits a deny entry"));
    }

    #[test]
    fn a_deny_for_a_group_of_the_principal_is_found_by_the_system_check() {
        let fake = tree(vec![Ace::allow(ns(), READ, TREE)]);
        fake.member_of(&ns(), &sid("Users"));
        fake.set_dacl(
            "/srv/wsus/WsusContent/AB/2.cab",
            Some(Dacl::new(false, vec![Ace::deny(sid("Users"), READ, NONE)])),
        );
        let fs = ntfs(fake);
        let report = ensure(&fs, AccessRight::Read, true, true);
        assert_eq!(
            paths(&report),
            (vec![], vec!["/srv/wsus/WsusContent/AB/2.cab"])
        );
        assert!(
            report.skipped[0]
                .reason
                .contains("although entries grant it by name"),
            "{report:?}"
        );
        assert_eq!(
            fs.api().authz_calls(),
            1,
            "only where the model could not tell"
        );
        assert!(fs.api().writes().is_empty());
    }

    #[test]
    fn a_child_that_missed_propagation_gets_its_own_entry() {
        let fake = tree(vec![Ace::allow(ns(), READ, TREE)]);
        fake.set_dacl_unpropagated("/srv/wsus/WsusContent/CD", Dacl::default());
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(paths(&done).0, ["/srv/wsus/WsusContent/CD"]);
        assert!(
            done.changed[0]
                .after
                .ends_with("(inheritance not propagated: it lacks what its folder passes down)")
        );
        assert_nothing_to_do(&fs, AccessRight::Read, true);
    }

    #[test]
    fn reparse_points_are_listed_and_never_entered() {
        let fake = tree(vec![]);
        fake.reparse("/srv/wsus/WsusContent/link", true);
        fake.file("/srv/wsus/WsusContent/link/elsewhere.cab", Dacl::default());
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(
            done.checked, 7,
            "the link and what is behind it are not checked"
        );
        assert_eq!(
            paths(&done),
            (vec![ROOT], vec!["/srv/wsus/WsusContent/link"])
        );
        assert!(done.skipped[0].reason.contains("reparse point"));
        // Named directly, a reparse point is skipped too.
        let direct = ensure_at(
            &fs,
            "link",
            "NETWORK SERVICE",
            AccessRight::Read,
            true,
            true,
        );
        assert_eq!(direct.checked, 0);
        assert_eq!(paths(&direct).1, ["/srv/wsus/WsusContent/link"]);
        let below = Beneath::new(ROOT, "link/elsewhere.cab").unwrap();
        let err = fs
            .ensure_access(
                &below,
                "NETWORK SERVICE",
                AccessRight::Read,
                false,
                true,
                None,
            )
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Denied);
    }

    #[test]
    fn the_deadline_stops_the_walk_and_says_so() {
        let fs = ntfs(tree(vec![]));
        let path = Beneath::new(ROOT, "").unwrap();
        let past = Some(Instant::now());
        let report = fs
            .ensure_access(
                &path,
                "NETWORK SERVICE",
                AccessRight::Read,
                true,
                true,
                past,
            )
            .unwrap();
        assert_eq!(report.checked, 1);
        assert_eq!(paths(&report), (vec![ROOT], vec![ROOT]));
        assert!(
            report.skipped[0]
                .reason
                .contains("deadline came before the walk ended")
                && report.skipped[0].reason.contains("folders not finished: 1"),
            "{report:?}"
        );
        assert_eq!(
            fs.api().writes(),
            [PathBuf::from(ROOT)],
            "what was planned is done"
        );
    }

    #[test]
    fn principals_resolve_through_the_map_well_known_names_and_sids() {
        let fs = ntfs(tree(vec![]));
        let err = fs
            .ensure_access(
                &Beneath::new(ROOT, "").unwrap(),
                "WSUS Operators",
                AccessRight::Read,
                true,
                true,
                None,
            )
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("map it to its SID"), "{err}");
        let mapped = ensure_at(&fs, "", "wsus admins", AccessRight::Modify, false, false);
        assert_eq!(
            mapped.changed[0].after, "S-1-5-21-1-2-3-1104:(M)",
            "an account the system cannot name shows as its SID"
        );
        let literal = ensure_at(&fs, "", "sid:S-1-5-20", AccessRight::Read, false, false);
        let named = ensure_at(
            &fs,
            "",
            "NT AUTHORITY\\Network Service",
            AccessRight::Read,
            false,
            false,
        );
        assert_eq!(literal, named);
    }

    #[test]
    fn a_null_dacl_is_not_replaced() {
        let fake = tree(vec![]);
        fake.set_dacl(ROOT, None);
        let fs = ntfs(fake);
        let flat = ensure(&fs, AccessRight::FullControl, false, true);
        assert!(
            flat.changed.is_empty() && flat.skipped.is_empty(),
            "{flat:?}"
        );
        let deep = ensure(&fs, AccessRight::Read, true, true);
        assert!(deep.changed.is_empty(), "{deep:?}");
        assert_eq!(paths(&deep).1, [ROOT]);
        assert!(deep.skipped[0].reason.contains("NULL DACL"));
        assert!(fs.api().writes().is_empty());
    }

    #[test]
    fn lists_with_unmodelled_entries_and_hard_linked_files_are_not_rewritten() {
        let fake = tree(vec![]);
        let mut odd = Dacl::new(true, vec![]);
        odd.unmodeled_types.push(11);
        fake.set_dacl("/srv/wsus/WsusContent/AB", Some(odd));
        fake.file_with("/srv/wsus/WsusContent/linked.cab", Vec::new(), 3);
        fake.set_dacl(
            "/srv/wsus/WsusContent/linked.cab",
            Some(Dacl::new(true, vec![])),
        );
        let fs = ntfs(fake);
        let done = plan_then_apply(&fs, AccessRight::Read, true);
        assert_eq!(paths(&done).0, [ROOT]);
        assert_eq!(
            paths(&done).1,
            [
                "/srv/wsus/WsusContent/AB",
                "/srv/wsus/WsusContent/linked.cab"
            ]
        );
        assert!(done.skipped[0].reason.contains("ACE types 11"));
        assert!(done.skipped[1].reason.contains("3 hard links"));
        let linked = Beneath::new(ROOT, "linked.cab").unwrap();
        let err = fs
            .ensure_access(
                &linked,
                "NETWORK SERVICE",
                AccessRight::Read,
                false,
                true,
                None,
            )
            .unwrap_err();
        assert!(err.message.contains("3 hard links"), "{err}");
    }

    #[test]
    fn a_single_file_gets_a_plain_entry() {
        let fake = tree(vec![]);
        fake.set_dacl(
            "/srv/wsus/WsusContent/a.txt",
            Some(Dacl::new(
                true,
                vec![Ace::allow(ns(), FILE_GENERIC_READ, NONE)],
            )),
        );
        let fs = ntfs(fake);
        let path = Beneath::new(ROOT, "a.txt").unwrap();
        let done = fs
            .ensure_access(
                &path,
                "NETWORK SERVICE",
                AccessRight::Read,
                true,
                true,
                None,
            )
            .unwrap();
        assert_eq!(done.checked, 1);
        assert_eq!(done.changed[0].before, format!("{NS_NAME}:(R)"));
        assert_eq!(done.changed[0].after, format!("{NS_NAME}:(RX)"));
        assert!(has(&fs, "/srv/wsus/WsusContent/a.txt", AccessRight::Read));
    }
}
