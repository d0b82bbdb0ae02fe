//! The agent as a process, serving the WSUS pack (`examples/wsus-pack.toml`
//! verbatim, beside a fresh lab laid out where it expects one):
//!
//! - start to ready with a warm compile cache (target: < 200 ms): the
//!   second of two starts, from `spawn` to the `agent ready` log line (the
//!   first serves from the quick tier, and is left running until the
//!   optimized code of every plugin is in the cache);
//! - idle memory with the five plugins loaded (target: < 30 MB RSS), two
//!   seconds after ready;
//! - hot reload (target: new version serving < 100 ms after the file
//!   lands): a rebuilt `content-acl.wasm`, signed with the development key
//!   as the policy requires (its signature written first), is renamed
//!   into the plugin folder, timed to the `plugin (re)loaded` log line
//!   with its new hash (it serves from the quick tier); median of five.
//!
//! Needs the components and the development key from `cargo xtask
//! plugins`. Run with `cargo bench -p medic --bench agent_footprint`.

#[path = "support/agent.rs"]
mod agent;

use agent::Agent;
use medic_lab::{InitOptions, Lab};
use std::path::Path;
use std::time::{Duration, Instant};

const RELOADS: usize = 5;

/// The same component with a custom section appended: a different file
/// and hash, as a rebuilt plugin would be.
fn rebuilt(component: &[u8], tag: usize) -> Vec<u8> {
    let name = b"medic-bench-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.to_string().as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    Lab::init(&root.join("target/demo/lab"), &InitOptions::default()).unwrap();
    let plugins = root.join("target/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in [
        "content-acl",
        "bits-restart",
        "decline-orphans",
        "language-approvals",
        "bits-foreground",
    ] {
        for file in [format!("{name}.wasm"), format!("{name}.wasm.minisig")] {
            std::fs::copy(
                workspace.join("target/plugins").join(&file),
                plugins.join(&file),
            )
            .unwrap_or_else(|e| {
                panic!("{file}: {e}: build the plugins with `cargo xtask plugins`")
            });
        }
    }
    // The policy trusts the development key `cargo xtask plugins` signs with.
    std::fs::create_dir_all(root.join("target/signing")).unwrap();
    std::fs::copy(
        workspace.join("target/signing/dev.pub"),
        root.join("target/signing/dev.pub"),
    )
    .unwrap();
    let dev_key = std::fs::read_to_string(workspace.join("target/signing/dev.key")).unwrap();
    std::fs::create_dir_all(root.join("examples")).unwrap();
    std::fs::copy(
        workspace.join("examples/wsus-pack.toml"),
        root.join("examples/wsus-pack.toml"),
    )
    .unwrap();

    let (cold, cold_start) = Agent::start(root, "examples/wsus-pack.toml", root.join("cold.log"));
    // The cold start serves from the quick tier; the optimized code is
    // compiled in the background and cached: wait for every plugin's MAC,
    // written last (the tables whose component is here; the others are
    // refused).
    let policy = std::fs::read_to_string(root.join("examples/wsus-pack.toml")).unwrap();
    let plugins_in_pack = policy
        .lines()
        .filter_map(|line| line.strip_prefix("component = \""))
        .filter(|file| plugins.join(file.trim_end_matches('"')).exists())
        .count();
    let cache = root.join("target/demo/state/cache");
    let cached = || {
        std::fs::read_dir(&cache).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm.mac"))
                .count()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while cached() < plugins_in_pack {
        assert!(
            Instant::now() < deadline,
            "the optimized code was never cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(cold);
    let (agent, warm_start) = Agent::start(root, "examples/wsus-pack.toml", root.join("agent.log"));
    std::thread::sleep(Duration::from_secs(2));
    let idle_kib = agent.rss_kib();

    let original = std::fs::read(plugins.join("content-acl.wasm")).unwrap();
    let mut reloads = Vec::new();
    for build in 0..RELOADS {
        let bytes = rebuilt(&original, build);
        let hash = medic_sandbox::content_hash(&bytes);
        let signature = medic::signing::sign(&dev_key, &bytes, "file:content-acl.wasm").unwrap();
        let partial = plugins.join(".content-acl.wasm.minisig.partial");
        std::fs::write(&partial, signature).unwrap();
        std::fs::rename(&partial, plugins.join("content-acl.wasm.minisig")).unwrap();
        let partial = plugins.join(".content-acl.wasm.partial");
        std::fs::write(&partial, &bytes).unwrap();
        let landed = Instant::now();
        std::fs::rename(&partial, plugins.join("content-acl.wasm")).unwrap();
        agent.wait_for_lines(&["(re)loaded", &hash[..12]], 1, Duration::from_secs(10));
        reloads.push(landed.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    reloads.sort_unstable();
    let reload_ms = reloads[RELOADS / 2].as_secs_f64() * 1e3;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "agent with the WSUS pack: start to ready {:.0} ms cold, {:.0} ms warm; idle RSS {:.1} MiB; hot reload {reload_ms:.0} ms (median of {RELOADS})",
        ms(cold_start),
        ms(warm_start),
        idle_kib as f64 / 1024.0
    );
    println!(
        "BENCH agent_footprint cold_start_ms={:.1} warm_start_ms={:.1} idle_rss_mib={:.1} reload_ms={reload_ms:.1}",
        ms(cold_start),
        ms(warm_start),
        idle_kib as f64 / 1024.0
    );
}
