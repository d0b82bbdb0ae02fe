//! `content-acl` on a lab content tree of 100 000 files, against `setfacl`
//! and `getfacl` on the same tree, in one run, as ratios:
//!
//! - healthy tree: the plugin's scan vs `setfacl -R -m u:<NETWORK
//!   SERVICE>:rwX WsusContent` (target: <= 0.3x) and `getfacl -R`;
//! - fully broken tree (NETWORK SERVICE's entries removed everywhere): the
//!   plugin's repair vs `setfacl -R -m` repairing the same (target: <=
//!   0.5x).
//!
//! Where the time goes: the walk runs on two threads, one folder each,
//! listing a folder through one 32 KiB buffer with no copy per name. A
//! healthy file costs one `getxattrat` by name beneath its open folder
//! (its own ACL gives the access whoever owns it, so no `stat`); a folder
//! an open, an `fstat`, its ACLs and its listing. About 90% of the healthy
//! scan is the kernel's: the name's dentry lookup, the inode and its
//! cached ACL, and ext4's hashing of each listed name. A file needing a
//! change costs an `O_PATH` open, an `fstat`, the ACL's get and set
//! through the descriptor's entry in the thread's own
//! `/proc/thread-self/fd` (one name to look up; `getxattrat` and
//! `setxattrat`) and a close; ext4's write of the ACL is a third of it.
//! Before, the file was reopened for reading through `/proc/self/fd/N`
//! (four names to look up, a second descriptor to open and close, both
//! threads on the same `/proc` entries), and each changed file allocated
//! its path, a copy of its ACL to sort, and room to grow it; and later
//! the walk's two threads added to shared counters for every file
//! (passing the counters' cache line back and forth) and grew each ACL
//! made from a mode to fit the grant: a tenth of the repair's time, 0.61x
//! before these two went.
//!
//! Measured and not kept: the same repair by name beneath the open folder
//! (`statx`, `getxattrat`, `setxattrat`; 0.37x), in folders only root may
//! write in. A folder can become writable by another account during a
//! walk (another grant), and a user may mount FUSE over a file they can
//! write, so a name there is no promise of the inode: only a descriptor
//! is.
//!
//! Each figure is the median of five timed passes after one warm-up pass
//! (the page and inode caches warm); each pass times the plugin and the
//! tool one after the other, and the lowest and highest of the passes' own
//! ratios are reported too, to show the machine's noise. Needs the
//! components from
//! `cargo xtask plugins` and the `acl` tools. Run with
//! `cargo bench -p medic --bench content_acl`.

mod support;

use medic_lab::faults::Fault;
use medic_lab::{InitOptions, Lab, catalog};
use medic_sandbox::{Limits, Runtime, RuntimeConfig};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILES: u64 = 100_000;
const PASSES: usize = 5;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn tool(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (install the `acl` package)", args[0]));
    assert!(status.success(), "{args:?} failed");
}

/// The lowest and highest of the passes' own ratios (each pass times the
/// plugin and the tool one after the other): how far the machine's noise
/// moves the ratio of the medians.
fn pass_ratios(plugin: &[Duration], tool: &[Duration]) -> (f64, f64) {
    let ratios = plugin
        .iter()
        .zip(tool)
        .map(|(p, t)| p.as_secs_f64() / t.as_secs_f64());
    ratios.fold((f64::INFINITY, 0.0), |(low, high), r| {
        (low.min(r), high.max(r))
    })
}

fn timed(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::init(
        &dir.path().join("lab"),
        &InitOptions {
            upstream_updates: 10,
            content_files: false,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    for index in 0..FILES {
        let (id, meta) = catalog::update(7, index);
        lab.write_content_file(&id, &meta).unwrap();
    }
    let content = lab.wsus_content();
    let paths = lab.content_access().unwrap().checked;
    eprintln!(
        "content tree: {paths} paths under {} in {:.1} s",
        content.display(),
        started.elapsed().as_secs_f64()
    );

    let runtime = Runtime::new(&RuntimeConfig::default()).expect("engine");
    let plugin = support::plugin(&runtime, "content-acl");
    let grants = support::grants(&[
        &format!("fs-write={}", lab.content_dir().display()),
        "wsus-read",
        "wsus-updates",
        "wsus-sync",
    ]);
    let backends = medic_lab::backend::backends(lab.clone(), medic_lab::Server::Downstream);
    // The example policy's limits for this plugin.
    let limits = Limits {
        timeout: Duration::from_secs(60),
        memory_bytes: 128 << 20,
        ..Limits::default()
    };
    let state = support::state(&dir.path().join("state"));
    let run = |expect: &str| {
        let report = support::run(
            &runtime,
            &plugin,
            &grants,
            &backends,
            limits,
            Some(state.clone()),
        );
        assert_eq!(report.status().as_str(), expect, "{report:#?}");
    };
    let principal = lab
        .principal_specs()
        .iter()
        .find(|(name, _)| name == "NETWORK SERVICE")
        .map(|(_, spec)| spec.replace("user:", "u:").replace("uid:", "u:"))
        .unwrap();
    let entry = format!("{principal}:rwX");
    let content_arg = content.to_str().unwrap();
    let setfacl = || tool(&["setfacl", "-R", "-m", &entry, content_arg]);
    let getfacl = || tool(&["getfacl", "-R", "-p", content_arg]);

    // Warm-up: every inode and ACL in cache.
    getfacl();
    run("healthy");

    let mut plugin_healthy = Vec::new();
    let mut setfacl_healthy = Vec::new();
    let mut getfacl_healthy = Vec::new();
    for _ in 0..PASSES {
        plugin_healthy.push(timed(|| run("healthy")));
        setfacl_healthy.push(timed(setfacl));
        getfacl_healthy.push(timed(getfacl));
    }
    let mut plugin_repair = Vec::new();
    let mut setfacl_repair = Vec::new();
    for _ in 0..PASSES {
        lab.apply_fault(Fault::ContentFullControl).unwrap();
        plugin_repair.push(timed(|| run("remediated")));
        lab.apply_fault(Fault::ContentFullControl).unwrap();
        setfacl_repair.push(timed(setfacl));
    }
    let access = lab.content_access().unwrap();
    assert_eq!(access.lacking, 0, "setfacl left the tree repaired");

    let (healthy_low, healthy_high) = pass_ratios(&plugin_healthy, &setfacl_healthy);
    let (repair_low, repair_high) = pass_ratios(&plugin_repair, &setfacl_repair);
    let (ph, sh, gh, pr, sr) = (
        median(plugin_healthy),
        median(setfacl_healthy),
        median(getfacl_healthy),
        median(plugin_repair),
        median(setfacl_repair),
    );
    println!(
        "content-acl, {paths} paths: healthy scan {ph:.0} ms vs setfacl -R -m {sh:.0} ms ({:.2}x; passes {healthy_low:.2}-{healthy_high:.2}x) and getfacl -R {gh:.0} ms; repair of the broken tree {pr:.0} ms vs setfacl -R -m {sr:.0} ms ({:.2}x; passes {repair_low:.2}-{repair_high:.2}x)",
        ph / sh,
        pr / sr
    );
    println!(
        "BENCH content_acl paths={paths} passes={PASSES} healthy_ms={ph:.1} setfacl_healthy_ms={sh:.1} getfacl_ms={gh:.1} repair_ms={pr:.1} setfacl_repair_ms={sr:.1} healthy_ratio_low={healthy_low:.3} healthy_ratio_high={healthy_high:.3} repair_ratio_low={repair_low:.3} repair_ratio_high={repair_high:.3}"
    );
}
