//! An in-memory [`AclApi`] for tests: a tree of paths with synthetic
//! access lists. Setting a list recomputes the inherited entries of
//! everything below the way Windows propagates them ([`Dacl::under`]);
//! effective rights come from the reference check, with the principal's
//! SID, `Everyone` and the groups a test makes it a member of.

use super::acl::check_access;
use super::{AclApi, Dacl, DirEntry, NodeInfo, SecurityDescriptor, Sid};
use crate::{BackendError, ErrorKind, OpResult};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone)]
struct Node {
    info: NodeInfo,
    links: u32,
    contents: Vec<u8>,
    owner: Option<Sid>,
    dacl: Option<Dacl>,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<PathBuf, Node>,
    groups: BTreeMap<Sid, Vec<Sid>>,
    accounts: BTreeMap<Sid, String>,
    writes: Vec<PathBuf>,
    authz_calls: u64,
}

impl State {
    fn node(&self, path: &Path) -> OpResult<&Node> {
        self.nodes.get(path).ok_or_else(|| {
            BackendError::new(
                ErrorKind::NotFound,
                format!("{}: no such file or folder", path.display()),
            )
        })
    }

    fn parent_dacl(&self, path: &Path) -> Option<Option<Dacl>> {
        let parent = self.nodes.get(path.parent()?)?;
        Some(parent.dacl.clone())
    }

    /// Set the list of `path` and recompute what inherits from it.
    fn set_dacl(&mut self, path: &Path, dacl: Option<Dacl>) {
        let dacl = self.inherit_into(path, dacl);
        self.nodes.get_mut(path).expect("node exists").dacl = dacl;
        let below: Vec<PathBuf> = self
            .nodes
            .keys()
            .filter(|p| p.starts_with(path) && p.as_path() != path)
            .cloned()
            .collect();
        for p in below {
            let own = self.nodes[&p].dacl.clone();
            let dacl = self.inherit_into(&p, own);
            self.nodes.get_mut(&p).expect("listed").dacl = dacl;
        }
    }

    /// `dacl` as it is on `path` under its parent: the parent's entries
    /// recomputed in, unless it is protected, a NULL DACL, or the top.
    fn inherit_into(&self, path: &Path, dacl: Option<Dacl>) -> Option<Dacl> {
        let dacl = dacl?;
        let is_dir = self.nodes.get(path).is_some_and(|n| n.info.is_dir);
        Some(match self.parent_dacl(path) {
            Some(parent) => dacl.under(parent.as_ref(), is_dir),
            None => dacl,
        })
    }
}

/// The fake system.
#[derive(Debug, Default)]
pub struct FakeAcl {
    state: Mutex<State>,
}

impl FakeAcl {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, path: &str, is_dir: bool, dacl: Dacl, contents: Vec<u8>, links: u32) {
        let mut state = self.state();
        let path = PathBuf::from(path);
        state.nodes.insert(
            path.clone(),
            Node {
                info: NodeInfo {
                    is_dir,
                    reparse_point: false,
                    size: contents.len() as u64,
                    modified_ms: 1_700_000_000_000,
                },
                links,
                contents,
                owner: Some(Sid::known("S-1-5-32-544")),
                dacl: None,
            },
        );
        state.set_dacl(&path, Some(dacl));
    }

    /// A folder with the entries (explicit, or inherited from above the
    /// top) of `dacl`; it inherits from its parent unless protected.
    pub fn dir(&self, path: &str, dacl: Dacl) {
        self.add(path, true, dacl, Vec::new(), 1);
    }

    /// A file with one name.
    pub fn file(&self, path: &str, dacl: Dacl) {
        self.add(path, false, dacl, Vec::new(), 1);
    }

    /// A file with contents and `links` names, inheriting its list.
    pub fn file_with(&self, path: &str, contents: Vec<u8>, links: u32) {
        self.add(path, false, Dacl::default(), contents, links);
    }

    /// Make `path` a reparse point (a junction when `is_dir`), creating it.
    pub fn reparse(&self, path: &str, is_dir: bool) {
        if !self.state().nodes.contains_key(Path::new(path)) {
            self.add(path, is_dir, Dacl::default(), Vec::new(), 1);
        }
        let mut state = self.state();
        let node = state.nodes.get_mut(Path::new(path)).expect("added");
        node.info.reparse_point = true;
    }

    /// Set a list as an administrator would (not counted as a write).
    pub fn set_dacl(&self, path: &str, dacl: Option<Dacl>) {
        self.state().set_dacl(Path::new(path), dacl);
    }

    /// Set a list without recomputing anything (as a tool that does not
    /// propagate would leave it).
    pub fn set_dacl_unpropagated(&self, path: &str, dacl: Dacl) {
        let mut state = self.state();
        state.nodes.get_mut(Path::new(path)).expect("node").dacl = Some(dacl);
    }

    pub fn set_owner(&self, path: &str, owner: Sid) {
        let mut state = self.state();
        state.nodes.get_mut(Path::new(path)).expect("node").owner = Some(owner);
    }

    pub fn name_account(&self, sid: &str, name: &str) {
        let sid = Sid::parse(sid).expect("test SID");
        self.state().accounts.insert(sid, name.to_string());
    }

    /// Make `member` a member of `group` for effective rights.
    pub fn member_of(&self, member: &Sid, group: &Sid) {
        let mut state = self.state();
        state
            .groups
            .entry(member.clone())
            .or_default()
            .push(group.clone());
    }

    /// The list of `path` as it is now.
    pub fn dacl(&self, path: &str) -> Option<Dacl> {
        self.state().nodes[Path::new(path)].dacl.clone()
    }

    /// The paths whose lists were written, in order.
    pub fn writes(&self) -> Vec<PathBuf> {
        self.state().writes.clone()
    }

    pub fn authz_calls(&self) -> u64 {
        self.state().authz_calls
    }

    /// Every path and its list, to compare states.
    pub fn snapshot(&self) -> Vec<(PathBuf, Option<Dacl>)> {
        let state = self.state();
        state
            .nodes
            .iter()
            .map(|(p, n)| (p.clone(), n.dacl.clone()))
            .collect()
    }
}

impl AclApi for FakeAcl {
    fn metadata(&self, path: &Path) -> OpResult<NodeInfo> {
        Ok(self.state().node(path)?.info)
    }

    fn list(&self, path: &Path) -> OpResult<Vec<DirEntry>> {
        let state = self.state();
        if !state.node(path)?.info.is_dir {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!("{}: not a folder", path.display()),
            ));
        }
        Ok(state
            .nodes
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, n)| DirEntry {
                name: p.file_name().expect("named").to_owned(),
                info: n.info,
            })
            .collect())
    }

    fn hard_links(&self, path: &Path) -> OpResult<u32> {
        Ok(self.state().node(path)?.links)
    }

    fn read_contents(&self, path: &Path, max_bytes: u32) -> OpResult<Vec<u8>> {
        let state = self.state();
        let contents = &state.node(path)?.contents;
        Ok(contents[..contents.len().min(max_bytes as usize)].to_vec())
    }

    fn read_security(&self, path: &Path) -> OpResult<SecurityDescriptor> {
        let state = self.state();
        let node = state.node(path)?;
        Ok(SecurityDescriptor {
            owner: node.owner.clone(),
            dacl: node.dacl.clone(),
        })
    }

    fn write_dacl(&self, path: &Path, dacl: &Dacl) -> OpResult<()> {
        let mut state = self.state();
        state.node(path)?;
        state.writes.push(path.to_path_buf());
        state.set_dacl(path, Some(dacl.clone()));
        Ok(())
    }

    fn effective_rights(&self, path: &Path, sid: &Sid) -> OpResult<u32> {
        let mut state = self.state();
        state.authz_calls += 1;
        let mut sids = vec![sid.clone(), Sid::everyone()];
        sids.extend(state.groups.get(sid).into_iter().flatten().cloned());
        let node = state.node(path)?;
        Ok(check_access(node.dacl.as_ref(), &sids, u32::MAX).granted)
    }

    fn account_name(&self, sid: &Sid) -> Option<String> {
        self.state().accounts.get(sid).cloned()
    }
}
