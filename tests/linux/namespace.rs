//! A real systemd, booted as PID 1 in PID, mount, cgroup, UTS and network
//! namespaces of its own, that a test drives and then powers off.
//!
//! Nothing systemd sets at boot reaches the host: not the hostname, not
//! loopback, not a sysctl (`/proc/sys` is read-only inside). Inside the
//! namespace, tmpfs covers `/tmp`, `/var/tmp`, `/run`, `/etc/systemd/system`, the
//! vendor unit folder `/usr/lib/systemd/system` (holding a copy of the few
//! units [`KEPT_UNITS`] names), the generators' folder, the persistent
//! journal, `/var/lib` and `/dev` (with the few device nodes a service needs bound into
//! it): units the tests write, masks and enablement links all land in
//! memory, and nothing that acts on the whole machine (tmpfiles, sysusers,
//! sysctl) can start. The boot goes to a target of the test's own that
//! pulls in only journald.
//!
//! Without the privileges to make the namespace (not root, no systemd, no
//! writable cgroup), [`NamespacedSystemd::boot`] says why and the test
//! skips, loudly; with `MEDIC_REQUIRE_SYSTEMD=1` (set by `cargo xtask test`
//! under CI) it fails instead.

use medic_backends::systemd::{Systemctl, Systemd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a state before it fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

const SYSTEMD: &str = "/lib/systemd/systemd";

/// Where a test unit's file goes.
#[derive(Debug, Clone, Copy)]
pub enum UnitDir {
    /// `/etc/systemd/system`: the administrator's.
    Admin,
    /// `/usr/lib/systemd/system`: the distribution's.
    Vendor,
}

impl UnitDir {
    fn path(self) -> &'static str {
        match self {
            Self::Admin => "etc/systemd/system",
            Self::Vendor => "usr/lib/systemd/system",
        }
    }
}

/// A systemd running in namespaces of its own.
pub struct NamespacedSystemd {
    unshare: Child,
    /// systemd's PID as this process sees it.
    pub pid: u32,
    cgroup: PathBuf,
    _scratch: tempfile::TempDir,
}

/// The distribution's units the namespace keeps: journald, the targets a
/// service's default dependencies name, and what powering off needs. Their
/// `.wants` folders are left behind, so that nothing else starts: the
/// units they pull in (tmpfiles, sysusers, sysctl, binfmt, udev, journal
/// flushing) act on the whole machine, not on a namespace.
const KEPT_UNITS: &str = "systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
sysinit.target basic.target sockets.target paths.target timers.target slices.target local-fs.target \
local-fs-pre.target swap.target multi-user.target network.target shutdown.target umount.target \
final.target poweroff.target systemd-poweroff.service";

/// The boot script run as the namespace's first process: `$1` is systemd,
/// `$2` the units to keep, `$3` the workspace (whose built binaries and
/// scratch folders the tests use inside), kept in sight wherever it is,
/// under `/tmp` too.
const BOOT: &str = r#"set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/medic-test/vendor /run/medic-test/dev /run/medic-test/workspace
mount --bind "$3" /run/medic-test/workspace
for unit in $2; do cp -L "/usr/lib/systemd/system/$unit" /run/medic-test/vendor/; done
mount -t tmpfs -o mode=755 tmpfs /usr/lib/systemd/system
cp /run/medic-test/vendor/* /usr/lib/systemd/system/
mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
# What the kernel shares with the host stays out of reach: PID 1 writes
# sysctls (fs.file-max) at boot.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
# Services' private /tmp folders (PrivateTmp=) and anything else a unit
# leaves there stay in memory too.
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# No generators: they would read this machine's fstab and init scripts.
if [ -d /usr/lib/systemd/system-generators ]; then
    mount -t tmpfs -o mode=755 tmpfs /usr/lib/systemd/system-generators
fi
# State (medic's StateDirectory among it) stays in the namespace.
mount -t tmpfs -o mode=755 tmpfs /var/lib
# The journal stays in the namespace's /run.
if [ -d /var/log/journal ]; then
    mount -t tmpfs -o mode=2755 tmpfs /var/log/journal
fi
for node in null zero full random urandom tty; do
    touch /run/medic-test/dev/$node
    mount --bind /dev/$node /run/medic-test/dev/$node
done
mount -t tmpfs -o mode=755 tmpfs /dev
for node in null zero full random urandom tty; do
    touch /dev/$node
    mount --move /run/medic-test/dev/$node /dev/$node
done
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p "$3"
mount --move /run/medic-test/workspace "$3"
cat > /etc/systemd/system/medic-test.target <<'UNIT'
[Unit]
Description=medic test boot
Wants=systemd-journald.service
UNIT
export container=medic-test
exec "$1" --system --unit=medic-test.target --log-target=journal-or-kmsg
"#;

/// The workspace: where the built binaries and the tests' scratch folders
/// are.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace holds host/medic")
        .to_path_buf()
}

/// Why the namespace cannot be made here, if it cannot.
fn missing_privilege() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: making PID and mount namespaces needs root".into());
    }
    if !Path::new(SYSTEMD).exists() {
        return Some(format!(
            "{SYSTEMD} is missing: install the Debian package `systemd`"
        ));
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup2 hierarchy is mounted".into());
    }
    // systemd creates a missing machine id in /etc, the host's.
    if std::fs::read_to_string("/etc/machine-id").map_or(true, |id| id.trim().len() != 32) {
        return Some(
            "this machine has no /etc/machine-id, which systemd would write into the host's /etc: run `systemd-machine-id-setup` once".into(),
        );
    }
    None
}

/// The cgroup2 hierarchy: unified at `/sys/fs/cgroup`, or beside v1.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
}

/// Skip the calling test, loudly, or fail it when systemd is required.
fn skip(reason: &str) {
    if std::env::var_os("MEDIC_REQUIRE_SYSTEMD").is_some_and(|v| v == "1") {
        panic!(
            "a real systemd is required (MEDIC_REQUIRE_SYSTEMD=1) but cannot run here: {reason}"
        );
    }
    eprintln!("SKIPPED: this test needs a namespaced systemd, and {reason}");
}

impl NamespacedSystemd {
    /// Boot one; `None` (after saying why) where it cannot be done.
    pub fn boot() -> Option<Self> {
        if let Some(reason) = missing_privilege() {
            skip(&reason);
            return None;
        }
        match Self::try_boot() {
            Ok(systemd) => Some(systemd),
            // The kernel or a container runtime may refuse namespaces even
            // to root.
            Err(reason) if reason.contains("Operation not permitted") => {
                skip(&reason);
                None
            }
            Err(reason) => panic!("{reason}"),
        }
    }

    fn try_boot() -> Result<Self, String> {
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let script = scratch.path().join("boot.sh");
        std::fs::write(&script, BOOT).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(scratch.path().join("boot.log")).map_err(|e| e.to_string())?;
        let root = cgroup2_root().expect("checked");
        remove_orphaned_cgroups(&root);
        let cgroup = root.join(format!(
            "medic-test-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&cgroup)
            .map_err(|e| format!("cannot make the cgroup {}: {e}", cgroup.display()))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec unshare --cgroup --pid --mount --uts --net --fork --mount-proc --kill-child sh {} {SYSTEMD} '{KEPT_UNITS}' '{}'",
                cgroup.display(),
                script.display(),
                workspace().display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. If this test process dies,
        // the namespace dies with it (unshare kills its child).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut unshare = command
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let deadline = Instant::now() + PATIENCE;
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let pid = loop {
            if let Some(status) = unshare.try_wait().map_err(|e| e.to_string())? {
                let log =
                    std::fs::read_to_string(scratch.path().join("boot.log")).unwrap_or_default();
                let _ = std::fs::remove_dir(&cgroup);
                return Err(format!(
                    "the namespace could not be made ({status}): {}",
                    log.trim()
                ));
            }
            let pid = std::fs::read_to_string(&children).ok().and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
            });
            if let Some(pid) = pid
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.ends_with("systemd"))
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not start within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let systemd = Self {
            unshare,
            pid,
            cgroup,
            _scratch: scratch,
        };
        systemd.wait_until_running();
        Ok(systemd)
    }

    fn wait_until_running(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self.run("systemctl", &["is-system-running"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the namespaced systemd is `{state}` after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The namespace's root folder, as this process reaches it.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// `nsenter` into every namespace of the systemd, then `program`.
    fn nsenter(&self, program: &str) -> Vec<String> {
        let pid = self.pid.to_string();
        [
            "-t", &pid, "--mount", "--pid", "--uts", "--net", "--cgroup", "--", program,
        ]
        .map(String::from)
        .to_vec()
    }

    /// `nsenter` into the namespace, ready for the program to run there.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(self.nsenter(program));
        command
    }

    /// Run `program ARGS` inside, and return what it did.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    /// `systemctl ARGS` inside, which must succeed; its stdout.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let out = self.run("systemctl", args);
        assert!(
            out.status.success(),
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// medic's systemd backend, talking to this systemd.
    pub fn backend(&self) -> Systemd {
        Systemd::new(Systemctl::with_command(
            "nsenter",
            self.nsenter("systemctl"),
        ))
    }

    /// Write a unit file and make systemd read it.
    pub fn install_unit(&self, dir: UnitDir, name: &str, text: &str) {
        let path = self.root().join(dir.path()).join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.systemctl(&["daemon-reload"]);
    }

    /// A unit property, as `systemctl show -P` prints it.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-P", property, "--", unit])
            .trim()
            .to_string()
    }

    /// Wait until `check` holds, or fail with `what`.
    pub fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} not seen within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NamespacedSystemd {
    /// `systemctl poweroff`, then wait for the namespace to end; a kill
    /// only if it does not.
    fn drop(&mut self) {
        let _ = self.run("systemctl", &["poweroff", "--no-block"]);
        let deadline = Instant::now() + PATIENCE;
        let ended = loop {
            match self.unshare.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break false,
            }
        };
        if !ended {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        // The cgroups systemd left.
        remove_tree(&self.cgroup);
        if !ended && !std::thread::panicking() {
            panic!("the namespaced systemd did not power off within {PATIENCE:?}");
        }
    }
}

/// Remove the cgroups of namespaces whose test process was killed before
/// it could power them off (named after that process, now gone).
fn remove_orphaned_cgroups(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("medic-test-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            remove_tree(&entry.path());
        }
    }
}

/// Remove a cgroup and the ones under it, deepest first (a cgroup still
/// holding a process stays).
fn remove_tree(cgroup: &Path) {
    let mut dirs = walk_dirs(cgroup);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![root.to_path_buf()];
    let mut i = 0;
    while i < found.len() {
        if let Ok(entries) = std::fs::read_dir(&found[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    found.push(entry.path());
                }
            }
        }
        i += 1;
    }
    found
}
