//! The local file system under attack from a local user who can write
//! inside a granted root: a thread swaps a folder for a symbolic link to a
//! folder outside the root (an atomic `RENAME_EXCHANGE`, as fast as it
//! can) while reads, listings and access repairs run against it thousands
//! of times. Nothing outside the root may be read, listed or changed.
#![cfg(target_os = "linux")]

use medic_backends::fs::{AccessRight, Beneath, FileSystem};
use medic_backends::local_fs::LocalFileSystem;
use medic_backends::{ErrorKind, PrincipalMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const FILES: usize = 8;
const OUTSIDE_TEXT: &[u8] = b"outside secret";

/// A granted root `share` with `share/sub/f*` (inside) and `share/alt`, a
/// link to `outside/` holding `secret-*` files with mode 600.
struct Scene {
    _dir: tempfile::TempDir,
    share: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..FILES {
        std::fs::write(share.join(format!("sub/f{i}")), b"inside").unwrap();
        let secret = outside.join(format!("f{i}"));
        std::fs::write(&secret, OUTSIDE_TEXT).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&outside, share.join("alt")).unwrap();
    Scene {
        _dir: dir,
        share,
        outside,
    }
}

/// Swap `share/sub` and `share/alt` (a folder and a link) until stopped;
/// returns how many swaps it made.
fn swapper(share: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let share = share.to_path_buf();
    std::thread::spawn(move || {
        let dir = rustix::fs::open(
            &share,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            let exchange = rustix::fs::RenameFlags::EXCHANGE;
            if rustix::fs::renameat_with(&dir, "sub", &dir, "alt", exchange).is_err() {
                break;
            }
            swaps += 1;
        }
        swaps
    })
}

/// Whether any file outside carries a named ACL entry (anything beyond
/// the three entries of its mode), or the folder outside a default ACL.
fn outside_acl_changed(outside: &Path) -> Vec<PathBuf> {
    let mut changed = Vec::new();
    for entry in std::fs::read_dir(outside).unwrap() {
        let path = entry.unwrap().path();
        match rustix::fs::lgetxattr(&path, "system.posix_acl_access", &mut [0u8; 256]) {
            Ok(_) => changed.push(path),
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    let meta = std::fs::metadata(outside).unwrap();
    if meta.permissions().mode() & 0o777 != 0o700 {
        changed.push(outside.to_path_buf());
    }
    // A recursive repair gives the folders it walks a default ACL.
    match rustix::fs::lgetxattr(outside, "system.posix_acl_default", &mut [0u8; 256]) {
        Ok(_) => changed.push(outside.to_path_buf()),
        Err(rustix::io::Errno::NODATA) => {}
        Err(e) => panic!("{}: {e}", outside.display()),
    }
    changed
}

/// Forget every ACL inside, so that each repair has work to do.
fn reset_inside(share: &Path) {
    for folder in ["sub", "alt"] {
        let folder = share.join(folder);
        let Ok(meta) = std::fs::symlink_metadata(&folder) else {
            continue;
        };
        if meta.is_symlink() {
            continue;
        }
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let _ = rustix::fs::lremovexattr(entry.path(), "system.posix_acl_access");
        }
    }
}

fn beneath(share: &Path, relative: &str) -> Beneath {
    Beneath::new(share, relative).unwrap()
}

#[test]
fn recursive_and_single_file_repairs_never_change_anything_outside_the_root() {
    let scene = scene();
    let fs = LocalFileSystem::new(PrincipalMap::default());
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(&scene.share, Arc::clone(&stop));
    let changed_inside = AtomicU64::new(0);
    for round in 0..3_000 {
        reset_inside(&scene.share);
        let target = if round % 2 == 0 {
            beneath(&scene.share, "")
        } else {
            beneath(&scene.share, &format!("sub/f{}", round % FILES))
        };
        match fs.ensure_access(&target, "user:nobody", AccessRight::Read, true, true, None) {
            Ok(report) => {
                changed_inside.fetch_add(report.changed.len() as u64, Ordering::Relaxed);
                for change in &report.changed {
                    assert!(
                        !change.path.contains("outside"),
                        "changed outside: {change:?}"
                    );
                }
            }
            Err(e) => assert!(
                matches!(e.kind, ErrorKind::Denied | ErrorKind::NotFound),
                "{e}"
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    assert!(
        swaps > 1_000,
        "the swapper raced the repairs ({swaps} swaps)"
    );
    assert!(
        changed_inside.into_inner() > 0,
        "the repairs did change files inside"
    );
    assert_eq!(outside_acl_changed(&scene.outside), Vec::<PathBuf>::new());
}

#[test]
fn reads_and_listings_never_show_anything_outside_the_root() {
    let scene = scene();
    let fs = LocalFileSystem::new(PrincipalMap::default());
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(&scene.share, Arc::clone(&stop));
    let (mut read_inside, mut listed_inside) = (0, 0);
    for round in 0..5_000 {
        // The ways a path can name the link: plain, trailing slash, dot, doubled slash.
        let spelling = ["sub/f0", "sub/f1", "alt/f2", "sub//f3"][round % 4];
        match fs.read_file(&beneath(&scene.share, spelling), 1024) {
            Ok(bytes) => {
                assert_ne!(bytes, OUTSIDE_TEXT, "read outside through {spelling}");
                read_inside += 1;
            }
            Err(e) => assert!(
                matches!(e.kind, ErrorKind::Denied | ErrorKind::NotFound),
                "{e}"
            ),
        }
        let folder = ["sub", "alt", "sub/.", "sub/"][round % 4];
        match fs.list_dir(&beneath(&scene.share, folder)) {
            Ok(entries) => {
                listed_inside += 1;
                for entry in entries {
                    let stat = std::fs::symlink_metadata(&entry.path);
                    // What was listed is inside: its name exists under share.
                    assert!(
                        entry.path.starts_with(scene.share.to_str().unwrap()),
                        "{entry:?}"
                    );
                    drop(stat);
                }
            }
            Err(e) => assert!(
                matches!(
                    e.kind,
                    ErrorKind::Denied | ErrorKind::NotFound | ErrorKind::InvalidArgument
                ),
                "{e}"
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swaps.join().unwrap() > 1_000);
    assert!(read_inside > 0 && listed_inside > 0);
}

#[test]
fn a_link_as_the_last_component_is_refused_however_it_is_spelled() {
    let scene = scene();
    std::os::unix::fs::symlink(scene.outside.join("f0"), scene.share.join("link")).unwrap();
    let fs = LocalFileSystem::new(PrincipalMap::default());
    for spelling in ["link", "alt", "alt/", "alt/.", "./alt"] {
        let Some(path) = Beneath::new(
            &scene.share,
            Path::new(spelling).components().collect::<PathBuf>(),
        ) else {
            continue;
        };
        let read = fs.read_file(&path, 1024).unwrap_err();
        assert_eq!(read.kind, ErrorKind::Denied, "{spelling}: {read}");
        let list = fs.list_dir(&path).unwrap_err();
        assert_eq!(list.kind, ErrorKind::Denied, "{spelling}: {list}");
        let ensure = fs
            .ensure_access(&path, "user:nobody", AccessRight::Read, true, true, None)
            .unwrap();
        assert_eq!(ensure.checked, 0, "{spelling}");
        assert_eq!(ensure.skipped.len(), 1, "{spelling}");
        assert!(fs.stat(&path).is_ok(), "stat shows the link itself");
    }
    assert_eq!(outside_acl_changed(&scene.outside), Vec::<PathBuf>::new());
}

#[test]
fn a_hard_link_to_a_file_outside_is_neither_read_nor_changed() {
    let scene = scene();
    let fs = LocalFileSystem::new(PrincipalMap::default());
    std::fs::hard_link(scene.outside.join("f0"), scene.share.join("sub/hard")).unwrap();
    let read = fs
        .read_file(&beneath(&scene.share, "sub/hard"), 1024)
        .unwrap_err();
    assert_eq!(read.kind, ErrorKind::Denied, "{read}");
    assert!(read.message.contains("hard links"), "{read}");
    let single = fs
        .ensure_access(
            &beneath(&scene.share, "sub/hard"),
            "user:nobody",
            AccessRight::Read,
            false,
            true,
            None,
        )
        .unwrap_err();
    assert_eq!(single.kind, ErrorKind::Denied, "{single}");
    let walk = fs
        .ensure_access(
            &beneath(&scene.share, ""),
            "user:nobody",
            AccessRight::Read,
            true,
            true,
            None,
        )
        .unwrap();
    assert_eq!(walk.skipped.len(), 1, "{walk:?}");
    assert!(walk.skipped[0].path.ends_with("sub/hard"));
    assert!(
        walk.changed.len() > FILES,
        "the rest was repaired: {walk:?}"
    );
    assert_eq!(outside_acl_changed(&scene.outside), Vec::<PathBuf>::new());
}

/// Entries are checked as a folder's listing is read, so one big folder
/// (or one someone keeps adding to) must not carry a walk past its
/// deadline: the deadline is looked at within the folder too.
#[test]
fn a_walk_stops_at_its_deadline_within_one_big_folder() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    for file in 0..5_000 {
        std::fs::write(share.join(format!("f{file}")), b"").unwrap();
    }
    let fs = LocalFileSystem::new(PrincipalMap::default());
    for _ in 0..5 {
        let report = fs
            .ensure_access(
                &beneath(&share, ""),
                "user:nobody",
                AccessRight::Read,
                true,
                false,
                Some(std::time::Instant::now()),
            )
            .unwrap();
        assert!(
            report.checked < 1_000,
            "the folder's walk went on: {}",
            report.checked
        );
        assert!(
            report.skipped.iter().any(|s| s.reason.contains("deadline")),
            "{:?}",
            report.skipped
        );
    }
}

#[test]
fn a_walk_stops_at_its_deadline_and_does_not_descend_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    for folder in 0..20 {
        let folder = share.join(format!("d{folder}"));
        std::fs::create_dir_all(&folder).unwrap();
        for file in 0..1_000 {
            std::fs::write(folder.join(format!("f{file}")), b"").unwrap();
        }
    }
    let fs = LocalFileSystem::new(PrincipalMap::default());
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
    let report = fs
        .ensure_access(
            &beneath(&share, ""),
            "user:nobody",
            AccessRight::Read,
            true,
            false,
            Some(deadline),
        )
        .unwrap();
    assert!(
        report.checked < 20_021,
        "the walk went on: {}",
        report.checked
    );
    assert!(
        report.skipped.iter().any(|s| s.reason.contains("deadline")),
        "{:?}",
        report.skipped
    );
    assert!(report.changed.len() + report.unlisted_changes as usize == report.checked as usize);

    // A chain of folders with long names: entered down to a bounded path.
    let deep = dir.path().join("deep");
    let mut path = deep.clone();
    std::fs::create_dir_all(&path).unwrap();
    let dir_fd = std::fs::File::open(&path).unwrap();
    let mut fd = dir_fd;
    for _ in 0..100 {
        // Made by descriptor: the whole path is longer than the kernel takes.
        let name = "n".repeat(250);
        rustix::fs::mkdirat(&fd, name.as_str(), rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        let next = rustix::fs::openat(
            &fd,
            name.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        fd = std::fs::File::from(next);
        path.push(&name);
    }
    let report = fs
        .ensure_access(
            &beneath(&deep, ""),
            "user:nobody",
            AccessRight::Read,
            true,
            false,
            None,
        )
        .unwrap();
    assert!(report.checked < 20, "{}", report.checked);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.reason.contains("deeper than")),
        "{:?}",
        report.skipped
    );
}
