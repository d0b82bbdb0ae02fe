//! A model of an NTFS discretionary access list (DACL): its entries, the
//! rights they carry, how Windows passes inheritable entries down to
//! folders and files, a reference access check, and the icacls-like text
//! reports show.
//!
//! A `None` DACL (a "NULL DACL", no list at all) gives everyone full
//! control; an empty list gives no one anything.
//!
//! The access check here is a reference, not the authority: on Windows the
//! Authz API decides (it knows group memberships, owner rights and
//! conditional entries). The model is what the planner reasons with about
//! a change not made yet, what the tests' fake system answers with, and
//! what explains a decision in a report.

use super::sid::Sid;
use crate::fs::AccessRight;

/// Access mask bits, as `winnt.h` defines them for files and folders.
pub mod mask {
    pub const READ_DATA: u32 = 0x0000_0001;
    pub const WRITE_DATA: u32 = 0x0000_0002;
    pub const APPEND_DATA: u32 = 0x0000_0004;
    pub const READ_EA: u32 = 0x0000_0008;
    pub const WRITE_EA: u32 = 0x0000_0010;
    pub const EXECUTE: u32 = 0x0000_0020;
    pub const DELETE_CHILD: u32 = 0x0000_0040;
    pub const READ_ATTRIBUTES: u32 = 0x0000_0080;
    pub const WRITE_ATTRIBUTES: u32 = 0x0000_0100;
    pub const DELETE: u32 = 0x0001_0000;
    pub const READ_CONTROL: u32 = 0x0002_0000;
    pub const WRITE_DAC: u32 = 0x0004_0000;
    pub const WRITE_OWNER: u32 = 0x0008_0000;
    pub const SYNCHRONIZE: u32 = 0x0010_0000;
    pub const ACCESS_SYSTEM_SECURITY: u32 = 0x0100_0000;
    pub const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
    pub const GENERIC_ALL: u32 = 0x1000_0000;
    pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
    pub const GENERIC_WRITE: u32 = 0x4000_0000;
    pub const GENERIC_READ: u32 = 0x8000_0000;
    pub const GENERIC_ANY: u32 = GENERIC_ALL | GENERIC_EXECUTE | GENERIC_WRITE | GENERIC_READ;

    /// `FILE_GENERIC_READ`: icacls `R`.
    pub const FILE_GENERIC_READ: u32 = 0x0012_0089;
    /// `FILE_GENERIC_WRITE`.
    pub const FILE_GENERIC_WRITE: u32 = 0x0012_0116;
    /// `FILE_GENERIC_EXECUTE`.
    pub const FILE_GENERIC_EXECUTE: u32 = 0x0012_00A0;
    /// icacls `W`: `FILE_GENERIC_WRITE` without `READ_CONTROL`.
    pub const WRITE_ONLY: u32 = 0x0010_0116;
    /// Read: `FILE_GENERIC_READ | FILE_GENERIC_EXECUTE`, icacls `RX`.
    pub const READ: u32 = FILE_GENERIC_READ | FILE_GENERIC_EXECUTE;
    /// Modify: read, write and `DELETE`, icacls `M`.
    pub const MODIFY: u32 = READ | FILE_GENERIC_WRITE | DELETE;
    /// Full control: `FILE_ALL_ACCESS`, icacls `F`.
    pub const FULL_CONTROL: u32 = 0x001F_01FF;
}

/// The mask that stands for `right`.
pub fn right_mask(right: AccessRight) -> u32 {
    match right {
        AccessRight::Read => mask::READ,
        AccessRight::Modify => mask::MODIFY,
        AccessRight::FullControl => mask::FULL_CONTROL,
    }
}

/// `mask` with its generic bits replaced by the file rights they stand for
/// (the file object's generic mapping).
pub fn map_generic(bits: u32) -> u32 {
    let mut mapped = bits & !mask::GENERIC_ANY;
    for (generic, specific) in [
        (mask::GENERIC_READ, mask::FILE_GENERIC_READ),
        (mask::GENERIC_WRITE, mask::FILE_GENERIC_WRITE),
        (mask::GENERIC_EXECUTE, mask::FILE_GENERIC_EXECUTE),
        (mask::GENERIC_ALL, mask::FULL_CONTROL),
    ] {
        if bits & generic != 0 {
            mapped |= specific;
        }
    }
    mapped
}

/// The strongest [`AccessRight`] whose every bit `bits` holds (generic bits
/// mapped first); `None` below read (`R` without `X` is not read here).
pub fn strongest_right(bits: u32) -> Option<AccessRight> {
    let bits = map_generic(bits);
    [
        AccessRight::FullControl,
        AccessRight::Modify,
        AccessRight::Read,
    ]
    .into_iter()
    .find(|&right| bits & right_mask(right) == right_mask(right))
}

/// Whether an entry allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AceKind {
    Allow,
    Deny,
}

/// An entry's inheritance flags, with the bit values of `ACE_HEADER.AceFlags`
/// so that they cross to and from the system unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AceFlags(u8);

impl AceFlags {
    pub const NONE: Self = Self(0);
    /// (OI): files below inherit it.
    pub const OBJECT_INHERIT: Self = Self(0x01);
    /// (CI): folders below inherit it.
    pub const CONTAINER_INHERIT: Self = Self(0x02);
    /// (NP): inherited one level only.
    pub const NO_PROPAGATE: Self = Self(0x04);
    /// (IO): only passed down, not applied where it is.
    pub const INHERIT_ONLY: Self = Self(0x08);
    /// (I): inherited from the folder above, not set here.
    pub const INHERITED: Self = Self(0x10);
    /// (OI)(CI): this folder, its subfolders and files.
    pub const TREE: Self = Self(0x03);

    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Only the inheritance part: (OI), (CI), (NP), (IO).
    pub const fn inheritance(self) -> Self {
        Self(self.0 & 0x0f)
    }
}

impl std::ops::BitOr for AceFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// One access-allowed or access-denied entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ace {
    pub kind: AceKind,
    pub sid: Sid,
    pub mask: u32,
    pub flags: AceFlags,
}

impl Ace {
    pub fn allow(sid: Sid, mask: u32, flags: AceFlags) -> Self {
        Self {
            kind: AceKind::Allow,
            sid,
            mask,
            flags,
        }
    }

    pub fn deny(sid: Sid, mask: u32, flags: AceFlags) -> Self {
        Self {
            kind: AceKind::Deny,
            sid,
            mask,
            flags,
        }
    }

    pub fn is_inherited(&self) -> bool {
        self.flags.contains(AceFlags::INHERITED)
    }

    /// Whether it applies to the object it is on (not inherit-only).
    pub fn applies_here(&self) -> bool {
        !self.flags.contains(AceFlags::INHERIT_ONLY)
    }

    /// Whether it passes down to everything below: (OI)(CI) without (NP).
    pub fn reaches_whole_tree(&self) -> bool {
        self.flags.contains(AceFlags::TREE) && !self.flags.contains(AceFlags::NO_PROPAGATE)
    }
}

/// A discretionary access list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dacl {
    /// Inheritance from the folder above is blocked (`SE_DACL_PROTECTED`).
    pub protected: bool,
    /// The allow and deny entries, in the list's order.
    pub aces: Vec<Ace>,
    /// The types of entries the model does not hold (object and callback
    /// entries, `ACE_HEADER.AceType`). The reference check ignores them; a
    /// list that has any is never rewritten, since writing the model back
    /// would drop them.
    pub unmodeled_types: Vec<u8>,
}

impl Dacl {
    pub fn new(protected: bool, aces: Vec<Ace>) -> Self {
        Self {
            protected,
            aces,
            unmodeled_types: Vec::new(),
        }
    }

    /// The entries set on this object itself.
    pub fn explicit(&self) -> impl Iterator<Item = &Ace> {
        self.aces.iter().filter(|ace| !ace.is_inherited())
    }

    /// This list as Windows recomputes it under `parent`: unless protected,
    /// its own entries followed by what `parent` passes down (a NULL DACL
    /// passes nothing).
    pub fn under(&self, parent: Option<&Dacl>, is_dir: bool) -> Dacl {
        if self.protected {
            return self.clone();
        }
        let mut aces: Vec<Ace> = self.explicit().cloned().collect();
        if let Some(parent) = parent {
            aces.extend(inherited_from(parent, is_dir));
        }
        Dacl {
            protected: false,
            aces,
            unmodeled_types: self.unmodeled_types.clone(),
        }
    }

    /// The union of the rights that allow entries for any of `sids` pass to
    /// every folder and file below (generic bits mapped).
    pub fn tree_allowed(&self, sids: &[Sid]) -> u32 {
        self.aces
            .iter()
            .filter(|ace| {
                ace.kind == AceKind::Allow && ace.reaches_whole_tree() && sids.contains(&ace.sid)
            })
            .fold(0, |bits, ace| bits | map_generic(ace.mask))
    }

    /// This list with an explicit allow entry giving `sid` at least `bits`
    /// with `flags`: merged into an explicit allow entry for the same SID
    /// with the same flags, or else added after the last explicit entry (so
    /// after the explicit denies and before the inherited entries, the
    /// canonical order). `None` when such an entry already holds `bits`.
    pub fn with_grant(&self, sid: &Sid, bits: u32, flags: AceFlags) -> Option<Dacl> {
        let mut dacl = self.clone();
        let same = dacl.aces.iter_mut().find(|ace| {
            ace.kind == AceKind::Allow
                && !ace.is_inherited()
                && &ace.sid == sid
                && ace.flags == flags
        });
        match same {
            Some(ace) if ace.mask & bits == bits => return None,
            Some(ace) => ace.mask |= bits,
            None => {
                let at = dacl
                    .aces
                    .iter()
                    .rposition(|ace| !ace.is_inherited())
                    .map_or(0, |last| last + 1);
                dacl.aces.insert(at, Ace::allow(sid.clone(), bits, flags));
            }
        }
        Some(dacl)
    }
}

/// The entries a folder's list `parent` passes to a child folder
/// (`is_dir`) or file, flagged inherited, as Windows computes them:
/// - a file gets every (OI) entry, applied to it;
/// - a folder gets every (CI) entry, applied to it and passed on (OI and CI
///   kept) unless (NP) stops it there; an (OI) entry without (CI) reaches a
///   folder only as inherit-only, to be passed to its files, and not with
///   (NP);
/// - where an entry with generic bits applies, it applies with them mapped
///   to file rights, and a folder keeps the generic entry inherit-only
///   beside it to pass on.
///
/// Not modelled: CREATOR OWNER and CREATOR GROUP are not replaced by the
/// child's owner and group.
pub fn inherited_from(parent: &Dacl, is_dir: bool) -> Vec<Ace> {
    let (oi, ci, np) = (
        AceFlags::OBJECT_INHERIT,
        AceFlags::CONTAINER_INHERIT,
        AceFlags::NO_PROPAGATE,
    );
    let mut out = Vec::new();
    for ace in &parent.aces {
        let flags = ace.flags;
        let inherited = |mask: u32, inheritance: AceFlags| Ace {
            kind: ace.kind,
            sid: ace.sid.clone(),
            mask,
            flags: inheritance | AceFlags::INHERITED,
        };
        if !is_dir {
            if flags.contains(oi) {
                out.push(inherited(map_generic(ace.mask), AceFlags::NONE));
            }
            continue;
        }
        if flags.contains(ci) {
            if flags.contains(np) {
                out.push(inherited(map_generic(ace.mask), AceFlags::NONE));
            } else if ace.mask & mask::GENERIC_ANY != 0 {
                out.push(inherited(map_generic(ace.mask), AceFlags::NONE));
                out.push(inherited(
                    ace.mask,
                    flags.inheritance().without(np) | AceFlags::INHERIT_ONLY,
                ));
            } else {
                out.push(inherited(
                    ace.mask,
                    flags.inheritance().without(AceFlags::INHERIT_ONLY),
                ));
            }
        } else if flags.contains(oi) && !flags.contains(np) {
            out.push(inherited(ace.mask, oi | AceFlags::INHERIT_ONLY));
        }
    }
    out
}

/// What the reference check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessCheck {
    /// The rights granted (of those asked for, once all were granted).
    pub granted: u32,
    /// The index of the first deny entry that refused a right still asked
    /// for, if any.
    pub deciding_deny: Option<usize>,
}

impl AccessCheck {
    pub fn grants(&self, wanted: u32) -> bool {
        self.granted & wanted == wanted
    }
}

/// The reference access check: walk the list in order; an entry applies
/// when its SID is one of `sids` (the principal's own and its groups) and
/// it is not inherit-only; a deny entry refuses the rights it names that
/// are still wanted and not yet granted, an allow entry grants those not
/// yet refused; the walk stops once every wanted right is granted. With
/// `wanted = u32::MAX` it computes the maximum allowed. A NULL DACL grants
/// everything. Entries the model does not hold are ignored.
pub fn check_access(dacl: Option<&Dacl>, sids: &[Sid], wanted: u32) -> AccessCheck {
    let Some(dacl) = dacl else {
        return AccessCheck {
            granted: mask::FULL_CONTROL,
            deciding_deny: None,
        };
    };
    let (mut granted, mut denied, mut deciding_deny) = (0u32, 0u32, None);
    for (index, ace) in dacl.aces.iter().enumerate() {
        if granted & wanted == wanted {
            break;
        }
        if !ace.applies_here() || !sids.contains(&ace.sid) {
            continue;
        }
        let bits = map_generic(ace.mask) & wanted;
        match ace.kind {
            AceKind::Deny => {
                let refused = bits & !granted & !denied;
                if refused != 0 {
                    denied |= refused;
                    deciding_deny.get_or_insert(index);
                }
            }
            AceKind::Allow => granted |= bits & !denied,
        }
    }
    AccessCheck {
        granted,
        deciding_deny,
    }
}

/// A mask as icacls writes it, without the parentheses: `F`, `M`, `RX`,
/// `R`, `W`, or a list such as `RX,W` or `GR,GE` or `RD,WDAC`; `N` for none.
pub fn render_mask(bits: u32) -> String {
    use mask::*;
    let specific = bits & !GENERIC_ANY;
    let mut parts: Vec<&str> = Vec::new();
    let mut covered = 0;
    let simple: &[(&str, u32)] = match specific {
        FULL_CONTROL => &[("F", FULL_CONTROL)],
        MODIFY => &[("M", MODIFY)],
        _ => &[("RX", READ), ("R", FILE_GENERIC_READ), ("W", WRITE_ONLY)],
    };
    for &(name, right) in simple {
        if specific & right == right && right & !covered != 0 {
            parts.push(name);
            covered |= right;
        }
    }
    for (name, bit) in [
        ("D", DELETE),
        ("RC", READ_CONTROL),
        ("WDAC", WRITE_DAC),
        ("WO", WRITE_OWNER),
        ("S", SYNCHRONIZE),
        ("AS", ACCESS_SYSTEM_SECURITY),
        ("MA", MAXIMUM_ALLOWED),
        ("RD", READ_DATA),
        ("WD", WRITE_DATA),
        ("AD", APPEND_DATA),
        ("REA", READ_EA),
        ("WEA", WRITE_EA),
        ("X", EXECUTE),
        ("DC", DELETE_CHILD),
        ("RA", READ_ATTRIBUTES),
        ("WA", WRITE_ATTRIBUTES),
        ("GR", GENERIC_READ),
        ("GW", GENERIC_WRITE),
        ("GE", GENERIC_EXECUTE),
        ("GA", GENERIC_ALL),
    ] {
        if bits & bit != 0 && covered & bit == 0 {
            parts.push(name);
        }
    }
    // Bits icacls has no letter for, so that nothing is hidden.
    let known = FULL_CONTROL | ACCESS_SYSTEM_SECURITY | MAXIMUM_ALLOWED | GENERIC_ANY;
    let unknown = bits & !known;
    let unknown = (unknown != 0).then(|| format!("0x{unknown:x}"));
    parts.extend(unknown.as_deref());
    if parts.is_empty() {
        "N".to_string()
    } else {
        parts.join(",")
    }
}

/// An entry as icacls shows it, naming its SID `who`:
/// `NT AUTHORITY\NETWORK SERVICE:(I)(OI)(CI)(F)`, `Everyone:(DENY)(W)`.
pub fn render_ace(ace: &Ace, who: &str) -> String {
    let mut text = format!("{who}:");
    for (flag, name) in [
        (AceFlags::INHERITED, "(I)"),
        (AceFlags::OBJECT_INHERIT, "(OI)"),
        (AceFlags::CONTAINER_INHERIT, "(CI)"),
        (AceFlags::INHERIT_ONLY, "(IO)"),
        (AceFlags::NO_PROPAGATE, "(NP)"),
    ] {
        if ace.flags.contains(flag) {
            text.push_str(name);
        }
    }
    if ace.kind == AceKind::Deny {
        text.push_str("(DENY)");
    }
    text.push('(');
    text.push_str(&render_mask(ace.mask));
    text.push(')');
    text
}

#[cfg(test)]
mod tests {
    use super::mask::*;
    use super::*;

    fn ns() -> Sid {
        Sid::known("S-1-5-20")
    }

    fn users() -> Sid {
        Sid::known("S-1-5-32-545")
    }

    const OI: AceFlags = AceFlags::OBJECT_INHERIT;
    const CI: AceFlags = AceFlags::CONTAINER_INHERIT;
    const IO: AceFlags = AceFlags::INHERIT_ONLY;
    const NP: AceFlags = AceFlags::NO_PROPAGATE;
    const I: AceFlags = AceFlags::INHERITED;

    #[test]
    fn right_masks_are_the_icacls_ones() {
        assert_eq!(right_mask(AccessRight::Read), 0x0012_00A9);
        assert_eq!(right_mask(AccessRight::Modify), 0x0013_01BF);
        assert_eq!(right_mask(AccessRight::FullControl), 0x001F_01FF);
        assert_eq!(FILE_GENERIC_READ | FILE_GENERIC_EXECUTE, READ);
    }

    #[test]
    fn a_mask_maps_to_the_strongest_right_it_holds() {
        assert_eq!(
            strongest_right(FULL_CONTROL),
            Some(AccessRight::FullControl)
        );
        assert_eq!(strongest_right(MODIFY), Some(AccessRight::Modify));
        assert_eq!(
            strongest_right(MODIFY | WRITE_DAC),
            Some(AccessRight::Modify)
        );
        assert_eq!(strongest_right(READ), Some(AccessRight::Read));
        assert_eq!(strongest_right(READ | WRITE_ONLY), Some(AccessRight::Read));
        assert_eq!(strongest_right(FILE_GENERIC_READ), None, "R without X");
        assert_eq!(strongest_right(0), None);
        assert_eq!(strongest_right(GENERIC_ALL), Some(AccessRight::FullControl));
        assert_eq!(
            strongest_right(GENERIC_READ | GENERIC_EXECUTE),
            Some(AccessRight::Read)
        );
        assert_eq!(
            map_generic(GENERIC_WRITE | DELETE),
            FILE_GENERIC_WRITE | DELETE
        );
    }

    #[test]
    fn masks_and_entries_render_as_icacls_does() {
        assert_eq!(render_mask(FULL_CONTROL), "F");
        assert_eq!(render_mask(MODIFY), "M");
        assert_eq!(render_mask(READ), "RX");
        assert_eq!(render_mask(FILE_GENERIC_READ), "R");
        assert_eq!(render_mask(WRITE_ONLY), "W");
        assert_eq!(render_mask(READ | WRITE_ONLY), "RX,W");
        assert_eq!(render_mask(GENERIC_READ | GENERIC_EXECUTE), "GR,GE");
        assert_eq!(render_mask(GENERIC_ALL), "GA");
        assert_eq!(render_mask(READ_DATA | WRITE_DAC), "WDAC,RD");
        assert_eq!(render_mask(DELETE), "D");
        assert_eq!(render_mask(0), "N");
        assert_eq!(render_mask(0x0000_0200), "0x200");
        let who = "NT AUTHORITY\\NETWORK SERVICE";
        assert_eq!(
            render_ace(&Ace::allow(ns(), FULL_CONTROL, OI | CI), who),
            "NT AUTHORITY\\NETWORK SERVICE:(OI)(CI)(F)"
        );
        assert_eq!(
            render_ace(&Ace::allow(ns(), READ, I), who),
            "NT AUTHORITY\\NETWORK SERVICE:(I)(RX)"
        );
        assert_eq!(
            render_ace(
                &Ace::deny(Sid::everyone(), WRITE_ONLY, OI | CI | IO | NP),
                "Everyone"
            ),
            "Everyone:(OI)(CI)(IO)(NP)(DENY)(W)"
        );
    }

    #[test]
    fn the_check_walks_entries_in_order() {
        let sids = [ns(), users()];
        let list = |aces| Dacl::new(false, aces);
        // Allow then deny: the allow already granted what is asked.
        let dacl = list(vec![
            Ace::allow(ns(), READ, AceFlags::NONE),
            Ace::deny(ns(), READ, AceFlags::NONE),
        ]);
        assert!(check_access(Some(&dacl), &sids, READ).grants(READ));
        // Deny first refuses, whatever follows; the deny is named.
        let dacl = list(vec![
            Ace::deny(users(), READ_DATA, AceFlags::NONE),
            Ace::allow(ns(), FULL_CONTROL, AceFlags::NONE),
        ]);
        let check = check_access(Some(&dacl), &sids, READ);
        assert!(!check.grants(READ));
        assert_eq!(check.deciding_deny, Some(0));
        assert_eq!(check.granted, READ & !READ_DATA);
        // A deny of bits not asked for changes nothing.
        let dacl = list(vec![
            Ace::deny(ns(), WRITE_DATA, AceFlags::NONE),
            Ace::allow(ns(), READ, AceFlags::NONE),
        ]);
        let check = check_access(Some(&dacl), &sids, READ);
        assert!(check.grants(READ));
        assert_eq!(check.deciding_deny, None);
        // Inherit-only entries and other SIDs do not apply.
        let dacl = list(vec![
            Ace::deny(ns(), READ, OI | CI | IO),
            Ace::deny(Sid::known("S-1-5-19"), READ, AceFlags::NONE),
            Ace::allow(ns(), READ, AceFlags::NONE),
        ]);
        assert!(check_access(Some(&dacl), &sids, READ).grants(READ));
        // Rights add up over entries; generic bits count as file rights.
        let dacl = list(vec![
            Ace::allow(ns(), FILE_GENERIC_READ, AceFlags::NONE),
            Ace::allow(users(), GENERIC_EXECUTE, AceFlags::NONE),
        ]);
        assert!(check_access(Some(&dacl), &sids, READ).grants(READ));
        // Maximum allowed, and a NULL DACL.
        let dacl = list(vec![
            Ace::deny(ns(), DELETE, AceFlags::NONE),
            Ace::allow(ns(), FULL_CONTROL, AceFlags::NONE),
        ]);
        assert_eq!(
            check_access(Some(&dacl), &sids, u32::MAX).granted,
            FULL_CONTROL & !DELETE
        );
        assert!(check_access(None, &sids, FULL_CONTROL).grants(FULL_CONTROL));
        assert_eq!(check_access(Some(&list(vec![])), &sids, READ).granted, 0);
    }

    #[test]
    fn inheritance_follows_the_windows_rules() {
        let parent = Dacl::new(
            false,
            vec![
                Ace::allow(ns(), FULL_CONTROL, OI | CI),
                Ace::allow(users(), READ, CI),
                Ace::allow(users(), FILE_GENERIC_READ, OI),
                Ace::allow(Sid::known("S-1-5-19"), READ, OI | CI | NP),
                Ace::allow(Sid::known("S-1-3-0"), GENERIC_ALL, OI | CI | IO),
                Ace::allow(Sid::known("S-1-5-18"), FULL_CONTROL, AceFlags::NONE),
                Ace::deny(Sid::everyone(), DELETE, OI | CI | I),
            ],
        );
        let dir = inherited_from(&parent, true);
        let render: Vec<String> = dir.iter().map(|a| render_ace(a, a.sid.as_str())).collect();
        assert_eq!(
            render,
            [
                "S-1-5-20:(I)(OI)(CI)(F)",
                "S-1-5-32-545:(I)(CI)(RX)",
                "S-1-5-32-545:(I)(OI)(IO)(R)",
                "S-1-5-19:(I)(RX)",
                "S-1-3-0:(I)(F)",
                "S-1-3-0:(I)(OI)(CI)(IO)(GA)",
                "S-1-1-0:(I)(OI)(CI)(DENY)(D)",
            ]
        );
        let file = inherited_from(&parent, false);
        let render: Vec<String> = file.iter().map(|a| render_ace(a, a.sid.as_str())).collect();
        assert_eq!(
            render,
            [
                "S-1-5-20:(I)(F)",
                "S-1-5-32-545:(I)(R)",
                "S-1-5-19:(I)(RX)",
                "S-1-3-0:(I)(F)",
                "S-1-1-0:(I)(DENY)(D)",
            ]
        );
        // The grandchild of an (NP) entry gets nothing from it.
        let child = Dacl::new(false, vec![]).under(Some(&parent), true);
        let grandchild = Dacl::new(false, vec![]).under(Some(&child), true);
        assert!(!grandchild.aces.iter().any(|a| a.sid.as_str() == "S-1-5-19"));
        assert!(grandchild.aces.iter().any(|a| a.sid == ns()));
    }

    #[test]
    fn a_list_under_a_parent_keeps_its_own_entries_first_unless_protected() {
        let parent = Dacl::new(false, vec![Ace::allow(ns(), READ, OI | CI)]);
        let own = Ace::deny(users(), DELETE, AceFlags::NONE);
        let stale = Ace::allow(Sid::known("S-1-5-19"), READ, I);
        let child = Dacl::new(false, vec![own.clone(), stale.clone()]);
        assert_eq!(
            child.under(Some(&parent), false).aces,
            vec![own.clone(), Ace::allow(ns(), READ, I)]
        );
        assert_eq!(child.under(None, false).aces, vec![own.clone()]);
        let protected = Dacl::new(true, vec![own, stale]);
        assert_eq!(protected.under(Some(&parent), false), protected);
    }

    #[test]
    fn a_grant_merges_into_the_same_entry_or_goes_after_the_explicit_ones() {
        let dacl = Dacl::new(
            false,
            vec![
                Ace::deny(users(), DELETE, AceFlags::NONE),
                Ace::allow(ns(), FILE_GENERIC_READ, OI | CI),
                Ace::allow(Sid::known("S-1-5-18"), FULL_CONTROL, OI | CI | I),
            ],
        );
        let merged = dacl.with_grant(&ns(), READ, OI | CI).unwrap();
        assert_eq!(merged.aces.len(), 3);
        assert_eq!(merged.aces[1], Ace::allow(ns(), READ, OI | CI));
        assert_eq!(
            merged.with_grant(&ns(), READ, OI | CI),
            None,
            "already there"
        );
        let added = dacl.with_grant(&ns(), READ, AceFlags::NONE).unwrap();
        assert_eq!(added.aces.len(), 4);
        assert_eq!(added.aces[2], Ace::allow(ns(), READ, AceFlags::NONE));
        assert!(added.aces[3].is_inherited());
        let only_inherited = Dacl::new(false, vec![Ace::allow(users(), READ, I)]);
        let first = only_inherited.with_grant(&ns(), READ, OI | CI).unwrap();
        assert_eq!(first.aces[0], Ace::allow(ns(), READ, OI | CI));
    }

    #[test]
    fn tree_rights_count_only_entries_that_reach_everything() {
        let dacl = Dacl::new(
            false,
            vec![
                Ace::allow(ns(), READ, AceFlags::NONE),
                Ace::allow(ns(), FULL_CONTROL, OI),
                Ace::allow(ns(), FULL_CONTROL, OI | CI | NP),
                Ace::allow(ns(), FILE_GENERIC_READ, OI | CI | IO),
                Ace::allow(ns(), GENERIC_EXECUTE, OI | CI | I),
                Ace::allow(users(), FULL_CONTROL, OI | CI),
                Ace::deny(ns(), FULL_CONTROL, OI | CI),
            ],
        );
        assert_eq!(dacl.tree_allowed(&[ns()]), READ);
    }
}
